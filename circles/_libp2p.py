"""The libp2p transport: py-libp2p 0.8.1, hardened, behind :class:`circles.Transport`.

The only module that imports libp2p, and only inside functions: ``import
libp2p`` costs most of a second, which ``circles --help`` should not pay.

Theory of operation. :func:`open_libp2p_transport` builds a host whose peer id
is the member's ed25519 key, speaking TCP + Noise + Yamux and nothing weaker:
the security set is Noise alone, so a dialer offering only plaintext (or
secio) finds no common protocol and is refused. On it run gossipsub and a
request/response layer. What py-libp2p's defaults get wrong (see
shared/LIBP2P.md) is overridden here, each with the reason beside it:

- gossipsub: the spam limiter (10 messages/s per peer per topic, silently)
  is off; heartbeat 1 s, adaptive gossip off (it stretched the heartbeat to a
  minute); IP-colocation and eclipse protection off (every test peer shares
  127.0.0.1); scoring on with explicit thresholds, so a peer whose messages we
  reject falls below the publish and graylist thresholds and is ignored;
- outbound queues of 1,024 RPCs per peer instead of 32, and ``publish`` waits
  while a peer's queue is past half full (back-pressure) rather than letting
  the queue drop the message;
- inbound pubsub RPCs over 64 KiB + framing are dropped unread;
- a message id is still gossipsub's (from, seqno), but the validator wrapper
  de-duplicates by content (BLAKE2b-256 of the data) before the user's
  validator runs, so the same envelope relayed by two origins costs one
  validation and is delivered once;
- remote input never reaches an unguarded code path: the pubsub read loop,
  message handling, the signature check and every stream handler run inside
  handlers that contain any exception (the stream is reset and the peer
  dropped, the host keeps serving); the validator wrapper catches everything;
- shutdown closes the host first (shielded, bounded), then the services, and
  stops the seen-cache sweeper thread that py-libp2p leaks.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

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
    _BufferedSubscription,
    _Counters,
    _EventFanout,
    _run_validator,
    _SeenCache,
    _unwrap_single_exception,
    message_id,
    peer_id_of,
)

if TYPE_CHECKING:
    from libp2p.abc import IHost

__all__ = ["Libp2pTransport", "open_libp2p_transport"]

#: Largest inbound pubsub RPC read: one maximal message plus its framing
#: (topic, seqno, signature, key, signed peer record).
MAX_INBOUND_RPC = MAX_GOSSIP_MESSAGE + 4096
#: RPCs queued per peer before py-libp2p drops (its default is 32).
OUTBOUND_QUEUE = 1024
#: ``publish`` waits while some peer's queue holds at least this many RPCs.
BACKPRESSURE_HIGH_WATER = OUTBOUND_QUEUE // 2
#: Longest ``publish`` waits for one stalled peer before going ahead anyway
#: (that peer's queue then drops; sync repairs it). A peer that stops reading
#: must not stop us publishing to everyone else.
BACKPRESSURE_PATIENCE = 2.0
#: Bound on closing the host at exit.
SHUTDOWN_TIMEOUT = 1.0
#: Bound on one inbound request: read, handle, respond.
HANDLER_TIMEOUT = 30.0

logger = logging.getLogger("circles.libp2p")

_patched: list[bool] = []


def _configure_libp2p() -> None:
    """Process-wide fixes to py-libp2p, applied once, before the first host.

    They are module-level because py-libp2p builds these objects inside its
    own functions; each is a strict improvement for any host in the process.
    """
    if _patched:
        return
    import libp2p.pubsub.pubsub as pubsub_module
    from libp2p.pubsub.rpc_queue import RpcQueue

    # Importing libp2p set propagate=False, so its records reached no handler
    # of the application and warnings went to stderr through the last-resort
    # handler. Hand them to the application's logging configuration instead;
    # the NullHandler keeps them off stderr when there is none.
    libp2p_logger = logging.getLogger("libp2p")
    libp2p_logger.propagate = True
    if not any(isinstance(h, logging.NullHandler) for h in libp2p_logger.handlers):
        libp2p_logger.addHandler(logging.NullHandler())
    # A few py-libp2p modules log through the module-level `logging.debug()`,
    # whose first call runs `logging.basicConfig()`: that put a stderr handler
    # on the root logger behind the application's back, and every libp2p
    # warning reached stderr from then on (the demo printed a LifecycleError
    # traceback at shutdown). Give those modules a logger of their own instead.
    import libp2p.network.connection.swarm_connection as swarm_connection_module
    import libp2p.tools.utils as tools_utils_module

    for module in (swarm_connection_module, tools_utils_module):
        module.logging = logging.getLogger(module.__name__)  # type: ignore[attr-defined]
    # A connection whose upgrade completes while the host stops is refused
    # and cleaned up by the swarm, which still logs a warning with a traceback.
    logging.getLogger("libp2p.network.swarm").addFilter(_not_a_shutdown_race)

    # A junk `key` field made the signature check raise out of the host's
    # nursery (validators.py 60-63): a message that cannot be checked is invalid.
    original_signature_validator = pubsub_module.signature_validator  # type: ignore[attr-defined]

    def safe_signature_validator(msg: Any) -> bool:
        try:
            return bool(original_signature_validator(msg))
        except Exception:
            return False

    pubsub_module.signature_validator = safe_signature_validator  # type: ignore[attr-defined]

    class DrainingRpcQueue(RpcQueue):
        """py-libp2p's per-peer queue, larger, and telling waiters when it drains."""

        def __init__(self, max_size: int = OUTBOUND_QUEUE, max_message_size: int = 0) -> None:
            super().__init__(
                max_size=max_size, max_message_size=max_message_size or MAX_INBOUND_RPC
            )
            self.drained = trio.Event()

        async def pop(self) -> Any:
            item = await super().pop()
            self._wake()
            return item

        def close(self) -> None:
            super().close()
            self._wake()

        def _wake(self) -> None:
            event, self.drained = self.drained, trio.Event()
            event.set()

    pubsub_module.RpcQueue = DrainingRpcQueue  # type: ignore[attr-defined]
    _patched.append(True)


