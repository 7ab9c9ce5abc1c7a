"""The node's logic on the in-memory network (virtual time): circles end to end.

Integration over real libp2p hosts lives in test_node_network.py; these tests
check the node's own rules quickly and deterministically.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

import protocol
from circles._memnet import MemoryNetwork
from circles._node import Node, NodeError

EPOCH = 1_800_000_000


def ident(n: int) -> protocol.Identity:
    return protocol.Identity.from_seed(bytes([n]) * 32)


@contextlib.asynccontextmanager
async def nodes(
    tmp_path: Path, count: int, network: MemoryNetwork, *, vendors: int = 0
) -> AsyncIterator[list[Node]]:
    clock = lambda: EPOCH + trio.current_time()  # noqa: E731
    async with contextlib.AsyncExitStack() as stack:
        started: list[Node] = []
        for i in range(count + vendors):
            node = Node(
                ident(i + 1),
                tmp_path / f"n{i}",
                transport=network.open_transport,
                clock=clock,
                sync_interval=2.0,
                auto_countersign=i >= count,
            )
            started.append(await stack.enter_async_context(node))
        for node in started[1:]:
            await node.connect(started[0].addresses()[0])
        yield started


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_buyers_and_a_vendor_close_a_deal(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(seed=1, latency=(0.01, 0.05))
    async with nodes(tmp_path, 3, network, vendors=1) as (alice, bob, carol, vendor):
        with trio.fail_after(120):
            circle = await alice.found_circle(
                title="Olive oil", unit="tin", target=10, currency="EUR", deadline=EPOCH + 3600
            )
            for node in (bob, carol, vendor):
                await node.wait_until(lambda n=node: circle in n.circles())
                await node.join(circle)
            await vendor.offer(
                circle,
                product="Olive oil 5 l",
                tiers=[(1, 5000), (10, 4200)],
                capacity=100,
                valid_until=EPOCH + 7200,
            )
            await alice.pledge(circle, 4, max_price=4500)
            await bob.pledge(circle, 3, max_price=4500)
            await carol.pledge(circle, 3, max_price=4300)
            for node in (alice, bob, carol, vendor):
                await node.wait_until(lambda n=node: n.circle(circle).deal is not None)
        digests = {n.circle(circle).digest() for n in (alice, bob, carol, vendor)}
        assert len(digests) == 1
        deal = alice.circle(circle).deal
        assert deal.signer == vendor.public_key
        assert deal.message.unit_price == 4200 and deal.message.total == 10


async def test_state_survives_a_restart(tmp_path: Path, mock_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(seed=2)
    async with nodes(tmp_path, 1, network) as (alice,):
        circle = await alice.found_circle(
            title="Flour", unit="kg", target=100, currency="EUR", deadline=EPOCH + 3600
        )
        first = await alice.pledge(circle, 5, max_price=300)
        second = await alice.pledge(circle, 7, max_price=300)
        digest = alice.circle(circle).digest()
    assert second.message.seq == first.message.seq + 1
    async with nodes(tmp_path, 1, network) as (alice,):
        assert alice.joined() == [circle]
        assert alice.circle(circle).digest() == digest
        third = await alice.pledge(circle, 1, max_price=300)
        assert third.message.seq == second.message.seq + 1


async def test_late_joiner_catches_up_through_sync(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(seed=3)
    async with nodes(tmp_path, 2, network) as (alice, bob):
        circle = await alice.found_circle(
            title="Rice", unit="kg", target=50, currency="EUR", deadline=EPOCH + 3600
        )
        with trio.fail_after(30):
            await bob.wait_until(lambda: circle in bob.circles())
        await bob.join(circle)
        for q in range(1, 6):
            await alice.pledge(circle, q, max_price=200)
            await bob.pledge(circle, q, max_price=250)
        async with contextlib.AsyncExitStack() as stack:
            carol = await stack.enter_async_context(
                Node(
                    ident(9),
                    tmp_path / "carol",
                    transport=network.open_transport,
                    clock=lambda: EPOCH + trio.current_time(),
                )
            )
            await carol.connect(alice.addresses()[0])
            with trio.fail_after(30):
                await carol.join(circle)
                await carol.wait_until(
                    lambda: carol.circle(circle).digest() == alice.circle(circle).digest()
                )


async def test_pledge_refusals_are_typed(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(seed=4)
    async with nodes(tmp_path, 1, network) as (alice,):
        circle = await alice.found_circle(
            title="Tea", unit="box", target=5, currency="EUR", deadline=EPOCH + 60, ceiling=900
        )
        with pytest.raises(NodeError) as info:
            await alice.pledge(circle, 1, max_price=1000)
        assert info.value.reason == "above-ceiling"
        with pytest.raises(NodeError) as info:
            await alice.pledge(b"\1" * 32, 1, max_price=10)
        assert info.value.reason == "unknown-circle"
        await trio.sleep(120)
        with pytest.raises(NodeError) as info:
            await alice.pledge(circle, 1, max_price=100)
        # The node's tick has handed the state the time: the circle expired.
        assert info.value.reason == "expired"
