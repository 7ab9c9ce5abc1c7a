"""Gossip forwarding at the node's door: a copy of a message the node already holds.

Sync and gossip race: a node may fetch a pledge by sync before the gossip
copy reaches it. Gossipsub forwards only what the validator accepts, so a
node that ignored such a copy cut everyone behind it off until their next
sync round. These tests build the line A - B - C (C hears A only through B),
let B fetch A's pledge by sync first, and check that C still gets it by
gossip, on the in-memory network and on real libp2p hosts; and that what B
refused once is still dropped without being decoded, and never forwarded.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import protocol
import protocol._envelope
from circles import MemoryNetwork, Node, Verdict
from circles._node_admission import FORWARD_WINDOW
from circles._node_events import CircleUpdated, NodeEvent
from circles._topics import circle_topic
from circles._transport import PeerId

EPOCH = 1_800_000_000
#: Far beyond any wait here: no node's anti-entropy runs during a test.
NO_ANTI_ENTROPY = 100_000.0


def ident(n: int) -> protocol.Identity:
    return protocol.Identity.from_seed(bytes([n]) * 32)


def virtual_clock() -> float:
    return EPOCH + trio.current_time()


@contextlib.asynccontextmanager
async def line(tmp_path: Path, **options: Any) -> AsyncIterator[tuple[Node, Node, Node, bytes]]:
    """A - B - C, all members of A's circle; A gossips one pledge, then holds the rest back.

    A's gossip budget is one pledge and refills once in ~12 days, so its later
    pledges wait on disk (as the pacer keeps them) until the test publishes them.
    """
    async with contextlib.AsyncExitStack() as stack:
        a, b, c = [
            await stack.enter_async_context(
                Node(
                    ident(n),
                    tmp_path / name,
                    sync_interval=NO_ANTI_ENTROPY,
                    gossip_rate=1e-6,
                    gossip_burst=1,
                    **options,
                )
            )
            for n, name in ((1, "a"), (2, "b"), (3, "c"))
        ]
        with trio.fail_after(30):
            await b.connect(a.addresses()[0])
            circle = await a.found_circle(
                title="Olive oil",
                unit="tin",
                target=1000,
                currency="EUR",
                ceiling=500,
                deadline=a.now() + 24 * 3600,
            )
            await b.join(circle)
            await c.connect(b.addresses()[0])
            await c.join(circle)
        assert a.transport.peer_id not in c.transport.peers()
        yield a, b, c, circle


async def holds(node: Node, circle: bytes, pledge: protocol.Envelope[Any]) -> None:
    await node.wait_until(lambda: node.circle(circle).pledge(pledge.id) is not None)


async def sync_first_then_gossip(
    a: Node,
    b: Node,
    c: Node,
    circle: bytes,
    *,
    before_gossip: Callable[[], Awaitable[None]] | None = None,
) -> tuple[protocol.Envelope[Any], list[NodeEvent], int]:
    """B syncs A's held-back pledge, then A gossips it; returns it, B's events meanwhile,
    and how many sync rounds C ran meanwhile."""
    pledge = await a.pledge(circle, 2, max_price=300)
    assert a._gossip.pending == {circle: pledge.data}, "the pledge was gossiped at once"
    with trio.fail_after(10):
        assert await b.syncer.sync(circle, a.transport.peer_id) == 1
    assert b.circle(circle).pledge(pledge.id) is not None
    assert c.circle(circle).pledge(pledge.id) is None
    logged = len(b.circle_log(circle))
    rounds = c.syncer.rounds
    events: list[NodeEvent] = []

    async def record() -> None:
        async with b.events() as stream:
            async for event in stream:
                events.append(event)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(record)
        await trio.sleep(0)
        if before_gossip is not None:
            await before_gossip()
        # What A's pacer does once its budget refills.
        await a.transport.publish(circle_topic(circle), pledge.data)
        with trio.fail_after(30):
            await holds(c, circle, pledge)
        nursery.cancel_scope.cancel()
    # B took the copy it already held once: nothing stored again, no second event.
    assert len(b.circle_log(circle)) == logged
    return pledge, events, c.syncer.rounds - rounds


async def test_a_copy_synced_first_is_still_forwarded_in_memory(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    network = MemoryNetwork(seed=31, latency=0.05)
    async with line(tmp_path, transport=network.open_transport, clock=virtual_clock) as (
        a,
        b,
        c,
        circle,
    ):
        first = await a.pledge(circle, 1, max_price=300)
        with trio.fail_after(5):
            await holds(c, circle, first)
        published = 0.0

        async def mark() -> None:
            nonlocal published
            published = trio.current_time()

        pledge, events, rounds = await sync_first_then_gossip(a, b, c, circle, before_gossip=mark)
        # Two hops of 0.05 s (virtual time), and C ran no sync meanwhile: it came by gossip.
        assert trio.current_time() - published < 1.0
        assert rounds == 0
        assert not [e for e in events if isinstance(e, CircleUpdated)]
        assert b.transport.statistics().ignored == 0
        assert a.circle(circle).digest() == b.circle(circle).digest() == c.circle(circle).digest()
        assert c.circle(circle).pledge(pledge.id) is not None


async def test_a_copy_synced_first_is_still_forwarded_over_libp2p(tmp_path: Path) -> None:
    async with line(tmp_path) as (a, b, c, circle):
        # Gossipsub forwards along its mesh: wait until B's holds both A and C.
        topic = circle_topic(circle)
        mesh: Any = b.transport._pubsub.router.mesh  # type: ignore[attr-defined]
        with trio.fail_after(30):
            while len(mesh.get(topic, ())) < 2:
                await trio.sleep(0.05)
        first = await a.pledge(circle, 1, max_price=300)
        with trio.fail_after(30):
            await holds(c, circle, first)
        pledge, events, rounds = await sync_first_then_gossip(a, b, c, circle)
        assert rounds == 0, "C synced: the pledge did not come by gossip"
        assert not [e for e in events if isinstance(e, CircleUpdated)]
        assert b.transport.statistics().ignored == 0
        assert c.circle(circle).digest() == b.circle(circle).digest()
        assert c.circle(circle).pledge(pledge.id) is not None


def counting_verifies(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record every signature check protocol makes (each is still made)."""
    checked: list[bytes] = []
    verify = protocol._envelope._verify

    def counted(kind: str, signer: bytes, signature: bytes, data: bytes) -> None:
        checked.append(data)
        verify(kind, signer, signature, data)

    monkeypatch.setattr(protocol._envelope, "_verify", counted)
    return checked