def _score_params() -> Any:
    from libp2p.pubsub.score import ScoreParams, TopicScoreParams

    # Each rejected message costs 1 point, decaying by 1% per heartbeat (~70 s
    # half-life). 20 invalid messages stop us publishing to the peer; 40 make
    # us ignore it (graylist). py-libp2p's defaults are -inf: scoring off.
    return ScoreParams(
        p4_invalid_messages=TopicScoreParams(weight=1.0, cap=1000.0, decay=0.99),
        p7_ip_colocation_weight=0.0,
        publish_threshold=-20.0,
        gossip_threshold=-10.0,
        graylist_threshold=-40.0,
        accept_px_threshold=math.inf,
    )


class Libp2pTransport:
    """A running py-libp2p host; implements :class:`circles.Transport`.

    Open it with :func:`open_libp2p_transport`; do not construct it directly.
    """

    def __init__(
        self,
        *,
        identity: protocol.Identity,
        host: IHost,
        pubsub: Any,
        nursery: trio.Nursery,
        subscription_buffer: int,
    ) -> None:
        self._identity = identity
        self._peer_id = peer_id_of(identity.public_key)
        self._host = host
        self._pubsub = pubsub
        self._nursery = nursery
        self._subscription_buffer = subscription_buffer
        self._counters = _Counters()
        self._events = _EventFanout()
        self._validators: dict[str, Validator] = {}
        self._subscriptions: dict[str, _BufferedSubscription] = {}
        # Content ids accepted by the validator (duplicate check) and handed to
        # a local subscription (local de-duplication), each for two minutes.
        self._accepted = _SeenCache(ttl=120.0, limit=200_000)
        self._delivered = _SeenCache(ttl=120.0, limit=200_000)
        # Forwarder of each accepted message, until it reaches the subscription.
        self._forwarders: dict[bytes, PeerId] = {}
        # Set by the validator wrapper when it ignores a message, read (and
        # cleared) by the scorer hook py-libp2p calls right after, with no
        # checkpoint in between: an ignored message costs its sender nothing.
        self._ignoring: bytes | None = None
        self._closing = False
        self._handlers: dict[str, tuple[Handler, int]] = {}

    # Identity and peers.

    @property
    def peer_id(self) -> PeerId:
        return self._peer_id

    @property
    def public_key(self) -> bytes:
        return self._identity.public_key

    def listen_addrs(self) -> list[str]:
        return [f"{addr}/p2p/{self._peer_id}" for addr in self._host.get_transport_addrs()]

    def peers(self) -> frozenset[PeerId]:
        return frozenset(PeerId(p.to_base58()) for p in self._host.get_connected_peers())

    def events(self) -> AsyncIterator[PeerEvent]:
        return self._events.listen()

    async def connect(self, addr: str) -> PeerId:
        from libp2p.peer.peerinfo import info_from_p2p_addr
        from multiaddr import Multiaddr

        self._check_open()
        try:
            info = info_from_p2p_addr(Multiaddr(addr))
        except Exception as exc:
            raise TransportError(
                f"{addr!r} is not a multiaddr ending in /p2p/<peer id>: {exc}",
                reason="bad-address",
            ) from None
        peer = PeerId(info.peer_id.to_base58())
        if peer == self._peer_id:
            raise TransportError("a host cannot dial itself", reason="bad-address")
        try:
            await self._host.connect(info)
        except trio.Cancelled:
            raise
        except Exception as exc:
            raise TransportError(
                f"could not connect to {addr}: {exc}", reason="unreachable"
            ) from None
        return peer

    async def disconnect(self, peer: PeerId) -> None:
        from libp2p.peer.id import ID

        with contextlib.suppress(Exception):
            await self._host.disconnect(ID.from_base58(peer))

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
            capacity=self._subscription_buffer,
            counters=self._counters,
            on_close=self._unsubscribe,
        )
        self._subscriptions[topic] = subscription
        # Registered before subscribing so that no message slips past it.
        self._pubsub.set_topic_validator(topic, self._make_validator(topic), False)
        await self._pubsub.subscribe(topic)
        return subscription

    async def _unsubscribe(self, subscription: _BufferedSubscription) -> None:
        topic = subscription.topic
        if self._subscriptions.get(topic) is not subscription:
            return
        del self._subscriptions[topic]
        if not self._closing:
            with contextlib.suppress(Exception):
                await self._pubsub.unsubscribe(topic)
            self._pubsub.remove_topic_validator(topic)

    def _make_validator(self, topic: str) -> Any:
        def validate(forwarder: Any, msg: Any) -> bool:
            # Runs inside py-libp2p, where an exception stops pubsub: contain all.
            try:
                return self._validate(topic, forwarder, msg)
            except Exception:
                self._counters.contained_errors += 1
                logger.exception("validator wrapper failed; message rejected")
                return False

        return validate

    def _validate(self, topic: str, forwarder: Any, msg: Any) -> bool:
        data: bytes = msg.data
        sender = PeerId(forwarder.to_base58())
        key = message_id(data)
        now = trio.current_time()
        if sender == self._peer_id:
            # Our own publication: never judged by our own validator.
            self._remember(key, sender, now)
            return True
        if len(data) > MAX_GOSSIP_MESSAGE:
            self._counters.oversize += 1
            return False
        if self._accepted.seen(key, now):
            self._counters.duplicates += 1
            self._ignoring = self._pubsub.get_message_id(msg)
            return False
        verdict = _run_validator(self._validators.get(topic), data, sender, self._counters)
        if verdict is Verdict.ACCEPT:
            self._remember(key, sender, now)
            return True
        if verdict is Verdict.IGNORE:
            self._ignoring = self._pubsub.get_message_id(msg)
        return False

    def _remember(self, key: bytes, sender: PeerId, now: float) -> None:
        self._accepted.add(key, now)
        if len(self._forwarders) > 10_000:
            # Only reached if deliveries never come (they always should).
            self._forwarders.clear()
        self._forwarders[key] = sender

    def _on_invalid_message(self, original: Any, peer: Any, topic: str) -> None:
        ignoring, self._ignoring = self._ignoring, None
        if ignoring is not None:
            # py-libp2p cached the failed validation by its own id; forget it
            # so the same message may be judged again (it may become valid).
            with contextlib.suppress(Exception):
                self._pubsub.validation_cache._remove(ignoring)
            return
        original(peer, topic)

    def _notify(self, msg: Any) -> None:
        """Called by pubsub for each accepted message (instead of its 32-slot queue)."""
        data: bytes = msg.data
        key = message_id(data)
        sender = self._forwarders.pop(key, None)
        now = trio.current_time()
        if self._delivered.seen(key, now):
            return
        self._delivered.add(key, now)
        from libp2p.peer.id import ID

        try:
            origin = PeerId(ID(msg.from_id).to_base58())
        except Exception:
            origin = PeerId("")
        for topic in msg.topicIDs:
            subscription = self._subscriptions.get(topic)
            if subscription is not None:
                subscription.offer(
                    Delivery(
                        topic=topic,
                        data=data,
                        sender=sender or origin,
                        origin=origin,
                        message_id=key,
                    )
                )

    async def publish(self, topic: str, data: bytes) -> None:
        self._check_open()
        if len(data) > MAX_GOSSIP_MESSAGE:
            raise TransportError(
                f"a gossip message is at most {MAX_GOSSIP_MESSAGE} bytes, not {len(data)}; "
                "send large content over a request stream",
                reason="oversize",
            )
        await self._wait_for_queue_room()
        try:
            await self._pubsub.publish(topic, bytes(data))
        except trio.Cancelled:
            raise
        except Exception as exc:
            raise TransportError(f"publishing failed: {exc}", reason="publish-failed") from None
        self._counters.published += 1

    async def _wait_for_queue_room(self) -> None:
        deadline = trio.current_time() + BACKPRESSURE_PATIENCE
        while True:
            full = [
                queue
                for queue in list(self._pubsub.peer_queues.values())
                if len(queue) >= BACKPRESSURE_HIGH_WATER and not queue.closed
            ]
            if not full or trio.current_time() >= deadline:
                return
            drained = getattr(full[0], "drained", None)
            if drained is None:
                return
            with trio.move_on_at(deadline):
                await drained.wait()

    # Request/response.

    def set_handler(
        self, protocol_id: str, handler: Handler | None, *, max_request: int = DEFAULT_MAX_REQUEST
    ) -> None:
        from libp2p.custom_types import TProtocol

        if handler is None:
            self._handlers.pop(protocol_id, None)
            with contextlib.suppress(Exception):
                self._host.remove_stream_handler(TProtocol(protocol_id))
            return
        self._handlers[protocol_id] = (handler, max_request)

        async def serve(stream: Any) -> None:
            await self._serve(protocol_id, stream)

        self._host.set_stream_handler(TProtocol(protocol_id), serve)

    async def _serve(self, protocol_id: str, stream: Any) -> None:
        from libp2p.utils.varint import (
            encode_varint_prefixed,
            read_varint_prefixed_bytes_limited,
        )

        # A raw stream handler that raises kills the host (basic_host.py
        # ~1554): everything here is contained, and the stream reset on error.
        try:
            entry = self._handlers.get(protocol_id)
            if entry is None:
                raise LookupError(protocol_id)
            handler, max_request = entry
            peer = PeerId(stream.muxed_conn.peer_id.to_base58())
            with trio.fail_after(HANDLER_TIMEOUT):
                request = await read_varint_prefixed_bytes_limited(stream, max_request)
                response = await handler(peer, request)
                if not isinstance(response, bytes):
                    raise TypeError(f"handler returned {type(response).__name__}, not bytes")
                await stream.write(encode_varint_prefixed(response))
                await stream.close()
        except trio.Cancelled:
            raise
        except Exception:
            self._counters.contained_errors += 1
            logger.debug("request handler for %s failed", protocol_id, exc_info=True)
            with contextlib.suppress(Exception):
                await stream.reset()

    async def request(
        self,
        peer: PeerId,
        protocol_id: str,
        data: bytes,
        *,
        timeout: float,
        max_response: int = DEFAULT_MAX_RESPONSE,
    ) -> bytes:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self._check_open()
        with trio.move_on_after(timeout):
            return await self._request(peer, protocol_id, bytes(data), max_response)
        raise RequestFailed(
            f"{peer} did not answer {protocol_id} within {timeout} s; try another peer",
            reason="timeout",
        )

    async def _request(
        self, peer: PeerId, protocol_id: str, data: bytes, max_response: int
    ) -> bytes:
        from libp2p.custom_types import TProtocol
        from libp2p.io.exceptions import MessageTooLarge
        from libp2p.peer.id import ID
        from libp2p.utils.varint import (
            encode_varint_prefixed,
            read_varint_prefixed_bytes_limited,
        )

        try:
            remote = ID.from_base58(peer)
        except Exception:
            raise RequestFailed(f"{peer!r} is not a peer id", reason="unreachable") from None
        try:
            stream = await self._host.new_stream(remote, [TProtocol(protocol_id)])
        except trio.Cancelled:
            raise
        except Exception as exc:
            connected = remote in self._host.get_connected_peers()
            raise RequestFailed(
                f"could not open {protocol_id} to {peer}: {exc}",
                reason="unsupported" if connected else "unreachable",
            ) from None
        try:
            await stream.write(encode_varint_prefixed(data))
            return await read_varint_prefixed_bytes_limited(stream, max_response)
        except trio.Cancelled:
            raise
        except MessageTooLarge:
            raise RequestFailed(
                f"{peer} answered over the {max_response}-byte limit", reason="oversize"
            ) from None
        except Exception as exc:
            raise RequestFailed(
                f"{peer} reset the {protocol_id} stream: {exc}", reason="reset"
            ) from None
        finally:
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(1),
                contextlib.suppress(Exception),
            ):
                await stream.reset()

    async def _dial_discovered(self) -> None:
        """Dial peers that mDNS put in the peerstore (it does not dial them itself).

        Polls rather than hooking zeroconf's callbacks, which run on its own
        thread; one dial at a time, since parallel dials under load time out.
        """
        from libp2p.peer.peerinfo import PeerInfo

        attempted: set[Any] = set()
        first_seen: dict[Any, float] = {}
        peerstore = self._host.get_peerstore()
        me = self._host.get_id()
        while True:
            await trio.sleep(1.0)
            connected = set(self._host.get_connected_peers())
            for peer in list(peerstore.peers_with_addrs()):
                if peer == me or peer in attempted or peer in connected:
                    continue
                # Both sides discover each other at once; two simultaneous
                # dials left a duplicate connection's socket unclosed. The
                # smaller peer id dials; the other only if that never comes.
                seen = first_seen.setdefault(peer, trio.current_time())
                if me.to_bytes() > peer.to_bytes() and trio.current_time() - seen < 5.0:
                    continue
                attempted.add(peer)
                with trio.move_on_after(10), contextlib.suppress(Exception):
                    await self._host.connect(PeerInfo(peer, peerstore.addrs(peer)))

    # Life cycle.

    def statistics(self) -> TransportStatistics:
        return self._counters.snapshot()

    def _check_open(self) -> None:
        if self._closing:
            raise TransportError("the transport is closed", reason="closed")

    def _shutdown(self) -> None:
        self._closing = True
        for subscription in self._subscriptions.values():
            subscription.end()
        self._subscriptions.clear()
        self._events.close()


