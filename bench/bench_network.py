"""Network benchmark: a pledge reaching 20 nodes, next to raw py-libp2p gossipsub in the same run.

Run ``python bench/bench_network.py`` for a table, ``--json`` for one JSON object.

Two networks of ``--nodes`` hosts run side by side in this process, all on
127.0.0.1 and wired in the same seeded topology (a ring plus one random chord
per host):

- candidate: :class:`circles.Node` s (store, validator, sync, the lot) in one
  circle; a round is one ``pledge()`` on one node, timed from the call until
  every node has applied that pledge to its circle state;
- baseline: plain py-libp2p hosts with gossipsub (default-ish configuration:
  degree 6, the 1 s heartbeat the node also uses, everything else left as
  py-libp2p sets it); a round publishes the same envelope bytes from the same
  position and is timed until every host's subscription has delivered them.

Rounds alternate between the two networks and are paced (one message in
flight), so both see the same machine load. The figure is the median candidate
round over the median baseline round (target <= 1.5); the spread of the
per-pair ratios shows how noisy the run was. Per-node memory is the growth of
this process's resident set while each network starts, divided by its size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import trio

import protocol
from circles import Node

TARGET = 1.5
TOPIC = "/bench/raw"
#: Bound on one round; a message gossip lost is then repaired by sync in time.
ROUND_TIMEOUT = 60.0
#: Pause between rounds, so that each message travels alone.
GAP = 0.1
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """Everything one run measured."""

    nodes: int
    """Hosts in each network."""
    node_seconds: list[float]
    """Candidate round times: pledge() until every node applied it."""
    raw_seconds: list[float]
    """Baseline round times: publish until every host delivered it."""
    node_mib: float
    """Resident memory per node, MiB."""
    raw_mib: float
    """Resident memory per raw host, MiB."""
    setup_seconds: float
    """Time to start, wire and warm up both networks."""

    @property
    def ratio(self) -> float:
        return statistics.median(self.node_seconds) / statistics.median(self.raw_seconds)

    @property
    def pair_ratios(self) -> list[float]:
        return sorted(n / r for n, r in zip(self.node_seconds, self.raw_seconds, strict=True))


def topology(n: int, rng: random.Random) -> list[tuple[int, int]]:
    """A ring plus one random chord per host: connected, degree about 4."""
    edges = {(i, (i + 1) % n) for i in range(n)} if n > 1 else set()
    for i in range(n):
        j = rng.randrange(n)
        if j != i and (i, j) not in edges and (j, i) not in edges:
            edges.add((i, j))
    return sorted(edges)


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


# ----------------------------------------------------------------- baseline
class RawHost:
    """A plain py-libp2p host with gossipsub, counting what its subscription delivers."""

    def __init__(self, host: Any, pubsub: Any) -> None:
        self.host = host
        self.pubsub = pubsub
        self.delivered = 0
        self.arrivals: list[float] = []
        self.changed = trio.Event()

    def address(self) -> str:
        return f"{self.host.get_addrs()[0]}"

    async def drain(self, subscription: Any) -> None:
        while True:
            await subscription.get()
            self.delivered += 1
            self.arrivals.append(trio.current_time())
            self.changed.set()
            self.changed = trio.Event()


@contextlib.asynccontextmanager
async def raw_host() -> AsyncIterator[RawHost]:
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.network.config import ConnectionConfig
    from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
    from libp2p.pubsub.pubsub import Pubsub
    from libp2p.tools.anyio_service import background_trio_service
    from multiaddr import Multiaddr

    listen = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
    # As for the nodes, and only so that both networks have the same shape:
    # one connection per peer (no 250 ms dial delay), and no auto-connector
    # dialling every host in the peerstore.
    host = new_host(
        key_pair=create_new_key_pair(),
        listen_addrs=listen,
        connection_config=ConnectionConfig(
            max_connections_per_peer=1, min_connections=0, low_watermark=0
        ),
    )
    host.get_network().auto_connector.maybe_connect = _no_auto_connect  # type: ignore[attr-defined]
    gossipsub = GossipSub(
        protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
        degree=6,
        degree_low=4,
        degree_high=12,
        heartbeat_interval=1,
    )
    pubsub = Pubsub(host, gossipsub)
    raw = RawHost(host, pubsub)
    try:
        async with (
            host.run(listen_addrs=listen),
            background_trio_service(pubsub),
            background_trio_service(gossipsub),
            trio.open_nursery() as nursery,
        ):
            await pubsub.wait_until_ready()
            nursery.start_soon(raw.drain, await pubsub.subscribe(TOPIC))
            yield raw
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await host.close()
    except BaseExceptionGroup as group:
        # py-libp2p sometimes spawns into a closing nursery at shutdown.
        rest = group.split(lambda e: isinstance(e, RuntimeError) and "closed" in str(e))[1]
        if rest is not None:
            raise
    finally:
        pubsub.seen_messages.stop()  # the sweeper thread py-libp2p would leak


async def _no_auto_connect() -> None:
    await trio.lowlevel.checkpoint()


async def raw_round(hosts: list[RawHost], publisher: int, data: bytes) -> float:
    want = [h.delivered + 1 for h in hosts]
    started = trio.current_time()
    await hosts[publisher].pubsub.publish(TOPIC, data)
    with trio.fail_after(ROUND_TIMEOUT):
        for host, count in zip(hosts, want, strict=True):
            while host.delivered < count:
                await host.changed.wait()
    return max(h.arrivals[c - 1] for h, c in zip(hosts, want, strict=True)) - started


# ---------------------------------------------------------------- candidate
async def node_round(nodes: list[Node], publisher: int, circle: bytes) -> float:
    me = nodes[publisher].public_key
    live = nodes[publisher].circle(circle).live_pledges().get(me)
    seq = 1 if live is None else live.message.seq + 1
    applied: list[float] = []

    def has(node: Node) -> Callable[[], bool]:
        def check() -> bool:
            pledge = node.circle(circle).live_pledges().get(me)
            return pledge is not None and pledge.message.seq >= seq

        return check

    async def watch(node: Node) -> None:
        await node.wait_until(has(node))
        applied.append(trio.current_time())

    started = trio.current_time()
    with trio.fail_after(ROUND_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(watch, node)
            envelope = await nodes[publisher].pledge(circle, 1 + seq % 7, max_price=100)
    assert envelope.message.seq == seq, "the store handed out an unexpected sequence number"
    return max(applied) - started


# --------------------------------------------------------------------- run
async def measure(n: int, rounds: int, warmup: int, seed: int) -> Result:
    rng = random.Random(seed)
    edges = topology(n, rng)
    publishers = [rng.randrange(n) for _ in range(warmup + rounds)]
    began = time.monotonic()
    import libp2p  # noqa: F401  (its import is not part of either network's memory)

    with tempfile.TemporaryDirectory(prefix="bench-network-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            before = rss()
            raws = [await stack.enter_async_context(raw_host()) for _ in range(n)]
            for a, b in edges:
                from libp2p.peer.peerinfo import info_from_p2p_addr
                from multiaddr import Multiaddr

                addr = f"{raws[b].address()}"
                if "/p2p/" not in addr:
                    addr += f"/p2p/{raws[b].host.get_id().to_base58()}"
                await raws[a].host.connect(info_from_p2p_addr(Multiaddr(addr)))
            raw_bytes = rss() - before

            before = rss()
            nodes = []
            for i in range(n):
                identity = protocol.Identity.from_seed(rng.randbytes(32))
                node = Node(identity, Path(tmp) / f"node-{i}")
                nodes.append(await stack.enter_async_context(node))
            for a, b in edges:
                await nodes[a].connect(nodes[b].addresses()[0])
            founder = nodes[0]
            circle = await founder.found_circle(
                title="bench",
                unit="kg",
                target=10**9,
                currency="EUR",
                deadline=founder.now() + 3600,
                ceiling=100,
            )
            with trio.fail_after(ROUND_TIMEOUT):
                for node in nodes[1:]:
                    await node.wait_until(lambda node=node: circle in node.circles())  # type: ignore[misc]
                    await node.join(circle)
            node_bytes = rss() - before
            # The same bytes on both networks: a pledge envelope of this circle.
            sample = protocol.seal(
                protocol.Pledge(
                    circle=circle,
                    seq=1,
                    quantity=3,
                    max_price=100,
                    currency="EUR",
                    tolerance=0,
                    created=founder.now(),
                ),
                founder.identity,
            ).data

            node_seconds: list[float] = []
            raw_seconds: list[float] = []
            for k, publisher in enumerate(publishers):
                # Alternate which network goes first, so neither always follows the other.
                if k % 2:
                    raw_time = await raw_round(raws, publisher, sample)
                    await trio.sleep(GAP)
                    node_time = await node_round(nodes, publisher, circle)
                else:
                    node_time = await node_round(nodes, publisher, circle)
                    await trio.sleep(GAP)
                    raw_time = await raw_round(raws, publisher, sample)
                await trio.sleep(GAP)
                if k >= warmup:  # the first rounds also settle the meshes
                    node_seconds.append(node_time)
                    raw_seconds.append(raw_time)
            setup = time.monotonic() - began - sum(node_seconds) - sum(raw_seconds)
    return Result(
        nodes=n,
        node_seconds=node_seconds,
        raw_seconds=raw_seconds,
        node_mib=node_bytes / n / MIB,
        raw_mib=raw_bytes / n / MIB,
        setup_seconds=setup,
    )


def machine(rounds: int) -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "rounds": rounds,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        # Nearest rank: the smallest round at or above 90 % of them (rounding
        # 0.9 * (n - 1) down fell below the median for a handful of rounds).
        "p90_ms": round(ordered[math.ceil(0.9 * len(ordered)) - 1] * 1000, 2),
        "min_ms": round(ordered[0] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def as_json(result: Result, info: dict[str, object]) -> str:
    pairs = result.pair_ratios
    return json.dumps(
        {
            "machine": info,
            "nodes": result.nodes,
            "method": "ratio = median node round / median raw gossipsub round, "
            "rounds alternating in one run",
            "node": summary(result.node_seconds),
            "raw_gossipsub": summary(result.raw_seconds),
            "ratio": round(result.ratio, 3),
            "pair_ratio_range": [round(pairs[0], 3), round(pairs[-1], 3)],
            "pair_ratio_median": round(statistics.median(pairs), 3),
            "target": TARGET,
            "pass": result.ratio <= TARGET,
            "memory_mib_per_node": round(result.node_mib, 2),
            "memory_mib_per_raw_host": round(result.raw_mib, 2),
            "setup_seconds": round(result.setup_seconds, 1),
        },
        indent=2,
    )


def print_table(result: Result, info: dict[str, object]) -> None:
    from rich.console import Console
    from rich.table import Table

    pairs = result.pair_ratios
    table = Table(
        title=(
            f"network benchmark: {result.nodes} hosts on 127.0.0.1, Python {info['python']}, "
            f"{info['cpus']} cores, {info['rounds']} rounds, load {info['load_average']}"
        ),
        caption="ratio = median node round / median raw round (lower is better); "
        f"per-round ratios {pairs[0]:.2f}..{pairs[-1]:.2f} (noise)",
    )
    for column in ("figure", "median ms", "p90 ms", "min ms", "max ms", "MiB/host"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for name, seconds, mib in (
        ("pledge() until all nodes applied it", result.node_seconds, result.node_mib),
        ("raw gossipsub: same bytes to all hosts", result.raw_seconds, result.raw_mib),
    ):
        s = summary(seconds)
        table.add_row(
            name,
            f"{s['median_ms']:.1f}",
            f"{s['p90_ms']:.1f}",
            f"{s['min_ms']:.1f}",
            f"{s['max_ms']:.1f}",
            f"{mib:.2f}",
        )
    verdict = "[green]pass[/]" if result.ratio <= TARGET else "[red]FAIL[/]"
    table.add_row("ratio (target <= 1.5)", f"{result.ratio:.2f}x", "", "", "", verdict)
    console = Console()
    console.width = max(console.width, 110)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--nodes", type=int, default=20, help="hosts in each network")
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds per network")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--check", action="store_true", help="exit with status 1 when the target is missed"
    )
    args = parser.parse_args(argv)
    # py-libp2p logs through the root logger (and configures it on first use
    # if nobody has): warnings and worse to stderr, the figures alone on stdout.
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    logging.basicConfig(handlers=[handler], level=logging.WARNING)
    if args.nodes < 2 or args.rounds < 1:
        parser.error("--nodes must be at least 2 and --rounds at least 1")
    result = trio.run(measure, args.nodes, args.rounds, max(0, args.warmup), args.seed)
    info = machine(args.rounds)
    if args.json:
        print(as_json(result, info))
    else:
        print_table(result, info)
    return 1 if args.check and result.ratio > TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
