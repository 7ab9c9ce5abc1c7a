"""The transport: the one small door between the node and the network.

Theory of operation: the node never talks to py-libp2p directly. It holds a
:class:`Transport`, opened as an async context manager inside its nursery
(``async with open_libp2p_transport(identity) as transport`` for real hosts,
``async with network.open_transport(identity)`` for the in-memory twin), and
uses a handful of verbs on it:

- ``connect(addr)`` / ``disconnect(peer)`` / ``peers()`` for the peer set, and
  ``events()`` to learn when peers come and go;
- ``set_validator(topic, fn)``, ``subscribe(topic)`` and ``publish(topic,
  data)`` for gossip. The validator is synchronous, runs on every message
  *before* it is delivered or forwarded, and answers with a :class:`Verdict`;
  a rejected message is never forwarded and its forwarder is penalised.
  ``publish`` blocks (back-pressure) while the outbound queue is full instead
  of dropping, and a subscription is drained by the transport continuously
  into a bounded buffer whose overflow is counted, never silently stalls the
  network;
- ``set_handler(protocol_id, fn)`` and ``request(peer, protocol_id, data,
  timeout=...)`` for one-shot request/response on direct streams, with every
  read bounded.

Peers are named by :data:`PeerId`, the textual libp2p peer id
(``12D3KooW...``). For an ed25519 identity it embeds the 32-byte public key,
so :func:`public_key_of` recovers the member's key from it; both transports
derive it the same way (:func:`peer_id_of`), so the node's logic does not
depend on which transport carries it.

Gossip delivers each distinct payload at most once per subscription within a
time window: the transports identify a message by the BLAKE2b-256 of its data
(the same id ``protocol.envelope_id`` gives an envelope), not by who sent it.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import NewType, Protocol, runtime_checkable

import trio

from ._errors import CirclesError

__all__ = [
    "DEFAULT_MAX_REQUEST",
    "DEFAULT_MAX_RESPONSE",
    "MAX_GOSSIP_MESSAGE",
    "Delivery",
    "Handler",
    "PeerEvent",
    "PeerEventKind",
    "PeerId",
    "RequestFailed",
    "Subscription",
    "Transport",
    "TransportError",
    "TransportStatistics",
    "Validator",
    "Verdict",
    "message_id",
    "peer_id_of",
    "public_key_of",
]

#: Largest gossip payload accepted; larger inbound RPCs are dropped unread.
MAX_GOSSIP_MESSAGE = 64 * 1024
#: Default bound on a request read by a handler (sync frames are at most 1 MiB).
DEFAULT_MAX_REQUEST = 1024 * 1024 + 1024
#: Default bound on a response read by ``request``.
DEFAULT_MAX_RESPONSE = 1024 * 1024 + 1024

PeerId = NewType("PeerId", str)
"""A libp2p peer id in its textual (base58btc) form, e.g. ``12D3KooW...``."""


class TransportError(CirclesError):
    """The transport could not do what was asked (see ``reason``)."""

    reason = "transport-error"


class RequestFailed(TransportError):
    """A request got no valid response: refused, reset, oversize or timed out.

    ``reason`` is one of ``"timeout"``, ``"unreachable"``, ``"unsupported"``,
    ``"oversize"``, ``"reset"``; retry with another peer or later.
    """

    reason = "request-failed"


class Verdict(enum.Enum):
    """A validator's answer about one gossip message."""

    ACCEPT = "accept"
    """Deliver it locally and forward it."""
    REJECT = "reject"
    """Invalid: drop it, never forward it, and penalise the peer that sent it."""
    IGNORE = "ignore"
    """Drop it without penalty (e.g. dated too far in the future, or a duplicate)."""


