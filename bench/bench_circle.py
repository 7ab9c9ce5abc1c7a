"""Circle-state benchmark (issue 3): each figure is a time ratio against a same-run baseline.

Run ``python bench/bench_circle.py`` for a table, ``--json`` for one JSON object,
``--large N`` to change the large circle's size (default 100,000).

Figures (time of the candidate / time of its baseline, lower is better):

- apply one pledge to a circle with N live pledges, against the same at 100
  live pledges: the issue asks for <= 3 (O(log n), not a rebuild). The pledge
  applied supersedes a live one (a member raising or lowering), so the
  circle keeps its size while it is timed; a vendor offer is present, so
  every apply also re-derives the clearing;
- decode 1,000 pledge envelopes with ``circles.verify_batch`` (every core)
  and run ``verify_certificate`` on them, against verifying the same 1,000
  signatures serially with raw PyNaCl: target <= 0.6;
- ``verify_certificate`` on 1,000 pledges already verified on arrival,
  against the same serial raw verify: target <= 0.05.

Costs independent of what is held (issue 11), each against the same work
on a state holding one of the thing:

- apply a pledge (superseding a live one) with 1,000 offers held, one per
  vendor key, against the same with 1 offer held: target <= 2;
- apply an invite and the invitee's pledge (both make the state look at its
  deals again) with 1,000 deals held, against the same with 1 deal: target <= 2;
- re-pledge at seq 10,000 (a key that signed seqs 1..10,000) against
  re-pledging at seq 10: target <= 2;
- state bytes per live pledge / envelope bytes: ``tracemalloc`` over building
  a state of N pledges from distinct keys, each copied from its bytes (as
  bytes read from the network are new) and decoded inside the traced span
  and handed to ``apply`` (the bench keeps no reference), so the count is
  everything the state keeps alive for a pledge: its records, indexes and
  whatever part of the envelope it holds, the bytes included; divided by N
  and by the envelopes' mean length in bytes: target <= 4. Python's dicts
  grow in steps, so the figure moves with N (tests/bench run it at 2,000;
  docs/benchmarks.md gives it at 100,000, the circle's key cap, too).

Each figure is timed in several rounds, candidate and baseline back to back;
the figure uses the fastest round of each, and the range of per-round ratios
shows how noisy the machine was.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

# The same raw baselines as the protocol benchmark (this script's folder is on
# the import path when it runs).
from bench_protocol import raw_verify_all, raw_verify_threads

from circles import verify_batch
from protocol import (
    Charter,
    CircleState,
    Deal,
    Envelope,
    Identity,
    Invite,
    Message,
    Offer,
    Pledge,
    Tier,
    decode,
    decode_unverified,
    seal,
    verify_certificate,
)
from protocol._caps import DEALS_PER_KEY

T0 = 1_700_000_000
SMALL = 100
CERT_PLEDGES = 1000


#: A state and, per timed round, the envelopes to apply to it.
Setup = tuple[CircleState, list[list[Envelope[Message]]]]


def timed(run: Callable[[], object], operations: int) -> float:
    """Microseconds per operation for one call of ``run``."""
    gc.disable()
    try:
        start = time.perf_counter()
        run()
        return (time.perf_counter() - start) * 1e6 / operations
    finally:
        gc.enable()


def widened(envelope: Envelope[Any]) -> Envelope[Message]:
    """``envelope`` typed as CircleState.apply takes it.

    Envelope is invariant in its message type, so mypy refuses an
    Envelope[Pledge] where an Envelope[Message] is asked for; nothing changes
    at run time.
    """
    return envelope


def identities(n: int, tag: bytes) -> list[Identity]:
    return [Identity.from_seed(hashlib.sha256(tag + b"%d" % i).digest()) for i in range(n)]


def make_charter(target: int) -> Envelope[Charter]:
    return seal(
        Charter(
            title="Bench circle",
            unit="unit",
            target=target,
            currency="EUR",
            ceiling=None,
            deadline=T0 + 10**6,
            place=None,
            tags=(),
            invite_only=False,
            members_invite=False,
            on_miss="expire",
            created=T0,
        ),
        Identity.from_seed(b"\x07" * 32),
    )


def make_offer(circle: Envelope[Charter], min_q: int, capacity: int) -> Envelope[Offer]:
    return seal(
        Offer(
            circle=circle.id,
            product="bench",
            currency="EUR",
            list_price=5000,
            tiers=(
                Tier(min_quantity=min_q, unit_price=4000),
                Tier(min_quantity=2 * min_q, unit_price=3500),
                Tier(min_quantity=4 * min_q, unit_price=3000),
            ),
            capacity=capacity,
            valid_until=T0 + 10**6,
            terms="",
            loyalty=(),
            in_reply_to=None,
            created=T0,
        ),
        Identity.from_seed(b"\x08" * 32),
    )


def make_pledge(circle: Envelope[Charter], who: Identity, seq: int, i: int) -> Envelope[Pledge]:
    return seal(
        Pledge(
            circle=circle.id,
            seq=seq,
            quantity=1 + i % 3,
            max_price=3000 + 50 * (i % 25),
            currency="EUR",
            tolerance=i % 2,
            created=T0 + 1 + (i * 7919) % 5000,
        ),
        who,
    )


def apply_setup(n: int, ops: int, rounds: int) -> Setup:
    """A circle with ``n`` live pledges and, per round, ``ops`` superseding pledges."""
    circle = make_charter(target=n)
    members = identities(n, b"member")
    # Demand is about 2n units: the capacity cut and the tiers are both exercised.
    state = CircleState(circle, now=T0 + 10)
    state.apply(widened(make_offer(circle, max(1, n // 2), capacity=n + n // 2)), T0 + 10)
    for i, who in enumerate(members):
        state.apply(widened(make_pledge(circle, who, 1, i)), T0 + 10)
    batches = []
    for r in range(rounds):
        # Widened here, not in the timed loop, so the figure holds only apply().
        batch = []
        for k in range(ops):
            i = (r * ops + k) % n
            pledge = make_pledge(circle, members[i], 2 + (r * ops + k) // n, i + r + 1)
            batch.append(widened(pledge))
        batches.append(batch)
    return state, batches


def apply_all(state: CircleState, batch: list[Envelope[Message]]) -> None:
    apply = state.apply
    for env in batch:
        apply(env, T0 + 10)


def figure(
    name: str,
    baseline: str,
    pairs: list[tuple[float, float]],
    target: float,
) -> dict[str, Any]:
    candidate = min(c for c, _ in pairs)
    base = min(b for _, b in pairs)
    ratios = [c / b for c, b in pairs]
    return {
        "name": name,
        "baseline": baseline,
        "micros": round(candidate, 3),
        "baseline_micros": round(base, 3),
        "ratio": round(candidate / base, 4),
        "ratio_low": round(min(ratios), 4),
        "ratio_high": round(max(ratios), 4),
        "target": target,
        "passed": candidate / base <= target,
    }


def measure_apply(large: int, rounds: int) -> dict[str, Any]:
    ops = 1000
    small_state, small_batches = apply_setup(SMALL, ops, rounds)
    large_state, large_batches = apply_setup(large, ops, rounds)
    pairs = []
    for r in range(rounds):
        b = timed(lambda r=r: apply_all(small_state, small_batches[r]), ops)  # type: ignore[misc]
        c = timed(lambda r=r: apply_all(large_state, large_batches[r]), ops)  # type: ignore[misc]
        pairs.append((c, b))
    return figure(
        f"apply one pledge, {large:,} live", f"apply one pledge, {SMALL} live", pairs, 3.0
    )


def measure_certificate(rounds: int) -> list[dict[str, Any]]:
    circle = make_charter(target=CERT_PLEDGES)
    members = identities(CERT_PLEDGES, b"cert")
    offer = make_offer(circle, CERT_PLEDGES, capacity=10 * CERT_PLEDGES)
    pledges = [
        seal(
            Pledge(
                circle=circle.id,
                seq=1,
                quantity=2,
                max_price=4000,
                currency="EUR",
                tolerance=0,
                created=T0 + 1 + i,
            ),
            who,
        )
        for i, who in enumerate(members)
    ]
    state = CircleState.from_envelopes(
        circle, [widened(offer), *map(widened, pledges)], now=T0 + 5000
    )
    certificate = seal(state.certificate(), members[0])
    assert len(certificate.message.allocations) == CERT_PLEDGES
    datas = [bytes(bytearray(p.data)) for p in pledges]
    raw = [(u.signer, u.signed_payload(), u.signature) for u in map(decode_unverified, datas)]

    def raw_serial() -> None:
        raw_verify_all(raw)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1

    def raw_parallel() -> None:
        # The hardware's bound for "from bytes": raw verify split over every core.
        raw_verify_threads(raw, cores)

    def already_verified() -> None:
        verify_certificate(certificate, charter=circle, offer=offer, pledges=pledges)

    def from_bytes() -> None:
        envelopes = verify_batch(datas, workers=None)
        verify_certificate(
            certificate,
            charter=circle,
            offer=offer,
            pledges=envelopes,  # type: ignore[arg-type]
        )

    out = []
    verified = []
    fresh = []
    hardware = []
    for _ in range(rounds):
        base = timed(raw_serial, CERT_PLEDGES)
        verified.append((timed(already_verified, CERT_PLEDGES), base))
        hardware.append((timed(raw_parallel, CERT_PLEDGES), base))
        fresh.append((timed(from_bytes, CERT_PLEDGES), base))
    name = f"verify_certificate, {CERT_PLEDGES} pledges"
    baseline = f"raw PyNaCl verify of {CERT_PLEDGES}, serial"
    out.append(figure(name + " from bytes (verify_batch)", baseline, fresh, 0.6))
    out.append(figure(name + ", already verified", baseline, verified, 0.05))
    context = figure(f"context: raw verify on {cores} threads", baseline, hardware, 1.0)
    context["target"] = None
    context["passed"] = True
    out.append(context)
    return out


# ------------------------------------------------- costs independent of what is held

HELD_MEMBERS = 50
HELD_OPS = 200


def vendor_offer(circle: Envelope[Charter], vendor: Identity, i: int) -> Envelope[Offer]:
    """An offer whose tiers vary a little by ``i`` (vendors compete)."""
    shift = 10 * (i % 37)
    return seal(
        Offer(
            circle=circle.id,
            product="bench",
            currency="EUR",
            list_price=5000,
            tiers=(
                Tier(min_quantity=20, unit_price=4000 + shift),
                Tier(min_quantity=40, unit_price=3500 + shift),
                Tier(min_quantity=80, unit_price=3000 + shift),
            ),
            capacity=200 + i % 50,
            valid_until=T0 + 10**6,
            terms="",
            loyalty=(),
            in_reply_to=None,
            created=T0 + i % 97,
        ),
        vendor,
    )


def offers_setup(offers: int, rounds: int, ops: int) -> Setup:
    circle = make_charter(target=30)
    members = identities(HELD_MEMBERS, b"offers-member")
    vendors = identities(offers, b"offers-vendor")
    state = CircleState(circle, now=T0 + 10)
    for i, vendor in enumerate(vendors):
        state.apply(widened(vendor_offer(circle, vendor, i)), T0 + 10)
    for i, who in enumerate(members):
        state.apply(widened(make_pledge(circle, who, 1, i)), T0 + 10)
    batches = [
        [
            widened(make_pledge(circle, members[k % HELD_MEMBERS], 2 + r * ops + k, k + r))
            for k in range(ops)
        ]
        for r in range(rounds)
    ]
    return state, batches


def paired_rounds(base: Setup, candidate: Setup, ops: int) -> list[tuple[float, float]]:
    """(candidate, baseline) seconds per op for each round, timed back to back."""
    (low, low_batches), (high, high_batches) = base, candidate
    pairs = []
    for r in range(len(low_batches)):
        b = timed(lambda r=r: apply_all(low, low_batches[r]), ops)  # type: ignore[misc]
        c = timed(lambda r=r: apply_all(high, high_batches[r]), ops)  # type: ignore[misc]
        pairs.append((c, b))
    return pairs


def measure_offers(held: int, rounds: int, ops: int = HELD_OPS) -> dict[str, Any]:
    many = offers_setup(held, rounds, ops)
    pairs = paired_rounds(offers_setup(1, rounds, ops), many, ops)
    # The caps decide how many of the offers sent a circle holds: say so.
    return figure(
        f"apply a pledge, {held:,} offers sent ({len(many[0]._offers):,} held: the vendor cap)",
        "apply a pledge, 1 offer held",
        pairs,
        2.0,
    )


def deals_setup(deals: int, rounds: int, ops: int) -> Setup:
    """An invite-only circle closed by ``deals`` deals; per round, invites and pledges."""
    founder = Identity.from_seed(b"\x07" * 32)
    vendor = Identity.from_seed(b"\x08" * 32)
    circle = seal(
        Charter(
            title="Bench circle",
            unit="unit",
            target=30,
            currency="EUR",
            ceiling=None,
            deadline=T0 + 10**6,
            place=None,
            tags=(),
            invite_only=True,
            members_invite=False,
            on_miss="expire",
            created=T0,
        ),
        founder,
    )
    members = identities(HELD_MEMBERS, b"deals-member")
    state = CircleState(circle, now=T0 + 10)
    state.apply(widened(vendor_offer(circle, vendor, 0)), T0 + 10)
    for i, who in enumerate(members):
        state.apply(widened(invite_of(circle, founder, who)), T0 + 10)
        state.apply(widened(make_pledge(circle, who, 1, i)), T0 + 10)
    body = state.certificate()
    certificates = [seal(body, who) for who in members]
    for cert in certificates:
        state.apply(widened(cert), T0 + 10)
    # Spread over as many signers as the caps need to hold the most deals they
    # allow: DEALS_PER_KEY each, the vendor first, then other keys.
    signers = [vendor, *identities(deals // DEALS_PER_KEY + 1, b"deals-signer")]
    for i in range(deals):
        named = certificates[i % len(certificates)].message
        deal = Deal(
            circle=circle.id,
            certificate=certificates[i % len(certificates)].id,
            unit_price=named.unit_price,
            currency=named.currency,
            total=named.total,
            created=T0 + 500 + i // len(certificates),
        )
        state.apply(widened(seal(deal, signers[i // DEALS_PER_KEY])), T0 + 10)
    fresh = identities(rounds * ops, b"deals-fresh")
    batches = []
    for r in range(rounds):
        batch: list[Envelope[Message]] = []
        for k in range(ops):
            who = fresh[r * ops + k]
            batch.append(widened(invite_of(circle, founder, who)))
            batch.append(widened(make_pledge(circle, who, 1, k)))
        batches.append(batch)
    return state, batches


def invite_of(circle: Envelope[Charter], by: Identity, who: Identity) -> Envelope[Invite]:
    return seal(
        Invite(circle=circle.id, invitee=who.public_key, sealed_key=None, created=T0 + 1), by
    )


def measure_deals(held: int, rounds: int, ops: int = HELD_OPS) -> dict[str, Any]:
    many = deals_setup(held, rounds, ops)
    pairs = paired_rounds(deals_setup(1, rounds, ops), many, 2 * ops)
    return figure(
        f"apply an invite or a pledge, {held:,} deals sent ({len(many[0]._deals):,} held)",
        "apply an invite or a pledge, 1 deal held",
        pairs,
        2.0,
    )


def reseq_setup(seqs: int, rounds: int, ops: int) -> Setup:
    """A circle where one key signed seqs 1..``seqs``; per round, its next pledges."""
    circle = make_charter(target=30)
    members = identities(HELD_MEMBERS, b"reseq-member")
    state = CircleState(circle, now=T0 + 10)
    state.apply(widened(make_offer(circle, 10, capacity=500)), T0 + 10)
    for i, who in enumerate(members):
        state.apply(widened(make_pledge(circle, who, 1, i)), T0 + 10)
    busy = members[0]
    for seq in range(2, seqs + 1):
        state.apply(widened(make_pledge(circle, busy, seq, seq)), T0 + 10)
    batches = [
        [widened(make_pledge(circle, busy, seqs + 1 + r * ops + k, k)) for k in range(ops)]
        for r in range(rounds)
    ]
    return state, batches


def measure_reseq(seqs: int, rounds: int, ops: int = HELD_OPS) -> dict[str, Any]:
    pairs = paired_rounds(reseq_setup(10, rounds, ops), reseq_setup(seqs, rounds, ops), ops)
    return figure(f"re-pledge at seq {seqs:,}", "re-pledge at seq 10", pairs, 2.0)


def state_bytes(n: int) -> tuple[float, float]:
    """(bytes the state keeps per live pledge, mean envelope bytes) for ``n`` keys."""
    circle = make_charter(target=n)
    datas = [
        bytes(make_pledge(circle, who, 1, i).data)
        for i, who in enumerate(identities(n, b"bytes-member"))
    ]
    envelope_bytes = sum(map(len, datas)) / n
    gc.collect()
    tracemalloc.start()
    try:
        state = CircleState(circle, now=T0 + 10)
        apply = state.apply
        for data in datas:
            # A copy made in the span: a state that kept the envelope's bytes
            # would be charged for them, as a node's state is.
            apply(decode(bytes(bytearray(data))), T0 + 10)
        gc.collect()
        kept, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(state.live_pledges()) == n
    return kept / n, envelope_bytes


def measure_bytes(n: int) -> dict[str, Any]:
    per_pledge, envelope = state_bytes(n)
    ratio = per_pledge / envelope
    return {
        "name": f"state bytes per live pledge, {n:,} keys",
        "baseline": "the pledge envelope's bytes",
        "micros": round(per_pledge, 1),
        "baseline_micros": round(envelope, 1),
        "ratio": round(ratio, 4),
        "ratio_low": round(ratio, 4),
        "ratio_high": round(ratio, 4),
        "target": 4.0,
        "passed": ratio <= 4.0,
        "unit": "bytes",
    }


def held_figures(held: int, seqs: int, pledges: int, rounds: int) -> list[dict[str, Any]]:
    """The issue 11 figures: costs that must not grow with what a state holds."""
    return [
        measure_offers(held, rounds),
        measure_deals(held, rounds),
        measure_reseq(seqs, rounds),
        measure_bytes(pledges),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=100_000, help="live pledges, large circle")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per figure")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--held", type=int, default=1000, help="offers and deals held")
    parser.add_argument("--seqs", type=int, default=10_000, help="a key's seqs, re-pledge")
    parser.add_argument("--pledges", type=int, default=10_000, help="pledges, state bytes")
    parser.add_argument("--only-held", action="store_true", help="only the issue 11 figures")
    args = parser.parse_args(argv)
    figures = held_figures(args.held, args.seqs, args.pledges, args.rounds)
    if not args.only_held:
        figures = [
            measure_apply(args.large, args.rounds),
            *measure_certificate(args.rounds),
            *figures,
        ]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if args.json:
        print(json.dumps({"cores": cores, "figures": figures}))
    else:
        print(f"circle benchmark ({cores} cores; ratio = candidate time / baseline time)")
        for f in figures:
            verdict = "ok" if f["passed"] else "MISSED"
            unit = f.get("unit", "us/op")
            if f["target"] is None:
                verdict = "(context: what the hardware allows)"
            print(
                f"  {f['name']:<58} {f['ratio']:7.3f}  (target <= {f['target']}, "
                f"rounds {f['ratio_low']:.3f}..{f['ratio_high']:.3f}) {verdict}\n"
                f"      {f['micros']:10.2f} {unit} vs {f['baseline']}: "
                f"{f['baseline_micros']:.2f} {unit}"
            )
    return 0 if all(f.get("passed", True) for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
