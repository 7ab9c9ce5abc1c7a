"""Open requests for quote under their caps (protocol.RfqLog): per key the newest,
per circle the keys that stand first, then the lottery; the kept set is a function
of the set of requests (any order) and of who stands."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import CircleState, Envelope, Identity, QuoteRequest, RfqLog, seal
from protocol import _caps as caps
from protocol._caps import lottery_rank

from .test_circle import FOUNDER, MEMBERS, T0, charter, pledge

CHARTER = charter()
KEYS = [Identity.from_seed(bytes([100 + i]) * 32) for i in range(24)]


def rfq(
    who: Identity,
    *,
    created: int = T0 + 20,
    product: str = "Olive oil",
    circle: bytes = CHARTER.id,
    vendor: bytes | None = None,
    currency: str = "EUR",
) -> Envelope[QuoteRequest]:
    return seal(
        QuoteRequest(
            circle=circle,
            vendor=vendor,
            product=product,
            quantity=10,
            currency=currency,
            respond_by=created + 60,
            deadline=created + 600,
            max_rounds=10,
            created=created,
        ),
        who,
    )


def nobody(_key: bytes) -> bool:
    return False


def kept(log: RfqLog) -> set[bytes]:
    return {env.id for env in log.requests()}


def fill(envs: list[Envelope[Any]], stands: Any = nobody) -> RfqLog:
    log = RfqLog(CHARTER)
    for env in envs:
        log.add(env, stands)
    return log


def test_a_key_keeps_its_newest_request_only() -> None:
    older, newer = rfq(KEYS[0], created=T0 + 20), rfq(KEYS[0], created=T0 + 30)
    log = RfqLog(CHARTER)
    assert log.add(older, nobody) is None
    assert log.add(newer, nobody) is None
    assert log.take_dropped() == [older.id]
    refused = log.add(older, nobody)  # sync brings it back: dropped again at once
    assert refused is not None and refused.reason == "superseded"
    assert log.take_dropped() == [older.id]
    assert kept(log) == {newer.id} and len(log) == 1 and newer.id in log
    # Same second: the larger id is the newer.
    a, b = rfq(KEYS[1], product="a"), rfq(KEYS[1], product="b")
    assert kept(fill([a, b])) & {a.id, b.id} == {max(a.id, b.id)}


def test_many_keys_keep_the_lottery_winners() -> None:
    envs = [rfq(key) for key in KEYS]
    log = fill(envs)
    assert len(log) == caps.RFQ_SIGNERS_PER_CIRCLE
    winners = sorted(KEYS, key=lambda k: lottery_rank(CHARTER.id, k.public_key))
    expected = {rfq(k).id for k in winners[: caps.RFQ_SIGNERS_PER_CIRCLE]}
    assert kept(log) == expected
    assert set(log.take_dropped()) == {e.id for e in envs} - expected
    loser = winners[-1]
    refused = log.add(rfq(loser), nobody)
    assert refused is not None and refused.reason == "circle-full"


def test_the_founder_and_pledging_members_are_not_crowded_out() -> None:
    member = MEMBERS[0]
    state = CircleState.from_envelopes(CHARTER, [pledge(CHARTER, member)], now=T0 + 30)
    stands = RfqLog.standing(state)
    assert stands(FOUNDER.public_key) and stands(member.public_key)
    assert not stands(KEYS[0].public_key)
    ours = [rfq(FOUNDER), rfq(member)]
    # Throwaway keys first, then ours: ours still displace two of them.
    log = fill([rfq(k) for k in KEYS] + ours, stands)
    assert {e.id for e in ours} <= kept(log)
    assert len(log) == caps.RFQ_SIGNERS_PER_CIRCLE
    # A withdrawal takes the standing away (for who gives way next).
    withdrawn = CircleState.from_envelopes(
        CHARTER,
        [pledge(CHARTER, member), pledge(CHARTER, member, seq=2, quantity=0)],
        now=T0 + 30,
    )
    assert not RfqLog.standing(withdrawn)(member.public_key)


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        (rfq(KEYS[0], vendor=KEYS[1].public_key), "not-open-rfq"),
        (rfq(KEYS[0], circle=b"\x09" * 32), "unknown-circle"),
        (rfq(KEYS[0], currency="USD"), "wrong-currency"),
        (pledge(CHARTER, KEYS[0]), "not-open-rfq"),
    ],
)
def test_what_is_no_open_request_of_the_circle_is_refused(env: Envelope[Any], reason: str) -> None:
    log = RfqLog(CHARTER)
    refused = log.add(env, nobody)
    assert refused is not None and refused.reason == reason
    assert len(log) == 0 and log.take_dropped() == []


# A few keys, a few requests each: both caps are reached with the real numbers.
REQUESTS = [
    rfq(key, created=T0 + 20 + dt, product=f"lot {n}")
    for key in KEYS[:20]
    for dt in (0, 5)
    for n in range(2)
]


@settings(max_examples=200, deadline=None)
@given(
    chosen=st.lists(st.sampled_from(REQUESTS), min_size=1, max_size=60),
    order=st.randoms(use_true_random=False),
    standing=st.sets(st.sampled_from([k.public_key for k in KEYS[:20]]), max_size=20),
)
def test_the_kept_set_is_a_function_of_the_set(
    chosen: list[Envelope[QuoteRequest]], order: Any, standing: set[bytes]
) -> None:
    """Any order of a set of requests (repeats included) keeps the same requests:
    each kept key's newest, of the best keys by (standing first, lottery)."""
    shuffled = list(chosen)
    order.shuffle(shuffled)
    stands = standing.__contains__
    one, other = fill(chosen, stands), fill(shuffled, stands)
    assert kept(one) == kept(other)
    # Stated directly: the best keys, each with its newest request.
    newest: dict[bytes, Envelope[QuoteRequest]] = {}
    for env in chosen:
        mine = newest.get(env.signer)
        if mine is None or (env.message.created, env.id) > (mine.message.created, mine.id):
            newest[env.signer] = env
    best = sorted(newest, key=lambda k: (k not in standing, lottery_rank(CHARTER.id, k)))
    assert kept(one) == {newest[k].id for k in best[: caps.RFQ_SIGNERS_PER_CIRCLE]}
    # What was dropped is exactly what is not kept (a copy delivered again is
    # dropped again: the node discards it again).
    assert set(one.take_dropped()) == {e.id for e in chosen} - kept(one)


@settings(max_examples=100, deadline=None)
@given(
    chosen=st.lists(st.sampled_from(REQUESTS), min_size=1, max_size=60),
    split=st.integers(0, 60),
    before=st.sets(st.sampled_from([k.public_key for k in KEYS[:20]]), max_size=20),
    after=st.sets(st.sampled_from([k.public_key for k in KEYS[:20]]), max_size=20),
)
def test_two_peers_agree_once_their_standing_does(
    chosen: list[Envelope[QuoteRequest]], split: int, before: set[bytes], after: set[bytes]
) -> None:
    """Two peers took their requests while standing differed; exchanging what each
    kept (as sync does) under the standing they now share ends on one kept set."""
    a = fill(chosen[:split], before.__contains__)
    b = fill(chosen[split:], after.__contains__)
    a_held, b_held = a.requests(), b.requests()
    for env in b_held:
        a.add(env, after.__contains__)
    for env in a_held:
        b.add(env, after.__contains__)
    assert kept(a) == kept(b)
