"""The member's own pledge sequence numbers in the store (the ``sequences`` table).

A number is saved before the pledge carrying it is signed, and an own pledge
raises its circle's counter when it is stored, so no number is handed out
twice (see :mod:`circles._store`). These run inside a write transaction
(:func:`circles._store_db._transaction`), with the store's lock held.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import protocol

from ._store_db import StoreError

__all__: list[str] = []

#: Largest pledge sequence number the protocol accepts.
_MAX_SEQ = 2**32 - 1


def _next_seq(db: sqlite3.Connection, circle: bytes, signer: bytes | None) -> int:
    """Hand out the next number for ``circle`` (above ``signer``'s stored pledges, if given)."""
    row = db.execute("SELECT last FROM sequences WHERE circle = ?", (circle,)).fetchone()
    last = 0 if row is None else int(row[0])
    if signer is not None:
        (stored,) = db.execute(
            "SELECT MAX(seq) FROM envelopes WHERE circle = ? AND kind = 'pledge' AND signer = ?",
            (circle, signer),
        ).fetchone()
        last = max(last, stored or 0)
    if last >= _MAX_SEQ:
        raise StoreError(
            f"circle {circle.hex()[:16]}… has used every pledge sequence "
            "number; this member cannot pledge in it again",
            reason="sequence-exhausted",
        )
    db.execute(
        "INSERT INTO sequences (circle, last) VALUES (?, ?)"
        " ON CONFLICT (circle) DO UPDATE SET last = excluded.last",
        (circle, last + 1),
    )
    return last + 1


def _raise_counters(db: sqlite3.Connection, own: list[protocol.Envelope[Any]]) -> None:
    """Raise each circle's counter to the sequence number of the own pledges among ``own``."""
    for envelope in own:
        message = envelope.message
        if isinstance(message, protocol.Pledge):
            db.execute(
                "INSERT INTO sequences (circle, last) VALUES (?, ?) ON CONFLICT (circle)"
                " DO UPDATE SET last = MAX(last, excluded.last)",
                (message.circle, message.seq),
            )


def _check_circle(circle: object) -> None:
    if type(circle) is not bytes or len(circle) != 32:
        raise ValueError("a circle is named by its 32-byte id (the id of its charter envelope)")
