"""SessionView answers from the session's running figures exactly as from its full record."""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

import protocol
from circles import Negotiator, SessionView, StrategyError, TimeDependent
from protocol import Mandate, Negotiation, Party

CIRCLE_KEY = protocol.Identity.from_seed(b"\x41" * 32)
VENDOR_KEY = protocol.Identity.from_seed(b"\x42" * 32)
CREATED = 1_000


def session(max_rounds: int, duration: int) -> Negotiation:
    request = protocol.QuoteRequest(
        circle=b"\x43" * 32,
        vendor=None,
        product="x",
        quantity=10,
        currency="EUR",
        respond_by=CREATED + max(1, duration // 2),
        deadline=CREATED + duration,
        max_rounds=max_rounds,
        created=CREATED,
    )
    return Negotiation(
        protocol.seal(request, CIRCLE_KEY).data,
        vendor=VENDOR_KEY.public_key,
        mandate=Mandate.from_demand(((700, 10),), target=10),
    )


def expected(view: SessionView, now: int) -> dict[str, object]:
    """The view's answers worked out the long way, from every recorded proposal."""
    s, party = view.session, view.party
    request = s.request.message
    proposals = s.proposals
    standing = proposals[-1] if proposals else None
    by_time = (now - request.created) / max(1, request.deadline - request.created)
    by_rounds = (s.rounds + (standing is not None)) / request.max_rounds
    return {
        "mine": tuple(p.unit_price for p in proposals if p.party is party),
        "theirs": tuple(p.unit_price for p in proposals if p.party is not party),
        "standing": None if standing is None or standing.party is party else standing.unit_price,
        "can_propose": standing is None or request.max_rounds - s.rounds > 0,
        "progress": min(1.0, max(0.0, by_time, by_rounds)),
    }


def answers(view: SessionView, now: int) -> dict[str, object]:
    return {
        "mine": view.mine,
        "theirs": view.theirs,
        "standing": view.standing,
        "can_propose": view.can_propose,
        "progress": view.progress(now),
    }


@given(
    vendor_e=st.sampled_from([0.1, 0.3, 1.0, 5.0]),
    circle_e=st.sampled_from([0.1, 0.3, 1.0, 5.0]),
    max_rounds=st.integers(1, 20),
    duration=st.integers(1, 3000),
    steps=st.lists(st.integers(0, 60), min_size=1, max_size=40),
    probes=st.lists(st.integers(-50, 500), min_size=1, max_size=4),
)
def test_the_view_agrees_with_the_full_record(
    *,
    vendor_e: float,
    circle_e: float,
    max_rounds: int,
    duration: int,
    steps: list[int],
    probes: list[int],
) -> None:
    s = session(max_rounds, duration)
    sides = {
        Party.VENDOR: Negotiator(
            VENDOR_KEY, s, TimeDependent(reservation=690, initial=900, e=vendor_e)
        ),
        Party.CIRCLE: Negotiator(
            CIRCLE_KEY, s, TimeDependent(reservation=700, initial=100, e=circle_e)
        ),
    }
    now = CREATED
    for step in steps:
        for party in Party:
            view = SessionView(s, party)
            for offset in probes:
                assert answers(view, now + offset) == expected(view, now + offset)
        now += step
        s.handle_timer(now)
        turn = s.turn
        if turn is None:
            break
        with contextlib.suppress(StrategyError):
            data = sides[turn].act(now)
            assert data is not None
            s.receive(data, now)


def test_a_proposal_keeps_the_price_it_was_given() -> None:
    # Concession strategies share one Move per price: 900 and 900.0 must not share one.
    view = SessionView(session(max_rounds=4, duration=100), Party.VENDOR)
    as_int = TimeDependent(reservation=690, initial=900).move(view, CREATED)
    as_float = TimeDependent(reservation=690, initial=900.0).move(view, CREATED)  # type: ignore[arg-type]
    assert (as_int.unit_price, as_float.unit_price) == (900, 900)
    assert type(as_int.unit_price) is int and type(as_float.unit_price) is float
