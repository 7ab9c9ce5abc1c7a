"""The libp2p transport: py-libp2p 0.8.1, hardened, behind :class:`circles.Transport`.

With its parts (the ``circles._libp2p_*`` modules, listed below), the only
code that imports libp2p, and only inside functions: ``import libp2p`` costs
most of a second, which ``circles --help`` should not pay.

Theory of operation. :func:`open_libp2p_transport` builds a host whose peer id
is the member's ed25519 key, speaking TCP + Noise + Yamux and nothing weaker:
the security set is Noise alone, so a dialer offering only plaintext (or
secio) finds no common protocol and is refused. On it run gossipsub and a
request/response layer. What py-libp2p's defaults get wrong (see
shared/LIBP2P.md) is overridden in the module that owns it, each with the
reason beside it:

- gossipsub: the spam limiter (10 messages/s per peer per topic, silently)
  is off; heartbeat 1 s, adaptive gossip off (it stretched the heartbeat to a
  minute); IP-colocation and eclipse protection off (every test peer shares
  127.0.0.1); scoring on with explicit thresholds, so a peer whose messages we
  reject falls below the publish and graylist thresholds and is ignored;
- outbound queues of 1,024 RPCs per peer instead of 32, and ``publish`` waits
  while a peer's queue is past half full (back-pressure) rather than letting
  the queue drop the message;
- inbound pubsub RPCs over 64 KiB + framing are dropped unread;
- a subscription to a topic name over 256 characters is ignored (py-libp2p held
  every one a peer sent, 64 KiB each, up to 10,000 per peer);
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

The parts: the host, its keys and security, and the process-wide fixes in
:mod:`circles._libp2p_host`; gossipsub and the validator wrapper in
:mod:`circles._libp2p_pubsub`; request/response streams in
:mod:`circles._libp2p_streams`; dialling what mDNS finds in
:mod:`circles._libp2p_mdns`; the state they share in :mod:`circles._libp2p_core`.
This module assembles :class:`Libp2pTransport` from them and runs it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import trio

import protocol

from ._libp2p_host import _configure_libp2p, _connection_notifee, _new_host
from ._libp2p_mdns import _dial_discovered
from ._libp2p_pubsub import _Gossip, _new_pubsub
from ._libp2p_streams import _Requests
from ._transport import (
    Handler,
    PeerEvent,
    PeerId,
    TransportError,
    TransportStatistics,
    Validator,
    _BufferedSubscription,
    _Counters,
    _EventFanout,
    _SeenCache,
    _unwrap_single_exception,
    peer_id_of,
)

if TYPE_CHECKING:
    from libp2p.abc import IHost

__all__ = ["Libp2pTransport", "open_libp2p_transport"]

#: Bound on closing the host at exit.
SHUTDOWN_TIMEOUT = 1.0


class Libp2pTransport(_Gossip, _Requests):
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

    # Life cycle.

    def statistics(self) -> TransportStatistics:
        return self._counters.snapshot()

    def _shutdown(self) -> None:
        self._closing = True
        for subscription in self._subscriptions.values():
            subscription.end()
        self._subscriptions.clear()
        self._events.close()


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
    from libp2p.tools.anyio_service import background_trio_service
    from multiaddr import Multiaddr

    if isinstance(listen, str):
        listen = (listen,)
    addrs = [Multiaddr(a) for a in listen]
    host = _new_host(identity, addrs, mdns=mdns)
    pubsub, gossipsub = _new_pubsub(host, heartbeat_interval=heartbeat_interval)
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
                nursery.start_soon(_dial_discovered, host)
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


def _is_closed_nursery_error(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and "Nursery is closed" in str(exc)
