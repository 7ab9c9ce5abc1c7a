"""Relationship value: verified deals, receipts, and a vendor's reputation.

Theory of operation: a deal is binding because the vendor signed it over a
quorum certificate, and the certificate names the pledges it counts; so the
members of a deal are the signers of those pledges, and anyone holding the
three kinds of envelope can check who took part (:func:`verify_deal`) without
trusting whoever handed them over. A vendor's reputation is then a pure
function of a set of verified deals and a set of receipts: a receipt counts
only when it verifies, names one of the vendor's deals, and is signed by a
member of that deal; one member's several receipts for one deal count once
(the latest, by its signed time, then by id). Everything else is ignored and
tallied by reason, so a stranger's review counts for nothing and the same
inputs in any order give the same reputation.

The lower confidence bound is Wilson's score interval at z = 1.96, computed in
exact rational arithmetic with an integer square root and reported in parts
per million, so every implementation ranks vendors identically.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from ._envelope import Envelope, decode, decode_as
from ._errors import BadSignature, InvalidMessage, ProtocolError
from ._messages import Certificate, Deal, Offer, Pledge, Receipt, Referral

__all__ = [
    "RelationshipError",
    "Reputation",
    "VerifiedDeal",
    "vendor_reputation",
    "verify_deal",
    "verify_referral",
    "wilson_lower_ppm",
]


class RelationshipError(ProtocolError):
    """Deal records that do not fit together; ``reason`` says how.

    Reasons: "deal-mismatch" (deal and certificate disagree), "not-allocated"
    (a pledge the certificate does not count), "wrong-circle", "self-referral",
    "offer-mismatch" (a referral and the offer it names disagree).
    """

    reason = "relationship-error"


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedDeal:
    """A deal whose vendor signature, certificate and members were checked."""

    id: bytes
    """Id of the deal envelope."""
    vendor: bytes
    """The vendor who signed the deal."""
    circle: bytes
    """The circle."""
    certificate: bytes
    """Id of the certificate the deal countersigns."""
    unit_price: int
    """Agreed unit price."""
    currency: str
    """Currency of the price."""
    total: int
    """Units delivered under the deal."""
    members: frozenset[bytes]
    """Signers of the checked pledges the certificate counts (all of them if all were given)."""
    created: int
    """When the vendor signed the deal."""


def verify_deal(deal: bytes, certificate: bytes, pledges: Iterable[bytes]) -> VerifiedDeal:
    """Check a deal, its certificate and some of its pledges; raise unless they fit.

    Pass every pledge the certificate names to learn every member; pass one
    member's pledge to prove that member took part.
    """
    d = decode_as(deal, Deal)
    c = decode_as(certificate, Certificate)
    if d.message.certificate != c.id:
        raise RelationshipError("the deal countersigns another certificate", reason="deal-mismatch")
    terms = (d.message.circle, d.message.unit_price, d.message.currency, d.message.total)
    if terms != (c.message.circle, c.message.unit_price, c.message.currency, c.message.total):
        raise RelationshipError(
            "the deal's circle, price or total differ from its certificate's",
            reason="deal-mismatch",
        )
    allocated = {a.pledge for a in c.message.allocations}
    members = set()
    for data in pledges:
        p = decode_as(data, Pledge)
        if p.id not in allocated:
            raise RelationshipError(
                "the certificate does not count this pledge", reason="not-allocated"
            )
        if p.message.circle != d.message.circle:
            raise RelationshipError("the pledge is for another circle", reason="wrong-circle")
        members.add(p.signer)
    return VerifiedDeal(
        id=d.id,
        vendor=d.signer,
        circle=d.message.circle,
        certificate=c.id,
        unit_price=d.message.unit_price,
        currency=d.message.currency,
        total=d.message.total,
        members=frozenset(members),
        created=d.message.created,
    )


_Z2 = Fraction(196, 100) ** 2
_SCALE = 10**9


def wilson_lower_ppm(successes: Fraction | int, trials: int) -> int:
    """Wilson score lower bound (z = 1.96) of a success share, in parts per million.

    ``floor(1e6 * (2s + z^2 - R) / (2 (n + z^2)))``, clamped at 0, where
    ``R = ceil(1e9 * sqrt(z^2 (z^2 + 4 s (n - s) / n))) / 1e9`` (rounding the
    root up keeps the bound a lower bound). 0 when there are no trials.
    """
    if trials < 0 or not 0 <= successes <= trials:
        raise RelationshipError(
            "wilson_lower_ppm needs 0 <= successes <= trials", reason="out-of-range"
        )
    if trials == 0:
        return 0
    s = Fraction(successes)
    inner = _Z2 * (_Z2 + 4 * s * (trials - s) / trials) * _SCALE**2
    whole = math.ceil(inner)
    root = math.isqrt(whole)
    if root * root < whole:
        root += 1
    lower = (2 * s + _Z2 - Fraction(root, _SCALE)) / (2 * (trials + _Z2))
    return max(0, math.floor(lower * 1_000_000))


@dataclass(frozen=True, slots=True, kw_only=True)
class Reputation:
    """A vendor's record, from verified deals and members' receipts only."""

    vendor: bytes
    """The vendor's key."""
    deals: int
    """Deals the vendor closed (among those given)."""
    receipts: int
    """Receipts counted: at most one per member per deal."""
    fulfilled: int
    """Counted receipts saying "yes"."""
    partly: int
    """Counted receipts saying "partly"."""
    unfulfilled: int
    """Counted receipts saying "no"."""
    rating_total: int
    """Sum of the counted ratings (1..5 each)."""
    ignored: tuple[tuple[str, int], ...]
    """(reason, count) for the receipts that counted for nothing, sorted by reason."""

    @property
    def share_fulfilled(self) -> Fraction | None:
        """Fulfilled share of the receipts ("partly" counts half), or None without receipts."""
        if not self.receipts:
            return None
        return (self.fulfilled + Fraction(self.partly, 2)) / self.receipts

    @property
    def mean_rating(self) -> Fraction | None:
        """Mean rating, or None without receipts."""
        return Fraction(self.rating_total, self.receipts) if self.receipts else None

    @property
    def score(self) -> int:
        """Wilson lower bound of the fulfilled share, in parts per million (0 when unknown)."""
        return wilson_lower_ppm(self.fulfilled + Fraction(self.partly, 2), self.receipts)


