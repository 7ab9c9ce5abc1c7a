"""Batch verification and the seen-cache: same answers as decode, order kept, bounded."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol
from circles import _verify, _verify_process
from circles._verify import SeenCache, verify_batch
from protocol import (
    Identity,
    InvalidField,
    Message,
    Pledge,
    ProtocolError,
    decode,
    decode_unverified,
    seal,
)
from protocol._codec import pack as protocol_pack
from protocol._schema import from_wire, to_wire
from tests.protocol import strategies

SIGNERS = [Identity.from_seed(bytes([n]) * 32) for n in range(1, 6)]


def pledge_bytes(seq: int, signer: int = 0, quantity: int = 3) -> bytes:
    body = Pledge(
        circle=b"\x11" * 32,
        seq=seq,
        quantity=quantity,
        max_price=1200,
        currency="EUR",
        tolerance=0,
        created=1_700_000_000,
    )
    return seal(body, SIGNERS[signer % len(SIGNERS)]).data


VALID = [pledge_bytes(seq, signer=seq) for seq in range(1, 81)]


def forge_signature(data: bytes) -> bytes:
    """The same envelope with one bit of its signature flipped."""
    return data[:-1] + bytes([data[-1] ^ 0x01])


def swap_signer(data: bytes) -> bytes:
    """The same envelope claiming another signer's key."""
    keys = [s.public_key for s in SIGNERS]
    other = keys[(keys.index(data[-98:-66]) + 1) % len(keys)]
    return data[:-98] + other + data[-66:]


def serial(data: bytes) -> object:
    try:
        return decode(data)
    except ProtocolError as error:
        return error


def same_answer(got: object, want: object) -> bool:
    if isinstance(want, ProtocolError):
        return type(got) is type(want) and got.reason == want.reason  # type: ignore[attr-defined]
    return got == want


# Inputs of every sort: valid, forged, altered in one byte, truncated, junk, empty.
def mutants() -> list[bytes]:
    out: list[bytes] = []
    for n, data in enumerate(VALID[:20]):
        out.append(forge_signature(data))
        out.append(swap_signer(data))
        position = (n * 7) % len(data)
        out.append(data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1 :])
        out.append(data[: len(data) - 1 - n])
        out.append(data + b"\x00")
    out += [b"", b"\xc0", b"\x95\x01", b"\x81\x01\x02", b"\xff" * 40, bytes(70_000)]
    return out


MIXED = VALID + mutants()


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
def test_batch_agrees_with_serial_decode_in_order(workers: int) -> None:
    order = list(range(len(MIXED)))
    # Interleave good and bad so that order mistakes cannot hide.
    order = order[::3] + order[1::3] + order[2::3]
    datas = [MIXED[i] for i in order]
    got = verify_batch(datas, workers=workers)
    assert len(got) == len(datas)
    for data, result in zip(datas, got, strict=True):
        assert same_answer(result, serial(data)), (data.hex(), result)
    accepted = sum(isinstance(r, protocol.Envelope) for r in got)
    assert accepted == len(VALID)


def test_forged_signatures_are_refused_not_raised() -> None:
    forged = [forge_signature(d) for d in VALID] + [swap_signer(d) for d in VALID]
    got = verify_batch(forged, workers=2)
    assert all(isinstance(r, protocol.BadSignature) for r in got)
    assert {r.reason for r in got if isinstance(r, ProtocolError)} == {"bad-signature"}


def test_results_carry_id_and_bytes() -> None:
    got = verify_batch(VALID, workers=2)
    for data, envelope in zip(VALID, got, strict=True):
        assert isinstance(envelope, protocol.Envelope)
        assert envelope.data == data
        assert envelope.id == hashlib.blake2b(data, digest_size=32).digest()


def test_duplicates_in_a_batch_get_the_same_answer() -> None:
    datas = [VALID[0], forge_signature(VALID[1]), VALID[0], VALID[2], forge_signature(VALID[1])]
    got = verify_batch(datas, workers=2)
    assert got[0] == got[2] == decode(VALID[0])
    assert isinstance(got[1], protocol.BadSignature)
    assert isinstance(got[4], protocol.BadSignature)


def test_non_bytes_inputs_get_decodes_refusal() -> None:
    datas = [bytearray(VALID[0]), "text", VALID[1], memoryview(VALID[0]), None]
    got = verify_batch(datas, workers=2)  # type: ignore[arg-type]
    assert got[0] == got[3] == decode(VALID[0])
    assert isinstance(got[1], protocol.MalformedEncoding)
    assert got[2] == decode(VALID[1])
    assert isinstance(got[4], protocol.MalformedEncoding)


