"""The circle state keeps a compact record per pledge and rebuilds envelopes from it.

Whatever it hands out (``pledge``, ``live_pledges``, ``certificate_inputs``,
certificates, equivocation proofs) must be the very envelope applied: the
same bytes, id, signature and message, so peers and signatures never see a
difference (issue 11, state bytes per pledge).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    CircleState,
    Envelope,
    Message,
    Pledge,
    decode,
    seal,
    verify_certificate,
    verify_misbehaviour,
)
from protocol._messages import MAX_MONEY, MAX_QUANTITY, MAX_SEQ, MAX_TIME
from protocol._quorum import priority_key, unpack_position

from .test_circle import MEMBERS, T0, charter, offer

# Far deadline: pledges made before and after it are both held.
DEADLINE = T0 + 10**6
CIRCLE = charter(deadline=DEADLINE, target=3)


@given(st.integers(0, MAX_MONEY), st.integers(0, MAX_TIME))
def test_priority_key_is_its_definition_and_unpacks(max_price: int, created: int) -> None:
    position = priority_key(max_price, created)
    assert position == (((MAX_MONEY - max_price) << 41) | created) + 1
    assert unpack_position(position) == (max_price, created)


@st.composite
def pledges(draw: st.DrawFn) -> list[Envelope[Pledge]]:
    out = []
    for _ in range(draw(st.integers(1, 8))):
        quantity = draw(st.sampled_from([0, 1, 3, 255, 256, 257, 10**6, MAX_QUANTITY]))
        withdrawal = quantity == 0
        out.append(
            seal(
                Pledge(
                    circle=CIRCLE.id,
                    seq=draw(st.sampled_from([1, 2, 3, 300, MAX_SEQ])),
                    quantity=quantity,
                    max_price=0 if withdrawal else draw(st.sampled_from([1, 4000, MAX_MONEY])),
                    currency="EUR",
                    tolerance=0 if withdrawal else draw(st.sampled_from([0, 2, 1000])),
                    created=draw(st.sampled_from([0, T0 + 10, DEADLINE, DEADLINE + 1, MAX_TIME])),
                ),
                MEMBERS[draw(st.integers(0, 3))],
            )
        )
    return out


def _same(got: Envelope[Any] | None, applied: Envelope[Any]) -> None:
    assert got is not None
    assert (got.id, got.data, got.signer, got.signature) == (
        applied.id,
        applied.data,
        applied.signer,
        applied.signature,
    )
    assert got.message == applied.message
    assert decode(got.data) == applied


@settings(max_examples=60, deadline=None)
@given(pledges())
def test_every_pledge_handed_out_is_the_envelope_applied(envs: list[Envelope[Pledge]]) -> None:
    vendor_offer = offer(CIRCLE, tiers=((3, 4000), (6, 1)), capacity=MAX_QUANTITY)
    applied: list[Envelope[Message]] = [vendor_offer, *envs]
    state = CircleState.from_envelopes(CIRCLE, applied, now=T0 + 100)
    by_id = {e.id: e for e in envs}
    held = [e for e in envs if state.pledge(e.id) is not None]
    assert held, "every set holds at least one pledge (caps keep 16 seqs, 2 per seq)"
    for env in held:
        _same(state.pledge(env.id), env)
    live_all = state.live_pledges()
    for member, live in live_all.items():
        assert live.signer == member
        _same(live, by_id[live.id])
    for member in {e.signer for e in envs}:
        one = state.live_pledge(member)
        assert (None if one is None else one.id) == (
            live_all[member].id if member in live_all else None
        )
    for member, proof in state.equivocators().items():
        first, second = verify_misbehaviour(proof)
        assert first.signer == member
        _same(first, by_id[first.id])
        _same(second, by_id[second.id])
    try:
        body = state.certificate()
    except Exception:  # no quorum in this set: nothing more to hand out
        return
    inputs = state.certificate_inputs(body)
    # Sealed by a member it names, as the rule asks.
    sealer = next(m for m in MEMBERS if m.public_key == inputs["pledges"][0].signer)
    cert = seal(body, sealer)
    for pledge in inputs["pledges"]:
        _same(pledge, by_id[pledge.id])
    verify_certificate(cert, **inputs)
