"""The modelled population: who arrives when, wanting what, and which circle they pick.

This is the part of a run that is not production code. Buyers are drawn from
the scenario's distributions with the run's seeded generator, in a fixed order
(arrival gap, then demand, then reservation, buyer by buyer), so a seed fixes
them. An arrival picks a circle of its place the way a buyer browsing an app's
list would: among the circles still admitting (:meth:`SimCircle.admitting`,
read from the founder's node, by the scenario's ``admit`` rule), by the
``join`` rule; it founds a new circle when fewer than ``open_per_place``
admit and the place's quota of circles is not used up. Otherwise it is
unserved ("no-circle" in ``summary.json``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import trio

import protocol

from .._node import Node
from ._desk import Outcome
from ._records import CircleRecord
from ._scenario import Formation, Scenario

__all__ = ["Buyer", "SimCircle", "choose_circle", "draw_buyers", "place_quotas"]


@dataclass(slots=True, kw_only=True)
class Buyer:
    """One modelled buyer and, once it arrived, its node."""

    index: int
    place: str
    arrival: float
    demand: int
    reservation: int
    node: Node | None = None
    founder_addr: str = ""
    circle: SimCircle | None = None
    pledged: bool = False
    # Why it is not served, once known before the end: "no-circle", "join-failed",
    # "pledge-failed"; a pledger's fate is read from its circle at the end.
    fate: str = "unfinished"


@dataclass(slots=True, kw_only=True)
class SimCircle:
    """One circle of the run: the founder's handle on it, and what the runner recorded."""

    index: int
    place: str
    target: int
    founder: Buyer
    founded: float = 0.0
    id: bytes = b""
    ready: trio.Event = field(default_factory=trio.Event)
    last_call: float = math.inf  # virtual time of the founder's last chance to start haggling
    joiners: int = 0
    auctions: int = 0
    decided: bool = False
    pledges: int = 0
    quorum_at: float | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    offers: int = 0
    served: frozenset[bytes] = frozenset()  # keys whose pledges the deal took
    record: CircleRecord | None = None

    def admitting(self, now: float, rule: str) -> bool:
        """Whether the circle takes new members, by the ``admit`` rule, as its founder's
        node sees it; never once too late for the founder to haggle for them."""
        node = self.founder.node
        if node is None or not self.id:
            return True  # being founded
        state = node.circle(self.id)
        if state.status is not protocol.CircleStatus.FORMING or now >= self.last_call:
            return False
        return rule == "until-quorum" or state.progress()[0] < self.target


def draw_buyers(scenario: Scenario, rng: random.Random) -> list[Buyer]:
    """Every buyer of the run, in arrival order."""
    population = scenario.buyers
    buyers = []
    now = 0.0
    for i in range(population.count):
        if population.arrival == "poisson":
            now += rng.expovariate(population.per_hour / 3600.0)
        buyers.append(
            Buyer(
                index=i,
                place=population.places[i % len(population.places)],
                arrival=now,
                demand=population.demand.sample(rng),
                reservation=population.reservation.sample(rng),
            )
        )
    return buyers


def place_quotas(scenario: Scenario) -> dict[str, int]:
    """The circles each place may found: ``formation.circles`` split evenly, first places first."""
    places = scenario.buyers.places
    quota = scenario.formation.circles
    return {p: quota // len(places) + (i < quota % len(places)) for i, p in enumerate(places)}


def choose_circle(open_: list[SimCircle], formation: Formation, rng: random.Random) -> SimCircle:
    """The admitting circle an arrival joins, by the scenario's ``join`` rule."""
    if formation.join == "random":
        return rng.choice(open_)
    if formation.join == "fewest-members":
        return min(open_, key=lambda c: (c.joiners, c.index))
    return open_[0]
