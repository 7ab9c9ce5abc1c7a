"""Strategies: reservations hold, sessions end, seeds reproduce, Boulware out-waits conceders."""

from __future__ import annotations

import itertools
import math
import pathlib
import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocol
from circles import (
    Move,
    Negotiator,
    RelativeTitForTat,
    SessionView,
    SimulationOutcome,
    Strategy,
    StrategyError,
    TakeItOrLeaveIt,
    TimeDependent,
    simulate,
)
from protocol import Agreement, Ended, Mandate, Negotiation


def mandate(ceiling: int, target: int = 100) -> Mandate:
    return Mandate.from_demand(((ceiling, target),), target=target)


def prices(transcript: tuple[bytes, ...]) -> list[tuple[str, int]]:
    """(kind, unit price) of every offer and counter-offer, in order."""
    out = []
    for data in transcript:
        message = protocol.decode(data).message
        if isinstance(message, protocol.Offer):
            out.append(("offer", message.tiers[0].unit_price))
        elif isinstance(message, protocol.CounterOffer):
            out.append(("counter", message.unit_price))
    return out


@st.composite
def strategy(draw: st.DrawFn, *, vendor: bool) -> Strategy:
    reservation = draw(st.integers(100, 2000))
    spread = draw(st.integers(0, 1500))
    initial = reservation + spread if vendor else max(1, reservation - spread)
    family = draw(st.sampled_from(["time", "tft", "tioli"]))
    if family == "time":
        e = draw(st.sampled_from([0.1, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0]))
        return TimeDependent(reservation=reservation, initial=initial, e=e)
    if family == "tft":
        delta = draw(st.integers(1, 3))
        return RelativeTitForTat(reservation=reservation, initial=initial, delta=delta)
    return TakeItOrLeaveIt(reservation=reservation, price=draw(st.none() | st.just(initial)))


@given(
    vendor=strategy(vendor=True),
    circle=strategy(vendor=False),
    seed=st.integers(0, 2**32),
    max_rounds=st.integers(1, 30),
    slack=st.integers(0, 500),
    max_step=st.integers(1, 400),
)
def test_no_agreement_outside_either_reservation_and_always_ends(
    *, vendor: Strategy, circle: Strategy, seed: int, max_rounds: int, slack: int, max_step: int
) -> None:
    pledges = mandate(circle.reservation + slack)
    outcome = simulate(
        vendor, circle, seed=seed, mandate=pledges, max_rounds=max_rounds, max_step=max_step
    )
    # The request, the offer, at most max_rounds counter-offers and one final move.
    assert len(outcome.transcript) <= max_rounds + 3
    moves = prices(outcome.transcript)
    assert sum(kind == "counter" for kind, _ in moves) <= max_rounds
    result = outcome.result
    if isinstance(result, Agreement):
        assert vendor.reservation <= result.unit_price <= circle.reservation
        assert pledges.covers(result.unit_price, result.quantity)
    else:
        assert isinstance(result, Ended)
    for data in outcome.transcript[1:]:
        envelope = protocol.decode(data)
        message = envelope.message
        price = getattr(message, "unit_price", None)
        if isinstance(message, protocol.Offer):
            price = message.tiers[0].unit_price
        if price is None:
            continue
        if envelope.signer == outcome.vendor:
            assert price >= vendor.reservation
        else:
            assert price <= circle.reservation


@given(
    vendor=strategy(vendor=True),
    circle=strategy(vendor=False),
    seed=st.integers(0, 2**32),
    max_rounds=st.integers(1, 30),
)
def test_the_same_seed_and_strategies_give_the_same_transcript(
    vendor: Strategy, circle: Strategy, seed: int, max_rounds: int
) -> None:
    pledges = mandate(circle.reservation)
    first = simulate(vendor, circle, seed=seed, mandate=pledges, max_rounds=max_rounds)
    again = simulate(vendor, circle, seed=seed, mandate=pledges, max_rounds=max_rounds)
    assert first == again


