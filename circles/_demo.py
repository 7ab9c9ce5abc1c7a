"""``circles demo``: buyers and vendors, each a real libp2p host on 127.0.0.1, reach a deal.

Everything is real but the people: every node has its own key, its own SQLite
store in a temporary directory and its own py-libp2p host (TCP, Noise, Yamux,
gossipsub) on loopback. The nodes find each other through a bootstrap address,
the founder announces a circle, vendors answer with volume-tier offers,
buyers pledge, any member assembles the quorum certificate and the cheapest
vendor countersigns it.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

import protocol

from ._node import Node

__all__ = ["DemoResult", "run_demo", "run_demo_command"]


@dataclass(slots=True, kw_only=True)
class DemoResult:
    """What happened in a demo run."""

    circle: bytes
    """The circle's id."""
    charter: protocol.Charter
    """Its charter."""
    deal: protocol.Envelope[protocol.Deal]
    """The deal that closed it."""
    pledges: list[tuple[str, protocol.Pledge]]
    """(member name, pledge) for each buyer."""
    offers: list[tuple[str, protocol.Offer]]
    """(vendor name, offer) for each vendor."""
    names: dict[bytes, str]
    """Public key -> a readable name."""
    peers: int
    """Nodes in the run."""
    messages: int
    """Envelopes the circle holds (charter, pledges, offers, certificates, deal)."""
    seconds: float
    """Wall time from the first host starting to every node holding the deal."""
    members: list[bytes] = field(default_factory=list)
    """Members whose pledges the deal binds."""

    def to_json(self) -> dict[str, Any]:
        """The JSON object ``circles demo --json`` prints."""
        deal = self.deal.message
        return {
            "circle": self.circle.hex(),
            "deal": {
                "vendor": self.deal.signer.hex(),
                "unit_price": deal.unit_price,
                "currency": deal.currency,
                "quantity": deal.total,
                "members": [m.hex() for m in self.members],
            },
            "peers": self.peers,
            "messages": self.messages,
            "seconds": round(self.seconds, 3),
        }


