"""Loyalty proofs: earlier deals the vendor signed, checked without trusting the member."""

from __future__ import annotations

import pytest

from protocol import (
    BadSignature,
    DealProof,
    Identity,
    LoyaltyError,
    LoyaltyTier,
    Offer,
    RelationshipError,
    Tier,
    seal,
    verify_loyalty,
)

from .test_negotiation_helpers import STRANGER, T0, VENDOR, closed_deal, members, receipt

MEMBER = members(1, 5)[0]
OTHERS = members(3, 6)


def loyal_offer(*, vendor: Identity = VENDOR, created: int = T0 + 10_000) -> bytes:
    return seal(
        Offer(
            circle=b"\x22" * 32,
            product="olive oil, 5 l",
            currency="EUR",
            list_price=1500,
            tiers=(Tier(min_quantity=1, unit_price=1000),),
            capacity=500,
            valid_until=created + 100,
            terms="",
            loyalty=(
                LoyaltyTier(deals=2, unit_price=950),
                LoyaltyTier(deals=3, unit_price=900),
            ),
            in_reply_to=None,
            created=created,
        ),
        vendor,
    ).data


def proof(circle_byte: int, *, vendor: Identity = VENDOR, created: int = T0 + 50) -> DealProof:
    deal, certificate, pledges = closed_deal(
        [MEMBER, *OTHERS], vendor=vendor, circle=bytes([circle_byte]) * 32, created=created
    )
    return DealProof(deal=deal, certificate=certificate, pledge=pledges[0])


def test_earned_tiers() -> None:
    proofs = [proof(i) for i in range(1, 4)]
    key = MEMBER.public_key
    assert verify_loyalty(loyal_offer(), key, proofs[:2]).unit_price == 950
    assert verify_loyalty(loyal_offer(), key, proofs).unit_price == 900
    # The same deal twice is one deal.
    with pytest.raises(LoyaltyError) as info:
        verify_loyalty(loyal_offer(), key, [proofs[0], proofs[0]])
    assert info.value.reason == "not-enough-deals"


def test_someone_elses_deals_prove_nothing() -> None:
    proofs = [proof(i) for i in range(1, 4)]
    with pytest.raises(LoyaltyError) as info:
        verify_loyalty(loyal_offer(), STRANGER.public_key, proofs)
    assert info.value.reason == "not-a-member"
    # A deal the member was not in, shown with a real participant's pledge.
    deal, certificate, pledges = closed_deal(OTHERS, circle=b"\x30" * 32)
    theirs = DealProof(deal=deal, certificate=certificate, pledge=pledges[0])
    with pytest.raises(LoyaltyError) as info:
        verify_loyalty(loyal_offer(), MEMBER.public_key, [proofs[0], theirs])
    assert info.value.reason == "not-a-member"


def test_deals_with_another_vendor_or_after_the_offer_do_not_count() -> None:
    with pytest.raises(LoyaltyError) as info:
        verify_loyalty(loyal_offer(), MEMBER.public_key, [proof(1), proof(2, vendor=STRANGER)])
    assert info.value.reason == "wrong-vendor"
    with pytest.raises(LoyaltyError) as info:
        verify_loyalty(loyal_offer(), MEMBER.public_key, [proof(1), proof(2, created=T0 + 20_000)])
    assert info.value.reason == "later-deal"


def test_forged_or_mismatched_records_are_refused() -> None:
    good = proof(1)
    forged = bytearray(good.deal)
    forged[-1] ^= 1
    with pytest.raises(BadSignature):
        verify_loyalty(
            loyal_offer(),
            MEMBER.public_key,
            [DealProof(deal=bytes(forged), certificate=good.certificate, pledge=good.pledge)],
        )
    other = proof(2)
    with pytest.raises(RelationshipError) as info:
        verify_loyalty(
            loyal_offer(),
            MEMBER.public_key,
            [DealProof(deal=good.deal, certificate=other.certificate, pledge=good.pledge)],
        )
    assert info.value.reason == "deal-mismatch"


def test_a_deal_the_member_reported_unfulfilled_does_not_count() -> None:
    proofs = [proof(1), proof(2)]
    key = MEMBER.public_key
    assert verify_loyalty(loyal_offer(), key, proofs).unit_price == 950
    said_no = receipt(proofs[0].deal, MEMBER, fulfilled="no")
    someone_said_no = receipt(proofs[0].deal, OTHERS[0], fulfilled="no")
    assert verify_loyalty(loyal_offer(), key, proofs, receipts=[someone_said_no])
    with pytest.raises(LoyaltyError) as info:
        verify_loyalty(loyal_offer(), key, proofs, receipts=[said_no])
    assert info.value.reason == "not-enough-deals"


def test_an_offer_without_loyalty_tiers() -> None:
    plain = seal(
        Offer(
            circle=b"\x22" * 32,
            product="x",
            currency="EUR",
            list_price=10,
            tiers=(Tier(min_quantity=1, unit_price=10),),
            capacity=5,
            valid_until=T0 + 2,
            terms="",
            loyalty=(),
            in_reply_to=None,
            created=T0 + 1,
        ),
        VENDOR,
    ).data
    with pytest.raises(LoyaltyError) as info:
        verify_loyalty(plain, MEMBER.public_key, [proof(1)])
    assert info.value.reason == "no-loyalty"
