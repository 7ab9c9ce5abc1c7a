"""Prices as people write them ("12.50 EUR", "1200 JPY", "1.250 BHD") and as stored (minor units).

The protocol keeps money as an integer count of the currency's minor unit, so
the only place decimals exist is here, at the edge where people type and read
prices. The number of decimals is the currency's own (ISO 4217): most have 2,
a few none (JPY, KRW) or 3 (BHD, KWD). Parsing is exact: no floats, and a
price with more decimals than the currency has is refused rather than rounded,
because a silently rounded price is a different promise.
"""

from __future__ import annotations

import re

from ._errors import CirclesError

__all__ = ["MoneyError", "format_money", "minor_digits", "parse_money"]

# ISO 4217 currencies whose minor unit is not a hundredth; every other code has 2.
_NO_DECIMALS = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE_DECIMALS = "BHD IQD JOD KWD LYD OMR TND"
_FOUR_DECIMALS = "CLF UYW"
_DIGITS: dict[str, int] = {
    code: digits
    for codes, digits in ((_NO_DECIMALS, 0), (_THREE_DECIMALS, 3), (_FOUR_DECIMALS, 4))
    for code in codes.split()
}

_CODE = re.compile(r"[A-Z]{3}")
_AMOUNT = re.compile(r"(?P<whole>\d+)(?:\.(?P<frac>\d*))?")


class MoneyError(CirclesError, ValueError):
    """A price or currency that cannot be read; the message shows a correct one."""

    reason = "bad-price"


def _check_code(currency: str) -> str:
    if not isinstance(currency, str) or not _CODE.fullmatch(currency):
        raise MoneyError(
            f"{currency!r} is not a currency code; use three capital letters such as EUR",
            reason="bad-currency",
        )
    return currency


def minor_digits(currency: str) -> int:
    """How many decimals ``currency`` has (2 for EUR, 0 for JPY, 3 for BHD)."""
    return _DIGITS.get(_check_code(currency), 2)


def format_money(minor: int, currency: str) -> str:
    """``minor`` units of ``currency`` in its own format, e.g. ``format_money(1250, "EUR")``
    is ``"12.50 EUR"``."""
    digits = minor_digits(currency)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**digits)
    if not digits:
        return f"{sign}{whole} {currency}"
    return f"{sign}{whole}.{frac:0{digits}d} {currency}"


def parse_money(text: str, currency: str) -> int:
    """Read a price typed by a person ("12.50", "12.5 EUR", "EUR 12") as minor units.

    A currency code in the text must be ``currency``; more decimals than the
    currency has, negative amounts, and anything else are refused with
    :class:`MoneyError`.
    """
    digits = minor_digits(currency)
    example = format_money(1250 * 10 ** max(digits - 2, 0) if digits else 1200, currency)
    words = str(text).strip().split()
    codes = [w for w in words if _CODE.fullmatch(w.upper()) and not w[0].isdigit()]
    for code in codes:
        if code.upper() != currency:
            raise MoneyError(
                f"the price {text!r} is in {code.upper()} but the circle uses {currency}; "
                f"write it like {example}",
                reason="wrong-currency",
            )
    amount = [w for w in words if w not in codes]
    match = _AMOUNT.fullmatch(amount[0]) if len(amount) == 1 else None
    if match is None:
        raise MoneyError(
            f"cannot read the price {text!r}; write it like {example}", reason="bad-price"
        )
    frac = match.group("frac") or ""
    if len(frac) > digits:
        raise MoneyError(
            f"{currency} has {digits} decimals but {text!r} has {len(frac)}; "
            f"write it like {example}",
            reason="too-many-decimals",
        )
    scale: int = 10**digits
    return int(match.group("whole")) * scale + int(frac.ljust(digits, "0") or "0")
