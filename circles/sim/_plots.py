"""The four plots of a run (matplotlib, Agg backend, no timestamps in the PNGs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._records import SimulationResult

__all__ = ["write_plots"]

# PNGs carry a "Software" and a creation-time chunk by default; drop both.
_METADATA: dict[str, Any] = {"Software": None}


def write_plots(result: SimulationResult, directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    circles = result.circles
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = directory / name
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100, metadata=_METADATA)
        plt.close(fig)
        written.append(path)

    discounts = [c.discount * 100 for c in circles if c.discount is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(discounts, bins=20 if discounts else 1, color="tab:blue")
    ax.set(xlabel="discount off list price (%)", ylabel="circles", title="Clearing discount")
    save(fig, "discount_distribution.png")

    times = sorted(c.time_to_quorum / 3600 for c in circles if c.time_to_quorum is not None)
    fig, ax = plt.subplots(figsize=(6, 4))
    if times:
        ax.step(times, [(i + 1) / len(circles) for i in range(len(times))], where="post")
    ax.set(
        xlabel="hours from founding",
        ylabel="share of circles at quorum",
        title="Time to quorum (CDF)",
        ylim=(0, 1),
    )
    save(fig, "time_to_quorum_cdf.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    shown = [c for c in circles if len(c.price_path) > 1][:5]
    for c in shown:
        for party, style in (("vendor", "-o"), ("circle", "--s")):
            points = [p for p in c.price_path if p.party == party]
            ax.plot(
                [p.seconds / 60 for p in points],
                [p.unit_price for p in points],
                style,
                markersize=3,
                label=f"{c.id[:6]} {party}",
            )
    ax.set(xlabel="minutes into the negotiation", ylabel="unit price", title="Price paths")
    if shown:
        ax.legend(fontsize=6, ncol=2)
    save(fig, "price_paths.png")

    sizes: dict[int, list[bool]] = {}
    for c in circles:
        sizes.setdefault(c.members, []).append(c.outcome == "deal")
    fig, ax = plt.subplots(figsize=(6, 4))
    keys = sorted(sizes)
    ax.bar([str(k) for k in keys], [sum(sizes[k]) / len(sizes[k]) for k in keys])
    ax.set(xlabel="members", ylabel="share closed", title="Circles closed by size", ylim=(0, 1))
    save(fig, "closed_by_size.png")
    return written
