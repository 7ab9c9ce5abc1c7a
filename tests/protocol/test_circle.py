"""Circle state: charters, pledges, refusals, quorum, deals, expiry (example-based).

The builders at the top are shared by the other test_circle*.py modules.
"""

from __future__ import annotations

from typing import Any

import pytest

import protocol
from protocol import (
    Certificate,
    Charter,
    CircleState,
    CircleStatus,
    Deal,
    Envelope,
    Extension,
    Identity,
    Invite,
    Message,
    Offer,
    Pledge,
    Tier,
    seal,
)

T0 = 1_700_000_000
DEADLINE = T0 + 1000
FOUNDER = Identity.from_seed(b"\x01" * 32)
VENDOR = Identity.from_seed(b"\x02" * 32)
OTHER_VENDOR = Identity.from_seed(b"\x03" * 32)
MEMBERS = [Identity.from_seed(bytes([10 + i]) * 32) for i in range(12)]


def charter(**changes: Any) -> Envelope[Charter]:
    fields: dict[str, Any] = dict(
        title="Olive oil, 5 l tins",
        unit="tin",
        target=10,
        currency="EUR",
        ceiling=None,
        deadline=DEADLINE,
        place="u0yjj",
        tags=("food",),
        invite_only=False,
        members_invite=False,
        on_miss="expire",
        created=T0,
    )
    fields.update(changes)
    return seal(Charter(**fields), FOUNDER)


def pledge(
    circle: Envelope[Charter],
    who: Identity,
    *,
    seq: int = 1,
    quantity: int = 2,
    max_price: int = 4000,
    tolerance: int = 0,
    created: int = T0 + 10,
    currency: str = "EUR",
) -> Envelope[Pledge]:
    if quantity == 0:
        max_price = tolerance = 0
    return seal(
        Pledge(
            circle=circle.id,
            seq=seq,
            quantity=quantity,
            max_price=max_price,
            currency=currency,
            tolerance=tolerance,
            created=created,
        ),
        who,
    )


def offer(
    circle: Envelope[Charter],
    *,
    tiers: tuple[tuple[int, int], ...] = ((5, 4000), (10, 3500), (20, 3000)),
    capacity: int = 100,
    valid_until: int = DEADLINE + 5000,
    vendor: Identity = VENDOR,
    created: int = T0 + 5,
) -> Envelope[Offer]:
    return seal(
        Offer(
            circle=circle.id,
            product="Extra virgin olive oil",
            currency="EUR",
            list_price=4500,
            tiers=tuple(Tier(min_quantity=m, unit_price=p) for m, p in tiers),
            capacity=capacity,
            valid_until=valid_until,
            terms="delivery in 2 weeks",
            loyalty=(),
            in_reply_to=None,
            created=created,
        ),
        vendor,
    )


def deal_for(
    cert: Envelope[Certificate], *, vendor: Identity = VENDOR, created: int = T0 + 500
) -> Envelope[Deal]:
    c = cert.message
    return seal(
        Deal(
            circle=c.circle,
            certificate=cert.id,
            unit_price=c.unit_price,
            currency=c.currency,
            total=c.total,
            created=created,
        ),
        vendor,
    )


def invite(circle: Envelope[Charter], by: Identity, who: Identity) -> Envelope[Invite]:
    return seal(
        Invite(circle=circle.id, invitee=who.public_key, sealed_key=None, created=T0 + 1), by
    )


def extension(
    circle: Envelope[Charter], deadline: int, created: int = T0 + 20
) -> Envelope[Extension]:
    return seal(Extension(circle=circle.id, deadline=deadline, created=created), FOUNDER)


def state_of(
    circle: Envelope[Charter], envelopes: list[Envelope[Any]], now: int = T0 + 100
) -> CircleState:
    messages: list[Envelope[Message]] = list(envelopes)
    return CircleState.from_envelopes(circle, messages, now=now)


def reasons(events: list[Any]) -> list[str]:
    return [e.reason for e in events if isinstance(e, protocol.Refused)]


# ------------------------------------------------------------------ tests


def test_new_circle_is_forming_with_its_charter_id() -> None:
    c = charter()
    state = CircleState(c)
    assert state.id == c.id
    assert state.status is CircleStatus.FORMING
    assert state.progress() == (0, 10)
    assert state.next_deadline() == DEADLINE + 1


