"""verify_certificate and verify_misbehaviour: every rule, one violation at a time."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import protocol
from protocol import (
    Allocation,
    Certificate,
    Charter,
    Envelope,
    InvalidCertificate,
    InvalidProof,
    Misbehaviour,
    Offer,
    Pledge,
    seal,
    verify_certificate,
    verify_misbehaviour,
)
from protocol._codec import pack
from protocol._schema import to_wire

from .test_circle import (
    DEADLINE,
    FOUNDER,
    MEMBERS,
    T0,
    charter,
    extension,
    invite,
    offer,
    pledge,
    state_of,
)


def setup(
    *, charter_changes: dict[str, Any] | None = None, quantity: int = 2, max_price: int = 3500
) -> tuple[Envelope[Charter], Envelope[Offer], list[Envelope[Pledge]], Certificate]:
    c = charter(**(charter_changes or {}))
    o = offer(c)
    ps = [pledge(c, m, quantity=quantity, max_price=max_price) for m in MEMBERS[:5]]
    cert = state_of(c, [o, *ps]).certificate()
    return c, o, ps, cert


def check(
    cert: Certificate,
    c: Envelope[Charter],
    o: Envelope[Offer],
    ps: list[Envelope[Pledge]],
    **extra: Any,
) -> None:
    verify_certificate(seal(cert, MEMBERS[0]), charter=c, offer=o, pledges=ps, **extra)


def reason_of(cert: Certificate, c: Any, o: Any, ps: Any, **extra: Any) -> str:
    with pytest.raises(InvalidCertificate) as info:
        check(cert, c, o, ps, **extra)
    return info.value.reason


def with_allocations(
    cert: Certificate, pairs: list[tuple[bytes, int]], **changes: Any
) -> Certificate:
    allocations = tuple(Allocation(pledge=p, quantity=q) for p, q in sorted(pairs))
    return dataclasses.replace(
        cert, allocations=allocations, total=sum(q for _, q in pairs), **changes
    )


def test_an_assembled_certificate_verifies() -> None:
    c, o, ps, cert = setup()
    assert (cert.unit_price, cert.total, len(cert.allocations)) == (3500, 10, 5)
    check(cert, c, o, ps)


def test_members_assemble_byte_identical_certificates_in_any_order() -> None:
    c, o, ps, cert = setup()
    again = state_of(c, [*reversed(ps), o, ps[0]], now=T0 + 300).certificate()
    assert pack(to_wire(again)) == pack(to_wire(cert))


def test_wrong_kinds_circle_offer_currency() -> None:
    c, o, ps, cert = setup()
    with pytest.raises(InvalidCertificate) as info:
        verify_certificate(seal(cert, MEMBERS[0]), charter=o, offer=o, pledges=ps)  # type: ignore[arg-type]
    assert info.value.reason == "wrong-kind"
    other = charter(title="Another circle")
    assert reason_of(dataclasses.replace(cert, circle=other.id), c, o, ps) == "wrong-circle"
    assert reason_of(cert, c, offer(c, capacity=99), ps) == "wrong-offer"
    assert reason_of(dataclasses.replace(cert, currency="USD"), c, o, ps) == "wrong-currency"
    assert reason_of(dataclasses.replace(cert, unit_price=3600), c, o, ps) == "not-a-tier"


def test_capacity_and_target() -> None:
    c = charter()
    small = offer(c, capacity=9, tiers=((5, 3500),))
    ps = [pledge(c, m, quantity=2, max_price=3500) for m in MEMBERS[:5]]
    pairs = [(p.id, 2) for p in ps]
    cert = with_allocations(state_of(c, [offer(c), *ps]).certificate(), pairs, offer=small.id)
    assert reason_of(cert, c, small, ps) == "over-capacity"
    o = offer(c)
    short = with_allocations(cert, pairs[:4], offer=o.id)
    assert reason_of(short, c, o, ps) == "below-target"


def test_missing_withdrawn_twice_and_equivocating_pledges() -> None:
    c, o, ps, cert = setup()
    assert reason_of(cert, c, o, ps[1:]) == "missing-pledge"
    pairs = [(a.pledge, a.quantity) for a in cert.allocations]
    withdrawal = pledge(c, MEMBERS[6], seq=2, quantity=0)
    assert (
        reason_of(with_allocations(cert, [*pairs[:4], (withdrawal.id, 2)]), c, o, [*ps, withdrawal])
        == "withdrawal"
    )
    again = pledge(c, MEMBERS[0], seq=2, quantity=2, max_price=3500)
    assert (
        reason_of(with_allocations(cert, [*pairs, (again.id, 2)]), c, o, [*ps, again])
        == "member-twice"
    )
    conflict = pledge(c, MEMBERS[0], seq=1, quantity=3, max_price=3500)
    assert reason_of(cert, c, o, [*ps, conflict]) == "equivocator"


def test_late_unadmitted_and_ceiling() -> None:
    c = charter()
    o = offer(c)
    ps = [pledge(c, m, quantity=2, max_price=3500) for m in MEMBERS[:4]]
    late = pledge(c, MEMBERS[4], quantity=2, max_price=3500, created=DEADLINE + 1)
    base = state_of(c, [o, *ps, pledge(c, MEMBERS[4], quantity=2, max_price=3500)]).certificate()
    cert = with_allocations(base, [*[(p.id, 2) for p in ps], (late.id, 2)])
    assert reason_of(cert, c, o, [*ps, late]) == "late"

    closed = charter(invite_only=True)
    o = offer(closed)
    ps = [pledge(closed, m, quantity=2, max_price=3500) for m in MEMBERS[:5]]
    invites = [invite(closed, FOUNDER, m) for m in MEMBERS[:5]]
    cert = state_of(closed, [o, *ps, *invites]).certificate()
    check(cert, closed, o, ps, invites=invites)
    assert reason_of(cert, closed, o, ps, invites=invites[1:]) == "unadmitted"

    capped = charter(ceiling=3400)
    o = offer(capped)
    ps = [pledge(capped, m, quantity=2, max_price=3500) for m in MEMBERS[:5]]
    cert = with_allocations(
        dataclasses.replace(base, circle=capped.id, offer=o.id), [(p.id, 2) for p in ps]
    )
    assert reason_of(cert, capped, o, ps) == "above-ceiling"


def test_price_above_max_not_canonical_and_not_cheapest() -> None:
    c, o, ps, cert = setup()
    assert reason_of(dataclasses.replace(cert, unit_price=4000), c, o, ps) == "price-above-max"
    c, o, ps, cert = setup(charter_changes={"target": 5}, max_price=4000)
    # Five pledges up to 4000: ten units clear the 3500 tier; a 4000 certificate overcharges.
    assert reason_of(dataclasses.replace(cert, unit_price=4000), c, o, ps) == "not-cheapest-tier"
    tol = [pledge(c, m, quantity=2, max_price=3500, tolerance=2) for m in MEMBERS[:4]]
    fair = state_of(c, [o, *tol]).certificate()
    check(fair, c, o, tol)
    greedy = with_allocations(fair, [(p.id, 4) for p in tol])
    assert reason_of(greedy, c, o, tol) == "not-canonical"


def test_extension_must_be_valid() -> None:
    c, o, ps, cert = setup()
    assert reason_of(cert, c, o, ps, extension=extension(c, DEADLINE + 50)) == "bad-extension"
    ext = charter(on_miss="extend")
    o = offer(ext)
    late = [pledge(ext, m, quantity=2, max_price=3500, created=DEADLINE + 5) for m in MEMBERS[:5]]
    e = extension(ext, DEADLINE + 50)
    cert = state_of(ext, [o, e, *late]).certificate()
    check(cert, ext, o, late, extension=e)
    assert reason_of(cert, ext, o, late) == "late"


def test_misbehaviour_proofs() -> None:
    c = charter()
    a = pledge(c, MEMBERS[0], seq=1, quantity=2)
    b = pledge(c, MEMBERS[0], seq=1, quantity=3)
    first, second = sorted([a, b], key=lambda e: e.id)
    good = Misbehaviour(
        offender=MEMBERS[0].public_key, first=first.data, second=second.data, created=T0
    )
    assert verify_misbehaviour(good) == (first, second)
    unrelated = pledge(c, MEMBERS[0], seq=2)
    x, y = sorted([first, unrelated], key=lambda e: e.id)
    bad = {
        "order": dataclasses.replace(good, first=second.data, second=first.data),
        "signer": dataclasses.replace(good, offender=MEMBERS[1].public_key),
        "no-conflict": dataclasses.replace(good, first=x.data, second=y.data),
        "bad-envelope": dataclasses.replace(good, second=second.data[:-1] + b"\x00"),
    }
    for reason, proof in bad.items():
        with pytest.raises(InvalidProof) as info:
            verify_misbehaviour(proof)
        assert info.value.reason == reason
    assert isinstance(InvalidProof("x"), protocol.ProtocolError)
