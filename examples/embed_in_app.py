"""Embedding buying circles in an app: a member and a vendor close a deal on loopback."""

import tempfile

import trio

import circles


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        me, seller = circles.generate_identity(), circles.generate_identity()
        async with (
            circles.Node(me, f"{tmp}/me") as node,
            circles.Node(seller, f"{tmp}/shop", auto_countersign=True) as shop,
        ):
            await shop.connect(node.addresses()[0])
            hour = node.now() + 3600
            circle = await node.found_circle(
                title="Coffee beans", unit="kg", target=5, currency="EUR", deadline=hour
            )
            with trio.fail_after(60):
                await shop.wait_until(lambda: circle in shop.circles())  # heard the announce
                await shop.join(circle)
                await shop.offer(circle, product="Arabica, 1 kg", tiers=[(1, 2400), (5, 1900)],
                                 capacity=50, valid_until=hour + 3600)  # fmt: skip
                await node.pledge(circle, 5, max_price=2000)  # 20.00 EUR at most
                await node.wait_until(lambda: node.circle(circle).deal is not None)
            deal = node.circle(circle).deal.message
            price = f"{deal.unit_price // 100}.{deal.unit_price % 100:02d} {deal.currency}"
            print(f"deal: {deal.total} kg at {price}, signed by the vendor")


trio.run(main)
