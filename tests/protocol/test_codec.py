"""Strict canonical decoding: every encoding but the one canonical form is refused.

Envelopes here are signed over their canonical body, so when a variant is
refused it is for its encoding or its field types, never for its signature;
each test also checks that the canonical variant decodes (so it can fail).
"""

from __future__ import annotations

import contextlib
import struct
import tracemalloc
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocol
from protocol import MAX_ENVELOPE_SIZE, Identity, decode, signing_bytes
from protocol._codec import canonical_unpack, pack

from .strategies import envelopes

ALICE = Identity.from_seed(bytes(range(32)))
CIRCLE = b"\x11" * 32
PLEDGE_BODY: list[Any] = [CIRCLE, 1, 3, 1200, "EUR", 0, 1_700_000_000]


def envelope_bytes(
    kind: str, body: list[Any], *, body_bytes: bytes | None = None, version: Any = 1
) -> bytes:
    """An envelope signed over ``body``, optionally carrying ``body_bytes`` in its place."""
    signature = ALICE.sign(signing_bytes(kind, body))
    encoded_body = pack(body) if body_bytes is None else body_bytes
    return (
        b"\x95"
        + pack(version)
        + pack(kind)
        + encoded_body
        + pack(ALICE.public_key)
        + pack(signature)
    )


def refused(data: bytes, error: type[protocol.ProtocolError], reason: str) -> str:
    """Decode must refuse ``data`` with ``error`` and ``reason``; returns the message."""
    with pytest.raises(error) as info:
        decode(data)
    assert info.value.reason == reason
    assert str(info.value), "every refusal carries a message a person can read"
    return str(info.value)


def test_the_canonical_pledge_decodes() -> None:
    envelope = decode(envelope_bytes("pledge", PLEDGE_BODY))
    assert envelope.message == protocol.Pledge(
        circle=CIRCLE,
        seq=1,
        quantity=3,
        max_price=1200,
        currency="EUR",
        tolerance=0,
        created=1_700_000_000,
    )


# --- integers -----------------------------------------------------------------------------

_INT_FORMATS = [  # (marker, struct format, lowest, highest)
    (0xCC, ">B", 0, 2**8 - 1),
    (0xCD, ">H", 0, 2**16 - 1),
    (0xCE, ">I", 0, 2**32 - 1),
    (0xCF, ">Q", 0, 2**64 - 1),
    (0xD0, ">b", -(2**7), 2**7 - 1),
    (0xD1, ">h", -(2**15), 2**15 - 1),
    (0xD2, ">i", -(2**31), 2**31 - 1),
    (0xD3, ">q", -(2**63), 2**63 - 1),
]


def int_encodings(n: int) -> set[bytes]:
    """Every msgpack encoding of the integer ``n``."""
    found = set()
    if 0 <= n <= 0x7F:
        found.add(bytes([n]))
    if -32 <= n < 0:
        found.add(struct.pack(">b", n))
    for marker, fmt, lo, hi in _INT_FORMATS:
        if lo <= n <= hi:
            found.add(bytes([marker]) + struct.pack(fmt, n))
    return found


@given(st.integers(-(2**63), 2**64 - 1))
def test_only_the_shortest_integer_encoding_is_accepted(n: int) -> None:
    canonical = pack(n)
    encodings = int_encodings(n)
    assert canonical in encodings
    assert canonical_unpack(canonical) == n
    for other in encodings - {canonical}:
        with pytest.raises(protocol.NonCanonical) as info:
            canonical_unpack(other)
        assert info.value.reason == "non-canonical"


@pytest.mark.parametrize("position", [1, 2, 3, 5, 6])
def test_non_minimal_integers_in_an_envelope_are_refused(position: int) -> None:
    wider = sorted(int_encodings(PLEDGE_BODY[position]) - {pack(PLEDGE_BODY[position])})
    assert wider
    for wide in wider:
        parts = [pack(value) for value in PLEDGE_BODY]
        parts[position] = wide
        body_bytes = b"\x97" + b"".join(parts)
        refused(
            envelope_bytes("pledge", PLEDGE_BODY, body_bytes=body_bytes),
            protocol.NonCanonical,
            "non-canonical",
        )


