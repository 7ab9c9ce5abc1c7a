"""A vendor bot with a Boulware strategy: it holds its price and concedes late.

Four buyers want 10 bags of coffee at 19.00 EUR at most; the vendor lists
them at 24.00 EUR and would go as low as 17.00 EUR. Every three minutes of the
circle's hour the bot re-offers at ``24.00 - 7.00 * progress ** (1 / 0.2)``:
Boulware (an exponent below 1) barely moves for most of the time, then
concedes quickly near the deadline. The circle closes the moment an offer
meets the buyers' pledges. Virtual time (trio's MockClock) and the in-memory
network run the hour in well under a second.
"""

import functools
import tempfile
from typing import Any

import trio
import trio.testing

import circles
import protocol

EPOCH = 1_800_000_000
LIST, FLOOR, E = 2400, 1700, 0.2


def euros(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d} EUR"


def knows(node: circles.Node, circle: bytes) -> bool:
    return circle in node.circles()


async def main() -> None:
    network = circles.MemoryNetwork(seed=7)
    clock = lambda: EPOCH + trio.current_time()  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery:
            nodes = []
            for i in range(5):
                node = circles.Node(
                    protocol.Identity.from_seed(bytes([i + 1]) * 32), f"{tmp}/n{i}",
                    transport=network.open_transport, clock=clock, auto_countersign=i == 4,
                )  # fmt: skip
                nodes.append(await nursery_enter(nursery, node))
            *buyers, vendor = nodes
            for node in nodes[1:]:
                await node.connect(buyers[0].addresses()[0])
            start = buyers[0].now()
            circle = await buyers[0].found_circle(
                title="Coffee beans", unit="bag", target=10, currency="EUR", deadline=start + 3600
            )
            for node in nodes[1:]:
                await node.wait_until(functools.partial(knows, node, circle))
                await node.join(circle)
            for buyer in buyers:
                await buyer.pledge(circle, 4 if buyer is buyers[0] else 2, max_price=1900)
            state = vendor.circle(circle)
            for minute in range(0, 60, 3):
                progress = minute / 60
                price = round(LIST - (LIST - FLOOR) * progress ** (1 / E))
                await vendor.offer(
                    circle, product="Arabica, 1 kg bag", tiers=[(1, price)],
                    capacity=40, valid_until=start + 7200, list_price=LIST,
                )  # fmt: skip
                print(f"minute {minute:2d}: offer at {euros(price)}")
                with trio.move_on_after(180):
                    await vendor.wait_until(lambda: state.deal is not None)
                if state.deal is not None:
                    deal = state.deal.message
                    saved = euros(LIST - deal.unit_price)
                    print(f"deal: {deal.total} bags at {euros(deal.unit_price)} ({saved} off list)")
                    break
            else:
                print("no deal: the buyers' pledges never covered an offer")
            nursery.cancel_scope.cancel()


async def nursery_enter(nursery: trio.Nursery, node: circles.Node) -> circles.Node:
    """Run ``node`` until the nursery is cancelled; return it once started."""

    # Any: trio-typing's stubs (installed with libp2p) hide trio.TaskStatus from mypy.
    async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with node:
            task_status.started(node)
            await trio.sleep_forever()

    started: circles.Node = await nursery.start(run)
    return started


trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