def test_empty_batch() -> None:
    assert verify_batch([]) == []


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_bad_worker_counts_are_refused(workers: object) -> None:
    with pytest.raises(ValueError, match="workers"):
        verify_batch(VALID[:2], workers=workers)  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.sampled_from(MIXED), max_size=60),
    st.integers(1, 4),
    st.sampled_from([None, True, False]),
)
def test_any_mix_matches_serial(datas: list[bytes], workers: int, process: bool | None) -> None:
    got = verify_batch(datas, workers=workers, process=process)
    assert [same_answer(r, serial(d)) for r, d in zip(got, datas, strict=True)] == [True] * len(
        datas
    )


def test_cache_answers_seen_bytes_without_verifying(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = SeenCache()
    first = cache.decode(VALID[0])
    # Were the signature checked again, this would raise.
    monkeypatch.setattr(
        "circles._seen_cache.decode", lambda data: pytest.fail("verified a seen envelope again")
    )
    assert cache.decode(VALID[0]) is first
    assert cache.get(VALID[0]) is first
    assert first.id in cache
    stats = cache.statistics()
    assert (stats.size, stats.hits, stats.total_bytes) == (1, 2, len(VALID[0]))


def test_cache_never_serves_a_forged_envelope() -> None:
    cache = SeenCache()
    for data in VALID[:10]:
        cache.decode(data)
    for data in VALID[:10]:
        for forged in (forge_signature(data), swap_signer(data), data + b"\x00"):
            assert cache.get(forged) is None
            with pytest.raises(ProtocolError):
                cache.decode(forged)
            got = verify_batch([forged], cache=cache)
            assert isinstance(got[0], ProtocolError)
    assert len(cache) == 10


def test_cache_does_not_trust_the_id_alone() -> None:
    # Even an entry whose id matched other bytes (a BLAKE2b collision) would
    # not be served for them: the bytes themselves must match.
    cache = SeenCache()
    envelope = cache.decode(VALID[0])
    cache._entries[hashlib.blake2b(VALID[1], digest_size=32).digest()] = envelope
    assert cache.get(VALID[1]) is None
    assert cache.decode(VALID[1]) == decode(VALID[1])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, len(VALID) - 1), max_size=200), st.integers(1, 12))
def test_cache_stays_bounded_and_evicts_least_recent(picks: list[int], bound: int) -> None:
    cache = SeenCache(max_entries=bound)
    model: list[int] = []  # least recently seen first
    for pick in picks:
        assert cache.decode(VALID[pick]) == decode(VALID[pick])
        if pick in model:
            model.remove(pick)
        model.append(pick)
        del model[:-bound]
        assert len(cache) == len(model) <= bound
    held = {i for i in range(len(VALID)) if decode(VALID[i]).id in cache}
    assert held == set(model)


def test_cache_bounded_by_bytes() -> None:
    many = [pledge_bytes(seq) for seq in range(1, 501)]
    assert sum(map(len, many)) > protocol.MAX_ENVELOPE_SIZE
    cache = SeenCache(max_bytes=protocol.MAX_ENVELOPE_SIZE)
    for data in many:
        cache.decode(data)
    # Exactly the most recent envelopes that fit are held.
    fit = 0
    while sum(map(len, many[len(many) - fit - 1 :])) <= protocol.MAX_ENVELOPE_SIZE:
        fit += 1
    assert len(cache) == fit
    assert cache.statistics().total_bytes == sum(map(len, many[-fit:]))
    assert cache.get(many[-1]) is not None
    assert cache.get(many[0]) is None


