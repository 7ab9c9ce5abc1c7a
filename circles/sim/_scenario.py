"""Scenarios: populations, not individuals (read from TOML by ``_scenario_toml``).

A scenario describes buyers (count, demand and reservation price
distributions, arrival process, places), vendor groups (count, unit cost, list
price, tier schedule, capacity, strategy), circle formation, the network and
the horizon. Every number the runner draws comes from a :class:`Distribution`
sampled with the run's seeded ``random.Random``, so a scenario and a seed fix a
run. See ``examples/scenarios/`` for annotated files.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from .._errors import CirclesError

__all__ = [
    "BuyerPopulation",
    "Distribution",
    "Formation",
    "NetworkModel",
    "Partition",
    "Scenario",
    "ScenarioError",
    "StrategySpec",
    "VendorGroup",
]


class ScenarioError(CirclesError, ValueError):
    """A scenario file or value is wrong; ``key`` names where (e.g. ``buyers.demand.low``)."""

    reason = "bad-scenario"

    def __init__(self, message: str, *, key: str, reason: str | None = None) -> None:
        super().__init__(f"{key}: {message}", reason=reason)
        self.key = key


@dataclass(frozen=True, slots=True, kw_only=True)
class Distribution:
    """A distribution of non-negative integers (units, minor units of money, ...)."""

    dist: str
    """One of "constant", "uniform" (integers low..high), "normal" (rounded), "choice"."""
    params: tuple[tuple[str, float], ...]
    """The distribution's parameters as (name, value) pairs, sorted by name."""
    values: tuple[int, ...] = ()
    """The values of a "choice" distribution."""
    weights: tuple[float, ...] = ()
    """The weights of a "choice" distribution (equal if empty)."""

    def sample(self, rng: random.Random) -> int:
        """One draw."""
        p = dict(self.params)
        if self.dist == "constant":
            return int(p["value"])
        if self.dist == "uniform":
            return rng.randint(int(p["low"]), int(p["high"]))
        if self.dist == "normal":
            value = round(rng.gauss(p["mean"], p["sd"]))
            return int(min(max(value, p.get("min", 0)), p.get("max", math.inf)))
        return rng.choices(self.values, weights=self.weights or None)[0]

    def bounds(self) -> tuple[int, int]:
        """The smallest and largest value a draw can take."""
        p = dict(self.params)
        if self.dist == "constant":
            return int(p["value"]), int(p["value"])
        if self.dist == "uniform":
            return int(p["low"]), int(p["high"])
        if self.dist == "normal":
            high = p.get("max", math.inf)
            return int(p.get("min", 0)), (int(high) if high != math.inf else 2**62)
        return min(self.values), max(self.values)

    def to_json(self) -> dict[str, Any]:
        """A plain dict, as the scenario file spells it."""
        out: dict[str, Any] = {"dist": self.dist}
        out.update({k: _plain(v) for k, v in self.params})
        if self.values:
            out["values"] = list(self.values)
        if self.weights:
            out["weights"] = list(self.weights)
        return out


def _plain(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategySpec:
    """A negotiation strategy by name and parameters (see ``circles.TimeDependent`` etc.)."""

    kind: str
    """"time-dependent", "tit-for-tat" or "take-it-or-leave-it"."""
    e: float = 1.0
    """Concession exponent for "time-dependent" (below 1 Boulware, above 1 conceder)."""
    delta: int = 1
    """Look-back for "tit-for-tat"."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BuyerPopulation:
    """The buyers."""

    count: int
    """How many buyers arrive over the run."""
    places: tuple[str, ...]
    """Geohashes of the places; buyers are spread evenly over them, in arrival order."""
    demand: Distribution
    """Units each buyer pledges."""
    reservation: Distribution
    """Each buyer's highest acceptable unit price (minor units): the pledge's max price."""
    arrival: str
    """"poisson" (exponential gaps at ``per_hour``) or "at-once" (all at time 0)."""
    per_hour: float
    """Mean arrivals per hour for "poisson"."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VendorGroup:
    """Vendors sharing costs, prices and a strategy."""

    name: str
    """A label for the group (shown in outputs)."""
    count: int
    """Vendors in the group; spread round-robin over ``places``."""
    places: tuple[str, ...]
    """Places the group's vendors serve (default: every buyer place)."""
    product: str
    """What they sell."""
    currency: str
    """ISO 4217 code."""
    unit_cost: int
    """What a unit costs the vendor (minor units)."""
    list_price: int
    """The posted unit price (minor units)."""
    floor: int
    """The lowest unit price the vendor agrees to (default: ``unit_cost``)."""
    tiers: tuple[tuple[int, int], ...]
    """(minimum quantity, unit price) volume tiers, by increasing quantity."""
    capacity: int
    """Units each vendor can sell over the whole run."""
    strategy: StrategySpec
    """How the vendor haggles: from the tier price for the quantity down to ``floor``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Formation:
    """How circles are founded and how buyers find them."""

    circles: int
    """Circles founded at most over the run, split evenly over the places."""
    open_per_place: int
    """Circles that may be forming at once in one place; an arrival founds one below that."""
    target: Distribution
    """Target quantity of each new circle."""
    join: str
    """Which open circle an arrival joins: "fill-first", "fewest-members" or "random"."""
    pledge_window_hours: float
    """From founding to the pledge deadline."""
    negotiator: StrategySpec
    """How the circle's founder haggles, from ``opening`` up to what the pledges cover."""
    opening: float
    """The circle's first counter-offer as a share of the vendor's list price."""
    max_rounds: int
    """Counter-offers allowed per negotiation."""
    negotiation_minutes: float
    """How long one negotiation may last."""
    think_seconds: int
    """Seconds the circle's negotiator waits before each move (vendors answer at once)."""
    admit: str = "until-quorum"
    """When a circle stops taking arrivals, as its founder's node sees it: "until-quorum"
    (while it forms, haggling included, until an offer clears) or "until-target" (until
    its live pledges cover the target; pledges already on their way still count)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Partition:
    """A share of buyers cut off from every peer for a while (sync repairs it after)."""

    start_hours: float
    """When the cut starts."""
    end_hours: float
    """When the links come back."""
    share: float
    """Share of the buyers present at the start that are cut off."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkModel:
    """The in-memory network."""

    latency_ms: tuple[float, float]
    """One hop's latency, drawn uniformly in this range (milliseconds)."""
    loss: float
    """Probability that one gossip hop is lost (sync repairs it)."""
    partitions: tuple[Partition, ...]
    """Periods when some buyers are cut off."""
    sync_interval_seconds: float
    """Seconds between a node's anti-entropy rounds."""
    tick_seconds: float
    """Seconds between a node's deadline checks (the resolution of expiry)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """A whole scenario: build it with ``circles.sim.load_scenario`` or ``parse_scenario``."""

    name: str
    """A title for outputs."""
    horizon_hours: float
    """The run stops at this virtual time, or earlier once every circle is decided."""
    buyers: BuyerPopulation
    """The buyers."""
    vendors: tuple[VendorGroup, ...]
    """The vendor groups."""
    formation: Formation
    """Circle formation and haggling."""
    network: NetworkModel
    """Latency, loss, partitions, timers."""
    source: dict[str, Any]
    """The scenario as parsed from TOML (written back into ``summary.json``)."""
