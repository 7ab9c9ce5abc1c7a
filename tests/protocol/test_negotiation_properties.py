"""The negotiation table, checked for every (state, party, kind), and random move sequences."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    NEGOTIATION_TRANSITIONS,
    Agreement,
    Mandate,
    Negotiation,
    NegotiationError,
    NegotiationState,
    Party,
)

from .test_negotiation_helpers import T0, VENDOR, mandate, move, rfq

KINDS = ("offer", "counter", "accept", "reject", "walkaway")
C, V = Party.CIRCLE, Party.VENDOR


def reach(state: NegotiationState) -> Negotiation:
    s = Negotiation(rfq(), vendor=VENDOR.public_key, mandate=mandate())
    script = {
        NegotiationState.AWAITING_OFFER: [],
        NegotiationState.CIRCLE_TO_MOVE: [(V, "offer")],
        NegotiationState.VENDOR_TO_MOVE: [(V, "offer"), (C, "counter")],
        NegotiationState.AGREED: [(V, "offer"), (C, "accept")],
        NegotiationState.REJECTED: [(V, "reject")],
        NegotiationState.WALKED_AWAY: [(C, "walkaway")],
    }
    if state is NegotiationState.EXPIRED:
        s.handle_timer(T0 + 100)
    for party, kind in script.get(state, []):
        s.receive(move(s, party, kind, 900, T0 + 1), T0 + 1)
    assert s.state is state
    return s


@pytest.mark.parametrize("state", list(NegotiationState))
@pytest.mark.parametrize("party", list(Party))
@pytest.mark.parametrize("kind", KINDS)
def test_every_state_and_input(state: NegotiationState, party: Party, kind: str) -> None:
    s = reach(state)
    data = move(s, party, kind, 900, T0 + 2)
    allowed = NEGOTIATION_TRANSITIONS.get((state, party, kind))
    if allowed is not None:
        s.receive(data, T0 + 2)
        assert s.state is allowed
        return
    before = s.transcript
    with pytest.raises(NegotiationError) as info:
        s.receive(data, T0 + 2)
    expected = "out-of-turn" if state.value.endswith(("offer", "move")) else "session-over"
    assert info.value.reason == expected
    assert (s.state, s.transcript) == (state, before)


# Mostly the side whose turn it is, mostly counter-offers: long sessions that
# push on the round limit, with enough strays to exercise every refusal.
action = st.tuples(
    st.one_of(st.none(), st.none(), st.none(), st.sampled_from(list(Party))),
    st.sampled_from(("counter",) * 6 + ("offer",) * 2 + KINDS),
    st.integers(400, 1400),
    st.integers(0, 40),
)


@given(
    actions=st.lists(action, min_size=10, max_size=50),
    max_rounds=st.integers(1, 8),
    ceiling=st.integers(500, 1300),
)
def test_random_moves_keep_every_rule(
    actions: list[tuple[Party | None, str, int, int]], max_rounds: int, ceiling: int
) -> None:
    request = rfq(max_rounds=max_rounds, respond_by=T0 + 300)
    s = Negotiation(request, vendor=VENDOR.public_key, mandate=mandate(ceiling))
    now = T0
    for chosen, kind, price, step in actions:
        now += step
        party = chosen or s.turn or V
        state, transcript = s.state, s.transcript
        try:
            event = s.receive(move(s, party, kind, price, now), now)
        except NegotiationError:
            assert s.transcript == transcript
            assert s.state in (state, NegotiationState.EXPIRED)
            continue
        assert s.state is NEGOTIATION_TRANSITIONS[(state, party, kind)]
        if isinstance(event, Agreement):
            assert event.unit_price <= ceiling
        for proposal in s.proposals:
            if proposal.party is C:
                assert proposal.unit_price <= ceiling
    # The request, one offer, the counter-offers and one final move at most.
    assert len(s.transcript) <= 1 + 1 + max_rounds + 1
    assert s.rounds <= max_rounds
    s.handle_timer(T0 + 1000)
    assert s.is_over and s.get_timer() is None


demand = st.lists(st.tuples(st.integers(1, 2000), st.integers(1, 80)), max_size=5)


@given(
    target=st.integers(1, 150),
    first=demand,
    second=demand,
    prices=st.lists(st.integers(1, 2100), min_size=1, max_size=20),
)
def test_mandate_covers_agrees_with_the_mandate(
    target: int,
    first: list[tuple[int, int]],
    second: list[tuple[int, int]],
    prices: list[int],
) -> None:
    # The machine reduces the mandate to a ceiling for its quantity; it must
    # answer exactly as Mandate.covers does, before and after an update.
    quantity = 150
    request = rfq(quantity=quantity)
    opening = Mandate.from_demand(tuple(first), target=target)
    s = Negotiation(request, vendor=VENDOR.public_key, mandate=opening)
    for m in (opening, Mandate.from_demand(tuple(second), target=target)):
        s.update_mandate(m)
        assert s.mandate is m
        for price in prices:
            assert s.mandate_covers(price) == m.covers(price, quantity)


@given(actions=st.lists(action, min_size=5, max_size=40), max_rounds=st.integers(1, 8))
def test_prices_are_the_proposals_of_each_side(
    actions: list[tuple[Party | None, str, int, int]], max_rounds: int
) -> None:
    s = Negotiation(rfq(max_rounds=max_rounds), vendor=VENDOR.public_key, mandate=mandate(1300))
    now = T0
    for chosen, kind, price, step in actions:
        now += step
        party = chosen or s.turn or V
        with contextlib.suppress(NegotiationError):
            s.receive(move(s, party, kind, price, now), now)
        for side in Party:
            assert s.prices(side) == tuple(p.unit_price for p in s.proposals if p.party is side)
