"""A research sweep: how hard should a vendor hold out against circles that concede?

Sweeps the vendors' Boulware exponent ``e`` (below 1: holds out; 1: linear)
against circles whose negotiator is a conceder (``e = 3``), runs the
small-town scenario once per exponent and seed with ``circles.sim.run``, and
plots the mean clearing discount and the share of circles closed against ``e``.

    python examples/research_sweep.py --out sweep/        # the full sweep
    python examples/research_sweep.py --quick --out /tmp/s  # two points, for tests

Modelled signatures keep it fast (``modelled=True``); outcomes are the same
in distribution as with real ed25519 signatures.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from pathlib import Path
from typing import Any

from circles import sim

SCENARIO = Path(__file__).resolve().parent / "scenarios" / "small_town.toml"


def sweep(exponents: list[float], seeds: list[int], buyers: int) -> list[dict[str, Any]]:
    """One row per exponent: the mean discount and share closed over ``seeds``."""
    base = sim.load_scenario(SCENARIO).source
    rows = []
    for e in exponents:
        data = copy.deepcopy(base)
        data["buyers"]["count"] = buyers
        for group in data["vendors"]:
            group["strategy"] = {"kind": "time-dependent", "e": e}
        data["formation"]["negotiator"] = {"kind": "time-dependent", "e": 3.0}
        scenario = sim.parse_scenario(data)
        discounts: list[float] = []
        closed: list[float] = []
        for seed in seeds:
            result = sim.run(scenario, seed=seed, modelled=True)
            discounts += [c.discount for c in result.circles if c.discount is not None]
            closed.append(result.summary()["share_closed"] or 0.0)
        rows.append(
            {
                "e": e,
                "mean_discount": round(statistics.fmean(discounts), 4) if discounts else None,
                "share_closed": round(statistics.fmean(closed), 4),
                "deals": len(discounts),
            }
        )
        print(
            f"e = {e:<5} mean discount {rows[-1]['mean_discount']}, "
            f"share closed {rows[-1]['share_closed']} ({len(discounts)} deals)",
            flush=True,
        )
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    points = [r for r in rows if r["mean_discount"] is not None]
    ax.plot([r["e"] for r in points], [r["mean_discount"] * 100 for r in points], "-o")
    ax.set(
        xlabel="vendor's Boulware exponent e (circle: conceder, e = 3)",
        ylabel="mean clearing discount (%)",
        title="Holding out against conceding circles",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("sweep"))
    parser.add_argument("--quick", action="store_true", help="two exponents, one seed")
    args = parser.parse_args()
    if args.quick:
        exponents, seeds, buyers = [0.2, 1.0], [1], 24
    else:
        exponents, seeds, buyers = [0.1, 0.2, 0.3, 0.5, 0.7, 1.0], [1, 2, 3], 60
    rows = sweep(exponents, seeds, buyers)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, args.out / "discount_vs_exponent.png")
    print(f"wrote {args.out / 'sweep.json'} and {args.out / 'discount_vs_exponent.png'}")


if __name__ == "__main__":
    main()
