"""Vendors respect their stock: the desk caps agreed offers, the catalog vendor holds stock.

On the in-memory network in virtual time, real SQLite stores: the vendor's
ledger is read from them, so a restart is a new Node on the same directory.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

import protocol
from circles import MemoryNetwork, Node, TakeItOrLeaveIt, VendorDesk, negotiate
from circles._errors import CirclesError
from circles._haggle import HaggleError
from circles._vendor import Catalog, Product, StockError
from circles._vendor_agent import StockLedger, run_vendor
from protocol import Agreement

EPOCH = 1_800_000_000


def ident(n: int) -> protocol.Identity:
    return protocol.Identity.from_seed(bytes([n]) * 32)


def beans(stock: int | None, capacity: int = 10) -> Product:
    return Product(
        name="Arabica, 1 kg", match=("coffee",), currency="EUR", list_price=2400, floor=1700,
        capacity=capacity, tiers=((4, 2000),), terms="", stock=stock,
    )  # fmt: skip


class World:
    """Members on the in-memory network, and a vendor node that can be restarted."""

    def __init__(self, tmp_path: Path, stack: contextlib.AsyncExitStack) -> None:
        self.network = MemoryNetwork(seed=7, latency=0.01)
        self.tmp_path = tmp_path
        self.stack = stack
        self.members: list[Node] = []

    def clock(self) -> float:
        return EPOCH + trio.current_time()

    async def member(self) -> Node:
        node = Node(
            ident(len(self.members) + 1), self.tmp_path / f"m{len(self.members)}",
            transport=self.network.open_transport, clock=self.clock, sync_interval=2.0,
        )  # fmt: skip
        node = await self.stack.enter_async_context(node)
        if self.members:
            await node.connect(self.members[0].addresses()[0])
        self.members.append(node)
        return node

    def vendor(self, *, auto_countersign: bool = False) -> Node:
        """The vendor's node (always the same key and directory): enter it to run it."""
        return Node(
            ident(99), self.tmp_path / "shop", transport=self.network.open_transport,
            clock=self.clock, sync_interval=2.0, auto_countersign=auto_countersign,
        )  # fmt: skip

    async def link(self, vendor: Node) -> None:
        for member in self.members:
            await vendor.connect(member.addresses()[0])

    async def circle(self, title: str, *, target: int, deadline: int = 3600) -> bytes:
        founder = self.members[0]
        circle = await founder.found_circle(
            title=title, unit="kg", target=target, currency="EUR",
            deadline=founder.now() + deadline,
        )  # fmt: skip
        for node in self.members[1:]:
            with trio.fail_after(600):
                await node.wait_until(lambda n=node: circle in n.circles())  # type: ignore[misc]
            await node.join(circle)
        return circle


@contextlib.asynccontextmanager
async def world(tmp_path: Path, members: int) -> AsyncIterator[World]:
    async with contextlib.AsyncExitStack() as stack:
        w = World(tmp_path, stack)
        for _ in range(members):
            await w.member()
        yield w


def offers_by(vendor: Node, circle: bytes, *, seen_by: Node | None = None) -> list[protocol.Offer]:
    """The vendor's offers to a circle, as ``seen_by`` (default: the vendor) holds them."""
    return [
        e.message
        for e in (seen_by or vendor).envelopes(circle)
        if isinstance(e.message, protocol.Offer) and e.signer == vendor.public_key
    ]


