"""Attacker-made inputs to circle state: self-made proofs and certificates.

Every proof here is built by the attacker (not by the state), from twins the
circle refuses outright, twins it holds already, withdrawals and extensions.
None of them may make ``apply`` raise, and the state stays a function of the
set: the same digest in any order, with or without the proof.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    CircleState,
    CircleStatus,
    Envelope,
    Identity,
    InvalidCertificate,
    InvalidProof,
    Message,
    Misbehaviour,
    RuleAnomaly,
    seal,
    verify_certificate,
    verify_misbehaviour,
)
from protocol._certificate import make_proof

from .test_circle import (
    DEADLINE,
    FOUNDER,
    MEMBERS,
    T0,
    VENDOR,
    charter,
    deal_for,
    extension,
    offer,
    pledge,
)

ATTACKER = MEMBERS[11]
STRANGER = Identity.from_seed(b"\x66" * 32)


def _proof(first: Envelope[Any], second: Envelope[Any], by: Identity) -> Envelope[Misbehaviour]:
    return seal(make_proof(first, second), by)


def _twins(kind: str, c: Envelope[Any]) -> tuple[Envelope[Any], Envelope[Any]]:
    """A valid pledge and a conflicting twin of the given kind, by ATTACKER."""
    good = pledge(c, ATTACKER, quantity=6, max_price=4000)
    if kind == "wrong-currency":
        return good, pledge(c, ATTACKER, quantity=6, max_price=4000, currency="USD")
    if kind == "above-ceiling":
        return good, pledge(c, ATTACKER, quantity=6, max_price=4600)
    if kind == "late":
        return good, pledge(c, ATTACKER, quantity=6, max_price=3900, created=DEADLINE + 5)
    if kind == "withdrawal":
        return good, pledge(c, ATTACKER, quantity=0)
    if kind == "quantity":
        return good, pledge(c, ATTACKER, quantity=7, max_price=4000)
    raise AssertionError(kind)


TWIN_KINDS = ["wrong-currency", "above-ceiling", "late", "withdrawal", "quantity"]


def _base(c: Envelope[Any]) -> list[Envelope[Any]]:
    return [
        offer(c, tiers=((5, 4000), (10, 3500))),
        pledge(c, MEMBERS[0], quantity=3, max_price=4000),
        pledge(c, MEMBERS[1], quantity=2, max_price=4000),
    ]


@pytest.mark.parametrize("kind", TWIN_KINDS)
@pytest.mark.parametrize("by", ["attacker", "stranger"])
@pytest.mark.parametrize("first", [True, False])
def test_a_self_made_proof_never_raises(kind: str, by: str, first: bool) -> None:
    c = charter(ceiling=4500, target=10)
    good, twin = _twins(kind, c)
    proof = _proof(good, twin, ATTACKER if by == "attacker" else STRANGER)
    for held in ([], [good], [twin], [good, twin]):
        envelopes: list[Envelope[Message]] = [*_base(c), *held]
        envelopes = [proof, *envelopes] if first else [*envelopes, proof]
        state = CircleState(c)
        for env in envelopes:
            state.apply(env, T0 + 100)  # never raises
        state.advance(DEADLINE + 10)
        without = CircleState.from_envelopes(c, [*_base(c), *held], now=T0 + 100)
        with_proof = CircleState.from_envelopes(c, [*_base(c), *held, proof], now=T0 + 100)
        reverse = CircleState.from_envelopes(c, [proof, *held, *_base(c)], now=T0 + 100)
        assert with_proof.digest() == reverse.digest()
        if kind in ("wrong-currency", "above-ceiling"):
            # The twin is refused outright, so it proves nothing: the proof is
            # refused whole and the state is the one without it.
            assert with_proof.digest() == without.digest()
            assert ATTACKER.public_key not in with_proof.equivocators()


@pytest.mark.parametrize("kind", ["wrong-currency", "above-ceiling"])
def test_a_twin_the_circle_refuses_proves_nothing_anywhere(kind: str) -> None:
    c = charter(ceiling=4500, target=5)
    good, twin = _twins(kind, c)
    body = make_proof(good, twin)
    verify_misbehaviour(body)  # on its own, a conflict of two signed pledges
    with pytest.raises(InvalidProof) as refused:
        verify_misbehaviour(body, charter=c)
    assert refused.value.reason == "not-evidence"
    # The state and the certificate check agree: the key still counts.
    o = offer(c, tiers=((5, 4000),))
    state = CircleState.from_envelopes(c, [o, good, twin], now=T0 + 100)
    assert ATTACKER.public_key not in state.equivocators()
    assert state.status is CircleStatus.QUORUM
    cert = seal(state.certificate(), ATTACKER)
    verify_certificate(cert, charter=c, offer=o, pledges=[good, twin])


@pytest.mark.parametrize("kind", ["late", "withdrawal", "quantity"])
def test_a_real_conflict_makes_an_equivocator_everywhere(kind: str) -> None:
    c = charter(ceiling=4500, target=5)
    good, twin = _twins(kind, c)
    verify_misbehaviour(make_proof(good, twin), charter=c)
    o = offer(c, tiers=((5, 4000),))
    state = CircleState.from_envelopes(c, [o, _proof(good, twin, STRANGER)], now=T0 + 100)
    assert ATTACKER.public_key in state.equivocators()
    cert = seal(CircleState.from_envelopes(c, [o, good], now=T0 + 100).certificate(), ATTACKER)
    with pytest.raises(InvalidCertificate) as refused:
        verify_certificate(cert, charter=c, offer=o, pledges=[good, twin])
    assert refused.value.reason == "equivocator"


def test_an_extension_twin_after_the_deadline_proves_nothing() -> None:
    c = charter(on_miss="extend")
    valid = extension(c, DEADLINE + 300)
    late = extension(c, DEADLINE + 600, created=DEADLINE + 1)
    body = make_proof(valid, late)
    with pytest.raises(InvalidProof):
        verify_misbehaviour(body, charter=c)
    state = CircleState.from_envelopes(c, [seal(body, STRANGER)], now=T0 + 100)
    assert state.status is CircleStatus.FORMING
    assert state.equivocators() == {}


def test_the_crash_from_the_issue_is_gone_and_the_deal_still_closes() -> None:
    """The proof from issue 11 arrives after a deal closed the circle."""
    c = charter(ceiling=4500, target=5)
    o = offer(c, tiers=((5, 4000),))
    honest = [pledge(c, m, quantity=3, max_price=4000) for m in MEMBERS[:2]]
    state = CircleState.from_envelopes(c, [o, *honest], now=T0 + 100)
    cert = seal(state.certificate(), MEMBERS[0])
    deal = deal_for(cert)
    good, twin = _twins("wrong-currency", c)
    proof = _proof(good, twin, ATTACKER)
    state = CircleState.from_envelopes(c, [o, *honest, cert, deal], now=T0 + 100)
    assert state.status is CircleStatus.CLOSED
    state.apply(proof, T0 + 200)
    assert state.status is CircleStatus.CLOSED


# ----------------------------------------------------------- property test

PEOPLE = [*MEMBERS[:4], ATTACKER]


@st.composite
def hostile_sets(draw: st.DrawFn) -> tuple[Envelope[Any], list[Envelope[Any]], int]:
    c = charter(
        ceiling=draw(st.sampled_from([None, 4500])),
        target=draw(st.integers(3, 8)),
        on_miss=draw(st.sampled_from(["expire", "extend", "smaller-tier"])),
    )
    out: list[Envelope[Any]] = [offer(c, tiers=((3, 4200), (6, 3800)), capacity=20)]
    for who in draw(st.lists(st.sampled_from(PEOPLE), min_size=1, max_size=6)):
        out.append(
            pledge(
                c,
                who,
                seq=draw(st.integers(1, 2)),
                quantity=draw(st.integers(0, 4)),
                max_price=draw(st.sampled_from([3800, 4200, 4600])),
                created=draw(st.sampled_from([T0 + 10, T0 + 11, DEADLINE + 5])),
                currency=draw(st.sampled_from(["EUR", "EUR", "USD"])),
            )
        )
    pledges = [e for e in out if e.kind == "pledge"]
    exts = [
        extension(c, DEADLINE + d, created=t)
        for d, t in draw(
            st.lists(
                st.tuples(st.sampled_from([300, 600]), st.sampled_from([T0 + 20, DEADLINE + 1])),
                max_size=2,
            )
        )
    ]
    out += draw(st.lists(st.sampled_from(exts), max_size=2)) if exts else []
    # Proofs made by anyone, of any two same-key envelopes, held or not.
    for _ in range(draw(st.integers(0, 3))):
        pool = pledges + exts
        if len(pool) < 2:
            break
        a, b = draw(st.sampled_from(pool)), draw(st.sampled_from(pool))
        if a.id == b.id or a.signer != b.signer:
            continue
        if a.kind != b.kind or (a.kind == "pledge" and a.message.seq != b.message.seq):
            continue
        out.append(_proof(a, b, draw(st.sampled_from([ATTACKER, STRANGER, FOUNDER]))))
        if draw(st.booleans()):
            for held in (a, b):
                if held in out:
                    out.remove(held)
    # A certificate over some view, sealed by someone, and the vendor's deal.
    if draw(st.booleans()):
        view = [e for e in out if draw(st.booleans())]
        try:
            body = CircleState.from_envelopes(c, view, now=T0 + 100).certificate()
        except InvalidCertificate:
            pass
        else:
            cert = seal(body, draw(st.sampled_from([*PEOPLE, VENDOR, STRANGER])))
            out += [cert, deal_for(cert)]
    now = draw(st.sampled_from([T0 + 100, DEADLINE + 10, DEADLINE + 400]))
    return c, out, now


@settings(max_examples=150, deadline=None)
@given(hostile_sets(), st.data())
def test_hostile_sets_apply_in_any_order_without_raising(
    scenario: tuple[Envelope[Any], list[Envelope[Any]], int], data: st.DataObject
) -> None:
    c, envelopes, now = scenario
    reference = CircleState.from_envelopes(c, envelopes, now=now)
    shuffled = data.draw(st.permutations(envelopes))
    stepped = CircleState(c)
    times = sorted(data.draw(st.lists(st.integers(T0, now), min_size=len(shuffled))))
    seen: list[Any] = []
    for env, t in zip(shuffled, times, strict=False):
        seen += stepped.apply(env, t)
    seen += stepped.advance(now)
    assert not [e for e in seen if isinstance(e, RuleAnomaly)]
    assert stepped.digest() == reference.digest()
    # A proof adds nothing its two envelopes do not: the state with the
    # proofs' envelopes in the clear is the state with the proofs.
    opened: list[Envelope[Any]] = []
    for env in envelopes:
        if env.kind == "misbehaviour":
            try:
                opened += verify_misbehaviour(env.message, charter=c)
            except InvalidProof:
                continue
        else:
            opened.append(env)
    assert CircleState.from_envelopes(c, opened, now=now).digest() == reference.digest()


# ------------------------------------------------ who may seal a certificate


def _six_pledges() -> tuple[Envelope[Any], Envelope[Any], list[Envelope[Any]]]:
    c = charter(target=10)
    o = offer(c, tiers=((10, 100), (30, 80)), capacity=100)
    return c, o, [pledge(c, m, quantity=5, max_price=150) for m in MEMBERS[:6]]


def test_a_vendor_cannot_pick_a_dearer_tier_by_naming_a_subset() -> None:
    """The example from issue 11: 30 units clear at 0.80; the vendor names 10 at 1.00."""
    c, o, pledges = _six_pledges()
    fair = CircleState.from_envelopes(c, [o, *pledges], now=T0 + 100)
    assert fair.best_offer is not None and fair.best_offer.unit_price == 80
    subset = CircleState.from_envelopes(c, [o, *pledges[:2]], now=T0 + 100).certificate()
    assert subset.unit_price == 100
    for sealer in (VENDOR, STRANGER):
        cert = seal(subset, sealer)
        with pytest.raises(InvalidCertificate) as refused:
            verify_certificate(cert, charter=c, offer=o, pledges=pledges)
        assert refused.value.reason == "not-a-member"
        state = CircleState.from_envelopes(c, [o, *pledges, cert, deal_for(cert)], now=T0 + 100)
        assert state.status is CircleStatus.QUORUM
        assert state.deal is None
    # A member's node assembles from its whole view: the cheapest tier.
    cert = seal(fair.certificate(), MEMBERS[3])
    verify_certificate(cert, charter=c, offer=o, pledges=pledges)
    closed = CircleState.from_envelopes(c, [o, *pledges, cert, deal_for(cert)], now=T0 + 100)
    assert closed.status is CircleStatus.CLOSED
    assert closed.deal is not None and closed.deal.message.unit_price == 80


@settings(max_examples=120, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 6), st.sampled_from([90, 100, 120, 150])), min_size=1, max_size=8
    ),
    st.data(),
)
def test_no_one_outside_a_certificate_can_close_the_circle(
    rows: list[tuple[int, int]], data: st.DataObject
) -> None:
    """Whatever subset and tier a vendor or a stranger picks, its certificate closes nothing;
    a certificate a named member assembles over its whole view clears at the cheapest tier."""
    c = charter(target=data.draw(st.integers(4, 12)))
    o = offer(c, tiers=((4, 120), (8, 100), (14, 90)), capacity=data.draw(st.integers(8, 40)))
    pledges = [pledge(c, MEMBERS[i], quantity=q, max_price=p) for i, (q, p) in enumerate(rows)]
    whole = CircleState.from_envelopes(c, [o, *pledges], now=T0 + 100)
    subset = [p for p in pledges if data.draw(st.booleans())]
    try:
        body = CircleState.from_envelopes(c, [o, *subset], now=T0 + 100).certificate()
    except InvalidCertificate:
        return
    outsider = data.draw(st.sampled_from([VENDOR, STRANGER, FOUNDER]))
    cert = seal(body, outsider)
    state = CircleState.from_envelopes(c, [o, *pledges, cert, deal_for(cert)], now=T0 + 100)
    assert state.deal is None
    assert state.status is whole.status
    if whole.best_offer is not None:
        body = whole.certificate()
        named = {whole.pledge(a.pledge).signer for a in body.allocations}  # type: ignore[union-attr]
        sealer = next(m for m in MEMBERS if m.public_key in named)
        member_cert = seal(body, sealer)
        closed = CircleState.from_envelopes(
            c, [o, *pledges, member_cert, deal_for(member_cert)], now=T0 + 100
        )
        assert closed.deal is not None
        assert closed.deal.message.unit_price == whole.best_offer.unit_price
