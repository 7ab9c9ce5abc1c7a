"""The in-memory network: the libp2p transport's twin for tests and simulation.

Theory of operation: a :class:`MemoryNetwork` is a registry of hosts and the
source of every random choice (one ``random.Random(seed)``), so a run is
reproducible from its seed. Each host is a :class:`MemoryTransport` opened with
``async with network.open_transport(identity)``; its tasks live in a nursery
owned by that block. Time is trio's clock only, so a simulation under
``trio.testing.MockClock(autojump_threshold=0)`` runs in virtual time.

Gossip floods: a host forwards each message it accepts to every connected
peer subscribed to the topic, except the one it came from. Each hop costs a
latency drawn from ``latency`` and is lost with probability ``loss``; a
message still in flight when its link is cut is lost too. At every hop the
receiver drops what it has seen, then runs the topic's validator *before*
delivering or forwarding, exactly as gossipsub does. Requests travel over the
link reliably (streams are TCP), with the same latency each way.

Never the production path: nothing here authenticates anyone.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

import protocol

from ._transport import (
    DEFAULT_MAX_REQUEST,
    DEFAULT_MAX_RESPONSE,
    MAX_GOSSIP_MESSAGE,
    Delivery,
    Handler,
    PeerEvent,
    PeerEventKind,
    PeerId,
    RequestFailed,
    Subscription,
    TransportError,
    TransportStatistics,
    Validator,
    Verdict,
    _bounded_request,
    _BufferedSubscription,
    _Counters,
    _EventFanout,
    _run_validator,
    _SeenCache,
    _unwrap_single_exception,
    message_id,
    peer_id_of,
)

__all__ = ["MemoryNetwork", "MemoryTransport"]


class MemoryNetwork:
    """A seeded, in-process network of :class:`MemoryTransport` hosts.

    ``latency`` is seconds per hop, a constant or a ``(low, high)`` range drawn
    uniformly; ``loss`` is the probability that one gossip hop is dropped.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        latency: float | tuple[float, float] = 0.0,
        loss: float = 0.0,
        outbound_queue: int = 1024,
        subscription_buffer: int = 4096,
        seen_ttl: float = 120.0,
    ) -> None:
        low, high = (latency, latency) if isinstance(latency, int | float) else latency
        if not 0 <= low <= high:
            raise ValueError(f"latency must be >= 0 and low <= high, not {latency!r}")
        if not 0 <= loss < 1:
            raise ValueError(f"loss is a probability in [0, 1), not {loss!r}")
        if outbound_queue < 1 or subscription_buffer < 1:
            raise ValueError("outbound_queue and subscription_buffer must be at least 1")
        if seen_ttl <= 0:
            raise ValueError(f"seen_ttl must be positive, not {seen_ttl!r}")
        self._random = random.Random(seed)
        self._latency = (float(low), float(high))
        self._loss = loss
        self._outbound_queue = outbound_queue
        self._subscription_buffer = subscription_buffer
        self._seen_ttl = seen_ttl
        self._hosts: dict[PeerId, MemoryTransport] = {}
        self._addresses = itertools.count(1)

    def _delay(self) -> float:
        low, high = self._latency
        return low if low == high else self._random.uniform(low, high)

    def _lost(self) -> bool:
        return self._loss > 0 and self._random.random() < self._loss

    def hosts(self) -> list[PeerId]:
        """Peer ids of the hosts open now, in the order they opened."""
        return list(self._hosts)

    @asynccontextmanager
    async def open_transport(self, identity: protocol.Identity) -> AsyncIterator[MemoryTransport]:
        """Open a host for ``identity``; it leaves the network when the block exits."""
        peer = peer_id_of(identity.public_key)
        if peer in self._hosts:
            raise TransportError(
                f"a host for {peer} is already open on this network; close it first",
                reason="already-open",
            )
        with _unwrap_single_exception():
            async with trio.open_nursery() as nursery:
                transport = MemoryTransport(
                    network=self,
                    identity=identity,
                    nursery=nursery,
                    address=f"/memory/{next(self._addresses)}/p2p/{peer}",
                )
                self._hosts[peer] = transport
                nursery.start_soon(transport._run_scheduler)
                nursery.start_soon(transport._run_outbound)
                try:
                    yield transport
                finally:
                    transport._shutdown()
                    if self._hosts.get(peer) is transport:
                        del self._hosts[peer]
                    nursery.cancel_scope.cancel()


@dataclass(frozen=True, slots=True, kw_only=True)
class _Gossip:
    topic: str
    data: bytes
    origin: PeerId
    message_id: bytes