class Seen:
    """What a catalog vendor did: (circle, capacity) offers and (circle, reason) refusals."""

    def __init__(self) -> None:
        self.offers: list[tuple[bytes, int]] = []
        self.refusals: list[tuple[bytes, str]] = []
        self._changed = trio.Event()

    async def wait(self, predicate: Callable[[], bool]) -> None:
        """Until ``predicate`` holds (bound it with fail_after)."""
        while not predicate():
            await self._changed.wait()

    def _note(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def agent(self, node: Node, product: Product) -> Callable[[], Awaitable[None]]:
        """run_vendor for one product, recording what it does here."""
        catalog = Catalog(products=(product,), strategy="fixed", step=0.02)

        def on_offer(circle: bytes, _product: Product, _tiers: object) -> None:
            self.offers.append((circle, offers_by(node, circle)[-1].capacity))
            self._note()

        def on_refusal(circle: bytes, error: StockError) -> None:
            assert isinstance(error, CirclesError) and str(error)
            self.refusals.append((circle, error.reason))
            self._note()

        return lambda: run_vendor(node, catalog, tick=30, on_offer=on_offer, on_refusal=on_refusal)


# ----------------------------------------------------------------- the desk


async def test_the_desk_offers_at_most_its_capacity_and_the_circle_fills_up_to_it(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with world(tmp_path, 3) as w, w.vendor(auto_countersign=True) as vendor:
        await w.link(vendor)
        ann, bob, cat = w.members
        circle = await w.circle("Coffee", target=4)
        # Dearest first: Ann 3, Bob 2 fit a capacity of 5, Cat's 3 do not.
        await vendor.join(circle)
        for node, quantity, price in ((ann, 3, 5000), (bob, 2, 4900), (cat, 3, 4800)):
            await node.pledge(circle, quantity, max_price=price)
        with trio.fail_after(600):
            await ann.wait_until(lambda: len(ann.circle(circle).live_pledges()) == 3)
            await vendor.wait_until(lambda: len(vendor.circle(circle).live_pledges()) == 3)
        async with VendorDesk(
            vendor, strategy=TakeItOrLeaveIt(reservation=4500), capacity=5
        ) as desk:
            with trio.fail_after(600):
                outcome = await negotiate(
                    ann, circle, vendor.public_key, strategy=TakeItOrLeaveIt(reservation=5000)
                )
                assert isinstance(outcome.result, Agreement), outcome.result
                await ann.wait_until(lambda: ann.circle(circle).deal is not None)
            stats = desk.statistics()
        (offer,) = offers_by(vendor, circle, seen_by=ann)
        deal = ann.circle(circle).deal
    # Without the cap the desk offered all 8 units pledged at the agreed price.
    assert offer.capacity == 5
    assert offer.tiers == (protocol.Tier(min_quantity=4, unit_price=4500),)
    assert (deal.message.total, deal.message.unit_price) == (5, 4500)
    assert (stats.capped, stats.unsupplied, stats.errors) == (1, 0, 0)


async def test_capacity_for_sees_each_agreement_and_zero_publishes_no_offer(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[Agreement] = []

    def nothing_left(agreement: Agreement) -> int:
        seen.append(agreement)
        return 0

    async with world(tmp_path, 2) as w, w.vendor() as vendor:
        await w.link(vendor)
        ann, _bob = w.members
        circle = await w.circle("Coffee", target=4)
        await vendor.join(circle)
        await ann.pledge(circle, 4, max_price=5000)
        with trio.fail_after(600):
            await vendor.wait_until(lambda: len(vendor.circle(circle).live_pledges()) == 1)
        async with VendorDesk(
            vendor, strategy=TakeItOrLeaveIt(reservation=4500), capacity_for=nothing_left
        ) as desk:
            with trio.fail_after(600):
                outcome = await negotiate(
                    ann, circle, vendor.public_key, strategy=TakeItOrLeaveIt(reservation=5000)
                )
                while desk.statistics().unsupplied < 1:
                    await trio.sleep(1)
                await trio.sleep(60)  # virtual: time for an offer that must not come
        assert offers_by(vendor, circle, seen_by=ann) == offers_by(vendor, circle) == []
        assert ann.circle(circle).status is protocol.CircleStatus.FORMING
    assert isinstance(outcome.result, Agreement)
    assert [a.session for a in seen] == [outcome.session]


@pytest.mark.parametrize("kwargs", [{"capacity": 0}, {"capacity": 3, "capacity_for": lambda _a: 3}])
async def test_the_desk_refuses_a_bad_capacity(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, kwargs: dict[str, object]
) -> None:
    async with world(tmp_path, 0) as w, w.vendor() as vendor:
        with pytest.raises(HaggleError) as caught:
            VendorDesk(vendor, strategy=TakeItOrLeaveIt(reservation=1), **kwargs)  # type: ignore[arg-type]
    assert caught.value.reason == "bad-argument"


# ------------------------------------------------------- the catalog vendor


async def test_two_circles_never_get_the_same_units_and_a_deal_frees_the_rest(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    seen = Seen()
    async with (
        world(tmp_path, 2) as w,
        w.vendor() as vendor,
        trio.open_nursery() as nursery,
    ):
        await w.link(vendor)
        ann, bob = w.members
        nursery.start_soon(seen.agent(vendor, beans(stock=10)))
        with trio.fail_after(7200):
            print("start", trio.current_time())
            first = await w.circle("Office coffee", target=5)
            print("founded at", trio.current_time())
            await seen.wait(lambda: len(seen.offers) == 1)
            print("offered at", trio.current_time())
            second = await w.circle("More coffee", target=4)
            await seen.wait(lambda: seen.refusals != [])
            await trio.sleep(300)  # virtual: ten ticks, and the refusal is not repeated
            assert seen.offers == [(first, 10)]
            assert seen.refusals == [(second, "out-of-stock")]
            # The first circle buys 6: the vendor signs (its node does not), 4 are left.
            await ann.pledge(first, 3, max_price=2400)
            await bob.pledge(first, 3, max_price=2400)
            await vendor.wait_until(lambda: vendor.circle(first).deal is not None)
            await seen.wait(lambda: len(seen.offers) == 2)
        nursery.cancel_scope.cancel()
        ledger = StockLedger.read(vendor)
    deal = vendor.circle(first).deal
    assert deal.signer == vendor.public_key and deal.message.total == 6
    assert seen.offers == [(first, 10), (second, 4)]
    assert ledger.sold == {("Arabica, 1 kg", "EUR"): 6}
    assert ledger.held_for(second) == 4 and ledger.held_for(first) == 0


async def test_an_expired_circle_frees_its_stock(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    seen = Seen()
    async with (
        world(tmp_path, 1) as w,
        w.vendor() as vendor,
        trio.open_nursery() as nursery,
    ):
        await w.link(vendor)
        nursery.start_soon(seen.agent(vendor, beans(stock=10)))
        with trio.fail_after(7200):
            quiet = await w.circle("Quiet coffee", target=5, deadline=600)
            await seen.wait(lambda: len(seen.offers) == 1)
            later = await w.circle("Later coffee", target=5)
            await seen.wait(lambda: seen.refusals != [])
            await seen.wait(lambda: len(seen.offers) == 2)
            now = vendor.now()
        nursery.cancel_scope.cancel()
    assert seen.offers == [(quiet, 10), (later, 10)]
    assert seen.refusals == [(later, "out-of-stock")]
    assert vendor.circle(quiet).status is protocol.CircleStatus.EXPIRED
    assert now >= EPOCH + 600


async def test_a_circle_that_needs_more_than_is_left_is_refused(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    seen = Seen()
    async with (
        world(tmp_path, 1) as w,
        w.vendor() as vendor,
        trio.open_nursery() as nursery,
    ):
        await w.link(vendor)
        nursery.start_soon(seen.agent(vendor, beans(stock=12)))
        with trio.fail_after(3600):
            small = await w.circle("Some coffee", target=3)
            await seen.wait(lambda: len(seen.offers) == 1)
            # 2 left: enough to offer, not enough for a circle that needs 4 (it expires
            # rather than settle), so those 2 stay free.
            big = await w.circle("Lots of coffee", target=4)
            await seen.wait(lambda: seen.refusals != [])
        nursery.cancel_scope.cancel()
    assert seen.offers == [(small, 10)]
    assert seen.refusals == [(big, "out-of-stock")]


async def test_a_restarted_vendor_remembers_what_it_holds_and_signs_within_its_stock(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    seen = Seen()
    async with world(tmp_path, 2) as w:
        ann, bob = w.members
        async with w.vendor() as vendor, trio.open_nursery() as nursery:
            await w.link(vendor)
            nursery.start_soon(seen.agent(vendor, beans(stock=10)))
            with trio.fail_after(600):
                first = await w.circle("Office coffee", target=5)
                await seen.wait(lambda: len(seen.offers) == 1)
            nursery.cancel_scope.cancel()
        # A new process on the same directory: the offer of 10 still holds them all.
        async with w.vendor() as vendor, trio.open_nursery() as nursery:
            await w.link(vendor)
            nursery.start_soon(seen.agent(vendor, beans(stock=10)))
            with trio.fail_after(600):
                second = await w.circle("More coffee", target=4)
                await vendor.wait_until(lambda: second in vendor.circles())
                await seen.wait(lambda: seen.refusals != [])
            nursery.cancel_scope.cancel()
        assert seen.offers == [(first, 10)]
        assert seen.refusals == [(second, "out-of-stock")]
        # Restocked down to 4 (the catalog changed): the offer of 10 still stands, so the
        # circle can certify 6, but the vendor does not sign more than it has.
        async with w.vendor() as vendor, trio.open_nursery() as nursery:
            await w.link(vendor)
            nursery.start_soon(seen.agent(vendor, beans(stock=4)))
            with trio.fail_after(600):
                await ann.pledge(first, 3, max_price=2400)
                await bob.pledge(first, 3, max_price=2400)
                await vendor.wait_until(lambda: vendor.certificates(first) != [])
                await seen.wait(lambda: (first, "over-stock") in seen.refusals)
                await trio.sleep(120)  # virtual: a few ticks, and still no deal
            nursery.cancel_scope.cancel()
            assert vendor.circle(first).deal is None
            assert vendor.certificates(first)[0].message.total == 6
    assert seen.refusals.count((first, "over-stock")) == 1


def test_the_stock_error_is_a_circles_error_with_a_reason() -> None:
    error = StockError("none left")
    assert isinstance(error, CirclesError) and error.reason == "out-of-stock"
    assert StockError("x", reason="over-stock").reason == "over-stock"
