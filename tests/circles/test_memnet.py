"""The in-memory transport: gossip with validators, request/response, determinism."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import protocol
from circles._memnet import MemoryNetwork, MemoryTransport
from circles._transport import (
    Delivery,
    PeerEvent,
    PeerEventKind,
    PeerId,
    RequestFailed,
    Subscription,
    Transport,
    TransportError,
    Verdict,
    message_id,
    peer_id_of,
    public_key_of,
)

TOPIC = "/buying-circles/1/circle/00"


def identity(n: int) -> protocol.Identity:
    return protocol.Identity.from_seed(n.to_bytes(32, "big"))


@asynccontextmanager
async def hosts(network: MemoryNetwork, count: int) -> AsyncIterator[list[MemoryTransport]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(network.open_transport(identity(i + 1)))
            for i in range(count)
        ]


async def line(transports: list[MemoryTransport]) -> None:
    for left, right in itertools.pairwise(transports):
        await left.connect(right.listen_addrs()[0])


async def take(subscription: Subscription, count: int) -> list[Delivery]:
    got = []
    with trio.fail_after(30):
        async for delivery in subscription:
            got.append(delivery)
            if len(got) == count:
                break
    return got


def test_peer_ids_embed_the_member_key() -> None:
    key = identity(7).public_key
    assert public_key_of(peer_id_of(key)) == key
    assert public_key_of("not base58 0OIl") is None
    assert public_key_of("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N") is None
    with pytest.raises(TransportError):
        peer_id_of(b"short")


async def test_memory_transport_satisfies_the_protocol() -> None:
    async with hosts(MemoryNetwork(), 1) as (host,):
        assert isinstance(host, Transport)
        assert host.peer_id == peer_id_of(identity(1).public_key)
        assert host.listen_addrs()[0].endswith(f"/p2p/{host.peer_id}")


async def test_gossip_reaches_every_subscriber_of_a_line_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=1, latency=(0.01, 0.05))
    async with hosts(network, 5) as transports:
        subscriptions = [await t.subscribe(TOPIC) for t in transports]
        await line(transports)
        # Published twice, and forwarded along two paths once the ring closes:
        # each subscriber still sees each payload once.
        await transports[-1].connect(transports[0].listen_addrs()[0])
        for payload in (b"one", b"two", b"one"):
            await transports[0].publish(TOPIC, payload)
        for index, subscription in enumerate(subscriptions):
            got = sorted(await take(subscription, 2), key=lambda d: d.data)
            assert [d.data for d in got] == [b"one", b"two"]
            assert all(d.origin == transports[0].peer_id for d in got)
            assert got[0].message_id == message_id(b"one")
            if index == 0:
                assert got[0].sender == transports[0].peer_id
        with trio.move_on_after(5):
            extra = await subscriptions[2].__anext__()
            pytest.fail(f"delivered twice: {extra}")
        assert transports[2].statistics().duplicates >= 1


async def test_rejected_messages_are_not_forwarded(autojump_clock: trio.testing.MockClock) -> None:
    async with hosts(MemoryNetwork(), 3) as (a, b, c):
        sub_b, sub_c = await b.subscribe(TOPIC), await c.subscribe(TOPIC)
        await a.subscribe(TOPIC)
        await line([a, b, c])
        senders: list[PeerId] = []

        def validator(data: bytes, sender: PeerId) -> Verdict:
            senders.append(sender)
            if data == b"boom":
                raise RuntimeError("a validator bug must not stop the host")
            return Verdict.REJECT if data.startswith(b"bad") else Verdict.ACCEPT

        b.set_validator(TOPIC, validator)
        for payload in (b"bad 1", b"boom", b"good"):
            await a.publish(TOPIC, payload)
        assert [d.data for d in await take(sub_c, 1)] == [b"good"]
        assert [d.data for d in await take(sub_b, 1)] == [b"good"]
        assert set(senders) == {a.peer_id}
        stats = b.statistics()
        assert (stats.rejected, stats.validator_errors) == (2, 1)
        assert c.statistics().rejected == 0


async def test_ignored_messages_may_be_accepted_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hosts(MemoryNetwork(), 2) as (a, b):
        sub_a, sub_b = await a.subscribe(TOPIC), await b.subscribe(TOPIC)
        await a.connect(b.listen_addrs()[0])
        verdicts = [Verdict.IGNORE, Verdict.ACCEPT, Verdict.ACCEPT]
        b.set_validator(TOPIC, lambda data, sender: verdicts.pop(0))
        await a.publish(TOPIC, b"early")
        await trio.sleep(1)
        assert b.statistics().ignored == 1
        # A republication (as after a partition heals) is offered again; the
        # ignored copy was not remembered as seen, so this one is judged anew.
        await a.publish(TOPIC, b"early")
        assert [d.data for d in await take(sub_b, 1)] == [b"early"]
        # The publisher's own subscription saw it once.
        assert [d.data for d in await take(sub_a, 1)] == [b"early"]
        await trio.sleep(1)
        assert a.statistics().delivered == 1 and a.statistics().published == 2
        assert len(verdicts) == 1


async def test_the_verdict_alone_decides_forwarding_in_a_line(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The node relies on this: a copy it ignores goes no further (so a copy of
    # a message it holds must be accepted to reach the hosts behind it), and an
    # accepted one is forwarded once, however many copies come after.
    async with hosts(MemoryNetwork(latency=0.01), 3) as (a, b, c):
        await a.subscribe(TOPIC)
        sub_b, sub_c = await b.subscribe(TOPIC), await c.subscribe(TOPIC)
        await line([a, b, c])
        judged: list[bytes] = []

        def validator(data: bytes, sender: PeerId) -> Verdict:
            judged.append(data)
            return Verdict.IGNORE if data == b"ignored" else Verdict.ACCEPT

        b.set_validator(TOPIC, validator)
        for payload in (b"ignored", b"accepted", b"accepted"):
            await a.publish(TOPIC, payload)
        assert [d.data for d in await take(sub_c, 1)] == [b"accepted"]
        assert [d.data for d in await take(sub_b, 1)] == [b"accepted"]
        with trio.move_on_after(5):
            extra = await sub_c.__anext__()
            pytest.fail(f"forwarded past an ignoring host, or twice: {extra.data!r}")
        # The second copy was a duplicate: neither judged again nor forwarded again.
        assert judged == [b"ignored", b"accepted"]
        assert b.statistics().duplicates == 1
        assert c.statistics().duplicates == 0


async def test_oversize_publish_is_refused() -> None:
    async with hosts(MemoryNetwork(), 1) as (a,):
        with pytest.raises(TransportError) as caught:
            await a.publish(TOPIC, bytes(64 * 1024 + 1))
        assert caught.value.reason == "oversize"
        await a.publish(TOPIC, bytes(64 * 1024))


async def test_request_response(autojump_clock: trio.testing.MockClock) -> None:
    async with hosts(MemoryNetwork(latency=0.02), 2) as (a, b):
        await a.connect(b.listen_addrs()[0])

        async def echo(peer: PeerId, data: bytes) -> bytes:
            assert peer == a.peer_id
            if data == b"raise":
                raise ValueError("handler bug")
            if data == b"hang":
                await trio.sleep_forever()
            return data[::-1] * (1000 if data == b"big" else 1)

        b.set_handler("/echo/1", echo, max_request=100)
        start = trio.current_time()
        assert await a.request(b.peer_id, "/echo/1", b"abc", timeout=5) == b"cba"
        assert trio.current_time() - start == pytest.approx(0.04)
        for data, kwargs, reason in [
            (b"raise", {}, "reset"),
            (b"hang", {}, "timeout"),
            (bytes(101), {}, "reset"),
            (b"big", {"max_response": 2999}, "oversize"),
        ]:
            with pytest.raises(RequestFailed) as caught:
                await a.request(b.peer_id, "/echo/1", data, timeout=1, **kwargs)
            assert caught.value.reason == reason, data
        with pytest.raises(RequestFailed) as caught:
            await a.request(b.peer_id, "/other/1", b"", timeout=1)
        assert caught.value.reason == "unsupported"
        with pytest.raises(ValueError, match="timeout must be positive"):
            await a.request(b.peer_id, "/echo/1", b"abc", timeout=0)
        assert b.statistics().contained_errors == 1
        # Still serving after all that.
        assert await a.request(b.peer_id, "/echo/1", b"ok", timeout=1) == b"ko"


async def test_peer_events_and_disconnect(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    async with hosts(network, 2) as (a, b):
        events = a.events()
        await a.connect(b.listen_addrs()[0])
        await a.connect(b.listen_addrs()[0])  # idempotent
        assert a.peers() == {b.peer_id} and b.peers() == {a.peer_id}
        await b.disconnect(a.peer_id)
        assert a.peers() == frozenset()
        with trio.fail_after(1):
            assert await events.__anext__() == PeerEvent(
                kind=PeerEventKind.CONNECTED, peer=b.peer_id
            )
            assert await events.__anext__() == PeerEvent(
                kind=PeerEventKind.DISCONNECTED, peer=b.peer_id
            )
        with pytest.raises(TransportError) as caught:
            await a.connect(f"/memory/9/p2p/{peer_id_of(identity(99).public_key)}")
        assert caught.value.reason == "unreachable"
        with pytest.raises(TransportError):
            async with network.open_transport(identity(1)):
                pass


async def test_closing_a_host_ends_its_subscriptions_and_links() -> None:
    network = MemoryNetwork()
    async with network.open_transport(identity(1)) as a:
        async with network.open_transport(identity(2)) as b:
            sub = await b.subscribe(TOPIC)
            await a.connect(b.listen_addrs()[0])
        assert a.peers() == frozenset()
        assert network.hosts() == [a.peer_id]
        with trio.fail_after(1):
            assert [d async for d in sub] == []
        with pytest.raises(TransportError):
            await b.publish(TOPIC, b"x")


async def run_lossy(seed: int) -> list[list[bytes]]:
    network = MemoryNetwork(seed=seed, latency=(0.001, 0.1), loss=0.3)
    async with hosts(network, 6) as transports:
        subs = [await t.subscribe(TOPIC) for t in transports]
        await line(transports)
        for n in range(20):
            await transports[n % 6].publish(TOPIC, b"m%d" % n)
        await trio.sleep(10)
        received = []
        for sub in subs:
            got = []
            while True:
                try:
                    got.append(sub._receive.receive_nowait().data)  # type: ignore[attr-defined]
                except trio.WouldBlock:
                    break
            received.append(got)
        return received


def test_same_seed_same_run() -> None:
    def once(seed: int) -> list[list[bytes]]:
        return trio.run(run_lossy, seed, clock=trio.testing.MockClock(autojump_threshold=0))

    first = once(3)
    assert first == once(3)
    assert first != once(4)
    total = sum(len(r) for r in first)
    assert 20 <= total < 20 * 6  # each publisher has its own; the line loses some


@given(
    edges=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=15),
    rejecting=st.sets(st.integers(0, 5)),
)
def test_flooding_delivers_exactly_where_a_path_of_acceptors_leads(
    edges: list[tuple[int, int]], rejecting: set[int]
) -> None:
    """Property: with no loss, host k receives iff a path 0 -> k avoids rejecting relays."""
    rejecting.discard(0)

    async def scenario() -> list[bool]:
        async with hosts(MemoryNetwork(), 6) as transports:
            subs = [await t.subscribe(TOPIC) for t in transports]
            for i in rejecting:
                transports[i].set_validator(TOPIC, lambda data, sender: Verdict.REJECT)
            for x, y in edges:
                if x != y:
                    await transports[x].connect(transports[y].listen_addrs()[0])
            await transports[0].publish(TOPIC, b"hello")
            await trio.sleep(1)
            return [s._receive.statistics().current_buffer_used == 1 for s in subs]  # type: ignore[attr-defined]

    got = trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
    # The model: breadth-first search through accepting hosts.
    adjacency: dict[int, set[int]] = {i: set() for i in range(6)}
    for x, y in edges:
        if x != y:
            adjacency[x].add(y)
            adjacency[y].add(x)
    reached, frontier = {0}, [0]
    while frontier:
        node = frontier.pop()
        for neighbour in adjacency[node]:
            if neighbour not in reached and neighbour not in rejecting:
                reached.add(neighbour)
                frontier.append(neighbour)
    assert got == [i in reached for i in range(6)]
