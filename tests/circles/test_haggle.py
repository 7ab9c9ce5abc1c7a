"""Haggling over the network: the vendor desk, the circle's negotiator, reverse auctions.

Most tests run on the in-memory network in virtual time; the last ones run on
real py-libp2p hosts on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

import protocol
from circles import (
    MemoryNetwork,
    NegotiationOutcome,
    Node,
    TimeDependent,
    VendorDesk,
    negotiate,
)
from protocol import Agreement

EPOCH = 1_800_000_000


def ident(n: int) -> protocol.Identity:
    return protocol.Identity.from_seed(bytes([n]) * 32)


@contextlib.asynccontextmanager
async def memory_nodes(
    tmp_path: Path, network: MemoryNetwork, members: int, vendors: int
) -> AsyncIterator[list[Node]]:
    """``members`` member nodes then ``vendors`` vendor nodes (auto-countersigning), linked."""
    clock = lambda: EPOCH + trio.current_time()  # noqa: E731
    async with contextlib.AsyncExitStack() as stack:
        started: list[Node] = []
        for i in range(members + vendors):
            node = Node(
                ident(i + 1),
                tmp_path / f"n{i}",
                transport=network.open_transport,
                clock=clock,
                sync_interval=2.0,
                auto_countersign=i >= members,
                memory_store=True,
            )
            started.append(await stack.enter_async_context(node))
        for node in started[1:]:
            await node.connect(started[0].addresses()[0])
        for vendor in started[members:]:
            for member in started[1:members]:
                await vendor.connect(member.addresses()[0])
        yield started


async def circle_with_pledges(
    nodes: list[Node], pledges: list[tuple[int, int]], *, target: int = 10
) -> bytes:
    """Node 0 founds a circle, every node joins, the first len(pledges) nodes pledge."""
    founder = nodes[0]
    circle = await founder.found_circle(
        title="Olive oil", unit="tin", target=target, currency="EUR", deadline=EPOCH + 7 * 86400
    )
    for node in nodes[1:]:
        await node.wait_until(lambda n=node: circle in n.circles())  # type: ignore[misc]
        await node.join(circle)
    for node, (quantity, price) in zip(nodes, pledges, strict=False):
        await node.pledge(circle, quantity, max_price=price)
    for node in nodes:
        await node.wait_until(
            lambda n=node: len(n.circle(circle).live_pledges()) == len(pledges)  # type: ignore[misc]
        )
    return circle


def prices(outcome: NegotiationOutcome) -> list[tuple[str, str, int]]:
    """(who, kind, unit price) of every priced move, in order."""
    out = []
    for data in outcome.transcript:
        envelope = protocol.decode(data)
        who = "vendor" if envelope.signer == outcome.vendor else "circle"
        message = envelope.message
        if isinstance(message, protocol.Offer):
            out.append((who, "offer", message.tiers[0].unit_price))
        elif isinstance(message, protocol.CounterOffer | protocol.Accept):
            out.append((who, message.kind, message.unit_price))
    return out


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


BOULWARE = TimeDependent(reservation=4000, initial=6000, e=0.3)


async def test_a_circle_negotiates_with_a_boulware_vendor_and_closes_a_deal(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(seed=1, latency=(0.01, 0.05))
    async with memory_nodes(tmp_path, network, 2, 1) as (alice, bob, vendor):
        circle = await circle_with_pledges([alice, bob], [(5, 5000), (5, 4800)])
        async with VendorDesk(vendor, strategy=BOULWARE) as desk:
            with trio.fail_after(600):
                outcome = await negotiate(
                    alice,
                    circle,
                    vendor.public_key,
                    strategy=TimeDependent(reservation=4800, initial=3000, e=1.0),
                    max_rounds=10,
                    pace=5.0,
                )
                assert isinstance(outcome.result, Agreement), outcome.result
                price = outcome.result.unit_price
                for node in (alice, bob, vendor):
                    await node.wait_until(
                        lambda n=node: n.circle(circle).deal is not None  # type: ignore[misc]
                    )
            stats = desk.statistics()
        assert 4000 <= price <= 4800
        assert outcome.refusal is None
        assert desk.agreements[0].unit_price == price
        assert desk.agreements[0].session == outcome.session
        assert stats.open_sessions == 0 and stats.errors == 0 and stats.refused == 0
        # The vendor started high and conceded; the circle never went past its pledges.
        moves = prices(outcome)
        assert moves[0] == ("vendor", "offer", 6000)
        assert all(p <= 4800 for who, _, p in moves if who == "circle")
        vendor_prices = [p for who, kind, p in moves if who == "vendor" and kind != "accept"]
        assert vendor_prices == sorted(vendor_prices, reverse=True) and len(vendor_prices) > 2
        deal = alice.circle(circle).deal
        assert deal.signer == vendor.public_key
        assert (deal.message.unit_price, deal.message.total) == (price, 10)
        # Both machines applied the same moves: the transcript verifies move by move.
        replay = protocol.Negotiation(
            outcome.transcript[0],
            vendor=vendor.public_key,
            mandate=protocol.Mandate(target=10, demand=((5000, 5), (4800, 5))),
        )
        for data in outcome.transcript[1:]:
            replay.receive(data, protocol.decode(data).message.created)  # type: ignore[attr-defined]
        assert isinstance(replay.result, Agreement) and replay.result.unit_price == price
