"""Caps: how much of each kind a circle keeps, per key and per circle.

Theory of operation: every cap keeps the best few of a group by a total
order fixed in the protocol, never "first come". One exception is the lock:
what a held deal's held certificate names (its pledges and its offer), and a
certificate a held deal is over, are kept beyond their caps, so that no party
to a deal undoes it with more of its own messages; and a vendor with a
counted offer needs no place among the deal signers. A message dropped
*before* the deal that pins it arrived is therefore not dropped from every
larger set: a node discards what its state drops but does not remember it as
refused, and sync brings it back. The state is a function of the set once
every message has also been delivered after the deal that pins it (at most
two more deliveries: tests/protocol/test_circle_caps_properties.py).

Per circle, where the group is "keys", keys are ranked by a lottery fixed
per circle: BLAKE2b-256 of the circle id and the key, smallest first. It
does not reward backdating ``created`` nor a key's place in time; it does
let whoever makes many keys take slots in proportion (throwaway keys are
the next issue's topic). The numbers are published in docs/protocol.md.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, insort

__all__ = [
    "CERTIFICATES_PER_KEY",
    "CERTIFICATE_SIGNERS_PER_CIRCLE",
    "DEALS_PER_KEY",
    "DEAL_SIGNERS_PER_CIRCLE",
    "EXTENSIONS_PER_CIRCLE",
    "INVITERS_PER_CIRCLE",
    "INVITES_PER_KEY",
    "OFFERS_PER_KEY",
    "PLEDGES_PER_SEQ",
    "PLEDGE_SEQS_PER_KEY",
    "PLEDGING_KEYS_PER_CIRCLE",
    "PROOFS_PER_OFFENDER",
    "RFQS_PER_KEY",
    "RFQ_SIGNERS_PER_CIRCLE",
    "VENDORS_PER_CIRCLE",
    "KeyLottery",
    "lottery_rank",
]

#: A key's pledges are kept at its this many highest sequence numbers.
PLEDGE_SEQS_PER_KEY = 16
#: Pledges kept per (key, seq): two (the smallest ids) prove equivocation.
PLEDGES_PER_SEQ = 2
#: Keys whose pledges a circle keeps (lottery rank).
PLEDGING_KEYS_PER_CIRCLE = 100_000
#: Offers kept per vendor key: the newest by (created, id) supersedes the rest.
OFFERS_PER_KEY = 1
#: Vendor keys whose offers a circle keeps (lottery rank).
VENDORS_PER_CIRCLE = 64
#: Certificates kept per signer: the newest by (created, id).
CERTIFICATES_PER_KEY = 4
#: Keys whose certificates a circle keeps (lottery rank).
CERTIFICATE_SIGNERS_PER_CIRCLE = 256
#: Deals kept per signer: the cheapest by (unit price, created, id), the closing order.
DEALS_PER_KEY = 4
#: Keys whose deals a circle keeps (lottery rank).
DEAL_SIGNERS_PER_CIRCLE = 64
#: Invites kept per inviter: one per invitee (smallest id), this many invitees (smallest ids).
INVITES_PER_KEY = 1_000
#: Keys whose invites a circle keeps (lottery rank).
INVITERS_PER_CIRCLE = 1_000
#: Valid extensions kept: two (the smallest ids) prove the founder equivocated.
EXTENSIONS_PER_CIRCLE = 2
#: Misbehaviour proofs kept per offender: the one with the smallest envelope id.
PROOFS_PER_OFFENDER = 1
#: Open requests for quote kept per key: the newest by (created, id).
RFQS_PER_KEY = 1
#: Keys whose open requests for quote a circle keeps (lottery rank).
RFQ_SIGNERS_PER_CIRCLE = 16


def lottery_rank(circle: bytes, key: bytes) -> bytes:
    """A key's rank in a circle's per-circle caps: smaller is kept first."""
    return hashlib.blake2b(circle + key, digest_size=32).digest()


class KeyLottery:
    """The keys a circle keeps for one kind: at most ``limit``, smallest rank first."""

    __slots__ = ("_circle", "_keys", "_limit", "_ranks")

    def __init__(self, circle: bytes, limit: int) -> None:
        self._circle = circle
        self._limit = limit
        self._ranks: list[bytes] = []
        self._keys: dict[bytes, bytes] = {}  # rank -> key

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and lottery_rank(self._circle, key) in self._keys

    def remove(self, key: bytes) -> None:
        """Free ``key``'s place (it no longer needs one)."""
        rank = lottery_rank(self._circle, key)
        if self._keys.pop(rank, None) is not None:
            del self._ranks[bisect_left(self._ranks, rank)]

    def admit(self, key: bytes) -> tuple[bool, bytes | None]:
        """(whether ``key`` is kept, the key that lost its place to it or None)."""
        rank = lottery_rank(self._circle, key)
        if rank in self._keys:
            return True, None
        if len(self._ranks) >= self._limit and rank > self._ranks[-1]:
            return False, None
        insort(self._ranks, rank)
        self._keys[rank] = key
        if len(self._ranks) > self._limit:
            last = self._ranks.pop()
            return True, self._keys.pop(last)
        return True, None
