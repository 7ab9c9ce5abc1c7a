"""The negotiation machine: parties, turns, rounds, deadlines, mandate."""

from __future__ import annotations

import dataclasses

import pytest

from protocol import (
    Agreement,
    BadSignature,
    Ended,
    Mandate,
    Negotiation,
    NegotiationError,
    NegotiationState,
    Party,
    Proposal,
    Tier,
    envelope_id,
    offer_unit_price,
)
from protocol import Offer as OfferMessage

from .test_negotiation_helpers import (
    NEGOTIATOR,
    QUANTITY,
    STRANGER,
    T0,
    VENDOR,
    accept,
    counter,
    last_id,
    mandate,
    move,
    offer,
    reject,
    rfq,
    walkaway,
)

C, V = Party.CIRCLE, Party.VENDOR


def session(**changes: object) -> Negotiation:
    m = changes.pop("mandate", mandate())
    assert isinstance(m, Mandate)
    return Negotiation(rfq(**changes), vendor=VENDOR.public_key, mandate=m)  # type: ignore[arg-type]


def refuses(s: Negotiation, data: bytes, now: int, reason: str) -> None:
    before = (s.state, s.transcript, s.rounds, s.result)
    with pytest.raises(NegotiationError) as info:
        s.receive(data, now)
    assert info.value.reason == reason
    assert (s.state, s.transcript, s.rounds, s.result) == before


def test_alternating_offers_reach_an_agreement() -> None:
    s = session()
    assert (s.state, s.turn, s.get_timer()) == (NegotiationState.AWAITING_OFFER, V, T0 + 100)
    p = s.receive(move(s, V, "offer", 1200, T0 + 10), T0 + 10)
    assert isinstance(p, Proposal) and (p.party, p.unit_price, p.round) == (V, 1200, 0)
    s.receive(move(s, C, "counter", 700, T0 + 20), T0 + 20)
    s.receive(move(s, V, "counter", 950, T0 + 30), T0 + 30)
    assert (s.turn, s.rounds, s.rounds_left, s.get_timer()) == (C, 2, 4, T0 + 1000)
    done = s.receive(move(s, C, "accept", 0, T0 + 40), T0 + 40)
    assert isinstance(done, Agreement)
    assert (done.unit_price, done.quantity, done.by, done.currency) == (950, QUANTITY, C, "EUR")
    assert done.proposal == envelope_id(s.transcript[-2])
    assert (s.state, s.turn, s.result, s.is_over, s.get_timer()) == (
        NegotiationState.AGREED,
        None,
        done,
        True,
        None,
    )
    assert len(s.transcript) == 5
    refuses(s, move(s, V, "counter", 900, T0 + 50), T0 + 50, "session-over")


def test_a_copy_of_an_applied_move_is_a_duplicate() -> None:
    s = session()
    first = move(s, V, "offer", 1000, T0 + 1)
    s.receive(first, T0 + 1)
    refuses(s, first, T0 + 2, "duplicate")
    refuses(s, s.transcript[0], T0 + 2, "duplicate")


def test_only_the_two_parties_may_move() -> None:
    s = session()
    refuses(s, offer(s.session, 1000, now=T0 + 1, signer=STRANGER), T0 + 1, "not-a-party")
    s.receive(move(s, V, "offer", 1000, T0 + 1), T0 + 1)
    stranger_counter = counter(last_id(s), 1, 900, now=T0 + 2, signer=STRANGER)
    refuses(s, stranger_counter, T0 + 2, "not-a-party")
    refuses(s, walkaway(s.session, now=T0 + 2, signer=STRANGER), T0 + 2, "not-a-party")


def test_only_in_turn() -> None:
    s = session()
    refuses(s, counter(s.session, 1, 500, now=T0 + 1, signer=NEGOTIATOR), T0 + 1, "out-of-turn")
    s.receive(move(s, V, "offer", 1000, T0 + 1), T0 + 1)
    refuses(s, move(s, V, "counter", 900, T0 + 2), T0 + 2, "out-of-turn")
    refuses(s, move(s, V, "accept", 0, T0 + 2), T0 + 2, "out-of-turn")
    refuses(s, move(s, C, "offer", 900, T0 + 2), T0 + 2, "out-of-turn")


def test_a_move_must_answer_the_last_one() -> None:
    s = session()
    s.receive(move(s, V, "offer", 1000, T0 + 1), T0 + 1)
    stale = counter(s.session, 1, 800, now=T0 + 2, signer=NEGOTIATOR)
    refuses(s, stale, T0 + 2, "not-in-reply")
    skipped = counter(last_id(s), 2, 800, now=T0 + 2, signer=NEGOTIATOR)
    refuses(s, skipped, T0 + 2, "mismatch")
    wrong_price = accept(last_id(s), 999, now=T0 + 2, signer=NEGOTIATOR)
    refuses(s, wrong_price, T0 + 2, "mismatch")


