"""A vendor run from a catalog file: offers to circles that want its products.

Theory of operation: the vendor's node hears every charter on the announce
topic. For each circle whose title or tags name one of the catalog's products,
in the product's currency, before the pledge deadline, it joins the circle and
offers the product's volume tiers (with the list price as a first tier of one
unit). The node countersigns every valid certificate for its own offers
(``auto_countersign``), which is what makes the deal binding.

The strategy decides how the tiers move while the circle has not reached
quorum: "fixed" never moves; "boulware", "linear" and "conceder" lower every
tier price from its catalog value toward the product's floor as
``progress ** (1 / e)`` of the time from the charter to its deadline (e = 0.2,
1 and 3: Boulware holds out and concedes late, a conceder early). A new offer
is only made once prices have moved by at least ``step`` (a share of the list
price), so the vendor does not flood the circle's topic.

Catalog (TOML)::

    [vendor]
    strategy = "boulware"      # fixed | boulware | linear | conceder
    step = 0.02                # re-offer once prices fell by 2% of list

    [[products]]
    name = "Arabica beans, 1 kg"
    match = ["coffee", "arabica"]
    currency = "EUR"
    list_price = "24.00"
    floor = "17.00"            # never offered below this (default: the lowest tier price)
    capacity = 200             # most units for one circle
    stock = 500                # units to sell in all, across circles (default: capacity)
    tiers = [[10, "21.00"], [30, "19.00"]]
    terms = "delivered within 7 days, pay on delivery"

Stock: every offer holds its capacity of the product's ``stock`` until its
circle closes with another vendor, expires or is cancelled; a deal the vendor
countersigns uses up its total for good. So no two circles are offered the
same units, and a circle is offered at most what is left (see
:class:`circles._vendor_agent.StockLedger`). What is held and sold is read
from the vendor's own offers and deals in its data directory, so a restart
keeps it; raise ``stock`` when you restock.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import protocol

from ._errors import CirclesError
from ._money import MoneyError, parse_money

__all__ = [
    "STRATEGIES",
    "Catalog",
    "CatalogError",
    "Product",
    "StockError",
    "concede",
    "load_catalog",
]

log = logging.getLogger("circles.vendor")

#: Concession exponent e of each strategy (None: never concede).
STRATEGIES: dict[str, float | None] = {
    "fixed": None,
    "boulware": 0.2,
    "linear": 1.0,
    "conceder": 3.0,
}


class CatalogError(CirclesError):
    """A catalog file that cannot be used; the message names the entry to fix."""

    reason = "bad-catalog"


class StockError(CirclesError):
    """A vendor will not offer to, or sign for, a circle: not enough stock is left.

    Reasons: "out-of-stock" (nothing left to offer the circle),
    "over-stock" (a certificate's total is more than what is left for it).
    """

    reason = "out-of-stock"


@dataclass(frozen=True, slots=True, kw_only=True)
class Product:
    """One product of a vendor's catalog, prices in minor units."""

    name: str
    """What the vendor sells, in the vendor's words (the offer's product)."""
    match: tuple[str, ...]
    """Lowercase words; a circle whose title or tags contain one is asking for this."""
    currency: str
    """ISO 4217 code of every price."""
    list_price: int
    """The ordinary unit price, offered to a single unit."""
    floor: int
    """The lowest unit price the vendor will ever offer."""
    capacity: int
    """Most units the vendor supplies to one circle."""
    tiers: tuple[tuple[int, int], ...]
    """(min quantity, unit price) volume tiers, after the list-price tier."""
    terms: str
    """Delivery and payment terms."""
    stock: int | None = None
    """Units the vendor has to sell in all, across circles; None: :attr:`capacity`."""

    @property
    def units(self) -> int:
        """The stock: units to sell in all, across circles."""
        return self.capacity if self.stock is None else self.stock

    def wanted_by(self, charter: protocol.Charter) -> bool:
        """Whether ``charter`` asks for this product, in its currency."""
        if charter.currency != self.currency:
            return False
        words = " ".join((charter.title, *charter.tags)).lower()
        return any(word in words for word in self.match)

    def offer_tiers(self, share: float, capacity: int | None = None) -> list[tuple[int, int]]:
        """Tiers with every price moved ``share`` (0..1) of the way to the floor.

        Only tiers within ``capacity`` (default: the product's) are kept.
        """
        most = self.capacity if capacity is None else min(capacity, self.capacity)
        tiers = [(1, self.list_price), *self.tiers]
        moved = [(q, p - int((p - self.floor) * share) if p > self.floor else p) for q, p in tiers]
        # Prices that meet at the floor would no longer strictly decrease: keep the first.
        kept: list[tuple[int, int]] = []
        for quantity, price in moved:
            if quantity <= most and (not kept or price < kept[-1][1]):
                kept.append((quantity, price))
        return kept


@dataclass(frozen=True, slots=True, kw_only=True)
class Catalog:
    """A vendor's catalog: products and a strategy."""

    products: tuple[Product, ...]
    """The products, in file order (the first that matches a circle is offered)."""
    strategy: str
    """One of :data:`STRATEGIES`."""
    step: float
    """Re-offer once prices fell by this share of the list price."""

    def product_for(self, charter: protocol.Charter) -> Product | None:
        """The first product ``charter`` asks for, or None."""
        return next((p for p in self.products if p.wanted_by(charter)), None)


def concede(strategy: str, progress: float) -> float:
    """Share of the way from catalog prices to the floor at ``progress`` (0..1) of the time."""
    e = STRATEGIES[strategy]
    if e is None:
        return 0.0
    return float(min(max(progress, 0.0), 1.0) ** (1.0 / e))


def load_catalog(path: Path) -> Catalog:
    """Read and check a catalog file; raise :class:`CatalogError` naming what to fix."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(f"cannot read the catalog {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"the catalog {path} is not valid TOML: {exc}") from None
    vendor = raw.get("vendor", {})
    strategy = vendor.get("strategy", "fixed")
    if strategy not in STRATEGIES:
        raise CatalogError(
            f"unknown strategy {strategy!r} in {path}; use one of {', '.join(STRATEGIES)}"
        )
    step = vendor.get("step", 0.02)
    if not isinstance(step, int | float) or not 0 <= step < 1:
        raise CatalogError(f"vendor.step in {path} must be a share between 0 and 1, like 0.02")
    entries = raw.get("products")
    if not isinstance(entries, list) or not entries:
        raise CatalogError(f"the catalog {path} lists no [[products]]; see docs/quickstart.md")
    products = tuple(_product(entry, f"{path}, product {i + 1}") for i, entry in enumerate(entries))
    return Catalog(products=products, strategy=strategy, step=float(step))


def _product(entry: Any, where: str) -> Product:
    try:
        name = str(entry["name"])
        currency = str(entry["currency"])
        list_price = parse_money(str(entry["list_price"]), currency)
        capacity = int(entry["capacity"])
        stock = int(entry["stock"]) if "stock" in entry else None
        tiers = tuple((int(q), parse_money(str(p), currency)) for q, p in entry.get("tiers", ()))
        match = tuple(str(w).lower() for w in entry.get("match", [name]))
        terms = str(entry.get("terms", ""))
    except KeyError as exc:
        raise CatalogError(f"{where} has no {exc.args[0]!r}") from None
    except MoneyError as exc:
        raise CatalogError(f"{where}: {exc}") from None
    except (TypeError, ValueError):
        raise CatalogError(
            f"{where}: capacity and stock must be whole numbers and tiers a list of "
            '[min_quantity, "price"] pairs'
        ) from None
    quantities = [1, *(q for q, _ in tiers)]
    prices = [list_price, *(p for _, p in tiers)]
    try:
        floor = parse_money(str(entry["floor"]), currency) if "floor" in entry else min(prices)
    except MoneyError as exc:
        raise CatalogError(f"{where}: {exc}") from None
    if quantities != sorted(set(quantities)) or prices != sorted(set(prices), reverse=True):
        raise CatalogError(
            f"{where}: tiers need growing quantities above 1 and prices falling below the "
            "list price"
        )
    if not 0 < floor <= min(prices):
        raise CatalogError(f"{where}: floor must be above zero and at most the lowest tier price")
    if capacity < 1:
        raise CatalogError(f"{where}: capacity must be at least 1")
    if stock is not None and stock < 0:
        raise CatalogError(f"{where}: stock must be at least 0 (0: sold out)")
    return Product(
        name=name,
        match=match,
        currency=currency,
        list_price=list_price,
        floor=floor,
        capacity=capacity,
        tiers=tiers,
        terms=terms,
        stock=stock,
    )
