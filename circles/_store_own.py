"""The member's own pledge sequence numbers in the store (the ``sequences`` table).

A number is saved before the pledge carrying it is signed, and an own pledge
raises its circle's counter when it is stored, so no number is handed out
twice (see :mod:`circles._store`). A circle's row is also made, at 0, when the
member founds it: a store that signed the charter has seen every pledge this
key made there. A circle with no row is one this store never pledged in: the
key may have pledged there from a store that was lost, so the node fetches the
circle's log from peers before it signs there (see :mod:`circles._node_own`).
These run inside a write transaction (:func:`circles._store_db._transaction`),
with the store's lock held.
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
        last = max(last, _highest_signed(db, circle, signer))
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


def _counted(db: sqlite3.Connection, circle: bytes) -> int | None:
    """The circle's counter, or None when this store never counted in it."""
    row = db.execute("SELECT last FROM sequences WHERE circle = ?", (circle,)).fetchone()
    return None if row is None else int(row[0])


def _highest_signed(db: sqlite3.Connection, circle: bytes, signer: bytes) -> int:
    """The highest sequence number the log shows ``signer`` signed in ``circle`` (0: none).

    Counts the signer's stored pledges and the pledges of its inside stored
    misbehaviour proofs: a pledge that lost to its twin may be kept only there.
    """
    (stored,) = db.execute(
        "SELECT MAX(seq) FROM envelopes WHERE circle = ? AND kind = 'pledge' AND signer = ?",
        (circle, signer),
    ).fetchone()
    highest = int(stored or 0)
    proofs = db.execute(
        "SELECT data FROM envelopes WHERE circle = ? AND kind = 'misbehaviour'", (circle,)
    )
    for (data,) in proofs:
        for inner in _proof_evidence(data):
            message = inner.message
            if (
                inner.signer == signer
                and isinstance(message, protocol.Pledge)
                and message.circle == circle
            ):
                highest = max(highest, message.seq)
    return highest


def _proof_evidence(data: bytes) -> list[protocol.UnverifiedEnvelope[Any]]:
    """The two envelopes a stored misbehaviour proof carries (none if it cannot be read).

    Not verified again: the store only keeps proofs that verified when taken,
    and a number counted here in excess only skips sequence numbers.
    """
    try:
        proof = protocol.decode_unverified(data).message
        if not isinstance(proof, protocol.Misbehaviour):
            return []
        return [protocol.decode_unverified(proof.first), protocol.decode_unverified(proof.second)]
    except protocol.ProtocolError:
        return []


def _raise_counters(db: sqlite3.Connection, own: list[protocol.Envelope[Any]]) -> None:
    """Raise each circle's counter to the sequence number of the own pledges among ``own``.

    An own charter makes its circle's counter (at 0): the store that signed a
    charter holds every pledge its key signed in that circle since.
    """
    for envelope in own:
        message = envelope.message
        if isinstance(message, protocol.Charter):
            db.execute(
                "INSERT OR IGNORE INTO sequences (circle, last) VALUES (?, 0)", (envelope.id,)
            )
        elif isinstance(message, protocol.Pledge):
            db.execute(
                "INSERT INTO sequences (circle, last) VALUES (?, ?) ON CONFLICT (circle)"
                " DO UPDATE SET last = MAX(last, excluded.last)",
                (message.circle, message.seq),
            )


def _check_circle(circle: object) -> None:
    if type(circle) is not bytes or len(circle) != 32:
        raise ValueError("a circle is named by its 32-byte id (the id of its charter envelope)")