def test_a_non_minimal_version_is_refused() -> None:
    data = envelope_bytes("pledge", PLEDGE_BODY)
    assert data[:2] == b"\x95\x01"
    for wide in (b"\xcc\x01", b"\xcd\x00\x01", b"\xd0\x01", b"\xd3" + bytes(7) + b"\x01"):
        refused(b"\x95" + wide + data[2:], protocol.NonCanonical, "non-canonical")


# --- strings, byte strings, arrays --------------------------------------------------------


def str_encodings(text: str) -> set[bytes]:
    raw = text.encode("utf-8")
    found = {
        b"\xda" + struct.pack(">H", len(raw)) + raw,
        b"\xdb" + struct.pack(">I", len(raw)) + raw,
    }
    if len(raw) < 32:
        found.add(bytes([0xA0 | len(raw)]) + raw)
    if len(raw) < 256:
        found.add(b"\xd9" + bytes([len(raw)]) + raw)
    return found


def bin_encodings(raw: bytes) -> set[bytes]:
    found = {
        b"\xc5" + struct.pack(">H", len(raw)) + raw,
        b"\xc6" + struct.pack(">I", len(raw)) + raw,
    }
    if len(raw) < 256:
        found.add(b"\xc4" + bytes([len(raw)]) + raw)
    return found


def array_headers(n: int) -> set[bytes]:
    found = {b"\xdc" + struct.pack(">H", n), b"\xdd" + struct.pack(">I", n)}
    if n < 16:
        found.add(bytes([0x90 | n]))
    return found


@given(st.text(max_size=300))
def test_only_the_shortest_string_header_is_accepted(text: str) -> None:
    canonical = pack(text)
    assert canonical_unpack(canonical) == text
    for other in str_encodings(text) - {canonical}:
        with pytest.raises(protocol.NonCanonical):
            canonical_unpack(other)


@given(st.binary(max_size=300))
def test_only_the_shortest_bin_header_is_accepted(raw: bytes) -> None:
    canonical = pack(raw)
    assert canonical_unpack(canonical) == raw
    for other in bin_encodings(raw) - {canonical}:
        with pytest.raises(protocol.NonCanonical):
            canonical_unpack(other)


@given(st.integers(0, 40))
def test_only_the_shortest_array_header_is_accepted(n: int) -> None:
    items = b"\x00" * n
    canonical = pack([0] * n)
    assert canonical_unpack(canonical) == (0,) * n
    for header in array_headers(n):
        if header + items != canonical:
            with pytest.raises(protocol.NonCanonical):
                canonical_unpack(header + items)


def test_wide_headers_in_an_envelope_are_refused() -> None:
    good = envelope_bytes("pledge", PLEDGE_BODY)
    decode(good)
    for currency in str_encodings("EUR") - {pack("EUR")}:
        body_bytes = b"\x97" + pack(CIRCLE) + b"\x01\x03" + pack(1200) + currency + b"\x00"
        body_bytes += pack(1_700_000_000)
        refused(
            envelope_bytes("pledge", PLEDGE_BODY, body_bytes=body_bytes),
            protocol.NonCanonical,
            "non-canonical",
        )
    for circle in bin_encodings(CIRCLE) - {pack(CIRCLE)}:
        body_bytes = b"\x97" + circle + pack(PLEDGE_BODY[1:])[1:]
        refused(
            envelope_bytes("pledge", PLEDGE_BODY, body_bytes=body_bytes),
            protocol.NonCanonical,
            "non-canonical",
        )
    for header in array_headers(7) - {b"\x97"}:
        body_bytes = header + pack(PLEDGE_BODY)[1:]
        refused(
            envelope_bytes("pledge", PLEDGE_BODY, body_bytes=body_bytes),
            protocol.NonCanonical,
            "non-canonical",
        )
    for header in array_headers(5) - {b"\x95"}:
        refused(header + good[1:], protocol.NonCanonical, "non-canonical")


