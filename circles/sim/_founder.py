"""The founder's side of a simulated circle: when to haggle, the reverse auction, the record.

Theory of operation: the founder acts on its own node's view of the circle, as
an app would, never on the runner's tallies. It haggles once its node sees
live pledges covering the target, with every vendor of the place at once (a
reverse auction, :func:`circles.sim._desk.haggle` per vendor). Members keep
pledging meanwhile: each negotiation re-reads the mandate from the live
pledges before every move, and a vendor that agrees offers every unit pledged
at the agreed price. If the agreed offers do not bring the circle to quorum
(a pledge that arrived late reordered the fill, an offer was lost, no vendor
agreed) the founder asks again once the pledges it sees have changed, or
unchanged after one negotiation's length (a vendor busy with other circles
may have capacity again), at most :data:`MAX_AUCTIONS` times and never later
than one negotiation's length before the pledge deadline.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

import protocol

from .._node import Node
from ._desk import Outcome, SimVendor, haggle
from ._population import SimCircle
from ._records import CircleRecord
from ._scenario import Formation

__all__ = ["MAX_AUCTIONS", "circle_record", "run_circle"]

#: Reverse auctions a circle runs at most (a first one, then re-asks after a change).
MAX_AUCTIONS = 3

_FINAL = (
    protocol.CircleStatus.CLOSED,
    protocol.CircleStatus.EXPIRED,
    protocol.CircleStatus.CANCELLED,
)


async def run_circle(
    circle: SimCircle,
    *,
    epoch: int,
    formation: Formation,
    settle: float,
    vendors: list[SimVendor],
    signal: Callable[[], None],
) -> None:
    """Play the founder of ``circle`` from founding until it is decided.

    ``settle`` bounds the wait for agreed offers to reach the founder's node
    (gossip, or sync when gossip lost them) before the founder asks again.
    """
    founder = circle.founder.node
    assert founder is not None
    state = founder.circle(circle.id)
    deadline = state.deadline - epoch
    talk = formation.negotiation_minutes * 60
    circle.last_call = deadline - talk - 60

    def forming() -> bool:
        return state.status is protocol.CircleStatus.FORMING

    asked: list[tuple[int, int]] | None = None  # the demand curve the last auction saw
    retry_at = math.inf  # when to ask the same pledges again (vendors busy elsewhere may be free)

    def ready() -> bool:
        if not forming():
            return True
        if state.progress()[0] < circle.target:
            return False
        return state.demand_curve() != asked or trio.current_time() >= retry_at

    while vendors and circle.auctions < MAX_AUCTIONS:
        with trio.move_on_at(circle.last_call):
            while not ready():
                wake = retry_at if trio.current_time() < retry_at else math.inf
                with trio.move_on_at(wake):
                    await founder.wait_until(ready)
        if not forming() or trio.current_time() >= circle.last_call:
            break
        asked = state.demand_curve()
        await _auction(circle, founder, vendors, formation)
        circle.auctions += 1
        retry_at = trio.current_time() + talk
        signal()
        with trio.move_on_after(settle):
            await founder.wait_until(lambda: not forming())
    with trio.move_on_at(deadline):
        await founder.wait_until(lambda: not forming())
    if state.status in (protocol.CircleStatus.QUORUM, protocol.CircleStatus.CLOSED):
        circle.quorum_at = trio.current_time() - circle.founded
    await founder.wait_until(lambda: state.status in _FINAL)
    circle.decided = True
    circle.served = _served(founder, circle.id)
    circle.record = circle_record(circle, vendors)
    signal()


async def _auction(
    circle: SimCircle, founder: Node, vendors: list[SimVendor], formation: Formation
) -> None:
    state = founder.circle(circle.id)
    mandate = protocol.Mandate.from_state(state)
    outcomes: list[Outcome | None] = [None] * len(vendors)

    async def ask(i: int, vendor: SimVendor) -> None:
        outcomes[i] = await haggle(founder, vendor, circle.id, mandate=mandate, formation=formation)

    # A reverse auction: every vendor of the place at once. Each that agrees
    # publishes its offer; the circle's rules clear at the cheapest.
    async with trio.open_nursery() as auction:
        for i, vendor in enumerate(vendors):
            auction.start_soon(ask, i, vendor)
    done = [o for o in outcomes if o is not None]
    circle.outcomes += done
    circle.offers += sum(o.price is not None for o in done)


def _served(founder: Node, circle: bytes) -> frozenset[bytes]:
    """The members whose pledges the closing deal's certificate allocates."""
    state = founder.circle(circle)
    deal = state.deal
    if deal is None:
        return frozenset()
    for certificate in founder.certificates(circle):
        if certificate.id == deal.message.certificate:
            return frozenset(state.pledge(a.pledge).signer for a in certificate.message.allocations)
    return frozenset()


def _vendor_of(key: bytes, vendors: list[SimVendor]) -> SimVendor | None:
    for vendor in vendors:
        if vendor.node is not None and vendor.node.public_key == key:
            return vendor
    return None


def circle_record(circle: SimCircle, vendors: list[SimVendor]) -> CircleRecord:
    """The circle's row, from its founder's node (an empty row if it never got founded)."""
    founder = circle.founder.node
    if founder is None or not circle.id:
        return CircleRecord(
            id=circle.id.hex(),
            place=circle.place,
            founded=round(circle.founded, 6),
            members=0,
            target=circle.target,
            pledged=0,
            outcome="open",
            time_to_quorum=None,
            clearing_price=None,
            list_price=None,
            discount=None,
            vendor="",
            messages=0,
            rounds=0,
            price_path=(),
            units=0,
            served=0,
            auctions=0,
        )
    state = founder.circle(circle.id)
    outcome = {
        protocol.CircleStatus.CLOSED: "deal",
        protocol.CircleStatus.EXPIRED: "expired",
        protocol.CircleStatus.CANCELLED: "cancelled",
    }.get(state.status, "open")
    deal = state.deal
    vendor = _vendor_of(deal.signer, vendors) if deal is not None else None
    price = deal.message.unit_price if deal is not None else None
    # The negotiation shown: the last one with the dealing vendor at the deal's
    # price, else the longest.
    winner = next(
        (o for o in reversed(circle.outcomes) if o.vendor is vendor and o.price == price), None
    )
    shown = winner or max(circle.outcomes, key=lambda o: (o.rounds, o.vendor.name), default=None)
    list_price = vendor.group.list_price if vendor is not None else None
    messages = (
        1
        + circle.pledges
        + circle.offers
        + len(founder.certificates(circle.id))
        + (deal is not None)
        + sum(o.moves for o in circle.outcomes)
    )
    return CircleRecord(
        id=circle.id.hex(),
        place=circle.place,
        founded=round(circle.founded, 6),
        members=len(state.members()),
        target=circle.target,
        pledged=state.progress()[0],
        outcome=outcome,
        time_to_quorum=None if circle.quorum_at is None else round(circle.quorum_at, 6),
        clearing_price=price,
        list_price=list_price,
        discount=(
            round(1 - price / list_price, 6)
            if price is not None and list_price is not None
            else None
        ),
        vendor=vendor.name if vendor is not None else "",
        messages=messages,
        rounds=shown.rounds if shown is not None else 0,
        price_path=shown.path if shown is not None else (),
        units=deal.message.total if deal is not None else 0,
        served=len(circle.served),
        auctions=circle.auctions,
    )
