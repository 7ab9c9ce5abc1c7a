"""Persistence: every verified envelope in one SQLite file per data directory.

Theory of operation: the store keeps envelopes, not state. The node rebuilds
each circle's state at start by replaying :meth:`Store.envelopes` through
``protocol``, so the only things that must survive a crash are the envelopes
themselves and the member's per-circle pledge counter.

Two kinds of write have different durability needs:

* the node's own messages (:meth:`Store.put_own`) and its sequence counter
  (:meth:`Store.reserve_seq`) are committed with ``synchronous=FULL`` before
  the call returns. The counter is saved *before* a pledge is signed, so a
  crash between signing and storing can waste a sequence number but never
  reuse one: the node cannot equivocate by accident. Own pledges are on disk
  before they are published.
* envelopes received from peers (:meth:`Store.put`) are batched: they are
  committed when the batch is full, when its oldest entry is older than
  ``max_delay`` (checked on every call), on :meth:`Store.flush`, before any
  read, and with the next own write. A crash can lose at most one batch of
  received envelopes, which sync fetches again from peers; it can never lose
  an acknowledged own message, because those never wait in the batch.

Threads: every method is synchronous and short (an indexed query, or one
commit). The node calls reads and :meth:`Store.put` directly from its trio
tasks; the durable calls (``reserve_seq``, ``put_own``, ``flush``, ``close``)
wait for an fsync and may be run through ``trio.to_thread.run_sync`` so a slow
disk does not stall the event loop. A lock serialises all calls, so mixing
both styles is safe. Several processes may open one data directory (SQLite
locks the file; ``reserve_seq`` takes the write lock before reading the
counter), though one node per directory is the intended use.

A store whose file was lost says so (:attr:`Store.condition`: ``"new"``
when there was no file, ``"emptied"`` when the file was there but empty), and
a circle it never counted in has no counter (:meth:`Store.counted` is None):
the node then recovers the member's own history from peers before signing
there (see :mod:`circles._node_own`).

This module holds :class:`Store`: batching, locking and the life cycle. The
SQL lives in its parts: the file, schema and transactions in
:mod:`circles._store_db`, the envelope log (and the envelopes the node set aside, see
:meth:`Store.set_aside`) in :mod:`circles._store_log`, and the member's own
pledge counters in :mod:`circles._store_own`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import protocol

from ._store_db import STORE_FILE, StoreError, _create_schema, _prepare, _transaction
from ._store_log import (
    _COLUMNS,
    _SET_ASIDE_QUERY,
    SetAside,
    StoredEnvelope,
    _check_envelope,
    _delete,
    _exists,
    _insert,
    _positioned,
    _record,
    _set_aside,
    _set_aside_record,
)
from ._store_own import _check_circle, _counted, _highest_signed, _next_seq, _raise_counters

__all__ = ["STORE_FILE", "SetAside", "Store", "StoreCondition", "StoreError", "StoredEnvelope"]

#: How :meth:`Store.open` found the data directory's file (see :attr:`Store.condition`).
StoreCondition = Literal["new", "emptied", "intact", "memory"]


class Store:
    """The SQLite store of one data directory; build it with :meth:`Store.open`."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        path: Path,
        *,
        max_batch: int,
        max_delay: float,
        clock: Callable[[], float],
        condition: StoreCondition = "intact",
    ) -> None:
        self._db: sqlite3.Connection | None = connection
        self._path = path
        self._condition: StoreCondition = condition
        self._max_batch = max_batch
        self._max_delay = max_delay
        self._clock = clock
        self._lock = threading.RLock()
        # Received envelopes not yet committed, in arrival order, and their ids.
        self._pending: list[tuple[protocol.Envelope[Any], int]] = []
        self._pending_ids: set[bytes] = set()
        self._pending_since = 0.0

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        max_batch: int = 256,
        max_delay: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> Store:
        """Open (creating if needed) the store in data directory ``directory``.

        Received envelopes wait at most ``max_delay`` seconds (checked on each
        call) or ``max_batch`` envelopes before they are committed; use
        ``max_batch=1`` to commit each one at once.
        """
        if max_batch < 1 or max_delay < 0:
            raise ValueError("max_batch must be at least 1 and max_delay at least 0")
        root = Path(directory)
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create data directory {root}: {exc.strerror}", reason="unwritable"
            ) from None
        path = root / STORE_FILE
        existed = path.exists()
        try:
            # Autocommit mode: transactions are opened explicitly below, so
            # nothing is committed or left open behind the store's back.
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {path}: {exc}", reason="unreadable") from None
        try:
            created = _prepare(db, path)
        except BaseException:
            db.close()
            raise
        condition: StoreCondition = "intact"
        if created:
            condition = "emptied" if existed else "new"
        return cls(
            db, path, max_batch=max_batch, max_delay=max_delay, clock=clock, condition=condition
        )

    @classmethod
    def open_memory(
        cls,
        *,
        max_batch: int = 256,
        max_delay: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> Store:
        """A store held in memory only (SQLite ``:memory:``), for simulations and tests.

        Same behaviour as :meth:`open` except durability: nothing survives
        :meth:`close`. Thousands of simulated nodes fit in one process this way.
        """
        if max_batch < 1 or max_delay < 0:
            raise ValueError("max_batch must be at least 1 and max_delay at least 0")
        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        _create_schema(db)
        return cls(
            db,
            Path(":memory:"),
            max_batch=max_batch,
            max_delay=max_delay,
            clock=clock,
            condition="memory",
        )

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def condition(self) -> StoreCondition:
        """How :meth:`open` found the file: whether an earlier history may be gone.

        ``"new"``: there was no store file (a first start in this data
        directory); ``"emptied"``: the file was there but held no store (0
        bytes, or no tables): whatever it held is gone, the member's pledges
        and their sequence numbers included; ``"intact"``: an existing store;
        ``"memory"``: :meth:`open_memory`.
        """
        return self._condition

    # -- writes --------------------------------------------------------------

    def put(self, envelope: protocol.Envelope[Any], *, received: int | None = None) -> bool:
        """Keep a verified envelope received from a peer; True if it was not stored yet.

        Idempotent by id. The write may wait in a batch (see the module
        docstring); reads always see it. The delay is checked when the store is
        called, so a node also calls :meth:`flush` every ``max_delay`` seconds
        from a background task to bound it when traffic stops.
        """
        _check_envelope(envelope)
        with self._lock:
            db = self._open_db()
            if envelope.id in self._pending_ids or _exists(db, envelope.id):
                return False
            if not self._pending:
                self._pending_since = self._clock()
            self._pending.append((envelope, _now() if received is None else received))
            self._pending_ids.add(envelope.id)
            if (
                len(self._pending) >= self._max_batch
                or self._clock() - self._pending_since >= self._max_delay
            ):
                self._commit(db, [], [])
            return True

    def put_own(self, envelope: protocol.Envelope[Any], *, received: int | None = None) -> bool:
        """Keep a message this node signed: committed durably before it returns.

        Call it before publishing. For a pledge it also raises the circle's
        counter to the pledge's sequence number, so :meth:`reserve_seq` never
        hands that number out again. True if the envelope was not stored yet.
        """
        _check_envelope(envelope)
        with self._lock:
            db = self._open_db()
            new = envelope.id not in self._pending_ids and not _exists(db, envelope.id)
            own = (envelope, _now() if received is None else received)
            # The counter is raised even for a copy already stored (synced back).
            self._commit(db, [own] if new else [], [envelope])
            return new

    def reserve_seq(self, circle: bytes, *, signer: bytes | None = None) -> int:
        """The next pledge sequence number for ``circle``, saved durably before it returns.

        Sign the pledge only after this returns: a number is never handed out
        twice, even across crashes (a crash may skip one). With ``signer``, the
        number is also above every pledge of that key already in the store
        (inside misbehaviour proofs too), for a node whose counter was lost but
        whose pledges came back through sync.
        """
        _check_circle(circle)
        with self._lock:
            db = self._open_db()
            self._commit(db, [], [])
            with _transaction(db, self._path):
                return _next_seq(db, circle, signer)

    def counted(self, circle: bytes) -> int | None:
        """The highest pledge sequence number counted for ``circle``, or None if none ever was.

        None means this store never reserved a number in the circle, nor
        founded it: the member's key may still have pledged there from another
        store (one that was lost), which only the circle's log on peers can show.
        """
        _check_circle(circle)
        with self._lock:
            return _counted(self._readable(), circle)

    def highest_signed(self, circle: bytes, signer: bytes) -> int:
        """The highest sequence number among ``signer``'s pledges in ``circle``'s log (0: none).

        Pledges carried inside stored misbehaviour proofs count too.
        """
        _check_circle(circle)
        with self._lock:
            return _highest_signed(self._readable(), circle, signer)

    def mark_joined(self, circle: bytes, *, now: int | None = None) -> None:
        """Remember durably that this node takes part in ``circle`` (idempotent)."""
        _check_circle(circle)
        with self._lock:
            db = self._open_db()
            self._commit(db, [], [])
            with _transaction(db, self._path):
                db.execute(
                    "INSERT OR IGNORE INTO joined (circle, since) VALUES (?, ?)",
                    (circle, _now() if now is None else now),
                )

    def mark_left(self, circle: bytes) -> None:
        """Forget that this node takes part in ``circle``; its envelopes stay stored."""
        _check_circle(circle)
        with self._lock:
            db = self._open_db()
            self._commit(db, [], [])
            with _transaction(db, self._path):
                db.execute("DELETE FROM joined WHERE circle = ?", (circle,))

    def discard(self, ids: Iterable[bytes]) -> int:
        """Forget the envelopes with these ids; returns how many were stored.

        For envelopes the node no longer admits (junk an older version kept):
        the store itself keeps whatever it is given.
        """
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return 0
        with self._lock:
            db = self._open_db()
            self._commit(db, [], [])
            with _transaction(db, self._path):
                return _delete(db, wanted)

    def set_aside(
        self, message_id: bytes, circle: bytes, reason: str, *, now: int | None = None
    ) -> SetAside:
        """Record durably that the node could not apply envelope ``message_id``; returns the record.

        The envelope itself stays stored (its id still counts as held, so sync
        does not fetch it again); the node leaves it out of the circle's state
        and does not serve it. Recording one twice keeps the first record.
        """
        _check_circle(circle)
        entry = SetAside(
            id=message_id, circle=circle, reason=reason, since=_now() if now is None else now
        )
        with self._lock:
            db = self._open_db()
            self._commit(db, [], [])
            with _transaction(db, self._path):
                _set_aside(db, entry)
        return entry

    def set_aside_envelopes(self) -> list[SetAside]:
        """Every envelope set aside (see :meth:`set_aside`), oldest first."""
        return [_set_aside_record(r) for r in self._query(_SET_ASIDE_QUERY, ())]

    def flush(self) -> None:
        """Commit the received envelopes still waiting in the batch."""
        with self._lock:
            self._commit(self._open_db(), [], [])

    def _commit(
        self,
        db: sqlite3.Connection,
        own: list[tuple[protocol.Envelope[Any], int]],
        own_pledges: list[protocol.Envelope[Any]],
    ) -> None:
        batch = self._pending + own
        if not batch and not own_pledges:
            return
        with _transaction(db, self._path):
            _insert(db, batch)
            _raise_counters(db, own_pledges)
        self._pending.clear()
        self._pending_ids.clear()

    # -- reads ---------------------------------------------------------------

    def envelopes(self, circle: bytes) -> list[StoredEnvelope]:
        """Every stored envelope of ``circle``, in arrival order (stable across reopening)."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM envelopes WHERE circle = ? ORDER BY position", (circle,)
        )
        return [_record(r) for r in rows]

    def ids(self, circle: bytes) -> list[bytes]:
        """The ids of ``circle``'s envelopes, in arrival order (what sync compares)."""
        rows = self._query("SELECT id FROM envelopes WHERE circle = ? ORDER BY position", (circle,))
        return [r[0] for r in rows]

    def get(self, ids: Iterable[bytes]) -> list[StoredEnvelope]:
        """The stored envelopes among ``ids``, in arrival order; unknown ids are skipped."""
        wanted = list(dict.fromkeys(ids))
        with self._lock:
            found = _positioned(self._readable(), wanted)
        found.sort(key=lambda item: item[0])
        return [_record(row) for _, row in found]

    def charters(self) -> list[StoredEnvelope]:
        """The charter of every known circle, in arrival order."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM envelopes WHERE kind = 'charter' ORDER BY position", ()
        )
        return [_record(r) for r in rows]

    def joined_circles(self) -> list[bytes]:
        """The circles this node takes part in, in the order it joined them."""
        return [r[0] for r in self._query("SELECT circle FROM joined ORDER BY since, circle", ())]

    def __contains__(self, message_id: object) -> bool:
        """True if an envelope with this id is stored (or waiting in the batch)."""
        if type(message_id) is not bytes:
            return False
        with self._lock:
            return message_id in self._pending_ids or _exists(self._open_db(), message_id)

    def count(self, circle: bytes | None = None) -> int:
        """How many envelopes are stored, in all or in one circle."""
        if circle is None:
            rows = self._query("SELECT COUNT(*) FROM envelopes", ())
        else:
            rows = self._query("SELECT COUNT(*) FROM envelopes WHERE circle = ?", (circle,))
        return int(rows[0][0])

    def check(self) -> None:
        """Run SQLite's ``integrity_check``; raises StoreError unless the file is sound."""
        rows = self._query("PRAGMA integrity_check", ())
        result = [str(r[0]) for r in rows]
        if result != ["ok"]:
            raise StoreError(
                f"{self._path} is damaged ({'; '.join(result[:5])}); restore it from a "
                "backup or move it away and let the node sync its circles again",
                reason="corrupt",
            )

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            db = self._readable()
            try:
                return db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read {self._path}: {exc}", reason="unreadable") from None

    def _readable(self) -> sqlite3.Connection:
        # Reads see every accepted envelope: commit the batch first.
        db = self._open_db()
        self._commit(db, [], [])
        return db

    # -- lifetime ------------------------------------------------------------

    def close(self) -> None:
        """Commit the batch and close the file; closing twice is harmless."""
        with self._lock:
            db = self._db
            if db is None:
                return
            try:
                self._commit(db, [], [])
            finally:
                self._db = None
                db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _open_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(
                "the store is closed; open it again with Store.open(directory)", reason="closed"
            )
        return self._db

    def __repr__(self) -> str:
        state = "closed" if self._db is None else "open"
        return f"Store({str(self._path)!r}, {state})"


def _now() -> int:
    return int(time.time())
