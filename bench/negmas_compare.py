"""Ours against NegMAS (issue 6): one bilateral alternating-offers negotiation, both libraries.

Run ``python bench/negmas_compare.py`` (``--seconds`` per figure per round,
``--rounds``, ``--json``). NegMAS is an optional ``bench`` extra
(``pip install 'negmas>=0.16'``), never a runtime dependency; without it this
script says so and exits 0.

The negotiation: 100 steps, a Boulware buyer against a conceder seller, one
issue (unit price 0..100; ours 1..100, since a price is at least one minor
unit), linear utilities. NegMAS runs ``SAOMechanism(n_steps=100)`` with
``BoulwareTBNegotiator`` (buyer) and ``ConcederTBNegotiator`` (seller).

What "the same negotiation" means here: in a NegMAS step *every* negotiator
acts once, so 100 steps allow 200 offers and both sides concede over 100 of
their own offers. Ours is configured the same way: the vendor's opening offer
and 199 counter-offers (``max_rounds=199``), each side conceding by
``TimeDependent`` over its own ~100 offers (``e=0.2`` for the circle,
``e=5`` for the vendor). Both then agree after about 120 offers; the script
prints both counts and both agreements so the framing can be checked, and
the figures are negotiations per second *and* offers per second.

Ours runs ``circles.simulate``: the protocol's Negotiation machine, every
move built, sealed into a signed envelope, decoded and checked by the
machine. It runs twice: every move really signed and verified (ed25519), and
with modelled signatures (``circles.sim.modelled_signatures``). Rounds
alternate so machine noise hits every figure.

Two ceilings are timed in the same run, to show what no implementation of
ours on this machine could beat: with ed25519, one PyNaCl sign plus one
PyNaCl verify per move (nothing else); with modelled signatures, one
``protocol.seal`` plus one ``protocol.decode`` of a counter-offer per move
(the wire format alone, nothing of the machine or the strategies).
Issue 6's targets: >= 10x NegMAS modelled, >= 3x signed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0]) == _HERE:
    sys.path.pop(0)

#: NegMAS's step count, and ours: the opening offer plus this many counter-offers.
STEPS = 100
MAX_ROUNDS = 2 * STEPS - 1

Result = tuple[int | None, int]
"""(agreed unit price or None, offers made) of one negotiation."""


def ours(modelled: bool) -> Callable[[int], Any]:
    import protocol
    from circles import TimeDependent, simulate
    from circles.sim import modelled_signatures

    buyer = TimeDependent(reservation=100, initial=1, e=0.2)
    seller = TimeDependent(reservation=1, initial=100, e=5.0)
    mandate = protocol.Mandate.from_demand(((100, 1),), target=1)

    def play(seed: int) -> Any:
        # The deadline is far away so that, as in NegMAS, the step count alone paces concession.
        return simulate(
            seller,
            buyer,
            seed=seed,
            mandate=mandate,
            max_rounds=MAX_ROUNDS,
            duration=10_000_000,
            max_step=60,
        )

    if not modelled:
        return play

    def once(seed: int) -> Any:
        with modelled_signatures():
            return play(seed)

    return once


def our_result(outcome: Any) -> Result:
    """The agreed price and the number of offers of one of our negotiations (not timed)."""
    import protocol

    price = getattr(outcome.result, "unit_price", None)
    # The transcript holds the request first, then every offer, counter-offer and the answer.
    kinds = [protocol.decode_unverified(data).message.kind for data in outcome.transcript]
    return price, sum(kind in ("offer", "counter") for kind in kinds)


def negmas_result(mechanism: Any) -> Result:
    """The agreed price and the number of offers of one NegMAS negotiation (not timed)."""
    agreement = mechanism.state.agreement
    # extended_trace holds one (step, negotiator, offer) per offer made.
    return (None if agreement is None else agreement[0]), len(mechanism.extended_trace)


def negmas_runner() -> Callable[[int], Any] | None:
    try:
        from negmas import BoulwareTBNegotiator, ConcederTBNegotiator, SAOMechanism, make_issue
        from negmas.preferences import LinearAdditiveUtilityFunction
        from negmas.preferences.value_fun import AffineFun, IdentityFun
    except ImportError:
        return None
    issues = [make_issue((0, 100), "price")]

    def once(seed: int) -> Any:
        mechanism = SAOMechanism(issues=issues, n_steps=STEPS)
        space = mechanism.outcome_space
        buyer = LinearAdditiveUtilityFunction(
            values={"price": AffineFun(-1, bias=100)}, outcome_space=space
        )
        seller = LinearAdditiveUtilityFunction(values={"price": IdentityFun()}, outcome_space=space)
        mechanism.add(BoulwareTBNegotiator(name="buyer"), preferences=buyer)
        mechanism.add(ConcederTBNegotiator(name="seller"), preferences=seller)
        mechanism.run()
        return mechanism

    return once


def rate(run: Callable[[int], Any], seconds: float) -> float:
    start = time.perf_counter()
    count = 0
    while time.perf_counter() - start < seconds:
        run(count)
        count += 1
    return count / (time.perf_counter() - start)


def crypto_per_move(seconds: float) -> float:
    """Seconds for one raw PyNaCl sign plus one raw PyNaCl verify of a counter-offer's size."""
    import nacl.bindings
    import nacl.signing

    key = nacl.signing.SigningKey(b"\x01" * 32)
    secret, public = key._signing_key, bytes(key.verify_key)
    payload = b"\x00" * 150  # a signed counter-offer's payload is about this long
    signed = nacl.bindings.crypto_sign(payload, secret)

    def move(_: int) -> None:
        nacl.bindings.crypto_sign(payload, secret)
        nacl.bindings.crypto_sign_open(signed, public)

    return 1.0 / rate(move, seconds)


