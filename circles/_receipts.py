"""Receipts: members' signed reports of fulfilment, kept and shared, and reputation from them.

A receipt names a deal, not a circle, so it does not travel on a circle's
topic. A member's node hands it to the vendor directly when connected
(:data:`RECEIPT_PROTOCOL`) and gossips it on :data:`RECEIPTS_TOPIC`; every
node running the command line keeps the receipts it hears in
``receipts.jsonl`` in its data directory (one hex envelope a line, appended,
so a torn last line after a crash is the only possible damage, and it is
skipped). A vendor's reputation is then computed by ``protocol`` from the
deals this node can verify and those receipts: a stranger's receipt counts
for nothing.

So a node keeps only receipts that can count: one naming a deal this node
holds, signed by a member of that deal (a signer of a pledge its certificate
counts), dated no more than five minutes ahead, at most
:data:`RECEIPTS_PER_MEMBER` per member and deal. Anything else is refused
(:class:`ReceiptRefused`), neither kept nor forwarded: otherwise anyone could
grow every node's ``receipts.jsonl`` without bound, one fsync per receipt.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import protocol

from ._errors import CirclesError

if TYPE_CHECKING:
    from ._node import Node

__all__ = [
    "RECEIPTS_PER_MEMBER",
    "RECEIPTS_TOPIC",
    "RECEIPT_PROTOCOL",
    "ReceiptBook",
    "ReceiptRefused",
    "deal_members",
    "verified_deals",
]

log = logging.getLogger("circles.receipts")

RECEIPTS_TOPIC = "/buying-circles/1/receipts"
RECEIPT_PROTOCOL = "/buying-circles/receipt/1.0.0"
_FILE = "receipts.jsonl"
#: Receipts kept per member and deal: the latest counts, a few let a member correct it.
RECEIPTS_PER_MEMBER = 4
#: Receipts dated further ahead than this (seconds, by our clock) are refused.
_MAX_FUTURE_SKEW = 300

MembersOf = Callable[[bytes], "frozenset[bytes] | None"]
"""The members of a deal this node holds, by deal id; None for a deal it does not hold."""


class ReceiptRefused(CirclesError):
    """A receipt this node does not keep, because it could never count.

    Reasons: "unknown-deal" (this node holds no such deal), "not-a-member"
    (the signer's pledge is not counted by the deal), "too-many-receipts"
    (the member already has :data:`RECEIPTS_PER_MEMBER` receipts kept for the
    deal), "from-the-future" (dated more than five minutes ahead).
    """

    reason = "receipt-refused"


class ReceiptBook:
    """The receipts one data directory holds, by id, kept on disk."""

    def __init__(self, data_dir: Path) -> None:
        self._path = Path(data_dir) / _FILE
        self._receipts: dict[bytes, bytes] = {}
        # (deal, signer) -> receipts kept: what RECEIPTS_PER_MEMBER bounds.
        self._per_member: dict[tuple[bytes, bytes], int] = {}
        if self._path.exists():
            for line in self._path.read_text(encoding="ascii", errors="replace").splitlines():
                with contextlib.suppress(ValueError, protocol.ProtocolError):
                    data = bytes.fromhex(line.strip())
                    unverified = protocol.decode_unverified(data)
                    message_id = protocol.envelope_id(data)
                    if message_id in self._receipts:
                        continue
                    self._receipts[message_id] = data
                    deal = getattr(unverified.message, "deal", b"")
                    slot = (deal, unverified.signer)
                    self._per_member[slot] = self._per_member.get(slot, 0) + 1

    def check(
        self, data: bytes, *, members_of: MembersOf, now: int
    ) -> protocol.Envelope[protocol.Receipt]:
        """Verify a receipt and raise :class:`ReceiptRefused` unless it would be kept.

        A receipt already held passes (a repeat is harmless).
        """
        envelope = protocol.decode_as(data, protocol.Receipt)
        if envelope.id in self._receipts:
            return envelope
        receipt = envelope.message
        if receipt.created > now + _MAX_FUTURE_SKEW:
            raise ReceiptRefused(
                "the receipt is dated more than five minutes ahead", reason="from-the-future"
            )
        members = members_of(receipt.deal)
        if members is None:
            raise ReceiptRefused(
                f"this node holds no deal {receipt.deal.hex()[:16]}…", reason="unknown-deal"
            )
        if envelope.signer not in members:
            raise ReceiptRefused(
                "only a member whose pledge the deal counts may sign its receipt",
                reason="not-a-member",
            )
        if self._per_member.get((receipt.deal, envelope.signer), 0) >= RECEIPTS_PER_MEMBER:
            raise ReceiptRefused(
                f"a member's receipts for one deal are kept {RECEIPTS_PER_MEMBER} at most; "
                "the latest of them counts",
                reason="too-many-receipts",
            )
        return envelope

    def add(
        self, data: bytes, *, members_of: MembersOf, now: int
    ) -> protocol.Envelope[protocol.Receipt]:
        """Keep a receipt (once) if it can count (see :meth:`check`); return it decoded."""
        envelope = self.check(data, members_of=members_of, now=now)
        if envelope.id not in self._receipts:
            with self._path.open("a", encoding="ascii") as file:
                file.write(data.hex() + "\n")
                file.flush()
                os.fsync(file.fileno())
            self._receipts[envelope.id] = data
            slot = (envelope.message.deal, envelope.signer)
            self._per_member[slot] = self._per_member.get(slot, 0) + 1
        return envelope

    def all(self) -> list[bytes]:
        """Every receipt envelope held."""
        return list(self._receipts.values())

    def for_deal(self, deal: bytes) -> list[protocol.Envelope[protocol.Receipt]]:
        """The receipts naming ``deal``."""
        found = [protocol.decode_as(d, protocol.Receipt) for d in self._receipts.values()]
        return [e for e in found if e.message.deal == deal]


def verified_deals(node: Node) -> list[protocol.VerifiedDeal]:
    """Every deal this node holds with its certificate and pledges, checked."""
    deals = []
    for circle in node.circles():
        state: Any = node.circle(circle)
        deal = state.deal
        if deal is None:
            continue
        certificate = next(
            (c for c in node.certificates(circle) if c.id == deal.message.certificate), None
        )
        if certificate is None:
            continue
        pledges = [state.pledge(a.pledge) for a in certificate.message.allocations]
        try:
            deals.append(
                protocol.verify_deal(
                    deal.data, certificate.data, [p.data for p in pledges if p is not None]
                )
            )
        except protocol.ProtocolError as exc:
            log.warning("deal %s does not verify: %s", deal.id.hex()[:12], exc)
    return deals


def deal_members(node: Node) -> MembersOf:
    """``members_of`` for :meth:`ReceiptBook.add`: the members of the deals ``node`` holds.

    A deal's members are the signers of the pledges its certificate counts; a
    deal whose certificate or pledges the node lacks has none it can name yet.
    """

    def members_of(deal_id: bytes) -> frozenset[bytes] | None:
        for circle in node.circles():
            state: Any = node.circle(circle)
            deal = state.deal
            if deal is None or deal.id != deal_id:
                continue
            certificate = next(
                (c for c in node.certificates(circle) if c.id == deal.message.certificate), None
            )
            if certificate is None:
                return frozenset()
            pledges = (state.pledge(a.pledge) for a in certificate.message.allocations)
            return frozenset(p.signer for p in pledges if p is not None)
        return None

    return members_of
