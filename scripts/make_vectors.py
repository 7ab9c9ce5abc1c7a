"""Regenerate docs/protocol/vectors.json: golden envelopes for other implementations.

Usage::

    python scripts/make_vectors.py          # rewrite the file
    python scripts/make_vectors.py --check  # exit 1 if the committed file is out of date

Every key comes from a fixed seed and ed25519 signatures are deterministic, so
two runs give identical bytes. Valid samples come from :data:`BUILDERS`, one
entry per kind in ``protocol.KINDS``; when a kind is added to the protocol, add
a builder for it here (two or more sample bodies) and run the script again.
Invalid samples are built by hand below, each with exactly one defect, so a
second implementation refuses it with the same reason whatever order it runs
its checks in (the specification fixes that order anyway).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

import protocol
from protocol import (
    KINDS,
    Allocation,
    Certificate,
    Charter,
    CounterOffer,
    Deal,
    Envelope,
    Extension,
    Identity,
    Invite,
    LoyaltyTier,
    Message,
    Misbehaviour,
    Offer,
    Pledge,
    Receipt,
    Referral,
    Tier,
    seal,
)

ROOT = Path(__file__).resolve().parents[1]
VECTORS_PATH = ROOT / "docs" / "protocol" / "vectors.json"

#: The seed of every key the vectors use: 32 copies of one byte, so anyone can rebuild them.
SEEDS: dict[str, bytes] = {
    "alice": bytes([0x01]) * 32,
    "bob": bytes([0x02]) * 32,
    "carol": bytes([0x03]) * 32,
    "vendor": bytes([0x10]) * 32,
    "vendor2": bytes([0x11]) * 32,
}
KEYS: dict[str, Identity] = {name: Identity.from_seed(seed) for name, seed in SEEDS.items()}
ALICE, BOB, CAROL = KEYS["alice"], KEYS["bob"], KEYS["carol"]
VENDOR, VENDOR2 = KEYS["vendor"], KEYS["vendor2"]

#: A fixed "now" the samples are signed at (2023-11-14T22:13:20Z).
T0 = 1_700_000_000
DAY = 86_400
#: The order of the group of ed25519 points, for building an unreduced signature.
ED25519_L = 2**252 + 27742317777372353535851937790883648493


class VectorError(Exception):
    """The vectors cannot be built: a builder is missing or out of date."""


@dataclass
class Context:
    """What builders may refer to: envelopes sealed by the builders run before them."""

    sealed: dict[str, list[Envelope[Message]]] = field(default_factory=dict)
    """Valid envelopes built so far, by kind, in order."""

    def first(self, kind: str) -> Envelope[Message]:
        """The first valid envelope of ``kind`` (its builder must run earlier)."""
        try:
            return self.sealed[kind][0]
        except (KeyError, IndexError):
            raise VectorError(
                f"a builder needs a {kind} envelope: put the {kind} builder earlier in BUILDERS"
            ) from None

    @property
    def circle(self) -> bytes:
        """The id of the first charter: the circle most samples belong to."""
        return self.first("charter").id


#: One sample: a name (unique within its kind), the body, and who signs it.
Sample = tuple[str, Message, Identity]
Builder = Callable[[Context], Sequence[Sample]]


def _charters(ctx: Context) -> Sequence[Sample]:
    return [
        (
            "open-with-place",
            Charter(
                title="Organic olive oil, 5 l tins",
                unit="tin",
                target=40,
                currency="EUR",
                ceiling=4500,
                deadline=T0 + 14 * DAY,
                place="u09tunq",
                tags=("food", "olive-oil"),
                invite_only=False,
                members_invite=False,
                on_miss="expire",
                created=T0,
            ),
            ALICE,
        ),
        (
            "invite-only-minimal",
            Charter(
                title="Ça marche: 蜂蜜 (honey), 1 kg jars",
                unit="jar",
                target=1,
                currency="JPY",
                ceiling=None,
                deadline=T0 + 1,
                place=None,
                tags=(),
                invite_only=True,
                members_invite=True,
                on_miss="smaller-tier",
                created=T0,
            ),
            BOB,
        ),
    ]


def _invites(ctx: Context) -> Sequence[Sample]:
    return [
        (
            "with-sealed-key",
            Invite(
                circle=ctx.circle,
                invitee=BOB.public_key,
                sealed_key=bytes(range(80)),
                created=T0 + 60,
            ),
            ALICE,
        ),
        (
            "without-key",
            Invite(circle=ctx.circle, invitee=CAROL.public_key, sealed_key=None, created=T0 + 61),
            ALICE,
        ),
    ]


def _pledge(quantity: int, max_price: int, *, seq: int = 1, created: int = T0 + 120) -> Any:
    return lambda ctx: Pledge(
        circle=ctx.circle,
        seq=seq,
        quantity=quantity,
        max_price=max_price,
        currency="EUR",
        tolerance=0 if quantity == 0 else 2,
        created=created,
    )


def _pledges(ctx: Context) -> Sequence[Sample]:
    return [
        ("alice-first", _pledge(25, 4200)(ctx), ALICE),
        ("bob-first", _pledge(15, 4000, created=T0 + 130)(ctx), BOB),
        ("carol-withdrawal", _pledge(0, 0, seq=4_294_967_295, created=T0 + 140)(ctx), CAROL),
    ]


def _offers(ctx: Context) -> Sequence[Sample]:
    return [
        (
            "three-tiers-loyalty",
            Offer(
                circle=ctx.circle,
                product="Extra virgin olive oil, 5 l tin, 2024 harvest",
                currency="EUR",
                list_price=5200,
                tiers=(
                    Tier(min_quantity=10, unit_price=4800),
                    Tier(min_quantity=40, unit_price=3900),
                    Tier(min_quantity=100, unit_price=3500),
                ),
                capacity=200,
                valid_until=T0 + 7 * DAY,
                terms="Delivery within 10 days to one address; payment on delivery.",
                loyalty=(LoyaltyTier(deals=1, unit_price=3800),),
                in_reply_to=None,
                created=T0 + 600,
            ),
            VENDOR,
        ),
        (
            "one-tier-reply",
            Offer(
                circle=ctx.circle,
                product="Olive oil",
                currency="EUR",
                list_price=1_000_000_000_000_000,
                tiers=(Tier(min_quantity=1_000_000_000, unit_price=1),),
                capacity=1_000_000_000,
                valid_until=2**40,
                terms="",
                loyalty=(),
                # Answers the request for quote when the protocol has that kind.
                in_reply_to=ctx.first("rfq").id if "rfq" in ctx.sealed else None,
                created=0,
            ),
            VENDOR2,
        ),
    ]


def _counters(ctx: Context) -> Sequence[Sample]:
    offer = ctx.first("offer").id
    return [
        (
            "round-1",
            CounterOffer(
                circle=ctx.circle,
                in_reply_to=offer,
                round=1,
                unit_price=3700,
                quantity=40,
                currency="EUR",
                valid_until=T0 + DAY,
                created=T0 + 700,
            ),
            ALICE,
        ),
        (
            "round-2",
            CounterOffer(
                circle=ctx.circle,
                in_reply_to=offer,
                round=2,
                unit_price=3800,
                quantity=40,
                currency="EUR",
                valid_until=T0 + DAY,
                created=T0 + 800,
            ),
            VENDOR,
        ),
    ]


def _certificates(ctx: Context) -> Sequence[Sample]:
    pledges = sorted(ctx.sealed["pledge"][:2], key=lambda env: env.id)
    allocations = tuple(
        Allocation(pledge=env.id, quantity=env.message.quantity)  # type: ignore[attr-defined]
        for env in pledges
    )
    # The largest certificate the protocol allows: exercises the longest array
    # and a 60 KB envelope (synthetic pledge ids, sorted as the rule requires).
    many = tuple(
        Allocation(pledge=pid, quantity=1)
        for pid in sorted(
            hashlib.blake2b(i.to_bytes(4, "big"), digest_size=32).digest() for i in range(1500)
        )
    )
    return [
        (
            "two-pledges",
            Certificate(
                circle=ctx.circle,
                offer=ctx.first("offer").id,
                unit_price=3900,
                currency="EUR",
                total=sum(a.quantity for a in allocations),
                allocations=allocations,
                created=T0 + 900,
            ),
            BOB,
        ),
        (
            "1500-pledges",
            Certificate(
                circle=ctx.circle,
                offer=ctx.first("offer").id,
                unit_price=3900,
                currency="EUR",
                total=1500,
                allocations=many,
                created=T0 + 901,
            ),
            CAROL,
        ),
    ]


def _deals(ctx: Context) -> Sequence[Sample]:
    cert = ctx.first("certificate")
    return [
        (
            "countersigned",
            Deal(
                circle=ctx.circle,
                certificate=cert.id,
                unit_price=3900,
                currency="EUR",
                total=40,
                created=T0 + 1000,
            ),
            VENDOR,
        ),
        (
            "large",
            Deal(
                circle=ctx.circle,
                certificate=ctx.sealed["certificate"][1].id,
                unit_price=3900,
                currency="EUR",
                total=1500,
                created=T0 + 1001,
            ),
            VENDOR,
        ),
    ]


def _receipts(ctx: Context) -> Sequence[Sample]:
    deal = ctx.first("deal").id
    return [
        (
            "fulfilled",
            Receipt(
                deal=deal,
                vendor=VENDOR.public_key,
                fulfilled="yes",
                rating=5,
                comment="Arrived on time, well packed.",
                created=T0 + 20 * DAY,
            ),
            ALICE,
        ),
        (
            "not-fulfilled",
            Receipt(
                deal=deal,
                vendor=VENDOR.public_key,
                fulfilled="no",
                rating=1,
                comment="",
                created=T0 + 30 * DAY,
            ),
            BOB,
        ),
    ]


def _referrals(ctx: Context) -> Sequence[Sample]:
    return [
        (
            "with-offer",
            Referral(
                circle=ctx.circle,
                vendor=VENDOR2.public_key,
                offer=ctx.sealed["offer"][1].id,
                note="They press their own oil and can fill 1,000 tins.",
                created=T0 + 650,
            ),
            VENDOR,
        ),
        (
            "without-offer",
            Referral(
                circle=ctx.circle, vendor=VENDOR.public_key, offer=None, note="", created=T0 + 660
            ),
            VENDOR2,
        ),
    ]


def _extensions(ctx: Context) -> Sequence[Sample]:
    return [
        (
            "one-week",
            Extension(circle=ctx.circle, deadline=T0 + 21 * DAY, created=T0 + 13 * DAY),
            ALICE,
        ),
        ("far", Extension(circle=ctx.circle, deadline=2**40, created=T0 + 14 * DAY), ALICE),
    ]


def _misbehaviours(ctx: Context) -> Sequence[Sample]:
    # Alice signs two different pledges with the same sequence number.
    one = seal(_pledge(5, 4000, seq=2, created=T0 + 200)(ctx), ALICE)
    two = seal(_pledge(50, 4000, seq=2, created=T0 + 201)(ctx), ALICE)
    first, second = sorted((one, two), key=lambda env: env.id)
    # The founder signs two different extensions of one circle (only one is allowed).
    three = seal(Extension(circle=ctx.circle, deadline=T0 + 21 * DAY, created=T0 + 800), ALICE)
    four = seal(Extension(circle=ctx.circle, deadline=T0 + 28 * DAY, created=T0 + 801), ALICE)
    third, fourth = sorted((three, four), key=lambda env: env.id)
    return [
        (
            "double-pledge",
            Misbehaviour(
                offender=ALICE.public_key, first=first.data, second=second.data, created=T0 + 300
            ),
            BOB,
        ),
        (
            "double-extension",
            Misbehaviour(
                offender=ALICE.public_key, first=third.data, second=fourth.data, created=T0 + 900
            ),
            CAROL,
        ),
    ]


def _make(kind: str, **fields: Any) -> Message:
    # Through KINDS, not by class name: kinds are added while this script exists.
    return KINDS[kind](**fields)


def _rfqs(ctx: Context) -> Sequence[Sample]:
    return [
        (
            "one-vendor",
            _make(
                "rfq",
                circle=ctx.circle,
                vendor=VENDOR.public_key,
                product="Extra virgin olive oil, 5 l tins",
                quantity=40,
                currency="EUR",
                respond_by=T0 + DAY,
                deadline=T0 + 3 * DAY,
                max_rounds=6,
                created=T0 + 500,
            ),
            ALICE,
        ),
        (
            "reverse-auction",
            _make(
                "rfq",
                circle=ctx.circle,
                vendor=None,
                product="Olive oil",
                quantity=1,
                currency="EUR",
                respond_by=T0 + 501,
                deadline=T0 + 501,
                max_rounds=1,
                created=T0 + 500,
            ),
            ALICE,
        ),
    ]


def _accepts(ctx: Context) -> Sequence[Sample]:
    counters = ctx.sealed["counter"]
    return [
        (
            "circle-accepts-counter",
            _make(
                "accept",
                circle=ctx.circle,
                accepted=counters[1].id,
                unit_price=3800,
                quantity=40,
                currency="EUR",
                created=T0 + 850,
            ),
            ALICE,
        ),
        (
            "vendor-accepts-counter",
            _make(
                "accept",
                circle=ctx.circle,
                accepted=counters[0].id,
                unit_price=3700,
                quantity=40,
                currency="EUR",
                created=T0 + 750,
            ),
            VENDOR,
        ),
    ]


def _rejects(ctx: Context) -> Sequence[Sample]:
    return [
        (
            "with-reason",
            _make(
                "reject",
                circle=ctx.circle,
                in_reply_to=ctx.first("offer").id,
                reason="Above our ceiling of 45.00 EUR.",
                created=T0 + 610,
            ),
            ALICE,
        ),
        (
            "empty-reason",
            _make(
                "reject",
                circle=ctx.circle,
                in_reply_to=ctx.first("counter").id,
                reason="",
                created=T0 + 710,
            ),
            VENDOR,
        ),
    ]


def _walkaways(ctx: Context) -> Sequence[Sample]:
    session = ctx.first("rfq").id
    return [
        (
            "circle-leaves",
            _make(
                "walkaway",
                circle=ctx.circle,
                session=session,
                reason="Found a better offer.",
                created=T0 + 2 * DAY,
            ),
            ALICE,
        ),
        (
            "vendor-leaves",
            _make("walkaway", circle=ctx.circle, session=session, reason="", created=T0 + 900),
            VENDOR,
        ),
    ]


#: Valid samples per kind, in the order they run (later builders use earlier envelopes).
BUILDERS: dict[str, Builder] = {
    "charter": _charters,
    "invite": _invites,
    "pledge": _pledges,
    "rfq": _rfqs,
    "offer": _offers,
    "counter": _counters,
    "accept": _accepts,
    "reject": _rejects,
    "certificate": _certificates,
    "deal": _deals,
    "receipt": _receipts,
    "referral": _referrals,
    "extension": _extensions,
    "misbehaviour": _misbehaviours,
    "walkaway": _walkaways,
}


def check_builders() -> None:
    """Raise VectorError unless every kind in protocol.KINDS has a builder."""
    missing = sorted(set(KINDS) - set(BUILDERS))
    if missing:
        raise VectorError(
            f"protocol.KINDS has kinds with no vector builder: {', '.join(missing)}. "
            "Add a builder for each to BUILDERS in scripts/make_vectors.py (two or more "
            "sample bodies), then run `python scripts/make_vectors.py` and "
            "`python scripts/make_spec.py`."
        )


def _vector(
    name: str, kind: str | None, data: bytes, *, reason: str | None = None
) -> dict[str, Any]:
    valid = reason is None
    return {
        "name": name,
        "kind": kind,
        "valid": valid,
        "reason": reason,
        "envelope_hex": data.hex(),
        "id_hex": protocol.envelope_id(data).hex() if valid else None,
    }


def valid_vectors(ctx: Context) -> list[dict[str, Any]]:
    """Seal every builder's samples, in BUILDERS order."""
    check_builders()
    out = []
    for kind, builder in BUILDERS.items():
        if kind not in KINDS:
            # A kind another branch has not merged yet (or has dropped): nothing to seal.
            continue
        try:
            samples = list(builder(ctx))
        except (TypeError, KeyError, IndexError, protocol.ProtocolError) as exc:
            raise VectorError(
                f"the vector builder for {kind!r} no longer builds a valid "
                f"{KINDS[kind].__name__}: {exc}. Update it in scripts/make_vectors.py."
            ) from exc
        if len(samples) < 2:
            raise VectorError(f"the builder for {kind!r} must give at least two samples")
        for label, message, signer in samples:
            if message.kind != kind:
                raise VectorError(f"the builder for {kind!r} made a {message.kind!r}")
            env = seal(message, signer)
            ctx.sealed.setdefault(kind, []).append(env)
            out.append(_vector(f"{kind}-{label}", kind, env.data))
    return out


