"""The demand curve and the clearing rule, kept incrementally.

Theory of operation: the counted pledges are kept in fill-priority order:
higher max price first, then earlier ``created``, then smaller pledge id.
Each pledge's place is ``(position, pledge id)`` with the integer position
``(MAX_MONEY - max_price) << 41 | created`` (plus one). The order is cut into
blocks of at most ``2 * _BLOCK`` pledges; each block keeps its pledges'
quantities and tolerances and, computed lazily, their running sums; a
Fenwick tree over the blocks holds each block's sums (packed in one integer,
quantity in the high bits). Adding or removing a pledge costs one
bisection and one list insertion in its block plus a Fenwick update (a
split rebuilds the small tree over the blocks); the demand at a price and
"the longest priority prefix that fits a capacity" cost a bisection over the
blocks, a Fenwick walk over them and a bisection in one block: logarithmic
in the number of pledges (issue 11 replaced a sparse Fenwick tree over the
91-bit position space, which made up to 91 dict nodes per pledge). The book
holds three list slots per pledge and no object of its own: the key is a
tuple that starts with the position and the pledge id, and the circle state
hands in its own record of the pledge as the key
(:meth:`DemandBook.add_keyed`); quantities and tolerances are usually small
integers, which Python shares.

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

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from ._messages import MAX_MONEY, MAX_TIME, Tier

__all__ = [
    "Clearing",
    "DemandBook",
    "Entry",
    "clear_tier",
    "pack_quantities",
    "priority_key",
    "unpack_position",
]

_TIME_BITS = MAX_TIME.bit_length()  # 41: MAX_TIME is 2**40
_TIME_MASK = (1 << _TIME_BITS) - 1
# Tolerances sum to at most MAX_QUANTITY per pledge: 64 bits hold any book's total.
_HALF = 64
_MASK = (1 << _HALF) - 1


def priority_key(max_price: int, created: int) -> int:
    """The position of a pledge in the fill order: smaller means filled first."""
    # ((MAX_MONEY - max_price) << 41 | created) + 1, as created < 2**41 - 1; the
    # "or" makes an integer one digit shorter than "+" would (the state keeps one
    # per pledge).
    return ((MAX_MONEY - max_price) << _TIME_BITS) | (created + 1)


def unpack_position(position: int) -> tuple[int, int]:
    """(max price, created) of a :func:`priority_key` position."""
    return MAX_MONEY - ((position - 1) >> _TIME_BITS), (position - 1) & _TIME_MASK


def pack_quantities(quantity: int, tolerance: int) -> int:
    """Quantity and tolerance in the one integer the book's block sums keep."""
    return (quantity << _HALF) | tolerance


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


_BLOCK = 128


