"""Signed envelopes: the one wire format every message travels in.

An envelope is the canonical msgpack encoding of the array
``[1, kind, body, signer, signature]``; the signature is ed25519 over the
msgpack encoding of ``["buying-circles", 1, kind, body]`` (so a signature made
for one kind or version never verifies as another), and a message's id is the
BLAKE2b-256 digest of the envelope bytes.

Decoding runs the cheap checks first (size, structure, canonical form, types)
and the signature last. :func:`decode_unverified` stops before the signature,
for callers that verify in batches on several cores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar

import nacl.bindings
import nacl.exceptions

from ._codec import MAX_ENVELOPE_SIZE, canonical_unpack, pack
from ._errors import BadSignature, InvalidField, InvalidMessage, UnknownKind, UnsupportedVersion
from ._identity import Identity
from ._messages import KINDS, Message
from ._schema import from_wire, to_wire

__all__ = [
    "DOMAIN",
    "VERSION",
    "Envelope",
    "UnverifiedEnvelope",
    "decode",
    "decode_as",
    "decode_unverified",
    "envelope_id",
    "seal",
    "signing_bytes",
]

#: Protocol version carried first in every envelope and in every signed payload.
VERSION = 1
#: Domain-separation string that starts every signed payload.
DOMAIN = "buying-circles"

M = TypeVar("M", bound=Message)
# Envelopes are frozen, so an Envelope[Pledge] is safely an Envelope[Message].
M_co = TypeVar("M_co", bound=Message, covariant=True)

# A canonical envelope ends with the signer (bin8 header + 32 bytes) and the
# signature (bin8 header + 64 bytes), and starts with the array header and the
# version: the kind and body in between are exactly the bytes that were signed.
_TAIL = 2 + 32 + 2 + 64
_SIGNED_PREFIX = b"\x94" + pack(DOMAIN) + pack(VERSION)
_ENVELOPE_PREFIX = b"\x95" + pack(VERSION)


def envelope_id(data: bytes) -> bytes:
    """The message id of an envelope: BLAKE2b-256 of its bytes (no key)."""
    return hashlib.blake2b(data, digest_size=32).digest()


def signing_bytes(kind: str, body: Any) -> bytes:
    """The bytes a signer signs for ``kind`` and a wire-form ``body``."""
    return pack([DOMAIN, VERSION, kind, body])


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope(Generic[M_co]):
    """A verified, signed message as it travels on the wire."""

    message: M_co
    """The typed body."""
    signer: bytes
    """The 32-byte public key that signed it."""
    signature: bytes
    """The 64-byte ed25519 signature."""
    data: bytes
    """The canonical envelope bytes."""
    id: bytes
    """BLAKE2b-256 of ``data``: the message id."""

    @property
    def kind(self) -> str:
        """The message kind ("pledge", "offer", ...)."""
        return self.message.kind

    def __repr__(self) -> str:
        return (
            f"Envelope(kind={self.kind!r}, id={self.id.hex()[:16]}…, "
            f"signer={self.signer.hex()[:16]}…)"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class UnverifiedEnvelope(Generic[M_co]):
    """An envelope whose bytes and fields are valid but whose signature is not checked yet."""

    message: M_co
    """The typed body."""
    signer: bytes
    """The public key that claims to have signed it."""
    signature: bytes
    """The claimed signature."""
    data: bytes
    """The canonical envelope bytes."""

    def signed_payload(self) -> bytes:
        """The bytes the signature must cover."""
        return _SIGNED_PREFIX + self.data[2:-_TAIL]

    def verify(self, *, id: bytes | None = None) -> Envelope[M_co]:
        """Check the signature; returns the verified envelope or raises BadSignature."""
        _verify(self.message.kind, self.signer, self.signature, self.data)
        return Envelope(
            message=self.message,
            signer=self.signer,
            signature=self.signature,
            data=self.data,
            id=envelope_id(self.data) if id is None else id,
        )


# Frozen dataclasses set each field through object.__setattr__ in __init__; on
# the path of every decode that is a fifth of the time. These fill the slots
# directly (neither class checks anything when built). A field added to either
# class must be added here too: importing refuses to go on until it is.
if [f.name for f in fields(Envelope)] != ["message", "signer", "signature", "data", "id"] or [
    f.name for f in fields(UnverifiedEnvelope)
] != ["message", "signer", "signature", "data"]:  # pragma: no cover - a guard for editors
    raise ImportError("protocol._envelope: update _envelope() and _unverified() to the fields")
_new = object.__new__


def _setters(cls: type[Any], *names: str) -> tuple[Callable[[Any, Any], None], ...]:
    return tuple(cls.__dict__[name].__set__ for name in names)


_set_message, _set_signer, _set_signature, _set_data, _set_id = _setters(
    Envelope, "message", "signer", "signature", "data", "id"
)
(
    _set_unverified_message,
    _set_unverified_signer,
    _set_unverified_signature,
    _set_unverified_data,
) = _setters(UnverifiedEnvelope, "message", "signer", "signature", "data")


def _envelope(
    message: Message, signer: bytes, signature: bytes, data: bytes, id: bytes
) -> Envelope[Message]:
    envelope: Envelope[Message] = _new(Envelope)
    _set_message(envelope, message)
    _set_signer(envelope, signer)
    _set_signature(envelope, signature)
    _set_data(envelope, data)
    _set_id(envelope, id)
    return envelope


def _unverified(
    message: Message, signer: bytes, signature: bytes, data: bytes
) -> UnverifiedEnvelope[Message]:
    unverified: UnverifiedEnvelope[Message] = _new(UnverifiedEnvelope)
    _set_unverified_message(unverified, message)
    _set_unverified_signer(unverified, signer)
    _set_unverified_signature(unverified, signature)
    _set_unverified_data(unverified, data)
    return unverified


def rebuilt(message: M, signer: bytes, signature: bytes, id: bytes) -> Envelope[M]:
    """The envelope of parts taken from one that was verified: no signature check.

    Internal to the protocol package: pure state that verified an envelope
    may keep only its parts and hand the envelope out again later. The bytes
    are the canonical encoding of ``[VERSION, kind, body, signer, signature]``;
    ``decode`` accepts only canonical bytes, so for a ``message`` equal to the
    one decoded they are byte for byte the bytes verified, and ``id`` (their
    digest, passed in so it is not recomputed) still names them.
    """
    data = pack([VERSION, message.kind, to_wire(message), signer, signature])
    return _envelope(message, signer, signature, data, id)  # type: ignore[return-value]


def seal(message: M, identity: Identity) -> Envelope[M]:
    """Sign ``message`` as ``identity`` and return its envelope."""
    if not isinstance(message, Message):
        raise InvalidField(
            f"seal() takes a message body (Pledge, Offer, ...), got {type(message).__name__}",
            reason="wrong-type",
            field="message",
        )
    kind = message.kind
    body = to_wire(message)
    try:
        signed = pack([DOMAIN, VERSION, kind, body])
    except UnicodeEncodeError:
        # Short text skips the UTF-8 check when a message is built (decoded
        # text is always valid): a lone surrogate only shows here.
        raise InvalidField(
            f"the {kind} holds text with a lone surrogate, which UTF-8 cannot encode",
            reason="wrong-type",
            field=kind,
        ) from None
    signature = identity.sign(signed)
    # The envelope shares the signed bytes' kind and body: splice, do not re-encode.
    data = b"".join(
        (
            _ENVELOPE_PREFIX,
            signed[len(_SIGNED_PREFIX) :],
            b"\xc4\x20",
            identity.public_key,
            b"\xc4\x40",
            signature,
        )
    )
    if len(data) > MAX_ENVELOPE_SIZE:
        raise InvalidField(
            f"the {kind} envelope would be {len(data)} bytes; the limit is {MAX_ENVELOPE_SIZE}",
            reason="out-of-range",
            field=kind,
        )
    return _envelope(message, identity.public_key, signature, data, envelope_id(data))  # type: ignore[return-value]


def decode_unverified(data: bytes) -> UnverifiedEnvelope[Message]:
    """Decode and check an envelope's bytes and fields, but not its signature."""
    if type(data) is not bytes and isinstance(data, bytearray | memoryview):
        data = bytes(data)  # an envelope keeps its bytes: never a caller's mutable buffer
    message, signer, signature = _parse(data)
    return _unverified(message, signer, signature, data)