def test_quorum_is_reached_at_the_cheapest_tier_that_clears() -> None:
    c = charter()
    o = offer(c)
    pledges = [pledge(c, m, quantity=2, max_price=3500) for m in MEMBERS[:5]]
    state = state_of(c, [o, *pledges])
    assert state.status is CircleStatus.QUORUM
    best = state.best_offer
    assert best is not None
    assert (best.unit_price, best.total) == (3500, 10)
    assert state.demand(3500) == 10 and state.demand(3501) == 0
    assert state.demand_curve() == [(3500, 10)]
    assert state.worst_case_costs()[MEMBERS[0].public_key] == 2 * 3500


def test_target_must_be_met_not_only_the_tier_minimum() -> None:
    c = charter(target=12)
    state = state_of(c, [offer(c), *[pledge(c, m, quantity=2) for m in MEMBERS[:5]]])
    assert state.status is CircleStatus.FORMING


def test_tolerance_fills_a_tier_exactly() -> None:
    c = charter(target=10)
    ps = [pledge(c, m, quantity=2, max_price=3500, tolerance=1) for m in MEMBERS[:4]]
    state = state_of(c, [offer(c), *ps])
    assert state.best_offer is not None
    assert (state.best_offer.unit_price, state.best_offer.total) == (3500, 10)
    cert = state.certificate()
    assert cert.total == 10
    assert sorted(a.quantity for a in cert.allocations) == [2, 2, 3, 3]


def test_capacity_is_filled_in_priority_order_and_stops_at_the_first_misfit() -> None:
    c = charter(target=5)
    # capacity 9: high price first (6 units), then 4 does not fit, then 1 would but may not jump.
    high = pledge(c, MEMBERS[0], quantity=6, max_price=5000)
    mid = pledge(c, MEMBERS[1], quantity=4, max_price=4500)
    low = pledge(c, MEMBERS[2], quantity=1, max_price=4000)
    o = offer(c, tiers=((5, 4000),), capacity=9)
    state = state_of(c, [o, low, mid, high])
    cert = state.certificate()
    assert [a.pledge for a in cert.allocations] == [high.id]
    assert cert.total == 6


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"created": DEADLINE + 1}, "late"),
        ({"currency": "USD"}, "wrong-currency"),
    ],
)
def test_refusals_are_events(changes: dict[str, Any], reason: str) -> None:
    c = charter()
    state = CircleState(c)
    events = state.apply(pledge(c, MEMBERS[0], **changes), T0 + 50)
    assert reasons(events) == [reason]
    assert state.live_pledges() == {}


def test_unknown_circle_and_ceiling_are_refused() -> None:
    c = charter(ceiling=3000)
    other = charter(title="Something else")
    state = CircleState(c)
    assert reasons(state.apply(pledge(other, MEMBERS[0]), T0)) == ["unknown-circle"]
    assert reasons(state.apply(pledge(c, MEMBERS[0], max_price=3001), T0)) == ["above-ceiling"]


def test_invite_only_counts_a_pledge_once_its_invite_arrives() -> None:
    c = charter(invite_only=True)
    state = CircleState(c)
    p = pledge(c, MEMBERS[0])
    assert reasons(state.apply(p, T0 + 20)) == ["unadmitted"]
    assert state.live_pledges() == {}
    events = state.apply(invite(c, FOUNDER, MEMBERS[0]), T0 + 21)
    assert any(isinstance(e, protocol.MemberAdmitted) for e in events)
    assert state.live_pledges() == {MEMBERS[0].public_key: p}


def test_members_invite_only_when_the_charter_allows() -> None:
    closed = charter(invite_only=True, members_invite=False)
    chain = [invite(closed, FOUNDER, MEMBERS[0]), invite(closed, MEMBERS[0], MEMBERS[1])]
    assert MEMBERS[1].public_key not in state_of(closed, chain).members()
    open_ = charter(invite_only=True, members_invite=True)
    chain = [invite(open_, MEMBERS[0], MEMBERS[1]), invite(open_, FOUNDER, MEMBERS[0])]
    assert MEMBERS[1].public_key in state_of(open_, chain).members()


def test_higher_sequence_supersedes_and_zero_withdraws() -> None:
    c = charter()
    first = pledge(c, MEMBERS[0], seq=1, quantity=2)
    second = pledge(c, MEMBERS[0], seq=2, quantity=5)
    state = state_of(c, [second, first])
    assert state.live_pledges()[MEMBERS[0].public_key] == second
    events = state.apply(pledge(c, MEMBERS[0], seq=3, quantity=0), T0 + 100)
    assert any(isinstance(e, protocol.PledgeWithdrawn) for e in events)
    assert state.progress() == (0, 10)