def vendor_reputation(
    vendor: bytes, deals: Iterable[VerifiedDeal], receipts: Iterable[bytes]
) -> Reputation:
    """The reputation of ``vendor`` from a set of deals and a set of receipt envelopes.

    Deals by other vendors are skipped; receipts that do not count are tallied
    in :attr:`Reputation.ignored` under "invalid", "bad-signature",
    "unknown-deal", "wrong-vendor", "not-a-member", "duplicate" (the same
    envelope twice) or "superseded" (the member's later receipt counts).
    """
    own = {d.id: d for d in deals if d.vendor == vendor}
    ignored: dict[str, int] = {}
    latest: dict[tuple[bytes, bytes], Envelope[Receipt]] = {}
    seen: set[bytes] = set()

    def ignore(reason: str) -> None:
        ignored[reason] = ignored.get(reason, 0) + 1

    for data in receipts:
        try:
            envelope = decode(data)
        except BadSignature:
            ignore("bad-signature")
            continue
        except InvalidMessage:
            ignore("invalid")
            continue
        message = envelope.message
        if not isinstance(message, Receipt):
            ignore("invalid")
            continue
        if envelope.id in seen:
            ignore("duplicate")
            continue
        seen.add(envelope.id)
        if message.vendor != vendor:
            ignore("wrong-vendor")
            continue
        deal = own.get(message.deal)
        if deal is None:
            ignore("unknown-deal")
            continue
        if envelope.signer not in deal.members:
            ignore("not-a-member")
            continue
        key = (deal.id, envelope.signer)
        before = latest.get(key)
        if before is not None:
            ignore("superseded")
            if (before.message.created, before.id) > (message.created, envelope.id):
                continue
        latest[key] = envelope  # type: ignore[assignment]
    counted = [e.message for e in latest.values()]
    return Reputation(
        vendor=vendor,
        deals=len(own),
        receipts=len(counted),
        fulfilled=sum(1 for r in counted if r.fulfilled == "yes"),
        partly=sum(1 for r in counted if r.fulfilled == "partly"),
        unfulfilled=sum(1 for r in counted if r.fulfilled == "no"),
        rating_total=sum(r.rating for r in counted),
        ignored=tuple(sorted(ignored.items())),
    )


def verify_referral(referral: bytes, offer: bytes | None = None) -> Envelope[Referral]:
    """Check a vendor's referral and, if given, the offer it points to; raise unless they fit.

    A referral is the referrer's signed word, so it needs no trust in whoever
    relays it; the offer, when named, must be the referred vendor's own, for
    the same circle.
    """
    envelope = decode_as(referral, Referral)
    body = envelope.message
    if body.vendor == envelope.signer:
        raise RelationshipError("a vendor cannot refer a circle to itself", reason="self-referral")
    if body.offer is None:
        if offer is not None:
            raise RelationshipError("the referral names no offer", reason="offer-mismatch")
        return envelope
    if offer is None:
        return envelope
    named = decode_as(offer, Offer)
    if (named.id, named.signer, named.message.circle) != (body.offer, body.vendor, body.circle):
        raise RelationshipError(
            "the offer is not the one the referral names, by that vendor, for that circle",
            reason="offer-mismatch",
        )
    return envelope