# -- Invalid vectors ---------------------------------------------------------


def pack(value: Any) -> bytes:
    """Canonical msgpack, as the specification defines it."""
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def sign(identity: Identity, kind: str, body: Any, *, version: int = 1) -> bytes:
    """A signature over ``["buying-circles", version, kind, body]``."""
    return identity.sign(pack(["buying-circles", version, kind, body]))


def envelope(
    kind: Any,
    body: Any,
    identity: Identity = ALICE,
    *,
    version: Any = 1,
    signed_kind: str | None = None,
    signed_version: int | None = None,
) -> bytes:
    """A canonical envelope of any (possibly invalid) body, signed over that body."""
    signature = sign(
        identity,
        signed_kind if signed_kind is not None else kind,
        body,
        version=signed_version if signed_version is not None else version,
    )
    return pack([version, kind, body, identity.public_key, signature])


def _with_body_field(data: bytes, index: int, value: Any) -> bytes:
    """A re-signed copy of a valid envelope with one body field replaced."""
    _, kind, body, signer, _ = msgpack.unpackb(data)
    identity = next(k for k in KEYS.values() if k.public_key == signer)
    body[index] = value
    return envelope(kind, body, identity)


def _replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1, (old, data.count(old))
    return data.replace(old, new)


def invalid_vectors(ctx: Context) -> list[dict[str, Any]]:
    """One vector per defect; each is otherwise valid (and correctly signed where it can be)."""
    pledge = ctx.first("pledge")
    p = pledge.data
    body = msgpack.unpackb(p)[2]
    charter = ctx.first("charter").data
    offer = ctx.first("offer").data
    certificate = ctx.first("certificate").data
    receipt = ctx.first("receipt").data
    out: list[dict[str, Any]] = []

    def add(name: str, kind: str | None, reason: str, data: bytes) -> None:
        out.append(_vector(name, kind, data, reason=reason))

    # bad-signature: altered, moved to another key, replayed from another kind or
    # version, or a signature a cofactorless verifier would wrongly accept.
    sig = p[-64:]
    add("signature-bit-flipped", "pledge", "bad-signature", p[:-1] + bytes([p[-1] ^ 1]))
    add(
        "body-altered-after-signing",
        "pledge",
        "bad-signature",
        _replace_once(p, b"\xcd\x10\x68", b"\xcd\x10\x69"),
    )
    add(
        "signature-of-another-signer-key",
        "pledge",
        "bad-signature",
        p[:-100] + b"\xc4\x20" + BOB.public_key + b"\xc4\x40" + sig,
    )
    add(
        "signature-made-for-kind-counter",
        "pledge",
        "bad-signature",
        envelope("pledge", body, signed_kind="counter"),
    )
    add(
        "signature-made-for-kind-offer-replayed-as-pledge",
        "pledge",
        "bad-signature",
        envelope("pledge", body, signed_kind="offer"),
    )
    add(
        "signature-made-for-version-2",
        "pledge",
        "bad-signature",
        envelope("pledge", body, signed_version=2),
    )
    no_domain = ALICE.sign(pack([1, "pledge", body]))
    add(
        "signature-without-domain-string",
        "pledge",
        "bad-signature",
        pack([1, "pledge", body, ALICE.public_key, no_domain]),
    )
    s = int.from_bytes(sig[32:], "little") + ED25519_L
    unreduced = sig[:32] + s.to_bytes(32, "little")
    add("signature-s-not-reduced", "pledge", "bad-signature", p[:-64] + unreduced)
    identity_point = b"\x01" + bytes(31)
    add(
        "small-order-signer-and-r",
        "pledge",
        "bad-signature",
        pack([1, "pledge", body, identity_point, identity_point + bytes(32)]),
    )
    add(
        "all-zero-signer-and-signature",
        "pledge",
        "bad-signature",
        pack([1, "pledge", body, bytes(32), bytes(64)]),
    )

    # non-canonical: every value must use its shortest msgpack form.
    seq_int8 = _replace_once(
        p, b"\xc4\x20" + ctx.circle + b"\x01", b"\xc4\x20" + ctx.circle + b"\xd0\x01"
    )
    add("integer-in-int8-header", "pledge", "non-canonical", seq_int8)
    seq_u16 = _replace_once(
        p, b"\xc4\x20" + ctx.circle + b"\x01", b"\xc4\x20" + ctx.circle + b"\xcd\x00\x01"
    )
    add("integer-in-uint16-header", "pledge", "non-canonical", seq_u16)
    add("version-in-uint32-header", "pledge", "non-canonical", b"\x95\xce\x00\x00\x00\x01" + p[2:])
    add(
        "kind-in-str8-header",
        "pledge",
        "non-canonical",
        _replace_once(p, b"\xa6pledge", b"\xd9\x06pledge"),
    )
    add("signer-in-bin16-header", "pledge", "non-canonical", p[:-100] + b"\xc5\x00\x20" + p[-98:])
    add("envelope-in-array16-header", "pledge", "non-canonical", b"\xdc\x00\x05" + p[1:])
    add(
        "body-in-array16-header",
        "pledge",
        "non-canonical",
        _replace_once(p, b"\x97\xc4\x20", b"\xdc\x00\x07\xc4\x20"),
    )
    add(
        "currency-in-str16-header",
        "pledge",
        "non-canonical",
        _replace_once(p, b"\xa3EUR", b"\xda\x00\x03EUR"),
    )
    # (A float32 is non-canonical too, but no field takes a float, so such a vector
    # would have two defects; the specification covers it in prose.)
    price_u32 = _replace_once(p, b"\xcd\x10\x68", b"\xce\x00\x00\x10\x68")
    add("max-price-in-uint32-header", "pledge", "non-canonical", price_u32)
    created = (T0 + 120).to_bytes(4, "big")
    created_u64 = _replace_once(p, b"\xce" + created, b"\xcf" + bytes(4) + created)
    add("created-in-uint64-header", "pledge", "non-canonical", created_u64)

    # trailing-bytes: one value and nothing after it.
    add("one-trailing-zero-byte", "pledge", "trailing-bytes", p + b"\x00")
    add("two-envelopes-concatenated", "pledge", "trailing-bytes", p + charter)

    # unsupported-version: signed for the version it claims, so only the version is wrong.
    add("version-2", "pledge", "unsupported-version", envelope("pledge", body, version=2))
    add("version-0", "pledge", "unsupported-version", envelope("pledge", body, version=0))
    add("version-negative", "pledge", "unsupported-version", envelope("pledge", body, version=-1))

    # unknown-kind: signed for the kind it claims.
    add("kind-unknown", "x-unknown", "unknown-kind", envelope("x-unknown", body))
    add("kind-upper-case", "Pledge", "unknown-kind", envelope("Pledge", body))
    add("kind-empty", "", "unknown-kind", envelope("", body))

    # oversize: the limit is 65,536 bytes, checked before anything else.
    add("oversize-65537-bytes", "misbehaviour", "oversize", _sized_misbehaviour(65_537))
    # The limit is inclusive: at exactly 65,536 bytes the fields are checked (and too long).
    add("size-65536-fields-too-long", "misbehaviour", "out-of-range", _sized_misbehaviour(65_536))

    # malformed: not exactly one msgpack value without maps or extension data.
    add("empty-input", None, "malformed", b"")
    add("never-used-byte-0xc1", None, "malformed", b"\xc1")
    add("truncated-envelope", "pledge", "malformed", p[:-1])
    add(
        "body-is-a-map",
        "pledge",
        "malformed",
        pack([1, "pledge", {"seq": 1}, ALICE.public_key, bytes(64)]),
    )
    add(
        "field-is-a-fixext",
        "pledge",
        "malformed",
        _replace_once(p, b"\xa3EUR", b"\xd4\x01\x00"),
    )
    add("text-not-utf8", "pledge", "malformed", _replace_once(p, b"\xa3EUR", b"\xa3E\xffR"))
    add(
        "field-is-a-timestamp",
        "pledge",
        "malformed",
        _replace_once(p, b"\xa3EUR", b"\xd6\xff\x00\x00\x00\x00"),
    )

    # wrong-type: exact wire types; signed over the wrong body, so only the type is wrong.
    add("seq-is-true", "pledge", "wrong-type", _with_body_field(p, 1, True))
    add("quantity-is-float64", "pledge", "wrong-type", _with_body_field(p, 2, 25.0))
    add("currency-is-bin", "pledge", "wrong-type", _with_body_field(p, 4, b"EUR"))
    add("circle-is-text", "pledge", "wrong-type", _with_body_field(p, 0, "c" * 32))
    add("created-is-nil", "pledge", "wrong-type", _with_body_field(p, 6, None))
    add("field-is-empty-map", "pledge", "wrong-type", _with_body_field(p, 6, {}))
    add(
        "field-is-empty-ext",
        "pledge",
        "wrong-type",
        _with_body_field(p, 6, msgpack.ExtType(5, b"")),
    )
    add("body-has-too-few-fields", "pledge", "wrong-type", envelope("pledge", body[:-1]))
    add("body-has-too-many-fields", "pledge", "wrong-type", envelope("pledge", [*body, 0]))
    add("body-is-empty-map", "pledge", "wrong-type", envelope("pledge", {}))
    add(
        "envelope-has-four-items",
        "pledge",
        "wrong-type",
        pack([1, "pledge", body, ALICE.public_key]),
    )
    add("envelope-is-an-integer", None, "wrong-type", pack(1))
    add(
        "version-is-true",
        "pledge",
        "wrong-type",
        pack([True, "pledge", body, ALICE.public_key, sig]),
    )
    add("kind-is-bin", None, "wrong-type", pack([1, b"pledge", body, ALICE.public_key, sig]))
    add(
        "signer-is-31-bytes",
        "pledge",
        "wrong-type",
        pack([1, "pledge", body, ALICE.public_key[:31], sig]),
    )
    add(
        "signature-is-text",
        "pledge",
        "wrong-type",
        pack([1, "pledge", body, ALICE.public_key, "s" * 64]),
    )
    add("tier-is-not-an-array", "offer", "wrong-type", _with_body_field(offer, 4, [4800]))

    # out-of-range: the right type, a value outside the field's limits or the kind's rules.
    add("seq-zero", "pledge", "out-of-range", _with_body_field(p, 1, 0))
    add("seq-above-2^32-1", "pledge", "out-of-range", _with_body_field(p, 1, 2**32))
    add("quantity-negative", "pledge", "out-of-range", _with_body_field(p, 2, -1))
    add("currency-lower-case", "pledge", "out-of-range", _with_body_field(p, 4, "eur"))
    add("circle-31-bytes", "pledge", "out-of-range", _with_body_field(p, 0, ctx.circle[:31]))
    add(
        "withdrawal-with-price",
        "pledge",
        "out-of-range",
        _with_body_field(_with_body_field(p, 2, 0), 5, 0),
    )
    add("charter-title-empty", "charter", "out-of-range", _with_body_field(charter, 0, ""))
    # Text limits count UTF-8 bytes: 11 characters of 3 bytes each exceed 32 bytes.
    add(
        "charter-unit-33-utf8-bytes",
        "charter",
        "out-of-range",
        _with_body_field(charter, 1, "\u8702" * 11),
    )
    add(
        "charter-geohash-bad-letter",
        "charter",
        "out-of-range",
        _with_body_field(charter, 6, "u09a"),
    )
    add(
        "charter-on-miss-unknown",
        "charter",
        "out-of-range",
        _with_body_field(charter, 10, "refund"),
    )
    add(
        "charter-deadline-not-after-created",
        "charter",
        "out-of-range",
        _with_body_field(charter, 5, T0),
    )
    add(
        "offer-tiers-not-increasing",
        "offer",
        "out-of-range",
        _with_body_field(offer, 4, [[40, 3900], [10, 4800]]),
    )
    add(
        "certificate-total-wrong",
        "certificate",
        "out-of-range",
        _with_body_field(certificate, 4, 41),
    )
    add("receipt-rating-6", "receipt", "out-of-range", _with_body_field(receipt, 3, 6))
    add("time-above-2^40", "pledge", "out-of-range", _with_body_field(p, 6, 2**40 + 1))
    return out