class PeerEventKind(enum.Enum):
    """What happened to a peer connection."""

    CONNECTED = "connected"
    """A connection to the peer is up (either side dialled)."""
    DISCONNECTED = "disconnected"
    """The last connection to the peer is gone."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerEvent:
    """A peer connected or disconnected."""

    kind: PeerEventKind
    """Whether the peer came or went."""
    peer: PeerId
    """The peer concerned."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One gossip message that passed the topic's validator."""

    topic: str
    """The topic it was published on."""
    data: bytes
    """The payload, exactly as published."""
    sender: PeerId
    """The peer that forwarded it to us (our own id for our own publications)."""
    origin: PeerId
    """The peer that published it (signed by the transport's message signing)."""
    message_id: bytes
    """BLAKE2b-256 of ``data``: the de-duplication key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportStatistics:
    """Counters for one transport, for tests, metrics and benchmarks."""

    published: int
    """Messages this transport published."""
    delivered: int
    """Messages handed to local subscriptions (after de-duplication)."""
    rejected: int
    """Inbound messages a validator rejected (never forwarded)."""
    ignored: int
    """Inbound messages a validator ignored."""
    validator_errors: int
    """Validator calls that raised (counted as rejections)."""
    duplicates: int
    """Inbound messages dropped as already seen."""
    oversize: int
    """Inbound messages dropped for exceeding :data:`MAX_GOSSIP_MESSAGE`."""
    overflowed: int
    """Deliveries dropped because a subscription's buffer was full."""
    contained_errors: int
    """Errors from remote input that were contained instead of stopping the host."""


Validator = Callable[[bytes, PeerId], Verdict]
"""A topic validator: ``(data, sender) -> Verdict``. Synchronous and fast;
the transport treats an exception as :attr:`Verdict.REJECT`."""

Handler = Callable[[PeerId, bytes], Awaitable[bytes]]
"""A request handler: ``(peer, request) -> response``. An exception resets
the stream (the requester sees :class:`RequestFailed`); the host keeps serving."""


@runtime_checkable
class Subscription(Protocol):
    """An async iterator over a topic's deliveries; close it to unsubscribe."""

    @property
    def topic(self) -> str:
        """The topic subscribed to."""
        ...

    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    async def __anext__(self) -> Delivery: ...

    async def aclose(self) -> None:
        """Unsubscribe; iteration then ends."""
        ...


