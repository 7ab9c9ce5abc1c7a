"""What a simulation produces: one record per circle and the run's aggregate figures."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from ._scenario import Scenario

__all__ = ["BuyerRecord", "CircleRecord", "PricePoint", "SimulationResult", "VendorRecord"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PricePoint:
    """One proposal in a negotiation."""

    seconds: float
    """Virtual seconds since the negotiation opened."""
    unit_price: int
    """The price proposed (minor units)."""
    party: str
    """"vendor" or "circle"."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CircleRecord:
    """One circle's fate: a row of ``circles.csv``."""

    id: str
    """The circle's id (hex)."""
    place: str
    """The place (geohash) it formed in."""
    founded: float
    """Virtual seconds from the start of the run to its founding."""
    members: int
    """Members at the end (founder and live pledgers)."""
    target: int
    """Units it needed."""
    pledged: int
    """Units pledged by live pledges at the end."""
    outcome: str
    """"deal", "expired", "cancelled", or "open" when the horizon came first."""
    time_to_quorum: float | None
    """Virtual seconds from founding to quorum, or None if never reached."""
    clearing_price: int | None
    """The deal's unit price (minor units), or None without a deal."""
    list_price: int | None
    """The dealing vendor's list price, or None without a deal."""
    discount: float | None
    """1 - clearing / list, or None without a deal."""
    vendor: str
    """The dealing vendor's name, or "" without a deal."""
    messages: int
    """Signed messages about the circle: charter, pledges, offers, certificates, deal,
    and every negotiation move with every vendor asked."""
    rounds: int
    """Counter-offers in the winning negotiation (or the longest one without a deal)."""
    price_path: tuple[PricePoint, ...]
    """The proposals of that negotiation, for plots (not written to the CSV)."""
    units: int
    """Units the deal sold (its certificate's total), or 0 without a deal."""
    served: int
    """Members whose pledges the deal took, or 0 without a deal."""
    auctions: int
    """Reverse auctions the founder ran (a first one, then re-asks after a change)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BuyerRecord:
    """One arrival and what became of it."""

    index: int
    """Arrival order, from 0."""
    place: str
    """The place it arrived in."""
    arrival: float
    """Virtual seconds from the start of the run."""
    demand: int
    """Units it pledged (or meant to)."""
    reservation: int
    """Its highest acceptable unit price."""
    circle: int | None
    """Index (in ``SimulationResult.circles``) of the circle it founded or joined, or None."""
    fate: str
    """"served", or why not: "no-circle", "join-failed", "pledge-failed",
    "circle-not-closed", "priced-out", "left-out-of-deal", "unfinished"."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VendorRecord:
    """One vendor's capacity and how it was used."""

    name: str
    """The vendor's name (its group's name and index)."""
    capacity: int
    """Units it could sell over the run."""
    sold: int
    """Units in the deals it countersigned."""
    promised: int
    """Units still promised to undecided circles when the run ended."""
    refused: int
    """Certificates it did not countersign because their total did not fit."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationResult:
    """Everything one run produced; the same scenario and seed give an equal result."""

    scenario: Scenario
    """The scenario run."""
    seed: int
    """The seed."""
    signatures: str
    """"ed25519" or "modelled" (see ``circles.sim.modelled_signatures``)."""
    circles: tuple[CircleRecord, ...]
    """One record per circle founded, in founding order."""
    buyers_arrived: int
    """Buyers that arrived before the run ended."""
    buyers_served: int
    """Arrivals whose pledge a deal took."""
    buyers: tuple[BuyerRecord, ...]
    """Every arrival, in arrival order."""
    vendors: tuple[VendorRecord, ...]
    """Each vendor's capacity and what it sold, in scenario order."""
    deliveries: int
    """Gossip deliveries to nodes' subscriptions, over the whole network."""
    virtual_seconds: float
    """Virtual time when the run ended."""

    @property
    def buyers_unserved(self) -> int:
        """Arrivals no deal served, whatever the reason."""
        return self.buyers_arrived - self.buyers_served

    def unserved(self) -> dict[str, int]:
        """Arrivals no deal served, counted by reason (reasons with none left out)."""
        counts: dict[str, int] = {}
        for buyer in self.buyers:
            if buyer.fate != "served":
                counts[buyer.fate] = counts.get(buyer.fate, 0) + 1
        return dict(sorted(counts.items()))

    def summary(self) -> dict[str, Any]:
        """Aggregate figures (for ``summary.json``)."""
        circles = self.circles
        deals = [c for c in circles if c.outcome == "deal"]
        discounts = [c.discount for c in deals if c.discount is not None]
        quorum = [c.time_to_quorum for c in circles if c.time_to_quorum is not None]
        outcomes: dict[str, int] = {}
        for c in circles:
            outcomes[c.outcome] = outcomes.get(c.outcome, 0) + 1
        return {
            "circles": len(circles),
            "outcomes": dict(sorted(outcomes.items())),
            "share_closed": _round(len(deals) / len(circles)) if circles else None,
            "mean_discount": _round(statistics.fmean(discounts)) if discounts else None,
            "median_discount": _round(statistics.median(discounts)) if discounts else None,
            "median_time_to_quorum": _round(statistics.median(quorum)) if quorum else None,
            "messages": sum(c.messages for c in circles),
            "deliveries": self.deliveries,
            "buyers_arrived": self.buyers_arrived,
            "buyers_served": self.buyers_served,
            "buyers_unserved": self.buyers_unserved,
            "buyers_unserved_by": self.unserved(),
            "units_pledged_in_deals": sum(c.pledged for c in deals),
            "units_sold": sum(c.units for c in deals),
            "vendor_capacity": sum(v.capacity for v in self.vendors),
            "deals_refused_over_capacity": sum(v.refused for v in self.vendors),
            "virtual_seconds": _round(self.virtual_seconds),
        }


def _round(value: float) -> float:
    return round(value, 6)