def test_equivocation_produces_a_verifiable_proof_and_excludes_the_member() -> None:
    c = charter()
    a = pledge(c, MEMBERS[0], seq=1, quantity=2)
    b = pledge(c, MEMBERS[0], seq=1, quantity=3)
    state = state_of(c, [a])
    events = state.apply(b, T0 + 100)
    proofs = [e for e in events if isinstance(e, protocol.EquivocationDetected)]
    assert len(proofs) == 1
    first, second = protocol.verify_misbehaviour(proofs[0].proof)
    assert {first.id, second.id} == {a.id, b.id}
    assert state.live_pledges() == {}
    # A node that only saw the proof reaches the same state.
    other = CircleState(c)
    other.apply(seal(proofs[0].proof, MEMBERS[5]), T0 + 100)
    assert other.digest() == state.digest()


def test_deal_closes_and_binds_the_certified_pledge_despite_a_withdrawal() -> None:
    c = charter()
    o = offer(c)
    ps = [pledge(c, m, quantity=2, max_price=3500) for m in MEMBERS[:5]]
    state = state_of(c, [o, *ps])
    cert = seal(state.certificate(), MEMBERS[0])
    deal = deal_for(cert)
    withdrawal = pledge(c, MEMBERS[1], seq=2, quantity=0, created=T0 + 60)
    # The withdrawal arrives before the deal: the deal still binds.
    events = []
    for env in (withdrawal, cert, deal):
        events += state.apply(env, T0 + 600)
    assert state.status is CircleStatus.CLOSED
    assert state.deal == deal
    bound = [e for e in events if isinstance(e, protocol.PledgeBound)]
    assert [(b.member, b.pledge, b.later) for b in bound] == [
        (MEMBERS[1].public_key, ps[1].id, withdrawal.id)
    ]
    assert state.next_deadline() is None


def test_deal_from_another_key_does_not_close() -> None:
    c = charter()
    state = state_of(c, [offer(c), *[pledge(c, m, quantity=2) for m in MEMBERS[:5]]])
    cert = seal(state.certificate(), MEMBERS[0])
    state.apply(cert, T0 + 200)
    state.apply(deal_for(cert, vendor=OTHER_VENDOR), T0 + 200)
    assert state.status is CircleStatus.QUORUM


def test_no_deal_by_the_deadline_expires() -> None:
    c = charter()
    state = state_of(c, [offer(c), *[pledge(c, m, quantity=2) for m in MEMBERS[:5]]])
    assert state.status is CircleStatus.QUORUM
    events = state.advance(DEADLINE + 1)
    assert state.status is CircleStatus.EXPIRED
    assert events[-1] == protocol.StatusChanged(
        previous=CircleStatus.QUORUM, status=CircleStatus.EXPIRED, at=DEADLINE + 1
    )


def test_extension_moves_the_deadline_once() -> None:
    c = charter(on_miss="extend")
    late = pledge(c, MEMBERS[0], created=DEADLINE + 50)
    state = state_of(c, [late], now=DEADLINE + 10)
    assert state.status is CircleStatus.EXPIRED
    state.apply(extension(c, DEADLINE + 500), DEADLINE + 10)
    assert state.deadline == DEADLINE + 500
    assert state.status is CircleStatus.FORMING
    assert MEMBERS[0].public_key in state.live_pledges()
    # A second, different extension is the founder equivocating: the circle is cancelled.
    state.apply(extension(c, DEADLINE + 900), DEADLINE + 10)
    assert state.status is CircleStatus.CANCELLED
    assert FOUNDER.public_key in state.equivocators()


def test_extension_refused_when_charter_does_not_allow_it() -> None:
    c = charter(on_miss="expire")
    state = CircleState(c)
    assert reasons(state.apply(extension(c, DEADLINE + 500), T0)) == ["bad-extension"]


