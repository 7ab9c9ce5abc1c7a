"""Single-byte mutations: every one is refused with a ProtocolError, or is a different message.

A changed byte must never crash the decoder (any exception but a
ProtocolError fails these tests) and never pass as the original message: if it
decodes at all, it is a valid message with its own id. Exhaustive runs try all
255 other values at every position of an envelope.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol
from protocol import KINDS, Identity, Message, Pledge, decode, envelope_id, seal

from .strategies import envelopes, message_of

ALICE = Identity.from_seed(bytes(range(32)))


def decode_mutant(data: bytes, original_id: bytes) -> bool:
    """Decode one mutant; True when refused. Anything but a ProtocolError propagates."""
    try:
        envelope = decode(data)
    except protocol.ProtocolError as error:
        assert isinstance(error, protocol.InvalidMessage)
        assert error.reason and str(error)
        return True
    # Accepted: it must be a valid message in its own right, with its own id.
    assert envelope.id != original_id
    assert envelope.id == envelope_id(data)
    assert envelope.data == data
    assert type(envelope.message) is KINDS[envelope.kind]
    assert decode(data) == envelope
    return False


def every_single_byte_change(data: bytes) -> tuple[int, int]:
    """Try all 255 other values at every position; returns (refused, accepted)."""
    original_id = envelope_id(data)
    refused = accepted = 0
    buffer = bytearray(data)
    for position, original in enumerate(data):
        for value in range(256):
            if value == original:
                continue
            buffer[position] = value
            if decode_mutant(bytes(buffer), original_id):
                refused += 1
            else:
                accepted += 1
        buffer[position] = original
    assert refused + accepted == 255 * len(data)
    return refused, accepted


def test_every_single_byte_change_of_a_pledge() -> None:
    pledge = Pledge(
        circle=bytes(range(32)),
        seq=7,
        quantity=12,
        max_price=129_900,
        currency="EUR",
        tolerance=2,
        created=1_700_000_000,
    )
    data = seal(pledge, ALICE).data
    refused, accepted = every_single_byte_change(data)
    # Each mutant changes signed bytes, the signer or the signature: none verifies.
    assert (refused, accepted) == (255 * len(data), 0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_single_byte_change_of_every_kind(kind: str) -> None:
    # One example, derandomized: Hypothesis tries the simplest input first, so
    # this is the simplest valid message of the kind (small, so ~3 s per kind).
    @settings(max_examples=1, derandomize=True, database=None)
    @given(message=message_of(kind))
    def run(message: Message) -> None:
        data = seal(message, ALICE).data
        assert len(data) < 1000, "the simplest message should stay small"
        refused, accepted = every_single_byte_change(data)
        assert (refused, accepted) == (255 * len(data), 0)

    run()


@settings(max_examples=300)
@given(envelope=envelopes(), data=st.data())
def test_random_single_byte_changes(
    envelope: protocol.Envelope[Message], data: st.DataObject
) -> None:
    original_id = envelope.id
    size = len(envelope.data)
    # Positions near both ends (header, kind, signer, signature) and anywhere.
    positions = (
        st.integers(0, size - 1)
        | st.integers(0, min(size, 40) - 1)
        | st.integers(max(0, size - 100), size - 1)
    )
    for _ in range(20):
        position = data.draw(positions)
        value = (envelope.data[position] + data.draw(st.integers(1, 255))) % 256
        mutant = envelope.data[:position] + bytes([value]) + envelope.data[position + 1 :]
        assert decode_mutant(mutant, original_id)
