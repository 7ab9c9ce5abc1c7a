"""What a circle's state shows: queries, the clearing, deal validity, certificates.

Theory of operation: :class:`CircleView` reads the stores that
:class:`~protocol._circle.CircleState` keeps up to date and derives answers
from them; nothing here changes the state. It is split from ``_circle.py`` so
that the rules that *change* the state stay in one file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, NamedTuple

from ._certificate import InvalidCertificate, build_certificate, verify_certificate
from ._codec import pack
from ._envelope import Envelope, rebuilt
from ._errors import ProtocolError
from ._events import CircleStatus
from ._messages import (
    Certificate,
    Charter,
    Deal,
    Extension,
    Invite,
    Misbehaviour,
    Offer,
    Pledge,
)
from ._quorum import (
    Clearing,
    DemandBook,
    Entry,
    clear_tier,
    priority_key,
    unpack_position,
)

__all__ = ["SMALLER_TIER_WINDOW", "CircleView"]

#: Seconds after the deadline during which a vendor may sign a smaller-tier deal.
SMALLER_TIER_WINDOW = 2 * 24 * 3600


class HeldPledge(NamedTuple):
    """A pledge the state holds: the fields it reads, and the parts of its envelope.

    The state keeps this record instead of the envelope (issue 11: memory per
    pledge): the pledge's circle and currency are the charter's (a pledge
    naming others is refused), the rest is here, and
    :meth:`CircleView._envelope` rebuilds the envelope where one is handed
    out. It starts with the pledge's place in the fill order, (position, id),
    so the demand book keeps this very record as its key (ids are unique: the
    later fields are never compared) and makes no object per pledge.
    """

    position: int
    """:func:`~protocol._quorum.priority_key` of (max price, created)."""
    id: bytes
    """The envelope's id."""
    quantity: int
    """Units pledged (0: a withdrawal)."""
    tolerance: int
    """Extra units the member also takes if that lets a tier fill."""
    seq: int
    """The pledge's sequence number."""
    signer: bytes
    """The member's key."""
    signature: bytes
    """The envelope's signature, verified when the pledge was applied."""

    @classmethod
    def of(cls, env: Envelope[Pledge]) -> HeldPledge:
        """The record of a verified pledge envelope."""
        p = env.message
        return cls(
            priority_key(p.max_price, p.created),
            env.id,
            p.quantity,
            p.tolerance,
            p.seq,
            env.signer,
            env.signature,
        )

    @property
    def max_price(self) -> int:
        """Highest unit price the member accepts."""
        return unpack_position(self.position)[0]

    @property
    def created(self) -> int:
        """When the member signed the pledge."""
        return unpack_position(self.position)[1]


class KeyPledges(NamedTuple):
    """A key's held pledges, when they are not one pledge that counts.

    Most keys hold one pledge and it is their live one: the state keeps that
    bare :class:`HeldPledge` (no dict of live pledges, no per-key list).
    """

    live: HeldPledge | None
    """The pledge the demand book counts for this key, or None."""
    window: tuple[HeldPledge, ...]
    """The key's pledges within its caps, sorted by (seq, id)."""


def _entry(held: HeldPledge) -> Entry:
    max_price, created = unpack_position(held.position)
    return Entry(
        pledge=held.id,
        quantity=held.quantity,
        max_price=max_price,
        tolerance=held.tolerance,
        created=created,
    )


