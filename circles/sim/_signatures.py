"""Modelled signatures: a simulator option that replaces ed25519 with a keyed hash.

Why: an ed25519 verification costs ~70 us, and in a simulation of thousands of
peers every message is verified by every peer that receives it, so signatures
dominate the run. Research on haggling rarely needs the real curve.

What stays true inside the simulation: each identity still signs with its own
secret (its 32-byte seed), so identities stay distinct; a signature is the
64-byte keyed BLAKE2b of exactly the bytes ed25519 would sign, so it binds the
kind, the body and the signer; and a verifier recomputes it from the registry
of keys that have signed in this process. Producing a valid signature needs the
signer's seed, which only its :class:`protocol.Identity` holds, so forgery is
as impossible inside the simulation as with ed25519. Envelopes made this way
are not valid ed25519 envelopes and must never leave the simulation: the patch
is undone when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Iterator
from typing import Any

import protocol
from protocol import _envelope, _identity

__all__ = ["modelled_signatures"]

_SIGNED_PREFIX: bytes = _envelope._SIGNED_PREFIX  # the bytes ed25519 signs start with these
_TAIL: int = _envelope._TAIL


@contextlib.contextmanager
def modelled_signatures() -> Iterator[None]:
    """Within the block, every ``seal`` signs and every ``decode`` verifies with a keyed hash.

    Not re-entrant across threads: it patches ``protocol`` for the whole process.
    """
    registry: dict[bytes, bytes] = {}
    original_sign = _identity.Identity.sign
    original_verify = _envelope._verify

    def sign(self: protocol.Identity, data: bytes) -> bytes:
        registry[self.public_key] = self.seed
        return hashlib.blake2b(data, key=self.seed, digest_size=64).digest()

    def verify(kind: str, signer: bytes, signature: bytes, data: bytes) -> None:
        seed = registry.get(signer)
        signed = _SIGNED_PREFIX + data[2:-_TAIL]
        if seed is None or not hmac.compare_digest(
            hashlib.blake2b(signed, key=seed, digest_size=64).digest(), signature
        ):
            raise protocol.BadSignature(
                f"signature does not verify for this {kind} and signer (modelled signatures)",
                reason="bad-signature",
            )

    patched: Any = _identity.Identity
    patched.sign = sign
    _envelope._verify = verify
    try:
        yield
    finally:
        patched.sign = original_sign
        _envelope._verify = original_verify
