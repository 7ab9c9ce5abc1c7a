"""The envelope log in the store: one row per verified envelope, in arrival order.

The statements :class:`circles.Store` runs on the ``envelopes`` table, and
:class:`StoredEnvelope`, the row as the node reads it back. Callers hold the
store's lock and, for writes, a transaction (:func:`circles._store_db._transaction`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import protocol

from ._node_admission import circle_of

__all__ = ["SetAside", "StoredEnvelope"]

#: Ids per ``IN (...)`` query; below SQLite's historical 999-variable limit.
_CHUNK = 500

_COLUMNS = "id, kind, circle, signer, received, data"
_Row = tuple[bytes, str, "bytes | None", bytes, int, bytes]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredEnvelope:
    """One envelope as the store keeps it, with the columns the node queries by."""

    id: bytes
    """The message id (BLAKE2b-256 of ``data``)."""
    kind: str
    """The message kind ("charter", "pledge", ...)."""
    circle: bytes | None
    """The circle it belongs to, or None when not known (a receipt for an unseen deal)."""
    signer: bytes
    """The 32-byte public key that signed it."""
    received: int
    """When this store first received it, in seconds since the epoch."""
    data: bytes
    """The envelope bytes, exactly as verified."""


def _record(row: _Row) -> StoredEnvelope:
    return StoredEnvelope(
        id=row[0], kind=row[1], circle=row[2], signer=row[3], received=row[4], data=row[5]
    )


def _insert(db: sqlite3.Connection, batch: list[tuple[protocol.Envelope[Any], int]]) -> None:
    deals: list[tuple[bytes, bytes]] = []
    for envelope, received in batch:
        message = envelope.message
        circle = circle_of(envelope)
        ref: bytes | None = None
        if isinstance(message, protocol.Receipt):
            ref = message.deal
            row = db.execute(
                "SELECT circle FROM envelopes WHERE id = ? AND kind = 'deal'", (ref,)
            ).fetchone()
            circle = None if row is None else row[0]
        seq = message.seq if isinstance(message, protocol.Pledge) else None
        cursor = db.execute(
            "INSERT OR IGNORE INTO envelopes"
            " (id, kind, circle, signer, seq, ref, received, data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                envelope.id,
                envelope.kind,
                circle,
                envelope.signer,
                seq,
                ref,
                received,
                envelope.data,
            ),
        )
        if cursor.rowcount and isinstance(message, protocol.Deal):
            deals.append((message.circle, envelope.id))
    # Receipts that arrived before their deal learn its circle now.
    db.executemany(
        "UPDATE envelopes SET circle = ? WHERE ref = ? AND kind = 'receipt' AND circle IS NULL",
        deals,
    )


def _delete(db: sqlite3.Connection, ids: Sequence[bytes]) -> int:
    """Delete the envelopes with these (distinct) ids; returns how many were stored."""
    removed = 0
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        cursor = db.execute(f"DELETE FROM envelopes WHERE id IN ({marks})", chunk)
        removed += cursor.rowcount
    return removed


def _positioned(db: sqlite3.Connection, ids: Sequence[bytes]) -> list[tuple[int, _Row]]:
    """The stored rows among these (distinct) ids, each with its position, unsorted."""
    found: list[tuple[int, _Row]] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        found.extend(
            (row[0], row[1:])
            for row in db.execute(
                f"SELECT position, {_COLUMNS} FROM envelopes WHERE id IN ({marks})",
                chunk,
            )
        )
    return found


def _exists(db: sqlite3.Connection, message_id: bytes) -> bool:
    return db.execute("SELECT 1 FROM envelopes WHERE id = ?", (message_id,)).fetchone() is not None


def _check_envelope(envelope: object) -> None:
    if not isinstance(envelope, protocol.Envelope):
        raise TypeError(
            f"the store keeps verified envelopes (protocol.Envelope from protocol.decode or "
            f"protocol.seal), not {type(envelope).__name__}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SetAside:
    """A stored envelope the node could not apply: kept, but out of its circle's state.

    The node sets an envelope aside when applying it to its circle raised (a
    fault in the circle's rules, not a refusal, which is an event). It is not
    applied at start, served by sync, forwarded or fetched again.
    """

    id: bytes
    """The envelope's message id (the envelope stays in the store)."""
    circle: bytes
    """The circle it belongs to."""
    reason: str
    """What went wrong, in words."""
    since: int
    """When it was set aside, in seconds since the epoch."""


def _set_aside(db: sqlite3.Connection, entry: SetAside) -> None:
    db.execute(
        "INSERT OR IGNORE INTO set_aside (id, circle, reason, since) VALUES (?, ?, ?, ?)",
        (entry.id, entry.circle, entry.reason, entry.since),
    )


_SET_ASIDE_QUERY = "SELECT id, circle, reason, since FROM set_aside ORDER BY since, id"


def _set_aside_record(row: tuple[bytes, bytes, str, int]) -> SetAside:
    return SetAside(id=row[0], circle=row[1], reason=row[2], since=row[3])
