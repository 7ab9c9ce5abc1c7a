"""The window a vendor's sync-before-countersign leaves open, on loopback (issue 11, section 2).

Run ``python bench/bench_countersign_window.py`` (``--runs N``, ``--json``).

The countersignature is the lock: a member who withdraws is bound if the
vendor countersigned a certificate naming the older pledge first. The
vendor's node syncs the circle with its peers before it countersigns, so a
withdrawal is missed only if it has not yet reached any of the vendor's
peers when that sync runs. On three real libp2p nodes on 127.0.0.1, member
Bob - member Ann - vendor Shop (Shop is not connected to Bob), this measures:

- ``gossip_hop``: from Bob's ``withdraw`` returning (stored and published) to
  Ann holding it: the window left for a vendor that syncs with Ann;
- ``gossip_to_vendor``: the same to Shop itself, by gossip through Ann;
- ``sync_round``: one sync round of the circle from Shop to Ann that fetches
  the withdrawal: what the countersign's sync adds before signing.

Figures are medians over the runs, in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

import protocol
from circles import Node
from circles._topics import circle_topic


def ident(n: int) -> protocol.Identity:
    return protocol.Identity.from_seed(bytes([n]) * 32)


async def _until(predicate: Any, seconds: float = 30) -> float:
    """Poll every millisecond; return when ``predicate()`` held (perf_counter)."""
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.001)
    return time.perf_counter()


async def measure(runs: int) -> dict[str, Any]:
    quiet: dict[str, Any] = {"sync_interval": 100_000.0, "assemble_delay": 100_000.0}
    hops: list[float] = []
    to_vendor: list[float] = []
    syncs: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        async with (
            Node(ident(1), root / "ann", **quiet) as ann,
            Node(ident(2), root / "bob", gossip_burst=10 * runs + 10, **quiet) as bob,
            Node(ident(3), root / "shop", **quiet) as shop,
        ):
            await bob.connect(ann.addresses()[0])
            await shop.connect(ann.addresses()[0])
            circle = await ann.found_circle(
                title="Oil", unit="tin", target=1000, currency="EUR", deadline=ann.now() + 3600
            )
            await bob.join(circle)
            await shop.join(circle)
            mesh: Any = ann.transport._pubsub.router.mesh  # type: ignore[attr-defined]
            await _until(lambda: len(mesh.get(circle_topic(circle), ())) >= 2)
            for run in range(runs):
                await bob.pledge(circle, 1 + run, max_price=400)  # something to withdraw
                await _until(lambda: shop.circle(circle).live_pledges().get(bob.public_key))
                # Gossip: Bob -> Ann (one hop) and on to Shop.
                withdrawal = await bob.withdraw(circle)
                published = time.perf_counter()
                at_ann = await _until(lambda w=withdrawal: ann.log_entry(w.id) is not None)
                at_shop = await _until(lambda w=withdrawal: shop.log_entry(w.id) is not None)
                hops.append((at_ann - published) * 1000)
                to_vendor.append((at_shop - published) * 1000)
            # Sync: Shop fetches from Ann what gossip did not bring (Bob's pacer holds it).
            for run in range(runs):
                # No gossip budget left: the pledge stays on Bob's disk, as a paced one does.
                bob._gossip.burst = bob._gossip.tokens = 0
                pledge = await bob.pledge(circle, 1 + run, max_price=300)
                await ann.syncer.sync(circle, bob.transport.peer_id)
                assert shop.log_entry(pledge.id) is None
                start = time.perf_counter()
                taken = await shop.syncer.sync(circle, ann.transport.peer_id)
                syncs.append((time.perf_counter() - start) * 1000)
                assert taken >= 1 and shop.log_entry(pledge.id) is not None
    return {
        "runs": runs,
        "gossip_hop_ms": round(statistics.median(hops), 1),
        "gossip_to_vendor_ms": round(statistics.median(to_vendor), 1),
        "sync_round_ms": round(statistics.median(syncs), 1),
        "gossip_hop_ms_all": [round(x, 1) for x in hops],
        "sync_round_ms_all": [round(x, 1) for x in syncs],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = trio.run(measure, args.runs)
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"median of {figures['runs']} runs on 127.0.0.1 (milliseconds):")
        rows = (
            ("withdrawal to the vendor's peer by gossip (one hop)", "gossip_hop_ms"),
            ("withdrawal to the vendor by gossip (two hops)", "gossip_to_vendor_ms"),
            ("the vendor's sync round that fetches it", "sync_round_ms"),
        )
        for label, key in rows:
            print(f"  {label:<52} {figures[key]:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