def wire_per_move(seconds: float) -> float:
    """Seconds for one seal plus one decode of a counter-offer, with modelled signatures."""
    import protocol
    from circles.sim import modelled_signatures

    identity = protocol.Identity.from_seed(b"\x02" * 32)
    counter = protocol.CounterOffer(
        circle=b"c" * 32,
        in_reply_to=b"r" * 32,
        round=50,
        unit_price=42,
        quantity=1,
        currency="EUR",
        valid_until=1_700_003_600,
        created=1_700_000_000,
    )
    with modelled_signatures():
        return 1.0 / rate(lambda _: protocol.decode(protocol.seal(counter, identity).data), seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per figure per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    theirs = negmas_runner()
    if theirs is None:
        print("NegMAS is not installed (pip install 'negmas>=0.16', the 'bench' extra)")
        return
    runners = {"negmas": theirs, "ours_signed": ours(False), "ours_modelled": ours(True)}
    samples = {
        name: (negmas_result if name == "negmas" else our_result)(run(0))
        for name, run in runners.items()
    }
    rounds: list[dict[str, float]] = []
    for _ in range(args.rounds):
        figures = {name: rate(run, args.seconds) for name, run in runners.items()}
        figures["crypto"] = crypto_per_move(args.seconds / 4)
        figures["wire"] = wire_per_move(args.seconds / 4)
        rounds.append(figures)
    best = {k: max(r[k] for r in rounds) for k in runners}
    offers = {name: sample[1] for name, sample in samples.items()}
    our_offers = offers["ours_signed"]
    # Each ceiling: the negotiations per second if a move cost only that, over NegMAS's rate.
    ceilings = {
        "signed": min(r["negmas"] ** -1 / (our_offers * r["crypto"]) for r in rounds),
        "modelled": min(r["negmas"] ** -1 / (our_offers * r["wire"]) for r in rounds),
    }
    spread = {
        k: (min(r[k] / r["negmas"] for r in rounds), max(r[k] / r["negmas"] for r in rounds))
        for k in ("ours_signed", "ours_modelled")
    }
    per_offer = {name: best[name] * offers[name] for name in runners}
    report: dict[str, Any] = {
        "negotiations_per_second": {k: round(v, 1) for k, v in best.items()},
        "offers_per_negotiation": offers,
        "agreed_unit_price": {name: sample[0] for name, sample in samples.items()},
        "offers_per_second": {k: round(v) for k, v in per_offer.items()},
        "ratio_signed": round(best["ours_signed"] / best["negmas"], 2),
        "ratio_modelled": round(best["ours_modelled"] / best["negmas"], 2),
        "ratio_spread": {k: [round(a, 2), round(b, 2)] for k, (a, b) in spread.items()},
        "ceiling_signed": round(ceilings["signed"], 2),
        "ceiling_modelled": round(ceilings["modelled"], 2),
        "us_per_move": {
            "ours_signed": round(1e6 / per_offer["ours_signed"], 1),
            "ours_modelled": round(1e6 / per_offer["ours_modelled"], 1),
            "negmas": round(1e6 / per_offer["negmas"], 1),
            "raw_sign_plus_verify": round(1e6 * statistics.median(r["crypto"] for r in rounds), 1),
            "seal_plus_decode_modelled": round(
                1e6 * statistics.median(r["wire"] for r in rounds), 1
            ),
        },
        "median_negmas": round(statistics.median(r["negmas"] for r in rounds), 1),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    per_s, us = report["negotiations_per_second"], report["us_per_move"]
    print(
        f"one negotiation: NegMAS {offers['negmas']} offers, agreed at "
        f"{report['agreed_unit_price']['negmas']}; ours {our_offers} offers, agreed at "
        f"{report['agreed_unit_price']['ours_signed']}"
    )
    print(
        f"NegMAS SAOMechanism           {per_s['negmas']:>7.1f} negotiations/s (1.00x)"
        f"   {us['negmas']:>5.1f} us/offer"
    )
    for name, label, target, ceiling in (
        ("ours_signed", "ours, ed25519 signed+verified", 3, "signed"),
        ("ours_modelled", "ours, modelled signatures   ", 10, "modelled"),
    ):
        low, high = spread[name]
        print(
            f"{label} {per_s[name]:>7.1f} negotiations/s ({best[name] / best['negmas']:.2f}x;"
            f" rounds {low:.2f}..{high:.2f}; target >= {target}x)   {us[name]:>5.1f} us/offer"
        )
        print(f"    ceiling on this machine: {ceilings[ceiling]:.2f}x", end="")
        if ceiling == "signed":
            print(f" (raw PyNaCl sign + verify alone: {us['raw_sign_plus_verify']} us a move)")
        else:
            print(f" (seal + decode alone: {us['seal_plus_decode_modelled']} us a move)")


if __name__ == "__main__":
    main()
