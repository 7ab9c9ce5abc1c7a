"""Verified deals and reputation: only members' receipts count, once each."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    BadSignature,
    Referral,
    RelationshipError,
    envelope_id,
    seal,
    vendor_reputation,
    verify_deal,
    verify_referral,
    wilson_lower_ppm,
)

from .test_negotiation_helpers import (
    CIRCLE,
    STRANGER,
    T0,
    VENDOR,
    closed_deal,
    members,
    offer,
    pledged,
    receipt,
)

PEOPLE = members(4)


def test_verify_deal_learns_the_members() -> None:
    deal, certificate, pledges = closed_deal(PEOPLE)
    checked = verify_deal(deal, certificate, pledges)
    assert checked.members == {m.public_key for m in PEOPLE}
    assert (checked.vendor, checked.unit_price, checked.total) == (VENDOR.public_key, 900, 40)
    assert verify_deal(deal, certificate, pledges[:1]).members == {PEOPLE[0].public_key}


def test_verify_deal_refuses_records_that_do_not_fit() -> None:
    deal, certificate, pledges = closed_deal(PEOPLE)
    other_deal, other_certificate, _ = closed_deal(PEOPLE, price=800)
    with pytest.raises(RelationshipError) as info:
        verify_deal(deal, other_certificate, pledges)
    assert info.value.reason == "deal-mismatch"
    with pytest.raises(RelationshipError) as info:
        verify_deal(deal, certificate, [pledged(STRANGER)])
    assert info.value.reason == "not-allocated"
    forged = bytearray(deal)
    forged[-1] ^= 1
    with pytest.raises(BadSignature):
        verify_deal(bytes(forged), certificate, pledges)
    assert other_deal != deal


def test_reputation_counts_members_once_and_ignores_the_rest() -> None:
    deal, certificate, pledges = closed_deal(PEOPLE)
    checked = verify_deal(deal, certificate, pledges)
    good = [receipt(deal, m, fulfilled="yes", rating=5) for m in PEOPLE[:2]]
    forged = bytearray(receipt(deal, PEOPLE[2], fulfilled="no", rating=1))
    forged[-1] ^= 1
    receipts = [
        *good,
        good[0],  # the same envelope again
        receipt(deal, PEOPLE[3], fulfilled="no", rating=1, created=1),  # superseded below
        receipt(deal, PEOPLE[3], fulfilled="partly", rating=3, created=2),
        receipt(deal, STRANGER, fulfilled="no", rating=1),  # not a member
        bytes(forged),
        receipt(b"\x01" * 40, PEOPLE[0]),  # another deal
        receipt(deal, PEOPLE[0], vendor=STRANGER),  # names another vendor
        b"\x93garbage",
    ]
    rep = vendor_reputation(VENDOR.public_key, [checked], receipts)
    assert (rep.deals, rep.receipts, rep.fulfilled, rep.partly, rep.unfulfilled) == (1, 3, 2, 1, 0)
    assert rep.rating_total == 13 and rep.mean_rating == Fraction(13, 3)
    assert rep.share_fulfilled == Fraction(5, 6)
    assert dict(rep.ignored) == {
        "bad-signature": 1,
        "duplicate": 1,
        "invalid": 1,
        "not-a-member": 1,
        "superseded": 1,
        "unknown-deal": 1,
        "wrong-vendor": 1,
    }
    # Order never matters: the latest receipt of a member wins whatever arrives first.
    assert vendor_reputation(VENDOR.public_key, [checked], receipts[::-1]) == rep


def test_a_strangers_review_counts_for_nothing() -> None:
    deal, certificate, pledges = closed_deal(PEOPLE)
    checked = verify_deal(deal, certificate, pledges)
    honest = vendor_reputation(VENDOR.public_key, [checked], [receipt(deal, PEOPLE[0])])
    attacked = vendor_reputation(
        VENDOR.public_key,
        [checked],
        [receipt(deal, PEOPLE[0])] + [receipt(deal, s, fulfilled="no") for s in members(20, 9)],
    )
    assert attacked.score == honest.score and attacked.receipts == 1
    assert dict(attacked.ignored) == {"not-a-member": 20}


def test_other_vendors_deals_are_not_counted() -> None:
    deal, certificate, pledges = closed_deal(PEOPLE, vendor=STRANGER)
    rep = vendor_reputation(VENDOR.public_key, [verify_deal(deal, certificate, pledges)], [])
    assert (rep.deals, rep.receipts, rep.score, rep.mean_rating) == (0, 0, 0, None)


def test_wilson_known_values() -> None:
    # Reference values from the float formula (z = 1.96).
    def reference(s: float, n: int) -> float:
        z = 1.96
        p = s / n
        centre = p + z * z / (2 * n)
        spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return (centre - spread) / (1 + z * z / n)

    for s, n in [(1, 1), (5, 10), (9, 10), (95, 100), (0, 3), (10, 10), (999, 1000)]:
        exact = wilson_lower_ppm(s, n)
        assert abs(exact - reference(s, n) * 1e6) <= 2, (s, n)
    assert wilson_lower_ppm(0, 0) == 0
    with pytest.raises(RelationshipError):
        wilson_lower_ppm(3, 2)


@given(st.integers(1, 500), st.data())
def test_wilson_is_a_bound_that_grows_with_evidence(n: int, data: st.DataObject) -> None:
    s = data.draw(st.integers(0, n))
    low = wilson_lower_ppm(s, n)
    assert 0 <= low <= 1_000_000 * s // n
    if s < n:
        assert wilson_lower_ppm(s + 1, n) >= low
    # The same share on more trials is a tighter, so higher, bound.
    assert wilson_lower_ppm(2 * s, 2 * n) >= low


def test_a_referral_points_to_the_other_vendors_own_offer() -> None:
    competitor = members(1, 30)[0]
    their_offer = offer(None, 800, now=T0, signer=competitor)

    def referral(vendor: bytes, offer_id: bytes | None) -> bytes:
        note = "they have it cheaper"
        body = Referral(circle=CIRCLE, vendor=vendor, offer=offer_id, note=note, created=T0)
        return seal(body, VENDOR).data

    good = referral(competitor.public_key, envelope_id(their_offer))
    checked = verify_referral(good, their_offer)
    assert (checked.signer, checked.message.vendor) == (VENDOR.public_key, competitor.public_key)
    assert verify_referral(referral(competitor.public_key, None)).message.offer is None
    cases = [
        (referral(VENDOR.public_key, None), None, "self-referral"),
        (referral(STRANGER.public_key, envelope_id(their_offer)), their_offer, "offer-mismatch"),
        (referral(competitor.public_key, b"\x01" * 32), their_offer, "offer-mismatch"),
        (referral(competitor.public_key, None), their_offer, "offer-mismatch"),
    ]
    for data, named, reason in cases:
        with pytest.raises(RelationshipError) as info:
            verify_referral(data, named)
        assert info.value.reason == reason
