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

import hashlib
from typing import Any

from ._certificate import (
    InvalidCertificate,
    InvalidProof,
    build_certificate,
    effective_deadline,
    extension_is_valid,
    make_proof,
    verify_certificate,
    verify_misbehaviour,
)
from ._codec import pack
from ._envelope import Envelope
from ._errors import InvalidMessage, ProtocolError
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
from ._quorum import Clearing, DemandBook, Entry, clear_tier
from ._transitions import CIRCLE_TRANSITIONS
from ._transitions import CircleInput as Input

__all__ = ["SMALLER_TIER_WINDOW", "CircleState"]

#: Seconds after the deadline during which a vendor may sign a smaller-tier deal.
SMALLER_TIER_WINDOW = 2 * 24 * 3600


def _entry(env: Envelope[Pledge]) -> Entry:
    p = env.message
    return Entry(
        pledge=env.id,
        quantity=p.quantity,
        max_price=p.max_price,
        tolerance=p.tolerance,
        created=p.created,
    )


class CircleState:
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

    def _dispatch(self, env: Envelope[Message], events: list[CircleEvent]) -> Input:
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
    ) -> Input:
        try:
            first, second = verify_misbehaviour(proof)
        except InvalidProof as exc:
            events.append(self._refuse(env, exc.reason, str(exc)))
            return Input.IGNORED
        if getattr(first.message, "circle", None) != self._charter.id:
            events.append(self._refuse(env, "unknown-circle", "the proof is about another circle"))
            return Input.IGNORED
        kinds = [self._inner(inner, events) for inner in (first, second)]
        return Input.EQUIVOCATION if Input.EQUIVOCATION in kinds else Input.IGNORED

    def _inner(self, env: Envelope[Message], events: list[CircleEvent]) -> Input:
        if env.id in self._seen:
            return Input.IGNORED
        self._seen.add(env.id)
        return self._dispatch(env, events)

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

    def _best(self, relaxed: bool) -> Clearing | None:
        best: Clearing | None = None
        for offer_id in sorted(self._offers):
            terms = self._offers[offer_id].message
            if terms.valid_until < self._now:
                continue
            found = self._book.clear(
                offer=offer_id,
                tiers=terms.tiers,
                capacity=terms.capacity,
                target=self._rules.target,
                relaxed=relaxed,
            )
            if found is not None and (
                best is None or (found.unit_price, -found.total) < (best.unit_price, -best.total)
            ):
                best = found
        return best

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

    def _deal_problem(self, env: Envelope[Deal]) -> str | None:
        """Why a deal does not (yet) close the circle, or None when it does."""
        deal = env.message
        cert_env = self._certificates.get(deal.certificate)
        if cert_env is None:
            return "missing-certificate"
        cert = cert_env.message
        offer = self._offers.get(cert.offer)
        if offer is None:
            return "missing-offer"
        if env.signer != offer.signer:
            return "not-vendor"
        if (deal.unit_price, deal.currency, deal.total) != (
            cert.unit_price,
            cert.currency,
            cert.total,
        ):
            return "mismatch"
        if any(a.pledge not in self._by_id for a in cert.allocations):
            return "missing-pledge"
        if any(self._by_id[a.pledge].signer in self._proofs for a in cert.allocations):
            return "equivocator"
        try:
            verify_certificate(cert_env, **self.certificate_inputs(cert))
        except InvalidCertificate as exc:
            return exc.reason
        tier_min = next(
            t.min_quantity for t in offer.message.tiers if t.unit_price == deal.unit_price
        )
        if cert.total >= max(tier_min, self._rules.target):
            return None if deal.created <= self._deadline else "late"
        window_end = self._deadline + SMALLER_TIER_WINDOW
        if self._deadline < deal.created <= window_end:
            return None
        return "smaller-tier-window"

    def _closing_deal(self) -> Envelope[Deal] | None:
        valid = [d for d in self._deals.values() if self._deal_problem(d) is None]
        if not valid:
            return None
        return min(valid, key=lambda d: (d.message.unit_price, d.message.created, d.id))

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

    def _settle(self, events: list[CircleEvent], kind: Input) -> list[CircleEvent]:
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
        if status not in CIRCLE_TRANSITIONS[(before, kind)]:
            raise ProtocolError(
                f"circle rules moved {before.value} to {status.value} on {kind.value}: "
                "this is a bug in protocol/_transitions.py, please report it",
                reason="no-transition",
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

    # -------------------------------------------------------------- queries

    @property
    def id(self) -> bytes:
        """The circle's id (its charter's message id)."""
        return self._charter.id

    @property
    def charter(self) -> Envelope[Charter]:
        """The charter envelope."""
        return self._charter

    @property
    def status(self) -> CircleStatus:
        """The status at the latest time handed in."""
        return self._status

    @property
    def now(self) -> int:
        """The latest time handed in."""
        return self._now

    @property
    def deadline(self) -> int:
        """The pledge deadline (moved if a valid extension exists)."""
        return self._deadline

    @property
    def deal(self) -> Envelope[Deal] | None:
        """The deal that closed the circle, or None."""
        return self._deal

    @property
    def best_offer(self) -> Clearing | None:
        """The best clearing among valid offers (lowest price, then most units), or None."""
        return self._clearing

    def demand(self, price: int) -> int:
        """Units of live pledges whose max price is at least ``price``."""
        return self._book.demand(price)

    def demand_curve(self) -> list[tuple[int, int]]:
        """(price, demand) at each distinct max price, dearest first."""
        return self._book.curve()

    def live_pledges(self) -> dict[bytes, Envelope[Pledge]]:
        """Each counting member's live pledge (withdrawn members are absent)."""
        return dict(self._live)

    def members(self) -> list[bytes]:
        """Admitted keys (invite-only) or keys with a live pledge plus the founder, sorted."""
        if self._admitted is not None:
            return sorted(self._admitted)
        return sorted({self._charter.signer, *self._live})

    def progress(self) -> tuple[int, int]:
        """(units pledged by live pledges, the target)."""
        return self._book.total, self._rules.target

    def worst_case_costs(self) -> dict[bytes, int]:
        """Each member's worst case: (quantity + tolerance) x max price, in minor units."""
        return {
            m: (e.message.quantity + e.message.tolerance) * e.message.max_price
            for m, e in self._live.items()
        }

    def equivocators(self) -> dict[bytes, Misbehaviour]:
        """Keys that equivocated in this circle, with one proof each (deterministic)."""
        return dict(self._proofs)

    def pledge(self, pledge_id: bytes) -> Envelope[Pledge] | None:
        """A pledge envelope this circle holds, by id."""
        return self._by_id.get(pledge_id)

    def certificate(self, offer: bytes | None = None) -> Certificate:
        """Assemble the certificate for the best clearing (or for ``offer``'s).

        Every member holding the same messages gets the same body; seal it to send.
        Raises InvalidCertificate("no-quorum") when nothing clears.
        """
        clearing = self._clearing
        if offer is not None:
            relaxed = self._status is CircleStatus.QUORUM and self._now > self._deadline
            clearing = None
            if offer in self._offers:
                terms = self._offers[offer].message
                clearing = self._book.clear(
                    offer=offer,
                    tiers=terms.tiers,
                    capacity=terms.capacity,
                    target=self._rules.target,
                    relaxed=relaxed,
                )
        if clearing is None or self._status is not CircleStatus.QUORUM:
            raise InvalidCertificate("no offer clears for this circle now", reason="no-quorum")
        offer_env = self._offers[clearing.offer]
        tier = next(t for t in offer_env.message.tiers if t.unit_price == clearing.unit_price)
        entries = [_entry(e) for e in self._live.values()]
        allocations = clear_tier(
            entries,
            tier=tier,
            capacity=offer_env.message.capacity,
            target=self._rules.target,
            relaxed=clearing.smaller_tier,
        )
        if allocations is None or sum(q for _, q in allocations) != clearing.total:
            raise ProtocolError(  # pragma: no cover - the book and the sort must agree
                "demand book and reference clearing disagree", reason="internal"
            )
        return build_certificate(
            charter=self._charter,
            offer=offer_env,
            unit_price=clearing.unit_price,
            allocations=[(self._by_id[e.pledge], q) for e, q in allocations],
        )

    def certificate_inputs(self, certificate: Certificate) -> dict[str, Any]:
        """Keyword arguments for :func:`verify_certificate` of ``certificate`` from this state."""
        extension = None
        if len(self._extensions) == 1:
            extension = next(iter(self._extensions.values()))
        return {
            "charter": self._charter,
            "offer": self._offers[certificate.offer],
            "pledges": [self._by_id[a.pledge] for a in certificate.allocations],
            "invites": [i for invites in self._invites.values() for i in invites],
            "extension": extension,
        }

    def digest(self) -> bytes:
        """BLAKE2b-256 of everything derived: equal digests mean equal states."""
        clearing = self._clearing
        summary = [
            self._status.value,
            self._deadline,
            sorted([m, e.id] for m, e in self._live.items()),
            [list(point) for point in self._book.curve()],
            [self._book.total, len(self._book)],
            sorted([m, p.first, p.second] for m, p in self._proofs.items()),
            sorted(self._admitted) if self._admitted is not None else None,
            None
            if clearing is None
            else [clearing.offer, clearing.unit_price, clearing.total, clearing.smaller_tier],
            None if self._deal is None else self._deal.id,
            sorted(self._offers),
            sorted(self._certificates),
            sorted(self._deals),
            sorted(self._extensions),
        ]
        return hashlib.blake2b(pack(summary), digest_size=32).digest()
