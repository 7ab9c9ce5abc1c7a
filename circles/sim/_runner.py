"""The runner: a scenario's buyers and vendors as real Nodes on the in-memory network.

Theory of operation: :func:`run` starts ``trio.run`` under a
``MockClock(autojump_threshold=0)``, so virtual time jumps whenever every task
waits: days of haggling take seconds. Every buyer and vendor is a
:class:`circles.Node` (the production node, with an in-memory SQLite store) on
one seeded :class:`circles.MemoryNetwork`; circles form, pledges gossip,
members assemble quorum certificates and vendors countersign deals through the
node's own code. Only the population is modelled here:

* buyers arrive (Poisson or all at once) in places; an arrival founds a circle
  when its place has fewer than ``open_per_place`` forming and quota remains,
  otherwise joins one (``join`` rule), connecting to the founder and pledging
  its demand at its reservation price; a circle stops admitting arrivals once
  its pledges cover its target and it starts haggling;
* once a circle's pledges cover its target, the founder haggles with every
  vendor serving the place at once (a reverse auction) with
  :func:`circles.negotiate` against each vendor's :class:`circles.VendorDesk`
  (the production haggling code; moves travel as requests over the network);
  each vendor that agrees publishes an offer at the agreed price, the
  circle's rules clear at the cheapest, and the nodes assemble the
  certificate and countersign the deal.

Reproducibility: every population draw comes from ``random.Random`` seeded from
the run's seed, in a fixed order; the network has its own seeded generator;
and trio's scheduler, which shuffles ready tasks with a private generator, is
seeded for the run and restored after (``_seeded_scheduler``). Nothing reads
the wall clock: nodes get ``clock = EPOCH + trio.current_time()``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing

import protocol

from .._haggle_vendor import VendorDesk
from .._memnet import MemoryNetwork
from .._node import Node, NodeError
from .._transport import TransportError
from ._desk import Outcome, SimVendor, haggle
from ._records import CircleRecord, SimulationResult
from ._scenario import Scenario, VendorGroup
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
    from trio._core import _run

    rng: random.Random = _run._r
    state = rng.getstate()
    rng.seed(_derive(seed, "trio"))
    try:
        yield
    finally:
        rng.setstate(state)


def _derive(seed: int, label: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{label}".encode()).digest()[:8], "big")


def _identity(seed: int, label: str) -> protocol.Identity:
    return protocol.Identity.from_seed(hashlib.blake2b(f"{seed}:{label}".encode()).digest()[:32])


@dataclass(slots=True, kw_only=True)
class _Buyer:
    index: int
    place: str
    arrival: float
    demand: int
    reservation: int
    node: Node | None = None
    founder_addr: str = ""


@dataclass(slots=True, kw_only=True)
class _Circle:
    index: int
    place: str
    target: int
    founder: _Buyer
    founded: float = 0.0
    id: bytes = b""
    ready: trio.Event = field(default_factory=trio.Event)
    accepting: bool = True
    decided: bool = False
    pledges: int = 0
    joiners: int = 0
    pending: int = 1  # arrivals placed here that have not pledged (or failed) yet
    units: int = 0  # units pledged by the members, as they pledged them
    quorum_at: float | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    offers: int = 0
    record: CircleRecord | None = None


class _Simulation:
    def __init__(self, scenario: Scenario, seed: int, progress: Progress | None) -> None:
        self.scenario = scenario
        self.seed = seed
        self.progress = progress
        population = random.Random(_derive(seed, "population"))
        self.join_rng = random.Random(_derive(seed, "join"))
        self.partition_rng = random.Random(_derive(seed, "partitions"))
        buyers = scenario.buyers
        self.buyers: list[_Buyer] = []
        now = 0.0
        for i in range(buyers.count):
            if buyers.arrival == "poisson":
                now += population.expovariate(buyers.per_hour / 3600.0)
            self.buyers.append(
                _Buyer(
                    index=i,
                    place=buyers.places[i % len(buyers.places)],
                    arrival=now,
                    demand=buyers.demand.sample(population),
                    reservation=buyers.reservation.sample(population),
                )
            )
        self.target_rng = random.Random(_derive(seed, "targets"))
        places = buyers.places
        quota = scenario.formation.circles
        self.quota = {
            p: quota // len(places) + (i < quota % len(places)) for i, p in enumerate(places)
        }
        self.circles: list[_Circle] = []
        self.by_place: dict[str, list[_Circle]] = {p: [] for p in places}
        self.desks: dict[str, list[SimVendor]] = {p: [] for p in places}
        self.unserved = 0
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
                    circle.record = self._record(circle)
            self.deliveries = sum(n.transport.statistics().delivered for n in self.nodes)
            nursery.cancel_scope.cancel()

    def result(self, signatures: str) -> SimulationResult:
        records = tuple(c.record for c in self.circles if c.record is not None)
        return SimulationResult(
            scenario=self.scenario,
            seed=self.seed,
            signatures=signatures,
            circles=records,
            buyers_arrived=self.arrived,
            buyers_unserved=self.unserved,
            deliveries=self.deliveries,
            virtual_seconds=self.ended_at,
        )

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
            auto_countersign=vendor is not None,
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

    # ------------------------------------------------------------ arrivals
    async def _arrivals(self) -> None:
        for buyer in self.buyers:
            await trio.sleep_until(buyer.arrival)
            self.arrived += 1
            circle = self._place(buyer)
            if circle is None:
                self.unserved += 1
            else:
                self.nursery.start_soon(self._buyer, buyer, circle)
        self.arrivals_done = True
        self._signal()

    def _place(self, buyer: _Buyer) -> _Circle | None:
        """Found or pick a circle for an arrival (synchronously, so order is fixed)."""
        formation = self.scenario.formation
        circles = self.by_place[buyer.place]
        open_ = [c for c in circles if c.accepting]
        if len(open_) < formation.open_per_place and self.quota[buyer.place] > 0:
            self.quota[buyer.place] -= 1
            circle = _Circle(
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
        if formation.join == "random":
            chosen = self.join_rng.choice(open_)
        elif formation.join == "fewest-members":
            chosen = min(open_, key=lambda c: (c.joiners, c.index))
        else:
            chosen = open_[0]
        chosen.joiners += 1
        chosen.pending += 1
        return chosen

    async def _buyer(self, buyer: _Buyer, circle: _Circle) -> None:
        try:
            await self._take_part(buyer, circle)
        finally:
            circle.pending -= 1
            self._signal()

    async def _take_part(self, buyer: _Buyer, circle: _Circle) -> None:
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
                self.unserved += 1
                return
        try:
            await node.pledge(circle.id, buyer.demand, max_price=buyer.reservation)
        except NodeError:
            self.unserved += 1
            return
        circle.pledges += 1
        circle.units += buyer.demand

    def _currency(self, place: str) -> str:
        desks = self.desks[place]
        return desks[0].group.currency if desks else "EUR"

    def _vendor_of(self, key: bytes, place: str) -> SimVendor | None:
        for vendor in self.desks[place]:
            if vendor.node is not None and vendor.node.public_key == key:
                return vendor
        return None

    # -------------------------------------------------------------- circles
    async def _circle(self, circle: _Circle) -> None:
        founder = circle.founder.node
        assert founder is not None
        formation = self.scenario.formation
        state = founder.circle(circle.id)
        deadline = state.deadline - EPOCH
        talk = formation.negotiation_minutes * 60
        # Haggle once the pledges cover the target, while there is time to.
        with trio.move_on_at(deadline - talk - 60):
            await founder.wait_until(lambda: state.progress()[0] >= circle.target)
        if state.progress()[0] >= circle.target and self.desks[circle.place]:
            # The circle stops admitting members when it starts haggling, and
            # waits for the pledges of those already on their way: the desk
            # offers exactly the quantity agreed, so the pledges must hold still.
            circle.accepting = False
            while circle.pending:
                await self.changed.wait()
            # Then it settles: the founder waits (at most two sync rounds) until it
            # has heard every pledge made, which gossip loss may have delayed.
            settle = 2 * self.scenario.network.sync_interval_seconds
            with trio.move_on_after(settle):
                await founder.wait_until(lambda: state.progress()[0] >= circle.units)
            await self._auction(circle, founder)
        with trio.move_on_at(deadline):
            await founder.wait_until(lambda: state.status is not protocol.CircleStatus.FORMING)
        if state.status in (protocol.CircleStatus.QUORUM, protocol.CircleStatus.CLOSED):
            circle.quorum_at = trio.current_time() - circle.founded
        final = (
            protocol.CircleStatus.CLOSED,
            protocol.CircleStatus.EXPIRED,
            protocol.CircleStatus.CANCELLED,
        )
        await founder.wait_until(lambda: state.status in final)
        if state.deal is not None:
            winner = self._vendor_of(state.deal.signer, circle.place)
            if winner is not None:
                winner.capacity_left -= state.deal.message.total
        circle.accepting = False
        circle.decided = True
        circle.record = self._record(circle)
        self._signal()

    async def _auction(self, circle: _Circle, founder: Node) -> None:
        state = founder.circle(circle.id)
        mandate = protocol.Mandate(
            target=circle.target,
            demand=tuple((p, u) for p, u in _pairs(state.demand_curve())),
        )
        vendors = self.desks[circle.place]
        outcomes: list[Outcome | None] = [None] * len(vendors)

        async def ask(i: int, vendor: SimVendor) -> None:
            outcomes[i] = await haggle(
                founder, vendor, circle.id, mandate=mandate, formation=self.scenario.formation
            )

        # A reverse auction: every vendor of the place at once. Each that agrees
        # publishes its offer; the circle's rules clear at the cheapest.
        async with trio.open_nursery() as auction:
            for i, vendor in enumerate(vendors):
                auction.start_soon(ask, i, vendor)
        circle.outcomes = [o for o in outcomes if o is not None]
        circle.offers = sum(o.price is not None for o in circle.outcomes)

    def _record(self, circle: _Circle) -> CircleRecord:
        founder = circle.founder.node
        if founder is None or not circle.id:
            return _empty_record(circle)
        state = founder.circle(circle.id)
        status = state.status
        outcome = {
            protocol.CircleStatus.CLOSED: "deal",
            protocol.CircleStatus.EXPIRED: "expired",
            protocol.CircleStatus.CANCELLED: "cancelled",
        }.get(status, "open")
        deal = state.deal
        vendor = self._vendor_of(deal.signer, circle.place) if deal is not None else None
        winner = next((o for o in circle.outcomes if o.vendor is vendor), None)
        shown = winner or max(
            circle.outcomes, key=lambda o: (o.rounds, o.vendor.name), default=None
        )
        price = deal.message.unit_price if deal is not None else None
        list_price = vendor.group.list_price if vendor is not None else None
        negotiation_moves = sum(o.moves for o in circle.outcomes)
        messages = (
            1
            + circle.pledges
            + circle.offers
            + len(founder.certificates(circle.id))
            + (deal is not None)
            + negotiation_moves
        )
        return CircleRecord(
            id=circle.id.hex(),
            place=circle.place,
            founded=round(circle.founded, 6),
            members=len(state.members()),
            target=circle.target,
            pledged=state.progress()[0],
            outcome=outcome,
            time_to_quorum=None if circle.quorum_at is None else round(circle.quorum_at, 6),
            clearing_price=price,
            list_price=list_price,
            discount=(
                round(1 - price / list_price, 6)
                if price is not None and list_price is not None
                else None
            ),
            vendor=vendor.name if vendor is not None else "",
            messages=messages,
            rounds=shown.rounds if shown is not None else 0,
            price_path=shown.path if shown is not None else (),
        )

    # ----------------------------------------------------------- partitions
    async def _partition(self, partition: Any) -> None:
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


def _pairs(curve: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(price, units at that price alone) from a cumulative (price, demand) curve."""
    pairs = []
    before = 0
    for price, demand in curve:
        if demand > before:
            pairs.append((price, demand - before))
        before = demand
    return pairs


def _empty_record(circle: _Circle) -> CircleRecord:
    return CircleRecord(
        id=circle.id.hex(),
        place=circle.place,
        founded=round(circle.founded, 6),
        members=0,
        target=circle.target,
        pledged=0,
        outcome="open",
        time_to_quorum=None,
        clearing_price=None,
        list_price=None,
        discount=None,
        vendor="",
        messages=0,
        rounds=0,
        price_path=(),
    )


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
        async with desk:
            task_status.started(node)
            await trio.sleep_forever()
