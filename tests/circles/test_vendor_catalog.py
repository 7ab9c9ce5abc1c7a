"""Catalog files and the vendor's concession: checked early, prices never below the floor."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocol
from circles._cli_circle import parse_deadline
from circles._errors import CirclesError
from circles._vendor import STRATEGIES, CatalogError, Product, concede, load_catalog

GOOD = """
[vendor]
strategy = "boulware"

[[products]]
name = "Arabica beans, 1 kg"
match = ["Coffee"]
currency = "EUR"
list_price = "24.00"
floor = "17.00"
capacity = 20
tiers = [[5, "21.00"], [10, "19.00"], [50, "18.00"]]
"""


def charter(title: str, currency: str = "EUR", tags: tuple[str, ...] = ()) -> protocol.Charter:
    return protocol.Charter(
        title=title, unit="kg", target=10, currency=currency, ceiling=None, deadline=2000,
        place=None, tags=tags, invite_only=False, members_invite=False, on_miss="expire",
        created=1000,
    )  # fmt: skip


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_good_catalog(tmp_path: Path) -> None:
    catalog = load_catalog(write(tmp_path, GOOD))
    (product,) = catalog.products
    assert (product.list_price, product.floor, product.match) == (2400, 1700, ("coffee",))
    assert catalog.product_for(charter("Fresh COFFEE for the office")) is product
    assert catalog.product_for(charter("Beans", tags=("coffee",))) is product
    assert catalog.product_for(charter("Coffee", currency="USD")) is None
    assert catalog.product_for(charter("Tea")) is None
    # The 50-unit tier is above capacity: not offered.
    assert product.offer_tiers(0.0) == [(1, 2400), (5, 2100), (10, 1900)]
    assert product.offer_tiers(1.0) == [(1, 1700)]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (('strategy = "boulware"', 'strategy = "greedy"'), "unknown strategy"),
        (('floor = "17.00"', 'floor = "19.50"'), "floor must be"),
        (('list_price = "24.00"', 'list_price = "24.001"'), "EUR has 2 decimals"),
        (('[10, "19.00"]', '[10, "22.00"]'), "prices falling"),
        (("capacity = 20", 'capacity = "many"'), "whole number"),
        (("capacity = 20", 'capacity = 20\nstock = "lots"'), "whole number"),
        (("capacity = 20", "capacity = 20\nstock = -1"), "stock must be at least 0"),
        (('name = "Arabica beans, 1 kg"', ""), "has no 'name'"),
        (("[[products]]", "[[product]]"), "lists no [[products]]"),
        (("[vendor]", "[vendor"), "not valid TOML"),
    ],
)
def test_a_bad_catalog_names_what_to_fix(
    tmp_path: Path, change: tuple[str, str], words: str
) -> None:
    with pytest.raises(CatalogError) as bad:
        load_catalog(write(tmp_path, GOOD.replace(*change)))
    assert words in str(bad.value)


def test_stock_defaults_to_the_capacity_and_caps_the_tiers(tmp_path: Path) -> None:
    (product,) = load_catalog(write(tmp_path, GOOD)).products
    assert (product.stock, product.units) == (None, 20)
    (stocked,) = load_catalog(
        write(tmp_path, GOOD.replace("capacity = 20", "stock = 7\ncapacity = 20"))
    ).products
    assert (stocked.stock, stocked.units, stocked.capacity) == (7, 7, 20)
    (sold_out,) = load_catalog(
        write(tmp_path, GOOD.replace("capacity = 20", "stock = 0\ncapacity = 20"))
    ).products
    assert sold_out.units == 0
    # Offered within what is left: tiers above it go, the list-price tier stays.
    assert product.offer_tiers(0.0, 7) == [(1, 2400), (5, 2100)]
    assert product.offer_tiers(0.0, 4) == [(1, 2400)]
    assert product.offer_tiers(0.0, 500) == product.offer_tiers(0.0)


def test_a_missing_catalog(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read the catalog"):
        load_catalog(tmp_path / "none.toml")


@given(
    strategy=st.sampled_from(sorted(STRATEGIES)),
    progress=st.floats(min_value=-1, max_value=2, allow_nan=False),
    later=st.floats(min_value=0, max_value=1),
)
def test_concession_stays_in_bounds_and_never_goes_back(
    strategy: str, progress: float, later: float
) -> None:
    share = concede(strategy, progress)
    assert 0.0 <= share <= 1.0
    assert concede(strategy, progress + later) >= share


def test_boulware_holds_out_and_a_conceder_gives_early() -> None:
    assert concede("boulware", 0.5) < concede("linear", 0.5) < concede("conceder", 0.5)
    assert concede("fixed", 0.99) == 0.0


@given(share=st.floats(min_value=0, max_value=1))
def test_offered_tiers_are_valid_and_above_the_floor(
    tmp_path_factory: object, share: float
) -> None:
    product = Product(
        name="x", match=("x",), currency="EUR", list_price=2400, floor=1700, capacity=20,
        tiers=((5, 2100), (10, 1900)), terms="",
    )  # fmt: skip
    tiers = product.offer_tiers(share)
    assert all(price >= 1700 for _, price in tiers)
    # The protocol accepts them: increasing quantities, strictly decreasing prices.
    protocol.Offer(
        circle=b"\x01" * 32, product="x", currency="EUR", list_price=2400,
        tiers=tuple(protocol.Tier(min_quantity=q, unit_price=p) for q, p in tiers),
        capacity=20, valid_until=2, terms="", loyalty=(), in_reply_to=None, created=1,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90m", 1000 + 5400), ("12h", 1000 + 43200), ("3d", 1000 + 3 * 86400), ("1w", 605800)],
)
def test_deadlines_as_durations(text: str, expected: int) -> None:
    assert parse_deadline(text, 1000.5) == expected


def test_deadline_as_a_date_and_nonsense() -> None:
    assert parse_deadline("2030-01-01 12:00", 0) > 1_800_000_000
    with pytest.raises(CirclesError, match="write a duration like 3d"):
        parse_deadline("soonish", 0)
