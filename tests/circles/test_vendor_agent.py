"""The catalog vendor on the in-memory network in virtual time: it offers, concedes, closes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

import protocol
from circles._memnet import MemoryNetwork
from circles._node import Node
from circles._vendor import Catalog, Product
from circles._vendor_agent import run_vendor

EPOCH = 1_800_000_000
BEANS = Product(
    name="Arabica, 1 kg", match=("coffee",), currency="EUR", list_price=2400, floor=1700,
    capacity=40, tiers=((10, 2200),), terms="",
)  # fmt: skip


@contextlib.asynccontextmanager
async def three_nodes(tmp_path: Path) -> AsyncIterator[list[Node]]:
    network = MemoryNetwork(seed=5)
    clock = lambda: EPOCH + trio.current_time()  # noqa: E731
    async with contextlib.AsyncExitStack() as stack:
        nodes = []
        for i in range(3):
            node = Node(
                protocol.Identity.from_seed(bytes([i + 1]) * 32), tmp_path / f"n{i}",
                transport=network.open_transport, clock=clock, auto_countersign=i == 2,
            )  # fmt: skip
            nodes.append(await stack.enter_async_context(node))
        for node in nodes[1:]:
            await node.connect(nodes[0].addresses()[0])
        yield nodes


@pytest.mark.parametrize(("strategy", "closes"), [("boulware", (0.85, 1.0)), ("linear", (0, 0.85))])
async def test_the_vendor_concedes_until_the_pledges_cover_an_offer(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    strategy: str,
    closes: tuple[float, float],
) -> None:
    offers: list[int] = []
    catalog = Catalog(products=(BEANS,), strategy=strategy, step=0.01)
    async with three_nodes(tmp_path) as (ann, bob, shop), trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: run_vendor(
                shop, catalog, tick=30, on_offer=lambda c, p, t: offers.append(t[-1][1])
            )
        )
        with trio.fail_after(7200):
            circle = await ann.found_circle(
                title="Office coffee", unit="kg", target=10, currency="EUR", deadline=EPOCH + 3600
            )
            await bob.wait_until(lambda: circle in bob.circles())
            await bob.join(circle)
            await ann.pledge(circle, 6, max_price=1900)
            await bob.pledge(circle, 4, max_price=1900)
            await shop.wait_until(lambda: shop.circle(circle).deal is not None)
        deal = shop.circle(circle).deal
        nursery.cancel_scope.cancel()
    assert deal.signer == shop.public_key
    assert deal.message.unit_price <= 1900
    assert offers == sorted(offers, reverse=True)
    assert offers[0] == 2200
    assert offers[-1] == deal.message.unit_price
    progress = (deal.message.created - EPOCH) / 3600
    assert closes[0] <= progress <= closes[1]


async def test_no_offer_for_a_circle_the_catalog_does_not_sell(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    offers: list[int] = []
    catalog = Catalog(products=(BEANS,), strategy="fixed", step=0.02)
    async with three_nodes(tmp_path) as (ann, _bob, shop), trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: run_vendor(shop, catalog, tick=30, on_offer=lambda c, p, t: offers.append(1))
        )
        with trio.fail_after(600):
            tea = await ann.found_circle(
                title="Green tea", unit="kg", target=5, currency="EUR", deadline=EPOCH + 3600
            )
            coffee = await ann.found_circle(
                title="Coffee", unit="kg", target=5, currency="USD", deadline=EPOCH + 3600
            )
            await shop.wait_until(lambda: {tea, coffee} <= set(shop.circles()))
            await trio.sleep(300)  # virtual: five minutes of ticks with nothing to offer
        nursery.cancel_scope.cancel()
    assert offers == []
