"""Starting a node on a data directory, as real subprocesses: one node at a time, write access,
the member's own key (circles._datadir).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from circles._datadir import DataDirError, NodeLock, explain_store_error, lock_holder
from circles._store_db import StoreError

CIRCLES = [sys.executable, "-m", "circles._cli"]
LOOPBACK = ["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"]


def run(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CIRCLES, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def ok(*args: str, timeout: float = 90) -> Any:
    done = run(*args, "--json", timeout=timeout)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return json.loads(done.stdout)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    # Short: a UNIX socket path must stay under ~100 bytes.
    path = tmp_path / "n"
    yield path
    run("down", "--data-dir", str(path), timeout=60)


def make_history(data_dir: Path) -> dict[str, Any]:
    """A node that founded a circle and pledged in it, then stopped: a store with history."""
    up = ok("up", "--data-dir", str(data_dir), *LOOPBACK)
    circle = ok(
        "circle", "new", "--data-dir", str(data_dir), "--what", "Coffee", "--unit", "kg",
        "--target", "5", "--currency", "EUR", "--deadline", "3d",
    )  # fmt: skip
    ok("pledge", circle["id"], "2", "--max-price", "20.00", "--data-dir", str(data_dir))
    assert ok("down", "--data-dir", str(data_dir)) == {"stopped": True}
    return {"key": up["public_key"], "circle": circle["id"]}


# ------------------------------------------------------------ lost key file
def test_a_lost_key_beside_a_store_with_history_is_refused_not_replaced(data_dir: Path) -> None:
    history = make_history(data_dir)
    (data_dir / "identity.key").unlink()
    # Without the public key beside it too: the store's own pledges name the key.
    (data_dir / "identity.pub").unlink(missing_ok=True)
    for command in (["up"], ["up", "--foreground"], ["node"]):
        done = run(*command, "--data-dir", str(data_dir), *LOOPBACK, timeout=60)
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert "identity.key is missing" in done.stderr, done.stderr
        assert f"signed by key {history['key']}" in done.stderr
        assert "Restore that key file" in done.stderr
        assert "circles id new" in done.stderr
        assert "Traceback" not in done.stderr
        assert not (data_dir / "identity.key").exists(), "a new key was made anyway"
    # The explicit command makes the new identity, saying what it means.
    made = run("id", "new", "--data-dir", str(data_dir))
    assert made.returncode == 0, made.stderr
    new_key = made.stdout.strip()
    assert new_key != history["key"]
    assert f"stay signed by key {history['key']}" in made.stderr
    up = ok("up", "--data-dir", str(data_dir), *LOOPBACK)
    assert up["public_key"] == new_key
    # The store was kept: the circle is still known.
    assert [c["id"] for c in ok("circle", "list", "--data-dir", str(data_dir))] == [
        history["circle"]
    ]


def test_the_recorded_public_key_names_a_lost_key(data_dir: Path) -> None:
    up = ok("up", "--data-dir", str(data_dir), *LOOPBACK)
    ok(
        "circle", "new", "--data-dir", str(data_dir), "--what", "Tea", "--unit", "box",
        "--target", "5", "--currency", "EUR", "--deadline", "3d",
    )  # fmt: skip
    ok("down", "--data-dir", str(data_dir))
    assert (data_dir / "identity.pub").read_text().strip() == up["public_key"]
    (data_dir / "identity.key").unlink()
    done = run("up", "--data-dir", str(data_dir), *LOOPBACK)
    assert done.returncode == 1
    assert f"signed by key {up['public_key']}" in done.stderr


def test_a_fresh_directory_still_gets_a_key_and_id_new_never_replaces_one(
    data_dir: Path,
) -> None:
    up = ok("up", "--data-dir", str(data_dir), *LOOPBACK)
    ok("down", "--data-dir", str(data_dir))
    again = run("id", "new", "--data-dir", str(data_dir))
    assert again.returncode == 1
    assert "already holds this member's key" in again.stderr
    assert "overwrite=True" not in again.stderr
    assert ok("id", "show", "--data-dir", str(data_dir))["public_key"] == up["public_key"]


# ------------------------------------------------------- one node at a time
def test_two_ups_at_once_one_starts_the_other_fails_naming_the_holder(data_dir: Path) -> None:
    data_dir.mkdir()
    both = [
        subprocess.Popen(
            [*CIRCLES, "up", "--data-dir", str(data_dir), *LOOPBACK, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=90), *p.communicate(timeout=30)) for p in both]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    (_, out, _) = next(r for r in results if r[0] == 0)
    (_, _, err) = next(r for r in results if r[0] == 1)
    started = json.loads(out)
    assert "already running" in err, err
    # Whichever of the two checks caught it, the message names the running node.
    assert f"process {started['pid']}" in err or "`circles down` stops it" in err, err
    assert "Traceback" not in err
    assert (data_dir / "node.lock").read_text().strip() == str(started["pid"])
    # The one that said it started is the one that runs.
    assert ok("status", "--data-dir", str(data_dir))["public_key"] == started["public_key"]


def test_a_second_node_of_any_kind_is_refused_while_one_runs(data_dir: Path) -> None:
    started = ok("up", "--data-dir", str(data_dir), *LOOPBACK)
    for command in (["up", "--foreground"], ["node"]):
        done = run(*command, "--data-dir", str(data_dir), *LOOPBACK, timeout=60)
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert f"already running for {data_dir} (process {started['pid']} holds" in done.stderr
    assert ok("status", "--data-dir", str(data_dir))["public_key"] == started["public_key"]


# ------------------------------------------------------------- permissions
@contextmanager
def unwritable(paths: list[Path]) -> Iterator[None]:
    """Make ``paths`` unwritable for the node this test starts, as this machine allows.

    chmod for an ordinary user. Root ignores the mode bits, so as root the
    files are made immutable (``chattr +i``: EPERM for root too); if that is
    not possible here the test fails, rather than pass without testing.
    """
    if os.geteuid() != 0:
        modes = {path: path.stat().st_mode for path in paths}
        for path in paths:
            path.chmod(modes[path] & ~0o222)
        try:
            yield
        finally:
            for path in paths:
                path.chmod(modes[path])
        return
    done = subprocess.run(
        ["chattr", "+i", *map(str, paths)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"as root, chmod is ignored and `chattr +i` failed here: {done.stderr}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, paths)], check=True)


@pytest.mark.parametrize("which", ["directory", "store file"])
def test_a_read_only_data_directory_is_a_permissions_problem_not_a_bad_store(
    data_dir: Path, which: str
) -> None:
    history = make_history(data_dir)
    store = sorted(data_dir.glob("store.sqlite3*"))
    paths = [*data_dir.iterdir(), data_dir] if which == "directory" else store
    shown = data_dir if which == "directory" else data_dir / "store.sqlite3"
    with unwritable(paths):
        for command in (["up"], ["up", "--foreground"], ["node"]):
            done = run(*command, "--data-dir", str(data_dir), *LOOPBACK, timeout=60)
            assert done.returncode == 1, (command, done.stdout, done.stderr)
            assert "permissions problem" in done.stderr, done.stderr
            assert f"cannot write {shown}:" in done.stderr, done.stderr
            assert "start afresh" not in done.stderr
            assert "Traceback" not in done.stderr
    # Nothing was lost: with write access back, the same member and circle are there.
    up = ok("up", "--data-dir", str(data_dir), *LOOPBACK)
    assert up["public_key"] == history["key"]
    listed = ok("circle", "list", "--data-dir", str(data_dir))
    assert [c["id"] for c in listed] == [history["circle"]]


# ------------------------------------------------------------- in-process
def test_the_lock_is_per_holder_and_names_it(tmp_path: Path) -> None:
    with NodeLock(tmp_path):
        assert lock_holder(tmp_path) == os.getpid()
        # flock belongs to one open file: a second open, even in this process, is refused.
        with pytest.raises(DataDirError) as taken:
            NodeLock(tmp_path).acquire()
        assert taken.value.reason == "already-running"
        assert f"process {os.getpid()} holds" in str(taken.value)
    with NodeLock(tmp_path):  # released: taken again at once
        pass


def test_a_store_sqlite_cannot_write_is_called_a_permissions_problem(tmp_path: Path) -> None:
    for said in ("attempt to write a readonly database", "unable to open database file"):
        with pytest.raises(DataDirError) as explained, explain_store_error(tmp_path):
            raise StoreError(f"{tmp_path}/store.sqlite3 is not a usable store ({said})")
        assert explained.value.reason == "permission-denied"
        assert "permissions problem" in str(explained.value)
    with pytest.raises(StoreError), explain_store_error(tmp_path):
        raise StoreError("file is not a database", reason="unreadable")
