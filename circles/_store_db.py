"""The SQLite file under :class:`circles.Store`: its schema, opening it, write transactions.

Everything here talks to SQLite and nothing else: the envelope log
(:mod:`circles._store_log`) and the member's own counters
(:mod:`circles._store_own`) run their statements inside :func:`_transaction`,
and :class:`StoreError` is defined here because this is the layer every
failure comes up through.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ._errors import CirclesError

__all__ = ["SCHEMA_VERSION", "STORE_FILE", "StoreError"]

#: Name of the database file inside a data directory.
STORE_FILE = "store.sqlite3"
#: Schema version kept in ``PRAGMA user_version``.
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE envelopes (
    position INTEGER PRIMARY KEY,   -- arrival order, stable across reopening
    id       BLOB NOT NULL UNIQUE,  -- BLAKE2b-256 of data
    kind     TEXT NOT NULL,
    circle   BLOB,                  -- NULL: not known (a receipt for an unknown deal)
    signer   BLOB NOT NULL,
    seq      INTEGER,               -- a pledge's sequence number, else NULL
    ref      BLOB,                  -- a receipt's deal id, else NULL
    received INTEGER NOT NULL,      -- seconds since the epoch
    data     BLOB NOT NULL
);
CREATE INDEX envelopes_by_circle ON envelopes (circle);
CREATE INDEX envelopes_by_kind ON envelopes (kind);
CREATE INDEX envelopes_by_ref ON envelopes (ref) WHERE ref IS NOT NULL;
CREATE TABLE sequences (
    circle BLOB PRIMARY KEY,
    last   INTEGER NOT NULL          -- highest sequence number ever handed out
) WITHOUT ROWID;
CREATE TABLE joined (
    circle BLOB PRIMARY KEY,
    since  INTEGER NOT NULL          -- seconds since the epoch
) WITHOUT ROWID;
"""

#: Each later schema version's statements, applied in order to a store made at
#: the version before it (and after ``_SCHEMA`` to a new one). A step only adds.
_STEPS: dict[int, str] = {
    # 2: envelopes the node could not apply (an exception in the circle's rules):
    # the envelope stays in ``envelopes``; this row keeps it out of the state.
    2: """
CREATE TABLE set_aside (
    id     BLOB PRIMARY KEY,         -- the envelope's id (its row stays in envelopes)
    circle BLOB NOT NULL,
    reason TEXT NOT NULL,            -- what went wrong, for the member to read
    since  INTEGER NOT NULL          -- seconds since the epoch
) WITHOUT ROWID;
""",
}


class StoreError(CirclesError):
    """The store cannot be opened or written, or was used after close()."""

    reason = "store-error"


def _create_schema(db: sqlite3.Connection) -> None:
    _run(db, _SCHEMA)
    _upgrade(db, 1)


def _upgrade(db: sqlite3.Connection, version: int) -> None:
    """Bring a store at schema ``version`` up to :data:`SCHEMA_VERSION`, step by step."""
    for step in range(version + 1, SCHEMA_VERSION + 1):
        _run(db, _STEPS[step])
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _run(db: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _prepare(db: sqlite3.Connection, path: Path) -> bool:
    """Make ``db`` ready; True if it held no store and the schema was created now."""
    try:
        db.execute("PRAGMA busy_timeout = 10000")
        (mode,) = db.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            raise StoreError(
                f"{path} cannot use write-ahead logging (journal mode {mode}); put the data "
                "directory on a local file system",
                reason="no-wal",
            )
        # FULL: a commit is on disk, not only in the OS cache, when it returns.
        db.execute("PRAGMA synchronous = FULL")
        db.execute("BEGIN IMMEDIATE")
        try:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            created = int(version) == 0
            if created:
                _create_schema(db)
            elif version < SCHEMA_VERSION:
                _upgrade(db, version)
            elif version != SCHEMA_VERSION:
                raise StoreError(
                    f"{path} has schema version {version}, newer than this library's "
                    f"{SCHEMA_VERSION}; upgrade buying-circles to open it",
                    reason="newer-schema",
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    except sqlite3.DatabaseError as exc:
        raise StoreError(
            f"{path} is not a usable store ({exc}); move it away to start afresh",
            reason="unreadable",
        ) from None
    return created


@contextmanager
def _transaction(db: sqlite3.Connection, path: Path) -> Iterator[None]:
    """One write transaction; the write lock is taken first, so reads inside are current."""
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            # SQLite rolls back by itself after some errors (a full disk).
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise StoreError(
            f"cannot write {path}: {exc}; check free disk space and permissions",
            reason="unwritable",
        ) from None
