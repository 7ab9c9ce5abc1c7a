"""Key files on disk: written with mode 0600, refused when others can read them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import protocol

from ._errors import KeyFileError

__all__ = ["generate_identity", "load_identity", "save_identity"]


def generate_identity() -> protocol.Identity:
    """A new identity from 32 bytes of the operating system's randomness."""
    return protocol.Identity.from_seed(os.urandom(32))


def save_identity(
    identity: protocol.Identity, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write ``identity`` to ``path`` with mode 0600, atomically.

    Refuses to replace an existing key file unless ``overwrite`` is true: a
    lost key is a lost identity, with its deals and reputation.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise KeyFileError(
            f"{target} already exists; pass overwrite=True to replace that identity",
            reason="exists",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # The mode passed to open() is filtered by the umask; set it outright.
        os.fchmod(fd, 0o600)
        os.write(fd, identity.to_key_file())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, target)
    return target


def load_identity(path: str | os.PathLike[str]) -> protocol.Identity:
    """Read the identity in ``path``; refuse a file that others can read or write."""
    source = Path(path)
    try:
        fd = os.open(source, os.O_RDONLY)
    except FileNotFoundError:
        raise KeyFileError(
            f"no key file at {source}; create one with `circles id new`", reason="missing"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot open key file {source}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{source} is not a regular file", reason="bad-key-file")
        if info.st_mode & 0o077:
            raise KeyFileError(
                f"key file {source} is accessible by others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {source}` and retry",
                reason="insecure-permissions",
            )
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        return protocol.Identity.from_key_file(data)
    except protocol.KeyFileError as exc:
        raise KeyFileError(f"{source}: {exc}", reason=exc.reason) from None