def test_smaller_tier_after_the_deadline() -> None:
    c = charter(target=20, on_miss="smaller-tier")
    ps = [pledge(c, m, quantity=2) for m in MEMBERS[:4]]  # 8 units: tier 5 met, target not
    state = state_of(c, [offer(c), *ps])
    assert state.status is CircleStatus.FORMING
    state.advance(DEADLINE + 1)
    assert state.status is CircleStatus.QUORUM
    best = state.best_offer
    assert best is not None and best.smaller_tier and best.unit_price == 4000
    cert = seal(state.certificate(), MEMBERS[0])
    state.apply(cert, DEADLINE + 2)
    # A deal dated before the deadline cannot bind a smaller tier; one inside the window can.
    state.apply(deal_for(cert, created=DEADLINE - 5), DEADLINE + 3)
    assert state.status is CircleStatus.QUORUM
    state.apply(deal_for(cert, created=DEADLINE + 10), DEADLINE + 11)
    assert state.status is CircleStatus.CLOSED
    other = state_of(c, [offer(c), *ps], now=DEADLINE + protocol.SMALLER_TIER_WINDOW + 1)
    assert other.status is CircleStatus.EXPIRED


def test_lapsed_offer_no_longer_clears() -> None:
    c = charter()
    o = offer(c, valid_until=T0 + 200)
    state = state_of(c, [o, *[pledge(c, m, quantity=2) for m in MEMBERS[:5]]])
    assert state.status is CircleStatus.QUORUM
    assert state.next_deadline() == T0 + 201
    state.advance(T0 + 201)
    assert state.status is CircleStatus.FORMING


def test_best_offer_is_the_lowest_clearing_price() -> None:
    c = charter(target=6)
    a = offer(c, tiers=((5, 4000),))
    b = offer(c, tiers=((5, 3800),), vendor=OTHER_VENDOR)
    state = state_of(c, [a, b, *[pledge(c, m, quantity=2) for m in MEMBERS[:3]]])
    assert state.best_offer is not None
    assert (state.best_offer.offer, state.best_offer.unit_price) == (b.id, 3800)


def test_duplicates_and_foreign_kinds_change_nothing() -> None:
    c = charter()
    p = pledge(c, MEMBERS[0])
    state = state_of(c, [p])
    digest = state.digest()
    assert state.apply(p, T0 + 100) == []
    assert state.apply(c, T0 + 100) == []
    assert state.digest() == digest


def test_apply_refuses_non_envelopes() -> None:
    state = CircleState(charter())
    with pytest.raises(protocol.InvalidMessage):
        state.apply(b"bytes", T0)  # type: ignore[arg-type]
    with pytest.raises(protocol.InvalidMessage):
        CircleState(pledge(charter(), MEMBERS[0]))  # type: ignore[arg-type]


def test_transition_table_covers_every_pair_and_allows_staying() -> None:
    table = protocol.CIRCLE_TRANSITIONS
    for status in CircleStatus:
        for kind in protocol.CircleInput:
            assert status in table[(status, kind)], (status, kind)
    # Nothing but an equivocation, a conflicting extension or a cap dropping what
    # the deal names (its party's own later messages) undoes a closed deal.
    undo = {k for (s, k), after in table.items() if s is CircleStatus.CLOSED and after != {s}}
    assert undo == {
        protocol.CircleInput.EQUIVOCATION,
        protocol.CircleInput.EXTENSION,
        protocol.CircleInput.CAPPED,
    }


def test_withdrawal_after_the_deal_is_reported_as_bound() -> None:
    c = charter()
    ps = [pledge(c, m, quantity=2, max_price=3500) for m in MEMBERS[:5]]
    state = state_of(c, [offer(c), *ps])
    cert = seal(state.certificate(), MEMBERS[0])
    deal = deal_for(cert)
    state.apply(cert, T0 + 600)
    state.apply(deal, T0 + 600)
    withdrawal = pledge(c, MEMBERS[2], seq=2, quantity=0, created=T0 + 700)
    events = state.apply(withdrawal, T0 + 700)
    assert (
        protocol.PledgeBound(
            member=MEMBERS[2].public_key, pledge=ps[2].id, later=withdrawal.id, deal=deal.id
        )
        in events
    )
    assert state.status is CircleStatus.CLOSED


def test_deal_signed_after_the_deadline_does_not_close() -> None:
    c = charter()
    state = state_of(c, [offer(c), *[pledge(c, m, quantity=2) for m in MEMBERS[:5]]])
    cert = seal(state.certificate(), MEMBERS[0])
    state.apply(cert, T0 + 200)
    state.apply(deal_for(cert, created=DEADLINE + 1), DEADLINE + 2)
    assert state.status is CircleStatus.EXPIRED
    assert state.deal is None
