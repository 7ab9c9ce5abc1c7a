"""Signatures: replayed, re-attributed, small-order and malleated signatures are all refused.

Each test tries thousands of forgeries built from a fixed sample of valid
envelopes of every kind, counts them, and insists that none is accepted; the
untouched envelopes of the same sample must decode, so the checks can fail.
Small-order points are computed here from the curve equation (pure Python,
independent of libsodium), so the test does not trust the library it tests.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

import protocol
from protocol import KINDS, Envelope, Identity, Message, decode, signing_bytes
from protocol._codec import pack
from protocol._schema import from_wire

from .strategies import fixed_envelopes

# --- edwards25519, just enough to find the small-order points ---------------------------------

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, -1, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
Point = tuple[int, int]
IDENTITY: Point = (0, 1)


def add(a: Point, b: Point) -> Point:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    x3 = (x1 * y2 + x2 * y1) * pow(1 + t, -1, P) % P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P
    return x3, y3


def multiply(k: int, point: Point) -> Point:
    result = IDENTITY
    while k:
        if k & 1:
            result = add(result, point)
        point = add(point, point)
        k >>= 1
    return result


def x_for(y: int) -> int | None:
    """An x with (x, y) on the curve, or None."""
    u = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
    x = pow(u, (P + 3) // 8, P)
    if x * x % P != u:
        x = x * SQRT_M1 % P
    return x if x * x % P == u else None


def encode(point: Point) -> bytes:
    x, y = point
    return (y | (x & 1) << 255).to_bytes(32, "little")


@functools.cache
def small_order_points() -> list[Point]:
    """The 8 points of order dividing 8 (the torsion subgroup)."""
    y = 2
    while True:
        x = x_for(y)
        if x is not None:
            torsion = multiply(L, (x, y))  # kills the prime-order part
            if multiply(4, torsion) != IDENTITY:  # order 8: it generates them all
                points = [multiply(k, torsion) for k in range(8)]
                assert len(set(points)) == 8 and multiply(8, torsion) == IDENTITY
                return points
        y += 1


@functools.cache
def small_order_encodings() -> list[bytes]:
    """Every 32-byte encoding of a small-order point, canonical or not."""
    found = set()
    for x, y in small_order_points():
        for sign in {x & 1, 1} if x == 0 else {x & 1}:  # "negative zero" too
            found.add((y | sign << 255).to_bytes(32, "little"))
            if y + P < 2**255:  # y not reduced mod p
                found.add((y + P | sign << 255).to_bytes(32, "little"))
    return sorted(found)


def test_the_small_order_points_are_right() -> None:
    points = small_order_points()
    assert IDENTITY in points and (0, P - 1) in points
    for x, y in points:
        assert (-x * x + y * y - 1 - D * x * x * y * y) % P == 0
    encodings = small_order_encodings()
    assert len(encodings) >= 12
    # The identity and the point of order 2, as every blocklist names them.
    assert bytes([1]) + bytes(31) in encodings
    assert bytes([0xEC]) + b"\xff" * 30 + bytes([0x7F]) in encodings


# --- the sample and the forgeries ---------------------------------------------------------------


@functools.cache
def sample() -> list[Envelope[Message]]:
    return fixed_envelopes(10)


def body_of(envelope: Envelope[Message]) -> Any:
    return msgpack.unpackb(envelope.data)[2]


def forged(kind: str, body: Any, signer: bytes, signature: bytes, version: int = 1) -> bytes:
    return pack([version, kind, body, signer, signature])


def refused_count(forgeries: Iterator[bytes]) -> int:
    """Decode every forgery; each must raise BadSignature. Returns how many there were."""
    count = 0
    for data in forgeries:
        with pytest.raises(protocol.BadSignature) as info:
            decode(data)
        assert info.value.reason == "bad-signature"
        count += 1
    return count


def test_the_sample_decodes() -> None:
    for envelope in sample():
        assert decode(envelope.data) == envelope
        # The rebuilt envelope (as the forgeries are built) is the same bytes.
        assert forged(envelope.kind, body_of(envelope), envelope.signer, envelope.signature) == (
            envelope.data
        )


def test_a_signature_moved_to_another_kind_is_refused() -> None:
    pool = sample()
    by_kind: dict[str, list[Envelope[Message]]] = {}
    for envelope in pool:
        by_kind.setdefault(envelope.kind, []).append(envelope)

    def forgeries() -> Iterator[bytes]:
        for envelope in pool:
            for kind in sorted(KINDS):
                if kind == envelope.kind:
                    continue
                # The signature and signer of one kind on a valid body of another.
                for other in by_kind[kind][:2]:
                    yield forged(kind, body_of(other), envelope.signer, envelope.signature)

    assert refused_count(forgeries()) >= 2000


def test_a_signature_replayed_with_the_same_body_under_another_kind_is_refused() -> None:
    # Kinds with the same field types in the same order (reject and walkaway,
    # say) accept each other's bodies: only the kind in the signed bytes
    # keeps a signature for one from verifying as the other.
    rng = random.Random(1)
    pool = sample()
    pairs = 0

    def forgeries() -> Iterator[bytes]:
        nonlocal pairs
        for envelope in pool:
            body = body_of(envelope)
            for kind in sorted(KINDS):
                if kind == envelope.kind:
                    continue
                try:
                    from_wire(KINDS[kind], tuple_of(body))
                except protocol.InvalidField:
                    continue
                pairs += 1
                yield forged(kind, body, envelope.signer, envelope.signature)
        # Versions and domains: the same kind and body signed for another
        # version, without the domain, or under another domain string.
        for envelope in pool:
            kind, body = envelope.kind, body_of(envelope)
            seed = rng.randbytes(32)
            identity = Identity.from_seed(seed)
            for payload in (
                pack(["buying-circles", 2, kind, body]),
                pack(["buying-circles", 0, kind, body]),
                pack([1, kind, body]),
                pack(body),
                pack(["buying-circle", 1, kind, body]),
                pack(["buying-circles", 1, kind, body, identity.public_key]),
                signing_bytes(kind, body) + b"\x00",
            ):
                for _ in range(2):
                    yield forged(kind, body, identity.public_key, identity.sign(payload))

    count = refused_count(forgeries())
    assert pairs > 0, "no two kinds share a body shape any more: keep the other checks"
    assert count >= 2000


def tuple_of(value: Any) -> Any:
    """A msgpack value as the strict decoder gives it (arrays as tuples)."""
    if isinstance(value, list):
        return tuple(tuple_of(item) for item in value)
    return value


def test_another_signers_key_is_refused() -> None:
    rng = random.Random(2)
    pool = sample()

    def forgeries() -> Iterator[bytes]:
        for envelope in pool:
            body = body_of(envelope)
            for _ in range(15):
                other = Identity.from_seed(rng.randbytes(32)).public_key
                yield forged(envelope.kind, body, other, envelope.signature)
            # The signer's key with one bit flipped.
            for bit in rng.sample(range(256), 5):
                key = int.from_bytes(envelope.signer, "little") ^ (1 << bit)
                yield forged(envelope.kind, body, key.to_bytes(32, "little"), envelope.signature)

    assert refused_count(forgeries()) >= 2000


def test_small_order_public_keys_are_refused() -> None:
    # With a small-order key A, R of small order and S = 0 satisfy a
    # cofactored check for every message: a key that "signs" everything.
    rng = random.Random(3)
    pool = sample()[:20]
    points = small_order_encodings()

    def forgeries() -> Iterator[bytes]:
        for envelope in pool:
            body = body_of(envelope)
            for key in points:
                for r in rng.sample(points, 6):
                    for s in (0, rng.randrange(L)):
                        signature = r + s.to_bytes(32, "little")
                        yield forged(envelope.kind, body, key, signature)
                # The real signature of another key, claimed by a small-order key.
                yield forged(envelope.kind, body, key, envelope.signature)

    assert refused_count(forgeries()) >= 2000


def test_small_order_r_points_are_refused() -> None:
    rng = random.Random(4)
    pool = sample()
    points = small_order_encodings()

    def forgeries() -> Iterator[bytes]:
        for envelope in pool:
            body = body_of(envelope)
            real_s = envelope.signature[32:]
            for r in points:
                yield forged(envelope.kind, body, envelope.signer, r + real_s)
                yield forged(envelope.kind, body, envelope.signer, r + bytes(32))
            s = rng.randrange(L).to_bytes(32, "little")
            for r in rng.sample(points, 3):
                yield forged(envelope.kind, body, envelope.signer, r + s)

    assert refused_count(forgeries()) >= 2000


def test_non_canonical_s_is_refused() -> None:
    # (R, S + kL) satisfies the verification equation exactly as (R, S) does:
    # only the check that S < L stops a third party re-signing a message with a
    # new signature, and so a new message id, without the key.
    pool = sample()

    def forgeries() -> Iterator[bytes]:
        for envelope in pool:
            body = body_of(envelope)
            r, s = envelope.signature[:32], int.from_bytes(envelope.signature[32:], "little")
            assert s < L
            k = 1
            while s + k * L < 2**256:
                malleated = r + (s + k * L).to_bytes(32, "little")
                yield forged(envelope.kind, body, envelope.signer, malleated)
                k += 1

    assert refused_count(forgeries()) >= 2000


def test_altered_signatures_are_refused() -> None:
    rng = random.Random(5)
    pool = sample()

    def forgeries() -> Iterator[bytes]:
        for envelope in pool:
            body = body_of(envelope)
            for bit in rng.sample(range(512), 12):
                value = int.from_bytes(envelope.signature, "little") ^ (1 << bit)
                yield forged(envelope.kind, body, envelope.signer, value.to_bytes(64, "little"))
            yield forged(envelope.kind, body, envelope.signer, bytes(64))
            yield forged(envelope.kind, body, envelope.signer, b"\xff" * 64)
            yield forged(envelope.kind, body, envelope.signer, envelope.signature[::-1])
            yield forged(
                envelope.kind, body, envelope.signer, hashlib.sha512(envelope.data).digest()
            )

    assert refused_count(forgeries()) >= 2000