def test_text_as_bin_and_bin_as_text_are_wrong_types() -> None:
    body = list(PLEDGE_BODY)
    body[4] = b"EUR"
    refused(envelope_bytes("pledge", body), protocol.InvalidField, "wrong-type")
    body = list(PLEDGE_BODY)
    body[0] = "x" * 32
    refused(envelope_bytes("pledge", body), protocol.InvalidField, "wrong-type")
    refused(
        envelope_bytes("pledge", PLEDGE_BODY).replace(b"\xa6pledge", b"\xc4\x06pledge"),
        protocol.InvalidField,
        "wrong-type",
    )


def test_invalid_utf8_is_malformed() -> None:
    body_bytes = b"\x97" + pack(CIRCLE) + b"\x01\x03" + pack(1200) + b"\xa3\xff\xfe\xfd"
    body_bytes += b"\x00" + pack(1_700_000_000)
    refused(
        envelope_bytes("pledge", PLEDGE_BODY, body_bytes=body_bytes),
        protocol.MalformedEncoding,
        "malformed",
    )
    # A UTF-8-encoded surrogate is not valid UTF-8 either.
    with pytest.raises(protocol.MalformedEncoding):
        canonical_unpack(b"\xa3\xed\xa0\x80")


# --- floats, extension and timestamp types, maps -------------------------------------------


def test_float64_is_not_an_integer() -> None:
    body = list(PLEDGE_BODY)
    body[2] = 3.0
    message = refused(envelope_bytes("pledge", body), protocol.InvalidField, "wrong-type")
    assert "pledge.quantity" in message
    refused(envelope_bytes("pledge", PLEDGE_BODY, version=1.0), protocol.InvalidField, "wrong-type")


def test_float32_is_non_canonical() -> None:
    float32 = b"\xca" + struct.pack(">f", 3.0)
    with pytest.raises(protocol.NonCanonical):
        canonical_unpack(float32)
    body_bytes = b"\x97" + pack(CIRCLE) + b"\x01" + float32 + pack(PLEDGE_BODY[3:])[1:]
    refused(
        envelope_bytes("pledge", PLEDGE_BODY, body_bytes=body_bytes),
        protocol.NonCanonical,
        "non-canonical",
    )


@pytest.mark.parametrize(
    "value",
    [
        b"\xd4\x01\x00",  # fixext 1
        b"\xd5\x01\x00\x00",  # fixext 2
        b"\xd8\x01" + bytes(16),  # fixext 16
        b"\xc7\x03\x01abc",  # ext 8
        b"\xc8\x00\x03\x01abc",  # ext 16
        b"\xc9\x00\x00\x00\x03\x01abc",  # ext 32
        b"\xd6\xff" + struct.pack(">I", 1_700_000_000),  # timestamp 32
        b"\xd7\xff" + bytes(8),  # timestamp 64
        b"\xc7\x0c\xff" + bytes(12),  # timestamp 96
        b"\xc7\x00\xff",  # an empty "timestamp"
    ],
)
def test_extension_and_timestamp_types_are_malformed(value: bytes) -> None:
    with pytest.raises(protocol.MalformedEncoding) as info:
        canonical_unpack(value)
    assert info.value.reason == "malformed"
    body_bytes = b"\x97" + pack(CIRCLE) + value + pack(PLEDGE_BODY[2:])[1:]
    refused(
        envelope_bytes("pledge", PLEDGE_BODY, body_bytes=body_bytes),
        protocol.MalformedEncoding,
        "malformed",
    )


@pytest.mark.parametrize("value", [b"\xc7\x00\x01", b"\x80"])
def test_an_empty_extension_or_map_is_a_wrong_type(value: bytes) -> None:
    # The codec's length limits stop every non-empty one; an empty one reaches
    # the field types, which refuse it (see protocol/_codec.py).
    body_bytes = b"\x97" + pack(CIRCLE) + value + pack(PLEDGE_BODY[2:])[1:]
    refused(
        envelope_bytes("pledge", PLEDGE_BODY, body_bytes=body_bytes),
        protocol.InvalidField,
        "wrong-type",
    )
    refused(
        envelope_bytes("pledge", PLEDGE_BODY, body_bytes=value), protocol.InvalidField, "wrong-type"
    )


