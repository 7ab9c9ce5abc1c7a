"""Log sync over ``/buying-circles/sync/1.0.0``: fetch what gossip dropped.

Theory of operation: each round compares a circle's message-id set with one
peer's (a :class:`~protocol._sync.SyncSummary`, answered by ``in-sync`` when
equal) and otherwise fetches the envelopes the requester lacks, naming every id
it has by an 8-byte prefix so nothing is sent twice. A responder that sees a
summary different from its own also learns that the requester may hold
messages it lacks, and schedules a pull from that peer, so a healed partition
converges from both sides. Rounds run when a circle is joined, when a peer
connects, and periodically (anti-entropy); every request is bounded in size
and time, and a peer that answers garbage only fails its own round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Protocol

import trio

import protocol
from protocol._sync import (
    MAX_SYNC_FRAME,
    SyncEnvelopes,
    SyncFetch,
    SyncFrame,
    SyncInSync,
    SyncSummary,
    decode_sync_frame,
    encode_sync_frame,
    id_prefixes,
    ids_digest,
)

from ._topics import SYNC_PROTOCOL
from ._transport import PeerId, Transport, TransportError

__all__ = ["CircleLog", "Syncer"]

log = logging.getLogger("circles.sync")

# Fetch rounds per sync with one peer: each returns up to a frame of envelopes.
_MAX_FETCH_ROUNDS = 64
# Peers remembered as not serving sync, at most (then forgotten, and asked again).
_MAX_NO_SYNC = 1024
# Seconds a peer that refused sync is left alone.
_NO_SYNC_MEMORY = 60.0


class CircleLog(Protocol):
    """What the syncer needs from the node's store of a circle's messages."""

    def ids(self, circle: bytes) -> set[bytes] | None:
        """The ids held for ``circle``, or None when the circle is not served."""
        ...

    def envelopes(self, circle: bytes) -> Iterable[tuple[bytes, bytes]]:
        """``(id, data)`` of every message of ``circle``, charter first."""
        ...

    async def ingest(self, circle: bytes, data: bytes, peer: PeerId) -> bool:
        """Take an envelope ``peer`` sent as one of ``circle``'s; True if it was new and admitted.

        The log judges it as it would on the circle's gossip topic: a peer
        answering sync can slip in nothing that gossip would refuse.
        """
        ...


class Syncer:
    """Serves sync requests and runs sync rounds for one node."""

    def __init__(
        self,
        transport: Transport,
        log_view: CircleLog,
        *,
        timeout: float = 10.0,
        on_behind: Callable[[bytes, PeerId], None] | None = None,
    ) -> None:
        self._transport = transport
        self._log = log_view
        #: Seconds one request may take.
        self.timeout = timeout
        self._on_behind = on_behind
        self.rounds = 0
        self._no_sync: dict[PeerId, float] = {}
        self.fetched = 0
        transport.set_handler(SYNC_PROTOCOL, self._serve)

    async def _serve(self, peer: PeerId, request: bytes) -> bytes:
        # A peer that asks us for sync serves it too, whatever failed before.
        self.forget_refusal(peer)
        frame = decode_sync_frame(request)  # a ProtocolError resets the stream
        ids = self._log.ids(frame.circle) if isinstance(frame, SyncSummary | SyncFetch) else None
        if ids is None:
            # Unknown circle (or a frame a requester never sends): nothing to offer.
            return encode_sync_frame(
                SyncEnvelopes(circle=_circle_of(frame), envelopes=(), more=False)
            )
        if isinstance(frame, SyncSummary):
            if frame.count == len(ids) and frame.digest == ids_digest(ids):
                return encode_sync_frame(SyncInSync(circle=frame.circle))
            if self._on_behind is not None:
                self._on_behind(frame.circle, peer)
            return encode_sync_frame(
                SyncSummary(circle=frame.circle, count=len(ids), digest=ids_digest(ids))
            )
        assert isinstance(frame, SyncFetch)
        have = frame.has()
        out: list[bytes] = []
        size = 64
        more = False
        for message_id, data in self._log.envelopes(frame.circle):
            if message_id[:8] in have:
                continue
            if size + len(data) + 8 > MAX_SYNC_FRAME or len(out) >= 2048:
                more = True
                break
            out.append(data)
            size += len(data) + 8
        return encode_sync_frame(
            SyncEnvelopes(circle=frame.circle, envelopes=tuple(out), more=more)
        )

    async def sync(self, circle: bytes, peer: PeerId, *, strict: bool = False) -> int:
        """One sync round for ``circle`` with ``peer``; returns new envelopes taken.

        Raises :class:`TransportError` if the peer cannot be asked; a peer that
        answers with invalid frames makes the round end early, or, if
        ``strict``, raises :class:`TransportError` (reason ``bad-answer``):
        for a caller that must know the peer's log was read.
        """
        self.rounds += 1
        ids = self._log.ids(circle) or set()
        answer = await self._ask(
            peer, SyncSummary(circle=circle, count=len(ids), digest=ids_digest(ids))
        )
        if isinstance(answer, SyncInSync):
            return 0
        if strict and not isinstance(answer, SyncSummary):
            # A peer that does not hold the circle answers with no envelopes.
            raise TransportError(
                f"peer {peer} does not serve the circle's log", reason="bad-answer"
            )
        taken = 0
        for _ in range(_MAX_FETCH_ROUNDS):
            ids = self._log.ids(circle) or set()
            answer = await self._ask(peer, SyncFetch(circle=circle, have=id_prefixes(ids)))
            if not isinstance(answer, SyncEnvelopes) or answer.circle != circle:
                if strict:
                    raise TransportError(
                        f"peer {peer} sent no envelopes of the circle", reason="bad-answer"
                    )
                return taken
            new = 0
            for data in answer.envelopes:
                if await self._log.ingest(circle, data, peer):
                    new += 1
            taken += new
            self.fetched += new
            if not answer.more or new == 0:
                return taken
        return taken

    async def _ask(self, peer: PeerId, frame: SyncFrame) -> SyncFrame | None:
        response = await self._transport.request(
            peer,
            SYNC_PROTOCOL,
            encode_sync_frame(frame),
            timeout=self.timeout,
            max_response=MAX_SYNC_FRAME,
        )
        try:
            return decode_sync_frame(response)
        except protocol.ProtocolError as exc:
            log.info("peer %s sent an invalid sync frame (%s)", peer, exc.reason)
            return None

    def forget_refusal(self, peer: PeerId) -> None:
        """Ask ``peer`` again from now on (it reconnected, or it just asked us)."""
        self._no_sync.pop(peer, None)

    def serves_sync(self, peer: PeerId) -> bool:
        """False for a while after ``peer`` refused the sync protocol (it may not be a node)."""
        refused = self._no_sync.get(peer)
        if refused is None:
            return True
        if trio.current_time() - refused > _NO_SYNC_MEMORY:
            del self._no_sync[peer]
            return True
        return False

    async def sync_quietly(self, circle: bytes, peer: PeerId) -> int:
        """Like :meth:`sync`, but a peer that cannot be reached only logs.

        A peer that refused the sync protocol is not asked again for a while:
        each refusal cost a stream negotiation and an error in py-libp2p's log.
        Only for a while, because a negotiation that failed under load is
        reported the same way.
        """
        if not self.serves_sync(peer):
            return 0
        try:
            with trio.move_on_after(self.timeout * 2):
                return await self.sync(circle, peer)
        except TransportError as exc:
            if exc.reason == "unsupported":
                if len(self._no_sync) >= _MAX_NO_SYNC:
                    self._no_sync.clear()
                self._no_sync[peer] = trio.current_time()
            log.debug("sync of %s with %s failed: %s", circle.hex()[:12], peer, exc)
        return 0


def _circle_of(frame: SyncFrame) -> bytes:
    circle = getattr(frame, "circle", b"\0" * 32)
    return circle if isinstance(circle, bytes) else b"\0" * 32
