"""The libp2p transport with real hosts on 127.0.0.1."""

from __future__ import annotations

import itertools
import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio

import protocol
from circles._libp2p import Libp2pTransport, open_libp2p_transport
from circles._transport import (
    Delivery,
    PeerEventKind,
    PeerId,
    RequestFailed,
    Subscription,
    Transport,
    TransportError,
    Verdict,
    peer_id_of,
)

TOPIC = "/buying-circles/1/circle/ab"


def identity(n: int) -> protocol.Identity:
    return protocol.Identity.from_seed(n.to_bytes(32, "big"))


@asynccontextmanager
async def hosts(count: int, first: int = 1) -> AsyncIterator[list[Libp2pTransport]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(open_libp2p_transport(identity(first + i)))
            for i in range(count)
        ]


async def wait_for_subscribers(transport: Libp2pTransport, topic: str, count: int) -> None:
    """Until ``count`` peers' subscriptions to ``topic`` are known (gossip has a route)."""
    with trio.fail_after(10):
        while len(transport._pubsub.peer_topics.get(topic, ())) < count:
            await trio.sleep(0.01)


async def wait_for_mesh(transport: Libp2pTransport, topic: str, count: int) -> None:
    with trio.fail_after(10):
        while len(transport._pubsub.router.mesh.get(topic, ())) < count:
            await trio.sleep(0.01)


async def take(subscription: Subscription, count: int, *, within: float = 10) -> list[Delivery]:
    got: list[Delivery] = []
    with trio.fail_after(within):
        async for delivery in subscription:
            got.append(delivery)
            if len(got) == count:
                break
    return got


async def test_host_identity_is_the_member_key() -> None:
    async with hosts(1) as (host,):
        assert isinstance(host, Transport)
        assert host.peer_id == peer_id_of(identity(1).public_key)
        assert host.public_key == identity(1).public_key
        (addr,) = host.listen_addrs()
        assert addr.startswith("/ip4/127.0.0.1/tcp/") and addr.endswith(f"/p2p/{host.peer_id}")


async def test_publish_subscribe_among_five_hosts() -> None:
    async with hosts(5) as transports:
        subs = [await t.subscribe(TOPIC) for t in transports]
        # A star around host 0 plus a chord, so some messages need forwarding.
        for t in transports[1:]:
            await t.connect(transports[0].listen_addrs()[0])
        await transports[1].connect(transports[2].listen_addrs()[0])
        await wait_for_subscribers(transports[0], TOPIC, 4)
        for t in transports[1:]:
            await wait_for_subscribers(t, TOPIC, 1)
        payloads = {f"from {i} #{n}".encode() for i in range(5) for n in range(4)}
        for i, t in enumerate(transports):
            for n in range(4):
                await t.publish(TOPIC, f"from {i} #{n}".encode())
        for t, sub in zip(transports, subs, strict=True):
            got = await take(sub, len(payloads))
            assert {d.data for d in got} == payloads
            # Each host's own messages came back to it with itself as sender.
            assert all(d.sender == t.peer_id for d in got if d.origin == t.peer_id)
        # Nothing extra arrives: each payload once per host.
        with trio.move_on_after(0.5):
            extra = await subs[3].__anext__()
            pytest.fail(f"delivered twice: {extra.data!r}")


async def test_rejected_messages_are_not_forwarded_in_a_line() -> None:
    async with hosts(3, first=10) as (a, b, c):
        sub_a, sub_b, sub_c = [await t.subscribe(TOPIC) for t in (a, b, c)]
        await a.connect(b.listen_addrs()[0])
        await c.connect(b.listen_addrs()[0])
        await wait_for_subscribers(b, TOPIC, 2)
        await wait_for_mesh(b, TOPIC, 2)
        seen_by_b: list[tuple[bytes, PeerId]] = []

        def validator(data: bytes, sender: PeerId) -> Verdict:
            seen_by_b.append((data, sender))
            return Verdict.REJECT if data.startswith(b"bad") else Verdict.ACCEPT

        b.set_validator(TOPIC, validator)
        for payload in (b"bad one", b"bad two", b"good"):
            await a.publish(TOPIC, payload)
        assert [d.data for d in await take(sub_c, 1)] == [b"good"]
        assert [d.data for d in await take(sub_b, 1)] == [b"good"]
        assert len(await take(sub_a, 3)) == 3
        with trio.move_on_after(0.5):
            extra = await sub_c.__anext__()
            pytest.fail(f"a rejected message was forwarded: {extra.data!r}")
        assert {sender for _, sender in seen_by_b} == {a.peer_id}
        assert b.statistics().rejected == 2
        assert c.statistics().rejected == 0 and c.statistics().delivered == 1
        scorer = b._pubsub.router.scorer
        # Two penalties, decaying by 1% per heartbeat since.
        assert 1.9 <= sum(scorer.invalid_messages[a._host.get_id()].values()) <= 2


async def test_ignored_messages_cost_the_sender_nothing() -> None:
    async with hosts(2, first=20) as (a, b):
        await a.subscribe(TOPIC)
        sub_b = await b.subscribe(TOPIC)
        await a.connect(b.listen_addrs()[0])
        await wait_for_subscribers(a, TOPIC, 1)
        b.set_validator(
            TOPIC, lambda data, sender: Verdict.IGNORE if data == b"later" else Verdict.ACCEPT
        )
        await a.publish(TOPIC, b"later")
        await a.publish(TOPIC, b"now")
        assert [d.data for d in await take(sub_b, 1)] == [b"now"]
        assert b.statistics().ignored == 1
        scorer = b._pubsub.router.scorer
        assert sum(scorer.invalid_messages[a._host.get_id()].values()) == 0


