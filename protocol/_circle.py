"""A circle as pure state: a function of the set of its messages and the time.

Theory of operation: :class:`CircleState` keeps every message that concerns
its circle and derives the rest. A member's *live* pledge is its
highest-sequence pledge made by the deadline, if the member is admitted and
has not equivocated; live pledges with a quantity above 0 sit in a
:class:`~protocol._quorum.DemandBook`, which answers every clearing question
in time bounded by the key width. After each message only the members it
concerns are looked at again, so applying a pledge never rebuilds anything.
Nothing depends on arrival order: a pledge from a key not yet invited is kept
and counts once the invite arrives; a deal counts once its certificate, offer
and pledges are all present. ``apply`` reports what changed as events;
refusals are :class:`~protocol._events.Refused` events, never exceptions.
Status changes are checked against ``_transitions.CIRCLE_TRANSITIONS``.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from . import _caps as caps
from ._caps import KeyLottery
from ._certificate import (
    InvalidProof,
    effective_deadline,
    extension_is_valid,
    make_proof,
    verify_misbehaviour,
)
from ._circle_view import SMALLER_TIER_WINDOW, CircleView, HeldPledge, KeyPledges
from ._envelope import Envelope
from ._errors import InvalidMessage
from ._events import (
    CircleEvent,
    CircleStatus,
    DealClosed,
    EquivocationDetected,
    ExtensionAccepted,
    MemberAdmitted,
    OfferReceived,
    PledgeBound,
    PledgeCounted,
    PledgeWithdrawn,
    QuorumChanged,
    Refused,
    RuleAnomaly,
    StatusChanged,
)
from ._messages import (
    Certificate,
    Charter,
    Deal,
    Extension,
    Invite,
    Message,
    Misbehaviour,
    Offer,
    Pledge,
)
from ._quorum import Clearing, DemandBook
from ._transitions import CIRCLE_TRANSITIONS
from ._transitions import CircleInput as Input

__all__ = ["SMALLER_TIER_WINDOW", "CircleState"]


class CircleState(CircleView):
    """The state of one circle, built from its charter; feed it envelopes and the time."""

    def __init__(self, charter: Envelope[Charter], *, now: int | None = None) -> None:
        if not isinstance(charter, Envelope) or type(charter.message) is not Charter:
            raise InvalidMessage(
                "CircleState needs a verified charter Envelope (protocol.decode or seal)",
                reason="wrong-kind",
            )
        self._charter = charter
        self._rules: Charter = charter.message
        self._now = charter.message.created if now is None else now
        self._seen: set[bytes] = set()
        # Each key's pledges sorted by (seq, id): at most PLEDGE_SEQS_PER_KEY seqs,
        # PLEDGES_PER_SEQ at each (see protocol/_caps.py), and the one the demand
        # book counts. The state keeps a HeldPledge record per pledge, not its
        # envelope, and the common case (one pledge, counted) bare: see _keep.
        self._pledges: dict[bytes, HeldPledge | KeyPledges] = {}
        self._pledgers = KeyLottery(charter.id, caps.PLEDGING_KEYS_PER_CIRCLE)
        self._vendors = KeyLottery(charter.id, caps.VENDORS_PER_CIRCLE)
        self._cert_signers = KeyLottery(charter.id, caps.CERTIFICATE_SIGNERS_PER_CIRCLE)
        self._deal_signers = KeyLottery(charter.id, caps.DEAL_SIGNERS_PER_CIRCLE)
        self._inviters = KeyLottery(charter.id, caps.INVITERS_PER_CIRCLE)
        # Ids of held messages a cap dropped, and of new ones it refused, since
        # the last take_dropped(): the node forgets them.
        self._dropped: list[bytes] = []
        # The vendor's one counted offer; (cheapest tier price, offer id) of each, sorted.
        self._offer_of: dict[bytes, Envelope[Offer]] = {}
        # Offers no longer counted (a newer one of the vendor, or the vendor cap)
        # but kept because a held deal's certificate names them: the lock.
        self._pinned_offers: dict[bytes, Envelope[Offer]] = {}
        self._floors: list[tuple[int, bytes]] = []
        self._proof_envs: dict[bytes, bytes] = {}
        self._by_id: dict[bytes, HeldPledge] = {}
        self._invites: dict[bytes, list[Envelope[Invite]]] = {}
        self._admitted: dict[bytes, bytes] | None = (
            {charter.signer: charter.id} if self._rules.invite_only else None
        )
        self._extensions: dict[bytes, Envelope[Extension]] = {}
        self._offers: dict[bytes, Envelope[Offer]] = {}
        self._certificates: dict[bytes, Envelope[Certificate]] = {}
        self._deals: dict[bytes, Envelope[Deal]] = {}
        # Certificates naming each pledge and each offer, deals over each certificate:
        # a change to one of them rechecks only the deals it can affect.
        self._certs_naming: dict[bytes, set[bytes]] = {}
        self._deals_over: dict[bytes, set[bytes]] = {}
        # Each deal's cached problem (None: it closes); deals to check again.
        self._deal_problems: dict[bytes, str | None] = {}
        # Deals refused only because a member they name is not admitted (yet):
        # the only verdicts an admission can change.
        self._unadmitted_deals: set[bytes] = set()
        self._to_check: set[bytes] = set()
        self._deals_dirty = False
        self._proofs: dict[bytes, Misbehaviour] = {}
        self._book = DemandBook()
        self._deadline = self._rules.deadline
        self._deal: Envelope[Deal] | None = None
        self._clearing: Clearing | None = None
        self._status = CircleStatus.FORMING
        self._status, self._clearing = self._derive()

    @classmethod
    def from_envelopes(
        cls, charter: Envelope[Charter], envelopes: list[Envelope[Message]], *, now: int
    ) -> CircleState:
        """The state after applying ``envelopes`` (in any order) at time ``now``."""
        state = cls(charter, now=now)
        for env in envelopes:
            state.apply(env, now)
        return state

    # ----------------------------------------------------------------- verbs

    def apply(self, envelope: Envelope[Message], now: int) -> list[CircleEvent]:
        """Take one verified envelope at time ``now``; return what changed."""
        if not isinstance(envelope, Envelope):
            raise InvalidMessage(
                "apply() takes a verified Envelope; decode bytes with protocol.decode first",
                reason="wrong-kind",
            )
        # Time passes first, so each change is checked against the one input causing it.
        events = self.advance(now) if now > self._now else []
        if (
            envelope.id in self._seen
            or envelope.id in self._by_id
            or envelope.id == self._charter.id
        ):
            return self._settle(events, Input.IGNORED)
        if type(envelope.message) is not Pledge:
            # A pledge's id is in _by_id while it is held: not kept twice.
            self._seen.add(envelope.id)
        dropped = len(self._dropped)
        kind = self._dispatch(envelope, events)
        # A message a cap dropped may be pinned by a deal that comes later: taken
        # again when it is delivered again, not ignored as seen.
        self._seen.difference_update(self._dropped[dropped:])
        if any(d != envelope.id for d in self._dropped[dropped:]):
            kind = Input.CAPPED
        return self._settle(events, kind)

    def take_dropped(self) -> list[bytes]:
        """Ids of messages a cap dropped or refused since the last call (docs/protocol.md, Caps).

        Each is dropped for good: every larger set of messages drops it too, so
        a node forgets it (its store discards it, sync never fetches it again).
        """
        dropped, self._dropped = self._dropped, []
        return dropped

    def advance(self, now: int) -> list[CircleEvent]:
        """Let time pass to ``now`` (deadlines, lapsed offers); see :meth:`next_deadline`."""
        self._now = max(self._now, now)
        return self._settle([], Input.TIME)

    def next_deadline(self) -> int | None:
        """The next time at which the status may change by time alone, or None."""
        if self._status in (CircleStatus.CLOSED, CircleStatus.CANCELLED):
            return None
        times = [self._deadline + 1]
        if self._rules.on_miss == "smaller-tier":
            times.append(self._deadline + SMALLER_TIER_WINDOW + 1)
        times += [o.message.valid_until + 1 for o in self._offers.values()]
        later = [t for t in times if t > self._now]
        return min(later) if later else None

    # ------------------------------------------------------------- dispatch

    def _refuse(self, env: Envelope[Any], reason: str, detail: str) -> Refused:
        return Refused(
            message=env.id, kind=env.kind, signer=env.signer, reason=reason, detail=detail
        )

    def _dispatch(
        self, env: Envelope[Message], events: list[CircleEvent]
    ) -> Input | tuple[Input, ...]:
        message = env.message
        circle = getattr(message, "circle", None)
        if isinstance(message, Misbehaviour):
            return self._apply_proof(env, message, events)
        if circle is None:
            events.append(self._refuse(env, "not-circle-state", "this kind is not circle state"))
            return Input.IGNORED
        if circle != self._charter.id:
            events.append(self._refuse(env, "unknown-circle", "it names another circle"))
            return Input.IGNORED
        if isinstance(message, Pledge):
            return self._apply_pledge(env, message, events)  # type: ignore[arg-type]
        if isinstance(message, Invite):
            return self._apply_invite(env, message, events)  # type: ignore[arg-type]
        if isinstance(message, Offer):
            if message.currency != self._rules.currency:
                events.append(self._refuse(env, "wrong-currency", self._currency_detail()))
                return Input.IGNORED
            return self._apply_offer(env, events)  # type: ignore[arg-type]
        if isinstance(message, Certificate):
            return self._apply_certificate(env, events)  # type: ignore[arg-type]
        if isinstance(message, Deal):
            return self._apply_deal(env, events)  # type: ignore[arg-type]
        if isinstance(message, Extension):
            return self._apply_extension(env, events)  # type: ignore[arg-type]
        events.append(self._refuse(env, "not-circle-state", "this kind is not circle state"))
        return Input.IGNORED

    def _currency_detail(self) -> str:
        return f"this circle trades in {self._rules.currency}; re-sign in that currency"

    def _apply_pledge(self, env: Envelope[Pledge], p: Pledge, events: list[CircleEvent]) -> Input:
        if p.currency != self._rules.currency:
            events.append(self._refuse(env, "wrong-currency", self._currency_detail()))
            return Input.IGNORED
        ceiling = self._rules.ceiling
        if ceiling is not None and p.max_price > ceiling:
            events.append(
                self._refuse(env, "above-ceiling", f"the charter caps prices at {ceiling}")
            )
            return Input.IGNORED
        member = env.signer
        if not self._take_pledge(env, events):
            # Outside the key's window, but a deal may pin it (then it is held).
            return Input.PLEDGE if env.id in self._by_id else Input.IGNORED
        self._check_named(env.id)
        at_seq = [h for h in self._held_of(member) if h.seq == p.seq]
        if len(at_seq) > 1:
            self._check_member(member)
            self._record_proof(member, events)
            self._refresh(member, events)
            return Input.EQUIVOCATION
        if p.created > self._deadline:
            events.append(self._refuse(env, "late", "it was made after the circle's deadline"))
        elif self._admitted is not None and member not in self._admitted:
            events.append(
                self._refuse(env, "unadmitted", "the circle is invite-only; ask for an invite")
            )
        elif member in self._proofs:
            events.append(self._refuse(env, "equivocator", "this key equivocated in this circle"))
        self._refresh(member, events)
        latest = self._latest(member)
        if latest is not None and latest.id != env.id and latest.seq > p.seq:
            events.append(self._refuse(env, "superseded", "a higher sequence number is live"))
        self._bound_events(member, events)
        return Input.WITHDRAWAL if p.quantity == 0 else Input.PLEDGE

    def _apply_invite(
        self, env: Envelope[Invite], invite: Invite, events: list[CircleEvent]
    ) -> Input:
        admitted = self._admitted
        if admitted is None:
            events.append(
                self._refuse(env, "not-invite-only", "the circle is open: invites mean nothing")
            )
            self._dropped.append(env.id)
            return Input.IGNORED
        if not self._may_invite(env.signer):
            # Decided by the charter alone: this key can never invite here.
            events.append(
                self._refuse(env, "may-not-invite", "only the founder invites in this circle")
            )
            self._dropped.append(env.id)
            return Input.IGNORED
        if not self._take_invite(env, events):
            return Input.IGNORED
        if env.signer not in admitted or not self._may_invite(env.signer):
            events.append(
                self._refuse(env, "unadmitted", "the inviter may not invite (yet) in this circle")
            )
            return Input.INVITE
        frontier = [env]
        while frontier:
            inv = frontier.pop()
            invitee = inv.message.invitee
            if invitee in admitted:
                continue
            admitted[invitee] = inv.id
            self._inviters.remove(invitee)
            self._check_rule_failures()
            events.append(MemberAdmitted(member=invitee, invite=inv.id))
            self._refresh(invitee, events)
            if self._may_invite(invitee):
                frontier.extend(self._invites.get(invitee, ()))
        return Input.INVITE

    def _may_invite(self, key: bytes) -> bool:
        return key == self._charter.signer or self._rules.members_invite

    def _apply_extension(self, env: Envelope[Extension], events: list[CircleEvent]) -> Input:
        if not extension_is_valid(self._charter, env):
            events.append(
                self._refuse(
                    env, "bad-extension", "only the founder may extend, once, if the charter allows"
                )
            )
            return Input.IGNORED
        self._extensions[env.id] = env
        if len(self._extensions) > caps.EXTENSIONS_PER_CIRCLE:
            # Two prove the founder equivocated; keep the two smallest ids.
            last = max(self._extensions)
            del self._extensions[last]
            self._dropped.append(last)
            if last == env.id:
                events.append(self._refuse(env, "cap", "two extensions already cancel it"))
                return Input.IGNORED
        self._to_check.update(self._deals)
        self._deals_dirty = True
        founder = self._charter.signer
        if len(self._extensions) > 1:
            self._record_proof(founder, events)
        deadline = effective_deadline(self._charter, self._extensions.values())
        if deadline != self._deadline:
            self._deadline = deadline
            if len(self._extensions) == 1:
                events.append(ExtensionAccepted(extension=env.id, deadline=deadline))
            for member in list(self._pledges):
                self._refresh(member, events)
        else:
            self._refresh(founder, events)
        return Input.EQUIVOCATION if len(self._extensions) > 1 else Input.EXTENSION

    def _record_proof(self, member: bytes, events: list[CircleEvent]) -> None:
        # The proof is recomputed from everything held (the pair with the smallest
        # ids), so which proof a state keeps does not depend on arrival order.
        pairs: list[tuple[bytes, bytes]] = [
            (a.id, b.id) for a, b in pairwise(self._held_of(member)) if a.seq == b.seq
        ]
        if member == self._charter.signer and len(self._extensions) > 1:
            first, second = sorted(self._extensions)[:2]
            pairs.append((first, second))
        if not pairs:
            # A cap dropped the pair: equivocation is judged on what a circle keeps.
            if self._proofs.pop(member, None) is not None:
                self._check_member(member)
                self._refresh(member, events)
            return
        proof = make_proof(*(self._held_envelope(i) for i in min(pairs)))
        if member not in self._proofs:
            events.append(EquivocationDetected(member=member, proof=proof))
            self._check_member(member)
        self._proofs[member] = proof

    def _held_envelope(self, message_id: bytes) -> Envelope[Any]:
        """A held pledge's or extension's envelope, by id."""
        extension = self._extensions.get(message_id)
        return extension if extension is not None else self._envelope(self._by_id[message_id])

    def _apply_proof(
        self, env: Envelope[Message], proof: Misbehaviour, events: list[CircleEvent]
    ) -> tuple[Input, ...]:
        # Checked against the charter: a twin the circle refuses outright proves
        # nothing, so the whole proof is refused and the state is the one without it.
        try:
            first, second = verify_misbehaviour(proof)
            if getattr(first.message, "circle", None) != self._charter.id:
                events.append(
                    self._refuse(env, "unknown-circle", "the proof is about another circle")
                )
                return (Input.IGNORED,)
            verify_misbehaviour(proof, charter=self._charter)
        except InvalidProof as exc:
            events.append(self._refuse(env, exc.reason, str(exc)))
            return (Input.IGNORED,)
        # One proof per offender: the smallest envelope id (proofs that differ in
        # `created` prove the same thing).
        held = self._proof_envs.get(first.signer)
        if held is not None and held < env.id:
            events.append(self._refuse(env, "cap", "this offender's proof is held already"))
            self._dropped.append(env.id)
            return (Input.IGNORED,)
        if held is not None:
            self._dropped.append(held)
        self._proof_envs[first.signer] = env.id
        # A proof is its two envelopes: apply each as if it had come on its own.
        kinds: list[Input] = []
        for inner in (first, second):
            if inner.id in self._seen or inner.id in self._by_id:
                continue
            self._seen.add(inner.id)
            kind = self._dispatch(inner, events)
            kinds += kind if isinstance(kind, tuple) else (kind,)
        return tuple(kinds) or (Input.IGNORED,)

    # ------------------------------------------------------------------ caps

    def _cap_refuse(
        self, env: Envelope[Any], events: list[CircleEvent], reason: str, detail: str
    ) -> None:
        events.append(self._refuse(env, reason, detail))
        self._dropped.append(env.id)

    def _take_pledge(self, env: Envelope[Pledge], events: list[CircleEvent]) -> bool:
        """Hold a pledge under the caps; False (refused, typed) when a cap drops it."""
        member = env.signer
        kept, lost = self._pledgers.admit(member)
        if not kept:
            if not self._hold_pinned(env):
                self._cap_refuse(
                    env, events, "circle-full", "the circle keeps no more pledging keys"
                )
            return False
        if lost is not None:
            self._drop_member(lost, events)
        mine = self._held_of(member)
        seq = env.message.seq
        seqs = {h.seq for h in mine}
        if seq not in seqs and len(seqs) >= caps.PLEDGE_SEQS_PER_KEY and seq < min(seqs):
            if not self._hold_pinned(env):
                self._cap_refuse(env, events, "seq-cap", "this key holds newer pledges")
            return False
        at_seq = [h for h in mine if h.seq == seq]
        if len(at_seq) >= caps.PLEDGES_PER_SEQ and env.id > at_seq[-1].id:
            # The key equivocated already at this seq; a third pledge proves nothing more.
            if not self._hold_pinned(env):
                self._cap_refuse(env, events, "equivocator", "this key equivocated at this seq")
            return False
        held = HeldPledge.of(env)
        envs = list(mine)
        insort(envs, held, key=lambda h: (h.seq, h.id))
        self._by_id[env.id] = held
        gone: list[HeldPledge] = []
        if len(at_seq) >= caps.PLEDGES_PER_SEQ:
            gone.append(at_seq[-1])
        if seq not in seqs and len(seqs) >= caps.PLEDGE_SEQS_PER_KEY:
            low = min(seqs)
            gone += [h for h in envs if h.seq == low]
        for old in gone:
            envs.remove(old)
        self._keep(member, envs, self._live_of(member))
        for old in gone:
            self._release(old.id)
        if gone:
            self._record_proof(member, events)
        return True

    def _drop_member(self, member: bytes, events: list[CircleEvent]) -> None:
        """Forget every pledge of a key that lost its place in the circle's key cap."""
        mine = self._held_of(member)
        self._keep(member, (), self._live_of(member))
        for old in mine:
            self._release(old.id)
        self._record_proof(member, events)
        self._refresh(member, events)

    # The lock: what a held deal's held certificate names (its pledges, its
    # offer) is kept even where a cap would drop it, so that no party to a deal
    # undoes it with more of its own messages. A message dropped before the deal
    # that pins it arrived is gone from this state; the node does not remember
    # cap drops as refusals, so sync brings it back (docs/circles.md, Caps).

    def _pinned(self, message_id: bytes) -> bool:
        return any(self._deals_over.get(c) for c in self._certs_naming.get(message_id, ()))

    def _hold_pinned(self, env: Envelope[Pledge]) -> bool:
        """Hold a pledge outside its key's window when a deal pins it."""
        if not self._pinned(env.id):
            return False
        self._by_id[env.id] = HeldPledge.of(env)
        self._check_named(env.id)
        return True

    def _in_window(self, held: HeldPledge) -> bool:
        return any(h.id == held.id for h in self._held_of(held.signer))

    def _release(self, message_id: bytes) -> None:
        """Drop a pledge or offer that neither its cap nor a deal keeps any more."""
        if self._pinned(message_id):
            return
        pledge = self._by_id.get(message_id)
        if pledge is not None and not self._in_window(pledge):
            del self._by_id[message_id]
            self._dropped.append(message_id)
            self._check_named(message_id)
        if self._pinned_offers.pop(message_id, None) is not None:
            self._dropped.append(message_id)
            self._check_named(message_id)

    def _release_certificate(self, cert_id: bytes) -> None:
        """A certificate no held deal is over any more: its cap and its names' caps apply."""
        env = self._certificates.get(cert_id)
        if env is None:
            return
        signer = env.signer
        rank = (env.message.created, env.id)
        newer = sum(
            1
            for c in self._certificates.values()
            if c.signer == signer and (c.message.created, c.id) > rank
        )
        if newer >= caps.CERTIFICATES_PER_KEY or signer not in self._cert_signers:
            self._drop_certificate(env)
        # What it named loses this pin (and, if it was dropped, its naming).
        cert = env.message
        for named in (cert.offer, *(a.pledge for a in cert.allocations)):
            self._release(named)

    def _take_invite(self, env: Envelope[Invite], events: list[CircleEvent]) -> bool:
        inviter = env.signer
        admitted = self._admitted
        assert admitted is not None  # only invite-only circles keep invites
        # Only inviters outside the circle draw places in the inviters' lottery:
        # throwaway keys cannot push a member's invites (and its invitees) out.
        if inviter not in admitted:
            kept, lost = self._inviters.admit(inviter)
            if not kept:
                self._cap_refuse(env, events, "circle-full", "the circle keeps no more inviters")
                return False
            if lost is not None:
                # Outside the circle too: its invites admitted no one.
                for old in self._invites.pop(lost, []):
                    self._dropped.append(old.id)
        invites = self._invites.setdefault(inviter, [])
        invitee = env.message.invitee
        same = next((i for i in invites if i.message.invitee == invitee), None)
        if same is not None:
            if same.id < env.id:
                self._cap_refuse(env, events, "cap", "this invite was sent already")
                return False
            invites.remove(same)
            self._dropped.append(same.id)
        if len(invites) >= caps.INVITES_PER_KEY and env.id > invites[-1].id:
            self._cap_refuse(env, events, "cap", "this inviter holds its quota of invites")
            return False
        insort(invites, env, key=lambda e: e.id)
        if len(invites) > caps.INVITES_PER_KEY:
            self._dropped.append(invites.pop().id)
            if inviter in admitted:
                # The invite pushed out may be what admitted someone.
                self._readmit(events)
        return True

    def _readmit(self, events: list[CircleEvent]) -> None:
        """Admissions again from the invites kept (after a cap dropped a member's invite).

        Only a member that signs more than INVITES_PER_KEY invites gets here;
        the cost is one pass over the invites kept.
        """
        admitted = self._admitted
        assert admitted is not None
        old = dict(admitted)
        founder = self._charter.signer
        new: dict[bytes, bytes] = {founder: self._charter.id}
        frontier = [founder]
        while frontier:
            key = frontier.pop()
            if not self._may_invite(key):
                continue
            for inv in self._invites.get(key, ()):
                if inv.message.invitee not in new:
                    new[inv.message.invitee] = inv.id
                    frontier.append(inv.message.invitee)
        # In place: callers hold this dict.
        admitted.clear()
        admitted.update(new)
        # Members first leave the inviters' lottery, so that a key leaving the
        # circle cannot push a member's invites out through it.
        for member in [m for m in new if m not in old]:
            self._inviters.remove(member)
            events.append(MemberAdmitted(member=member, invite=new[member]))
            self._refresh(member, events)
        for member in [m for m in old if m not in new]:
            self._refresh(member, events)
            if self._invites.get(member):
                kept, lost = self._inviters.admit(member)
                if not kept:
                    for inv in self._invites.pop(member):
                        self._dropped.append(inv.id)
                elif lost is not None:
                    for inv in self._invites.pop(lost, []):
                        self._dropped.append(inv.id)
        # A deal naming a member no longer admitted stops counting, and the other way round.
        self._to_check.update(self._deals)
        self._deals_dirty = True

    def _apply_offer(self, env: Envelope[Offer], events: list[CircleEvent]) -> Input:
        vendor = env.signer
        kept, lost = self._vendors.admit(vendor)
        if not kept:
            if self._pin_offer(env):
                return Input.OFFER
            self._cap_refuse(env, events, "circle-full", "the circle keeps no more vendors")
            return Input.IGNORED
        if lost is not None:
            self._drop_offer(self._offer_of.pop(lost))
            self._vendor_leaves(lost)
        old = self._offer_of.get(vendor)
        if old is not None:
            if (old.message.created, old.id) > (env.message.created, env.id):
                if self._pin_offer(env):
                    return Input.OFFER
                self._cap_refuse(env, events, "superseded", "this vendor has a newer offer")
                return Input.IGNORED
            self._drop_offer(old)
        if old is None:
            self._vendor_joins(vendor)
        self._offer_of[vendor] = env
        self._offers[env.id] = env
        insort(self._floors, (min(t.unit_price for t in env.message.tiers), env.id))
        self._check_offer(env.id)
        events.append(OfferReceived(offer=env.id, vendor=vendor))
        return Input.OFFER

    def _pin_offer(self, env: Envelope[Offer]) -> bool:
        """Keep an offer that no longer counts when a deal pins it (not for clearing)."""
        if not self._pinned(env.id):
            return False
        self._pinned_offers[env.id] = env
        self._check_offer(env.id)
        return True

    def _drop_offer(self, old: Envelope[Offer]) -> None:
        del self._offers[old.id]
        floor = (min(t.unit_price for t in old.message.tiers), old.id)
        del self._floors[bisect_left(self._floors, floor)]
        if self._pinned(old.id):
            self._pinned_offers[old.id] = old
        else:
            self._dropped.append(old.id)
        self._check_offer(old.id)

    def _apply_certificate(self, env: Envelope[Certificate], events: list[CircleEvent]) -> Input:
        signer = env.signer
        kept, lost = self._cert_signers.admit(signer)
        pinned = bool(self._deals_over.get(env.id))
        if not kept and not pinned:
            self._cap_refuse(env, events, "circle-full", "the circle keeps no more signers")
            return Input.IGNORED
        if lost is not None:
            for old in [c for c in self._certificates.values() if c.signer == lost]:
                if not self._deals_over.get(old.id):
                    self._drop_certificate(old)
        # The signer's newest CERTIFICATES_PER_KEY, pinned or not, set the cap;
        # a certificate a held deal is over is kept beyond it.
        rank = (env.message.created, env.id)
        mine = sorted(
            ((c.message.created, c.id) for c in self._certificates.values() if c.signer == signer),
            reverse=True,
        )
        newer = [r for r in mine if r > rank]
        if len(newer) >= caps.CERTIFICATES_PER_KEY and not pinned:
            self._cap_refuse(env, events, "cap", "this signer holds newer certificates")
            return Input.IGNORED
        if len(newer) < caps.CERTIFICATES_PER_KEY:
            for created_id in mine[caps.CERTIFICATES_PER_KEY - 1 :]:
                if created_id < rank:
                    old = self._certificates[created_id[1]]
                    if not self._deals_over.get(old.id):
                        self._drop_certificate(old)
        self._certificates[env.id] = env
        cert = env.message
        for named in (cert.offer, *(a.pledge for a in cert.allocations)):
            self._certs_naming.setdefault(named, set()).add(env.id)
        self._check_certificate(env.id)
        return Input.CERTIFICATE

    def _drop_certificate(self, old: Envelope[Certificate]) -> None:
        del self._certificates[old.id]
        cert = old.message
        named_ids = (cert.offer, *(a.pledge for a in cert.allocations))
        for named in named_ids:
            holders = self._certs_naming.get(named)
            if holders is not None:
                holders.discard(old.id)
                if not holders:
                    del self._certs_naming[named]
        self._dropped.append(old.id)
        self._check_certificate(old.id)
        if self._deals_over.get(old.id):
            for named in named_ids:
                self._release(named)

    def _apply_deal(self, env: Envelope[Deal], events: list[CircleEvent]) -> Input:
        signer = env.signer
        # A vendor with a counted offer needs no place among the deal signers:
        # keys signing junk deals cannot push its deal out. (Counted offers
        # depend on offers alone, so this keeps what is held a function of the set.)
        if signer not in self._offer_of:
            kept, lost = self._deal_signers.admit(signer)
            if not kept:
                self._cap_refuse(
                    env, events, "circle-full", "the circle keeps no more deal signers"
                )
                return Input.IGNORED
            if lost is not None:
                self._drop_deals_of(lost)
        mine = [d for d in self._deals.values() if d.signer == signer]

        def order(d: Envelope[Deal]) -> tuple[int, int, bytes]:
            return (d.message.unit_price, d.message.created, d.id)

        if len(mine) >= caps.DEALS_PER_KEY:
            worst = max(mine, key=order)
            if order(worst) < order(env):
                self._cap_refuse(env, events, "cap", "this vendor holds cheaper deals")
                return Input.IGNORED
            self._drop_deal(worst)
        self._deals[env.id] = env
        self._deals_over.setdefault(env.message.certificate, set()).add(env.id)
        self._to_check.add(env.id)
        self._deals_dirty = True
        return Input.DEAL

    def _drop_deals_of(self, signer: bytes) -> None:
        for old in [d for d in self._deals.values() if d.signer == signer]:
            self._drop_deal(old)

    def _vendor_joins(self, vendor: bytes) -> None:
        """A key got a counted offer: its deals leave the deal signers' cap."""
        self._deal_signers.remove(vendor)

    def _vendor_leaves(self, vendor: bytes) -> None:
        """A key lost its counted offer: its deals go through the deal signers' cap."""
        if not any(d.signer == vendor for d in self._deals.values()):
            return
        kept, lost = self._deal_signers.admit(vendor)
        if not kept:
            self._drop_deals_of(vendor)
        elif lost is not None:
            self._drop_deals_of(lost)

    def _drop_deal(self, old: Envelope[Deal]) -> None:
        del self._deals[old.id]
        self._deal_problems.pop(old.id, None)
        self._unadmitted_deals.discard(old.id)
        self._to_check.discard(old.id)
        over = self._deals_over[old.message.certificate]
        over.discard(old.id)
        self._dropped.append(old.id)
        self._deals_dirty = True
        if not over:
            del self._deals_over[old.message.certificate]
            self._release_certificate(old.message.certificate)

    # Which deals to check again when something they depend on changes.

    def _check_certificate(self, cert_id: bytes) -> None:
        deals = self._deals_over.get(cert_id)
        if deals:
            self._to_check.update(deals)
            self._deals_dirty = True

    def _check_named(self, named: bytes) -> None:
        for cert_id in self._certs_naming.get(named, ()):
            self._check_certificate(cert_id)

    def _check_offer(self, offer_id: bytes) -> None:
        self._check_named(offer_id)

    def _check_member(self, member: bytes) -> None:
        """A member's standing changed (equivocation): deals naming its pledges.

        A deal may name a pledge held outside the member's window (pinned), so
        the deals whose verdict a standing decides (valid, or refused for an
        equivocator) are checked too; the deal caps bound them.
        """
        for held in self._held_of(member):
            self._check_named(held.id)
        for deal_id, problem in self._deal_problems.items():
            if problem is None or problem == "equivocator":
                self._to_check.add(deal_id)
                self._deals_dirty = True

    def _check_rule_failures(self) -> None:
        """Admissions changed: deals refused as ``unadmitted`` may pass now.

        No other verdict depends on who is admitted (the checks before it in
        ``_deal_problem`` and ``verify_certificate`` do not read admissions).
        """
        if self._unadmitted_deals:
            self._to_check.update(self._unadmitted_deals)
            self._deals_dirty = True

    # ---------------------------------------------------------- membership

    def _latest(self, member: bytes) -> HeldPledge | None:
        """The member's highest-sequence pledge made by the deadline (withdrawals too).

        At each seq the pledge with the smallest id stands for it; a key holds
        at most PLEDGE_SEQS_PER_KEY seqs, so this walk is bounded.
        """
        envs = self._held_of(member)
        i = len(envs) - 1
        while i >= 0:
            seq = envs[i].seq
            while i > 0 and envs[i - 1].seq == seq:
                i -= 1
            if envs[i].created <= self._deadline:
                return envs[i]
            i -= 1
        return None

    def _counted(self, member: bytes) -> HeldPledge | None:
        if member in self._proofs:
            return None
        if self._admitted is not None and member not in self._admitted:
            return None
        latest = self._latest(member)
        if latest is None or latest.quantity == 0:
            return None
        return latest

    def _keep(self, member: bytes, window: Sequence[HeldPledge], live: HeldPledge | None) -> None:
        """Store a key's pledges within its caps and the one the book counts.

        A key whose one pledge counts is stored as that bare record: most keys
        are, and a KeyPledges would cost a tuple and a record more per key.
        """
        if live is not None and len(window) == 1 and window[0] is live:
            self._pledges[member] = live
        elif window or live is not None:
            self._pledges[member] = KeyPledges(live, tuple(window))
        else:
            self._pledges.pop(member, None)

    def _refresh(self, member: bytes, events: list[CircleEvent]) -> None:
        old = self._live_of(member)
        new = self._counted(member)
        if old is new:
            return
        if old is not None:
            self._book.remove_keyed(old, old.quantity, old.tolerance)
        if new is not None:
            self._book.add_keyed(new, new.quantity, new.tolerance)
        self._keep(member, self._held_of(member), new)
        if new is not None:
            events.append(
                PledgeCounted(
                    member=member,
                    pledge=new.id,
                    seq=new.seq,
                    quantity=new.quantity,
                    max_price=new.max_price,
                    tolerance=new.tolerance,
                )
            )
        else:
            latest = self._latest(member)
            withdrawal = latest.id if latest is not None and latest.quantity == 0 else None
            events.append(PledgeWithdrawn(member=member, pledge=withdrawal))

    # ------------------------------------------------------ derived status

    def _derive(self) -> tuple[CircleStatus, Clearing | None]:
        if self._deal is not None:
            return CircleStatus.CLOSED, None
        if len(self._extensions) > 1:
            return CircleStatus.CANCELLED, None
        if self._now <= self._deadline:
            clearing = self._best(relaxed=False)
            return (CircleStatus.QUORUM if clearing else CircleStatus.FORMING), clearing
        if (
            self._rules.on_miss == "smaller-tier"
            and self._now <= self._deadline + SMALLER_TIER_WINDOW
        ):
            clearing = self._best(relaxed=True)
            if clearing is not None:
                return CircleStatus.QUORUM, clearing
        return CircleStatus.EXPIRED, None

    def _bound_events(self, member: bytes, events: list[CircleEvent]) -> None:
        deal = self._deal
        if deal is None:
            return
        cert = self._certificates[deal.message.certificate].message
        latest = self._latest(member)
        for a in cert.allocations:
            named = self._by_id.get(a.pledge)
            if (
                named is not None
                and named.signer == member
                and latest is not None
                and latest.seq > named.seq
            ):
                events.append(
                    PledgeBound(member=member, pledge=named.id, later=latest.id, deal=deal.id)
                )

    def _settle(
        self, events: list[CircleEvent], kind: Input | tuple[Input, ...]
    ) -> list[CircleEvent]:
        if self._deals_dirty:
            self._deals_dirty = False
            for deal_id in self._to_check:
                held = self._deals.get(deal_id)
                if held is not None:
                    problem = self._deal_problem(held)
                    self._deal_problems[deal_id] = problem
                    if problem == "unadmitted":
                        self._unadmitted_deals.add(deal_id)
                    else:
                        self._unadmitted_deals.discard(deal_id)
            self._to_check.clear()
            deal = self._closing_deal()
            if deal is not None and deal is not self._deal:
                self._deal = deal
                m = deal.message
                events.append(
                    DealClosed(
                        deal=deal.id,
                        certificate=m.certificate,
                        vendor=deal.signer,
                        unit_price=m.unit_price,
                        total=m.total,
                    )
                )
                cert = self._certificates[m.certificate].message
                for member in {self._by_id[a.pledge].signer for a in cert.allocations}:
                    self._bound_events(member, events)
            elif deal is None:
                self._deal = None
        before, clearing_before = self._status, self._clearing
        status, clearing = self._derive()
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not any(status in CIRCLE_TRANSITIONS[(before, k)] for k in kinds):
            # The status is derived from the set, so it is right whatever the
            # table says; a miss means the table is incomplete. Report it and
            # go on: raising here would let any peer's message stop a node.
            events.append(
                RuleAnomaly(
                    previous=before,
                    status=status,
                    input=",".join(k.value for k in kinds),
                    detail="a status change protocol/_transitions.py does not list: "
                    "please report it as a bug",
                )
            )
        self._status, self._clearing = status, clearing
        if clearing != clearing_before:
            events.append(
                QuorumChanged(
                    offer=clearing.offer if clearing else None,
                    unit_price=clearing.unit_price if clearing else None,
                    total=clearing.total if clearing else None,
                )
            )
        if status is not before:
            events.append(StatusChanged(previous=before, status=status, at=self._now))
        return events
