"""The catalog vendor holds its stock on real py-libp2p hosts (127.0.0.1, real time).

A catalog file with a ``stock``, a member founding two circles: the vendor
offers the whole stock to the first and refuses the second; restarted on the
same data directory, it still refuses it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import trio

import protocol
from circles import Node
from circles._vendor import StockError, load_catalog
from circles._vendor_agent import run_vendor

CATALOG = """
[vendor]
strategy = "fixed"

[[products]]
name = "Arabica beans, 1 kg"
match = ["coffee"]
currency = "EUR"
list_price = "24.00"
capacity = 10
stock = 10
tiers = [[5, "21.00"]]
"""


def ident(n: int) -> protocol.Identity:
    return protocol.Identity.from_seed(bytes([n]) * 32)


async def test_over_libp2p_a_vendor_offers_its_stock_once_across_circles_and_restarts(
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    catalog = load_catalog(path)
    assert catalog.products[0].units == 10
    offered: list[tuple[bytes, int]] = []
    refused: list[tuple[bytes, str]] = []

    changed = [trio.Event()]

    def note() -> None:
        changed[0].set()
        changed[0] = trio.Event()

    def on_offer(circle: bytes, _product: object, tiers: list[tuple[int, int]]) -> None:
        offered.append((circle, tiers[-1][0]))
        note()

    def on_refusal(circle: bytes, error: StockError) -> None:
        refused.append((circle, error.reason))
        note()

    async def until(predicate: Callable[[], bool]) -> None:
        while not predicate():
            await changed[0].wait()

    def offers_to(node: Node, circle: bytes) -> list[protocol.Offer]:
        return [m for e in node.envelopes(circle) if isinstance(m := e.message, protocol.Offer)]

    with trio.fail_after(120):
        async with Node(ident(1), tmp_path / "ann", sync_interval=1.0) as ann:
            async with (
                Node(ident(2), tmp_path / "shop", sync_interval=1.0) as shop,
                trio.open_nursery() as nursery,
            ):
                await shop.connect(ann.addresses()[0])
                nursery.start_soon(
                    lambda: run_vendor(
                        shop, catalog, tick=0.5, on_offer=on_offer, on_refusal=on_refusal
                    )
                )
                first = await ann.found_circle(
                    title="Office coffee", unit="kg", target=5, currency="EUR",
                    deadline=ann.now() + 3600,
                )  # fmt: skip
                await until(lambda: offered != [])
                second = await ann.found_circle(
                    title="More coffee", unit="kg", target=5, currency="EUR",
                    deadline=ann.now() + 3600,
                )  # fmt: skip
                await until(lambda: refused != [])
                await ann.wait_until(lambda: offers_to(ann, first) != [])
                nursery.cancel_scope.cancel()
            # The same data directory, a new node: the vendor reads its offer back.
            async with (
                Node(ident(2), tmp_path / "shop", sync_interval=1.0) as shop,
                trio.open_nursery() as nursery,
            ):
                await shop.connect(ann.addresses()[0])
                nursery.start_soon(
                    lambda: run_vendor(
                        shop, catalog, tick=0.5, on_offer=on_offer, on_refusal=on_refusal
                    )
                )
                await until(lambda: len(refused) == 2)
                await trio.sleep(2)  # real: a few ticks, and nothing more is offered
                nursery.cancel_scope.cancel()
            assert [o.capacity for o in offers_to(ann, first)] == [10]
            assert offers_to(ann, second) == []
    assert offered == [(first, 5)]
    assert refused == [(second, "out-of-stock"), (second, "out-of-stock")]