class CircleView:
    """The read side of a circle's state (the stores are kept by CircleState)."""

    _charter: Envelope[Charter]
    _rules: Charter
    _now: int
    # Per key: a bare HeldPledge when it is the key's one held pledge and it
    # counts, else KeyPledges (see there).
    _pledges: dict[bytes, HeldPledge | KeyPledges]
    _floors: list[tuple[int, bytes]]
    _deal_problems: dict[bytes, str | None]
    _by_id: dict[bytes, HeldPledge]
    _invites: dict[bytes, list[Envelope[Invite]]]
    _admitted: dict[bytes, bytes] | None
    _extensions: dict[bytes, Envelope[Extension]]
    _offers: dict[bytes, Envelope[Offer]]
    _pinned_offers: dict[bytes, Envelope[Offer]]
    _certificates: dict[bytes, Envelope[Certificate]]
    _deals: dict[bytes, Envelope[Deal]]
    _proofs: dict[bytes, Misbehaviour]
    _book: DemandBook
    _deadline: int
    _deal: Envelope[Deal] | None
    _clearing: Clearing | None
    _status: CircleStatus

    # ---------------------------------------------------------- held pledges

    def _envelope(self, held: HeldPledge) -> Envelope[Pledge]:
        """The envelope of a held pledge, rebuilt from its record.

        No signature check: the state verified these very bytes when the
        pledge was applied (``apply`` takes only verified envelopes), the state
        is pure, and the record, the charter's circle id and currency give back
        the same message and so (canonical encoding) the same bytes.
        """
        max_price, created = unpack_position(held.position)
        pledge = Pledge(
            circle=self._charter.id,
            seq=held.seq,
            quantity=held.quantity,
            max_price=max_price,
            currency=self._rules.currency,
            tolerance=held.tolerance,
            created=created,
        )
        return rebuilt(pledge, held.signer, held.signature, held.id)

    def _held_of(self, member: bytes) -> tuple[HeldPledge, ...]:
        """A key's held pledges within its caps, sorted by (seq, id)."""
        held = self._pledges.get(member)
        if held is None:
            return ()
        return (held,) if isinstance(held, HeldPledge) else held.window

    def _live_of(self, member: bytes) -> HeldPledge | None:
        """The pledge the demand book counts for a key, or None."""
        held = self._pledges.get(member)
        if held is None or isinstance(held, HeldPledge):
            return held
        return held.live

    def _live_items(self) -> Iterator[tuple[bytes, HeldPledge]]:
        """(key, live pledge) for each key whose pledge counts."""
        for member, held in self._pledges.items():
            if isinstance(held, HeldPledge):
                yield member, held
            elif held.live is not None:
                yield member, held.live

    # ------------------------------------------------------ derived status

    def _best(self, relaxed: bool) -> Clearing | None:
        """The cheapest clearing over the counted offers (lowest price, most units, id).

        Offers are tried by their cheapest tier, cheapest first: once that price
        is above the best clearing found, no later offer can beat it, so a state
        holding many offers usually clears only the first few.
        """
        best: Clearing | None = None
        for floor, offer_id in self._floors:
            if best is not None and floor > best.unit_price:
                break
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
                best is None
                or (found.unit_price, -found.total, found.offer)
                < (best.unit_price, -best.total, best.offer)
            ):
                best = found
        return best

    def _deal_problem(self, env: Envelope[Deal]) -> str | None:
        """Why a deal does not (yet) close the circle, or None when it does."""
        deal = env.message
        cert_env = self._certificates.get(deal.certificate)
        if cert_env is None:
            return "missing-certificate"
        cert = cert_env.message
        offer = self._offers.get(cert.offer) or self._pinned_offers.get(cert.offer)
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
        # Each deal's problem is cached and checked again only when something it
        # names changes (see CircleState._to_check).
        valid = [self._deals[d] for d, problem in self._deal_problems.items() if problem is None]
        if not valid:
            return None
        return min(valid, key=lambda d: (d.message.unit_price, d.message.created, d.id))

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
        envelope = self._envelope
        return {member: envelope(held) for member, held in self._live_items()}

    def live_pledge(self, member: bytes) -> Envelope[Pledge] | None:
        """``member``'s live pledge, or None (cheap: one key, unlike :meth:`live_pledges`)."""
        held = self._live_of(member)
        return None if held is None else self._envelope(held)

    def members(self) -> list[bytes]:
        """Admitted keys (invite-only) or keys with a live pledge plus the founder, sorted."""
        if self._admitted is not None:
            return sorted(self._admitted)
        return sorted({self._charter.signer, *(member for member, _ in self._live_items())})

    def progress(self) -> tuple[int, int]:
        """(units pledged by live pledges, the target)."""
        return self._book.total, self._rules.target

    def worst_case_costs(self) -> dict[bytes, int]:
        """Each member's worst case: (quantity + tolerance) x max price, in minor units."""
        return {m: (h.quantity + h.tolerance) * h.max_price for m, h in self._live_items()}

    def equivocators(self) -> dict[bytes, Misbehaviour]:
        """Keys that equivocated in this circle, with one proof each (deterministic)."""
        return dict(self._proofs)

    def pledge(self, pledge_id: bytes) -> Envelope[Pledge] | None:
        """A pledge envelope this circle holds, by id."""
        held = self._by_id.get(pledge_id)
        return None if held is None else self._envelope(held)

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
        entries = [_entry(held) for _, held in self._live_items()]
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
            allocations=[(self._envelope(self._by_id[e.pledge]), q) for e, q in allocations],
        )

    def certificate_inputs(self, certificate: Certificate) -> dict[str, Any]:
        """Keyword arguments for :func:`verify_certificate` of ``certificate`` from this state."""
        extension = None
        if len(self._extensions) == 1:
            extension = next(iter(self._extensions.values()))
        return {
            "charter": self._charter,
            "offer": self._offers.get(certificate.offer) or self._pinned_offers[certificate.offer],
            "pledges": [self._envelope(self._by_id[a.pledge]) for a in certificate.allocations],
            "invites": [i for invites in self._invites.values() for i in invites],
            "extension": extension,
        }

    def digest(self) -> bytes:
        """BLAKE2b-256 of everything derived: equal digests mean equal states."""
        clearing = self._clearing
        summary = [
            self._status.value,
            self._deadline,
            sorted([m, held.id] for m, held in self._live_items()),
            [list(point) for point in self._book.curve()],
            [self._book.total, len(self._book)],
            sorted([m, p.first, p.second] for m, p in self._proofs.items()),
            sorted(self._admitted) if self._admitted is not None else None,
            None
            if clearing is None
            else [clearing.offer, clearing.unit_price, clearing.total, clearing.smaller_tier],
            None if self._deal is None else self._deal.id,
            sorted(self._offers),
            sorted(self._pinned_offers),
            sorted(i.id for invites in self._invites.values() for i in invites),
            sorted(self._by_id),
            sorted(self._certificates),
            sorted(self._deals),
            sorted(self._extensions),
        ]
        return hashlib.blake2b(pack(summary), digest_size=32).digest()
