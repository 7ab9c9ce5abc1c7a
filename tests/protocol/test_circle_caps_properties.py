"""Caps under hypothesis: with tiny caps, every cap is hit, and the state is still a
function of the set (any order), and a deal's lock holds against its own parties.

The caps are made tiny here so that a handful of messages reaches every one of
them; the rules do not depend on the numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    CircleState,
    CircleStatus,
    Envelope,
    Identity,
    InvalidCertificate,
    Message,
    seal,
)
from protocol import _caps as caps
from protocol._certificate import make_proof

from .test_circle import (
    DEADLINE,
    FOUNDER,
    MEMBERS,
    T0,
    VENDOR,
    charter,
    deal_for,
    invite,
    offer,
    pledge,
)

PEOPLE = MEMBERS[:4]
VENDORS = [VENDOR, Identity.from_seed(b"\x77" * 32), Identity.from_seed(b"\x78" * 32)]


@contextlib.contextmanager
def tiny_caps() -> Iterator[None]:
    with mock.patch.multiple(
        caps,
        PLEDGE_SEQS_PER_KEY=2,
        PLEDGING_KEYS_PER_CIRCLE=3,
        VENDORS_PER_CIRCLE=2,
        CERTIFICATES_PER_KEY=1,
        CERTIFICATE_SIGNERS_PER_CIRCLE=3,
        DEALS_PER_KEY=1,
        DEAL_SIGNERS_PER_CIRCLE=2,
    ):
        yield


def build(c: Envelope[Any], envs: list[Envelope[Any]], now: int) -> CircleState:
    messages: list[Envelope[Message]] = list(envs)
    return CircleState.from_envelopes(c, messages, now=now)


def delivered(c: Envelope[Any], envs: list[Envelope[Any]], now: int) -> CircleState:
    """The state once every message has also arrived after what it depends on.

    A cap can drop a message before what would keep it arrives: a pledge
    before the deal whose certificate names it, an invite before its inviter
    is admitted (a chain of invitations is admitted one link per delivery).
    The node does not remember cap drops as refusals, so sync delivers them
    again, round after round, until nothing changes: that fixpoint is the
    state of the set.
    """
    state = CircleState(c, now=now)
    before = None
    for _ in range(len(envs) + 3):
        for env in envs:
            state.apply(env, now)
        after = state.digest()
        if after == before:
            break
        before = after
    return state


@st.composite
def capped_sets(draw: st.DrawFn) -> tuple[Envelope[Any], list[Envelope[Any]], int]:
    c = charter(target=draw(st.integers(3, 6)))
    out: list[Envelope[Any]] = []
    for vendor in draw(st.lists(st.sampled_from(VENDORS), min_size=1, max_size=4)):
        out.append(
            offer(
                c,
                vendor=vendor,
                tiers=draw(st.sampled_from([((3, 4000), (6, 3500)), ((2, 4500), (5, 3000))])),
                capacity=draw(st.integers(6, 12)),
                created=T0 + draw(st.integers(1, 4)),
            )
        )
    for who in draw(st.lists(st.sampled_from(PEOPLE), min_size=1, max_size=9)):
        out.append(
            pledge(
                c,
                who,
                seq=draw(st.integers(1, 4)),
                quantity=draw(st.integers(0, 4)),
                max_price=draw(st.sampled_from([3000, 3500, 4000, 4500])),
                created=T0 + draw(st.integers(10, 12)),
            )
        )
    # Certificates over views, sealed by named members, and deals by any vendor.
    for _ in range(draw(st.integers(0, 3))):
        view = [e for e in out if draw(st.booleans())]
        try:
            body = build(c, view, T0 + 100).certificate()
        except InvalidCertificate:
            continue
        named = [p for p in PEOPLE if p.public_key in _signers(c, view, body)]
        cert = seal(body, draw(st.sampled_from(named)))
        out.append(cert)
        vendor = next(v for v in VENDORS if _offer_signer(out, body.offer) == v.public_key)
        out.append(deal_for(cert, vendor=vendor, created=T0 + draw(st.integers(300, 302))))
    # Proofs of some same-seq pairs.
    pledges = [e for e in out if e.kind == "pledge"]
    for a in pledges:
        for b in pledges:
            same_seq = a.signer == b.signer and a.message.seq == b.message.seq
            if a.id < b.id and same_seq and draw(st.integers(0, 3)) == 0:
                out.append(seal(make_proof(a, b), draw(st.sampled_from(PEOPLE))))
    return c, out, draw(st.sampled_from([T0 + 100, DEADLINE + 10]))


def _signers(c: Envelope[Any], view: list[Envelope[Any]], body: Any) -> set[bytes]:
    by_id = {e.id: e for e in view}
    return {by_id[a.pledge].signer for a in body.allocations}


def _offer_signer(envs: list[Envelope[Any]], offer_id: bytes) -> bytes:
    return next(e.signer for e in envs if e.id == offer_id)


@settings(max_examples=200, deadline=None)
@given(capped_sets(), st.data())
def test_with_every_cap_hit_any_order_gives_the_same_state(
    scenario: tuple[Envelope[Any], list[Envelope[Any]], int], data: st.DataObject
) -> None:
    c, envs, now = scenario
    with tiny_caps():
        reference = delivered(c, envs, now)
        shuffled = data.draw(st.permutations(envs))
        extra = data.draw(st.lists(st.sampled_from(envs), max_size=3))
        other = delivered(c, [*shuffled, *extra], now)
        assert other.digest() == reference.digest()
        assert other.status is reference.status


@settings(max_examples=150, deadline=None)
@given(capped_sets(), st.data())
def test_no_party_to_a_deal_undoes_it_with_more_of_its_own_messages(
    scenario: tuple[Envelope[Any], list[Envelope[Any]], int], data: st.DataObject
) -> None:
    """The lock is the countersignature: once a deal closes the circle, newer pledges
    of its members, newer offers of its vendor and newer certificates of its
    assembler (all within the caps' reach) leave it closed."""
    c, envs, now = scenario
    with tiny_caps():
        state = delivered(c, envs, now)
        deal = state.deal
        if deal is None:
            return
        cert = next(e for e in envs if e.id == deal.message.certificate)
        members = {state.pledge(a.pledge).signer for a in cert.message.allocations}  # type: ignore[union-attr]
        more: list[Envelope[Any]] = []
        for who in PEOPLE:
            if who.public_key in members:
                for seq in range(5, 5 + data.draw(st.integers(0, 3))):
                    more.append(pledge(c, who, seq=seq, quantity=1, created=T0 + 20))
        vendor = next(v for v in VENDORS if v.public_key == deal.signer)
        for k in range(data.draw(st.integers(0, 2))):
            more.append(offer(c, vendor=vendor, created=T0 + 50 + k, capacity=7))
        # The assembler's newer certificates, and junk deals by strangers (a
        # vendor can still void its own deal: docs/circles.md, known limits).
        sealer = next(p for p in PEOPLE if p.public_key == cert.signer)
        for k in range(data.draw(st.integers(0, 2))):
            more.append(seal(replace(cert.message, created=cert.message.created + 1 + k), sealer))
        # Junk deals can only crowd out the deal of a vendor that has no counted
        # offer (pushed out of the vendor cap by other vendor keys): a known limit
        # of per-circle caps against throwaway keys (docs/protocol.md, Caps).
        if deal.signer in state._offer_of:
            for k in range(data.draw(st.integers(0, 3))):
                junk = Identity.from_seed(bytes([0x90 + k]) * 32)
                more.append(deal_for(cert, vendor=junk, created=T0 + 300))

        later = delivered(c, [*envs, *more], now)
        assert later.status is CircleStatus.CLOSED
        assert later.deal is not None and later.deal.id == deal.id


@st.composite
def invite_sets(draw: st.DrawFn) -> tuple[Envelope[Any], list[Envelope[Any]], int]:
    """An invite-only circle where members invite, with the invite caps hit."""
    c = charter(target=3, invite_only=True, members_invite=True)
    everyone = [FOUNDER, *PEOPLE, *EXTRA]
    out: list[Envelope[Any]] = [offer(c, tiers=((3, 4000),), capacity=20)]
    for _ in range(draw(st.integers(1, 10))):
        by = draw(st.sampled_from(everyone))
        who = draw(st.sampled_from(everyone))
        out.append(invite(c, by, who))
    for who in draw(st.lists(st.sampled_from(everyone), max_size=5)):
        out.append(pledge(c, who, quantity=draw(st.integers(1, 3))))
    return c, out, T0 + 100


EXTRA = [Identity.from_seed(bytes([0x50 + i]) * 32) for i in range(3)]


@settings(max_examples=200, deadline=None)
@given(invite_sets(), st.data())
def test_invite_caps_keep_the_state_a_function_of_the_set(
    scenario: tuple[Envelope[Any], list[Envelope[Any]], int], data: st.DataObject
) -> None:
    c, envs, now = scenario
    with mock.patch.multiple(caps, INVITES_PER_KEY=1, INVITERS_PER_CIRCLE=2):
        reference = delivered(c, envs, now)
        other = delivered(c, data.draw(st.permutations(envs)), now)
        assert other.digest() == reference.digest()
        assert other.members() == reference.members()
