"""The node: circles over a transport, with a durable store, sync and events.

Theory of operation: a :class:`Node` is an ``async with`` block. Entering it
opens the SQLite store in the data directory, opens a transport (py-libp2p by
default, or the in-memory twin) inside the node's own nursery, replays the
store through ``protocol`` to rebuild every circle's state, subscribes to the
announce topic and to each joined circle's topic, and starts the background
tasks: gossip delivery, anti-entropy sync, and sync with every peer that
connects. Leaving the block cancels the nursery: cancellation is the shutdown
path, and the transport and store close on the way out.

Every envelope, from gossip or from sync, passes one door: decode (strict,
signature last), admission (right circle, not dated more than five minutes
ahead, and the per-kind rules of :mod:`circles._node_admission`, decided
against the circle's charter alone so that every node keeps the same set),
then the store (idempotent by id) and the circle's state, which is a pure
function of the set of messages. Messages the node signs itself are on disk, committed, before
the call that made them returns and before they are published; a pledge's
sequence number is reserved durably before it is signed, so a crash can never
make the node sign two pledges with one sequence number.

Gossip is the fast path, sync the sure one. Own pledges are gossiped within a
budget (a token bucket); past it, only each circle's latest unsent pledge is
gossiped as the budget refills, and peers fetch the superseded ones by sync,
in bulk. Anti-entropy asks one peer per round, and a newly followed circle
catches up from one peer: costs that stay flat however many peers a node has.

This module holds the lifecycle, the background tasks and the queries; the
intake (``_node_intake``), the node's own moves (``_node_own``) and
certificates and deals (``_node_certificates``) are parts over a shared core
(``_node_core``), and what a circle's log admits is ``_node_admission``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import trio

import protocol
from protocol import Envelope

from . import _node_intake
from ._datadir import NodeLock
from ._node_admission import RecentlyStored, RefusedIds
from ._node_certificates import _Certificates
from ._node_core import NodeError, OwnHistoryUnknown, PledgeRefused, log
from ._node_events import CircleUpdated, EventStream, NodeEvent
from ._node_intake import _Intake, _LogView
from ._node_own import _GossipPacer, _OwnMoves
from ._store import SetAside, Store, StoreCondition, StoredEnvelope
from ._syncer import Syncer
from ._topics import ANNOUNCE_TOPIC, circle_topic
from ._transport import PeerEventKind, PeerId, Transport, TransportError

__all__ = [
    "EventStream",
    "Node",
    "NodeError",
    "OwnHistoryUnknown",
    "PledgeRefused",
    "TransportFactory",
]

TransportFactory = Callable[[protocol.Identity], contextlib.AbstractAsyncContextManager[Transport]]
"""Opens a transport for an identity, e.g. ``MemoryNetwork().open_transport``."""


class Node(_Intake, _OwnMoves, _Certificates):
    """A member's (or a vendor's) node. Use it as ``async with Node(...) as node``.

    Args:
        identity: the member's key pair; it also names the node on the network.
        data_dir: directory holding the node's SQLite store (created if missing).
        transport: opens the network transport; by default a py-libp2p host
            listening on ``listen`` (TCP, Noise, Yamux, gossipsub).
        listen: multiaddrs to listen on (default: a free port on 127.0.0.1).
        bootstrap: multiaddrs (with ``/p2p/<peer id>``) to dial at start.
        mdns: discover peers on the LAN with mDNS.
        clock: UNIX time in seconds; defaults to ``time.time``.
        sync_interval: seconds between anti-entropy sync rounds.
        auto_countersign: as a vendor, countersign every valid certificate
            for one of our own offers as soon as it arrives.
        assemble_delay: seconds a member waits for the circle to settle before
            assembling a quorum certificate; members further down the
            deterministic order wait multiples of it (so usually one member
            assembles, and any member will if that one is gone).
        tick: seconds between deadline checks and store flushes (a simulation
            of thousands of nodes raises it to keep virtual time cheap).
        memory_store: keep the store in memory (``Store.open_memory``) instead
            of ``data_dir``: nothing survives the node; for simulations.
        gossip_rate: own pledges gossiped per second once ``gossip_burst`` is
            spent. Past it a pledge still returns at once (it is on disk), but
            only a circle's latest unsent pledge of ours is gossiped when the
            rate allows; peers fetch the superseded ones by sync. Every other
            message is gossiped at once.
        gossip_burst: own pledges gossiped back to back before the rate applies.
    """

    def __init__(
        self,
        identity: protocol.Identity,
        data_dir: str | Path,
        *,
        transport: TransportFactory | None = None,
        listen: Sequence[str] = ("/ip4/127.0.0.1/tcp/0",),
        bootstrap: Sequence[str] = (),
        mdns: bool = False,
        clock: Callable[[], float] | None = None,
        sync_interval: float = 5.0,
        auto_countersign: bool = False,
        assemble_delay: float = 0.5,
        tick: float = 1.0,
        memory_store: bool = False,
        gossip_rate: float = 1.0,
        gossip_burst: int = 5,
    ) -> None:
        if not isinstance(identity, protocol.Identity):
            raise NodeError("Node needs a protocol.Identity; see circles.load_identity")
        if not gossip_rate > 0 or gossip_burst < 1:
            raise NodeError(
                "gossip_rate must be positive and gossip_burst at least 1",
                reason="bad-argument",
            )
        self.identity = identity
        self.data_dir = Path(data_dir)
        self._transport_factory = transport
        self._listen = tuple(listen)
        self._bootstrap = tuple(bootstrap)
        self._mdns = mdns
        self._clock = clock or time.time
        self._sync_interval = sync_interval
        self._auto_countersign = auto_countersign
        self._stack: contextlib.AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None
        self._transport: Transport | None = None
        self._store: Store | None = None
        self._syncer: Syncer | None = None
        self._states: dict[bytes, Any] = {}
        self._joined: set[bytes] = set()
        self._subscribed: set[bytes] = set()
        self._validated: dict[bytes, Envelope[protocol.Message]] = {}
        self._refused_ids = RefusedIds()
        self._recently_stored = RecentlyStored()
        self._listeners: list[trio.MemorySendChannel[NodeEvent]] = []
        self._changed = trio.Event()
        self._own_lock = trio.Lock()
        self._dropped_events: dict[int, int] = {}
        self._my_offers: set[bytes] = set()
        self._certificates: dict[bytes, list[Envelope[protocol.Certificate]]] = {}
        # Each circle's open requests for quote, under their caps (see _Intake._take_rfq).
        self._rfq_logs: dict[bytes, protocol.RfqLog] = {}
        self._assembled: set[bytes] = set()
        self._assemble_delay = assemble_delay
        self._tick = tick
        self._memory_store = memory_store
        self._gossip = _GossipPacer(rate=gossip_rate, burst=gossip_burst)
        # Circles with an on-behind pull running: one at a time per circle, or
        # a node that many peers ask at once would fetch the same envelopes
        # from each of them.
        self._pulling: set[bytes] = set()
        # Envelopes whose apply raised (kept, left out; see _Intake._put_aside),
        # and circles whose clock could not move (see _Intake._stall).
        self._set_aside: dict[bytes, SetAside] = {}
        self._stalled: set[bytes] = set()
        # Circles held but not joined, per founder (see _Intake._unjoined_counts).
        self._unjoined_cache: tuple[tuple[int, int], int, dict[bytes, int]] | None = None
        self._anti_entropy_turn = int.from_bytes(identity.public_key[:4], "big")
        self.refused = 0

    # -------------------------------------------------------------- life
    async def __aenter__(self) -> Node:
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            if self._memory_store:
                self._store = Store.open_memory()
            else:
                self.data_dir.mkdir(parents=True, exist_ok=True)
                # One node per data directory, in this process or any other.
                lock = NodeLock(self.data_dir, node=True)
                lock.acquire()
                stack.callback(lock.release)
                self._store = Store.open(self.data_dir)
            stack.callback(self._store.close)
            self._report_store_condition()
            self._nursery = await stack.enter_async_context(trio.open_nursery())
            # Exit order (last in, first out): the transport closes first, with
            # nothing cancelled yet, then the node's own tasks are cancelled.
            # Closing the transport inside an already cancelled scope left a
            # dialled socket open (a ResourceWarning at exit).
            stack.callback(self._nursery.cancel_scope.cancel)
            opened: contextlib.AbstractAsyncContextManager[Transport]
            if self._transport_factory is None:
                from ._libp2p import open_libp2p_transport  # lazy: costs ~1 s to import

                opened = open_libp2p_transport(self.identity, listen=self._listen, mdns=self._mdns)
            else:
                opened = self._transport_factory(self.identity)
            self._transport = await stack.enter_async_context(opened)
            self._syncer = Syncer(self._transport, _LogView(self), on_behind=self._pull_from)
            self._replay()
            self._transport.set_validator(ANNOUNCE_TOPIC, self._validate_announce)
            announce = await self._transport.subscribe(ANNOUNCE_TOPIC)
            self._nursery.start_soon(self._deliver, announce)
            for circle in sorted(self._joined):
                await self._subscribe(circle)
            self._nursery.start_soon(self._watch_peers)
            self._nursery.start_soon(self._anti_entropy)
            self._nursery.start_soon(self._keep_time)
            self._nursery.start_soon(self._assemble_certificates)
            self._nursery.start_soon(self._gossip_pending)
            for addr in self._bootstrap:
                await self.connect(addr)
        except BaseException:
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()
            await stack.__aexit__(None, None, None)
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._stack is not None and self._nursery is not None
        for channel in self._listeners:
            channel.close()
        stack, self._stack = self._stack, None
        await stack.__aexit__(None, None, None)

    @property
    def store_condition(self) -> StoreCondition:
        """How the node found its store at start (see :attr:`Store.condition`).

        ``"emptied"`` means the store file was there but empty: this member's
        history on this machine, its pledges and their sequence numbers
        included, is gone. ``"new"`` is a first start in this data directory,
        which is also what a deleted store looks like. Either way the node
        fetches a circle's log from peers before its first pledge there, and
        counts above any pledge this key signed before (see :meth:`pledge`).
        """
        return self._running_store().condition

    def _report_store_condition(self) -> None:
        assert self._store is not None
        condition = self._store.condition
        if condition == "emptied":
            log.error(
                "the store %s was there but empty (0 bytes or no tables): this member's history "
                "on this machine, its pledges and their sequence numbers included, is gone. "
                "Starting with an empty store; before pledging in a circle again the node "
                "fetches the circle's log from peers and counts above every pledge this key "
                "signed there. Restore the file from a backup instead if you have one.",
                self._store.path,
            )
        elif condition == "new":
            log.info(
                "first start in %s: a new store; if this key was used before with another "
                "store, its pledges come back from peers before the node pledges again",
                self.data_dir,
            )

    # ----------------------------------------------------------- network
    def addresses(self) -> list[str]:
        """Full multiaddrs (ending in ``/p2p/<peer id>``) others can dial."""
        return self.transport.listen_addrs()

    async def connect(self, addr: str) -> PeerId:
        """Dial a peer by full multiaddr; sync every joined circle with it."""
        return await self.transport.connect(addr)

    # ----------------------------------------------------------- queries
    def circles(self) -> list[bytes]:
        """Ids of every circle the node knows a charter for, joined or not."""
        return sorted(self._states)

    def joined(self) -> list[bytes]:
        """Ids of the circles this node takes part in."""
        return sorted(self._joined)

    def unjoined_circles_full(self) -> bool:
        """True when the node holds as many circles it has not joined as it keeps
        (``MAX_UNJOINED_CIRCLES``): it takes no more announced charters then, and
        a vendor's desk fetches no more circles named by requests for quote."""
        return self._unjoined_counts()[0] >= _node_intake.MAX_UNJOINED_CIRCLES

    def events(self, *, buffer: int = 10_000) -> EventStream:
        """Every event from now on, until the node stops or the stream is closed.

        Use ``async with node.events() as events: async for event in events:``.
        The node never waits for a slow reader: past ``buffer`` unread events,
        new ones are dropped and counted in ``EventStream.dropped``.
        """
        send, receive = trio.open_memory_channel[NodeEvent](buffer)
        self._listeners.append(send)
        return EventStream(
            send,
            receive,
            dropped=lambda: self._dropped_events.get(id(send), 0),
            detach=lambda: self._detach(send),
        )

    def _detach(self, send: trio.MemorySendChannel[NodeEvent]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(send)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; re-checked after every change.

        Bound it with ``trio.fail_after``: nothing here times out by itself.
        """
        while not predicate():
            await self._changed.wait()

    def envelopes(self, circle: bytes) -> list[Envelope[protocol.Message]]:
        """Every stored envelope of a known circle, charter first (offers, deals, ... to show)."""
        self.circle(circle)
        return [protocol.decode(s.data) for s in self._stored_charter_first(circle)]

    def circle_log(
        self, circle: bytes, *, kinds: Iterable[str] | None = None
    ) -> list[StoredEnvelope]:
        """A circle's log as stored, in arrival order: read-only, not verified again.

        Each entry holds the envelope's bytes (``protocol.decode(entry.data)``
        to read it) and what the store files it by (id, kind, signer, when
        received). The log holds what the node admits for the circle (its
        state, and requests for quote addressed to no vendor; see
        docs/node.md), or only ``kinds`` of it, e.g. ``kinds=("rfq",)``.
        Empty for a circle whose charter the node does not hold.
        """
        if isinstance(kinds, str):
            raise NodeError(
                'kinds is a collection of kind names, e.g. ("rfq",)', reason="bad-argument"
            )
        store = self._running_store()
        if circle not in self._states:
            return []
        wanted = None if kinds is None else frozenset(kinds)
        return [
            s
            for s in store.envelopes(circle)
            if (wanted is None or s.kind in wanted) and s.id not in self._set_aside
        ]

    def set_aside(self) -> list[SetAside]:
        """Stored envelopes the node could not apply, oldest first (each with its reason).

        Applying an envelope to its circle raised: a fault in the circle's rules
        (a refusal is an event, never an exception). The node kept the envelope,
        logged it, rebuilt the circle without it and went on; it leaves it out
        at every start, and neither serves nor forwards it. Report it as a bug.
        """
        return sorted(self._set_aside.values(), key=lambda e: (e.since, e.id))

    def log_entry(self, message_id: bytes) -> StoredEnvelope | None:
        """One envelope of any circle's log, by message id, or None if the node lacks it."""
        found = self._running_store().get([message_id])
        return found[0] if found else None

    # -------------------------------------------------------- background
    def _replay(self) -> None:
        """Rebuild every circle from the store; an envelope whose apply raises is set
        aside (see :meth:`set_aside`) and the rest loads, so a restart never fails on one."""
        assert self._store is not None
        self._joined = set(self._store.joined_circles())
        for entry in self._store.set_aside_envelopes():
            self._set_aside[entry.id] = entry
            self._refused_ids.add(entry.id)
        for charter in self._store.charters():
            try:
                envelope = protocol.decode(charter.data)
            except protocol.ProtocolError as exc:  # pragma: no cover - store holds verified data
                log.warning("store holds an invalid charter (%s); skipped", exc.reason)
                continue
            self._apply(envelope, replay=True)
            if charter.id in self._states:  # not if the charter itself was set aside
                self._load(charter.id, replay=True)

    async def _subscribe(self, circle: bytes) -> None:
        if circle in self._subscribed:
            return
        self._subscribed.add(circle)
        topic = circle_topic(circle)
        self.transport.set_validator(topic, self._circle_validator(circle))
        subscription = await self.transport.subscribe(topic)
        assert self._nursery is not None
        self._nursery.start_soon(self._deliver, subscription, circle)
        self._nursery.start_soon(self._catch_up, circle)

    async def _catch_up(self, circle: bytes) -> None:
        """Fetch a newly followed circle's history from one peer (the next if one fails).

        Asking every peer at once fetched the same history from each of them;
        what one peer lacks, anti-entropy and the peers' own pulls bring later.
        """
        peers = sorted(p for p in self.transport.peers() if self.syncer.serves_sync(p))
        start = self._anti_entropy_turn % len(peers) if peers else 0
        for peer in peers[start:] + peers[:start]:
            try:
                with trio.move_on_after(self.syncer.timeout * 2):
                    await self.syncer.sync(circle, peer)
                    return
            except TransportError as exc:
                log.debug("catching up %s from %s failed: %s", circle.hex()[:12], peer, exc)

    def _pull_from(self, circle: bytes, peer: PeerId) -> None:
        if self._nursery is not None and circle in self._joined and circle not in self._pulling:
            self._pulling.add(circle)
            self._nursery.start_soon(self._pull, circle, peer)

    async def _pull(self, circle: bytes, peer: PeerId) -> None:
        try:
            await self.syncer.sync_quietly(circle, peer)
        finally:
            self._pulling.discard(circle)

    async def _watch_peers(self) -> None:
        async for event in self.transport.events():
            if event.kind is PeerEventKind.CONNECTED:
                # A restarted peer comes back with the same id: a refusal seen
                # while its old connection died says nothing about the new one.
                self.syncer.forget_refusal(event.peer)
                for circle in sorted(self._joined):
                    assert self._nursery is not None
                    self._nursery.start_soon(self.syncer.sync_quietly, circle, event.peer)

    async def _keep_time(self) -> None:
        """Hand the clock to every circle once a second, so deadlines take effect.

        Also commits the store's batch of received envelopes: the store only
        checks its batch's age when it is called, and a quiet node calls it
        rarely.
        """
        while True:
            await trio.sleep(self._tick)
            if self._store is not None:
                self._store.flush()
            now = self.now()
            for circle, state in list(self._states.items()):
                if circle in self._stalled:
                    continue
                due = state.next_deadline()
                if due is not None and due <= now:
                    try:
                        events = state.advance(now)
                    except Exception as exc:
                        # A fault in the circle's rules; the state may be half-moved.
                        log.error(
                            "circle %s could not move to the present time (%s: %s); "
                            "rebuilding it from its log. This is a bug in buying-circles: "
                            "please report it",
                            circle.hex()[:12],
                            type(exc).__name__,
                            exc,
                        )
                        self._rebuild(circle)
                        events = []
                    for event in events:
                        self._emit(CircleUpdated(circle=circle, event=event))
                    self._signal()

    async def _anti_entropy(self) -> None:
        """Each interval, sync every joined circle with one peer, taking peers in turn.

        One peer per round keeps the cost flat however many peers a node has
        (asking all of them cost a round trip each, every interval, and starved
        under load); a peer that learns from our summary that we hold messages
        it lacks pulls them (``on_behind``), so news spreads both ways, and any
        difference reaches every node in a number of rounds that grows with the
        log of the network's size.
        """
        while True:
            await trio.sleep(self._sync_interval)
            peers = sorted(p for p in self.transport.peers() if self.syncer.serves_sync(p))
            if not peers:
                continue
            self._anti_entropy_turn += 1
            peer = peers[self._anti_entropy_turn % len(peers)]
            for circle in sorted(self._joined):
                await self.syncer.sync_quietly(circle, peer)