@pytest.mark.parametrize(
    "value",
    [b"\x81\x01\x02", b"\x81\xa1a\x01", b"\xde\x00\x01\x01\x02", b"\xdf\x00\x00\x00\x01\x01\x02"],
)
def test_maps_are_malformed(value: bytes) -> None:
    with pytest.raises(protocol.MalformedEncoding):
        canonical_unpack(value)
    refused(
        envelope_bytes("pledge", PLEDGE_BODY, body_bytes=value),
        protocol.MalformedEncoding,
        "malformed",
    )
    # The envelope itself as a map of its five fields.
    good = envelope_bytes("pledge", PLEDGE_BODY)
    as_map = msgpack.packb(dict(enumerate(msgpack.unpackb(good))), use_bin_type=True)
    refused(as_map, protocol.MalformedEncoding, "malformed")


# --- exact types ----------------------------------------------------------------------------


@pytest.mark.parametrize("position", [1, 2, 3, 5, 6])
@pytest.mark.parametrize("value", [True, False])
def test_a_bool_is_not_an_integer(position: int, value: bool) -> None:
    body = list(PLEDGE_BODY)
    body[position] = value
    message = refused(envelope_bytes("pledge", body), protocol.InvalidField, "wrong-type")
    assert "bool" in message


@pytest.mark.parametrize("version", [True, False])
def test_a_bool_is_not_a_version(version: bool) -> None:
    refused(
        envelope_bytes("pledge", PLEDGE_BODY, version=version), protocol.InvalidField, "wrong-type"
    )


def test_an_integer_is_not_a_bool() -> None:
    body: list[Any] = [
        "title",
        "kg",
        10,
        "EUR",
        None,
        2000,
        None,
        [],
        False,
        False,
        "expire",
        1000,
    ]
    decode(envelope_bytes("charter", body))
    for position in (8, 9):
        for value in (0, 1):
            wrong = list(body)
            wrong[position] = value
            refused(envelope_bytes("charter", wrong), protocol.InvalidField, "wrong-type")


@pytest.mark.parametrize(
    ("position", "value"),
    [(0, None), (1, None), (1, "1"), (0, b"\x11" * 31), (0, [CIRCLE]), (4, None), (6, [])],
)
def test_wrong_field_types_are_refused(position: int, value: Any) -> None:
    body = list(PLEDGE_BODY)
    body[position] = value
    with pytest.raises(protocol.InvalidField) as info:
        decode(envelope_bytes("pledge", body))
    assert info.value.reason in {"wrong-type", "out-of-range"}
    assert info.value.field.startswith("pledge.")


@pytest.mark.parametrize(
    ("position", "value", "field"),
    [
        (1, 0, "pledge.seq"),
        (1, 2**32, "pledge.seq"),
        (2, -1, "pledge.quantity"),
        (3, 10**15 + 1, "pledge.max_price"),
        (4, "eur", "pledge.currency"),
        (4, "EURO", "pledge.currency"),
        (6, -1, "pledge.created"),
    ],
)
def test_out_of_range_values_are_refused(position: int, value: Any, field: str) -> None:
    body = list(PLEDGE_BODY)
    body[position] = value
    with pytest.raises(protocol.InvalidField) as info:
        decode(envelope_bytes("pledge", body))
    assert info.value.reason == "out-of-range"
    assert info.value.field == field


@pytest.mark.parametrize("size", [0, 6, 8, 12])
def test_a_body_of_the_wrong_length_is_refused(size: int) -> None:
    body = (PLEDGE_BODY * 2)[:size]
    refused(envelope_bytes("pledge", body), protocol.InvalidField, "wrong-type")


