"""Ours against NegMAS (issue 6): one bilateral alternating-offers negotiation, both libraries.

Run ``python bench/negmas_compare.py`` (``--seconds`` per figure, ``--json``).
NegMAS is an optional ``bench`` extra (``pip install negmas``), never a
runtime dependency; without it this script says so and exits 0.

The negotiation: 100 steps, a Boulware buyer against a conceder seller, one
issue (unit price 0..100; ours 1..100, since a price is at least one minor
unit), linear utilities. NegMAS runs ``SAOMechanism`` with
``BoulwareTBNegotiator`` (buyer) and ``ConcederTBNegotiator`` (seller). Ours
runs ``circles.simulate`` (the protocol's Negotiation machine, every move a
signed envelope decoded and checked by the machine) with
``TimeDependent(e=0.2)`` for the circle and ``TimeDependent(e=5)`` for the
vendor, 99 counter-offers allowed after the vendor's offer. Ours runs twice:
every move really signed and verified (ed25519), and with modelled signatures
(``circles.sim.modelled_signatures``). The figures are negotiations per
second and the ratios ours / NegMAS, all measured in this run, alternating
rounds so machine noise hits both; the spread of per-round ratios is printed.
Issue 6 targets: >= 10x modelled, >= 3x signed.
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


def ours(modelled: bool) -> Callable[[int], Any]:
    import protocol
    from circles import TimeDependent, simulate
    from circles.sim import modelled_signatures

    buyer = TimeDependent(reservation=100, initial=1, e=0.2)
    seller = TimeDependent(reservation=1, initial=100, e=5.0)
    mandate = protocol.Mandate(target=1, demand=((100, 1),))

    def once(seed: int) -> Any:
        def play() -> Any:
            return simulate(
                seller,
                buyer,
                seed=seed,
                mandate=mandate,
                max_rounds=99,
                duration=6000,
                max_step=60,
            )

        if modelled:
            with modelled_signatures():
                return play()
        return play()

    return once


def negmas_runner() -> Callable[[int], Any] | None:
    try:
        from negmas import BoulwareTBNegotiator, ConcederTBNegotiator, SAOMechanism, make_issue
        from negmas.preferences import LinearAdditiveUtilityFunction
        from negmas.preferences.value_fun import AffineFun, IdentityFun
    except ImportError:
        return None
    issues = [make_issue((0, 100), "price")]

    def once(seed: int) -> Any:
        mechanism = SAOMechanism(issues=issues, n_steps=100)
        space = mechanism.outcome_space
        buyer = LinearAdditiveUtilityFunction(
            values={"price": AffineFun(-1, bias=100)}, outcome_space=space
        )
        seller = LinearAdditiveUtilityFunction(values={"price": IdentityFun()}, outcome_space=space)
        mechanism.add(BoulwareTBNegotiator(name="buyer"), preferences=buyer)
        mechanism.add(ConcederTBNegotiator(name="seller"), preferences=seller)
        return mechanism.run()

    return once


def rate(run: Callable[[int], Any], seconds: float) -> float:
    start = time.perf_counter()
    count = 0
    while time.perf_counter() - start < seconds:
        run(count)
        count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per figure per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    theirs = negmas_runner()
    if theirs is None:
        print("NegMAS is not installed (pip install negmas, the 'bench' extra); nothing to compare")
        return
    signed, modelled = ours(False), ours(True)
    outcome = signed(0)
    sample = f"agreed at {outcome.result.unit_price} after {len(outcome.transcript) - 1} moves"
    rounds: list[dict[str, float]] = []
    for _ in range(args.rounds):
        rounds.append(
            {
                "negmas": rate(theirs, args.seconds),
                "ours_signed": rate(signed, args.seconds),
                "ours_modelled": rate(modelled, args.seconds),
            }
        )
    best = {k: max(r[k] for r in rounds) for k in rounds[0]}
    spread = {
        k: (min(r[k] / r["negmas"] for r in rounds), max(r[k] / r["negmas"] for r in rounds))
        for k in ("ours_signed", "ours_modelled")
    }
    report = {
        "negotiations_per_second": {k: round(v, 1) for k, v in best.items()},
        "ratio_signed": round(best["ours_signed"] / best["negmas"], 2),
        "ratio_modelled": round(best["ours_modelled"] / best["negmas"], 2),
        "ratio_spread": {k: [round(a, 2), round(b, 2)] for k, (a, b) in spread.items()},
        "median_negmas": round(statistics.median(r["negmas"] for r in rounds), 1),
        "our_sample_result": sample,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    per_s = report["negotiations_per_second"]
    print(f"NegMAS SAOMechanism          {per_s['negmas']:>8.1f} negotiations/s (1.00x)")
    print(
        f"ours, ed25519 signed+verified {per_s['ours_signed']:>7.1f} negotiations/s "
        f"({report['ratio_signed']:.2f}x; rounds {spread['ours_signed'][0]:.2f}.."
        f"{spread['ours_signed'][1]:.2f}; target >= 3x)"
    )
    print(
        f"ours, modelled signatures     {per_s['ours_modelled']:>7.1f} negotiations/s "
        f"({report['ratio_modelled']:.2f}x; rounds {spread['ours_modelled'][0]:.2f}.."
        f"{spread['ours_modelled'][1]:.2f}; target >= 10x)"
    )
    print(f"our sample result: {report['our_sample_result']}")


if __name__ == "__main__":
    main()
