"""Loyalty tiers: a member proves earlier fulfilled deals with a vendor.

Theory of operation: an offer may carry loyalty tiers ("members with k earlier
deals pay this"). The proof is made of records the vendor itself signed: for
each earlier deal, the deal envelope (the vendor's signature), the
certificate it countersigns, and the member's own pledge that the certificate
counts. :func:`verify_loyalty` checks every link with :func:`verify_deal`, so
it trusts neither the member nor whoever relays the proof. Distinct deals
count once each; a deal any receipt of the member's own reports as not
fulfilled ("no") does not count, and neither does a deal signed after the
offer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ._envelope import decode, decode_as
from ._errors import InvalidMessage
from ._messages import LoyaltyTier, Offer, Receipt
from ._reputation import RelationshipError, verify_deal

__all__ = ["DealProof", "LoyaltyError", "verify_loyalty"]


class LoyaltyError(RelationshipError):
    """A loyalty claim that does not hold; ``reason`` says why.

    Reasons: "wrong-vendor", "not-a-member", "later-deal", "not-enough-deals",
    "no-loyalty", and those of :class:`RelationshipError` for broken records.
    """

    reason = "loyalty-error"


@dataclass(frozen=True, slots=True, kw_only=True)
class DealProof:
    """One earlier deal, with what shows the member took part."""

    deal: bytes
    """The deal envelope the vendor signed."""
    certificate: bytes
    """The certificate envelope the deal countersigns."""
    pledge: bytes
    """The member's pledge envelope the certificate counts."""


def verify_loyalty(
    offer: bytes,
    member: bytes,
    proofs: Iterable[DealProof],
    *,
    receipts: Iterable[bytes] = (),
) -> LoyaltyTier:
    """The best loyalty tier of ``offer`` that ``member`` earns with ``proofs``.

    ``receipts`` are any receipts the verifier holds: the member's own "no"
    for a deal takes that deal out of the count. Raises LoyaltyError (or the
    decoding error of a broken envelope) when the claim does not hold.
    """
    envelope = decode_as(offer, Offer)
    body = envelope.message
    if not body.loyalty:
        raise LoyaltyError("this offer has no loyalty tiers", reason="no-loyalty")
    unfulfilled: set[bytes] = set()
    for data in receipts:
        try:
            receipt = decode(data)
        except InvalidMessage:
            continue  # a receipt that does not verify says nothing, either way
        message = receipt.message
        if isinstance(message, Receipt) and receipt.signer == member and message.fulfilled == "no":
            unfulfilled.add(message.deal)
    deals: set[bytes] = set()
    for proof in proofs:
        deal = verify_deal(proof.deal, proof.certificate, (proof.pledge,))
        if deal.vendor != envelope.signer:
            raise LoyaltyError("a proof deal was signed by another vendor", reason="wrong-vendor")
        if member not in deal.members:
            raise LoyaltyError("a proof pledge is not the member's", reason="not-a-member")
        if deal.created >= body.created:
            raise LoyaltyError("a proof deal is not earlier than the offer", reason="later-deal")
        if deal.id not in unfulfilled:
            deals.add(deal.id)
    earned = [tier for tier in body.loyalty if tier.deals <= len(deals)]
    if not earned:
        fewest = min(tier.deals for tier in body.loyalty)
        raise LoyaltyError(
            f"{len(deals)} earlier fulfilled deals proven; the first loyalty tier needs {fewest}",
            reason="not-enough-deals",
        )
    return min(earned, key=lambda tier: (tier.unit_price, tier.deals))
