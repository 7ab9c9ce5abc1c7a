"""The node's intake: every envelope, from gossip or from sync, through one door.

Theory of operation: a gossip validator runs :meth:`_Intake._admit` (size,
already held, refused before, decode with the signature last, not dated too
far ahead) and :meth:`_Intake._judge` (the envelope names this circle, and
the circle's log admits its kind: see :mod:`circles._node_admission`) before
py-libp2p forwards anything; delivery then stores it (idempotent by id) and
applies it to the circle's state. Sync hands fetched envelopes to the same
two checks through :class:`_LogView`, so a peer answering sync can slip in
nothing gossip would refuse, and serves only what the store holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import trio

import protocol
from protocol import Envelope

from ._node_admission import AdmissionRefused, check_admissible, circle_of
from ._node_certificates import _certificate_key
from ._node_core import _NodeCore, log
from ._node_events import CircleDiscovered, CircleUpdated
from ._transport import MAX_GOSSIP_MESSAGE, PeerId, Verdict

__all__ = ["MAX_FUTURE_SKEW"]

#: Messages dated further ahead than this by our clock are ignored at admission.
MAX_FUTURE_SKEW = 300
#: Validated envelopes waiting for their delivery, at most.
_MAX_VALIDATED = 10_000


class _Intake(_NodeCore):
    """Admission, delivery, storage and application of peers' envelopes."""

    def _admit(self, data: bytes, sender: str) -> Envelope[protocol.Message] | Verdict:
        """Checks that need no circle state; the envelope, or the verdict to give.

        Cheapest first: size, then whether we hold it already (a copy that sync
        fetched before gossip brought it is not decoded, nor forwarded again),
        then the decode, whose signature check is the dear part.
        """
        if len(data) > MAX_GOSSIP_MESSAGE:
            self._refuse(b"", "oversize", sender)
            return Verdict.REJECT
        assert self._store is not None
        message_id = protocol.envelope_id(data)
        if message_id in self._store:
            return Verdict.IGNORE
        if message_id in self._refused_ids:
            return Verdict.REJECT  # refused for good before, and counted then
        try:
            envelope = protocol.decode(data)
        except protocol.ProtocolError as exc:
            self._refused_ids.add(message_id)
            self._refuse(b"", exc.reason, sender)
            return Verdict.REJECT
        created: int = getattr(envelope.message, "created", 0)
        if created > self.now() + MAX_FUTURE_SKEW:
            return Verdict.IGNORE
        return envelope

    def _circle_validator(self, circle: bytes) -> Callable[[bytes, PeerId], Verdict]:
        def validate(data: bytes, sender: PeerId) -> Verdict:
            admitted = self._admit(data, sender)
            if isinstance(admitted, Verdict):
                return admitted
            verdict = self._judge(circle, admitted, sender)
            if verdict is not None:
                return verdict
            self._keep_validated(admitted)
            return Verdict.ACCEPT

        return validate

    def _judge(
        self, circle: bytes, envelope: Envelope[protocol.Message], sender: str
    ) -> Verdict | None:
        """None if ``circle``'s log admits ``envelope`` (see ``_node_admission``); else
        the verdict to give.

        A refusal the charter decides is final: it is counted and reported
        once, and the id remembered, so a copy sent again (by gossip or by
        every sync round) is dropped before it is decoded.
        """
        named = circle_of(envelope)
        if named is None:
            # A kind that names no circle (a receipt) belongs in no circle's log.
            self._refused_ids.add(envelope.id)
            self._refuse(circle, "not-circle-traffic", sender)
            return Verdict.REJECT
        if named != circle:
            # Not remembered: the same envelope is welcome on its own circle's topic.
            self._refuse(circle, "wrong-circle", sender)
            return Verdict.REJECT
        state = self._states.get(circle)
        if state is None and not isinstance(envelope.message, protocol.Charter):
            # Nothing is kept before its charter, which decides the rest; sync
            # serves a circle's charter first, so an honest peer never sends this.
            return Verdict.IGNORE
        try:
            check_admissible(envelope, None if state is None else state.charter)
        except AdmissionRefused as exc:
            self._refused_ids.add(envelope.id)
            self._refuse(circle, exc.reason, sender)
            log.debug("%s", exc)
            return Verdict.REJECT
        return None

    def _keep_validated(self, envelope: Envelope[protocol.Message]) -> None:
        """Hand a validated envelope to delivery, so it is not decoded twice.

        A delivery the subscription's buffer dropped never collects its entry:
        past a bound they are all forgotten, and delivery decodes again.
        """
        if len(self._validated) >= _MAX_VALIDATED:
            self._validated.clear()
        self._validated[envelope.id] = envelope

    def _validate_announce(self, data: bytes, sender: PeerId) -> Verdict:
        admitted = self._admit(data, sender)
        if isinstance(admitted, Verdict):
            return admitted
        if not isinstance(admitted.message, protocol.Charter):
            self._refuse(b"", "not-a-charter", sender)
            return Verdict.REJECT
        self._keep_validated(admitted)
        return Verdict.ACCEPT

    async def _deliver(self, subscription: Any, circle: bytes | None = None) -> None:
        async for delivery in subscription:
            envelope = self._validated.pop(delivery.message_id, None)
            if envelope is None:
                # Our own publications (the transport may not validate them) and
                # deliveries whose validated entry was forgotten are judged again.
                admitted = self._admit(delivery.data, delivery.sender)
                if isinstance(admitted, Verdict):
                    continue
                if circle is not None and (
                    self._judge(circle, admitted, delivery.sender) is not None
                ):
                    continue
                envelope = admitted
            self._take(envelope)
            await trio.lowlevel.checkpoint()

    def _take(self, envelope: Envelope[protocol.Message]) -> bool:
        """Store and apply one admitted envelope; True if it was new."""
        assert self._store is not None
        if not self._store.put(envelope):
            return False
        self._apply(envelope)
        return True

    def _apply(self, envelope: Envelope[Any], *, replay: bool = False) -> None:
        message = envelope.message
        circle = circle_of(envelope)
        if circle is None:
            return
        if isinstance(message, protocol.Charter):
            if circle not in self._states:
                self._states[circle] = protocol.CircleState(envelope)
                if not replay:
                    self._emit(CircleDiscovered(circle=circle, charter=envelope))
                    self._load(circle, replay=False)
                self._signal()
            return
        state = self._states.get(circle)
        if state is None:
            return  # kept in the store; applied when the charter arrives
        if isinstance(message, protocol.Offer) and envelope.signer == self.public_key:
            self._my_offers.add(envelope.id)
        if isinstance(message, protocol.Certificate):
            self._certificates.setdefault(circle, []).append(envelope)
            if envelope.signer == self.public_key:
                self._assembled.add(_certificate_key(message))
            if (
                not replay
                and self._auto_countersign
                and message.offer in self._my_offers
                and self._nursery is not None
            ):
                self._nursery.start_soon(self._countersign_quietly, envelope)
        events = state.apply(envelope, self.now())
        for event in events:
            if not replay:
                self._emit(CircleUpdated(circle=circle, event=event))
        self._signal()

    def _load(self, circle: bytes, *, replay: bool) -> None:
        """Apply a known circle's stored envelopes (not its charter), and forget those
        its log does not admit.

        Only a store that an older version filled holds such envelopes (it
        kept every kind, and kept messages before their charter): they must
        go, or sync would serve them and peers' digests would never match.
        """
        assert self._store is not None
        charter = self._states[circle].charter
        junk: list[bytes] = []
        for stored in self._store.envelopes(circle):
            if stored.kind == "charter":
                continue
            try:
                envelope = protocol.decode(stored.data)
                if circle_of(envelope) != circle:
                    raise AdmissionRefused("filed under another circle", reason="wrong-circle")
                check_admissible(envelope, charter)
            except (protocol.ProtocolError, AdmissionRefused) as exc:
                log.debug("forgetting stored %s: %s", stored.id.hex()[:12], exc)
                junk.append(stored.id)
                continue
            self._apply(envelope, replay=replay)
        if junk:
            removed = self._store.discard(junk)
            log.info(
                "forgot %d stored envelopes that circle %s does not admit",
                removed,
                circle.hex()[:12],
            )


class _LogView:
    """The syncer's view of the node's store."""

    def __init__(self, node: _Intake) -> None:
        self._node = node

    def ids(self, circle: bytes) -> set[bytes] | None:
        store = self._node._store
        if store is None or circle not in self._node._states:
            return None
        return set(store.ids(circle))

    def envelopes(self, circle: bytes) -> Iterable[tuple[bytes, bytes]]:
        # The charter first, so a requester that lacks it can apply the rest at once.
        return [(s.id, s.data) for s in self._node._stored_charter_first(circle)]

    async def ingest(self, circle: bytes, data: bytes, peer: PeerId) -> bool:
        admitted = self._node._admit(data, peer)
        if isinstance(admitted, Verdict) or self._node._judge(circle, admitted, peer) is not None:
            return False
        return self._node._take(admitted)
