"""The libp2p host under the transport: keys, security, connections, process-wide fixes.

:func:`_new_host` builds a host whose peer id is the member's ed25519 key,
speaking TCP + Noise + Yamux and nothing weaker, with one connection per peer
and no auto-connector. :func:`_configure_libp2p` applies, once per process
and before the first host, the fixes to py-libp2p that cannot be made per
host (its logging, the signature check, the per-peer outbound queue).
libp2p is imported only inside these functions.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

import protocol

from ._libp2p_core import _Libp2pCore
from ._transport import MAX_GOSSIP_MESSAGE, PeerEvent, PeerEventKind, PeerId

if TYPE_CHECKING:
    from libp2p.abc import IHost

__all__ = ["MAX_INBOUND_RPC", "OUTBOUND_QUEUE"]

#: Largest inbound pubsub RPC read: one maximal message plus its framing
#: (topic, seqno, signature, key, signed peer record).
MAX_INBOUND_RPC = MAX_GOSSIP_MESSAGE + 4096
#: RPCs queued per peer before py-libp2p drops (its default is 32).
OUTBOUND_QUEUE = 1024

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


def _new_host(identity: protocol.Identity, addrs: list[Any], *, mdns: bool) -> IHost:
    """A host for ``identity`` (not yet running) that will listen on ``addrs``."""
    from libp2p import new_host
    from libp2p.crypto.ed25519 import Ed25519PrivateKey
    from libp2p.crypto.keys import KeyPair
    from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
    from libp2p.network.config import ConnectionConfig
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
    from libp2p.security.noise.transport import Transport as NoiseTransport

    private_key = Ed25519PrivateKey(identity.signing_key)
    key_pair = KeyPair(private_key, private_key.get_public_key())
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
    return host


async def _no_auto_connect() -> None:
    await trio.lowlevel.checkpoint()


def _connection_notifee(transport: _Libp2pCore) -> Any:
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


def _not_a_shutdown_race(record: logging.LogRecord) -> bool:
    """False for the swarm's warning about a connection that arrived as it stopped."""
    return not (
        record.getMessage().startswith("[ADDCONN_FAIL]")
        and "Cannot schedule task after service has stopped" in record.getMessage()
    )