def test_another_seed_gives_another_transcript() -> None:
    def run(seed: int) -> tuple[bytes, ...]:
        return simulate(
            RelativeTitForTat(reservation=700, initial=1400),
            TimeDependent(reservation=1000, initial=200, e=0.5),
            seed=seed,
            mandate=mandate(1000),
        ).transcript

    assert run(7) == run(7)
    assert run(7) != run(8)


def normalised_price(vendor_e: float, circle_e: float, floor: int, ceiling: int) -> float:
    """Where the agreement lands between the vendor's floor (0) and the circle's ceiling (1)."""
    outcome = simulate(
        TimeDependent(reservation=floor, initial=floor * 2, e=vendor_e),
        TimeDependent(reservation=ceiling, initial=max(1, ceiling // 3), e=circle_e),
        seed=floor * 7919 + ceiling,
        mandate=mandate(ceiling),
        max_rounds=20,
    )
    assert isinstance(outcome.result, Agreement)
    return (outcome.result.unit_price - floor) / (ceiling - floor)


def test_boulware_against_a_conceder_ends_nearer_the_conceders_reservation() -> None:
    rng = random.Random(20240601)
    boulware, conceder = 0.2, 5.0
    wins, gaps = 0, []
    trials = 60
    for _ in range(trials):
        floor = rng.randint(200, 5000)
        ceiling = floor + rng.randint(floor // 10, floor)
        # Vendor Boulware, circle conceder: the price should sit near the circle's ceiling (1).
        vendor_holds = normalised_price(boulware, conceder, floor, ceiling)
        # The reverse pairing: the price should sit near the vendor's floor (0).
        circle_holds = normalised_price(conceder, boulware, floor, ceiling)
        # Distance from the conceder's reservation, in each pairing.
        near_conceder, reverse = 1 - vendor_holds, 1 - circle_holds
        wins += near_conceder < reverse
        gaps.append(reverse - near_conceder)
    # A one-sided sign test: under "no difference" each trial is a coin toss.
    p_value = sum(math.comb(trials, k) for k in range(wins, trials + 1)) / 2**trials
    assert p_value < 1e-6, (wins, trials)
    assert sum(gaps) / trials > 0.5


def test_time_dependent_shapes() -> None:
    def vendor_path(e: float) -> list[int]:
        outcome = simulate(
            TimeDependent(reservation=500, initial=1500, e=e),
            # Never offers or accepts 500 or more, so the vendor walks its whole path.
            TimeDependent(reservation=100, initial=50, e=1.0),
            seed=1,
            mandate=mandate(100),
            max_rounds=20,
            max_step=1,  # progress by rounds, not by the clock
        )
        assert isinstance(outcome.result, Ended)
        return [p for _, p in prices(outcome.transcript)[::2]]

    linear, boulware, conceder = vendor_path(1.0), vendor_path(0.2), vendor_path(5.0)
    assert linear[0] == boulware[0] == 1500 and conceder[0] < 1500
    middle = len(linear) // 2
    # Boulware still asks near its opening at the midpoint; a conceder is near its floor.
    assert boulware[middle] > 1400 > linear[middle] > 700 > conceder[middle]
    for path in (linear, boulware, conceder):
        assert all(a >= b for a, b in itertools.pairwise(path))
        assert min(path) == 500
    assert len(linear) == len(boulware) == 11


def test_relative_tit_for_tat_mirrors_the_other_sides_concession() -> None:
    outcome = simulate(
        TimeDependent(reservation=600, initial=1200, e=1.0),
        RelativeTitForTat(reservation=1000, initial=400),
        seed=3,
        mandate=mandate(1000),
        max_rounds=10,
    )
    moves = [p for _, p in prices(outcome.transcript)]
    vendor, circle = moves[0::2], moves[1::2]
    assert circle[0] == 400
    for k in range(1, len(circle)):
        expected = min(1000, math.floor(circle[k - 1] * vendor[k - 1] / vendor[k]))
        assert circle[k] == expected


def test_take_it_or_leave_it() -> None:
    deal = simulate(
        TakeItOrLeaveIt(reservation=800, price=900),
        TakeItOrLeaveIt(reservation=950),
        seed=1,
        mandate=mandate(950),
    )
    assert isinstance(deal.result, Agreement) and deal.result.unit_price == 900
    assert len(deal.transcript) == 3
    no_deal = simulate(
        TakeItOrLeaveIt(reservation=900),
        TimeDependent(reservation=850, initial=400),
        seed=1,
        mandate=mandate(950),
    )
    assert isinstance(no_deal.result, Ended)
    assert no_deal.result.state is protocol.NegotiationState.REJECTED


class Rogue:
    """Proposes a fixed price whatever its reservation says."""

    def __init__(self, reservation: int, price: int) -> None:
        self.reservation = reservation
        self.price = price

    def move(self, view: SessionView, now: int) -> Move:
        return Move.propose(self.price) if view.standing is None else Move.accept()


def opened(ceiling: int = 1000) -> tuple[Negotiation, protocol.Identity, protocol.Identity]:
    circle = protocol.Identity.from_seed(b"\x31" * 32)
    vendor = protocol.Identity.from_seed(b"\x32" * 32)
    request = protocol.QuoteRequest(
        circle=b"\x33" * 32,
        vendor=None,
        product="x",
        quantity=100,
        currency="EUR",
        respond_by=200,
        deadline=1000,
        max_rounds=4,
        created=100,
    )
    session = Negotiation(
        protocol.seal(request, circle).data, vendor=vendor.public_key, mandate=mandate(ceiling)
    )
    return session, circle, vendor


def test_a_negotiator_never_signs_beyond_the_reservation() -> None:
    session, circle, vendor = opened()
    seller = Negotiator(vendor, session, Rogue(reservation=500, price=400))
    with pytest.raises(StrategyError) as info:
        seller.act(110)
    assert info.value.reason == "beyond-reservation"
    assert len(session.transcript) == 1
    honest = Negotiator(vendor, session, TimeDependent(reservation=500, initial=900))
    session.receive(honest.act(110) or b"", 110)
    buyer = Negotiator(circle, session, Rogue(reservation=800, price=0))
    with pytest.raises(StrategyError) as info:
        buyer.act(120)  # accepting 900 is beyond the circle's 800
    assert info.value.reason == "beyond-reservation"
    assert Negotiator(vendor, session, honest.strategy).act(120) is None  # not its turn


def test_a_circle_negotiator_never_signs_outside_its_mandate() -> None:
    session, circle, vendor = opened(ceiling=700)
    seller = Negotiator(vendor, session, TimeDependent(reservation=500, initial=900))
    session.receive(seller.act(110) or b"", 110)
    greedy = Negotiator(circle, session, TimeDependent(reservation=2000, initial=800))
    with pytest.raises(StrategyError) as info:
        greedy.act(120)
    assert info.value.reason == "outside-mandate"
    assert len(session.transcript) == 2


def test_the_documented_strategy_works() -> None:
    # docs/haggling.md promises a 20-line strategy that plays: run its code blocks.
    text = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "haggling.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    strategy_code, usage = blocks[1], blocks[2]
    assert len(strategy_code.strip().splitlines()) <= 22
    namespace: dict[str, object] = {}
    exec(strategy_code, namespace)
    exec(usage.replace("print(", "str("), namespace)
    outcome = namespace["outcome"]
    assert isinstance(outcome, SimulationOutcome)
    assert isinstance(outcome.result, Agreement)
    assert 600 <= outcome.result.unit_price <= 1000


class Leaver:
    """Walks away at its first move."""

    reservation = 1

    def move(self, view: SessionView, now: int) -> Move:
        return Move.walk_away("found a better circle")


def test_a_strategy_may_walk_away() -> None:
    outcome = simulate(
        TimeDependent(reservation=500, initial=900), Leaver(), seed=5, mandate=mandate(1000)
    )
    assert isinstance(outcome.result, Ended)
    assert outcome.result.state is protocol.NegotiationState.WALKED_AWAY
    assert (outcome.result.by, outcome.result.reason) == (
        protocol.Party.CIRCLE,
        "found a better circle",
    )
    assert len(outcome.transcript) == 3
