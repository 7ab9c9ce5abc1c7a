"""Simulator benchmark (issue 6): messages per wall second and peak memory at scale.

Run ``python bench/simulator.py`` (1,000 and 10,000 buyers), ``--sizes 1000``
to choose, ``--signatures ed25519|modelled|both``, ``--json`` for JSON.

Each size runs in a fresh subprocess, so its peak resident memory is its own.
The scenario scales with the buyer count N: N/200 places, N/100 vendors (two
per place), N/20 circles of target 20, Poisson arrivals over about 2 hours,
pledge window 4 h; 10,000 buyers give 50 places, 100 vendors, 500 circles.

Figures, each against a baseline measured in the same subprocess:

- simulated signed messages per wall second, and gossip deliveries per wall
  second; the baseline is raw ``protocol.seal`` + ``protocol.decode`` of a
  pledge in a loop (messages/s), so "x raw" says how many seal+decode pairs
  the simulator costs per simulated message;
- peak resident memory, against the resident memory of the same subprocess
  after importing everything and before the run (the interpreter's baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0]) == _HERE:
    sys.path.pop(0)


def scenario_data(buyers: int) -> dict[str, Any]:
    """The scaled scenario, as TOML-shaped data."""
    places = max(1, buyers // 200)
    return {
        "scenario": {"name": f"bench {buyers} buyers", "horizon_hours": 12},
        "buyers": {
            "count": buyers,
            "places": [f"p{i:03d}" for i in range(places)],
            "demand": {"dist": "uniform", "low": 1, "high": 3},
            "reservation": {"dist": "uniform", "low": 800, "high": 1000},
            "arrival": "poisson",
            "per_hour": buyers / 2,
        },
        "vendors": [
            {
                "name": "v",
                "count": max(1, buyers // 100),
                "unit_cost": 500,
                "list_price": 1000,
                "tiers": [[20, 900], [40, 850]],
                "capacity": 100_000,
                "floor": 650,
                "strategy": {"kind": "time-dependent", "e": 0.5},
            }
        ],
        "formation": {
            "circles": max(1, buyers // 20),
            "open_per_place": 2,
            "target": 20,
            "join": "fewest-members",
            "pledge_window_hours": 4,
            "negotiator": {"kind": "time-dependent", "e": 2.0},
            "max_rounds": 20,
            "negotiation_minutes": 30,
        },
        "network": {
            "latency_ms": [20, 80],
            "loss": 0.0,
            "sync_interval_seconds": 1800,
            "tick_seconds": 600,
        },
    }


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0  # pragma: no cover


def one(buyers: int, modelled: bool) -> dict[str, Any]:
    """Run one size in this process and measure it."""
    import protocol
    from circles import sim

    scenario = sim.parse_scenario(scenario_data(buyers))
    identity = protocol.Identity.from_seed(b"\1" * 32)
    pledge = protocol.Pledge(
        circle=b"\2" * 32,
        seq=1,
        quantity=2,
        max_price=900,
        currency="EUR",
        tolerance=0,
        created=1_800_000_000,
    )
    context = sim.modelled_signatures() if modelled else None
    if context is not None:
        context.__enter__()
    try:
        start = time.perf_counter()
        count = 0
        while time.perf_counter() - start < 1.0:
            protocol.decode(protocol.seal(pledge, identity).data)
            count += 1
        raw_rate = count / (time.perf_counter() - start)
    finally:
        if context is not None:
            context.__exit__(None, None, None)
    base_rss = _rss_mib()
    start = time.perf_counter()
    result = sim.run(scenario, seed=1, modelled=modelled)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = result.summary()
    return {
        "buyers": buyers,
        "signatures": "modelled" if modelled else "ed25519",
        "wall_seconds": round(wall, 2),
        "virtual_hours": round(result.virtual_seconds / 3600, 2),
        "circles": figures["circles"],
        "deals": figures["outcomes"].get("deal", 0),
        "buyers_served": figures["buyers_served"],
        "buyers_unserved_by": figures["buyers_unserved_by"],
        "messages": figures["messages"],
        "deliveries": figures["deliveries"],
        "messages_per_s": round(figures["messages"] / wall, 1),
        "deliveries_per_s": round(figures["deliveries"] / wall, 1),
        "raw_seal_decode_per_s": round(raw_rate, 1),
        "messages_x_raw": round(figures["messages"] / wall / raw_rate, 4),
        "peak_rss_mib": round(peak, 1),
        "baseline_rss_mib": round(base_rss, 1),
        "peak_x_baseline": round(peak / base_rss, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--signatures", choices=("ed25519", "modelled", "both"), default="both")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--modelled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.modelled)))
        return
    kinds = {"ed25519": [False], "modelled": [True], "both": [True, False]}[args.signatures]
    rows = []
    for size in args.sizes:
        for modelled in kinds:
            command = [sys.executable, os.path.abspath(__file__), "--one", str(size)]
            command += ["--modelled"] if modelled else []
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            rows.append(row)
            if not args.json:
                print(
                    f"{row['buyers']:>6} buyers {row['signatures']:>8}: "
                    f"{row['wall_seconds']:>7.1f} s wall for {row['virtual_hours']} virtual h, "
                    f"{row['deals']}/{row['circles']} deals, "
                    f"{row['buyers_served']}/{row['buyers']} buyers served; "
                    f"{row['messages_per_s']:>8.1f} msg/s ({row['messages_x_raw']:.4f} x raw "
                    f"seal+decode {row['raw_seal_decode_per_s']:.0f}/s), "
                    f"{row['deliveries_per_s']:.0f} deliveries/s; peak RSS "
                    f"{row['peak_rss_mib']:.0f} MiB ({row['peak_x_baseline']:.1f} x "
                    f"{row['baseline_rss_mib']:.0f} MiB baseline)",
                    flush=True,
                )
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
