"""Envelope basics: sealing, decoding, ids, signatures and the fixed layout."""

from __future__ import annotations

import hashlib

import msgpack
import pytest

import protocol
from protocol import Identity, Pledge, decode, seal

ALICE = Identity.from_seed(bytes(range(32)))
BOB = Identity.from_seed(bytes(range(1, 33)))


def pledge(**changes: object) -> Pledge:
    fields: dict[str, object] = dict(
        circle=b"\x11" * 32, seq=1, quantity=3, max_price=1200, currency="EUR", tolerance=0,
        created=1_700_000_000,
    )
    fields.update(changes)
    return Pledge(**fields)  # type: ignore[arg-type]


def test_layout_is_the_one_design_fixes() -> None:
    env = seal(pledge(), ALICE)
    version, kind, body, signer, signature = msgpack.unpackb(env.data)
    assert (version, kind, signer) == (1, "pledge", ALICE.public_key)
    assert body == [b"\x11" * 32, 1, 3, 1200, "EUR", 0, 1_700_000_000]
    signed = msgpack.packb(["buying-circles", 1, "pledge", body], use_bin_type=True)
    import nacl.signing

    nacl.signing.VerifyKey(ALICE.public_key).verify(signed, signature)
    assert env.id == hashlib.blake2b(env.data, digest_size=32).digest()


def test_decode_round_trip() -> None:
    env = seal(pledge(), ALICE)
    back = decode(env.data)
    assert back == env
    assert back.message == pledge()


def test_another_signer_key_is_refused() -> None:
    env = seal(pledge(), ALICE)
    forged = env.data[:-100] + b"\xc4\x20" + BOB.public_key + env.data[-66:]
    with pytest.raises(protocol.BadSignature) as info:
        decode(forged)
    assert info.value.reason == "bad-signature"


def test_bool_is_not_an_int() -> None:
    with pytest.raises(protocol.InvalidField) as info:
        pledge(seq=True)
    assert info.value.reason == "wrong-type"
    assert info.value.field == "pledge.seq"


def test_identity_key_file_round_trip() -> None:
    assert Identity.from_key_file(ALICE.to_key_file()) == ALICE
    with pytest.raises(protocol.KeyFileError):
        Identity.from_key_file(b"nonsense")


def test_decoding_a_mutable_buffer_keeps_an_immutable_copy() -> None:
    env = seal(pledge(), ALICE)
    buffer = bytearray(env.data)
    back = decode(buffer)  # type: ignore[arg-type]
    buffer[0] ^= 0xFF
    assert type(back.data) is bytes and back.data == env.data
    assert protocol.decode_unverified(memoryview(env.data)).data == env.data  # type: ignore[arg-type]