def test_round_limit_leaves_only_accept_or_reject() -> None:
    s = session(max_rounds=2)
    s.receive(move(s, V, "offer", 1000, T0 + 1), T0 + 1)
    s.receive(move(s, C, "counter", 600, T0 + 2), T0 + 2)
    s.receive(move(s, V, "counter", 900, T0 + 3), T0 + 3)
    assert s.rounds_left == 0
    refuses(s, move(s, C, "counter", 700, T0 + 4), T0 + 4, "round-limit")
    ended = s.receive(move(s, C, "reject", 0, T0 + 4), T0 + 4)
    assert isinstance(ended, Ended)
    assert (ended.state, ended.by, ended.reason) == (NegotiationState.REJECTED, C, "no")


def test_the_circle_never_goes_beyond_its_pledges() -> None:
    s = session(mandate=mandate(800))
    s.receive(move(s, V, "offer", 1000, T0 + 1), T0 + 1)
    refuses(s, move(s, C, "accept", 0, T0 + 2), T0 + 2, "outside-mandate")
    refuses(s, move(s, C, "counter", 801, T0 + 2), T0 + 2, "outside-mandate")
    s.receive(move(s, C, "counter", 800, T0 + 2), T0 + 2)
    # Pledges withdrawn while the vendor thinks: its acceptance no longer binds the circle.
    s.update_mandate(mandate(700))
    refuses(s, move(s, V, "accept", 0, T0 + 3), T0 + 3, "outside-mandate")
    s.update_mandate(mandate(800))
    assert isinstance(s.receive(move(s, V, "accept", 0, T0 + 3), T0 + 3), Agreement)


def test_mandate_is_demand_at_price() -> None:
    m = Mandate.from_demand(((500, 4), (300, 6), (500, 1), (100, 50)), target=10)
    assert m.demand == ((500, 5), (300, 6), (100, 50))
    assert [m.units_at(p) for p in (501, 500, 301, 300, 100, 1)] == [0, 5, 5, 11, 61, 61]
    assert (m.ceiling(10), m.ceiling(11), m.ceiling(12), m.ceiling(9)) == (300, 300, 100, None)
    assert m.covers(300, 11) and not m.covers(301, 10) and not m.covers(100, 9)


def test_deadlines_end_the_session() -> None:
    s = session()
    assert s.handle_timer(T0 + 99) is None
    ended = s.handle_timer(T0 + 100)
    assert isinstance(ended, Ended) and (ended.state, ended.reason, ended.by) == (
        NegotiationState.EXPIRED,
        "no-offer",
        None,
    )
    s = session()
    s.receive(move(s, V, "offer", 1000, T0 + 1), T0 + 1)
    late = move(s, C, "counter", 900, T0 + 1000)
    with pytest.raises(NegotiationError) as info:
        s.receive(late, T0 + 1000)
    assert info.value.reason == "session-over"
    assert isinstance(s.result, Ended) and s.result.reason == "deadline"


def test_offers_after_respond_by_and_lapsed_proposals_are_refused() -> None:
    s = session()
    with pytest.raises(NegotiationError) as info:
        s.receive(offer(s.session, 1000, now=T0 + 100), T0 + 100)
    assert info.value.reason == "session-over" and s.state is NegotiationState.EXPIRED
    s = session()
    s.receive(offer(s.session, 1000, now=T0 + 1, valid_for=10), T0 + 1)
    refuses(s, move(s, C, "accept", 0, T0 + 11), T0 + 11, "lapsed")
    s.receive(move(s, C, "counter", 900, T0 + 11), T0 + 11)


def test_an_offer_must_quote_the_quantity() -> None:
    s = session()
    big = offer(s.session, 900, now=T0 + 1, tiers=(Tier(min_quantity=200, unit_price=900),))
    refuses(s, big, T0 + 1, "no-tier")
    small = offer(s.session, 900, now=T0 + 1, capacity=QUANTITY - 1)
    refuses(s, small, T0 + 1, "no-tier")
    tiers = (
        Tier(min_quantity=1, unit_price=1000),
        Tier(min_quantity=50, unit_price=900),
        Tier(min_quantity=101, unit_price=800),
    )
    p = s.receive(offer(s.session, 1000, now=T0 + 1, tiers=tiers), T0 + 1)
    assert isinstance(p, Proposal) and p.unit_price == 900


