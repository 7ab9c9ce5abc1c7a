"""The demand book against a from-scratch reference, and the clearing rule's guarantees."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import DemandBook, Tier
from protocol._quorum import Entry, clear_tier

PRICES = st.integers(1, 12).map(lambda p: p * 100)


@st.composite
def entries(draw: st.DrawFn, max_size: int = 30) -> list[Entry]:
    n = draw(st.integers(0, max_size))
    return [
        Entry(
            pledge=hashlib.blake2b(bytes([i, draw(st.integers(0, 255))]), digest_size=32).digest(),
            quantity=draw(st.integers(1, 9)),
            max_price=draw(PRICES),
            tolerance=draw(st.integers(0, 4)),
            # Few distinct times, so pledges often share a (price, created) group.
            created=draw(st.integers(0, 3)),
        )
        for i in range(n)
    ]


@st.composite
def tiers(draw: st.DrawFn) -> tuple[Tier, ...]:
    mins = sorted(draw(st.sets(st.integers(1, 60), min_size=1, max_size=4)))
    prices = sorted(draw(st.sets(PRICES, min_size=len(mins), max_size=len(mins))), reverse=True)
    return tuple(Tier(min_quantity=m, unit_price=p) for m, p in zip(mins, prices, strict=True))


def reference_demand(items: list[Entry], price: int) -> int:
    return sum(e.quantity for e in items if e.max_price >= price)


def reference_clear(
    items: list[Entry], schedule: tuple[Tier, ...], capacity: int, target: int, relaxed: bool
) -> tuple[int, int] | None:
    for tier in reversed(schedule):
        for flag in (False, True) if relaxed else (False,):
            result = clear_tier(items, tier=tier, capacity=capacity, target=target, relaxed=flag)
            if result is not None:
                return tier.unit_price, sum(q for _, q in result)
    return None


@given(entries(), st.data())
def test_book_matches_reference_after_adds_and_removes(
    items: list[Entry], data: st.DataObject
) -> None:
    book = DemandBook()
    for e in items:
        book.add(e)
    removed = data.draw(st.lists(st.sampled_from(items), unique=True) if items else st.just([]))
    for e in removed:
        book.remove(e)
    kept = [e for e in items if e not in removed]
    assert len(book) == len(kept)
    assert book.total == sum(e.quantity for e in kept)
    for price in range(100, 1300, 100):
        assert book.demand(price) == reference_demand(kept, price)
        assert book.with_tolerance(price) == sum(
            e.quantity + e.tolerance for e in kept if e.max_price >= price
        )
    curve = book.curve()
    assert [p for p, _ in curve] == sorted({e.max_price for e in kept}, reverse=True)


@given(entries(), tiers(), st.integers(1, 80), st.integers(1, 60), st.booleans())
def test_book_clearing_matches_reference(
    items: list[Entry], schedule: tuple[Tier, ...], capacity: int, target: int, relaxed: bool
) -> None:
    book = DemandBook()
    for e in items:
        book.add(e)
    got = book.clear(
        offer=b"o" * 32, tiers=schedule, capacity=capacity, target=target, relaxed=relaxed
    )
    expected = reference_clear(items, schedule, capacity, target, relaxed)
    assert (None if got is None else (got.unit_price, got.total)) == expected


@given(entries(), tiers(), st.integers(1, 80), st.integers(1, 60), st.booleans())
def test_allocations_respect_every_pledge_and_the_capacity(
    items: list[Entry], schedule: tuple[Tier, ...], capacity: int, target: int, relaxed: bool
) -> None:
    for tier in schedule:
        result = clear_tier(items, tier=tier, capacity=capacity, target=target, relaxed=relaxed)
        if result is None:
            continue
        need = tier.min_quantity if relaxed else max(tier.min_quantity, target)
        total = sum(q for _, q in result)
        assert need <= total <= capacity
        for entry, q in result:
            assert entry.max_price >= tier.unit_price
            assert entry.quantity <= q <= entry.quantity + entry.tolerance
        # Tolerance is drawn only to reach the need, never beyond.
        if any(q > e.quantity for e, q in result):
            assert total == need
        # The admitted pledges are a prefix of the priority order among the eligible.
        eligible = sorted(
            (e for e in items if e.max_price >= tier.unit_price),
            key=lambda e: (-e.max_price, e.created, e.pledge),
        )
        assert [e for e, _ in result] == eligible[: len(result)]
        if len(result) < len(eligible):
            assert eligible[len(result)].quantity > capacity - sum(e.quantity for e, _ in result)


def test_remove_of_an_unknown_entry_raises() -> None:
    book = DemandBook()
    entry = Entry(pledge=b"x" * 32, quantity=1, max_price=5, tolerance=0, created=0)
    book.add(entry)
    other = Entry(pledge=b"y" * 32, quantity=1, max_price=5, tolerance=0, created=0)
    with pytest.raises(KeyError):
        book.remove(other)
    assert book.demand(5) == 1
