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

from typing import Any

from ._certificate import (
    InvalidProof,
    effective_deadline,
    extension_is_valid,
    make_proof,
    verify_misbehaviour,
)
from ._circle_view import SMALLER_TIER_WINDOW, CircleView, _entry
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
        self._pledges: dict[bytes, dict[int, list[Envelope[Pledge]]]] = {}
        self._by_id: dict[bytes, Envelope[Pledge]] = {}
        self._invites: dict[bytes, list[Envelope[Invite]]] = {}
        self._admitted: dict[bytes, bytes] | None = (
            {charter.signer: charter.id} if self._rules.invite_only else None
        )
        self._extensions: dict[bytes, Envelope[Extension]] = {}
        self._offers: dict[bytes, Envelope[Offer]] = {}
        self._certificates: dict[bytes, Envelope[Certificate]] = {}
        self._deals: dict[bytes, Envelope[Deal]] = {}
        self._named: set[bytes] = set()
        # Whether a deal's validity may have changed since the deals were last checked.
        self._deals_dirty = False
        self._proofs: dict[bytes, Misbehaviour] = {}
        self._live: dict[bytes, Envelope[Pledge]] = {}
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
        if envelope.id in self._seen or envelope.id == self._charter.id:
            return self._settle(events, Input.IGNORED)
        self._seen.add(envelope.id)
        kind = self._dispatch(envelope, events)
        return self._settle(events, kind)

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
            self._offers[env.id] = env  # type: ignore[assignment]
            self._deals_dirty = True
            events.append(OfferReceived(offer=env.id, vendor=env.signer))
            return Input.OFFER
        if isinstance(message, Certificate):
            self._certificates[env.id] = env  # type: ignore[assignment]
            self._named.update(a.pledge for a in message.allocations)
            self._deals_dirty = True
            return Input.CERTIFICATE
        if isinstance(message, Deal):
            self._deals[env.id] = env  # type: ignore[assignment]
            self._deals_dirty = True
            return Input.DEAL
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
        self._by_id[env.id] = env
        if env.id in self._named:
            self._deals_dirty = True
        at_seq = self._pledges.setdefault(member, {}).setdefault(p.seq, [])
        at_seq.append(env)
        at_seq.sort(key=lambda e: e.id)
        if len(at_seq) > 1:
            self._deals_dirty = True
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
        if latest is not None and latest.id != env.id and latest.message.seq > p.seq:
            events.append(self._refuse(env, "superseded", "a higher sequence number is live"))
        self._bound_events(member, events)
        return Input.WITHDRAWAL if p.quantity == 0 else Input.PLEDGE

    def _apply_invite(
        self, env: Envelope[Invite], invite: Invite, events: list[CircleEvent]
    ) -> Input:
        self._invites.setdefault(env.signer, []).append(env)
        admitted = self._admitted
        if admitted is None:
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
            self._deals_dirty = True
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
        pairs: list[tuple[Envelope[Any], Envelope[Any]]] = [
            (envs[0], envs[1]) for envs in self._pledges.get(member, {}).values() if len(envs) > 1
        ]
        if member == self._charter.signer and len(self._extensions) > 1:
            first, second = sorted(self._extensions.values(), key=lambda e: e.id)[:2]
            pairs.append((first, second))
        proof = make_proof(*min(pairs, key=lambda pair: (pair[0].id, pair[1].id)))
        if member not in self._proofs:
            events.append(EquivocationDetected(member=member, proof=proof))
        self._proofs[member] = proof

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
        # A proof is its two envelopes: apply each as if it had come on its own.
        kinds: list[Input] = []
        for inner in (first, second):
            if inner.id in self._seen:
                continue
            self._seen.add(inner.id)
            kind = self._dispatch(inner, events)
            kinds += kind if isinstance(kind, tuple) else (kind,)
        return tuple(kinds) or (Input.IGNORED,)

    # ---------------------------------------------------------- membership

    def _latest(self, member: bytes) -> Envelope[Pledge] | None:
        """The member's highest-sequence pledge made by the deadline (withdrawals too)."""
        seqs = self._pledges.get(member)
        if not seqs:
            return None
        # Usually the highest sequence number was made in time: no scan needed.
        top = seqs[max(seqs)][0]
        if top.message.created <= self._deadline:
            return top
        best: Envelope[Pledge] | None = None
        for seq, envs in seqs.items():
            env = envs[0]
            if env.message.created <= self._deadline and (best is None or seq > best.message.seq):
                best = env
        return best

    def _counted(self, member: bytes) -> Envelope[Pledge] | None:
        if member in self._proofs:
            return None
        if self._admitted is not None and member not in self._admitted:
            return None
        latest = self._latest(member)
        if latest is None or latest.message.quantity == 0:
            return None
        return latest

    def _refresh(self, member: bytes, events: list[CircleEvent]) -> None:
        old = self._live.get(member)
        new = self._counted(member)
        if old is new:
            return
        if old is not None:
            self._book.remove(_entry(old))
            del self._live[member]
        if new is not None:
            self._book.add(_entry(new))
            self._live[member] = new
            p = new.message
            events.append(
                PledgeCounted(
                    member=member,
                    pledge=new.id,
                    seq=p.seq,
                    quantity=p.quantity,
                    max_price=p.max_price,
                    tolerance=p.tolerance,
                )
            )
        else:
            latest = self._latest(member)
            withdrawal = latest.id if latest is not None and latest.message.quantity == 0 else None
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
            named = self._by_id[a.pledge]
            if (
                named.signer == member
                and latest is not None
                and latest.message.seq > named.message.seq
            ):
                events.append(
                    PledgeBound(member=member, pledge=named.id, later=latest.id, deal=deal.id)
                )

    def _settle(
        self, events: list[CircleEvent], kind: Input | tuple[Input, ...]
    ) -> list[CircleEvent]:
        if self._deals_dirty:
            self._deals_dirty = False
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
                for a in cert.allocations:
                    self._bound_events(self._by_id[a.pledge].signer, events)
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