def _guarded_pubsub_class() -> type[Any]:
    from libp2p.pubsub.pubsub import Pubsub

    class GuardedPubsub(Pubsub):
        """Pubsub whose remote-facing paths contain every exception.

        Measured on 0.8.1: an undecodable protobuf frame (pubsub.py ~562) and
        a message with a junk key escaped the host's nursery and stopped it.
        """

        transport: Libp2pTransport | None = None

        async def stream_handler(self, stream: Any) -> None:
            try:
                await super().stream_handler(stream)
            except trio.Cancelled:
                raise
            except Exception:
                self._contain("pubsub stream", stream.muxed_conn.peer_id)
                with contextlib.suppress(Exception):
                    await stream.reset()
                with contextlib.suppress(Exception):
                    self._handle_dead_peer(stream.muxed_conn.peer_id)

        async def push_msg(self, msg_forwarder: Any, msg: Any) -> None:
            try:
                await super().push_msg(msg_forwarder, msg)
            except trio.Cancelled:
                raise
            except Exception:
                self._contain("pubsub message", msg_forwarder)

        def notify_subscriptions(self, publish_message: Any) -> None:
            transport = self.transport
            if transport is not None:
                transport._notify(publish_message)

        def _contain(self, what: str, peer: Any) -> None:
            if self.transport is not None:
                self.transport._counters.contained_errors += 1
            logger.warning("contained an error from %s of peer %s", what, peer, exc_info=True)

    return GuardedPubsub


