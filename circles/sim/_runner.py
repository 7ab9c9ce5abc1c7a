"""The runner: a scenario's buyers and vendors as real Nodes on the in-memory network.

Theory of operation: :func:`run` starts ``trio.run`` under a
``MockClock(autojump_threshold=0)``, so virtual time jumps whenever every task
waits: days of haggling take seconds. Every buyer and vendor is a
:class:`circles.Node` (the production node, with an in-memory SQLite store) on
one seeded :class:`circles.MemoryNetwork`; circles form, pledges gossip,
members assemble quorum certificates and vendors countersign deals through the
node's own code. What is modelled, and where:

* the population (:mod:`._population`): buyers arrive (Poisson or all at
  once) in places; an arrival joins a circle of its place that still admits
  (as its founder's node sees it, by the ``admit`` and ``join`` rules), or founds
  one when fewer than ``open_per_place`` admit and the place's quota remains,
  then connects to the founder and pledges its demand at its reservation;
* the founders (:mod:`._founder`): once its node sees pledges covering the
  target, a founder haggles with every vendor of the place at once (a reverse
  auction) with :func:`circles.negotiate` against each vendor's
  :class:`circles.VendorDesk` (the production haggling code; moves travel as
  requests over the network) while members keep pledging; each vendor that
  agrees publishes an offer at the agreed price, the circle's rules clear at
  the cheapest, and the nodes assemble the certificate;
* the vendors (:mod:`._desk`, :mod:`._capacity`): a strategy per request from
  the scenario, and a capacity ledger that never promises or signs beyond
  what the vendor has.

Reproducibility: every population draw comes from ``random.Random`` seeded from
the run's seed, in a fixed order; the network has its own seeded generator;
and trio's scheduler, which shuffles ready tasks with a private generator, is
seeded and pinned to one ordering mode for the run, and restored after
(``_seeded_scheduler``). Nothing reads
the wall clock: nodes get ``clock = EPOCH + trio.current_time()``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import trio
import trio.testing

import protocol

from .._haggle_vendor import VendorDesk
from .._memnet import MemoryNetwork
from .._node import Node, NodeError
from .._transport import TransportError
from ._desk import SimVendor
from ._founder import circle_record, run_circle
from ._population import Buyer, SimCircle, choose_circle, draw_buyers, place_quotas
from ._records import BuyerRecord, SimulationResult, VendorRecord
from ._scenario import Partition, Scenario, VendorGroup
from ._signatures import modelled_signatures

__all__ = ["EPOCH", "run"]

#: Virtual time 0 of every run, as UNIX seconds (nodes date their messages from it).
EPOCH = 1_800_000_000

Progress = Callable[[int, int, float], None]
"""Called as ``progress(circles_decided, circles_founded, virtual_seconds)``."""


def run(
    scenario: Scenario,
    *,
    seed: int,
    modelled: bool = False,
    progress: Progress | None = None,
) -> SimulationResult:
    """Run ``scenario`` with ``seed`` in virtual time and return its result.

    ``modelled=True`` replaces ed25519 with modelled signatures for the run
    (see :func:`circles.sim.modelled_signatures`): much faster, same outcomes
    in distribution, identities still distinct and unforgeable.
    """
    if type(seed) is not int:
        raise TypeError(f"seed must be an int, not {type(seed).__name__}")
    signatures = modelled_signatures() if modelled else contextlib.nullcontext()
    simulation = _Simulation(scenario, seed, progress)
    with signatures, _seeded_scheduler(seed):
        trio.run(simulation.main, clock=trio.testing.MockClock(autojump_threshold=0))
    return simulation.result("modelled" if modelled else "ed25519")


@contextlib.contextmanager
def _seeded_scheduler(seed: int) -> Iterator[None]:
    # trio randomises the order of tasks that become ready together (to catch
    # code that relies on it); a run must not, so the generator gets our seed.
    # It also has two ways of doing so, the second switched on process-wide
    # once Hypothesis (or pytest-trio) is imported: pin one, or a run inside a
    # test session would differ from the same run from the command line.
    from trio._core import _run

    rng: random.Random = _run._r
    state = rng.getstate()
    mode = _run._ALLOW_DETERMINISTIC_SCHEDULING
    rng.seed(_derive(seed, "trio"))
    setattr(_run, "_ALLOW_DETERMINISTIC_SCHEDULING", True)  # noqa: B010 (a Final in trio)
    try:
        yield
    finally:
        setattr(_run, "_ALLOW_DETERMINISTIC_SCHEDULING", mode)  # noqa: B010
        rng.setstate(state)


def _derive(seed: int, label: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{label}".encode()).digest()[:8], "big")


def _identity(seed: int, label: str) -> protocol.Identity:
    return protocol.Identity.from_seed(hashlib.blake2b(f"{seed}:{label}".encode()).digest()[:32])


class _Simulation:
    def __init__(self, scenario: Scenario, seed: int, progress: Progress | None) -> None:
        self.scenario = scenario
        self.seed = seed
        self.progress = progress
        self.buyers = draw_buyers(scenario, random.Random(_derive(seed, "population")))
        self.join_rng = random.Random(_derive(seed, "join"))
        self.partition_rng = random.Random(_derive(seed, "partitions"))
        self.target_rng = random.Random(_derive(seed, "targets"))
        places = scenario.buyers.places
        self.quota = place_quotas(scenario)
        self.circles: list[SimCircle] = []
        self.by_place: dict[str, list[SimCircle]] = {p: [] for p in places}
        self.desks: dict[str, list[SimVendor]] = {p: [] for p in places}
        self.vendors: list[SimVendor] = []
        self.arrived = 0
        self.arrivals_done = False
        self.changed = trio.Event()
        self.network = MemoryNetwork(
            seed=_derive(seed, "network"),
            latency=(scenario.network.latency_ms[0] / 1000, scenario.network.latency_ms[1] / 1000),
            loss=scenario.network.loss,
        )
        self.nodes: list[Node] = []
        self.ended_at = 0.0
        self.deliveries = 0
        self.sold: list[VendorRecord] = []

    # ---------------------------------------------------------------- main
    async def main(self) -> None:
        horizon = self.scenario.horizon_hours * 3600
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            for group_index, group in enumerate(self.scenario.vendors):
                await self._start_vendors(group_index, group)
            nursery.start_soon(self._arrivals)
            for partition in self.scenario.network.partitions:
                nursery.start_soon(self._partition, partition)
            with trio.move_on_at(horizon):
                while not (self.arrivals_done and all(c.decided for c in self.circles)):
                    await self.changed.wait()
            self.ended_at = min(trio.current_time(), horizon)
            for circle in self.circles:
                if circle.record is None:
                    circle.record = circle_record(circle, self.desks[circle.place])
            self.deliveries = sum(n.transport.statistics().delivered for n in self.nodes)
            self.sold = [
                VendorRecord(
                    name=v.name,
                    capacity=v.ledger.capacity,
                    sold=v.ledger.sold,
                    promised=v.ledger.promised(),
                    refused=v.ledger.refused,
                )
                for v in self.vendors
            ]
            nursery.cancel_scope.cancel()

    def result(self, signatures: str) -> SimulationResult:
        records = tuple(c.record for c in self.circles if c.record is not None)
        buyers = tuple(
            BuyerRecord(
                index=b.index,
                place=b.place,
                arrival=round(b.arrival, 6),
                demand=b.demand,
                reservation=b.reservation,
                circle=None if b.circle is None else b.circle.index,
                fate=self._fate(b),
            )
            for b in self.buyers[: self.arrived]
        )
        return SimulationResult(
            scenario=self.scenario,
            seed=self.seed,
            signatures=signatures,
            circles=records,
            buyers_arrived=self.arrived,
            buyers_served=sum(b.fate == "served" for b in buyers),
            buyers=buyers,
            vendors=tuple(self.sold),
            deliveries=self.deliveries,
            virtual_seconds=self.ended_at,
        )

    @staticmethod
    def _fate(buyer: Buyer) -> str:
        circle = buyer.circle
        if not buyer.pledged or circle is None or buyer.node is None:
            return buyer.fate
        if buyer.node.public_key in circle.served:
            return "served"
        record = circle.record
        if record is None or record.clearing_price is None:
            return "circle-not-closed"
        if buyer.reservation < record.clearing_price:
            return "priced-out"
        # Pledged too late for the certificate, or the fill stopped before it.
        return "left-out-of-deal"

    def _signal(self) -> None:
        self.changed.set()
        self.changed = trio.Event()
        if self.progress is not None:
            decided = sum(c.decided for c in self.circles)
            self.progress(decided, len(self.circles), trio.current_time())

    def _clock(self) -> float:
        return EPOCH + trio.current_time()

    async def _start_node(
        self, identity: protocol.Identity, *, vendor: SimVendor | None = None
    ) -> Node:
        network = self.scenario.network
        node = Node(
            identity,
            "",
            transport=self.network.open_transport,
            clock=self._clock,
            sync_interval=network.sync_interval_seconds,
            # A vendor signs deals itself, within its capacity (see _capacity).
            auto_countersign=False,
            tick=network.tick_seconds,
            memory_store=True,
        )
        started: Node = await self.nursery.start(_host, node, vendor)
        self.nodes.append(started)
        return started

    async def _start_vendors(self, group_index: int, group: VendorGroup) -> None:
        for i in range(group.count):
            place = group.places[i % len(group.places)]
            identity = _identity(self.seed, f"vendor:{group_index}:{i}")
            vendor = SimVendor(group, name=f"{group.name}-{i}")
            vendor.node = await self._start_node(identity, vendor=vendor)
            self.desks[place].append(vendor)
            self.vendors.append(vendor)

    # ------------------------------------------------------------ arrivals
    async def _arrivals(self) -> None:
        for buyer in self.buyers:
            await trio.sleep_until(buyer.arrival)
            self.arrived += 1
            circle = self._place(buyer)
            if circle is None:
                buyer.fate = "no-circle"
            else:
                buyer.circle = circle
                self.nursery.start_soon(self._buyer, buyer, circle)
        self.arrivals_done = True
        self._signal()

    def _place(self, buyer: Buyer) -> SimCircle | None:
        """Found or pick a circle for an arrival (synchronously, so order is fixed)."""
        formation = self.scenario.formation
        circles = self.by_place[buyer.place]
        now = trio.current_time()
        open_ = [c for c in circles if c.admitting(now, formation.admit)]
        if len(open_) < formation.open_per_place and self.quota[buyer.place] > 0:
            self.quota[buyer.place] -= 1
            circle = SimCircle(
                index=len(self.circles),
                place=buyer.place,
                target=formation.target.sample(self.target_rng),
                founder=buyer,
            )
            self.circles.append(circle)
            circles.append(circle)
            return circle
        if not open_:
            return None
        chosen = choose_circle(open_, formation, self.join_rng)
        chosen.joiners += 1
        return chosen

    async def _buyer(self, buyer: Buyer, circle: SimCircle) -> None:
        try:
            await self._take_part(buyer, circle)
        finally:
            self._signal()

    async def _take_part(self, buyer: Buyer, circle: SimCircle) -> None:
        node = await self._start_node(_identity(self.seed, f"buyer:{buyer.index}"))
        buyer.node = node
        formation = self.scenario.formation
        if circle.founder is buyer:
            circle.founded = trio.current_time()
            circle.id = await node.found_circle(
                title=f"circle {circle.index} in {circle.place}",
                unit="unit",
                target=circle.target,
                currency=self._currency(circle.place),
                deadline=int(self._clock() + formation.pledge_window_hours * 3600),
                place=circle.place,
            )
            circle.ready.set()
            self.nursery.start_soon(self._circle, circle)
        else:
            await circle.ready.wait()
            founder = circle.founder.node
            assert founder is not None
            buyer.founder_addr = founder.addresses()[0]
            try:
                await node.connect(buyer.founder_addr)
                await node.join(circle.id, timeout=600)
            except (NodeError, TransportError):
                buyer.fate = "join-failed"
                return
        try:
            await node.pledge(circle.id, buyer.demand, max_price=buyer.reservation)
        except NodeError:
            buyer.fate = "pledge-failed"
            return
        buyer.pledged = True
        circle.pledges += 1

    def _currency(self, place: str) -> str:
        desks = self.desks[place]
        return desks[0].group.currency if desks else "EUR"

    async def _circle(self, circle: SimCircle) -> None:
        await run_circle(
            circle,
            epoch=EPOCH,
            formation=self.scenario.formation,
            settle=2 * self.scenario.network.sync_interval_seconds,
            vendors=self.desks[circle.place],
            signal=self._signal,
        )

    # ----------------------------------------------------------- partitions
    async def _partition(self, partition: Partition) -> None:
        await trio.sleep_until(partition.start_hours * 3600)
        present = [b for b in self.buyers if b.node is not None and b.founder_addr]
        count = math.floor(len(present) * partition.share)
        cut = self.partition_rng.sample(present, count)
        for buyer in cut:
            assert buyer.node is not None
            for peer in sorted(buyer.node.transport.peers()):
                await buyer.node.transport.disconnect(peer)
        await trio.sleep_until(partition.end_hours * 3600)
        for buyer in cut:
            assert buyer.node is not None
            with contextlib.suppress(TransportError):
                await buyer.node.connect(buyer.founder_addr)


async def _host(
    node: Node, vendor: SimVendor | None, *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    async with node:
        if vendor is None:
            task_status.started(node)
            await trio.sleep_forever()
        # A vendor linked to many founders may need several sync round trips over
        # a slow, lossy network to fetch a circle's charter: allow for it.
        desk = VendorDesk(
            node, strategy_for=vendor.strategy_for, bid_auctions=False, join_timeout=120.0
        )
        vendor.ledger.node = node
        async with desk:
            task_status.started(node)
            await vendor.ledger.countersign_within()
