"""Round trips for every kind: ``decode(seal(m).data)`` gives back ``m``, with a stable id."""

from __future__ import annotations

import hashlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocol
from protocol import KINDS, Identity, Message, decode, decode_as, decode_unverified, seal
from protocol._codec import canonical_unpack, pack

from .strategies import KIND_STRATEGIES, envelopes, identities, message_of, messages


def test_every_kind_has_a_strategy() -> None:
    # strategies.py refuses to import otherwise; this names the rule where it is tested.
    assert set(KIND_STRATEGIES) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
@given(data=st.data())
def test_decode_gives_back_the_message(kind: str, data: st.DataObject) -> None:
    message = data.draw(message_of(kind), label="message")
    identity = data.draw(identities(), label="identity")
    envelope = seal(message, identity)
    back = decode(envelope.data)
    assert back.message == message
    assert type(back.message) is KINDS[kind]
    assert back.kind == kind
    assert back.signer == identity.public_key
    assert back.signature == envelope.signature
    assert back.data == envelope.data
    assert back == envelope
    assert decode_as(envelope.data, KINDS[kind]) == envelope


@pytest.mark.parametrize("kind", sorted(KINDS))
@given(data=st.data())
def test_id_is_stable(kind: str, data: st.DataObject) -> None:
    message = data.draw(message_of(kind), label="message")
    identity = data.draw(identities(), label="identity")
    first = seal(message, identity)
    # ed25519 signatures are deterministic: sealing again gives the same bytes and id.
    again = seal(message, identity)
    assert again.data == first.data
    assert again.id == first.id
    assert first.id == hashlib.blake2b(first.data, digest_size=32).digest()
    assert decode(first.data).id == first.id
    assert decode(bytes(first.data)).id == first.id
    # The same body from a rebuilt message (fields copied) has the same id too.
    rebuilt = type(message)(**{name: getattr(message, name) for name in message._names})
    assert seal(rebuilt, identity).id == first.id


@given(envelope=envelopes())
def test_envelope_bytes_are_canonical_msgpack(envelope: protocol.Envelope[Message]) -> None:
    value = canonical_unpack(envelope.data)
    assert pack(value) == envelope.data
    # An independent encoder agrees on every byte, as DESIGN.md's canonical rule says.
    assert msgpack.packb(msgpack.unpackb(envelope.data), use_bin_type=True) == envelope.data
    version, kind, body, signer, signature = value
    assert (version, kind, signer, signature) == (
        1,
        envelope.kind,
        envelope.signer,
        envelope.signature,
    )
    assert protocol.signing_bytes(kind, body) == pack(["buying-circles", 1, kind, body])


@given(envelope=envelopes())
def test_unverified_then_verified_equals_decode(envelope: protocol.Envelope[Message]) -> None:
    unverified = decode_unverified(envelope.data)
    assert unverified.message == envelope.message
    assert unverified.signed_payload() == protocol.signing_bytes(
        envelope.kind, msgpack.unpackb(envelope.data)[2]
    )
    assert unverified.verify() == decode(envelope.data)


@given(message=messages(), identity=identities(), other=identities())
def test_different_signers_give_different_ids(
    message: Message, identity: Identity, other: Identity
) -> None:
    first = seal(message, identity)
    second = seal(message, other)
    assert (first.id == second.id) == (identity.public_key == other.public_key)


@given(first=messages(), second=messages(), identity=identities())
def test_different_messages_give_different_ids(
    first: Message, second: Message, identity: Identity
) -> None:
    assert (seal(first, identity).id == seal(second, identity).id) == (first == second)


@given(data=st.data())
def test_decode_as_refuses_another_kind(data: st.DataObject) -> None:
    kind, other = data.draw(
        st.lists(st.sampled_from(sorted(KINDS)), min_size=2, max_size=2, unique=True)
    )
    envelope = seal(data.draw(message_of(kind)), data.draw(identities()))
    with pytest.raises(protocol.InvalidMessage) as info:
        decode_as(envelope.data, KINDS[other])
    assert info.value.reason == "wrong-kind"


def test_text_with_a_lone_surrogate_is_refused() -> None:
    identity = Identity.from_seed(bytes(32))
    short = protocol.Referral(
        circle=bytes(32), vendor=bytes(32), offer=None, note="\ud800", created=1
    )
    with pytest.raises(protocol.InvalidField) as info:
        seal(short, identity)
    assert info.value.reason == "wrong-type"
    with pytest.raises(protocol.InvalidField) as info:
        protocol.Referral(
            circle=bytes(32), vendor=bytes(32), offer=None, note="\udfff" * 200, created=1
        )
    assert info.value.field == "referral.note"


@given(
    text=st.text(alphabet=st.characters(exclude_categories=()), max_size=200),
    identity=identities(),
)
def test_any_python_text_either_round_trips_or_is_refused(text: str, identity: Identity) -> None:
    try:
        message = protocol.Referral(
            circle=bytes(32), vendor=bytes(32), offer=None, note=text, created=1
        )
        envelope = seal(message, identity)
    except protocol.InvalidField as error:
        assert error.reason in {"wrong-type", "out-of-range"}
        return
    assert decode(envelope.data).message.note == text  # type: ignore[attr-defined]
