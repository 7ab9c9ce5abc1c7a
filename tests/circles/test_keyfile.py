"""Key files on disk: written 0600, refused when others may read them, never overwritten blindly."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import circles
import protocol
from circles import generate_identity, load_identity, save_identity

ALICE = protocol.Identity.from_seed(bytes(range(32)))
BOB = protocol.Identity.from_seed(bytes(range(1, 33)))


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """A umask that lets every permission through, so the 0600 must be the code's doing."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_round_trip(tmp_path: Path) -> None:
    path = save_identity(ALICE, tmp_path / "alice.key")
    assert path == tmp_path / "alice.key"
    loaded = load_identity(path)
    assert loaded == ALICE
    assert loaded.seed == ALICE.seed
    assert loaded.sign(b"x") == ALICE.sign(b"x")


def test_round_trip_of_a_generated_identity(tmp_path: Path) -> None:
    identity = generate_identity()
    assert identity != generate_identity()
    assert load_identity(save_identity(identity, str(tmp_path / "new.key"))) == identity


@pytest.mark.usefixtures("permissive_umask")
def test_written_with_mode_0600(tmp_path: Path) -> None:
    path = save_identity(ALICE, tmp_path / "alice.key")
    assert mode(path) == 0o600
    assert stat.S_ISREG(path.stat().st_mode)
    # Nothing else is left in the directory (no temporary file).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.key"]


@pytest.mark.usefixtures("permissive_umask")
def test_an_overwrite_is_written_0600_too(tmp_path: Path) -> None:
    path = tmp_path / "alice.key"
    path.write_bytes(b"old")
    path.chmod(0o644)
    save_identity(ALICE, path, overwrite=True)
    assert mode(path) == 0o600
    assert load_identity(path) == ALICE


def test_creates_missing_directories(tmp_path: Path) -> None:
    path = save_identity(ALICE, tmp_path / "a" / "b" / "alice.key")
    assert load_identity(path) == ALICE


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = save_identity(ALICE, tmp_path / "alice.key")
    before = path.read_bytes()
    with pytest.raises(circles.KeyFileError) as info:
        save_identity(BOB, path)
    assert info.value.reason == "exists"
    assert "overwrite" in str(info.value)
    assert path.read_bytes() == before
    assert load_identity(path) == ALICE


def test_overwrites_when_asked(tmp_path: Path) -> None:
    path = save_identity(ALICE, tmp_path / "alice.key")
    save_identity(BOB, path, overwrite=True)
    assert load_identity(path) == BOB


@pytest.mark.parametrize(
    "unsafe_mode", [0o640, 0o604, 0o644, 0o660, 0o606, 0o620, 0o602, 0o610, 0o601, 0o666, 0o777]
)
def test_refuses_a_file_others_can_access(tmp_path: Path, unsafe_mode: int) -> None:
    path = save_identity(ALICE, tmp_path / "alice.key")
    path.chmod(unsafe_mode)
    with pytest.raises(circles.KeyFileError) as info:
        load_identity(path)
    error = info.value
    assert error.reason == "insecure-permissions"
    # One error, catchable from either package's root.
    assert isinstance(error, circles.CirclesError)
    assert isinstance(error, protocol.KeyFileError)
    assert isinstance(error, protocol.ProtocolError)
    # The message says what to do.
    assert "chmod 600" in str(error)
    assert f"{unsafe_mode:04o}" in str(error)


@pytest.mark.parametrize("safe_mode", [0o600, 0o400])
def test_accepts_owner_only_modes(tmp_path: Path, safe_mode: int) -> None:
    path = save_identity(ALICE, tmp_path / "alice.key")
    path.chmod(safe_mode)
    assert load_identity(path) == ALICE


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(circles.KeyFileError) as info:
        load_identity(tmp_path / "nobody.key")
    assert info.value.reason == "missing"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a key file\n",
        b"buying-circles ed25519 seed v1\n",
        b"buying-circles ed25519 seed v1\nzz" + b"0" * 62 + b"\n",
        b"buying-circles ed25519 seed v1\n" + b"00" * 31 + b"\n",
        b"buying-circles ed25519 seed v1\n" + b"00" * 33 + b"\n",
        b"buying-circles ed25519 seed v1\n" + "é".encode() * 32 + b"\n",
    ],
)
def test_a_damaged_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "damaged.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(circles.KeyFileError) as info:
        load_identity(path)
    assert info.value.reason == "bad-key-file"
    assert str(path) in str(info.value)


def test_a_directory_is_not_a_key_file(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    with pytest.raises(circles.KeyFileError) as info:
        load_identity(directory)
    assert info.value.reason == "bad-key-file"


def test_the_file_holds_the_seed_in_the_documented_format(tmp_path: Path) -> None:
    path = save_identity(ALICE, tmp_path / "alice.key")
    assert (
        path.read_bytes() == b"buying-circles ed25519 seed v1\n" + ALICE.seed.hex().encode() + b"\n"
    )