def test_batch_fills_and_uses_the_cache() -> None:
    cache = SeenCache()
    first = verify_batch(VALID[:40], cache=cache, workers=2)
    assert len(cache) == 40
    again = verify_batch(VALID[:50], cache=cache, workers=2)
    assert all(a is b for a, b in zip(first, again[:40], strict=False))
    assert again[40:] == [decode(d) for d in VALID[40:50]]
    assert cache.statistics().hits == 40
    assert len(cache) == 50


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [({"max_entries": 0}, "max_entries"), ({"max_bytes": 10}, "max_bytes")],
)
def test_cache_bad_bounds_are_refused(kwargs: dict[str, int], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        SeenCache(**kwargs)


# The fast paths of this batch (and of protocol's decoding) build the same
# objects as the slow, obvious code they replace; these tests hold them to it.


def test_envelopes_are_built_with_every_field() -> None:
    assert tuple(f.name for f in dataclasses.fields(protocol.Envelope)) == _verify._ENVELOPE_FIELDS
    for data, envelope in zip(VALID, verify_batch(VALID, workers=2), strict=True):
        assert isinstance(envelope, protocol.Envelope)
        slow = decode(data)
        for name in _verify._ENVELOPE_FIELDS:
            assert getattr(envelope, name) == getattr(slow, name)
        assert envelope == slow
        assert hash(envelope.message) == hash(slow.message)


@settings(max_examples=60, deadline=None)
@given(strategies.envelopes())
def test_workers_check_the_bytes_decode_checks(envelope: protocol.Envelope[Message]) -> None:
    data = envelope.data
    unverified = decode_unverified(data)
    assert _verify._SIGNED_PREFIX + data[2 : -_verify._TAIL] == unverified.signed_payload()
    assert data[-98:-66] == unverified.signer
    assert data[-64:] == unverified.signature
    forged = forge_signature(data)
    got = verify_batch([data, forged] * 9, workers=2)
    assert got[::2] == [envelope] * 9
    assert all(same_answer(r, serial(forged)) for r in got[1::2])


def slow_from_wire(cls: type[Any], obj: Any) -> Any:
    """What protocol's from_wire did before it was generated per class."""
    names = cls._names
    if type(obj) is not tuple or len(obj) != len(names):
        raise InvalidField("shape", reason="wrong-type", field=cls._label)
    kwargs = dict(zip(names, obj, strict=True))
    for name, convert, path in cls._converters:
        kwargs[name] = convert(kwargs[name], path)
    return cls(**kwargs)


def outcome(build: Any) -> object:
    try:
        return ("built", build())
    except InvalidField as error:
        return ("refused", type(error), error.reason, error.field, str(error))


JUNK = [None, True, False, 0, -1, 1, 2**40 + 1, 10**16, "", "EUR", "x" * 300, b"", b"\x00" * 32]


@settings(max_examples=300, deadline=None)
@given(strategies.messages(), st.data())
def test_generated_from_wire_agrees_with_the_generic_path(message: Message, data: Any) -> None:
    cls = type(message)
    body = list(msgpack.unpackb(protocol_pack(to_wire(message)), use_list=False))
    position = data.draw(st.integers(-1, len(body) - 1), label="field changed (-1: none)")
    if position >= 0:
        body[position] = data.draw(st.sampled_from([*JUNK, ()]), label="new value")
    obj = tuple(body)
    fast = outcome(lambda: from_wire(cls, obj))
    slow = outcome(lambda: slow_from_wire(cls, obj))
    # Built equal, or refused with the same error, reason, field and words.
    assert fast == slow
    if fast[0] == "built":
        assert type(fast[1]) is cls
    if position < 0:
        assert fast == ("built", message)


def test_from_wire_refuses_a_wrong_shape_with_the_label() -> None:
    with pytest.raises(InvalidField, match="pledge must be an array of exactly 7 fields"):
        from_wire(Pledge, (1, 2))
    with pytest.raises(InvalidField, match="body must be an array"):
        from_wire(Pledge, [1] * 7, "body")


# The helper process (circles._verify_process): same answers, and any failure
# of the helper costs time, never a wrong answer.


@pytest.fixture
def fresh_helper(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A helper process of this test's own, closed after it."""
    with _verify_process.lock:
        if _verify_process._helper is not None:
            _verify_process._helper.close()
        monkeypatch.setattr(_verify_process, "_helper", None)
        monkeypatch.setattr(_verify_process, "_failures", 0)
    yield
    with _verify_process.lock:
        if _verify_process._helper is not None:
            _verify_process._helper.close()


def current_helper() -> _verify_process.HelperProcess:
    helper = _verify_process._helper
    assert helper is not None and not helper.broken
    return helper


@pytest.mark.usefixtures("fresh_helper")
@pytest.mark.parametrize("workers", [2, 3])
def test_helper_process_agrees_with_serial_decode_in_order(workers: int) -> None:
    order = list(range(len(MIXED)))
    order = order[1::2] + order[::2]
    datas = [MIXED[i] for i in order] * 2
    got = verify_batch(datas, workers=workers, process=True)
    current_helper()
    assert [same_answer(r, serial(d)) for r, d in zip(got, datas, strict=True)] == [True] * len(
        datas
    )


@pytest.mark.usefixtures("fresh_helper")
def test_helper_process_checks_its_share() -> None:
    many = [pledge_bytes(seq, signer=seq) for seq in range(1, 401)]
    many[-1] = forge_signature(many[-1])
    got = verify_batch(many, workers=2, process=True)
    helper = current_helper()
    # The helper started at the end: it took the last envelope at least.
    assert helper.counters[0] < len(many)
    assert isinstance(got[-1], protocol.BadSignature)
    assert got[:-1] == [decode(d) for d in many[:-1]]


@pytest.mark.usefixtures("fresh_helper")
def test_batch_is_right_when_the_helper_died() -> None:
    assert verify_batch(VALID, process=True, workers=2) == [decode(d) for d in VALID]
    helper = current_helper()
    helper._process.kill()
    helper._process.wait()
    datas = VALID + [forge_signature(d) for d in VALID]
    got = verify_batch(datas, process=True, workers=2)
    assert [same_answer(r, serial(d)) for r, d in zip(got, datas, strict=True)] == [True] * len(
        datas
    )
    assert helper.broken
    # The next batch starts a new helper.
    assert verify_batch(VALID, process=True, workers=2) == [decode(d) for d in VALID]
    assert current_helper() is not helper


@pytest.mark.usefixtures("fresh_helper")
def test_batch_is_right_when_the_helper_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    verify_batch(VALID[:2], process=True, workers=2)
    helper = current_helper()
    monkeypatch.setattr(_verify_process, "_GRACE_SECONDS", 0.2)
    os.kill(helper._process.pid, signal.SIGSTOP)
    try:
        got = verify_batch(VALID, process=True, workers=2)
    finally:
        if helper._process.poll() is None:  # not reaped yet, so the pid is still its own
            os.kill(helper._process.pid, signal.SIGCONT)
    assert got == [decode(d) for d in VALID]
    assert helper.broken
    assert helper._process.poll() is not None


@pytest.mark.usefixtures("fresh_helper")
def test_helper_gives_up_after_repeated_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_verify_process, "_CHILD", "import sys; sys.exit(3)")
    for _ in range(_verify_process._MAX_FAILURES + 2):
        assert verify_batch(VALID, process=True, workers=2) == [decode(d) for d in VALID]
    assert _verify_process._failures == _verify_process._MAX_FAILURES
    assert _verify_process._helper is None


def test_small_or_single_worker_batches_do_not_use_the_helper(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        pytest.fail("used the helper process")

    monkeypatch.setattr(_verify_process, "helper_process", refuse)
    assert verify_batch(VALID, workers=2) == [decode(d) for d in VALID]
    assert verify_batch(VALID * 4, workers=2, process=False)[0] == decode(VALID[0])
    assert verify_batch(VALID * 4, workers=1, process=True)[0] == decode(VALID[0])


@pytest.mark.parametrize("process", [0, 1, "yes"])
def test_bad_process_values_are_refused(process: object) -> None:
    with pytest.raises(ValueError, match="process"):
        verify_batch(VALID[:2], process=process)  # type: ignore[arg-type]


@pytest.mark.usefixtures("fresh_helper")
def test_an_unfinished_batch_answer_is_never_taken_for_the_next() -> None:
    verify_batch(VALID[:2], process=True, workers=2)
    helper = current_helper()
    # A batch of valid envelopes started and never finished: the helper's
    # answer (all valid) is on its way when the next batch, all forged, asks.
    assert helper.start(VALID, 1)
    forged = [forge_signature(d) for d in VALID]
    got = verify_batch(forged, process=True, workers=2)
    assert all(isinstance(r, protocol.BadSignature) for r in got)
    assert helper.broken


@pytest.mark.usefixtures("fresh_helper")
def test_an_interrupted_batch_closes_the_helper(monkeypatch: pytest.MonkeyPatch) -> None:
    verify_batch(VALID[:2], process=True, workers=2)
    helper = current_helper()
    decode_all = _verify._decode_all

    def interrupted(jobs: list[bytes]) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(_verify, "_decode_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        verify_batch(VALID, process=True, workers=2)
    monkeypatch.setattr(_verify, "_decode_all", decode_all)
    assert helper.broken
    forged = [forge_signature(d) for d in VALID]
    assert all(
        isinstance(r, protocol.BadSignature) for r in verify_batch(forged, process=True, workers=2)
    )