def test_offer_unit_price_picks_the_largest_tier_reached() -> None:
    tiers = (Tier(min_quantity=10, unit_price=50), Tier(min_quantity=20, unit_price=40))
    o = OfferMessage(
        circle=b"\0" * 32,
        product="x",
        currency="EUR",
        list_price=60,
        tiers=tiers,
        capacity=25,
        valid_until=2,
        terms="",
        loyalty=(),
        in_reply_to=None,
        created=1,
    )
    assert [offer_unit_price(o, q) for q in (9, 10, 19, 20, 25, 26)] == [
        None,
        50,
        50,
        40,
        40,
        None,
    ]


def test_walk_away_needs_no_turn_and_reject_ends() -> None:
    s = session()
    s.receive(move(s, V, "offer", 1000, T0 + 1), T0 + 1)
    ended = s.receive(walkaway(s.session, now=T0 + 2, signer=VENDOR), T0 + 2)
    assert isinstance(ended, Ended) and (ended.state, ended.by) == (
        NegotiationState.WALKED_AWAY,
        V,
    )
    s = session()
    other = walkaway(b"\x09" * 32, now=T0 + 2, signer=NEGOTIATOR)
    refuses(s, other, T0 + 2, "wrong-session")
    ended = s.receive(reject(s.session, now=T0 + 2, signer=VENDOR), T0 + 2)
    assert isinstance(ended, Ended) and ended.state is NegotiationState.REJECTED


def test_forged_moves_are_refused_before_anything_else() -> None:
    s = session()
    data = bytearray(move(s, V, "offer", 1000, T0 + 1))
    data[-1] ^= 1
    with pytest.raises(BadSignature):
        s.receive(bytes(data), T0 + 1)
    assert s.transcript == (s.transcript[0],)


def test_opening_checks() -> None:
    with pytest.raises(NegotiationError) as info:
        Negotiation(rfq(vendor=STRANGER.public_key), vendor=VENDOR.public_key, mandate=mandate())
    assert info.value.reason == "not-a-party"
    with pytest.raises(NegotiationError) as info:
        Negotiation(rfq(), vendor=NEGOTIATOR.public_key, mandate=mandate())
    assert info.value.reason == "not-a-party"
    with pytest.raises(NegotiationError) as info:
        Negotiation(rfq(quantity=50), vendor=VENDOR.public_key, mandate=mandate())
    assert info.value.reason == "below-target"
    addressed = Negotiation(
        rfq(vendor=VENDOR.public_key), vendor=VENDOR.public_key, mandate=mandate()
    )
    assert addressed.negotiator == NEGOTIATOR.public_key


def test_prices_are_each_sides_proposals_in_order() -> None:
    s = session()
    assert s.prices(V) == s.prices(C) == ()
    s.receive(move(s, V, "offer", 1200, T0 + 10), T0 + 10)
    s.receive(move(s, C, "counter", 700, T0 + 20), T0 + 20)
    refuses(s, move(s, C, "counter", 650, T0 + 25), T0 + 25, "out-of-turn")
    s.receive(move(s, V, "counter", 950, T0 + 30), T0 + 30)
    assert (s.prices(V), s.prices(C)) == ((1200, 950), (700,))
    for party in (V, C):
        assert s.prices(party) == tuple(p.unit_price for p in s.proposals if p.party is party)
    s.receive(move(s, C, "accept", 0, T0 + 40), T0 + 40)
    assert (s.prices(V), s.prices(C)) == ((1200, 950), (700,))


def test_mandate_covers_is_the_mandate_at_the_sessions_quantity() -> None:
    s = session(mandate=mandate(800))
    assert [s.mandate_covers(p) for p in (1, 800, 801)] == [True, True, False]
    s.update_mandate(mandate(700))
    assert [s.mandate_covers(p) for p in (700, 701)] == [True, False]
    # Pledges below the target cover no price at all.
    s.update_mandate(Mandate.from_demand(((10_000, QUANTITY - 1),), target=QUANTITY))
    assert not s.mandate_covers(1)


def test_a_recorded_proposal_is_an_ordinary_frozen_proposal() -> None:
    # The machine builds proposals without Proposal.__init__ (it is on every move's path).
    s = session()
    p = s.receive(move(s, V, "offer", 1200, T0 + 10), T0 + 10)
    assert isinstance(p, Proposal)
    same = Proposal(
        party=V,
        unit_price=1200,
        quantity=QUANTITY,
        round=0,
        valid_until=T0 + 510,
        id=envelope_id(s.transcript[-1]),
        at=T0 + 10,
    )
    assert p == same and hash(p) == hash(same) and repr(p) == repr(same)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.unit_price = 1  # type: ignore[misc]
