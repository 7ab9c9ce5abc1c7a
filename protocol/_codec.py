"""Strict, canonical msgpack: the only way bytes from a peer become values.

Theory of operation: the size is checked before any decoding; msgpack decodes
with every length limit set, maps and extension types refused by their length
limits (an *empty* map or extension still decodes, as a dict or ExtType that
every field type refuses: hooks to refuse them here would cost every decode),
and arrays as tuples (the empty tuple is shared, so nested empty arrays cost no
memory); above 2 KiB a hook adds up the size of every value decoded and stops
a value that takes more memory than its size justifies, which bounds the
memory a hostile 64 KiB input can make us allocate. Last, the value is packed again and must
give back the identical bytes: that one comparison refuses non-minimal integer
and length headers, float32 where float64 was meant, and anything else
msgpack-python would tolerate but another implementation might encode
differently.
"""

from __future__ import annotations

import sys
from typing import Any

import msgpack

from ._errors import MalformedEncoding, NonCanonical, Oversize

__all__ = ["MAX_ENVELOPE_SIZE", "canonical_unpack", "pack"]

#: Largest envelope the protocol accepts, in bytes.
MAX_ENVELOPE_SIZE = 64 * 1024
#: Longest array anywhere in an envelope (a certificate names at most 1,500 pledges).
MAX_ARRAY_LEN = 2048
# Most messages hold no longer array: a first decode allowing only these is safe
# without checking first that the input is complete (see canonical_unpack).
_SHORT_ARRAY_LEN = 15
# Bytes of decoded objects (as sys.getsizeof counts them) allowed per input
# byte, beyond a fixed allowance. The largest legitimate message, a certificate
# of 1,500 allocations, needs about 4.4 per byte; hostile inputs made of tiny
# arrays or two-character strings would need 20 to 30, and stop here. (A count
# of elements cannot do this: every element takes at least one input byte.)
_BYTES_PER_INPUT_BYTE = 5
_BASE_BYTES = 16 * 1024
# Below this size no input can hold enough values to matter, and counting
# costs a fifth of a pledge's decode time: count only above it.
_COUNT_ABOVE = 2048

_sizeof = sys.getsizeof

_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


def pack(value: Any) -> bytes:
    """Encode ``value`` (lists, tuples, ints, str, bytes, bool, None) canonically."""
    packed: bytes = _packer.pack(value)
    return packed


class _TooComplex(Exception):
    pass


def _unpack(data: bytes, max_size: int, hook: Any, max_array_len: int) -> Any:
    return msgpack.unpackb(
        data,
        use_list=False,
        raw=False,
        strict_map_key=True,
        list_hook=hook,
        max_str_len=max_size,
        max_bin_len=max_size,
        max_array_len=max_array_len,
        max_map_len=0,
        max_ext_len=0,
    )


def _check_complete(data: bytes) -> None:
    """Raise unless ``data`` holds one msgpack value with all its items, and no more."""
    size = len(data)
    unpacker = msgpack.Unpacker(max_buffer_size=size, read_size=size)
    unpacker.feed(data)
    unpacker.skip()  # walks the structure without building any object
    if unpacker.tell() != size:
        raise msgpack.ExtraData(None, data[unpacker.tell() :])


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
        budget = [_BASE_BYTES + _BYTES_PER_INPUT_BYTE * size]

        def count(items: tuple[Any, ...]) -> tuple[Any, ...]:
            # Every value but the outermost is an item of one array: summing the
            # items' sizes as each array closes counts every value once.
            budget[0] -= sum(map(_sizeof, items))
            if budget[0] < 0:
                raise _TooComplex
            return items

        hook: Any = count
    else:
        hook = None
    try:
        try:
            value = _unpack(data, max_size, hook, _SHORT_ARRAY_LEN)
        except ValueError as exc:
            if "max_array_len" not in str(exc):
                raise
            # An array longer than 15. msgpack reserves an array's declared
            # length before it reads the items, so 1,000 nested truncated
            # headers of 2,048 items (3 KiB) would make it reserve 16 MiB: first
            # check, building nothing, that every item declared is present, and
            # only then decode with the full limits.
            _check_complete(data)
            value = _unpack(data, max_size, hook, MAX_ARRAY_LEN)
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
