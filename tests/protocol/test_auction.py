"""Reverse auction: every member ranks the same offers the same way."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    MAX_AUCTION_BIDS,
    Agreement,
    AuctionError,
    Identity,
    InvalidField,
    Mandate,
    Negotiation,
    NegotiationState,
    ReverseAuction,
    Tier,
    envelope_id,
    rank_offers,
    seal,
    vendor_reputation,
    verify_deal,
)
from protocol import Accept as AcceptMessage

from .test_negotiation_helpers import NEGOTIATOR, T0, closed_deal, members, offer, receipt, rfq

VENDORS = members(5, 20)
REQUEST = rfq()
SESSION = envelope_id(REQUEST)
# 100 units at up to 1000, 50 more at up to 800, 100 more at up to 600.
DEMAND = Mandate.from_demand(((1000, 100), (800, 50), (600, 100)), target=100)


def quote(vendor: Identity, *tiers: tuple[int, int], **kw: object) -> bytes:
    kw.setdefault("now", T0 + 10)
    return offer(
        SESSION,
        1,
        signer=vendor,
        tiers=tuple(Tier(min_quantity=q, unit_price=p) for q, p in tiers),
        **kw,  # type: ignore[arg-type]
    )


def test_lowest_clearing_price_wins() -> None:
    offers = [
        quote(VENDORS[0], (1, 950)),
        # 700 needs 300 units, which the pledges do not reach: it clears at 790.
        quote(VENDORS[1], (1, 990), (120, 790), (300, 700)),
        quote(VENDORS[2], (1, 990), (150, 780)),
    ]
    result = rank_offers(REQUEST, offers, mandate=DEMAND)
    assert [(b.vendor, b.clearing_price) for b in result.ranking] == [
        (VENDORS[2].public_key, 780),
        (VENDORS[1].public_key, 790),
        (VENDORS[0].public_key, 950),
    ]
    assert result.winner == result.ranking[0] and result.refused == ()


def test_ties_go_to_reputation_then_to_the_key() -> None:
    offers = [quote(v, (1, 900)) for v in VENDORS[:3]]
    plain = rank_offers(REQUEST, offers, mandate=DEMAND)
    assert [b.vendor for b in plain.ranking] == sorted(v.public_key for v in VENDORS[:3])
    people = members(4, 40)
    best = max(VENDORS[:3], key=lambda v: v.public_key)
    deal, certificate, pledges = closed_deal(people, vendor=best)
    rep = vendor_reputation(
        best.public_key,
        [verify_deal(deal, certificate, pledges)],
        [receipt(deal, m, vendor=best) for m in people],
    )
    assert rep.score > 0
    ranked = rank_offers(REQUEST, offers, mandate=DEMAND, reputations={best.public_key: rep})
    assert ranked.winner is not None and ranked.winner.vendor == best.public_key
    assert ranked.winner.score == rep.score


def test_ineligible_offers_are_refused_with_a_reason() -> None:
    good = quote(VENDORS[0], (1, 900))
    forged = bytearray(quote(VENDORS[1], (1, 100)))
    forged[-1] ^= 1
    late = quote(VENDORS[2], (1, 100), now=T0 + 100)
    lapsing = quote(VENDORS[3], (1, 100), valid_for=50)
    too_dear = quote(VENDORS[4], (1, 1001))
    elsewhere = offer(b"\x05" * 32, 100, now=T0 + 10, signer=VENDORS[4])
    result = rank_offers(
        REQUEST, [good, bytes(forged), late, lapsing, too_dear, elsewhere], mandate=DEMAND
    )
    assert result.winner is not None and result.winner.vendor == VENDORS[0].public_key
    assert sorted(reason for _, reason in result.refused) == [
        "bad-signature",
        "does-not-clear",
        "lapsed",
        "too-late",
        "wrong-request",
    ]


def test_each_vendor_bids_its_best_offer() -> None:
    offers = [quote(VENDORS[0], (1, 900)), quote(VENDORS[0], (1, 850), now=T0 + 11)]
    result = rank_offers(REQUEST, offers, mandate=DEMAND)
    assert len(result.ranking) == 1 and result.ranking[0].clearing_price == 850


def test_no_eligible_offer_means_no_winner() -> None:
    result = rank_offers(REQUEST, [quote(VENDORS[0], (1, 5000))], mandate=DEMAND)
    assert (result.winner, result.ranking) == (None, ())


@given(st.permutations(range(8)), st.lists(st.integers(500, 1100), min_size=8, max_size=8))
def test_every_member_computes_the_same_winner(order: list[int], prices: list[int]) -> None:
    offers = [quote(VENDORS[i % 5], (1, p), now=T0 + 10 + i) for i, p in enumerate(prices)]
    first = rank_offers(REQUEST, offers, mandate=DEMAND)
    again = rank_offers(REQUEST, [offers[i] for i in order], mandate=DEMAND)
    assert first == again
    eligible = [p for p in prices if p <= 1000]
    if eligible:
        assert first.winner is not None and first.winner.clearing_price == min(eligible)


def test_the_collector_closes_at_respond_by() -> None:
    auction = ReverseAuction(REQUEST, mandate=DEMAND)
    assert auction.get_timer() == T0 + 100
    taken = auction.receive(quote(VENDORS[0], (1, 900)), T0 + 10)
    assert (taken.bid.clearing_price, taken.evicted) == (900, ())
    with pytest.raises(AuctionError) as info:
        auction.receive(quote(VENDORS[1], (1, 1200)), T0 + 20)
    assert info.value.reason == "does-not-clear"
    with pytest.raises(AuctionError) as info:
        auction.result(T0 + 99)
    assert info.value.reason == "still-open"
    with pytest.raises(AuctionError) as info:
        auction.receive(quote(VENDORS[2], (1, 800)), T0 + 100)
    assert info.value.reason == "too-late"
    result = auction.result(T0 + 100)
    assert result.winner is not None and result.winner.vendor == VENDORS[0].public_key
    assert auction.offers == (quote(VENDORS[0], (1, 900)),)


def test_the_winners_session_goes_on_after_the_auction() -> None:
    # One negotiation per answering vendor; the winner's continues after respond_by.
    offers = {v.public_key: quote(v, (1, 900 - 10 * i)) for i, v in enumerate(VENDORS[:3])}
    sessions = {key: Negotiation(REQUEST, vendor=key, mandate=DEMAND) for key in offers}
    for key, data in offers.items():
        sessions[key].receive(data, T0 + 10)
    result = rank_offers(REQUEST, offers.values(), mandate=DEMAND)
    assert result.winner is not None
    for session in sessions.values():
        session.handle_timer(T0 + 100)
        assert session.state is NegotiationState.CIRCLE_TO_MOVE
    chosen = sessions[result.winner.vendor]
    standing = chosen.standing
    assert standing is not None and standing.unit_price == result.winner.clearing_price == 880
    accept = AcceptMessage(
        circle=chosen.request.message.circle,
        accepted=standing.id,
        unit_price=880,
        quantity=chosen.request.message.quantity,
        currency="EUR",
        created=T0 + 101,
    )
    done = chosen.receive(seal(accept, NEGOTIATOR).data, T0 + 101)
    assert isinstance(done, Agreement) and done.vendor == result.winner.vendor


# ------------------------------------------------------------------ caps

THROWAWAY = [Identity.from_seed(i.to_bytes(4, "big") * 8) for i in range(1, MAX_AUCTION_BIDS + 11)]


def test_throwaway_bids_cannot_keep_out_a_better_vendor() -> None:
    """More than MAX_AUCTION_BIDS worse bids from throwaway keys, then a real vendor: it wins."""
    spam = [quote(key, (1, 990)) for key in THROWAWAY]
    real = quote(VENDORS[0], (1, 900))
    auction = ReverseAuction(REQUEST, mandate=DEMAND)
    # Among bids of one price the smaller vendor key ranks first: each spam bid
    # past the cap is refused or pushes out a held one, "outranked" either way.
    outranked = 0
    for data in spam:
        try:
            outranked += len(auction.receive(data, T0 + 20).evicted)
        except AuctionError as exc:
            assert exc.reason == "outranked"
            outranked += 1
    assert len(auction.offers) == MAX_AUCTION_BIDS and outranked == len(spam) - MAX_AUCTION_BIDS
    taken = auction.receive(real, T0 + 30)
    (evicted,) = taken.evicted
    assert evicted[1] == "outranked" and evicted[0] in {envelope_id(d) for d in spam}
    assert len(auction.offers) == MAX_AUCTION_BIDS
    result = auction.result(T0 + 100)
    assert result.winner is not None and result.winner.vendor == VENDORS[0].public_key
    # Members ranking every offer in their logs agree, and refuse the rest with a reason.
    everyone = rank_offers(REQUEST, [*spam, real], mandate=DEMAND)
    assert everyone.winner == result.winner and everyone.ranking == result.ranking
    assert [r for _, r in everyone.refused] == ["outranked"] * (len(spam) + 1 - MAX_AUCTION_BIDS)


def test_one_bid_per_vendor_its_best() -> None:
    first = quote(VENDORS[0], (1, 900))
    dearer = quote(VENDORS[0], (1, 950), now=T0 + 11)
    cheaper = quote(VENDORS[0], (1, 850), now=T0 + 12)
    auction = ReverseAuction(REQUEST, mandate=DEMAND)
    auction.receive(first, T0 + 20)
    assert auction.receive(first, T0 + 20).evicted == ()  # the same offer again: nothing changes
    with pytest.raises(AuctionError) as info:
        auction.receive(dearer, T0 + 21)
    assert info.value.reason == "superseded"
    taken = auction.receive(cheaper, T0 + 22)
    assert taken.evicted == ((envelope_id(first), "superseded"),)
    assert auction.offers == (cheaper,)
    ranked = rank_offers(REQUEST, [first, dearer, cheaper], mandate=DEMAND)
    assert [b.offer for b in ranked.ranking] == [envelope_id(cheaper)]
    assert sorted(ranked.refused) == sorted(
        [(envelope_id(first), "superseded"), (envelope_id(dearer), "superseded")]
    )


def test_caps_must_be_positive() -> None:
    for bad in (0, -1, True):
        with pytest.raises(InvalidField):
            ReverseAuction(REQUEST, mandate=DEMAND, max_bids=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidField):
            rank_offers(REQUEST, [], mandate=DEMAND, max_bids=bad)  # type: ignore[arg-type]


# Two offers per vendor from six vendors, some of them equal in price.
POOL = [
    quote(
        VENDORS[i % 5] if i < 10 else THROWAWAY[i], (1, 800 + 25 * ((i * 7) % 6)), now=T0 + 10 + i
    )
    for i in range(12)
]


@given(
    st.permutations(range(len(POOL))),
    st.integers(1, 12),
    st.integers(1, 5),
)
def test_the_collector_holds_the_best_bids_whatever_the_order(
    order: list[int], count: int, max_bids: int
) -> None:
    """What the collector holds is the capped ranking of the set it was handed, in any order."""
    handed = [POOL[i] for i in order[:count]]
    auction = ReverseAuction(REQUEST, mandate=DEMAND, max_bids=max_bids)
    for data in handed:
        try:
            auction.receive(data, T0 + 50)
        except AuctionError as exc:
            assert exc.reason in ("superseded", "outranked")
        assert len(auction.offers) <= max_bids
    expected = rank_offers(REQUEST, handed, mandate=DEMAND, max_bids=max_bids)
    result = auction.result(T0 + 100)
    assert (result.winner, result.ranking) == (expected.winner, expected.ranking)
    assert sorted(envelope_id(d) for d in auction.offers) == sorted(
        b.offer for b in expected.ranking
    )
