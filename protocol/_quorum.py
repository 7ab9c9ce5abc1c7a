"""The demand curve and the clearing rule, kept incrementally.

Theory of operation: every counted pledge sits at one position of a fixed,
very large index space whose order *is* the fill priority: higher max price
first, then earlier ``created``, then smaller pledge id. The position is the
integer ``(MAX_MONEY - max_price) << 41 | created`` (plus one, Fenwick trees
count from 1); pledges that share a position (same price, same second) form a
small group kept sorted by id. One sparse Fenwick tree (a dict) over that
space holds the quantities and the tolerances, packed in one integer per
node, so adding or removing a pledge,
the demand at a price, and "the longest priority prefix that fits a
capacity" each cost a number of steps bounded by the key width (91 bits),
whatever the number of pledges: a new pledge never rebuilds anything.

The clearing rule for one tier (documented in docs/circles.md):

- eligible: the pledges whose max price is at least the tier price; they form
  a prefix of the priority order;
- admitted: the longest prefix of the eligible pledges whose quantities fit
  the capacity (the fill stops at the first pledge that does not fit: a later,
  smaller pledge never jumps the queue);
- need: the tier's minimum and the circle's target (the larger), or only the
  tier's minimum when the circle settles for a smaller tier;
- if the admitted quantities fall short of the need, the admitted pledges'
  tolerances are drawn, in priority order, until the need is met exactly;
- the tier clears when the total reaches the need (never above capacity).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass

from ._messages import MAX_MONEY, MAX_TIME, Tier

__all__ = ["Clearing", "DemandBook", "Entry", "clear_tier", "priority_key"]

_TIME_BITS = MAX_TIME.bit_length()  # 41: MAX_TIME is 2**40
_KEY_BITS = (MAX_MONEY.bit_length()) + _TIME_BITS
_SIZE = 1 << _KEY_BITS
# Tolerances sum to at most MAX_QUANTITY per pledge: 64 bits hold any book's total.
_HALF = 64
_MASK = (1 << _HALF) - 1


def priority_key(max_price: int, created: int) -> int:
    """The Fenwick position of a pledge: smaller means filled first."""
    return (((MAX_MONEY - max_price) << _TIME_BITS) | created) + 1


def _price_bound(price: int) -> int:
    """The last position whose pledges have a max price of at least ``price``."""
    return (((MAX_MONEY - price) << _TIME_BITS) | ((1 << _TIME_BITS) - 1)) + 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One counted pledge as the demand book sees it."""

    pledge: bytes
    """Id of the pledge envelope."""
    quantity: int
    """Units pledged (above 0)."""
    max_price: int
    """Highest unit price the member accepts."""
    tolerance: int
    """Extra units the member also takes if that lets a tier fill."""
    created: int
    """When the member signed the pledge (second key of the fill order)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Clearing:
    """A tier that clears: its price and the units the circle takes."""

    offer: bytes
    """Id of the offer envelope."""
    unit_price: int
    """The clearing unit price (the tier's)."""
    min_quantity: int
    """The tier's minimum quantity."""
    total: int
    """Units taken: the admitted quantities, topped up by tolerance to the need."""
    smaller_tier: bool
    """True when the circle's target is not met and the circle settles for the tier."""


class DemandBook:
    """Counted pledges in fill-priority order, with O(key width) updates and queries."""

    __slots__ = ("_count", "_groups", "_total", "_tree")

    def __init__(self) -> None:
        # Each node holds quantity << _HALF | tolerance: one dict operation updates
        # both sums (neither field of a sum of non-negative entries ever goes negative).
        self._tree: dict[int, int] = {}
        # position -> [(pledge id, quantity, tolerance)], sorted by id
        self._groups: dict[int, list[tuple[bytes, int, int]]] = {}
        self._count = 0
        self._total = 0

    def __len__(self) -> int:
        return self._count

    @property
    def total(self) -> int:
        """Units pledged by every counted pledge, whatever its price."""
        return self._total

    def _update(self, pos: int, quantity: int, tolerance: int) -> None:
        tree = self._tree
        delta = (quantity << _HALF) + tolerance
        while pos <= _SIZE:
            tree[pos] = tree.get(pos, 0) + delta
            pos += pos & -pos

    def add(self, entry: Entry) -> None:
        """Count a pledge (quantity above 0)."""
        pos = priority_key(entry.max_price, entry.created)
        insort(self._groups.setdefault(pos, []), (entry.pledge, entry.quantity, entry.tolerance))
        self._update(pos, entry.quantity, entry.tolerance)
        self._count += 1
        self._total += entry.quantity

    def remove(self, entry: Entry) -> None:
        """Stop counting a pledge added earlier with the same fields."""
        pos = priority_key(entry.max_price, entry.created)
        group = self._groups[pos]
        item = (entry.pledge, entry.quantity, entry.tolerance)
        i = bisect_left(group, item)
        if i == len(group) or group[i] != item:
            raise KeyError(entry.pledge.hex())
        del group[i]
        if not group:
            del self._groups[pos]
        self._update(pos, -entry.quantity, -entry.tolerance)
        self._count -= 1
        self._total -= entry.quantity

    def _prefix(self, pos: int) -> tuple[int, int]:
        tree = self._tree
        both = 0
        while pos > 0:
            both += tree.get(pos, 0)
            pos &= pos - 1
        return both >> _HALF, both & _MASK

    def demand(self, price: int) -> int:
        """Units pledged at a max price of ``price`` or more."""
        return self._prefix(_price_bound(price))[0]

    def with_tolerance(self, price: int) -> int:
        """Units pledged at ``price`` or more, plus every such pledge's tolerance."""
        q, t = self._prefix(_price_bound(price))
        return q + t

    def admitted(self, price: int, capacity: int) -> tuple[int, int]:
        """Quantity and tolerance of the pledges admitted at ``price`` within ``capacity``."""
        quantity, tolerance = self._prefix(_price_bound(price))
        if quantity <= capacity:
            return quantity, tolerance
        # Descend the quantity tree to the last position whose prefix fits.
        tree = self._tree
        pos = 0
        room = capacity
        quantity = tolerance = 0
        for bit in range(_KEY_BITS - 1, -1, -1):
            nxt = pos + (1 << bit)
            both = tree.get(nxt)
            if both is None:
                pos = nxt
            elif both >> _HALF <= room:
                pos = nxt
                room -= both >> _HALF
                quantity += both >> _HALF
                tolerance += both & _MASK
        # pos + 1 holds the group that crosses the capacity: take its pledges by id.
        for _, q, t in self._groups[pos + 1]:
            if q > room:
                break
            room -= q
            quantity += q
            tolerance += t
        return quantity, tolerance

    def clear(
        self, *, offer: bytes, tiers: tuple[Tier, ...], capacity: int, target: int, relaxed: bool
    ) -> Clearing | None:
        """The cheapest tier of an offer that clears, or None (rule in the module docstring)."""
        for tier in reversed(tiers):
            # The target first; a relaxed circle falls back to the tier's minimum alone.
            needs = [max(tier.min_quantity, target)]
            if relaxed and tier.min_quantity < target:
                needs.append(tier.min_quantity)
            reach = self.with_tolerance(tier.unit_price)
            for need in needs:
                if need > capacity or reach < need:
                    continue
                quantity, tolerance = self.admitted(tier.unit_price, capacity)
                total = quantity if quantity >= need else min(need, quantity + tolerance)
                if total >= need:
                    return Clearing(
                        offer=offer,
                        unit_price=tier.unit_price,
                        min_quantity=tier.min_quantity,
                        total=total,
                        smaller_tier=total < target,
                    )
        return None

    def curve(self) -> list[tuple[int, int]]:
        """The demand curve: (price, demand at that price) for each distinct max price."""
        prices = sorted(
            {MAX_MONEY - ((pos - 1) >> _TIME_BITS) for pos in self._groups}, reverse=True
        )
        return [(p, self.demand(p)) for p in prices]


def clear_tier(
    entries: list[Entry], *, tier: Tier, capacity: int, target: int, relaxed: bool
) -> list[tuple[Entry, int]] | None:
    """The allocations of one tier (entries in any order), or None if it does not clear.

    This is the reference form of :meth:`DemandBook.clear` (a sort, no index):
    certificates are assembled and checked with it.
    """
    need = tier.min_quantity if relaxed else max(tier.min_quantity, target)
    if need > capacity:
        return None
    eligible = sorted(
        (e for e in entries if e.max_price >= tier.unit_price),
        key=lambda e: (-e.max_price, e.created, e.pledge),
    )
    admitted: list[Entry] = []
    room = capacity
    for entry in eligible:
        if entry.quantity > room:
            break
        room -= entry.quantity
        admitted.append(entry)
    base = capacity - room
    missing = max(0, need - base)
    allocations: list[tuple[Entry, int]] = []
    for entry in admitted:
        extra = min(entry.tolerance, missing)
        missing -= extra
        allocations.append((entry, entry.quantity + extra))
    if missing > 0:
        return None
    return allocations