async def run_demo(
    *, buyers: int = 5, vendors: int = 2, seed: int = 1, timeout: float = 120.0
) -> DemoResult:
    """Run the demo; raises ``trio.TooSlowError`` if no deal closes within ``timeout``."""
    if buyers < 1 or vendors < 1:
        raise ValueError("the demo needs at least one buyer and one vendor")
    rng = random.Random(seed)
    started = time.monotonic()
    quantities = [rng.randint(2, 8) for _ in range(buyers)]
    target = max(1, sum(quantities) * 4 // 5)
    list_prices = [5000 + 150 * k + rng.randint(0, 100) for k in range(vendors)]
    with tempfile.TemporaryDirectory(prefix="circles-demo-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            nodes: list[Node] = []
            names: dict[bytes, str] = {}
            for i in range(buyers + vendors):
                identity = protocol.Identity.from_seed(rng.randbytes(32))
                is_vendor = i >= buyers
                names[identity.public_key] = (
                    f"vendor-{i - buyers + 1}" if is_vendor else f"buyer-{i + 1}"
                )
                node = Node(
                    identity,
                    Path(tmp) / f"node-{i}",
                    sync_interval=1.0,
                    auto_countersign=is_vendor,
                    assemble_delay=0.3,
                )
                nodes.append(await stack.enter_async_context(node))
            bootstrap = nodes[0].addresses()[0]
            for node in nodes[1:]:
                await node.connect(bootstrap)
            founder, members, sellers = nodes[0], nodes[:buyers], nodes[buyers:]
            now = founder.now()
            with trio.fail_after(timeout):
                circle = await founder.found_circle(
                    title="Olive oil, 5 l tins",
                    unit="tin",
                    target=target,
                    currency="EUR",
                    deadline=now + 3600,
                    ceiling=6000,
                    place="u33dc",
                    tags=("food", "olive-oil"),
                )
                offers: list[tuple[str, protocol.Offer]] = []
                pledges: list[tuple[str, protocol.Pledge]] = []

                async def sell(node: Node, list_price: int) -> None:
                    await node.wait_until(lambda: circle in node.circles())
                    await node.join(circle)
                    envelope = await node.offer(
                        circle,
                        product="Extra virgin olive oil, 5 l tin",
                        tiers=[
                            (1, list_price),
                            (max(2, target // 2), list_price - 500),
                            (max(3, target), list_price - 900),
                        ],
                        capacity=target * 2,
                        valid_until=now + 7200,
                        list_price=list_price,
                        terms="delivery within 7 days, pay on delivery",
                    )
                    offers.append((names[node.public_key], envelope.message))

                async def buy(node: Node, quantity: int) -> None:
                    await node.wait_until(lambda: circle in node.circles())
                    if circle not in node.joined():
                        await node.join(circle)
                    envelope = await node.pledge(
                        circle, quantity, max_price=rng.randint(4300, 4800)
                    )
                    pledges.append((names[node.public_key], envelope.message))

                async with trio.open_nursery() as nursery:
                    for node, price in zip(sellers, list_prices, strict=True):
                        nursery.start_soon(sell, node, price)
                    for node, quantity in zip(members, quantities, strict=True):
                        nursery.start_soon(buy, node, quantity)
                for node in nodes:
                    await node.wait_until(lambda n=node: n.circle(circle).deal is not None)  # type: ignore[misc]
            seconds = time.monotonic() - started
            state = founder.circle(circle)
            deal = state.deal
            assert deal is not None
            certificate = next(
                c for c in founder.certificates(circle) if c.id == deal.message.certificate
            )
            bound = sorted({state.pledge(a.pledge).signer for a in certificate.message.allocations})
            messages = len(founder.circle_log(circle))
            return DemoResult(
                circle=circle,
                charter=state.charter.message,
                deal=deal,
                pledges=sorted(pledges, key=lambda p: p[0]),
                offers=sorted(offers, key=lambda o: o[0]),
                names=names,
                peers=len(nodes),
                messages=messages,
                seconds=seconds,
                members=bound,
            )


def _money(minor: int, currency: str) -> str:
    return f"{minor // 100}.{minor % 100:02d} {currency}"


def _print_account(result: DemoResult) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    charter = result.charter
    cur = charter.currency
    console.print(
        f"[bold]Circle[/bold] {result.circle.hex()[:16]}… “{charter.title}”: "
        f"target {charter.target} {charter.unit}s, ceiling "
        f"{_money(charter.ceiling or 0, cur)}, {result.peers} nodes on 127.0.0.1"
    )
    offers = Table(title="Vendor offers (volume tiers)")
    offers.add_column("vendor")
    offers.add_column("list price", justify="right")
    offers.add_column("tiers (min units: unit price)")
    for name, offer in result.offers:
        tiers = ", ".join(f"{t.min_quantity}+: {_money(t.unit_price, cur)}" for t in offer.tiers)
        offers.add_row(name, _money(offer.list_price, cur), tiers)
    console.print(offers)
    pledges = Table(title="Conditional pledges")
    pledges.add_column("member")
    pledges.add_column("units", justify="right")
    pledges.add_column("max unit price", justify="right")
    for name, pledge in result.pledges:
        pledges.add_row(name, str(pledge.quantity), _money(pledge.max_price, cur))
    console.print(pledges)
    deal = result.deal.message
    vendor = result.names.get(result.deal.signer, result.deal.signer.hex()[:16])
    console.print(
        f"[bold green]Deal closed[/bold green]: {vendor} countersigned {deal.total} "
        f"{charter.unit}s at {_money(deal.unit_price, cur)} each for "
        f"{len(result.members)} members ({result.messages} signed messages, "
        f"{result.seconds:.1f} s)"
    )


def run_demo_command(*, buyers: int, vendors: int, seed: int, timeout: float, as_json: bool) -> int:
    """``circles demo``: run it and print an account (or one JSON object)."""
    try:
        result = trio.run(
            lambda: run_demo(buyers=buyers, vendors=vendors, seed=seed, timeout=timeout)
        )
    except trio.TooSlowError:
        print(f"circles: no deal closed within {timeout:.0f} s", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(result.to_json(), sort_keys=True))
    else:
        _print_account(result)
    return 0