async def test_the_validator_accepts_what_it_holds_without_checking_it_again(
    tmp_path: Path, autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    network = MemoryNetwork(seed=32)
    async with contextlib.AsyncExitStack() as stack:
        alice = await stack.enter_async_context(
            Node(ident(1), tmp_path / "a", transport=network.open_transport, clock=virtual_clock)
        )
        circle = await alice.found_circle(
            title="Honey", unit="jar", target=10, currency="EUR", deadline=EPOCH + 3600
        )
        other = await alice.found_circle(
            title="Salt", unit="kg", target=10, currency="EUR", deadline=EPOCH + 3600
        )
        pledge = await alice.pledge(circle, 1, max_price=100)
        charter = alice.circle(circle).charter
        validate = alice._circle_validator(circle)
        sender = PeerId("peer")
        checked = counting_verifies(monkeypatch)
        refused = alice.refused

        # Held and valid where it came: accepted for forwarding, not decoded again,
        # and not queued for delivery (delivery would only find it held).
        assert validate(pledge.data, sender) is Verdict.ACCEPT
        assert validate(charter.data, sender) is Verdict.ACCEPT
        assert alice._validate_announce(charter.data, sender) is Verdict.ACCEPT
        assert checked == []
        assert pledge.id not in alice._validated and charter.id not in alice._validated
        assert alice.refused == refused
        # Held, but on the wrong topic: refused as if it were new, still not decoded.
        assert alice._circle_validator(other)(pledge.data, sender) is Verdict.REJECT
        assert alice._validate_announce(pledge.data, sender) is Verdict.REJECT
        assert checked == []
        assert alice.refused == refused + 2
        # Stored longer ago than gossip remembers ids: a copy now is a replay, and
        # stops here (ignored, not forwarded, not refused: it is valid, only old).
        await trio.sleep(FORWARD_WINDOW + 1)
        assert validate(pledge.data, sender) is Verdict.IGNORE
        assert alice._validate_announce(charter.data, sender) is Verdict.IGNORE
        assert checked == []
        assert alice.refused == refused + 2


async def test_a_refused_message_is_dropped_unread_and_never_forwarded(
    tmp_path: Path, autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mallory - B - C: B refuses a pledge over the ceiling once, and each later copy
    (past the transport's seen window) without decoding it; C never sees one."""
    network = MemoryNetwork(seed=33, latency=0.05, seen_ttl=1.0)
    async with line(tmp_path, transport=network.open_transport, clock=virtual_clock) as (
        _,
        b,
        c,
        circle,
    ):
        mallory = ident(9)
        async with network.open_transport(mallory) as raw:
            await raw.connect(b.addresses()[0])
            await raw.subscribe(circle_topic(circle))
            over = protocol.seal(
                protocol.Pledge(
                    circle=circle,
                    seq=1,
                    quantity=1,
                    max_price=900,
                    currency="EUR",
                    tolerance=0,
                    created=b.now(),
                ),
                mallory,
            )
            checked = counting_verifies(monkeypatch)
            refused = b.refused
            for _ in range(3):
                await raw.publish(circle_topic(circle), over.data)
                await trio.sleep(2.0)  # past the seen window: each copy is judged again
        # Decoded (and its signature checked) once, refused once, rejected each time.
        assert checked.count(over.data) == 1
        assert b.refused == refused + 1
        assert b.transport.statistics().rejected == 3
        # C got nothing: no copy reached its validator, none its state.
        assert c.transport.statistics().rejected == 0
        assert c.refused == 0
        assert c.circle(circle).pledge(over.id) is None
