"""What every part of the node shares: its state, and the helpers each part calls.

:class:`~circles._node.Node` is assembled from parts, each a class over this
core: the intake, where every envelope from gossip or sync passes one door
(:mod:`circles._node_intake`); the node's own moves, durable before they are
published (:mod:`circles._node_own`); and quorum certificates and deals
(:mod:`circles._node_certificates`). ``Node`` itself (:mod:`circles._node`)
holds the lifecycle, the background tasks and the queries. The core declares
the state ``Node.__init__`` sets, so that each part type-checks on its own.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

import protocol
from protocol import Envelope

from ._errors import CirclesError
from ._node_admission import RecentlyStored, RefusedIds
from ._node_events import NodeEvent, Refused
from ._store import SetAside, Store, StoredEnvelope
from ._syncer import Syncer
from ._transport import Transport

if TYPE_CHECKING:
    from ._node_own import _GossipPacer

__all__ = ["CertificateSuperseded", "NodeError", "OwnHistoryUnknown", "PledgeRefused"]

log = logging.getLogger("circles.node")


class NodeError(CirclesError):
    """A node call that cannot be done as asked (see ``reason``)."""

    reason = "node-error"


class CertificateSuperseded(NodeError):
    """A vendor's node will not countersign: the certificate names a pledge its member
    has replaced or withdrawn (``superseded``), or a key that equivocated
    (``equivocator``), or the vendor's own view clears the offer at a cheaper tier
    (``dearer-than-view``). Final: a newer certificate is needed."""

    reason = "superseded"


class PledgeRefused(NodeError):
    """A pledge or withdrawal the circle would not count, so the node does not sign it.

    ``reason``: ``closed`` (a deal closed the circle), ``cancelled``,
    ``expired``, ``late`` (past the pledge deadline), ``above-ceiling``, or
    ``no-pledge`` (a withdrawal with no pledge of ours to withdraw).
    """

    reason = "pledge-refused"


class OwnHistoryUnknown(NodeError):
    """The store cannot tell which sequence numbers this key already signed in a circle,
    and no peer answered in time to show it: signing could equivocate."""

    reason = "own-history-unknown"


class _NodeCore:
    """The node's state (set by ``Node.__init__``) and the helpers every part uses."""

    identity: protocol.Identity
    data_dir: Path
    refused: int
    _clock: Callable[[], float]
    _auto_countersign: bool
    _nursery: trio.Nursery | None
    _transport: Transport | None
    _store: Store | None
    _syncer: Syncer | None
    _states: dict[bytes, Any]
    _joined: set[bytes]
    _subscribed: set[bytes]
    _validated: dict[bytes, Envelope[protocol.Message]]
    _refused_ids: RefusedIds
    _recently_stored: RecentlyStored
    _listeners: list[trio.MemorySendChannel[NodeEvent]]
    _changed: trio.Event
    _own_lock: trio.Lock
    _dropped_events: dict[int, int]
    _my_offers: set[bytes]
    _certificates: dict[bytes, list[Envelope[protocol.Certificate]]]
    _rfq_logs: dict[bytes, protocol.RfqLog]
    _assembled: set[bytes]
    _assemble_delay: float
    _gossip: _GossipPacer
    _set_aside: dict[bytes, SetAside]
    _stalled: set[bytes]
    _unjoined_cache: tuple[tuple[int, int], int, dict[bytes, int]] | None

    if TYPE_CHECKING:
        # Defined by the other parts; declared here so each part type-checks alone.
        def _apply(self, envelope: Envelope[Any], *, replay: bool = False) -> None: ...
        async def _sign_own(self, message: protocol.Message) -> Envelope[Any]: ...
        async def _countersign_quietly(
            self, certificate: Envelope[protocol.Certificate]
        ) -> None: ...
        async def _subscribe(self, circle: bytes) -> None: ...

    @property
    def transport(self) -> Transport:
        """The open transport (for addresses, peers and statistics)."""
        if self._transport is None:
            raise NodeError("the node is not running; use it inside `async with`")
        return self._transport

    @property
    def public_key(self) -> bytes:
        """This node's member key."""
        return self.identity.public_key

    def now(self) -> int:
        """The node's clock, in whole UNIX seconds."""
        return int(self._clock())

    def circle(self, circle: bytes) -> Any:
        """The current state of a known circle (see protocol's ``CircleState``)."""
        state = self._states.get(circle)
        if state is None:
            raise NodeError(
                f"unknown circle {circle.hex()[:16]}…: join it first", reason="unknown-circle"
            )
        return state

    def charter(self, circle: bytes) -> protocol.Charter:
        """The charter of a known circle."""
        return self.circle(circle).charter.message  # type: ignore[no-any-return]

    @property
    def syncer(self) -> Syncer:
        if self._syncer is None:
            raise NodeError("the node is not running; use it inside `async with`")
        return self._syncer

    def _signal(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _emit(self, event: NodeEvent) -> None:
        for channel in list(self._listeners):
            try:
                channel.send_nowait(event)
            except trio.WouldBlock:
                self._dropped_events[id(channel)] = self._dropped_events.get(id(channel), 0) + 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                with contextlib.suppress(ValueError):
                    self._listeners.remove(channel)

    def _refuse(self, circle: bytes, reason: str, sender: str) -> None:
        self.refused += 1
        log.debug("refused an envelope from %s: %s", sender, reason)
        self._emit(Refused(circle=circle, reason=reason, peer=str(sender)))

    def _nursery_start(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)

    def _running_store(self) -> Store:
        if self._store is None:
            raise NodeError("the node is not running; use it inside `async with`")
        return self._store

    def _stored_charter_first(self, circle: bytes) -> list[StoredEnvelope]:
        """A circle's stored envelopes in arrival order, but the charter first, so
        whoever applies them has the circle's rules before anything else; not those
        set aside (the node neither applies nor serves them)."""
        assert self._store is not None
        return sorted(
            (s for s in self._store.envelopes(circle) if s.id not in self._set_aside),
            key=lambda s: s.kind != "charter",
        )
