"""Haggling between a circle's founder and a vendor, over the simulated network.

Each move is a signed envelope sent as a request on the vendor's node
transport (protocol id :data:`HAGGLE_PROTOCOL`), so it pays the network's
latency both ways; the vendor's answer is its next move. Both sides keep their
own :class:`protocol.Negotiation` and move with a :class:`circles.Negotiator`,
which refuses, before signing, any move beyond a side's reservation or, for
the circle, outside the mandate its pledges give. The vendor does not see the
circle's pledges, so its copy of the machine takes the circle's word for the
mandate; the circle's copy enforces it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import trio

import protocol
from protocol import Mandate, Negotiation

from .._node import Node, NodeError
from .._strategies import (
    Negotiator,
    RelativeTitForTat,
    Strategy,
    StrategyError,
    TakeItOrLeaveIt,
    TimeDependent,
)
from .._transport import PeerId, RequestFailed, TransportError, peer_id_of
from ._records import PricePoint
from ._scenario import Formation, StrategySpec, VendorGroup

__all__ = ["HAGGLE_PROTOCOL", "Outcome", "VendorDesk", "haggle", "make_strategy"]

#: Request protocol the simulated vendors answer negotiation moves on.
HAGGLE_PROTOCOL = "/buying-circles/sim-haggle/1"

# The vendor's copy of a negotiation trusts the circle's mandate (see above).
_ANY_PRICE = 2**53


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How one negotiation with one vendor ended."""

    desk: VendorDesk
    """The vendor."""
    price: int | None
    """The agreed unit price, or None."""
    rounds: int
    """Counter-offers made."""
    moves: int
    """Signed moves, the request for quote included."""
    path: tuple[PricePoint, ...]
    """Every proposal, in order."""


class VendorDesk:
    """A simulated vendor: answers negotiations, then offers the agreed price to the circle."""

    def __init__(self, node: Node, group: VendorGroup, *, name: str) -> None:
        self.node = node
        self.group = group
        self.name = name
        self.capacity_left = group.capacity
        self._sessions: dict[bytes, tuple[Negotiation, Negotiator]] = {}
        node.transport.set_handler(HAGGLE_PROTOCOL, self._handle)

    @property
    def peer(self) -> PeerId:
        """The vendor node's peer id."""
        return peer_id_of(self.node.public_key)

    async def _handle(self, peer: PeerId, data: bytes) -> bytes:
        envelope = protocol.decode(data)
        message = envelope.message
        circle: bytes = getattr(message, "circle", b"")
        now = self.node.now()
        if isinstance(message, protocol.QuoteRequest):
            initial = tier_price(self.group.tiers, message.quantity)
            if initial is None or self.capacity_left < message.quantity:
                reason = "no tier for that quantity" if initial is None else "out of capacity"
                reject = protocol.Reject(
                    circle=circle, in_reply_to=envelope.id, reason=reason, created=now
                )
                return protocol.seal(reject, self.node.identity).data
            mandate = Mandate(target=message.quantity, demand=((_ANY_PRICE, message.quantity),))
            session = Negotiation(data, vendor=self.node.public_key, mandate=mandate)
            strategy = make_strategy(
                self.group.strategy, reservation=self.group.floor, initial=initial
            )
            valid_for = max(1, message.deadline - message.created)
            negotiator = Negotiator(self.node.identity, session, strategy, valid_for=valid_for)
            self._sessions[circle] = (session, negotiator)
        else:
            entry = self._sessions.get(circle)
            if entry is None:
                return b""
            session, negotiator = entry
            try:
                session.receive(data, now)
            except protocol.ProtocolError:
                return b""
        if session.is_over:
            return b""
        await trio.sleep(self.group.think_seconds)
        now = self.node.now()
        if session.handle_timer(now) is not None:
            return b""
        try:
            move = negotiator.act(now)
        except StrategyError:
            return b""
        if move is None:
            return b""
        session.receive(move, now)
        return move

    async def sell(
        self,
        circle: bytes,
        founder: Node,
        *,
        quantity: int,
        price: int,
        units: int,
        valid_until: int,
    ) -> bool:
        """Offer ``quantity``+ units at ``price`` to the circle; False if it cannot."""
        if self.capacity_left < quantity:
            return False
        capacity = min(self.capacity_left, max(units, quantity))
        self.capacity_left -= capacity
        try:
            if circle not in self.node.joined():
                await self.node.connect(founder.addresses()[0])
                await self.node.join(circle, timeout=600)
            await self.node.offer(
                circle,
                product=self.group.product,
                tiers=[(quantity, price)],
                capacity=capacity,
                valid_until=valid_until,
                list_price=self.group.list_price,
            )
        except (NodeError, TransportError, protocol.ProtocolError):
            self.capacity_left += capacity
            return False
        return True


async def haggle(
    founder: Node,
    desk: VendorDesk,
    circle: bytes,
    *,
    mandate: Mandate,
    formation: Formation,
) -> Outcome:
    """Negotiate for the circle with one vendor until agreement or the end."""
    talk = max(2, int(formation.negotiation_minutes * 60))
    reservation = mandate.ceiling(mandate.target)
    if reservation is None:
        return Outcome(desk=desk, price=None, rounds=0, moves=0, path=())
    try:
        await founder.connect(desk.node.addresses()[0])
    except TransportError:
        return Outcome(desk=desk, price=None, rounds=0, moves=0, path=())
    now = founder.now()
    request = protocol.QuoteRequest(
        circle=circle,
        vendor=desk.node.public_key,
        product=desk.group.product,
        quantity=mandate.target,
        currency=founder.charter(circle).currency,
        respond_by=now + talk // 2,
        deadline=now + talk,
        max_rounds=formation.max_rounds,
        created=now,
    )
    rfq = protocol.seal(request, founder.identity)
    session = Negotiation(rfq.data, vendor=desk.node.public_key, mandate=mandate)
    initial = min(reservation, max(1, round(formation.opening * desk.group.list_price)))
    strategy = make_strategy(formation.negotiator, reservation=reservation, initial=initial)
    me = Negotiator(founder.identity, session, strategy, valid_for=talk)
    outgoing: bytes | None = rfq.data
    while outgoing is not None:
        try:
            reply = await founder.transport.request(
                desk.peer, HAGGLE_PROTOCOL, outgoing, timeout=talk
            )
        except RequestFailed:
            break
        if session.is_over:
            break  # that was our final move, sent so the vendor's copy ends too
        if reply:
            try:
                session.receive(reply, founder.now())
            except protocol.ProtocolError:
                break
        if session.is_over:
            break
        await trio.sleep(formation.think_seconds)
        now = founder.now()
        if session.handle_timer(now) is not None:
            break
        with contextlib.suppress(StrategyError):
            outgoing = me.act(now)
            if outgoing is not None:
                session.receive(outgoing, now)
                continue
        break
    result = session.result
    start = rfq.message.created
    return Outcome(
        desk=desk,
        price=result.unit_price if isinstance(result, protocol.Agreement) else None,
        rounds=session.rounds,
        moves=len(session.transcript),
        path=tuple(
            PricePoint(seconds=float(p.at - start), unit_price=p.unit_price, party=p.party.value)
            for p in session.proposals
        ),
    )
