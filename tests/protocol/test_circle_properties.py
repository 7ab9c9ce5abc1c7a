"""Properties of circle state: order independence and safety, for any message set."""

from __future__ import annotations

from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from protocol import (
    SMALLER_TIER_WINDOW,
    Charter,
    CircleState,
    CircleStatus,
    Envelope,
    InvalidCertificate,
    Message,
    seal,
    verify_certificate,
)
from protocol._codec import pack
from protocol._schema import to_wire

from .test_circle import (
    DEADLINE,
    FOUNDER,
    MEMBERS,
    OTHER_VENDOR,
    T0,
    VENDOR,
    charter,
    deal_for,
    extension,
    invite,
    offer,
    pledge,
)

PEOPLE = MEMBERS[:6]
NOW_LIST = [
    T0 + 100,
    T0 + 100,
    DEADLINE,
    DEADLINE + 1,
    DEADLINE + 400,
    DEADLINE + SMALLER_TIER_WINDOW + 1,
]
NOW = st.sampled_from(NOW_LIST)


@st.composite
def charters(draw: st.DrawFn) -> Envelope[Charter]:
    invite_only = draw(st.sampled_from([False, False, False, True]))
    return charter(
        target=draw(st.integers(3, 10)),
        ceiling=draw(st.sampled_from([None, 4500])),
        invite_only=invite_only,
        members_invite=invite_only and draw(st.booleans()),
        on_miss=draw(st.sampled_from(["expire", "extend", "smaller-tier"])),
    )


@st.composite
def message_sets(draw: st.DrawFn) -> tuple[Envelope[Charter], list[Envelope[Any]], int]:
    """A charter, a set of messages about it (some invalid, some conflicting), and a time."""
    c = draw(charters())
    out: list[Envelope[Any]] = []
    offset = draw(st.integers(0, 5))
    for i in range(draw(st.integers(4, 16))):
        who = PEOPLE[(i + offset) % len(PEOPLE)]
        # Mostly fresh pledges; now and then a withdrawal or a reused sequence number.
        quantity = draw(st.integers(1, 5)) if draw(st.integers(0, 5)) < 5 else 0
        out.append(
            pledge(
                c,
                who,
                seq=1 + i // len(PEOPLE) + draw(st.integers(0, 1)),
                quantity=quantity,
                max_price=draw(st.sampled_from([4000, 3500, 3000, 5000])),
                tolerance=draw(st.integers(0, 2)),
                created=draw(st.sampled_from([T0 + 10, T0 + 11, T0 + 12, DEADLINE, DEADLINE + 50])),
                currency=draw(st.sampled_from(["EUR"] * 7 + ["USD"])),
            )
        )
    for _ in range(draw(st.integers(0, 5))):
        by = draw(st.sampled_from([FOUNDER, *PEOPLE[:2]]))
        out.append(invite(c, by, draw(st.sampled_from(PEOPLE))))
    vendors = [VENDOR, OTHER_VENDOR][: draw(st.sampled_from([1, 1, 1, 2, 0]))]
    for vendor in vendors:
        out.append(
            offer(
                c,
                vendor=vendor,
                capacity=draw(st.integers(5, 30)),
                valid_until=draw(st.sampled_from([T0 + 200, DEADLINE + 5000])),
                tiers=draw(st.sampled_from([((5, 4000), (10, 3500)), ((3, 4500), (8, 3000))])),
            )
        )
    for deadline in draw(st.lists(st.sampled_from([DEADLINE + 300, DEADLINE + 600]), max_size=2)):
        out.append(extension(c, deadline))
    now = draw(NOW)
    # Certificates and deals, assembled from a subset, so that later messages race them.
    if draw(st.integers(0, 2)) < 2:
        subset = [e for e in out if draw(st.integers(0, 3)) < 3]
        early = CircleState.from_envelopes(
            c, subset, now=draw(st.sampled_from([T0 + 100, *NOW_LIST]))
        )
        try:
            body = early.certificate()
        except InvalidCertificate:
            pass
        else:
            cert = seal(body, draw(st.sampled_from(PEOPLE)))
            vendor_of = {e.id: e.signer for e in out if e.kind == "offer"}
            vendor = VENDOR if vendor_of[body.offer] == VENDOR.public_key else OTHER_VENDOR
            created = draw(st.sampled_from([T0 + 300, DEADLINE + 10]))
            out += [cert, deal_for(cert, vendor=vendor, created=created)]
    return c, out, now