class DemandBook:
    """Counted pledges in fill-priority order, with logarithmic updates and queries."""

    __slots__ = ("_blocks", "_count", "_firsts", "_sums", "_total", "_tree")

    def __init__(self) -> None:
        # Each block: keys, (position, pledge id, ...) sorted, with each pledge's
        # quantity and tolerance in two lists (small ints are shared objects:
        # one integer holding both would cost an object per pledge), and their
        # running sums (None until asked for). The Fenwick tree sums the blocks
        # packed (quantity << _HALF | tolerance): neither field of a sum of
        # non-negative entries ever borrows from the other.
        self._blocks: list[_Block] = []
        self._firsts: list[tuple[Any, ...]] = []
        self._sums: list[int] = []
        self._tree: list[int] = [0]
        self._count = 0
        self._total = 0

    def __len__(self) -> int:
        return self._count

    @property
    def total(self) -> int:
        """Units pledged by every counted pledge, whatever its price."""
        return self._total

    def _rebuild(self) -> None:
        """Recompute the block firsts and the Fenwick tree over the block sums."""
        self._firsts = [block.keys[0] for block in self._blocks]
        n = len(self._sums)
        tree = [0] * (n + 1)
        for i, value in enumerate(self._sums, 1):
            tree[i] += value
            parent = i + (i & -i)
            if parent <= n:
                tree[parent] += tree[i]
        self._tree = tree

    def _bump(self, index: int, delta: int) -> None:
        self._sums[index] += delta
        tree = self._tree
        n = len(tree) - 1
        i = index + 1
        while i <= n:
            tree[i] += delta
            i += i & -i

    def _blocks_before(self, index: int) -> int:
        """The packed sum of blocks ``0 .. index - 1``."""
        tree = self._tree
        both = 0
        i = index
        while i > 0:
            both += tree[i]
            i &= i - 1
        return both

    def add(self, entry: Entry) -> None:
        """Count a pledge (quantity above 0)."""
        key = (priority_key(entry.max_price, entry.created), entry.pledge)
        self.add_keyed(key, entry.quantity, entry.tolerance)

    def add_keyed(self, key: tuple[Any, ...], quantity: int, tolerance: int) -> None:
        """Count a pledge by its key (quantity above 0).

        ``key`` is a tuple that starts ``(position, pledge id)`` (further items
        are never compared: the id is unique). The circle state hands in its own
        record of the pledge, so the book makes no object per pledge.
        """
        packed = pack_quantities(quantity, tolerance)
        blocks = self._blocks
        if not blocks:
            blocks.append(_Block([key], [quantity], [tolerance]))
            self._sums.append(packed)
            self._rebuild()
        else:
            index = max(0, bisect_right(self._firsts, key) - 1)
            block = blocks[index]
            i = bisect_left(block.keys, key)
            block.keys.insert(i, key)
            block.quantities.insert(i, quantity)
            block.tolerances.insert(i, tolerance)
            block.running = None
            if i == 0:
                self._firsts[index] = key
            self._bump(index, packed)
            if len(block.keys) > 2 * _BLOCK:
                upper = _Block(
                    block.keys[_BLOCK:], block.quantities[_BLOCK:], block.tolerances[_BLOCK:]
                )
                del block.keys[_BLOCK:], block.quantities[_BLOCK:], block.tolerances[_BLOCK:]
                blocks.insert(index + 1, upper)
                self._sums[index : index + 1] = [block.packed_sum(), upper.packed_sum()]
                self._rebuild()
        self._count += 1
        self._total += quantity

    def remove(self, entry: Entry) -> None:
        """Stop counting a pledge added earlier with the same fields."""
        key = (priority_key(entry.max_price, entry.created), entry.pledge)
        self.remove_keyed(key, entry.quantity, entry.tolerance)

    def remove_keyed(self, key: tuple[Any, ...], quantity: int, tolerance: int) -> None:
        """Stop counting a pledge added with :meth:`add_keyed` (an equal key)."""
        index = bisect_right(self._firsts, key) - 1
        block = self._blocks[index] if index >= 0 else None
        i = -1 if block is None else bisect_left(block.keys, key)
        if block is None or i == len(block.keys) or block.keys[i] != key:
            raise KeyError(key[1].hex())
        if block.quantities[i] != quantity or block.tolerances[i] != tolerance:
            raise KeyError(key[1].hex())
        del block.keys[i], block.quantities[i], block.tolerances[i]
        block.running = None
        if not block.keys:
            del self._blocks[index], self._sums[index]
            self._rebuild()
        else:
            if i == 0:
                self._firsts[index] = block.keys[0]
            self._bump(index, -pack_quantities(quantity, tolerance))
        self._count -= 1
        self._total -= quantity

    def _prefix(self, bound: int) -> tuple[int, int]:
        """Quantity and tolerance of the pledges at positions up to ``bound``."""
        limit = (bound + 1,)
        index = bisect_left(self._firsts, limit) - 1
        if index < 0:
            return 0, 0
        block = self._blocks[index]
        both = self._blocks_before(index)
        quantity, tolerance = both >> _HALF, both & _MASK
        j = bisect_left(block.keys, limit)
        if j:
            running_q, running_t = block.sums()
            quantity += running_q[j - 1]
            tolerance += running_t[j - 1]
        return quantity, tolerance

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
        # More than the capacity is pledged at this price, so the cut falls before
        # the price bound: walk the Fenwick tree over the blocks to the last block
        # whose predecessors fit, then bisect that block's running sums.
        tree = self._tree
        n = len(tree) - 1
        index = 0
        both = 0
        step = 1 << n.bit_length()
        while step:
            nxt = index + step
            if nxt <= n and (both + tree[nxt]) >> _HALF <= capacity:
                index = nxt
                both += tree[nxt]
            step >>= 1
        quantity, tolerance = both >> _HALF, both & _MASK
        if index < len(self._blocks):
            running_q, running_t = self._blocks[index].sums()
            j = bisect_right(running_q, capacity - quantity)
            if j:
                quantity += running_q[j - 1]
                tolerance += running_t[j - 1]
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
        levels: dict[int, int] = {}
        for block in self._blocks:
            for key, quantity in zip(block.keys, block.quantities, strict=True):
                price = MAX_MONEY - ((key[0] - 1) >> _TIME_BITS)
                levels[price] = levels.get(price, 0) + quantity
        curve: list[tuple[int, int]] = []
        demand = 0
        for price in sorted(levels, reverse=True):
            demand += levels[price]
            curve.append((price, demand))
        return curve


class _Block:
    """A run of the book's pledges in priority order (see the module docstring)."""

    __slots__ = ("keys", "quantities", "running", "tolerances")

    def __init__(
        self, keys: list[tuple[Any, ...]], quantities: list[int], tolerances: list[int]
    ) -> None:
        self.keys = keys
        self.quantities = quantities
        self.tolerances = tolerances
        self.running: tuple[list[int], list[int]] | None = None

    def sums(self) -> tuple[list[int], list[int]]:
        """Running sums of the quantities and of the tolerances (kept until the block changes)."""
        if self.running is None:
            self.running = (list(accumulate(self.quantities)), list(accumulate(self.tolerances)))
        return self.running

    def packed_sum(self) -> int:
        """:func:`pack_quantities` of the block's total quantity and tolerance."""
        return pack_quantities(sum(self.quantities), sum(self.tolerances))


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
