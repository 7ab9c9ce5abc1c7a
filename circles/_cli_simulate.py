"""``circles simulate SCENARIO.toml --seed S --out DIR``: the research simulator's command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_simulate_parser", "run_simulate"]


def add_simulate_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``simulate`` subcommand to an argparse subparsers object."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "simulate",
        help="run a scenario of many simulated peers in virtual time; write CSV, JSON, plots",
    )
    parser.add_argument("scenario", type=Path, metavar="SCENARIO.toml")
    parser.add_argument("--seed", type=int, default=1, help="the run's seed (default 1)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar on stderr (default: when stderr is a terminal)",
    )
    parser.add_argument(
        "--modelled-signatures",
        action="store_true",
        help="model signatures with a keyed hash instead of ed25519 (faster; see docs)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return parser


def run_simulate(args: argparse.Namespace) -> int:
    """Run the ``simulate`` subcommand; returns the exit status."""
    from . import sim

    scenario = sim.load_scenario(args.scenario)
    show = sys.stderr.isatty() if args.progress is None else args.progress
    result = sim.run(
        scenario,
        seed=args.seed,
        modelled=args.modelled_signatures,
        progress=_bar if show else None,
    )
    if show:
        print(file=sys.stderr)
    written = sim.write_outputs(result, args.out, plots=not args.no_plots)
    figures = result.summary()
    print(
        f"{figures['circles']} circles, {figures['outcomes'].get('deal', 0)} deals, "
        f"mean discount {figures['mean_discount']}, "
        f"{figures['virtual_seconds'] / 3600:.1f} virtual hours"
    )
    unserved = ", ".join(f"{n} {why}" for why, n in figures["buyers_unserved_by"].items())
    print(
        f"{figures['buyers_served']} of {figures['buyers_arrived']} buyers served"
        + (f" (unserved: {unserved})" if unserved else "")
    )
    for path in written:
        print(path)
    return 0


def _bar(decided: int, founded: int, virtual_seconds: float) -> None:
    width = 30
    filled = width * decided // founded if founded else 0
    sys.stderr.write(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {decided}/{founded} circles decided, "
        f"{virtual_seconds / 3600:.1f} h"
    )
    sys.stderr.flush()
