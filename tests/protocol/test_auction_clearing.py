"""The mandate, the auction and the circle state compute one clearing.

An auction's winner is worth nothing if the circle cannot clear it: the
mandate's clearing price of every offer must be the one ``CircleState`` gives
that offer with the same live pledges (the fill stops at the first pledge
past the capacity, tolerance is drawn to the need, a relaxed circle settles
for a smaller tier), and the winner must clear in the state at the price it
won with.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    SMALLER_TIER_WINDOW,
    CircleState,
    Entry,
    Envelope,
    Identity,
    InvalidField,
    Mandate,
    Offer,
    Pledge,
    QuoteRequest,
    Tier,
    rank_offers,
    seal,
)

from .test_circle import DEADLINE, MEMBERS, T0, charter, pledge

VENDORS = [Identity.from_seed(bytes([60 + i]) * 32) for i in range(4)]
NEGOTIATOR = Identity.from_seed(b"\x05" * 32)
RESPOND_BY = T0 + 200


def quote_request(circle: bytes) -> Envelope[QuoteRequest]:
    return seal(
        QuoteRequest(
            circle=circle,
            vendor=None,
            product="olive oil",
            quantity=1,
            currency="EUR",
            respond_by=RESPOND_BY,
            deadline=RESPOND_BY + 100,
            max_rounds=4,
            created=T0 + 1,
        ),
        NEGOTIATOR,
    )


def offer_for(
    circle: bytes,
    tiers: list[tuple[int, int]],
    capacity: int,
    *,
    vendor: Identity = VENDORS[0],
    in_reply_to: bytes | None = None,
) -> Envelope[Offer]:
    return seal(
        Offer(
            circle=circle,
            product="olive oil",
            currency="EUR",
            list_price=5000,
            tiers=tuple(Tier(min_quantity=q, unit_price=p) for q, p in tiers),
            capacity=capacity,
            valid_until=DEADLINE + SMALLER_TIER_WINDOW + 10,
            terms="",
            loyalty=(),
            in_reply_to=in_reply_to,
            created=T0 + 5,
        ),
        vendor,
    )


@st.composite
def tier_lists(draw: st.DrawFn) -> tuple[list[tuple[int, int]], int]:
    """Tiers (increasing minimum, decreasing price) and a capacity at or above the first minimum."""
    count = draw(st.integers(1, 3))
    mins = sorted(draw(st.sets(st.integers(1, 25), min_size=count, max_size=count)))
    prices = sorted(
        draw(st.sets(st.integers(90, 210), min_size=count, max_size=count)), reverse=True
    )
    capacity = draw(st.integers(mins[0], 40))
    return list(zip(mins, prices, strict=True)), capacity


@st.composite
def circles(draw: st.DrawFn) -> dict[str, Any]:
    """A charter, its members' pledges (quantity, max price, tolerance, created) and a time."""
    target = draw(st.integers(1, 20))
    on_miss = draw(st.sampled_from(["expire", "smaller-tier"]))
    rows = draw(
        st.lists(
            st.tuples(
                st.integers(1, 10),
                st.sampled_from([100, 110, 120, 150, 200]),
                st.integers(0, 4),
                st.integers(T0 + 10, T0 + 13),
            ),
            max_size=7,
        )
    )
    # Before the deadline, or inside the smaller-tier window after it (a circle
    # that expires at its deadline clears nothing after it, whatever its pledges).
    now = draw(st.sampled_from([T0 + 100, DEADLINE + 10])) if on_miss != "expire" else T0 + 100
    return {"target": target, "on_miss": on_miss, "rows": rows, "now": now}


def pledges_of(spec: dict[str, Any]) -> tuple[Envelope[Any], list[Envelope[Pledge]]]:
    circle = charter(target=spec["target"], on_miss=spec["on_miss"])
    pledges = [
        pledge(circle, MEMBERS[i], quantity=q, max_price=p, tolerance=t, created=c)
        for i, (q, p, t, c) in enumerate(spec["rows"])
    ]
    return circle, pledges


def test_a_winner_the_circle_cannot_clear_loses_to_one_it_can() -> None:
    """The issue's example: 10 @ 1.00 with capacity 10 used to beat 10 @ 1.10 with capacity 15.

    Pledges 8 @ 2.00, 5 @ 1.50, 2 @ 1.20 with target 10: the fill admits 8,
    then stops at the 5 that does not fit the capacity of 10, so the cheaper
    offer never clears; the dearer one, with room for all 15, does.
    """
    circle = charter(target=10)
    pledges = [
        pledge(circle, MEMBERS[0], quantity=8, max_price=200),
        pledge(circle, MEMBERS[1], quantity=5, max_price=150),
        pledge(circle, MEMBERS[2], quantity=2, max_price=120),
    ]
    rfq = quote_request(circle.id)
    cheap = offer_for(circle.id, [(10, 100)], 10, vendor=VENDORS[0], in_reply_to=rfq.id)
    roomy = offer_for(circle.id, [(10, 110)], 15, vendor=VENDORS[1], in_reply_to=rfq.id)
    mandate = Mandate.from_pledges(pledges, target=10)
    assert mandate.clearing_price(cheap.message) is None
    assert mandate.clearing_price(roomy.message) == 110
    result = rank_offers(rfq.data, [cheap.data, roomy.data], mandate=mandate)
    assert result.winner is not None
    assert (result.winner.vendor, result.winner.clearing_price) == (VENDORS[1].public_key, 110)
    assert result.refused == ((cheap.id, "does-not-clear"),)
    state = CircleState.from_envelopes(circle, [*pledges, roomy], now=T0 + 100)
    assert state.best_offer is not None and state.best_offer.unit_price == 110
    alone = CircleState.from_envelopes(circle, [*pledges, cheap], now=T0 + 100)
    assert alone.best_offer is None


