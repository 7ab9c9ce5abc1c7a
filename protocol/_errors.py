"""Errors raised by the protocol package.

Every refusal is a subclass of one root, carries a machine-readable ``reason``
(a short lowercase string that stays stable across releases) and a message a
person can act on::

    ProtocolError
    ├── InvalidMessage (also ValueError): bytes or fields that are not a valid message
    │   ├── Oversize            reason "oversize"
    │   ├── MalformedEncoding   reasons "malformed", "trailing-bytes", "too-complex"
    │   ├── NonCanonical        reason "non-canonical"
    │   ├── UnsupportedVersion  reason "unsupported-version"
    │   ├── UnknownKind         reason "unknown-kind"
    │   ├── InvalidField        reasons "wrong-type", "out-of-range"
    │   └── BadSignature        reason "bad-signature"
    └── IdentityError: a key that cannot be used
        └── KeyFileError        reasons "insecure-permissions", "bad-key-file"
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Root of every error the protocol package raises."""

    reason: str = "protocol-error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    def __reduce__(self) -> tuple[object, ...]:
        # Keeps the reason when an error crosses a process or thread boundary.
        return (_rebuild, (type(self), str(self), self.reason))


def _rebuild(cls: type[ProtocolError], message: str, reason: str) -> ProtocolError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.reason = reason
    return error


class InvalidMessage(ProtocolError, ValueError):
    """Bytes or fields that do not form a valid message; drop it, do not retry."""

    reason = "invalid-message"


class Oversize(InvalidMessage):
    """The envelope is larger than the protocol allows (checked before decoding)."""

    reason = "oversize"


class MalformedEncoding(InvalidMessage):
    """The bytes are not one well-formed msgpack value of bounded complexity."""

    reason = "malformed"


class NonCanonical(InvalidMessage):
    """The bytes decode, but not from their one canonical encoding."""

    reason = "non-canonical"


class UnsupportedVersion(InvalidMessage):
    """The envelope names a protocol version this library does not speak."""

    reason = "unsupported-version"


class UnknownKind(InvalidMessage):
    """The envelope names a message kind this library does not know."""

    reason = "unknown-kind"


class InvalidField(InvalidMessage):
    """A field has the wrong type or a value outside its limits."""

    reason = "wrong-type"

    def __init__(self, message: str, *, reason: str | None = None, field: str = "") -> None:
        super().__init__(message, reason=reason)
        self.field = field


class BadSignature(InvalidMessage):
    """The signature does not verify for this signer, kind and body."""

    reason = "bad-signature"


class IdentityError(ProtocolError):
    """A key pair that cannot be created, loaded or used."""

    reason = "identity-error"


class KeyFileError(IdentityError):
    """A key file that is unsafe or unreadable."""

    reason = "bad-key-file"
