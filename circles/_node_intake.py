"""The node's intake: every envelope, from gossip or from sync, through one door.

Theory of operation: a gossip validator runs :meth:`_Intake._admit` (size,
refused before, already held, decode with the signature last, not dated too
far ahead) and :meth:`_Intake._judge` (the envelope names this circle, and
the circle's log admits its kind: see :mod:`circles._node_admission`) before
py-libp2p forwards anything; delivery then stores it (idempotent by id) and
applies it to the circle's state. Sync hands fetched envelopes to the same
two checks through :class:`_LogView`, so a peer answering sync can slip in
nothing gossip would refuse, and serves only what the store holds.

A gossip copy of an envelope the store already holds (sync fetched it first)
is accepted again for forwarding if it came on its own circle's topic: the
validator's verdict is what decides whether gossipsub forwards, and peers
that hear the circle only through this node may still lack it. It is neither
decoded with its signature nor stored, applied or reported again; the
transports' seen-caches stop copies of one message from looping.

Applying never stops the node: if ``CircleState.apply`` raises (a fault in
the rules; refusals are events), the envelope is set aside (kept, recorded
in the store, logged once, left out at every start, neither served nor
forwarded) and the circle's state is rebuilt from its log without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import trio

import protocol
from protocol import Envelope

from ._node_admission import AdmissionRefused, check_admissible, circle_of
from ._node_certificates import _certificate_key
from ._node_core import _NodeCore, log
from ._node_events import CircleDiscovered, CircleUpdated, EnvelopeSetAside
from ._store import SetAside, StoreError
from ._transport import MAX_GOSSIP_MESSAGE, PeerId, Verdict

__all__ = ["MAX_ANNOUNCED_PER_FOUNDER", "MAX_FUTURE_SKEW", "MAX_UNJOINED_CIRCLES"]

#: Messages dated further ahead than this by our clock are ignored at admission.
MAX_FUTURE_SKEW = 300
#: Circles one founder key may have kept on a node from the announce topic, among
#: those the node has not joined. Anyone may sign charters, and each one kept is a
#: circle state in memory and a row on disk for good; past this, more charters of
#: that key are ignored (a member can still join one by id: it is fetched from a peer).
MAX_ANNOUNCED_PER_FOUNDER = 16
#: Circles a node keeps without having joined them, from every founder together:
#: the bound for throwaway keys. Past it, announced charters are ignored.
MAX_UNJOINED_CIRCLES = 4096
#: Validated envelopes waiting for their delivery, at most.
_MAX_VALIDATED = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class _Held:
    """A copy of an envelope the store holds: verified and admitted when it was taken."""

    data: bytes
    """The copy's bytes: the stored bytes, which the store files by their BLAKE2b-256."""
    id: bytes
    """Its message id."""

    def envelope(self) -> Envelope[protocol.Message] | None:
        """The stored envelope, read from the bytes without checking the signature again.

        The store only takes verified envelopes and files each by the hash of
        its bytes, so these are bytes once verified; not checking the
        signature of every copy again is what holding them saves.
        """
        try:
            unverified = protocol.decode_unverified(self.data)
        except protocol.ProtocolError:  # pragma: no cover - the store holds decoded bytes
            return None
        return Envelope(
            message=unverified.message,
            signer=unverified.signer,
            signature=unverified.signature,
            data=unverified.data,
            id=self.id,
        )


