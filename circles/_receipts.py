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
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import protocol

if TYPE_CHECKING:
    from ._node import Node

__all__ = ["RECEIPTS_TOPIC", "RECEIPT_PROTOCOL", "ReceiptBook", "verified_deals"]

log = logging.getLogger("circles.receipts")

RECEIPTS_TOPIC = "/buying-circles/1/receipts"
RECEIPT_PROTOCOL = "/buying-circles/receipt/1.0.0"
_FILE = "receipts.jsonl"


class ReceiptBook:
    """The receipts one data directory holds, by id, kept on disk."""

    def __init__(self, data_dir: Path) -> None:
        self._path = Path(data_dir) / _FILE
        self._receipts: dict[bytes, bytes] = {}
        if self._path.exists():
            for line in self._path.read_text(encoding="ascii", errors="replace").splitlines():
                with contextlib.suppress(ValueError, protocol.ProtocolError):
                    data = bytes.fromhex(line.strip())
                    self._receipts[protocol.envelope_id(data)] = data

    def add(self, data: bytes) -> protocol.Envelope[protocol.Receipt]:
        """Verify a receipt envelope and keep it (once); return it decoded."""
        envelope = protocol.decode_as(data, protocol.Receipt)
        if envelope.id not in self._receipts:
            with self._path.open("a", encoding="ascii") as file:
                file.write(data.hex() + "\n")
                file.flush()
                os.fsync(file.fileno())
            self._receipts[envelope.id] = data
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
