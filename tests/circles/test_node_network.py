"""The node over real py-libp2p hosts on 127.0.0.1: convergence, catch-up, floods, partitions.

Every host is a real py-libp2p host (TCP, Noise, Yamux, gossipsub) in this
process, so the figures printed here share two cores with everything else:
they are for reading (``pytest -s``), never asserted beyond generous bounds.
Convergence means every node holds every pledge the test made (by id) and all
the circle state digests are equal; gossip may drop messages on the way, and
sync has to close the gap.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import protocol
from circles._node import Node
from circles._node_own import _GossipPacer
from protocol._caps import PLEDGE_SEQS_PER_KEY

#: Pledge deadlines sit far ahead so that no circle changes state with the clock.
DEADLINE_AHEAD = 24 * 3600
#: Big enough that no test reaches quorum (a certificate would add messages).
TARGET = 10**6


def ident(seed: int, n: int) -> protocol.Identity:
    return protocol.Identity.from_seed(seed.to_bytes(4, "big") + n.to_bytes(28, "big"))


def make_node(tmp_path: Path, seed: int, n: int, **options: object) -> Node:
    options.setdefault("sync_interval", 1.0)
    return Node(ident(seed, n), tmp_path / f"node-{n}", **options)  # type: ignore[arg-type]


async def link(nodes: Sequence[Node], rng: random.Random, *, degree: int = 3) -> None:
    """Connect ``nodes`` into a random connected graph: each dials up to ``degree`` earlier ones.

    One dial at a time: parallel dials under load time out (LIBP2P.md).
    """
    for i, node in enumerate(nodes[1:], start=1):
        for j in rng.sample(range(i), min(degree, i)):
            with trio.fail_after(15):
                await node.connect(nodes[j].addresses()[0])


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path, count: int, *, seed: int, degree: int = 3, **options: object
) -> AsyncIterator[list[Node]]:
    """``count`` nodes on 127.0.0.1, linked into a random connected graph."""
    async with contextlib.AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(make_node(tmp_path, seed, n, **options))
            for n in range(count)
        ]
        await link(nodes, random.Random(seed), degree=degree)
        yield nodes


async def found(node: Node, title: str = "Olive oil") -> bytes:
    return await node.found_circle(
        title=title,
        unit="tin",
        target=TARGET,
        currency="EUR",
        deadline=node.now() + DEADLINE_AHEAD,
    )


async def join_all(nodes: Iterable[Node], circle: bytes) -> None:
    """Every node joins ``circle`` (fetched from a peer by sync if the announce missed it)."""
    for node in nodes:
        if circle not in node.joined():
            with trio.fail_after(30):
                await node.join(circle)


async def holds(node: Node, circle: bytes, ids: Iterable[bytes]) -> None:
    """Until ``node`` has applied every pledge in ``ids`` (unbounded: wrap in fail_after)."""
    missing = set(ids)

    def done() -> bool:
        state = node._states.get(circle)
        if state is not None:
            missing.difference_update([i for i in missing if state.pledge(i) is not None])
        return not missing

    await node.wait_until(done)


async def converge(nodes: Sequence[Node], circle: bytes, ids: Iterable[bytes]) -> float:
    """Until every node holds ``ids``; asserts equal digests; returns the seconds it took."""
    wanted = frozenset(ids)
    start = time.monotonic()
    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(holds, node, circle, wanted)
    digests = {node.circle(circle).digest() for node in nodes}
    assert len(digests) == 1, f"{len(digests)} different states among {len(nodes)} nodes"
    return time.monotonic() - start


def kept(pledges: Sequence[protocol.Envelope[Any]]) -> list[bytes]:
    """Ids of the pledges a circle keeps: each key's PLEDGE_SEQS_PER_KEY highest seqs
    (protocol/_caps.py; older ones are dropped everywhere, by design)."""
    seqs: dict[bytes, set[int]] = {}
    for p in pledges:
        seqs.setdefault(p.signer, set()).add(p.message.seq)
    floor = {k: sorted(v)[-PLEDGE_SEQS_PER_KEY:][0] for k, v in seqs.items()}
    return [p.id for p in pledges if p.message.seq >= floor[p.signer]]


def lacking(nodes: Sequence[Node], circle: bytes, ids: Iterable[bytes]) -> list[int]:
    """How many of ``ids`` each node lacks (for failure messages)."""
    return [sum(n.circle(circle).pledge(i) is None for i in ids) for n in nodes]


async def test_twenty_nodes_with_random_pledges_reach_one_state(tmp_path: Path) -> None:
    rng = random.Random(20)
    async with cluster(tmp_path, 20, seed=20) as nodes:
        circle = await found(nodes[0])
        await join_all(nodes[1:], circle)
        pledges: list[protocol.Envelope[Any]] = []
        for _ in range(2):
            for node in rng.sample(nodes, len(nodes)):
                quantity = rng.choice([0, 1, 2, 3, 5, 8])
                pledges.append(await node.pledge(circle, quantity, max_price=rng.randint(100, 900)))
        ids = kept(pledges)
        try:
            with trio.fail_after(60):
                seconds = await converge(nodes, circle, ids)
        except trio.TooSlowError:
            pytest.fail(f"not converged; pledges lacking per node: {lacking(nodes, circle, ids)}")
        print(f"\n20 nodes, {len(ids)} pledges: converged {seconds:.2f} s after the last pledge")
        # The state is the one the messages define, whatever the order they came in.
        assert nodes[7].circle(circle).digest() == reference_digest(nodes[0], circle, pledges)


def reference_digest(node: Node, circle: bytes, envelopes: list[protocol.Envelope[Any]]) -> bytes:
    """The digest of a fresh state fed the charter and ``envelopes``, nothing else."""
    state = node.circle(circle)
    return protocol.CircleState.from_envelopes(state.charter, envelopes, now=state.now).digest()


async def test_a_late_joiner_and_a_restarted_node_catch_up_through_sync(tmp_path: Path) -> None:
    async with cluster(tmp_path, 4, seed=21) as nodes:
        circle = await found(nodes[0])
        await join_all(nodes[1:], circle)
        ids = [(await node.pledge(circle, 2, max_price=500)).id for node in nodes]
        # A fifth node takes part, pledges, and stops.
        async with make_node(tmp_path, 21, 4) as fifth:
            await fifth.connect(nodes[3].addresses()[0])
            await join_all([fifth], circle)
            ids.append((await fifth.pledge(circle, 4, max_price=450)).id)
            with trio.fail_after(30):
                await converge([*nodes, fifth], circle, ids)
        # The others go on pledging without it.
        for quantity in (3, 1):
            ids += [(await n.pledge(circle, quantity, max_price=400)).id for n in nodes]
        with trio.fail_after(30):
            await converge(nodes, circle, ids)
        digest = nodes[0].circle(circle).digest()
        # Back from its data directory: it still holds what it had, and fetches the rest.
        async with make_node(tmp_path, 21, 4) as fifth:
            assert fifth.joined() == [circle]
            assert fifth.circle(circle).pledge(ids[4]) is not None
            await fifth.connect(nodes[1].addresses()[0])
            with trio.fail_after(30):
                await holds(fifth, circle, ids)
            assert fifth.circle(circle).digest() == digest
            # A node that never saw the circle: it learns of it and its history from a peer.
            async with make_node(tmp_path, 21, 99) as late:
                await late.connect(nodes[2].addresses()[0])
                with trio.fail_after(30):
                    await late.join(circle)
                    await holds(late, circle, ids)
                assert late.circle(circle).digest() == digest
                # The charter can only have come by sync (join fetches it).
                assert late.syncer.fetched >= 1


def _socket_count() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
    return count


def _task_count() -> int:
    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(child) for n in task.child_nurseries for child in n.child_tasks)

    return count(trio.lowlevel.current_root_task())


async def test_exit_is_clean_within_two_seconds(tmp_path: Path) -> None:
    gc.collect()
    threads_before = set(threading.enumerate())
    sockets_before = _socket_count()
    tasks_before = _task_count()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with cluster(tmp_path, 3, seed=30) as (a, b, c):
            circle = await found(a)
            await join_all((b, c), circle)
            # Traffic in flight as the node exits: a pledge every node is still passing on.
            for q in range(1, 30):
                await (a, b, c)[q % 3].pledge(circle, q, max_price=100)
            async with contextlib.AsyncExitStack() as stack:
                d = await stack.enter_async_context(make_node(tmp_path, 30, 3))
                await d.connect(a.addresses()[0])
                await d.join(circle)
                await d.pledge(circle, 1, max_price=100)
                started = time.monotonic()
            single = time.monotonic() - started
            started = time.monotonic()
        together = time.monotonic() - started
        gc.collect()
    print(f"\nexit: one node {single:.3f} s, three linked nodes {together:.3f} s")
    assert single < 2.0
    assert together < 2.0 * 3
    assert [str(w.message) for w in caught] == []
    assert _task_count() == tasks_before
    assert [t for t in set(threading.enumerate()) - threads_before if t.is_alive()] == []
    assert _socket_count() == sockets_before


def invalid_envelopes(count: int, circle: bytes, rng: random.Random) -> list[bytes]:
    """Forged signatures and garbage, then a few oversize payloads (dear to send).

    The oversize ones come last: a node stops reading a peer's gossip stream
    at the first one, and the rest would never be judged.
    """
    forger = ident(99, 1)
    out: list[bytes] = []
    for n in range(count):
        if n >= count - count // 100:
            out.append(b"\x95" + rng.randbytes(70_000))
        elif n % 2:
            body = protocol.Pledge(
                circle=circle,
                seq=n + 1,
                quantity=1,
                max_price=100,
                currency="EUR",
                tolerance=0,
                created=int(time.time()),
            )
            forged = bytearray(protocol.seal(body, forger).data)
            forged[-1 - rng.randrange(64)] ^= 1 << rng.randrange(8)
            out.append(bytes(forged))
        else:
            out.append(rng.randbytes(rng.randrange(1, 300)))
    return out


async def test_a_flooding_peer_gets_nothing_forwarded_and_honest_traffic_flows(
    tmp_path: Path,
) -> None:
    from circles._libp2p import open_libp2p_transport
    from circles._topics import circle_topic

    rng = random.Random(40)
    async with cluster(tmp_path, 2, seed=40) as (a, b):
        circle = await found(a)
        await join_all([b], circle)
        topic = circle_topic(circle)
        flood = invalid_envelopes(10_000, circle, rng)
        async with open_libp2p_transport(ident(40, 666)) as raw:
            # No validator: the raw peer sends whatever it is given, and only to a.
            await raw.subscribe(topic)
            await raw.connect(a.addresses()[0])
            with trio.fail_after(10):
                while raw.peer_id not in {
                    str(p)
                    for p in a.transport._pubsub.peer_topics.get(topic, ())  # type: ignore[attr-defined]
                }:
                    await trio.sleep(0.01)
            ids: list[bytes] = []
            started = time.monotonic()
            flooded = trio.Event()
            crossed: list[float] = []
            crossed_during: list[bool] = []

            async def send_flood() -> None:
                for data in flood:
                    # Through py-libp2p's pubsub itself: the transport's own
                    # publish refuses oversize payloads before they leave.
                    await raw._pubsub.publish(topic, data)
                    # A flooder in another process would not hold up this
                    # process's event loop; without this, this one did.
                    await trio.lowlevel.checkpoint()
                flooded.set()

            async def pledge_honestly() -> None:
                # Paced like people (within the gossip budget), while the flood runs.
                for quantity in range(1, 6):
                    for node in (a, b):
                        ids.append((await node.pledge(circle, quantity, max_price=300)).id)
                    await trio.sleep(0.1)
                await converge([a, b], circle, ids)
                crossed.append(time.monotonic() - started)
                crossed_during.append(not flooded.is_set())

            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send_flood)
                    nursery.start_soon(pledge_honestly)
                await flooded.wait()
                # a tried to sync with the raw peer when it connected, was refused,
                # and leaves it alone from then on.
                await trio.lowlevel.checkpoint()
                assert not a.syncer.serves_sync(raw.peer_id)
            seconds = time.monotonic() - started
        stats_a, stats_b = a.transport.statistics(), b.transport.statistics()
        print(
            f"\nflood of {len(flood)}: honest pledges crossed in {crossed[0]:.2f} s, flood "
            f"sent in "
            f"{seconds:.2f} s; a refused {a.refused} (rejected {stats_a.rejected}, oversize "
            f"{stats_a.oversize}); b refused {b.refused}"
        )
        # The honest pledges crossed while the flood was still being sent.
        assert crossed_during == [True]
        # a judged the flood (what it did not, py-libp2p dropped: the raw peer is graylisted)...
        assert stats_a.rejected > 0
        # ...and forwarded none of it.
        assert b.refused == 0
        assert stats_b.rejected == stats_b.oversize == stats_b.ignored == 0
        assert a.circle(circle).digest() == b.circle(circle).digest()


@pytest.mark.slow
async def test_a_burst_of_a_thousand_pledges_converges(tmp_path: Path) -> None:
    # Twenty hosts share this process's one core, where a lone host would have
    # one of its own: each gets a twentieth of the default gossip budget.
    async with cluster(tmp_path, 20, seed=50, gossip_rate=0.05, gossip_burst=1) as nodes:
        circle = await found(nodes[0])
        await join_all(nodes[1:], circle)
        rng = random.Random(50)
        pledges: list[protocol.Envelope[Any]] = []

        async def burst(node: Node) -> None:
            for _ in range(50):
                quantity = rng.randint(0, 9)
                pledges.append(await node.pledge(circle, quantity, max_price=rng.randint(1, 999)))

        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(burst, node)
        accepted = time.monotonic() - started
        expected = reference_digest(nodes[0], circle, pledges)
        ids = kept(pledges)
        try:
            with trio.fail_after(120):
                async with trio.open_nursery() as nursery:
                    for node in nodes:
                        nursery.start_soon(
                            node.wait_until,
                            lambda n=node: n.circle(circle).digest() == expected,
                        )
                same_state = time.monotonic() - started
                # The superseded pledges too: the stores end up equal, not only the states.
                await converge(nodes, circle, ids)
                all_held = time.monotonic() - started
        except trio.TooSlowError:
            pytest.fail(f"not converged; pledges lacking per node: {lacking(nodes, circle, ids)}")
        fetched = sum(node.syncer.fetched for node in nodes)
        gossiped = sum(node.transport.statistics().delivered for node in nodes)
        print(
            f"\nburst: {len(ids)} pledges from 20 nodes accepted in {accepted:.2f} s; "
            f"all 20 at the same state digest {same_state:.2f} s after the first pledge, "
            f"holding every pledge {all_held:.2f} s after it "
            f"({fetched} copies by sync, {gossiped} deliveries by gossip)"
        )


def cross_links(left: Sequence[Node], right: Sequence[Node]) -> int:
    """Connections between the two groups, counted from the left."""
    others = {node.transport.peer_id for node in right}
    return sum(len(node.transport.peers() & others) for node in left)


async def test_a_partition_heals_to_one_state(tmp_path: Path) -> None:
    rng = random.Random(60)
    async with contextlib.AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(make_node(tmp_path, 60, n, gossip_burst=3))
            for n in range(20)
        ]
        left, right = nodes[:10], nodes[10:]
        await link(left, rng)
        await link(right, rng)
        bridges = [(rng.choice(left), rng.choice(right)) for _ in range(3)]
        for a, b in bridges:
            with trio.fail_after(15):
                await a.connect(b.addresses()[0])
        circle = await found(nodes[0])
        await join_all(nodes[1:], circle)

        # Cut every connection between the halves, whoever dialled it.
        for node in left:
            for peer in node.transport.peers() & {n.transport.peer_id for n in right}:
                await node.transport.disconnect(peer)
        with trio.fail_after(10):
            while cross_links(left, nodes[10:]) or cross_links(right, left):
                await trio.sleep(0.05)
        halves: list[list[protocol.Envelope[Any]]] = [[], []]
        for _ in range(2):
            for side, half in enumerate((left, right)):
                for node in half:
                    halves[side].append(
                        await node.pledge(circle, rng.randint(1, 9), max_price=rng.randint(1, 99))
                    )
        for side, half in enumerate((left, right)):
            with trio.fail_after(30):
                await converge(half, circle, kept(halves[side]))
        # Really apart: nothing redialled, and neither half has seen the other's pledges.
        assert cross_links(left, right) == cross_links(right, left) == 0
        assert left[0].circle(circle).digest() != right[0].circle(circle).digest()
        assert lacking(left, circle, [p.id for p in halves[1]]) == [len(halves[1])] * 10
        assert lacking(right, circle, [p.id for p in halves[0]]) == [len(halves[0])] * 10

        started = time.monotonic()
        for a, b in bridges:
            with trio.fail_after(15):
                await a.connect(b.addresses()[0])
        ids = [p.id for p in halves[0] + halves[1]]
        try:
            with trio.fail_after(30):
                await converge(nodes, circle, ids)
        except trio.TooSlowError:
            pytest.fail(
                f"not healed in 30 s; pledges lacking per node: {lacking(nodes, circle, ids)}"
            )
        seconds = time.monotonic() - started
        print(f"\npartition 10/10 healed: 20 identical states {seconds:.2f} s after reconnecting")
        assert nodes[0].circle(circle).digest() == reference_digest(
            nodes[0], circle, halves[0] + halves[1]
        )


async def test_pledges_past_the_gossip_budget_are_coalesced_and_synced(tmp_path: Path) -> None:
    async with cluster(tmp_path, 2, seed=70, gossip_burst=2, gossip_rate=0.05) as (a, b):
        circle = await found(a)
        await join_all([b], circle)
        published = a.transport.statistics().published
        pledges = [await a.pledge(circle, q, max_price=100) for q in range(1, 21)]
        # Two went out at once; of the other eighteen only the latest waits to go.
        assert a.transport.statistics().published - published == 2
        assert a._gossip.pending == {circle: pledges[-1].data}
        # b still gets every one of them, the superseded ones by sync.
        with trio.fail_after(30):
            await holds(b, circle, kept(pledges))
        assert len(kept(pledges)) == PLEDGE_SEQS_PER_KEY
        assert b.syncer.fetched >= PLEDGE_SEQS_PER_KEY - 3
        assert b.circle(circle).digest() == a.circle(circle).digest()


@given(
    rate=st.floats(0.1, 100),
    burst=st.integers(1, 50),
    steps=st.lists(st.floats(0, 5), max_size=200),
)
def test_the_gossip_pacer_never_exceeds_its_budget(
    rate: float, burst: int, steps: list[float]
) -> None:
    pacer = _GossipPacer(rate=rate, burst=burst)
    now = 0.0
    taken = 0
    for step in steps:
        now += step
        wait = pacer.until_token(now)
        if pacer.take(now):
            taken += 1
            assert wait == 0
        else:
            assert wait > 0
        assert taken <= burst + rate * now + 1e-9
