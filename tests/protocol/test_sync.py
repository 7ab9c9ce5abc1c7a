"""Sync frames: round trips, strict refusal, and the digest/prefix helpers."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocol
from protocol._sync import (
    PREFIX,
    SyncEnvelopes,
    SyncFetch,
    SyncInSync,
    SyncSummary,
    decode_sync_frame,
    encode_sync_frame,
    id_prefixes,
    ids_digest,
)

ids = st.lists(st.binary(min_size=32, max_size=32), max_size=50)
circle_ids = st.binary(min_size=32, max_size=32)

frames = st.one_of(
    st.builds(
        SyncSummary,
        circle=circle_ids,
        count=st.integers(0, 10_000),
        digest=st.binary(min_size=32, max_size=32),
    ),
    st.builds(SyncInSync, circle=circle_ids),
    st.builds(SyncFetch, circle=circle_ids, have=ids.map(id_prefixes)),
    st.builds(
        SyncEnvelopes,
        circle=circle_ids,
        envelopes=st.lists(st.binary(min_size=1, max_size=300), max_size=20).map(tuple),
        more=st.booleans(),
    ),
)


@given(frames)
def test_round_trip(frame: protocol.Message) -> None:
    data = encode_sync_frame(frame)  # type: ignore[arg-type]
    assert decode_sync_frame(data) == frame
    assert encode_sync_frame(decode_sync_frame(data)) == data


@given(ids)
def test_digest_is_a_function_of_the_set(values: list[bytes]) -> None:
    assert ids_digest(values) == ids_digest(list(reversed(values)) + values)


@given(ids)
def test_fetch_names_every_prefix(values: list[bytes]) -> None:
    fetch = SyncFetch(circle=b"\0" * 32, have=id_prefixes(values))
    assert fetch.has() == {v[:PREFIX] for v in values}


@given(st.binary(max_size=200))
def test_any_bytes_give_a_frame_or_a_protocol_error(data: bytes) -> None:
    with contextlib.suppress(protocol.ProtocolError):
        decode_sync_frame(data)


def test_ragged_have_is_refused() -> None:
    with pytest.raises(protocol.InvalidField):
        SyncFetch(circle=b"\0" * 32, have=b"123")


def test_unknown_frame_kind_is_refused() -> None:
    import msgpack

    with pytest.raises(protocol.UnknownKind):
        decode_sync_frame(msgpack.packb(["gimme", [b"\0" * 32]]))