def _sized_misbehaviour(size: int) -> bytes:
    """A signed misbehaviour envelope of exactly ``size`` bytes (its fields too long)."""
    pad = size - 200
    while True:
        data = envelope("misbehaviour", [ALICE.public_key, b"\x00" * pad, b"\x01", T0], BOB)
        if len(data) == size:
            return data
        pad += size - len(data)


def build() -> list[dict[str, Any]]:
    """Every vector, valid ones first, in a fixed order."""
    ctx = Context()
    valid = valid_vectors(ctx)
    return valid + invalid_vectors(ctx)


def render(vectors: list[dict[str, Any]]) -> str:
    """The file's exact text: one object per line block, keys in the documented order."""
    return json.dumps(vectors, indent=1, ensure_ascii=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args(argv)
    try:
        text = render(build())
    except VectorError as exc:
        print(f"make_vectors: {exc}", file=sys.stderr)
        return 1
    if args.check:
        current = VECTORS_PATH.read_text() if VECTORS_PATH.exists() else ""
        if current != text:
            name = VECTORS_PATH.relative_to(ROOT)
            print(f"{name} is out of date: run python scripts/make_vectors.py", file=sys.stderr)
            return 1
        return 0
    VECTORS_PATH.parent.mkdir(parents=True, exist_ok=True)
    VECTORS_PATH.write_text(text)
    print(f"wrote {len(text)} characters to {VECTORS_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
