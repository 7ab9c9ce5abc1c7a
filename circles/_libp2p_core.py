"""What every part of the libp2p transport shares: its state and the open check.

:class:`~circles._libp2p.Libp2pTransport` is assembled from parts, each a
class over this core: gossip (:mod:`circles._libp2p_pubsub`) and
request/response streams (:mod:`circles._libp2p_streams`). The transport
itself (:mod:`circles._libp2p`) holds identity, peers and the life cycle. The
core declares the state ``Libp2pTransport.__init__`` sets, so that each part
type-checks on its own. Like every ``_libp2p*`` module, it imports libp2p only
inside functions (or for type checking).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

import protocol

from ._transport import (
    Handler,
    PeerId,
    TransportError,
    Validator,
    _BufferedSubscription,
    _Counters,
    _EventFanout,
    _SeenCache,
)

if TYPE_CHECKING:
    from libp2p.abc import IHost

__all__: list[str] = []

logger = logging.getLogger("circles.libp2p")


class _Libp2pCore:
    """The transport's state (set by ``Libp2pTransport.__init__``) and the open check."""

    _identity: protocol.Identity
    _peer_id: PeerId
    _host: IHost
    _pubsub: Any
    _nursery: trio.Nursery
    _subscription_buffer: int
    _counters: _Counters
    _events: _EventFanout
    _validators: dict[str, Validator]
    _subscriptions: dict[str, _BufferedSubscription]
    _accepted: _SeenCache
    _delivered: _SeenCache
    _forwarders: dict[bytes, PeerId]
    _ignoring: bytes | None
    _closing: bool
    _handlers: dict[str, tuple[Handler, int]]

    def _check_open(self) -> None:
        if self._closing:
            raise TransportError("the transport is closed", reason="closed")
