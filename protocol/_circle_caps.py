"""Caps and the lock: how much of each kind a circle keeps, and what a deal pins.

Theory of operation: :class:`CircleCaps` holds the parts of
:class:`~protocol._circle.CircleState` that take a pledge, invite, offer,
certificate or deal *under its caps* (``protocol/_caps.py``), drop what a cap
pushes out, and keep beyond the caps what a held deal's certificate names
(the lock). It also knows which deals to check again when something they
depend on changes. The rules that change the rest of the state (pledges
counting, proofs, extensions, the status) stay in ``_circle.py``; this split
keeps each file to one job. Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from typing import TYPE_CHECKING, Any

from . import _caps as caps
from ._caps import KeyLottery
from ._circle_view import CircleView, HeldPledge
from ._envelope import Envelope
from ._events import CircleEvent, MemberAdmitted, OfferReceived, Refused
from ._messages import Certificate, Deal, Invite, Offer, Pledge
from ._transitions import CircleInput as Input

__all__ = ["CircleCaps"]


class CircleCaps(CircleView):
    """Taking messages under the caps, and the lock (state set by CircleState)."""

    _seen: set[bytes]
    _dropped: list[bytes]
    _pledgers: KeyLottery
    _vendors: KeyLottery
    _cert_signers: KeyLottery
    _deal_signers: KeyLottery
    _inviters: KeyLottery
    _offer_of: dict[bytes, Envelope[Offer]]
    _proof_envs: dict[bytes, bytes]
    _certs_naming: dict[bytes, set[bytes]]
    _deals_over: dict[bytes, set[bytes]]
    _to_check: set[bytes]
    _unadmitted_deals: set[bytes]
    _deals_dirty: bool

    if TYPE_CHECKING:
        # Defined by CircleState, which is what every CircleCaps is.
        def _refuse(self, env: Envelope[Any], reason: str, detail: str) -> Refused: ...
        def _record_proof(self, member: bytes, events: list[CircleEvent]) -> None: ...
        def _refresh(self, member: bytes, events: list[CircleEvent]) -> None: ...
        def _may_invite(self, key: bytes) -> bool: ...
        def _keep(self, member: bytes, window: Any, live: HeldPledge | None) -> None: ...

    def _cap_refuse(
        self, env: Envelope[Any], events: list[CircleEvent], reason: str, detail: str
    ) -> None:
        events.append(self._refuse(env, reason, detail))
        self._dropped.append(env.id)

    def _refuse_unless_pinned(
        self, env: Envelope[Pledge], events: list[CircleEvent], reason: str, detail: str
    ) -> None:
        """A pledge a cap refuses: held all the same when a deal pins it, else refused."""
        if not self._hold_pinned(env):
            self._cap_refuse(env, events, reason, detail)

    def _take_pledge(self, env: Envelope[Pledge], events: list[CircleEvent]) -> bool:
        """Hold a pledge under the caps; False (refused, typed) when a cap drops it."""
        member = env.signer
        kept, lost = self._pledgers.admit(member)
        if not kept:
            self._refuse_unless_pinned(
                env, events, "circle-full", "the circle keeps no more pledging keys"
            )
            return False
        if lost is not None:
            self._drop_member(lost, events)
        mine = self._held_of(member)
        seq = env.message.seq
        seqs = {h.seq for h in mine}
        if seq not in seqs and len(seqs) >= caps.PLEDGE_SEQS_PER_KEY and seq < min(seqs):
            self._refuse_unless_pinned(env, events, "seq-cap", "this key holds newer pledges")
            return False
        at_seq = [h for h in mine if h.seq == seq]
        if len(at_seq) >= caps.PLEDGES_PER_SEQ and env.id > at_seq[-1].id:
            # The key equivocated already at this seq; a third pledge proves nothing more.
            self._refuse_unless_pinned(
                env, events, "equivocator", "this key equivocated at this seq"
            )
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
                self._drop_invites_of(lost)  # outside the circle too: they admitted no one
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

    def _drop_invites_of(self, key: bytes) -> None:
        """Forget every invite of a key outside the circle that lost its lottery place."""
        self._dropped.extend(inv.id for inv in self._invites.pop(key, ()))

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
                    self._drop_invites_of(member)
                elif lost is not None:
                    self._drop_invites_of(lost)
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
        self._check_named(env.id)
        events.append(OfferReceived(offer=env.id, vendor=vendor))
        return Input.OFFER

    def _pin_offer(self, env: Envelope[Offer]) -> bool:
        """Keep an offer that no longer counts when a deal pins it (not for clearing)."""
        if not self._pinned(env.id):
            return False
        self._pinned_offers[env.id] = env
        self._check_named(env.id)
        return True

    def _drop_offer(self, old: Envelope[Offer]) -> None:
        del self._offers[old.id]
        floor = (min(t.unit_price for t in old.message.tiers), old.id)
        del self._floors[bisect_left(self._floors, floor)]
        if self._pinned(old.id):
            self._pinned_offers[old.id] = old
        else:
            self._dropped.append(old.id)
        self._check_named(old.id)

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