class MemoryTransport:
    """One host on a :class:`MemoryNetwork`; implements :class:`circles.Transport`."""

    def __init__(
        self,
        *,
        network: MemoryNetwork,
        identity: protocol.Identity,
        nursery: trio.Nursery,
        address: str,
    ) -> None:
        self._network = network
        self._public_key = identity.public_key
        self._peer_id = peer_id_of(identity.public_key)
        self._nursery = nursery
        self._address = address
        self._closing = False
        self._links: dict[PeerId, MemoryTransport] = {}
        self._subscriptions: dict[str, _BufferedSubscription] = {}
        self._validators: dict[str, Validator] = {}
        self._handlers: dict[str, tuple[Handler, int]] = {}
        self._counters = _Counters()
        self._seen = _SeenCache(ttl=network._seen_ttl, limit=1_000_000)
        self._events = _EventFanout()
        self._outbound_send, self._outbound_receive = trio.open_memory_channel[tuple[str, bytes]](
            network._outbound_queue
        )
        # Timed deliveries: (due, sequence, action). The sequence keeps equal
        # times in scheduling order, which keeps runs reproducible.
        self._agenda: list[tuple[float, int, Callable[[], None]]] = []
        self._sequence = itertools.count()
        self._wakeup = trio.Event()

    # Identity and peers.

    @property
    def peer_id(self) -> PeerId:
        return self._peer_id

    @property
    def public_key(self) -> bytes:
        return self._public_key

    def listen_addrs(self) -> list[str]:
        return [self._address]

    def peers(self) -> frozenset[PeerId]:
        return frozenset(self._links)

    def events(self) -> AsyncIterator[PeerEvent]:
        return self._events.listen()

    async def connect(self, addr: str) -> PeerId:
        self._check_open()
        _, separator, tail = addr.rpartition("/p2p/")
        peer = PeerId(tail)
        remote = self._network._hosts.get(peer) if separator else None
        if remote is None or peer == self._peer_id:
            raise TransportError(f"no host answers at {addr}", reason="unreachable")
        if peer in self._links:
            return peer
        # A dial costs a round trip.
        await trio.sleep(2 * self._network._delay())
        self._check_open()
        if remote._closing or self._network._hosts.get(peer) is not remote:
            raise TransportError(f"{addr} went away while dialling", reason="unreachable")
        if peer not in self._links:
            self._links[peer] = remote
            remote._links[self._peer_id] = self
            self._events.emit(PeerEvent(kind=PeerEventKind.CONNECTED, peer=peer))
            remote._events.emit(PeerEvent(kind=PeerEventKind.CONNECTED, peer=self._peer_id))
        return peer

    async def disconnect(self, peer: PeerId) -> None:
        self._unlink(peer)
        await trio.lowlevel.checkpoint()

    def _unlink(self, peer: PeerId) -> None:
        remote = self._links.pop(peer, None)
        if remote is None:
            return
        remote._links.pop(self._peer_id, None)
        self._events.emit(PeerEvent(kind=PeerEventKind.DISCONNECTED, peer=peer))
        remote._events.emit(PeerEvent(kind=PeerEventKind.DISCONNECTED, peer=self._peer_id))

    # Gossip.

    def set_validator(self, topic: str, validator: Validator | None) -> None:
        if validator is None:
            self._validators.pop(topic, None)
        else:
            self._validators[topic] = validator

    async def subscribe(self, topic: str) -> Subscription:
        self._check_open()
        if topic in self._subscriptions:
            raise TransportError(
                f"already subscribed to {topic!r}; close that subscription first",
                reason="already-subscribed",
            )
        subscription = _BufferedSubscription(
            topic,
            capacity=self._network._subscription_buffer,
            counters=self._counters,
            on_close=self._unsubscribe,
        )
        self._subscriptions[topic] = subscription
        await trio.lowlevel.checkpoint()
        return subscription

    async def _unsubscribe(self, subscription: _BufferedSubscription) -> None:
        if self._subscriptions.get(subscription.topic) is subscription:
            del self._subscriptions[subscription.topic]
        await trio.lowlevel.checkpoint()

    async def publish(self, topic: str, data: bytes) -> None:
        self._check_open()
        if len(data) > MAX_GOSSIP_MESSAGE:
            raise TransportError(
                f"a gossip message is at most {MAX_GOSSIP_MESSAGE} bytes, not {len(data)}; "
                "send large content over a request stream",
                reason="oversize",
            )
        try:
            await self._outbound_send.send((topic, bytes(data)))
        except trio.ClosedResourceError:
            raise TransportError("the transport is closed", reason="closed") from None

    async def _run_outbound(self) -> None:
        async for topic, data in self._outbound_receive:
            gossip = _Gossip(
                topic=topic, data=data, origin=self._peer_id, message_id=message_id(data)
            )
            self._counters.published += 1
            now = trio.current_time()
            # A republication is forwarded again (it may heal a partition) but
            # reaches the local subscription only once.
            if not self._seen.seen(gossip.message_id, now):
                self._seen.add(gossip.message_id, now)
                subscription = self._subscriptions.get(topic)
                if subscription is not None:
                    subscription.offer(self._delivery(gossip, self._peer_id))
            self._forward(gossip, came_from=None)
            await trio.lowlevel.checkpoint()

    def _delivery(self, gossip: _Gossip, sender: PeerId) -> Delivery:
        return Delivery(
            topic=gossip.topic,
            data=gossip.data,
            sender=sender,
            origin=gossip.origin,
            message_id=gossip.message_id,
        )

    def _forward(self, gossip: _Gossip, came_from: PeerId | None) -> None:
        network = self._network
        now = trio.current_time()
        for peer, remote in list(self._links.items()):
            if peer in (came_from, gossip.origin) or gossip.topic not in remote._subscriptions:
                continue
            if network._lost():
                continue
            remote._schedule(
                now + network._delay(), functools.partial(remote._receive, gossip, self._peer_id)
            )

    def _receive(self, gossip: _Gossip, sender: PeerId) -> None:
        if sender not in self._links:
            return  # the link was cut while the message was in flight
        subscription = self._subscriptions.get(gossip.topic)
        if subscription is None:
            return
        if len(gossip.data) > MAX_GOSSIP_MESSAGE:
            self._counters.oversize += 1
            return
        now = trio.current_time()
        if self._seen.seen(gossip.message_id, now):
            self._counters.duplicates += 1
            return
        verdict = _run_validator(
            self._validators.get(gossip.topic), gossip.data, sender, self._counters
        )
        if verdict is Verdict.IGNORE:
            # Not remembered: the same bytes may be acceptable later (e.g. once
            # a message dated in the future is no longer so).
            return
        self._seen.add(gossip.message_id, now)
        if verdict is Verdict.REJECT:
            return
        subscription.offer(self._delivery(gossip, sender))
        self._forward(gossip, came_from=sender)

    def _schedule(self, due: float, action: Callable[[], None]) -> None:
        if self._closing:
            return
        heapq.heappush(self._agenda, (due, next(self._sequence), action))
        self._wakeup.set()

    async def _run_scheduler(self) -> None:
        while True:
            if not self._agenda:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                continue
            due = self._agenda[0][0]
            if due > trio.current_time():
                # Wake early if something due sooner is scheduled meanwhile.
                with trio.move_on_at(due):
                    await self._wakeup.wait()
                self._wakeup = trio.Event()
                continue
            _, _, action = heapq.heappop(self._agenda)
            action()
            await trio.lowlevel.checkpoint()

    # Request/response.

    def set_handler(
        self, protocol_id: str, handler: Handler | None, *, max_request: int = DEFAULT_MAX_REQUEST
    ) -> None:
        if handler is None:
            self._handlers.pop(protocol_id, None)
        else:
            self._handlers[protocol_id] = (handler, max_request)

    async def request(
        self,
        peer: PeerId,
        protocol_id: str,
        data: bytes,
        *,
        timeout: float,
        max_response: int = DEFAULT_MAX_RESPONSE,
    ) -> bytes:
        return await _bounded_request(
            self._check_open,
            self._request,
            peer,
            protocol_id,
            data,
            timeout=timeout,
            max_response=max_response,
        )

    async def _request(
        self, peer: PeerId, protocol_id: str, data: bytes, max_response: int
    ) -> bytes:
        remote = self._links.get(peer)
        if remote is None:
            raise RequestFailed(f"not connected to {peer}; connect first", reason="unreachable")
        await trio.sleep(self._network._delay())
        entry = remote._handlers.get(protocol_id)
        if remote._closing or peer not in self._links:
            raise RequestFailed(f"{peer} went away", reason="reset")
        if entry is None:
            raise RequestFailed(f"{peer} does not serve {protocol_id}", reason="unsupported")
        handler, max_request = entry
        if len(data) > max_request:
            raise RequestFailed(
                f"{peer} refused a {len(data)}-byte request (limit {max_request})",
                reason="reset",
            )
        send, receive = trio.open_memory_channel[bytes | None](1)
        remote._nursery.start_soon(remote._serve, handler, self._peer_id, data, send)
        async with receive:
            try:
                response = await receive.receive()
            except trio.EndOfChannel:
                response = None
        if response is None:
            raise RequestFailed(f"{peer} reset the {protocol_id} stream", reason="reset")
        await trio.sleep(self._network._delay())
        if len(response) > max_response:
            raise RequestFailed(
                f"{peer} answered {len(response)} bytes, over the {max_response}-byte limit",
                reason="oversize",
            )
        return response

    async def _serve(
        self,
        handler: Handler,
        peer: PeerId,
        data: bytes,
        send: trio.MemorySendChannel[bytes | None],
    ) -> None:
        async with send:
            response: bytes | None
            try:
                response = await handler(peer, data)
            except Exception:
                self._counters.contained_errors += 1
                response = None
            if not isinstance(response, bytes):
                response = None
            # The requester may have given up (timeout) and closed its end.
            with contextlib.suppress(trio.BrokenResourceError, trio.WouldBlock):
                send.send_nowait(response)

    # Life cycle.

    def statistics(self) -> TransportStatistics:
        return self._counters.snapshot()

    def _check_open(self) -> None:
        if self._closing:
            raise TransportError("the transport is closed", reason="closed")

    def _shutdown(self) -> None:
        self._closing = True
        for peer in list(self._links):
            self._unlink(peer)
        for subscription in self._subscriptions.values():
            subscription.end()
        self._subscriptions.clear()
        self._agenda.clear()
        self._outbound_send.close()
        self._events.close()