def _parse(data: bytes) -> tuple[Message, bytes, bytes]:
    value = canonical_unpack(data)
    if type(value) is not tuple or len(value) != 5:
        raise InvalidField(
            "an envelope is an array of 5: [version, kind, body, signer, signature]",
            reason="wrong-type",
            field="envelope",
        )
    version, kind, body, signer, signature = value
    if type(version) is not int:
        raise InvalidField(
            f"envelope version must be an integer, got {type(version).__name__}",
            reason="wrong-type",
            field="envelope.version",
        )
    if version != VERSION:
        raise UnsupportedVersion(
            f"protocol version {version} is not supported (this library speaks {VERSION})",
            reason="unsupported-version",
        )
    if type(kind) is not str:
        raise InvalidField(
            f"envelope kind must be text, got {type(kind).__name__}",
            reason="wrong-type",
            field="envelope.kind",
        )
    cls = KINDS.get(kind)
    if cls is None:
        raise UnknownKind(
            f"unknown message kind {kind[:40]!r}; known kinds: {', '.join(sorted(KINDS))}",
            reason="unknown-kind",
        )
    if type(signer) is not bytes or len(signer) != 32:
        raise InvalidField(
            "envelope signer must be a 32-byte public key",
            reason="wrong-type",
            field="envelope.signer",
        )
    if type(signature) is not bytes or len(signature) != 64:
        raise InvalidField(
            "envelope signature must be 64 bytes",
            reason="wrong-type",
            field="envelope.signature",
        )
    return from_wire(cls, body), signer, signature


def decode(data: bytes) -> Envelope[Message]:
    """Decode an envelope completely: bytes, canonical form, fields, then signature.

    Raises a subclass of :class:`InvalidMessage` with a ``reason``; never any
    other exception, whatever the bytes.
    """
    if type(data) is not bytes and isinstance(data, bytearray | memoryview):
        data = bytes(data)  # an envelope keeps its bytes: never a caller's mutable buffer
    message, signer, signature = _parse(data)
    _verify(message.kind, signer, signature, data)
    return _envelope(message, signer, signature, data, envelope_id(data))


def _verify(kind: str, signer: bytes, signature: bytes, data: bytes) -> None:
    try:
        nacl.bindings.crypto_sign_open(signature + _SIGNED_PREFIX + data[2:-_TAIL], signer)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        raise BadSignature(
            f"signature does not verify for this {kind} and signer: "
            "the message was altered, replayed from another kind, or forged",
            reason="bad-signature",
        ) from None


def decode_as(data: bytes, cls: type[M]) -> Envelope[M]:
    """Like :func:`decode`, but also insist on one kind of message."""
    envelope = decode(data)
    if type(envelope.message) is not cls:
        raise InvalidMessage(
            f"expected a {cls.kind} envelope, got a {envelope.kind}", reason="wrong-kind"
        )
    return envelope  # type: ignore[return-value]
