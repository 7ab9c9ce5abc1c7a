"""Caps (issue 11): what a circle keeps is bounded per key, and still a function of the set."""

from __future__ import annotations

import random

from protocol import CircleState, Envelope, Message, Misbehaviour, seal
from protocol._caps import PLEDGE_SEQS_PER_KEY, VENDORS_PER_CIRCLE

from .test_circle import MEMBERS, T0, Identity, charter, offer, pledge


def _apply_all(envs: list[Envelope[Message]]) -> tuple[CircleState, list[bytes]]:
    circle = charter()
    state = CircleState(circle, now=T0 + 100)
    dropped: list[bytes] = []
    for env in envs:
        state.apply(env, T0 + 100)
        dropped += state.take_dropped()
    return state, dropped


def test_a_key_keeps_its_highest_seqs_in_every_order() -> None:
    circle = charter()
    envs: list[Envelope[Message]] = [
        pledge(circle, MEMBERS[0], seq=s, quantity=1 + s % 3) for s in range(1, 60)
    ]
    envs.append(pledge(circle, MEMBERS[1], quantity=4))
    digests = set()
    for seed in range(4):
        random.Random(seed).shuffle(envs)
        state, dropped = _apply_all(envs)
        digests.add(state.digest())
        assert len(dropped) == 59 - PLEDGE_SEQS_PER_KEY
        live = state.live_pledges()[MEMBERS[0].public_key]
        assert live.message.seq == 59
    assert len(digests) == 1


def test_one_offer_per_vendor_and_a_bounded_number_of_vendors() -> None:
    circle = charter()
    vendors = [
        Identity.from_seed(bytes([200, i]) + b"\0" * 30) for i in range(VENDORS_PER_CIRCLE + 6)
    ]
    envs: list[Envelope[Message]] = [
        offer(circle, vendor=v, created=T0 + 5 + k) for v in vendors for k in range(2)
    ]
    digests = set()
    for seed in range(3):
        random.Random(seed).shuffle(envs)
        state, dropped = _apply_all(envs)
        digests.add(state.digest())
        assert len(dropped) == len(envs) - VENDORS_PER_CIRCLE
    assert len(digests) == 1


def test_proofs_that_differ_only_in_created_keep_one() -> None:
    circle = charter()
    a = pledge(circle, MEMBERS[2], quantity=1)
    b = pledge(circle, MEMBERS[2], quantity=2)
    proofs: list[Envelope[Message]] = [
        seal(
            Misbehaviour(
                offender=MEMBERS[2].public_key, first=a.data, second=b.data, created=T0 + k
            ),
            MEMBERS[3],
        )
        for k in range(10)
    ]
    digests = set()
    for seed in range(3):
        random.Random(seed).shuffle(proofs)
        state, dropped = _apply_all(proofs)
        digests.add(state.digest())
        assert len(dropped) == 9
        assert MEMBERS[2].public_key in state.equivocators()
    assert len(digests) == 1


def test_only_the_founder_invites_where_members_may_not_and_others_are_not_kept() -> None:
    """Decided by the charter alone, so no stranger's invites pile up in the log."""
    from .test_circle import FOUNDER, invite

    club = charter(invite_only=True, members_invite=False)
    state = CircleState(club, now=T0 + 100)
    events = state.apply(invite(club, MEMBERS[0], MEMBERS[1]), T0 + 100)
    assert [e.reason for e in events if hasattr(e, "reason")] == ["may-not-invite"]
    assert len(state.take_dropped()) == 1
    state.apply(invite(club, FOUNDER, MEMBERS[0]), T0 + 100)
    assert state.take_dropped() == []
    assert MEMBERS[0].public_key in state.members()
    # The founder's invitee still may not invite (members_invite is off).
    state.apply(invite(club, MEMBERS[0], MEMBERS[1]), T0 + 100)
    assert MEMBERS[1].public_key not in state.members()
    assert len(state.take_dropped()) == 1
