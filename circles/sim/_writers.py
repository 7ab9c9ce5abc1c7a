"""Outputs: ``circles.csv``, ``summary.json`` and PNG plots, byte-identical for one seed.

No wall-clock time goes into the CSV or JSON; numbers are written with fixed
formatting, keys sorted, ``\\n`` line ends. Plots import matplotlib lazily
(install the ``sim`` extra); PNG metadata is stripped so they do not carry a
timestamp either.
"""

from __future__ import annotations

import csv
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from ._records import CircleRecord, SimulationResult

__all__ = ["CSV_COLUMNS", "write_csv", "write_outputs", "write_plots", "write_summary"]

#: Columns of ``circles.csv``, in order.
CSV_COLUMNS = (
    "id",
    "place",
    "founded_s",
    "members",
    "target",
    "pledged",
    "outcome",
    "time_to_quorum_s",
    "clearing_unit_price",
    "list_price",
    "discount",
    "vendor",
    "messages",
    "negotiation_rounds",
    "deal_units",
    "buyers_served",
    "auctions",
)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def _row(c: CircleRecord) -> list[str]:
    values = (
        c.id,
        c.place,
        c.founded,
        c.members,
        c.target,
        c.pledged,
        c.outcome,
        c.time_to_quorum,
        c.clearing_price,
        c.list_price,
        c.discount,
        c.vendor,
        c.messages,
        c.rounds,
        c.units,
        c.served,
        c.auctions,
    )
    return [_cell(v) for v in values]


def write_csv(result: SimulationResult, path: str | Path) -> Path:
    """Write one row per circle to ``path``."""
    path = Path(path)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for record in result.circles:
            writer.writerow(_row(record))
    return path


def _version() -> str:
    try:
        return metadata.version("buying-circles")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "unknown"


def summary_document(result: SimulationResult) -> dict[str, Any]:
    """The content of ``summary.json``."""
    return {
        "scenario": result.scenario.source,
        "seed": result.seed,
        "package_version": _version(),
        "signatures": result.signatures,
        "figures": result.summary(),
    }


def write_summary(result: SimulationResult, path: str | Path) -> Path:
    """Write the scenario, seed, package version and aggregate figures as JSON."""
    path = Path(path)
    text = json.dumps(summary_document(result), indent=2, sort_keys=True, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def write_plots(result: SimulationResult, directory: str | Path) -> list[Path]:
    """Write the four PNG plots into ``directory``; needs matplotlib."""
    from . import _plots  # lazy: matplotlib takes a second to import

    return _plots.write_plots(result, Path(directory))


def write_outputs(
    result: SimulationResult, directory: str | Path, *, plots: bool = True
) -> list[Path]:
    """Write ``circles.csv``, ``summary.json`` and (optionally) the plots into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = [
        write_csv(result, directory / "circles.csv"),
        write_summary(result, directory / "summary.json"),
    ]
    if plots:
        written += write_plots(result, directory)
    return written
