"""Prices read and printed in each currency's own format, stored in minor units."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from circles._money import MoneyError, format_money, minor_digits, parse_money


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (1250, "EUR", "12.50 EUR"),
        (5, "EUR", "0.05 EUR"),
        (0, "USD", "0.00 USD"),
        (1200, "JPY", "1200 JPY"),
        (1250, "BHD", "1.250 BHD"),
        (7, "KWD", "0.007 KWD"),
        (-150, "EUR", "-1.50 EUR"),
    ],
)
def test_format(minor: int, currency: str, text: str) -> None:
    assert format_money(minor, currency) == text


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("12.50", "EUR", 1250),
        ("12.5", "EUR", 1250),
        ("12", "EUR", 1200),
        ("12.", "EUR", 1200),
        ("12.50 EUR", "EUR", 1250),
        ("eur 12.50", "EUR", 1250),
        ("1200", "JPY", 1200),
        ("1.25", "BHD", 1250),
        ("0.007 KWD", "KWD", 7),
        ("  3.10  ", "GBP", 310),
    ],
)
def test_parse(text: str, currency: str, minor: int) -> None:
    assert parse_money(text, currency) == minor


@pytest.mark.parametrize(
    ("text", "currency", "reason"),
    [
        ("12.505", "EUR", "too-many-decimals"),
        ("12.5", "JPY", "too-many-decimals"),
        ("1.2345", "BHD", "too-many-decimals"),
        ("12.50 USD", "EUR", "wrong-currency"),
        ("-3", "EUR", "bad-price"),
        ("1,250.00", "EUR", "bad-price"),
        ("twelve", "EUR", "bad-price"),
        ("", "EUR", "bad-price"),
        ("1e3", "EUR", "bad-price"),
        ("12 50", "EUR", "bad-price"),
    ],
)
def test_parse_refuses_with_an_example(text: str, currency: str, reason: str) -> None:
    with pytest.raises(MoneyError) as caught:
        parse_money(text, currency)
    assert caught.value.reason == reason
    assert "write it like" in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("code", ["eur", "EURO", "E1R", ""])
def test_bad_currency_code(code: str) -> None:
    with pytest.raises(MoneyError) as caught:
        minor_digits(code)
    assert caught.value.reason == "bad-currency"


def test_digits() -> None:
    assert [minor_digits(c) for c in ("EUR", "JPY", "BHD", "CLF", "XYZ")] == [2, 0, 3, 4, 2]


@given(
    minor=st.integers(min_value=0, max_value=10**15),
    currency=st.sampled_from(["EUR", "USD", "JPY", "KRW", "BHD", "KWD", "CLF", "CHF"]),
)
def test_round_trip(minor: int, currency: str) -> None:
    text = format_money(minor, currency)
    assert text.endswith(f" {currency}")
    assert parse_money(text, currency) == minor
    assert parse_money(text.split()[0], currency) == minor