@runtime_checkable
class Transport(Protocol):
    """What the node needs from a network. See the module docstring."""

    @property
    def peer_id(self) -> PeerId:
        """This host's peer id."""
        ...

    @property
    def public_key(self) -> bytes:
        """This host's 32-byte ed25519 public key (the member's key)."""
        ...

    def listen_addrs(self) -> list[str]:
        """Full multiaddrs others can dial, each ending in ``/p2p/<peer id>``."""
        ...

    async def connect(self, addr: str) -> PeerId:
        """Dial ``addr`` (a multiaddr with ``/p2p/<peer id>``); return the peer.

        Raises :class:`TransportError` (reason ``"unreachable"``) on failure.
        """
        ...

    async def disconnect(self, peer: PeerId) -> None:
        """Close every connection to ``peer`` (no error if there is none)."""
        ...

    def peers(self) -> frozenset[PeerId]:
        """The peers currently connected."""
        ...

    def events(self) -> AsyncIterator[PeerEvent]:
        """Peer connect/disconnect events from now on (bounded buffer; oldest dropped)."""
        ...

    def set_validator(self, topic: str, validator: Validator | None) -> None:
        """Install (or with None, remove) the validator for ``topic``."""
        ...

    async def subscribe(self, topic: str) -> Subscription:
        """Subscribe to ``topic``; one subscription per topic at a time."""
        ...

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish ``data`` on ``topic``; waits while the outbound queue is full.

        Our own validator is not applied to our own publications, and our own
        subscription to ``topic`` receives the message too.
        """
        ...

    def set_handler(
        self, protocol_id: str, handler: Handler | None, *, max_request: int = DEFAULT_MAX_REQUEST
    ) -> None:
        """Serve ``protocol_id`` with ``handler`` (None stops serving it).

        A request longer than ``max_request`` bytes is refused unread (stream reset).
        """
        ...

    async def request(
        self,
        peer: PeerId,
        protocol_id: str,
        data: bytes,
        *,
        timeout: float,
        max_response: int = DEFAULT_MAX_RESPONSE,
    ) -> bytes:
        """Send ``data`` to ``peer`` on a new stream and return its response.

        Raises :class:`RequestFailed` on timeout, refusal, reset or a response
        over ``max_response`` bytes.
        """
        ...

    def statistics(self) -> TransportStatistics:
        """Current counters."""
        ...


def message_id(data: bytes) -> bytes:
    """The gossip de-duplication id of a payload: BLAKE2b-256 of its bytes."""
    return hashlib.blake2b(data, digest_size=32).digest()


# Multihash "identity" (0x00), length 36, then the libp2p PublicKey protobuf:
# field 1 (KeyType) = 1 (Ed25519), field 2 (Data) = 32 bytes.
_ED25519_PEER_ID_PREFIX = b"\x00\x24\x08\x01\x12\x20"
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _b58encode(raw: bytes) -> str:
    number = int.from_bytes(raw, "big")
    digits = []
    while number:
        number, rest = divmod(number, 58)
        digits.append(_B58[rest])
    leading = len(raw) - len(raw.lstrip(b"\x00"))
    return "1" * leading + "".join(reversed(digits))


def _b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        index = _B58.find(char)
        if index < 0:
            raise ValueError(f"not base58: {char!r}")
        number = number * 58 + index
    leading = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\x00" * leading + body


def peer_id_of(public_key: bytes) -> PeerId:
    """The libp2p peer id of a 32-byte ed25519 public key (as py-libp2p derives it)."""
    if type(public_key) is not bytes or len(public_key) != 32:
        raise TransportError(
            "an ed25519 public key is exactly 32 bytes; pass Identity.public_key",
            reason="bad-public-key",
        )
    return PeerId(_b58encode(_ED25519_PEER_ID_PREFIX + public_key))


def public_key_of(peer: PeerId | str) -> bytes | None:
    """The ed25519 public key a peer id embeds, or None if it embeds none."""
    try:
        raw = _b58decode(peer)
    except ValueError:
        return None
    if len(raw) != len(_ED25519_PEER_ID_PREFIX) + 32 or not raw.startswith(_ED25519_PEER_ID_PREFIX):
        return None
    return raw[len(_ED25519_PEER_ID_PREFIX) :]


# Building blocks shared by the transports (not part of the public API).


class _Counters:
    """Mutable counters behind :class:`TransportStatistics`."""

    __slots__ = (
        "contained_errors",
        "delivered",
        "duplicates",
        "ignored",
        "overflowed",
        "oversize",
        "published",
        "rejected",
        "validator_errors",
    )

    def __init__(self) -> None:
        self.published = 0
        self.delivered = 0
        self.rejected = 0
        self.ignored = 0
        self.validator_errors = 0
        self.duplicates = 0
        self.oversize = 0
        self.overflowed = 0
        self.contained_errors = 0

    def snapshot(self) -> TransportStatistics:
        return TransportStatistics(**{name: getattr(self, name) for name in self.__slots__})


class _SeenCache:
    """Message ids seen within the last ``ttl`` seconds, at most ``limit`` of them.

    Entries go in with a constant lifetime, so insertion order is expiry order
    and purging only ever looks at the front of the dict.
    """

    __slots__ = ("_expiry", "limit", "ttl")

    def __init__(self, *, ttl: float, limit: int) -> None:
        self.ttl = ttl
        self.limit = limit
        self._expiry: dict[bytes, float] = {}

    def seen(self, key: bytes, now: float) -> bool:
        """Whether ``key`` was added within the last ``ttl`` seconds."""
        expiry = self._expiry
        while expiry:
            oldest = next(iter(expiry))
            if expiry[oldest] > now and len(expiry) <= self.limit:
                break
            del expiry[oldest]
        return key in expiry

    def add(self, key: bytes, now: float) -> None:
        """Remember ``key`` for ``ttl`` seconds from ``now``."""
        if key not in self._expiry:
            self._expiry[key] = now + self.ttl

    def __len__(self) -> int:
        return len(self._expiry)


def _run_validator(
    validator: Validator | None, data: bytes, sender: PeerId, counters: _Counters
) -> Verdict:
    """Apply ``validator`` and count the outcome; an exception means REJECT."""
    if validator is None:
        return Verdict.ACCEPT
    try:
        verdict = validator(data, sender)
    except Exception:
        counters.validator_errors += 1
        verdict = Verdict.REJECT
    if not isinstance(verdict, Verdict):
        # A validator returning anything else is a bug in it; failing closed
        # keeps a bad message from spreading.
        counters.validator_errors += 1
        verdict = Verdict.REJECT
    if verdict is Verdict.REJECT:
        counters.rejected += 1
    elif verdict is Verdict.IGNORE:
        counters.ignored += 1
    return verdict


async def _bounded_request(
    check_open: Callable[[], None],
    send: Callable[[PeerId, str, bytes, int], Awaitable[bytes]],
    peer: PeerId,
    protocol_id: str,
    data: bytes,
    *,
    timeout: float,
    max_response: int,
) -> bytes:
    """What every transport's ``request`` does around its own ``send``: one bound, one error.

    Shared so that the in-memory twin refuses, times out and reports exactly as libp2p does.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, not {timeout!r}")
    check_open()
    with trio.move_on_after(timeout):
        return await send(peer, protocol_id, bytes(data), max_response)
    raise RequestFailed(
        f"{peer} did not answer {protocol_id} within {timeout} s; try another peer",
        reason="timeout",
    )