@st.composite
def deal_races(draw: st.DrawFn) -> tuple[Envelope[Charter], list[Envelope[Any]], int]:
    """A deal over a valid certificate, raced by withdrawals, new pledges and equivocations."""
    c = charter(target=6, on_miss=draw(st.sampled_from(["expire", "smaller-tier"])))
    o = offer(c, capacity=draw(st.integers(10, 14)))
    base = [
        pledge(c, m, quantity=2, max_price=draw(st.sampled_from([3500, 4000])), tolerance=1)
        for m in PEOPLE[:5]
    ]
    cert = seal(CircleState.from_envelopes(c, [o, *base], now=T0 + 100).certificate(), PEOPLE[0])
    created = draw(st.sampled_from([T0 + 300, DEADLINE, DEADLINE + 10]))
    out: list[Envelope[Any]] = [o, *base, cert, deal_for(cert, created=created)]
    for who in draw(st.lists(st.sampled_from(PEOPLE), max_size=4)):
        move = draw(st.sampled_from(["withdraw", "raise", "equivocate"]))
        if move == "withdraw":
            out.append(pledge(c, who, seq=2, quantity=0))
        elif move == "raise":
            out.append(pledge(c, who, seq=2, quantity=4, max_price=4000))
        else:
            out.append(pledge(c, who, seq=1, quantity=3, max_price=3000))
    return c, out, draw(NOW)


SCENARIOS = st.one_of(message_sets(), deal_races())


def build(c: Envelope[Charter], envelopes: list[Envelope[Any]], now: int) -> CircleState:
    messages: list[Envelope[Message]] = list(envelopes)
    return CircleState.from_envelopes(c, messages, now=now)


def certificate_bytes(state: CircleState) -> bytes | None:
    try:
        return pack(to_wire(state.certificate()))
    except InvalidCertificate:
        return None


@settings(max_examples=60)
@given(SCENARIOS, st.data())
def test_any_order_with_duplicates_gives_the_same_state(
    scenario: tuple[Envelope[Charter], list[Envelope[Any]], int], data: st.DataObject
) -> None:
    c, envelopes, now = scenario
    reference = build(c, envelopes, now)
    extra = data.draw(st.lists(st.sampled_from(envelopes), max_size=4)) if envelopes else []
    shuffled = data.draw(st.permutations([*envelopes, *extra]))
    other = build(c, shuffled, now)
    assert other.digest() == reference.digest()
    assert other.status is reference.status
    assert certificate_bytes(other) == certificate_bytes(reference)


@settings(max_examples=60)
@given(SCENARIOS, st.data())
def test_time_can_be_handed_in_step_by_step(
    scenario: tuple[Envelope[Charter], list[Envelope[Any]], int], data: st.DataObject
) -> None:
    c, envelopes, now = scenario
    stepped = CircleState(c)
    times = sorted(data.draw(st.lists(st.integers(T0, now), min_size=len(envelopes))))
    for env, t in zip(envelopes, times, strict=False):
        stepped.apply(env, t)
    stepped.advance(now)
    assert stepped.digest() == build(c, envelopes, now).digest()


@settings(max_examples=80)
@given(SCENARIOS)
def test_safety_of_deals_and_certificates(
    scenario: tuple[Envelope[Charter], list[Envelope[Any]], int],
) -> None:
    c, envelopes, now = scenario
    state = build(c, envelopes, now)
    event(f"status {state.status.value}")
    live_ids = {e.id for e in state.live_pledges().values()}
    equivocators = state.equivocators()
    deal = state.deal
    if deal is not None:
        assert state.status is CircleStatus.CLOSED
        cert = next(e for e in envelopes if e.id == deal.message.certificate).message
        terms = next(e for e in envelopes if e.id == cert.offer).message
        assert cert.total <= terms.capacity
        members = set()
        for a in cert.allocations:
            p = state.pledge(a.pledge)
            assert p is not None
            assert p.message.max_price >= deal.message.unit_price
            assert p.message.quantity <= a.quantity <= p.message.quantity + p.message.tolerance
            assert p.message.created <= state.deadline
            assert p.signer not in equivocators
            assert p.signer not in members
            members.add(p.signer)
            if c.message.invite_only:
                assert p.signer in state.members()
    if state.status is CircleStatus.QUORUM:
        body = state.certificate()
        # What any member assembles counts only live pledges, and the vendor's check accepts it.
        assert {a.pledge for a in body.allocations} <= live_ids
        named = {state.pledge(a.pledge).signer for a in body.allocations}  # type: ignore[union-attr]
        cert_env = seal(body, next(p for p in PEOPLE if p.public_key in named))
        verify_certificate(cert_env, **state.certificate_inputs(body))
    for member, env in state.live_pledges().items():
        assert env.message.quantity > 0
        assert member not in equivocators
        assert env.message.created <= state.deadline
