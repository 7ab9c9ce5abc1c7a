"""The simulator's vendors and circle negotiators, on the production haggling code.

A :class:`SimVendor` is a vendor node serving a :class:`circles.VendorDesk`
(``/buying-circles/negotiate/1.0.0`` over the node's transport) whose strategy
for each request for quote comes from the scenario: it opens at its tier price
for the quantity asked and concedes down to its floor, and it declines when no
tier covers the quantity or its free capacity does not. Its capacity is a
:class:`~circles.sim._capacity.CapacityLedger`: every proposal and acceptance
holds the units it may cost, an agreement keeps them promised until the
circle is decided, and the vendor countersigns only deals that fit. On
agreement the desk publishes the agreed price as an offer on the circle's
topic, and the nodes' certificate and deal path does the rest. :func:`haggle`
plays the circle's side with :func:`circles.negotiate`, which re-reads the
mandate from the live pledges before every move.
"""

from __future__ import annotations

from dataclasses import dataclass

import protocol
from protocol import Mandate

from .._haggle import HaggleError
from .._haggle_circle import negotiate
from .._node import Node
from .._strategies import RelativeTitForTat, Strategy, TakeItOrLeaveIt, TimeDependent
from .._transport import TransportError
from ._capacity import CapacityLedger, CappedStrategy
from ._records import PricePoint
from ._scenario import Formation, StrategySpec, VendorGroup

__all__ = ["Outcome", "SimVendor", "haggle", "make_strategy", "tier_price"]


def make_strategy(spec: StrategySpec, *, reservation: int, initial: int) -> Strategy:
    """The strategy ``spec`` names, between ``initial`` and ``reservation``."""
    if spec.kind == "time-dependent":
        return TimeDependent(reservation=reservation, initial=initial, e=spec.e)
    if spec.kind == "tit-for-tat":
        return RelativeTitForTat(reservation=reservation, initial=initial, delta=spec.delta)
    return TakeItOrLeaveIt(reservation=reservation, price=initial)


def tier_price(tiers: tuple[tuple[int, int], ...], quantity: int) -> int | None:
    """The unit price of the highest tier ``quantity`` reaches, or None below every tier."""
    price = None
    for minimum, unit_price in tiers:
        if minimum <= quantity:
            price = unit_price
    return price


class SimVendor:
    """One simulated vendor: its group's terms, its capacity ledger, its node."""

    def __init__(self, group: VendorGroup, *, name: str) -> None:
        self.group = group
        self.name = name
        self.ledger = CapacityLedger(group.capacity)
        self.node: Node | None = None

    def strategy_for(self, rfq: protocol.Envelope[protocol.QuoteRequest]) -> Strategy | None:
        """The desk's strategy for one request for quote (None declines it)."""
        body = rfq.message
        initial = tier_price(self.group.tiers, body.quantity)
        if initial is None:
            return None
        ledger = self.ledger
        if ledger.cost(body.circle, body.quantity, initial) > ledger.free_for(body.circle):
            return None
        inner = make_strategy(self.group.strategy, reservation=self.group.floor, initial=initial)
        return CappedStrategy(inner=inner, ledger=ledger, quantity=body.quantity)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How one negotiation with one vendor ended."""

    vendor: SimVendor
    """The vendor."""
    price: int | None
    """The agreed unit price, or None."""
    rounds: int
    """Counter-offers made."""
    moves: int
    """Signed moves, the request for quote included."""
    path: tuple[PricePoint, ...]
    """Every proposal, in order."""


async def haggle(
    founder: Node,
    vendor: SimVendor,
    circle: bytes,
    *,
    mandate: Mandate,
    formation: Formation,
) -> Outcome:
    """Negotiate for the circle with one vendor until agreement or the end."""
    nothing = Outcome(vendor=vendor, price=None, rounds=0, moves=0, path=())
    reservation = mandate.ceiling(mandate.target)
    if reservation is None or vendor.node is None:
        return nothing
    # Ask for every unit pledged at the circle's ceiling: the desk offers exactly
    # the quantity agreed as its capacity, and the fill rule admits whole pledges
    # in order of max price, so those units clear at any agreed price up to it.
    quantity = mandate.units_at(reservation)
    talk = max(2, int(formation.negotiation_minutes * 60))
    initial = min(reservation, max(1, round(formation.opening * vendor.group.list_price)))
    strategy = make_strategy(formation.negotiator, reservation=reservation, initial=initial)
    try:
        await founder.connect(vendor.node.addresses()[0])
        outcome = await negotiate(
            founder,
            circle,
            vendor.node.public_key,
            strategy=strategy,
            quantity=quantity,
            product=vendor.group.product,
            respond_within=max(1, talk // 2),
            duration=talk,
            max_rounds=formation.max_rounds,
            move_timeout=float(talk),
            retries=0,
            pace=float(formation.think_seconds),
            valid_for=talk,
        )
    except (HaggleError, TransportError):
        return nothing
    result = outcome.result
    path, rounds = _path(outcome.transcript, vendor.node.public_key, quantity)
    return Outcome(
        vendor=vendor,
        price=result.unit_price if isinstance(result, protocol.Agreement) else None,
        rounds=rounds,
        moves=len(outcome.transcript),
        path=path,
    )


def _path(
    transcript: tuple[bytes, ...], vendor: bytes, quantity: int
) -> tuple[tuple[PricePoint, ...], int]:
    """The proposals in a transcript (request first) and the count of counter-offers."""
    start = protocol.decode_unverified(transcript[0]).message.created  # type: ignore[attr-defined]
    points = []
    rounds = 0
    for data in transcript[1:]:
        envelope = protocol.decode_unverified(data)
        message = envelope.message
        price: int | None = None
        if isinstance(message, protocol.Offer):
            price = protocol.offer_unit_price(message, quantity)
        elif isinstance(message, protocol.CounterOffer):
            price = message.unit_price
            rounds += 1
        if price is not None:
            party = "vendor" if envelope.signer == vendor else "circle"
            created: int = message.created  # type: ignore[attr-defined]
            points.append(PricePoint(seconds=float(created - start), unit_price=price, party=party))
    return tuple(points), rounds
