"""Starting a node on a data directory: one node at a time, write access, the member's own key.

Checked before the node starts, by ``circles up``, ``circles node`` and
``circles vendor serve``, so each fault gets its own sentence and exit status 1:

- another node already runs there: the lock file ``node.lock`` is held (with
  ``flock``) by the node for its whole life and names its process id; the
  operating system releases it when that process ends, however it ends;
- the directory or its files cannot be written (a permissions problem, or a
  read-only file system): the store is intact, so the message says to fix the
  permissions, not to move it away;
- the key file is gone while the store holds history: a new key would be a new
  member who cannot sign for that history, so the node refuses and
  ``circles id new`` is the explicit way to start over with a new identity.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import protocol

from ._errors import CirclesError, KeyFileError
from ._keyfile import generate_identity, load_identity, save_identity

__all__ = [
    "KEY_FILE",
    "LOCK_FILE",
    "PUBLIC_KEY_FILE",
    "DataDirError",
    "NodeLock",
    "check_identity",
    "check_writable",
    "explain_store_error",
    "lock_holder",
    "own_history",
    "record_public_key",
    "start_identity",
]

KEY_FILE = "identity.key"
#: The public key beside the key file, so a lost key can still be named.
PUBLIC_KEY_FILE = "identity.pub"
LOCK_FILE = "node.lock"
_STORE_FILES = ("store.sqlite3", "store.sqlite3-wal", "store.sqlite3-shm")
_PERMISSION_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS}


class DataDirError(CirclesError):
    """A data directory a node cannot start on (see ``reason``)."""

    reason = "data-dir"


def _permission_problem(path: Path, exc: OSError, data_dir: Path) -> DataDirError:
    return DataDirError(
        f"cannot write {path}: {exc.strerror}. This is a permissions problem, not a damaged "
        f"store: the data in {data_dir} is intact. Give this user write access to it (for "
        "example `chmod -R u+w` or `chown -R` it to this user; remount it read-write if its "
        "file system is read-only), or run as the user who owns it; do not move it away",
        reason="permission-denied",
    )


def check_writable(data_dir: Path) -> None:
    """Refuse, naming the path, a data directory or store file this process cannot write."""
    data_dir = Path(data_dir)
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in _PERMISSION_ERRORS:
            raise _permission_problem(data_dir, exc, data_dir) from None
        raise DataDirError(
            f"cannot create data directory {data_dir}: {exc.strerror}", reason="unwritable"
        ) from None
    # SQLite creates its -wal and -shm files beside the store: the directory itself
    # must take new files, so try one rather than trust the mode bits (root, ACLs,
    # read-only mounts and immutable files all make those lie).
    probe = data_dir / f".write-test.{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except FileExistsError:
        probe.unlink(missing_ok=True)
    except OSError as exc:
        if exc.errno in _PERMISSION_ERRORS:
            raise _permission_problem(data_dir, exc, data_dir) from None
        raise
    for name in (*_STORE_FILES, KEY_FILE):
        path = data_dir / name
        flags = os.O_RDONLY if name == KEY_FILE else os.O_RDWR
        try:
            os.close(os.open(path, flags))
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno in _PERMISSION_ERRORS:
                raise _permission_problem(path, exc, data_dir) from None
            raise


_PERMISSION_WORDS = ("readonly database", "read-only", "unable to open", "permission denied")


@contextlib.contextmanager
def explain_store_error(data_dir: Path) -> Iterator[None]:
    """Say "permissions" for a store SQLite could not open or write for lack of them.

    :func:`check_writable` catches these before the node starts; this covers a
    change while it starts (SQLite says "attempt to write a readonly database"
    or "unable to open database file", and the store would call itself unusable).
    """
    from ._store_db import StoreError

    try:
        yield
    except StoreError as exc:
        if not any(word in str(exc).lower() for word in _PERMISSION_WORDS):
            raise
        raise DataDirError(
            f"{exc}. This looks like a permissions problem, not a damaged store: the data in "
            f"{data_dir} is intact. Give this user write access to it, or run as the user who "
            "owns it; do not move it away",
            reason="permission-denied",
        ) from None


class NodeLock:
    """``node.lock`` held with ``flock`` for a node's life; the kernel drops it when it ends.

    One flock per data directory and process, with at most one holder of
    each kind: the command line takes it before it makes its
    :class:`~circles.Node`, and the node (``node=True``) joins that hold (a
    second flock from the same process would be refused by the kernel). A
    second holder of one kind is refused, in this process as in any other.
    """

    def __init__(self, data_dir: Path, *, node: bool = False) -> None:
        self.path = Path(data_dir) / LOCK_FILE
        self._kind = "node" if node else "command"
        self._key: Path | None = None

    def acquire(self) -> None:
        """Take the lock and write this process's id in it, or refuse naming the holder."""
        key = self.path.resolve()
        held = _HELD.get(key)
        if held is not None and self._kind not in held.kinds:
            held.kinds.add(self._kind)
            self._key = key
            return
        if held is not None and self._kind == "node":
            raise DataDirError(
                f"another Node in this process already uses {self.path.parent}; "
                "close it first, or give this one another data directory",
                reason="already-running",
            )
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno in _PERMISSION_ERRORS:
                raise _permission_problem(self.path, exc, self.path.parent) from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = lock_holder(self.path.parent)
            who = f"process {holder}" if holder else "another process"
            raise DataDirError(
                f"a node is already running for {self.path.parent} ({who} holds "
                f"{self.path}); `circles down --data-dir {self.path.parent}` stops it, "
                "or use another --data-dir",
                reason="already-running",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _HELD[key] = _Held(fd=fd, kinds={self._kind})
        self._key = key

    def release(self) -> None:
        key, self._key = self._key, None
        held = _HELD.get(key) if key is not None else None
        if key is None or held is None:
            return
        held.kinds.discard(self._kind)
        if not held.kinds:
            del _HELD[key]
            os.close(held.fd)

    def __enter__(self) -> NodeLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class _Held:
    """This process's flock on one data directory, and the kinds of holder sharing it."""

    __slots__ = ("fd", "kinds")

    def __init__(self, *, fd: int, kinds: set[str]) -> None:
        self.fd = fd
        self.kinds = kinds


#: The data directories this process holds a lock on (resolved path -> hold).
_HELD: dict[Path, _Held] = {}


def lock_holder(data_dir: Path) -> int | None:
    """The process id written in ``data_dir``'s lock file: its holder's while a node runs.

    Read without locking: a probe that took the lock, even for a moment, could
    make a node starting at that moment refuse to start.
    """
    try:
        text = (Path(data_dir) / LOCK_FILE).read_text(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def own_history(data_dir: Path) -> tuple[int, bytes | None]:
    """How many records the store in ``data_dir`` holds, and whose key signed its own pledges.

    Read without writing (the store is opened read-only). The key comes from
    ``identity.pub``, else from the pledges at the sequence numbers this
    member handed out, when one key signed all of them; None if it cannot be told.
    """
    store = Path(data_dir) / _STORE_FILES[0]
    if not store.exists():
        return 0, _recorded_key(data_dir)
    try:
        db = sqlite3.connect(store.absolute().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error:
        return 1, _recorded_key(data_dir)
    try:
        with contextlib.closing(db):
            records = 0
            for table in ("envelopes", "joined", "sequences"):
                (count,) = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
                records += int(count)
            signers: set[bytes] | None = None
            rows = db.execute(
                "SELECT s.circle, e.signer FROM sequences s JOIN envelopes e"
                " ON e.circle = s.circle AND e.kind = 'pledge' AND e.seq = s.last"
            ).fetchall()
            by_circle: dict[bytes, set[bytes]] = {}
            for circle, signer in rows:
                by_circle.setdefault(bytes(circle), set()).add(bytes(signer))
            for keys in by_circle.values():
                signers = keys if signers is None else signers & keys
    except sqlite3.Error:
        # A store this process cannot read as one (0 bytes holds no tables and no
        # history; anything else is history this key may have signed).
        return (0 if store.stat().st_size == 0 else 1), _recorded_key(data_dir)
    recorded = _recorded_key(data_dir)
    if recorded is not None:
        return records, recorded
    return records, next(iter(signers)) if signers and len(signers) == 1 else None


def _recorded_key(data_dir: Path) -> bytes | None:
    try:
        text = (Path(data_dir) / PUBLIC_KEY_FILE).read_text().strip()
        key = bytes.fromhex(text)
    except (OSError, ValueError):
        return None
    return key if len(key) == 32 else None


def record_public_key(identity: protocol.Identity, data_dir: Path) -> None:
    """Keep the public key beside the key file (best effort: only used to name a lost key)."""
    path = Path(data_dir) / PUBLIC_KEY_FILE
    text = identity.public_key.hex() + "\n"
    with contextlib.suppress(OSError):
        if not path.exists() or path.read_text() != text:
            temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            temporary.write_text(text)
            os.replace(temporary, path)


def check_identity(data_dir: Path) -> None:
    """Refuse a data directory whose key file is gone while its store holds history.

    The history (pledges, sequence numbers, deals) belongs to the lost key, and
    a new key silently put in its place would be another member.
    """
    data_dir = Path(data_dir)
    key_file = data_dir / KEY_FILE
    if key_file.exists() or key_file.is_symlink():
        return
    records, key = own_history(data_dir)
    if records:
        whose = f"key {key.hex()}" if key is not None else "an earlier key"
        raise KeyFileError(
            f"the key file {key_file} is missing, but the store in {data_dir} holds "
            f"history ({records} records) signed by {whose}. Restore that key file "
            "(from a backup) to go on as that member; or start afresh with another "
            f"--data-dir; or run `circles id new --data-dir {data_dir}` to take a new "
            "identity here (it cannot sign for that history)",
            reason="key-missing",
        )


def start_identity(data_dir: Path) -> protocol.Identity:
    """The identity a node on ``data_dir`` starts with; made only for a directory with no history.

    Call it with the data directory's lock held, so two starts never make two keys.
    """
    data_dir = Path(data_dir)
    key_file = data_dir / KEY_FILE
    check_identity(data_dir)
    if key_file.exists() or key_file.is_symlink():
        identity = load_identity(key_file)
    else:
        identity = generate_identity()
        save_identity(identity, key_file)
    record_public_key(identity, data_dir)
    return identity
