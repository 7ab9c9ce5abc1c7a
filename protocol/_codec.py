"""Strict, canonical msgpack: the only way bytes from a peer become values.

Theory of operation: the size is checked before any decoding; msgpack decodes
with every length limit set, maps and extension types refused outright, and
arrays as tuples (the empty tuple is shared, so nested empty arrays cost no
memory); a hook counts every array element decoded and stops a value that is
more complex than its size justifies, which bounds the memory a hostile
64 KiB input can make us allocate. Last, the value is packed again and must
give back the identical bytes: that one comparison refuses non-minimal integer
and length headers, float32 where float64 was meant, and anything else
msgpack-python would tolerate but another implementation might encode
differently.
"""

from __future__ import annotations

from typing import Any

import msgpack

from ._errors import MalformedEncoding, NonCanonical, Oversize

__all__ = ["MAX_ENVELOPE_SIZE", "canonical_unpack", "pack"]

#: Largest envelope the protocol accepts, in bytes.
MAX_ENVELOPE_SIZE = 64 * 1024
#: Longest array anywhere in an envelope (a certificate names at most 1,500 pledges).
MAX_ARRAY_LEN = 2048
# Array elements allowed per input byte, beyond a small allowance: the densest
# legitimate message (an offer with 32 one-byte tiers) needs about one element
# per byte, and a hostile one cannot go further.
_BASE_ELEMENTS = 64
# Below this size no input can hold enough values to matter, and counting
# costs a fifth of a pledge's decode time: count only above it.
_COUNT_ABOVE = 2048

_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


def pack(value: Any) -> bytes:
    """Encode ``value`` (lists, tuples, ints, str, bytes, bool, None) canonically."""
    packed: bytes = _packer.pack(value)
    return packed


class _TooComplex(Exception):
    pass


def canonical_unpack(data: bytes, *, max_size: int = MAX_ENVELOPE_SIZE) -> Any:
    """Decode one msgpack value from ``data`` and insist it is canonical.

    Arrays come back as tuples. Raises :class:`Oversize`,
    :class:`MalformedEncoding` (reasons ``malformed``, ``trailing-bytes``,
    ``too-complex``) or :class:`NonCanonical`; never anything else.
    """
    if type(data) is not bytes:
        if isinstance(data, bytearray | memoryview):
            data = bytes(data)
        else:
            raise MalformedEncoding(
                f"expected bytes, got {type(data).__name__}", reason="malformed"
            )
    size = len(data)
    if size > max_size:
        raise Oversize(
            f"envelope is {size} bytes; the limit is {max_size}: refuse it unread",
            reason="oversize",
        )
    if size == 0:
        raise MalformedEncoding("envelope is empty", reason="malformed")
    if size > _COUNT_ABOVE:
        budget = [_BASE_ELEMENTS + size]

        def count(items: tuple[Any, ...]) -> tuple[Any, ...]:
            budget[0] -= len(items)
            if budget[0] < 0:
                raise _TooComplex
            return items

        hook: Any = count
    else:
        hook = None
    try:
        value = msgpack.unpackb(
            data,
            use_list=False,
            raw=False,
            strict_map_key=True,
            list_hook=hook,
            max_str_len=max_size,
            max_bin_len=max_size,
            max_array_len=MAX_ARRAY_LEN,
            max_map_len=0,
            max_ext_len=0,
        )
    except msgpack.ExtraData:
        raise MalformedEncoding(
            "bytes follow the envelope's value: refuse trailing data", reason="trailing-bytes"
        ) from None
    except _TooComplex:
        raise MalformedEncoding(
            f"envelope of {size} bytes holds more values than any message needs",
            reason="too-complex",
        ) from None
    except Exception as exc:  # msgpack raises many types for hostile input: all mean malformed
        raise MalformedEncoding(
            f"not a single well-formed msgpack value without maps or extensions ({exc})",
            reason="malformed",
        ) from None
    try:
        again = _packer.pack(value)
    except Exception:  # pragma: no cover - every decoded value packs; kept as a guard
        again = b""
    if again != data:
        raise NonCanonical(
            "value is not in canonical msgpack form (e.g. an integer or length in a "
            "longer header than needed, or a float32): re-encode it canonically",
            reason="non-canonical",
        )
    return value