@pytest.mark.parametrize(
    "value",
    [
        [1, "pledge", PLEDGE_BODY, ALICE.public_key],
        [1, "pledge", PLEDGE_BODY, ALICE.public_key, bytes(64), b""],
        [1, "pledge", PLEDGE_BODY, ALICE.public_key[:31], bytes(64)],
        [1, "pledge", PLEDGE_BODY, ALICE.public_key, bytes(63)],
        [1, "pledge", PLEDGE_BODY, "key", bytes(64)],
        [1, "pledge", PLEDGE_BODY, ALICE.public_key, None],
        [1, 7, PLEDGE_BODY, ALICE.public_key, bytes(64)],
        ["1", "pledge", PLEDGE_BODY, ALICE.public_key, bytes(64)],
        "an envelope",
        7,
        None,
    ],
)
def test_envelopes_of_the_wrong_shape_are_refused(value: Any) -> None:
    with pytest.raises(protocol.InvalidField) as info:
        decode(pack(value))
    assert info.value.reason == "wrong-type"
    assert info.value.field.startswith("envelope")


# --- trailing bytes, size, complexity -------------------------------------------------------


@given(envelope=envelopes(), suffix=st.binary(min_size=1, max_size=64))
def test_trailing_bytes_are_refused(envelope: protocol.Envelope[Any], suffix: bytes) -> None:
    if len(envelope.data) + len(suffix) > MAX_ENVELOPE_SIZE:
        return
    message = refused(envelope.data + suffix, protocol.MalformedEncoding, "trailing-bytes")
    assert "trailing" in message


def test_an_empty_input_is_malformed() -> None:
    refused(b"", protocol.MalformedEncoding, "malformed")


@pytest.mark.parametrize("value", ["text", 5, None, [b"\x95"]])
def test_a_non_bytes_input_is_malformed(value: Any) -> None:
    refused(value, protocol.MalformedEncoding, "malformed")


def test_bytearray_and_memoryview_inputs_decode() -> None:
    data = envelope_bytes("pledge", PLEDGE_BODY)
    assert decode(bytearray(data)).id == decode(data).id
    assert decode(memoryview(data)).id == decode(data).id


def test_oversize_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("an oversize input reached the msgpack decoder")

    # Two inputs that would fail differently if decoded: garbage, and a valid bin.
    garbage = b"\xc1" * (MAX_ENVELOPE_SIZE + 1)
    valid_msgpack = pack(bytes(MAX_ENVELOPE_SIZE))
    monkeypatch.setattr(msgpack, "unpackb", must_not_decode)
    for data in (garbage, valid_msgpack, garbage * 20):
        message = refused(data, protocol.Oversize, "oversize")
        assert str(MAX_ENVELOPE_SIZE) in message


def test_the_size_limit_is_inclusive() -> None:
    exactly = pack(bytes(MAX_ENVELOPE_SIZE - 3))
    assert len(exactly) == MAX_ENVELOPE_SIZE
    assert canonical_unpack(exactly) == bytes(MAX_ENVELOPE_SIZE - 3)
    # A valid envelope of exactly the limit: refused for its type, not its size.
    refused(exactly, protocol.InvalidField, "wrong-type")


def _array_of(items: bytes, count: int) -> bytes:
    header = bytes([0x90 | count]) if count < 16 else b"\xdc" + struct.pack(">H", count)
    return header + items * count


# Inputs that decode to far more memory than their size: arrays of tiny arrays,
# of two-character strings, of integers beyond CPython's cached small ones.
HOSTILE_SHAPES = {
    "one-element arrays": _array_of(_array_of(b"\x90", 1), 2048),
    "two-character strings": _array_of(b"\xa2ab", 2048),
    "integers": _array_of(b"\xcd\x01\x2c", 2048),
    "pairs of arrays": _array_of(b"\x92\x90\x90", 2048),
}