@settings(max_examples=300, deadline=None)
@given(circles(), tier_lists())
def test_the_mandate_clears_every_offer_as_the_circle_state_does(
    spec: dict[str, Any], terms: tuple[list[tuple[int, int]], int]
) -> None:
    circle, pledges = pledges_of(spec)
    offer = offer_for(circle.id, *terms)
    state = CircleState.from_envelopes(circle, [*pledges, offer], now=spec["now"])
    mandate = Mandate.from_state(state)
    assert mandate.clearing(offer.message, offer_id=offer.id) == state.best_offer
    expected = None if state.best_offer is None else state.best_offer.unit_price
    assert mandate.clearing_price(offer.message) == expected
    # Built from the envelopes alone it is the same mandate.
    assert mandate == Mandate.from_pledges(pledges, target=spec["target"], relaxed=mandate.relaxed)


@settings(max_examples=200, deadline=None)
@given(circles(), st.lists(tier_lists(), min_size=1, max_size=4))
def test_the_auction_winner_always_clears_at_the_price_it_won_with(
    spec: dict[str, Any], quotes: list[tuple[list[tuple[int, int]], int]]
) -> None:
    spec = {**spec, "now": T0 + 100}
    circle, pledges = pledges_of(spec)
    rfq = quote_request(circle.id)
    offers = [
        offer_for(circle.id, tiers, capacity, vendor=VENDORS[i], in_reply_to=rfq.id)
        for i, (tiers, capacity) in enumerate(quotes)
    ]
    before = CircleState.from_envelopes(circle, pledges, now=RESPOND_BY - 1)
    result = rank_offers(rfq.data, [o.data for o in offers], mandate=Mandate.from_state(before))
    for bid in result.ranking:
        winner = next(o for o in offers if o.id == bid.offer)
        state = CircleState.from_envelopes(circle, [*pledges, winner], now=RESPOND_BY)
        assert state.best_offer is not None
        assert state.best_offer.unit_price == bid.clearing_price
    # An offer refused as not clearing does not clear in the state either.
    for offer_id, reason in result.refused:
        assert reason == "does-not-clear"
        loser = next(o for o in offers if o.id == offer_id)
        state = CircleState.from_envelopes(circle, [*pledges, loser], now=RESPOND_BY)
        assert state.best_offer is None


def test_after_the_deadline_a_smaller_tier_circle_clears_as_its_state_does() -> None:
    """Past the deadline a "smaller-tier" circle settles for a smaller tier: so does its mandate."""
    circle = charter(target=20, on_miss="smaller-tier")
    pledges = [
        pledge(circle, MEMBERS[0], quantity=6, max_price=200, tolerance=2),
        pledge(circle, MEMBERS[1], quantity=5, max_price=150),
    ]
    offer = offer_for(circle.id, [(5, 180), (12, 140), (30, 100)], 40)
    before = CircleState.from_envelopes(circle, [*pledges, offer], now=T0 + 100)
    after = CircleState.from_envelopes(circle, [*pledges, offer], now=DEADLINE + 10)
    assert (
        before.best_offer is None
        and Mandate.from_state(before).clearing_price(offer.message) is None
    )
    relaxed = Mandate.from_state(after)
    assert relaxed.relaxed
    clearing = relaxed.clearing(offer.message, offer_id=offer.id)
    assert clearing == after.best_offer
    # 11 units pledged at 1.40 or more, plus the first member's 2 of tolerance: 13 >= 12.
    assert clearing is not None and (clearing.unit_price, clearing.total) == (140, 12)
    assert clearing.smaller_tier


def test_a_mandate_refuses_bad_pledges_with_a_typed_error() -> None:
    good = Entry(pledge=b"\x01" * 32, quantity=2, max_price=100, tolerance=0, created=T0)
    for bad in (
        {"pledges": (good, good)},  # the same pledge twice
        {"pledges": (Entry(pledge=b"\x02", quantity=0, max_price=100, tolerance=0, created=0),)},
        {"pledges": (Entry(pledge=b"\x03", quantity=1, max_price=0, tolerance=0, created=0),)},
        {"pledges": ((100, 2),)},  # a demand pair is not a pledge: use from_demand
        {"target": 0},
    ):
        with pytest.raises(InvalidField):
            Mandate(**{"target": 1, "pledges": (good,), **bad})  # type: ignore[arg-type]
    with pytest.raises(InvalidField):
        Mandate.from_demand([(100, 0)], target=1)
    # Withdrawals (quantity 0) are not pledges of the mandate.
    circle = charter()
    gone = pledge(circle, MEMBERS[0], quantity=0)
    assert Mandate.from_pledges([gone], target=1).pledges == ()