class _BufferedSubscription:
    """A :class:`Subscription` backed by a bounded trio channel.

    The transport pushes with :meth:`offer`, which never blocks: a consumer
    that falls behind loses deliveries (counted in ``overflowed``) rather than
    stalling gossip for every other topic and peer. Sync repairs the loss.
    """

    def __init__(
        self,
        topic: str,
        *,
        capacity: int,
        counters: _Counters,
        on_close: Callable[[_BufferedSubscription], Awaitable[None]],
    ) -> None:
        self._topic = topic
        self._counters = counters
        self._on_close = on_close
        self._closed = False
        self._send, self._receive = trio.open_memory_channel[Delivery](capacity)

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def closed(self) -> bool:
        return self._closed

    def offer(self, delivery: Delivery) -> None:
        try:
            self._send.send_nowait(delivery)
        except trio.WouldBlock:
            self._counters.overflowed += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        else:
            self._counters.delivered += 1

    def end(self) -> None:
        """End iteration (the transport is closing); buffered deliveries remain readable."""
        self._closed = True
        self._send.close()

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        if self._closed:
            return
        self.end()
        await self._on_close(self)


class _EventFanout:
    """Peer events copied to every open ``events()`` iterator (bounded, oldest dropped)."""

    def __init__(self, *, capacity: int = 256) -> None:
        self._capacity = capacity
        self._listeners: list[trio.MemorySendChannel[PeerEvent]] = []
        self._closed = False

    def emit(self, event: PeerEvent) -> None:
        for send in list(self._listeners):
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                pass  # a listener that does not read misses events, by design
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self._listeners.remove(send)

    def close(self) -> None:
        self._closed = True
        for send in self._listeners:
            send.close()
        self._listeners.clear()

    def listen(self) -> AsyncIterator[PeerEvent]:
        # Registered now, not at first iteration, so no event in between is missed.
        send, receive = trio.open_memory_channel[PeerEvent](self._capacity)
        if self._closed:
            send.close()
        else:
            self._listeners.append(send)
        return _EventIterator(receive)


class _EventIterator:
    def __init__(self, receive: trio.MemoryReceiveChannel[PeerEvent]) -> None:
        self._receive = receive

    def __aiter__(self) -> AsyncIterator[PeerEvent]:
        return self

    async def __anext__(self) -> PeerEvent:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None


@contextlib.contextmanager
def _unwrap_single_exception() -> Iterator[None]:
    """Re-raise a lone exception out of the transport's nursery as itself.

    The ``async with`` body runs inside the transport's nursery, so trio wraps
    whatever it raises in an ExceptionGroup; callers should see their own
    exception (a failed assertion, a KeyboardInterrupt) unchanged.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        # Nested nurseries (py-libp2p has several) wrap one error many times.
        inner: BaseException = group
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        if inner is group:
            raise
        raise inner from None