def hostile(shape: str) -> bytes:
    """The shape repeated to fill an envelope (a canonical array, else it would not matter)."""
    inner = HOSTILE_SHAPES[shape]
    data = _array_of(inner, min(2048, (MAX_ENVELOPE_SIZE - 3) // len(inner)))
    assert MAX_ENVELOPE_SIZE * 0.9 < len(data) <= MAX_ENVELOPE_SIZE
    return data


@pytest.mark.parametrize("shape", sorted(HOSTILE_SHAPES))
def test_values_more_complex_than_their_size_are_refused(shape: str) -> None:
    data = hostile(shape)
    with pytest.raises(protocol.MalformedEncoding) as info:
        canonical_unpack(data)
    assert info.value.reason == "too-complex"
    refused(data, protocol.MalformedEncoding, "too-complex")


def _peak_decode_memory(data: bytes) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        with contextlib.suppress(protocol.ProtocolError):
            decode(data)
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("shape", sorted(HOSTILE_SHAPES))
def test_hostile_values_stay_within_a_few_times_their_size(shape: str) -> None:
    data = hostile(shape)
    # Without a budget these expand 14 to 28 times; the budget stops them at 5
    # times their size plus 16 KiB, plus the values of one unfinished array (at
    # most 2,048, about 120 KiB): below 10 times a 60 KiB input.
    assert _peak_decode_memory(data) < 10 * len(data)


@pytest.mark.parametrize("depth", [1, 100, 1000, 2000])
@pytest.mark.parametrize("header", [b"\xdc\x08\x00", b"\xdd\x00\x00\x08\x00"])
def test_truncated_long_arrays_reserve_nothing(header: bytes, depth: int) -> None:
    # msgpack reserves an array's declared length before reading its items:
    # unchecked, 1,000 nested headers of 2,048 items (3 KiB) reserve 16 MiB.
    data = header * depth
    with pytest.raises(protocol.MalformedEncoding) as info:
        canonical_unpack(data)
    assert info.value.reason == "malformed"
    # What remains is the fixed cost of checking the input (about 45 KiB).
    assert _peak_decode_memory(data) < 64 * 1024 + 4 * len(data)


def test_long_arrays_with_trailing_bytes_are_trailing_bytes() -> None:
    data = pack(list(range(100)))
    assert canonical_unpack(data) == tuple(range(100))
    with pytest.raises(protocol.MalformedEncoding) as info:
        canonical_unpack(data + b"\x00")
    assert info.value.reason == "trailing-bytes"


def test_the_largest_certificate_is_not_too_complex() -> None:
    allocations = [[i.to_bytes(32, "big"), 1] for i in range(1500)]
    body = [CIRCLE, CIRCLE, 100, "EUR", 1500, allocations, 1_700_000_000]
    data = envelope_bytes("certificate", body)
    assert len(data) > MAX_ENVELOPE_SIZE * 0.8
    assert len(decode(data).message.allocations) == 1500  # type: ignore[attr-defined]


# --- version and kind -------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 2, 3, 127, 255, 2**16, 2**64 - 1, -1, -(2**63)])
def test_unsupported_versions_are_refused(version: int) -> None:
    message = refused(
        envelope_bytes("pledge", PLEDGE_BODY, version=version),
        protocol.UnsupportedVersion,
        "unsupported-version",
    )
    assert str(version) in message


@pytest.mark.parametrize(
    "kind", ["", "Pledge", "PLEDGE", "pledge ", "pledges", "x" * 1000, "\u00e9", "rfq2"]
)
def test_unknown_kinds_are_refused(kind: str) -> None:
    message = refused(envelope_bytes(kind, PLEDGE_BODY), protocol.UnknownKind, "unknown-kind")
    assert len(message) < 600, "the message quotes a bounded part of the kind"
    assert "pledge" in message, "the message lists the known kinds"


def test_every_refusal_is_an_invalid_message_and_a_value_error() -> None:
    for data in (b"", b"\xc1", envelope_bytes("nope", PLEDGE_BODY), b"\x00" * 70_000):
        with pytest.raises(protocol.InvalidMessage) as info:
            decode(data)
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, protocol.ProtocolError)