def _connection_notifee(transport: Libp2pTransport) -> Any:
    """A py-libp2p notifee turning connection notifications into :class:`PeerEvent` s."""
    from libp2p.abc import INotifee

    class ConnectionNotifee(INotifee):
        async def connected(self, network: Any, conn: Any) -> None:
            peer = conn.muxed_conn.peer_id
            if len(network.get_connections(peer)) <= 1:
                transport._events.emit(
                    PeerEvent(kind=PeerEventKind.CONNECTED, peer=PeerId(peer.to_base58()))
                )

        async def disconnected(self, network: Any, conn: Any) -> None:
            peer = conn.muxed_conn.peer_id
            if not network.get_connections(peer):
                transport._events.emit(
                    PeerEvent(kind=PeerEventKind.DISCONNECTED, peer=PeerId(peer.to_base58()))
                )

        async def opened_stream(self, network: Any, stream: Any) -> None:
            return None

        async def closed_stream(self, network: Any, stream: Any) -> None:
            return None

        async def listen(self, network: Any, multiaddr: Any) -> None:
            return None

        async def listen_close(self, network: Any, multiaddr: Any) -> None:
            return None

    return ConnectionNotifee()


@contextlib.asynccontextmanager
async def open_libp2p_transport(
    identity: protocol.Identity,
    *,
    listen: Sequence[str] = ("/ip4/127.0.0.1/tcp/0",),
    mdns: bool = False,
    heartbeat_interval: int = 1,
    subscription_buffer: int = 4096,
) -> AsyncIterator[Libp2pTransport]:
    """Run a py-libp2p host for ``identity`` until the block exits.

    The host listens on ``listen`` (loopback on an ephemeral port by
    default), speaks TCP + Noise + Yamux and gossipsub. With ``mdns`` it
    announces itself on the LAN and dials the peers it discovers there
    (py-libp2p's mDNS only records them). Exit closes it within about a second
    and leaves no task or thread behind.
    """
    if heartbeat_interval < 1:
        raise ValueError("heartbeat_interval is whole seconds, at least 1")
    _configure_libp2p()
    from libp2p import new_host
    from libp2p.crypto.ed25519 import Ed25519PrivateKey
    from libp2p.crypto.keys import KeyPair
    from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
    from libp2p.network.config import ConnectionConfig
    from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
    from libp2p.security.noise.transport import Transport as NoiseTransport
    from libp2p.tools.anyio_service import background_trio_service
    from multiaddr import Multiaddr

    private_key = Ed25519PrivateKey(identity.signing_key)
    key_pair = KeyPair(private_key, private_key.get_public_key())
    if isinstance(listen, str):
        listen = (listen,)
    addrs = [Multiaddr(a) for a in listen]
    host = new_host(
        key_pair=key_pair,
        # Noise only: the default set also had plaintext and secio, and a
        # plaintext dialer claiming any peer id was accepted (a downgrade).
        sec_opt={
            NOISE_PROTOCOL_ID: NoiseTransport(
                key_pair, noise_privkey=create_x25519_key_pair().private_key
            )
        },
        listen_addrs=addrs,
        enable_mDNS=mdns,
        # One connection per peer also removes the 250 ms happy-eyeballs wait
        # per dial; the watermarks at 0 stop the auto-connector from dialling
        # every peer it has heard of.
        connection_config=ConnectionConfig(
            max_connections_per_peer=1, min_connections=0, low_watermark=0
        ),
    )
    # The auto-connector dials every peer in the peerstore toward a target of
    # ~150 connections, every 30 s and after each disconnect: the node chooses
    # its peers (bootstrap, mDNS, sync), so it is switched off.
    network: Any = host.get_network()
    network.auto_connector.maybe_connect = _no_auto_connect
    gossipsub = GossipSub(
        protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
        degree=6,
        degree_low=4,
        degree_high=12,
        heartbeat_initial_delay=0.1,
        heartbeat_interval=heartbeat_interval,
        score_params=_score_params(),
        adaptive_gossip_enabled=False,
        spam_protection_enabled=False,
        eclipse_protection_enabled=False,
    )
    pubsub = _guarded_pubsub_class()(
        host, gossipsub, max_inbound_rpc_size=MAX_INBOUND_RPC, max_subscriptions_per_peer=10_000
    )
    scorer: Any = gossipsub.scorer
    with _unwrap_single_exception():
        async with trio.open_nursery() as nursery:
            transport = Libp2pTransport(
                identity=identity,
                host=host,
                pubsub=pubsub,
                nursery=nursery,
                subscription_buffer=subscription_buffer,
            )
            pubsub.transport = transport
            original = scorer.on_invalid_message
            scorer.on_invalid_message = lambda peer, topic: transport._on_invalid_message(
                original, peer, topic
            )
            host.get_network().register_notifee(_connection_notifee(transport))
            if mdns:
                nursery.start_soon(transport._dial_discovered)
            try:
                async with (
                    host.run(listen_addrs=addrs),
                    background_trio_service(pubsub),
                    background_trio_service(gossipsub),
                ):
                    with trio.fail_after(10):
                        await pubsub.wait_until_ready()
                    try:
                        yield transport
                    finally:
                        transport._shutdown()
                        # Close the host before the services stop: its
                        # listeners otherwise kept accepting, and traffic
                        # in flight hit closed nurseries.
                        with (
                            trio.CancelScope(shield=True),
                            trio.move_on_after(SHUTDOWN_TIMEOUT),
                        ):
                            await host.close()
            except BaseExceptionGroup as group:
                # Shutting down with traffic in flight can make py-libp2p
                # spawn into a closing nursery; that is not the caller's error.
                rest = group.split(_is_closed_nursery_error)[1]
                if rest is not None:
                    raise rest from None
            finally:
                pubsub.seen_messages.stop()  # joins the sweeper thread py-libp2p leaks
                nursery.cancel_scope.cancel()


async def _no_auto_connect() -> None:
    await trio.lowlevel.checkpoint()


def _is_closed_nursery_error(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and "Nursery is closed" in str(exc)


def _not_a_shutdown_race(record: logging.LogRecord) -> bool:
    """False for the swarm's warning about a connection that arrived as it stopped."""
    return not (
        record.getMessage().startswith("[ADDCONN_FAIL]")
        and "Cannot schedule task after service has stopped" in record.getMessage()
    )
