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
Taking each kind under its caps, and the lock that keeps what a deal names,
live in ``_circle_caps``; what the state shows lives in ``_circle_view``.
"""

from __future__ import annotations

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
from ._circle_caps import CircleCaps
from ._circle_view import SMALLER_TIER_WINDOW, HeldPledge, KeyPledges
from ._envelope import Envelope
from ._errors import InvalidMessage
from ._events import (
    CircleEvent,
    CircleStatus,
    DealClosed,
    EquivocationDetected,
    ExtensionAccepted,
    MemberAdmitted,
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


class CircleState(CircleCaps):
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
