"""Identities: an ed25519 key pair is a member or a vendor.

A public key (32 bytes) names a person everywhere: in envelopes, in circles,
and as the libp2p peer identity of their node. The protocol package does no
I/O, so it reads and writes key *files* as bytes; ``circles`` puts them on
disk with safe permissions.
"""

from __future__ import annotations

import nacl.bindings
import nacl.exceptions
import nacl.signing

from ._errors import IdentityError, KeyFileError

__all__ = ["Identity"]

_KEY_FILE_HEADER = b"buying-circles ed25519 seed v1\n"


class Identity:
    """An ed25519 signing key and its public key.

    Build one from a 32-byte seed (``Identity.from_seed``); the seed is the
    secret, so keep it as carefully as the key file that holds it.
    """

    __slots__ = ("_public_key", "_secret", "_seed", "_signing_key")

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        if not isinstance(signing_key, nacl.signing.SigningKey):
            raise IdentityError(
                "Identity needs a nacl.signing.SigningKey; use Identity.from_seed(seed)"
            )
        self._signing_key = signing_key
        self._seed = bytes(signing_key)
        self._public_key = bytes(signing_key.verify_key)
        # libsodium's 64-byte secret key (seed + public key), for signing
        # through the binding without PyNaCl's wrapper objects.
        self._secret = self._seed + self._public_key

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """The identity whose key pair derives from ``seed`` (32 bytes)."""
        if type(seed) is not bytes or len(seed) != 32:
            raise IdentityError(
                "an ed25519 seed is exactly 32 bytes; draw it from os.urandom(32)",
                reason="bad-seed",
            )
        return cls(nacl.signing.SigningKey(seed))

    @property
    def public_key(self) -> bytes:
        """The 32-byte public key that names this identity."""
        return self._public_key

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed (handle with care)."""
        return self._seed

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        """The PyNaCl signing key (for deriving a libp2p peer identity)."""
        return self._signing_key

    def sign(self, data: bytes) -> bytes:
        """The 64-byte ed25519 signature of ``data``."""
        return nacl.bindings.crypto_sign(data, self._secret)[:64]

    def to_key_file(self) -> bytes:
        """The contents of a key file for this identity."""
        return _KEY_FILE_HEADER + self._seed.hex().encode("ascii") + b"\n"

    @classmethod
    def from_key_file(cls, data: bytes) -> Identity:
        """The identity stored in a key file's contents; raises KeyFileError."""
        if not data.startswith(_KEY_FILE_HEADER):
            raise KeyFileError(
                "not a buying-circles key file (its first line is wrong)", reason="bad-key-file"
            )
        text = data[len(_KEY_FILE_HEADER) :].strip()
        try:
            seed = bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise KeyFileError(
                "key file is damaged: its seed is not hexadecimal", reason="bad-key-file"
            ) from None
        if len(seed) != 32:
            raise KeyFileError(
                f"key file is damaged: its seed is {len(seed)} bytes, not 32",
                reason="bad-key-file",
            )
        return cls.from_seed(seed)

    def __repr__(self) -> str:
        return f"Identity(public_key={self._public_key.hex()[:16]}…)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and other._public_key == self._public_key

    def __hash__(self) -> int:
        return hash(self._public_key)