async def test_request_response() -> None:
    async with hosts(2, first=30) as (a, b):
        await a.connect(b.listen_addrs()[0])

        async def handler(peer: PeerId, data: bytes) -> bytes:
            assert peer == a.peer_id
            if data == b"raise":
                raise ValueError("a handler bug must not stop the host")
            if data == b"hang":
                await trio.sleep_forever()
            if data == b"big":
                return bytes(5000)
            return data[::-1]

        b.set_handler("/test/echo/1", handler, max_request=1000)
        assert await a.request(b.peer_id, "/test/echo/1", b"hello", timeout=5) == b"olleh"
        for data, timeout, max_response, reason in [
            (b"raise", 5.0, 10_000, "reset"),
            (b"hang", 0.5, 10_000, "timeout"),
            (bytes(1001), 5.0, 10_000, "reset"),
            (b"big", 5.0, 4999, "oversize"),
        ]:
            with pytest.raises(RequestFailed) as caught:
                await a.request(
                    b.peer_id, "/test/echo/1", data, timeout=timeout, max_response=max_response
                )
            assert caught.value.reason == reason, data
        with pytest.raises(RequestFailed) as caught:
            await a.request(b.peer_id, "/test/none/1", b"x", timeout=5)
        assert caught.value.reason == "unsupported"
        with pytest.raises(ValueError, match="timeout must be positive"):
            await a.request(b.peer_id, "/test/echo/1", b"x", timeout=-1)
        assert b.statistics().contained_errors >= 2
        # Concurrent requests, and still serving after all of the above.
        results: list[bytes] = []

        async def one(n: int) -> None:
            results.append(await a.request(b.peer_id, "/test/echo/1", b"%d" % n, timeout=5))

        async with trio.open_nursery() as nursery:
            for n in range(10, 20):
                nursery.start_soon(one, n)
        assert sorted(results) == sorted((b"%d" % n)[::-1] for n in range(10, 20))


async def test_peer_events_connect_and_disconnect() -> None:
    async with hosts(2, first=40) as (a, b):
        events = a.events()
        assert await a.connect(b.listen_addrs()[0]) == b.peer_id
        assert b.peer_id in a.peers()
        with trio.fail_after(5):
            event = await events.__anext__()
        assert (event.kind, event.peer) == (PeerEventKind.CONNECTED, b.peer_id)
        await a.disconnect(b.peer_id)
        with trio.fail_after(5):
            event = await events.__anext__()
        assert (event.kind, event.peer) == (PeerEventKind.DISCONNECTED, b.peer_id)
        assert b.peer_id not in a.peers()
        with pytest.raises(TransportError) as caught:
            await a.connect(f"/ip4/127.0.0.1/tcp/1/p2p/{peer_id_of(identity(99).public_key)}")
        assert caught.value.reason == "unreachable"
        with pytest.raises(TransportError):
            await a.publish(TOPIC, bytes(64 * 1024 + 1))


async def test_clean_exit_within_two_seconds_with_traffic_in_flight() -> None:
    threads_before = set(threading.enumerate())
    tasks_before = len(trio.lowlevel.current_root_task().child_nurseries[0].child_tasks)
    async with hosts(3, first=50) as transports:
        subs = [await t.subscribe(TOPIC) for t in transports]
        for left, right in itertools.pairwise(transports):
            await left.connect(right.listen_addrs()[0])
        await wait_for_subscribers(transports[1], TOPIC, 2)
        for n in range(50):
            await transports[n % 3].publish(TOPIC, b"m%d" % n)
        await take(subs[1], 10)
        start = trio.current_time()
    assert trio.current_time() - start < 2.0
    # No task left in the test's nursery and no sweeper thread left running.
    tasks_after = len(trio.lowlevel.current_root_task().child_nurseries[0].child_tasks)
    assert tasks_after == tasks_before
    leaked = [t for t in set(threading.enumerate()) - threads_before if t.is_alive()]
    assert leaked == []


async def test_a_burst_is_delivered_whole_thanks_to_back_pressure() -> None:
    # py-libp2p's defaults delivered ~5% of a 1,000-message burst among 5 hosts
    # (32-slot queues and a 10 messages/s spam limiter, both silent).
    async with hosts(3, first=60) as transports:
        subs = [await t.subscribe(TOPIC) for t in transports]
        for left, right in itertools.pairwise(transports):
            await left.connect(right.listen_addrs()[0])
        await wait_for_mesh(transports[1], TOPIC, 2)
        await wait_for_mesh(transports[0], TOPIC, 1)
        await wait_for_mesh(transports[2], TOPIC, 1)
        start = trio.current_time()
        for n in range(500):
            await transports[0].publish(TOPIC, b"burst %d" % n)
        for sub in subs[1:]:
            got = await take(sub, 500, within=60)
            assert len({d.data for d in got}) == 500
        print(f"500-message burst over a line of 3: {trio.current_time() - start:.2f} s")
        assert all(t.statistics().overflowed == 0 for t in transports)