class _Intake(_NodeCore):
    """Admission, delivery, storage and application of peers' envelopes."""

    def _admit(self, data: bytes, sender: str) -> Envelope[protocol.Message] | Verdict | _Held:
        """Checks that need no circle state; the envelope, the verdict to give, or
        :class:`_Held` for a copy of an envelope the store holds.

        Cheapest first: size, then whether it was refused before (a set lookup:
        copies of an invalid envelope cost no query and no decode), then
        whether we hold it already (not decoded again: the caller decides
        whether to forward it), then the decode, whose signature check is the
        dear part.
        """
        if len(data) > MAX_GOSSIP_MESSAGE:
            self._refuse(b"", "oversize", sender)
            return Verdict.REJECT
        assert self._store is not None
        message_id = protocol.envelope_id(data)
        if message_id in self._set_aside:
            # Our fault, not the sender's (see _put_aside): dropped, not held against it.
            return Verdict.IGNORE
        if message_id in self._refused_ids:
            return Verdict.REJECT  # refused for good before, and counted then
        if message_id in self._store:
            return _Held(data=data, id=message_id)
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
            if isinstance(admitted, _Held):
                return self._judge_held(circle, admitted, sender)
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
        verdict = self._judge_placement(circle, envelope, sender)
        if verdict is not None:
            return verdict
        state = self._states.get(circle)
        try:
            check_admissible(envelope, None if state is None else state.charter)
        except AdmissionRefused as exc:
            self._refused_ids.add(envelope.id)
            self._refuse(circle, exc.reason, sender)
            log.debug("%s", exc)
            return Verdict.REJECT
        return None

    def _judge_held(self, circle: bytes, held: _Held, sender: str) -> Verdict:
        """The verdict on a gossip copy of an envelope the store holds.

        Accepted, so that gossipsub forwards it, if it came on its own circle's
        topic and we stored it within ``FORWARD_WINDOW``: peers that hear the
        circle only through us may still lack it (sync fetched it here before
        gossip came). An older copy is ignored, as before: a replay of old
        envelopes then stops at the first node that holds them. The log's admission rules
        are not run again (a misbehaviour proof's would check signatures): the
        store holds only what the log admitted, and forgets at start what a
        charter does not admit. Not queued for delivery either: delivery finds
        it held and skips it, so nothing is stored, applied or reported twice.
        """
        envelope = held.envelope()
        if envelope is None:  # pragma: no cover - the store holds decoded bytes
            return Verdict.IGNORE
        verdict = self._judge_placement(circle, envelope, sender)
        if verdict is not None:
            return verdict
        return (
            Verdict.ACCEPT if self._recently_stored.fresh(held.id, self.now()) else Verdict.IGNORE
        )

    def _judge_placement(
        self, circle: bytes, envelope: Envelope[protocol.Message], sender: str
    ) -> Verdict | None:
        """None if ``envelope`` belongs on ``circle``'s topic now; else the verdict."""
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
        # A charter we stored lately is forwarded again, as on a circle's topic.
        envelope = admitted.envelope() if isinstance(admitted, _Held) else admitted
        if envelope is None:  # pragma: no cover - the store holds decoded bytes
            return Verdict.IGNORE
        if not isinstance(envelope.message, protocol.Charter):
            self._refuse(b"", "not-a-charter", sender)
            return Verdict.REJECT
        if isinstance(admitted, _Held):
            fresh = self._recently_stored.fresh(admitted.id, self.now())
            return Verdict.ACCEPT if fresh else Verdict.IGNORE
        reason = self._unwanted_announce(envelope)
        if reason is not None:
            # Valid, but not kept here: ignored (not forwarded, no penalty), not
            # remembered as refused (a place may free up, and the member may join it).
            self._refuse(b"", reason, sender)
            return Verdict.IGNORE
        self._keep_validated(envelope)
        return Verdict.ACCEPT

    def _unwanted_announce(self, envelope: Envelope[protocol.Message]) -> str | None:
        """Why an announced charter is not kept, or None to keep it.

        ``"expired"``: its deadline has passed (nothing left to discover);
        ``"founder-full"``: its founder has :data:`MAX_ANNOUNCED_PER_FOUNDER`
        circles kept here that the node has not joined; ``"circles-full"``: the
        node keeps :data:`MAX_UNJOINED_CIRCLES` such circles. Circles the node
        joined do not count: those are the member's own choice.
        """
        message = envelope.message
        assert isinstance(message, protocol.Charter)
        if envelope.id in self._states:
            return None
        if message.deadline <= self.now():
            return "expired"
        total, by_founder = self._unjoined_counts()
        if total >= MAX_UNJOINED_CIRCLES:
            return "circles-full"
        if by_founder.get(envelope.signer, 0) >= MAX_ANNOUNCED_PER_FOUNDER:
            return "founder-full"
        return None

    def _unjoined_counts(self) -> tuple[int, dict[bytes, int]]:
        """(circles held but not joined, how many of them each founder key signed).

        Counted again only when a circle was added or joined (both sets only
        grow), so a flood of charters costs a dict lookup each, not a scan.
        """
        key = (len(self._states), len(self._joined))
        cached = self._unjoined_cache
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        by_founder: dict[bytes, int] = {}
        total = 0
        for circle, state in self._states.items():
            if circle in self._joined:
                continue
            total += 1
            signer = state.charter.signer
            by_founder[signer] = by_founder.get(signer, 0) + 1
        self._unjoined_cache = (key, total, by_founder)
        return total, by_founder

    async def _deliver(self, subscription: Any, circle: bytes | None = None) -> None:
        async for delivery in subscription:
            envelope = self._validated.pop(delivery.message_id, None)
            if envelope is None:
                # Our own publications (the transport may not validate them) and
                # deliveries whose validated entry was forgotten are judged again.
                admitted = self._admit(delivery.data, delivery.sender)
                if isinstance(admitted, Verdict | _Held):
                    continue  # refused, or held: a copy forwarded on is not taken again
                if circle is not None and (
                    self._judge(circle, admitted, delivery.sender) is not None
                ):
                    continue
                envelope = admitted
            if (
                circle is None
                and isinstance(envelope.message, protocol.Charter)
                and self._unwanted_announce(envelope) is not None
            ):
                # Checked again here, one delivery at a time: several charters can
                # pass the validator before the first of them is applied.
                continue
            self._take(envelope)
            await trio.lowlevel.checkpoint()

    def _take(self, envelope: Envelope[protocol.Message]) -> bool:
        """Store and apply one admitted envelope; True if it was new."""
        assert self._store is not None
        if not self._store.put(envelope):
            return False
        self._recently_stored.add(envelope.id, self.now())
        self._apply(envelope)
        return True

    def _apply(self, envelope: Envelope[Any], *, replay: bool = False) -> None:
        message = envelope.message
        circle = circle_of(envelope)
        if circle is None or envelope.id in self._set_aside:
            return
        if isinstance(message, protocol.Charter):
            if circle not in self._states:
                try:
                    self._states[circle] = protocol.CircleState(envelope)
                except Exception as exc:  # a fault in protocol: the node goes on without it
                    self._put_aside(envelope, circle, exc)
                    return
                if not replay:
                    self._emit(CircleDiscovered(circle=circle, charter=envelope))
                    self._load(circle, replay=False)
                self._signal()
            return
        state = self._states.get(circle)
        if state is None:
            return  # kept in the store; applied when the charter arrives
        if not self._apply_to(state, circle, envelope, replay=replay):
            self._rebuild(circle)
        self._signal()

    def _apply_to(
        self, state: Any, circle: bytes, envelope: Envelope[Any], *, replay: bool
    ) -> bool:
        """Apply one envelope to ``state``; False if that raised and it was set aside.

        Whatever ``CircleState.apply`` raises, the node goes on: an exception
        there is a fault in the circle's rules (refusals are events), and it
        may have left ``state`` half-updated, so the caller rebuilds it.
        """
        message = envelope.message
        if isinstance(message, protocol.Offer) and envelope.signer == self.public_key:
            self._my_offers.add(envelope.id)
        if isinstance(message, protocol.Certificate):
            self._certificates.setdefault(circle, []).append(envelope)
            if envelope.signer == self.public_key:
                self._assembled.add(_certificate_key(message))
        if isinstance(message, protocol.QuoteRequest):
            self._take_rfq(state, circle, envelope, replay=replay)
            return True
        # A stalled circle's time stays where it is: moving it is what raised.
        now = 0 if circle in self._stalled else self.now()
        try:
            events = state.apply(envelope, now)
        except Exception as exc:
            self._put_aside(envelope, circle, exc)
            return False
        self._forget_dropped(state)
        if not replay:
            for event in events:
                self._emit(CircleUpdated(circle=circle, event=event))
            if (
                isinstance(message, protocol.Certificate)
                and self._auto_countersign
                and message.offer in self._my_offers
                and self._nursery is not None
            ):
                self._nursery.start_soon(self._countersign_quietly, envelope)
        return True

    def _take_rfq(
        self, state: Any, circle: bytes, envelope: Envelope[Any], *, replay: bool
    ) -> None:
        """Keep an open request for quote under the circle's rfq caps (docs/protocol.md, Caps).

        Not circle state: the circle's :class:`protocol.RfqLog` holds it, and
        what its caps drop the store discards (not remembered as refused, as
        for the state's caps: standing may differ when sync brings it back).
        ``CircleState.apply`` is not called: it would only refuse the request,
        and remember its id for good, a cost every throwaway key would add to.
        The app still hears of each arrival as before, as a ``Refused``
        ("not-circle-state") event, or with the cap's reason (vendors' desks
        bid on what the log holds).
        """
        rfqs = self._rfq_logs.get(circle)
        if rfqs is None:
            rfqs = self._rfq_logs[circle] = protocol.RfqLog(state.charter)
        refused = rfqs.add(envelope, protocol.RfqLog.standing(state))
        dropped = rfqs.take_dropped()
        if dropped:
            assert self._store is not None
            self._store.discard(dropped)
        if replay:
            return
        if refused is None:
            refused = protocol.Refused(
                message=envelope.id,
                kind=envelope.kind,
                signer=envelope.signer,
                reason="not-circle-state",
                detail="a request for quote is kept in the circle's log, not in its state",
            )
        self._emit(CircleUpdated(circle=circle, event=refused))

    def _put_aside(self, envelope: Envelope[Any], circle: bytes, exc: Exception) -> None:
        """Set aside an envelope whose apply raised: kept, logged once, out of the state.

        Recorded in the store (so a restart leaves it out too, instead of
        failing on it again) and among the refused ids (so no copy of it is
        taken or forwarded). Its id stays in the store, so sync does not fetch
        it again, but the node does not serve it.
        """
        assert self._store is not None
        reason = f"{type(exc).__name__}: {exc}"[:500]
        log.error(
            "could not apply %s %s of circle %s (%s); set it aside, the rest of the "
            "circle goes on without it. This is a bug in buying-circles: please report it",
            envelope.kind,
            envelope.id.hex()[:12],
            circle.hex()[:12],
            reason,
            exc_info=exc,
        )
        try:
            entry = self._store.set_aside(envelope.id, circle, reason, now=self.now())
        except StoreError as store_exc:
            # Still left out while the node runs; a restart meets it again.
            log.error("could not record the set-aside envelope: %s", store_exc)
            entry = SetAside(id=envelope.id, circle=circle, reason=reason, since=self.now())
        self._set_aside[envelope.id] = entry
        self._refused_ids.add(envelope.id)
        self._emit(EnvelopeSetAside(circle=circle, envelope=envelope.id, reason=reason))

    def _rebuild(self, circle: bytes) -> None:
        """Build ``circle``'s state afresh from its stored envelopes minus those set aside.

        After an apply raised, the state may be half-updated: a fresh one is
        the only sure state. Each envelope whose apply raises again is set
        aside too and the build starts over, so this ends (each round sets one
        more aside). No events are reported for the envelopes applied again:
        they were reported when they came; ``EnvelopeSetAside`` tells the app
        to read the state afresh.
        """
        charter = self._states[circle].charter
        now = self.now()
        while True:
            state = protocol.CircleState(charter)
            self._states[circle] = state
            self._certificates.pop(circle, None)
            self._rfq_logs.pop(circle, None)
            try:
                # Time first, alone: a fault here is not any envelope's.
                state.advance(now)
            except Exception as exc:
                self._stall(circle, exc)
                state = protocol.CircleState(charter)
                self._states[circle] = state
            if all(
                self._apply_to(state, circle, envelope, replay=True)
                for envelope in self._admitted_stored(circle)
            ):
                return

    def _stall(self, circle: bytes, exc: Exception) -> None:
        """Letting time pass raised for ``circle``: stop advancing it (logged once)."""
        if circle in self._stalled:
            return
        self._stalled.add(circle)
        log.error(
            "circle %s cannot move to the present time (%s: %s); its deadlines no longer "
            "take effect on this node. This is a bug in buying-circles: please report it",
            circle.hex()[:12],
            type(exc).__name__,
            exc,
            exc_info=exc,
        )

    def _forget_dropped(self, state: protocol.CircleState) -> None:
        """Forget what the circle's caps dropped (docs/protocol.md, Caps).

        The store discards it and sync no longer serves it. It is not
        remembered as refused: a deal that arrives later may pin it (the
        lock), and then a copy that sync brings again is kept.
        """
        dropped = state.take_dropped()
        if not dropped:
            return
        assert self._store is not None
        self._store.discard(dropped)

    def _load(self, circle: bytes, *, replay: bool) -> None:
        """Apply a known circle's stored envelopes (not its charter, nor those set aside)."""
        state = self._states[circle]
        for envelope in self._admitted_stored(circle):
            if not self._apply_to(state, circle, envelope, replay=replay):
                self._rebuild(circle)
                return

    def _admitted_stored(self, circle: bytes) -> list[Envelope[Any]]:
        """A known circle's stored envelopes but its charter and those set aside, decoded;
        those its log does not admit are forgotten.

        Only a store that an older version filled holds such envelopes (it
        kept every kind, and kept messages before their charter): they must
        go, or sync would serve them and peers' digests would never match.
        """
        assert self._store is not None
        charter = self._states[circle].charter
        junk: list[bytes] = []
        admitted: list[Envelope[Any]] = []
        for stored in self._store.envelopes(circle):
            if stored.kind == "charter" or stored.id in self._set_aside:
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
            admitted.append(envelope)
        if junk:
            removed = self._store.discard(junk)
            log.info(
                "forgot %d stored envelopes that circle %s does not admit",
                removed,
                circle.hex()[:12],
            )
        return admitted


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
        if isinstance(admitted, Verdict | _Held):
            return False
        if self._node._judge(circle, admitted, peer) is not None:
            return False
        return self._node._take(admitted)
