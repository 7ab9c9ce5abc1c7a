"""Simulated vendors' capacity: promised on agreement, released when the circle goes
elsewhere, never agreed or signed beyond what remains."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

import protocol
from circles import MemoryNetwork, Node, TakeItOrLeaveIt, VendorDesk, negotiate, sim
from circles.sim._desk import SimVendor
from tests.circles.test_sim import small

EPOCH = sim.EPOCH


def vendor_units(result: sim.SimulationResult) -> dict[str, int]:
    """Units each vendor sold, from the circles' deals."""
    sold: dict[str, int] = {}
    for c in result.circles:
        if c.outcome == "deal":
            sold[c.vendor] = sold.get(c.vendor, 0) + c.units
    return sold


@pytest.mark.parametrize("seed", [1, 2])
def test_concurrent_negotiations_never_sell_beyond_a_vendors_capacity(seed: int) -> None:
    # Three circles reach their targets at once and haggle with the one vendor
    # together; each wants 14-23 units and the vendor has 25. Before the ledger,
    # all three agreed and all three closed (about 56 units sold).
    data = small(
        **{
            "buyers.arrival": "at-once",
            "buyers.count": 30,
            "vendors.count": 1,
            "vendors.capacity": 25,
            "formation.circles": 3,
            "formation.open_per_place": 3,
            "formation.join": "fewest-members",
        }
    )
    result = sim.run(sim.parse_scenario(data), seed=seed, modelled=True)
    assert len(result.circles) == 3 and all(c.pledged >= c.target for c in result.circles)
    sold = vendor_units(result)
    assert sold and sum(sold.values()) <= 25, sold
    (vendor,) = result.vendors
    assert vendor.sold == sum(sold.values()) and vendor.promised == 0
    # The circles the vendor could not serve did not close on units it lacked.
    assert [c.outcome for c in result.circles].count("deal") == 1


def two_vendors(**changes: Any) -> dict[str, Any]:
    """Ten buyers wanting 2 units each, two circles of target 10 one after the other;
    a cheap vendor and a dear one, each with 12 units."""
    data = small(
        **{
            "buyers.count": 10,
            "buyers.demand": 2,
            "buyers.reservation": {"dist": "uniform", "low": 960, "high": 1000},
            "formation.circles": 2,
            "formation.admit": "until-target",
            **changes,
        }
    )
    cheap = data["vendors"][0]
    cheap.update(name="cheap", count=1, capacity=12)
    dear = dict(cheap, name="dear", floor=950, strategy={"kind": "time-dependent", "e": 1.0})
    data["vendors"] = [cheap, dear]
    return data


@pytest.mark.parametrize("seed", [1, 2])
def test_a_promise_is_released_when_the_circle_clears_at_another_vendor(seed: int) -> None:
    # Both vendors agree with the first circle, which clears at the cheap one:
    # the dear one must get its 10 units back to serve the second circle (the
    # cheap one has 2 left). Without the release, the second circle expires.
    result = sim.run(sim.parse_scenario(two_vendors()), seed=seed, modelled=True)
    first, second = result.circles
    assert (first.outcome, first.vendor, first.units) == ("deal", "cheap-0", 10)
    assert (second.outcome, second.vendor, second.units) == ("deal", "dear-0", 10)
    assert second.clearing_price == 950
    assert [(v.name, v.sold, v.promised) for v in result.vendors] == [
        ("cheap-0", 10, 0),
        ("dear-0", 10, 0),
    ]


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def ident(n: int) -> protocol.Identity:
    return protocol.Identity.from_seed(bytes([n]) * 32)


@contextlib.asynccontextmanager
async def three_nodes() -> AsyncIterator[tuple[Node, Node, Node]]:
    """Alice, Bob and a vendor (signing deals itself), linked through Alice."""
    network = MemoryNetwork(seed=11, latency=0.01)
    async with contextlib.AsyncExitStack() as stack:
        nodes = []
        for i in range(3):
            node = Node(
                ident(i + 1),
                "",
                transport=network.open_transport,
                clock=lambda: EPOCH + trio.current_time(),
                sync_interval=5.0,
                auto_countersign=False,
                memory_store=True,
            )
            nodes.append(await stack.enter_async_context(node))
        alice, bob, vendor = nodes
        await bob.connect(alice.addresses()[0])
        await vendor.connect(alice.addresses()[0])
        yield alice, bob, vendor


async def test_the_vendor_signs_no_deal_its_capacity_cannot_cover_and_quotes_no_one_else(
    mock_clock: trio.testing.MockClock,
) -> None:
    scenario = sim.parse_scenario(small(**{"vendors.capacity": 15, "vendors.floor": 900}))
    seller = SimVendor(scenario.vendors[0], name="v")
    async with three_nodes() as (alice, bob, vendor):
        seller.node = seller.ledger.node = vendor
        circle = await alice.found_circle(
            title="oil", unit="tin", target=10, currency="EUR", deadline=EPOCH + 86400
        )
        await alice.pledge(circle, 10, max_price=1000)
        with trio.fail_after(600):
            await bob.wait_until(lambda: circle in bob.circles())
        await bob.join(circle)
        desk = VendorDesk(vendor, strategy_for=seller.strategy_for, bid_auctions=False)
        async with desk, trio.open_nursery() as nursery:
            nursery.start_soon(seller.ledger.countersign_within)

            async def pledge_while_alice_thinks() -> None:
                await trio.sleep(10)  # after the vendor's offer, before Alice accepts it
                await bob.pledge(circle, 10, max_price=1000)

            with trio.fail_after(3600):
                nursery.start_soon(pledge_while_alice_thinks)
                # The vendor offers 950 for 10 units (within its 15) and Alice
                # takes it 20 s later, when the circle has 20 units pledged.
                outcome = await negotiate(
                    alice,
                    circle,
                    vendor.public_key,
                    strategy=TakeItOrLeaveIt(reservation=1000),
                    quantity=10,
                    pace=20.0,
                )
                assert isinstance(outcome.result, protocol.Agreement)
                await alice.wait_until(lambda: bool(alice.certificates(circle)))
                await vendor.wait_until(lambda: bool(vendor.certificates(circle)))
                while not seller.ledger.refused:  # the ledger weighs it on the node's next turn
                    await trio.sleep(1)
            # The desk offered every unit pledged at 950: the certificate takes
            # 20, more than the vendor has, so it does not sign.
            assert alice.certificates(circle)[0].message.total == 20
            assert vendor.circle(circle).deal is None
            assert seller.ledger.refused == 1 and seller.ledger.sold == 0
            assert seller.ledger.promised() == 20

            # Its units stay promised to that circle: another circle gets no quote.
            other = await bob.found_circle(
                title="oil", unit="tin", target=10, currency="EUR", deadline=EPOCH + 86400
            )
            await bob.pledge(other, 10, max_price=1000)
            await vendor.connect(bob.addresses()[0])
            with trio.fail_after(600):
                refused = await negotiate(
                    bob,
                    other,
                    vendor.public_key,
                    strategy=TakeItOrLeaveIt(reservation=1000),
                    quantity=10,
                )
            assert not isinstance(refused.result, protocol.Agreement)
            nursery.cancel_scope.cancel()
