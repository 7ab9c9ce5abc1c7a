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
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import trio

import protocol
from protocol import Envelope
from protocol._codec import pack
from protocol._schema import to_wire

from ._errors import CirclesError
from ._node_admission import AdmissionRefused, RefusedIds, check_admissible, circle_of
from ._node_events import CircleDiscovered, CircleUpdated, EventStream, NodeEvent, Refused
from ._store import Store, StoredEnvelope
from ._syncer import Syncer
from ._topics import ANNOUNCE_TOPIC, circle_topic
from ._transport import (
    MAX_GOSSIP_MESSAGE,
    PeerEventKind,
    PeerId,
    Transport,
    TransportError,
    Verdict,
)

__all__ = ["EventStream", "Node", "NodeError", "TransportFactory"]

log = logging.getLogger("circles.node")

TransportFactory = Callable[[protocol.Identity], contextlib.AbstractAsyncContextManager[Transport]]
"""Opens a transport for an identity, e.g. ``MemoryNetwork().open_transport``."""

#: Messages dated further ahead than this by our clock are ignored at admission.
MAX_FUTURE_SKEW = 300
#: Validated envelopes waiting for their delivery, at most.
_MAX_VALIDATED = 10_000


class NodeError(CirclesError):
    """A node call that cannot be done as asked (see ``reason``)."""

    reason = "node-error"


class Node:
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
        self._listeners: list[trio.MemorySendChannel[NodeEvent]] = []
        self._changed = trio.Event()
        self._own_lock = trio.Lock()
        self._dropped_events: dict[int, int] = {}
        self._my_offers: set[bytes] = set()
        self._certificates: dict[bytes, list[Envelope[protocol.Certificate]]] = {}
        self._assembled: set[bytes] = set()
        self._assemble_delay = assemble_delay
        self._tick = tick
        self._memory_store = memory_store
        self._gossip = _GossipPacer(rate=gossip_rate, burst=gossip_burst)
        # Circles with an on-behind pull running: one at a time per circle, or
        # a node that many peers ask at once would fetch the same envelopes
        # from each of them.
        self._pulling: set[bytes] = set()
        self._anti_entropy_turn = int.from_bytes(identity.public_key[:4], "big")
        self.refused = 0

    # ------------------------------------------------------------------ life
    async def __aenter__(self) -> Node:
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            if self._memory_store:
                self._store = Store.open_memory()
            else:
                self.data_dir.mkdir(parents=True, exist_ok=True)
                self._store = Store.open(self.data_dir)
            stack.callback(self._store.close)
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

    # -------------------------------------------------------------- network
    @property
    def transport(self) -> Transport:
        """The open transport (for addresses, peers and statistics)."""
        if self._transport is None:
            raise NodeError("the node is not running; use it inside `async with`")
        return self._transport

    @property
    def public_key(self) -> bytes:
        """This node's member key."""
        return self.identity.public_key

    def addresses(self) -> list[str]:
        """Full multiaddrs (ending in ``/p2p/<peer id>``) others can dial."""
        return self.transport.listen_addrs()

    async def connect(self, addr: str) -> PeerId:
        """Dial a peer by full multiaddr; sync every joined circle with it."""
        return await self.transport.connect(addr)

    # ------------------------------------------------------------- queries
    def now(self) -> int:
        """The node's clock, in whole UNIX seconds."""
        return int(self._clock())

    def circles(self) -> list[bytes]:
        """Ids of every circle the node knows a charter for, joined or not."""
        return sorted(self._states)

    def joined(self) -> list[bytes]:
        """Ids of the circles this node takes part in."""
        return sorted(self._joined)

    def circle(self, circle: bytes) -> Any:
        """The current state of a known circle (see protocol's ``CircleState``)."""
        state = self._states.get(circle)
        if state is None:
            raise NodeError(
                f"unknown circle {circle.hex()[:16]}…: join it first", reason="unknown-circle"
            )
        return state

    def charter(self, circle: bytes) -> protocol.Charter:
        """The charter of a known circle."""
        return self.circle(circle).charter.message  # type: ignore[no-any-return]

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

    # ----------------------------------------------------------- own moves
    async def found_circle(
        self,
        *,
        title: str,
        unit: str,
        target: int,
        currency: str,
        deadline: int,
        ceiling: int | None = None,
        place: str | None = None,
        tags: Iterable[str] = (),
        invite_only: bool = False,
        members_invite: bool = False,
        on_miss: str = "expire",
    ) -> bytes:
        """Found a circle, announce it, and return its id."""
        charter = protocol.Charter(
            title=title,
            unit=unit,
            target=target,
            currency=currency,
            ceiling=ceiling,
            deadline=deadline,
            place=place,
            tags=tuple(tags),
            invite_only=invite_only,
            members_invite=members_invite,
            on_miss=on_miss,
            created=self.now(),
        )
        envelope = await self._sign_own(charter)
        self._store_joined(envelope.id)
        await self._subscribe(envelope.id)
        await self.transport.publish(ANNOUNCE_TOPIC, envelope.data)
        await self.transport.publish(circle_topic(envelope.id), envelope.data)
        return envelope.id

    async def join(self, circle: bytes, *, timeout: float = 10.0) -> None:
        """Take part in a circle: fetch it from peers if needed, then follow it."""
        if circle not in self._states:
            with trio.move_on_after(timeout):
                for peer in sorted(self.transport.peers()):
                    await self.syncer.sync_quietly(circle, peer)
                    if circle in self._states:
                        break
        if circle not in self._states:
            raise NodeError(
                f"no connected peer knows circle {circle.hex()[:16]}…; connect to a member first",
                reason="unknown-circle",
            )
        self._store_joined(circle)
        await self._subscribe(circle)

    async def pledge(
        self, circle: bytes, quantity: int, *, max_price: int, tolerance: int = 0
    ) -> Envelope[protocol.Pledge]:
        """Pledge to buy ``quantity`` at a unit price of at most ``max_price``.

        On disk before it returns and before it is published; a later pledge
        supersedes it, and quantity 0 withdraws.
        """
        state = self.circle(circle)
        charter: protocol.Charter = state.charter.message
        if circle not in self._joined:
            raise NodeError("join the circle before pledging", reason="not-joined")
        now = self.now()
        if quantity and now > charter.deadline:
            raise NodeError("the circle's pledge deadline has passed", reason="late")
        if quantity and charter.ceiling is not None and max_price > charter.ceiling:
            raise NodeError(
                f"max_price {max_price} is above the circle's ceiling {charter.ceiling}",
                reason="above-ceiling",
            )
        async with self._own_lock:
            assert self._store is not None
            seq = self._store.reserve_seq(circle)
            pledge = protocol.Pledge(
                circle=circle,
                seq=seq,
                quantity=quantity,
                max_price=max_price if quantity else 0,
                currency=charter.currency,
                tolerance=tolerance if quantity else 0,
                created=now,
            )
            envelope = await self._sign_own(pledge)
        await self._gossip_pledge(circle, envelope.data)
        return envelope

    async def withdraw(self, circle: bytes) -> Envelope[protocol.Pledge]:
        """Withdraw from a circle (a pledge of quantity 0)."""
        return await self.pledge(circle, 0, max_price=0)

    async def offer(
        self,
        circle: bytes,
        *,
        product: str,
        tiers: Sequence[tuple[int, int]],
        capacity: int,
        valid_until: int,
        list_price: int | None = None,
        terms: str = "",
        in_reply_to: bytes | None = None,
    ) -> Envelope[protocol.Offer]:
        """As a vendor, offer volume ``tiers`` of ``(min_quantity, unit_price)`` to a circle."""
        charter = self.charter(circle)
        if circle not in self._joined:
            self._store_joined(circle)
            await self._subscribe(circle)
        offer = protocol.Offer(
            circle=circle,
            product=product,
            currency=charter.currency,
            list_price=list_price if list_price is not None else tiers[0][1],
            tiers=tuple(protocol.Tier(min_quantity=q, unit_price=p) for q, p in tiers),
            capacity=capacity,
            valid_until=valid_until,
            terms=terms,
            loyalty=(),
            in_reply_to=in_reply_to,
            created=self.now(),
        )
        envelope = await self._sign_own(offer)
        await self.transport.publish(circle_topic(circle), envelope.data)
        return envelope

    def certificates(self, circle: bytes) -> list[Envelope[protocol.Certificate]]:
        """Certificates seen for a circle, in arrival order."""
        return list(self._certificates.get(circle, ()))

    async def countersign(
        self, certificate: Envelope[protocol.Certificate]
    ) -> Envelope[protocol.Deal]:
        """As the vendor of its offer, verify ``certificate`` and sign the deal.

        Raises :class:`protocol.InvalidCertificate` (with a reason) when the
        certificate does not hold up against this node's copy of the circle,
        and :class:`NodeError` if this node already signed a deal for the circle.
        """
        cert = certificate.message
        state = self.circle(cert.circle)
        inputs = state.certificate_inputs(cert) if cert.offer in self._my_offers else None
        if inputs is None:
            raise NodeError(
                "this node did not make the offer that certificate names", reason="not-my-offer"
            )
        protocol.verify_certificate(certificate, **inputs)
        async with self._own_lock:
            if state.deal is not None or self._signed_deal_in(cert.circle):
                raise NodeError("a deal for this circle is already signed", reason="deal-exists")
            deal = protocol.Deal(
                circle=cert.circle,
                certificate=certificate.id,
                unit_price=cert.unit_price,
                currency=cert.currency,
                total=cert.total,
                created=max(self.now(), cert.created),
            )
            envelope = await self._sign_own(deal)
        await self.transport.publish(circle_topic(cert.circle), envelope.data)
        return envelope

    def _signed_deal_in(self, circle: bytes) -> bool:
        """True if this node already signed a deal for ``circle`` (the store files
        a deal under its circle, so one circle's rows answer it)."""
        assert self._store is not None
        return any(
            s.kind == "deal" and s.signer == self.public_key for s in self._store.envelopes(circle)
        )

    # ---------------------------------------------------------- internals
    @property
    def syncer(self) -> Syncer:
        if self._syncer is None:
            raise NodeError("the node is not running; use it inside `async with`")
        return self._syncer

    async def _sign_own(self, message: protocol.Message) -> Envelope[Any]:
        envelope = protocol.seal(message, self.identity)
        assert self._store is not None
        self._store.put_own(envelope)
        self._apply(envelope)
        return envelope

    def _store_joined(self, circle: bytes) -> None:
        assert self._store is not None
        self._store.mark_joined(circle)
        self._joined.add(circle)

    def _replay(self) -> None:
        assert self._store is not None
        self._joined = set(self._store.joined_circles())
        for charter in self._store.charters():
            try:
                envelope = protocol.decode(charter.data)
            except protocol.ProtocolError as exc:  # pragma: no cover - store holds verified data
                log.warning("store holds an invalid charter (%s); skipped", exc.reason)
                continue
            self._apply(envelope, replay=True)
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

    def _admit(self, data: bytes, sender: str) -> Envelope[protocol.Message] | Verdict:
        """Checks that need no circle state; the envelope, or the verdict to give.

        Cheapest first: size, then whether we hold it already (a copy that sync
        fetched before gossip brought it is not decoded, nor forwarded again),
        then the decode, whose signature check is the dear part.
        """
        if len(data) > MAX_GOSSIP_MESSAGE:
            self._refuse(b"", "oversize", sender)
            return Verdict.REJECT
        assert self._store is not None
        message_id = protocol.envelope_id(data)
        if message_id in self._store:
            return Verdict.IGNORE
        if message_id in self._refused_ids:
            return Verdict.REJECT  # refused for good before, and counted then
        try:
            envelope = protocol.decode(data)
        except protocol.ProtocolError as exc:
            self._refused_ids.add(message_id)
            self._refuse(b"", exc.reason, sender)
            return Verdict.REJECT
        created: int = getattr(envelope.message, "created", 0)
        if created > self.now() + MAX_FUTURE_SKEW:
            return Verdict.IGNORE
        return envelope

    def _circle_validator(self, circle: bytes) -> Callable[[bytes, PeerId], Verdict]:
        def validate(data: bytes, sender: PeerId) -> Verdict:
            admitted = self._admit(data, sender)
            if isinstance(admitted, Verdict):
                return admitted
            verdict = self._judge(circle, admitted, sender)
            if verdict is not None:
                return verdict
            self._keep_validated(admitted)
            return Verdict.ACCEPT

        return validate

    def _judge(
        self, circle: bytes, envelope: Envelope[protocol.Message], sender: str
    ) -> Verdict | None:
        """None if ``circle``'s log admits ``envelope`` (see ``_node_admission``); else
        the verdict to give.

        A refusal the charter decides is final: it is counted and reported
        once, and the id remembered, so a copy sent again (by gossip or by
        every sync round) is dropped before it is decoded.
        """
        named = circle_of(envelope)
        if named is None:
            # A kind that names no circle (a receipt) belongs in no circle's log.
            self._refused_ids.add(envelope.id)
            self._refuse(circle, "not-circle-traffic", sender)
            return Verdict.REJECT
        if named != circle:
            # Not remembered: the same envelope is welcome on its own circle's topic.
            self._refuse(circle, "wrong-circle", sender)
            return Verdict.REJECT
        state = self._states.get(circle)
        if state is None and not isinstance(envelope.message, protocol.Charter):
            # Nothing is kept before its charter, which decides the rest; sync
            # serves a circle's charter first, so an honest peer never sends this.
            return Verdict.IGNORE
        try:
            check_admissible(envelope, None if state is None else state.charter)
        except AdmissionRefused as exc:
            self._refused_ids.add(envelope.id)
            self._refuse(circle, exc.reason, sender)
            log.debug("%s", exc)
            return Verdict.REJECT
        return None

    def _keep_validated(self, envelope: Envelope[protocol.Message]) -> None:
        """Hand a validated envelope to delivery, so it is not decoded twice.

        A delivery the subscription's buffer dropped never collects its entry:
        past a bound they are all forgotten, and delivery decodes again.
        """
        if len(self._validated) >= _MAX_VALIDATED:
            self._validated.clear()
        self._validated[envelope.id] = envelope

    def _validate_announce(self, data: bytes, sender: PeerId) -> Verdict:
        admitted = self._admit(data, sender)
        if isinstance(admitted, Verdict):
            return admitted
        if not isinstance(admitted.message, protocol.Charter):
            self._refuse(b"", "not-a-charter", sender)
            return Verdict.REJECT
        self._keep_validated(admitted)
        return Verdict.ACCEPT

    def _refuse(self, circle: bytes, reason: str, sender: str) -> None:
        self.refused += 1
        log.debug("refused an envelope from %s: %s", sender, reason)
        self._emit(Refused(circle=circle, reason=reason, peer=str(sender)))

    async def _deliver(self, subscription: Any, circle: bytes | None = None) -> None:
        async for delivery in subscription:
            envelope = self._validated.pop(delivery.message_id, None)
            if envelope is None:
                # Our own publications (the transport may not validate them) and
                # deliveries whose validated entry was forgotten are judged again.
                admitted = self._admit(delivery.data, delivery.sender)
                if isinstance(admitted, Verdict):
                    continue
                if circle is not None and (
                    self._judge(circle, admitted, delivery.sender) is not None
                ):
                    continue
                envelope = admitted
            self._take(envelope)
            await trio.lowlevel.checkpoint()

    def _take(self, envelope: Envelope[protocol.Message]) -> bool:
        """Store and apply one admitted envelope; True if it was new."""
        assert self._store is not None
        if not self._store.put(envelope):
            return False
        self._apply(envelope)
        return True

    def _apply(self, envelope: Envelope[Any], *, replay: bool = False) -> None:
        message = envelope.message
        circle = circle_of(envelope)
        if circle is None:
            return
        if isinstance(message, protocol.Charter):
            if circle not in self._states:
                self._states[circle] = protocol.CircleState(envelope)
                if not replay:
                    self._emit(CircleDiscovered(circle=circle, charter=envelope))
                    self._load(circle, replay=False)
                self._signal()
            return
        state = self._states.get(circle)
        if state is None:
            return  # kept in the store; applied when the charter arrives
        if isinstance(message, protocol.Offer) and envelope.signer == self.public_key:
            self._my_offers.add(envelope.id)
        if isinstance(message, protocol.Certificate):
            self._certificates.setdefault(circle, []).append(envelope)
            if envelope.signer == self.public_key:
                self._assembled.add(_certificate_key(message))
            if (
                not replay
                and self._auto_countersign
                and message.offer in self._my_offers
                and self._nursery is not None
            ):
                self._nursery.start_soon(self._countersign_quietly, envelope)
        events = state.apply(envelope, self.now())
        for event in events:
            if not replay:
                self._emit(CircleUpdated(circle=circle, event=event))
        self._signal()

    def _load(self, circle: bytes, *, replay: bool) -> None:
        """Apply a known circle's stored envelopes (not its charter), and forget those
        its log does not admit.

        Only a store that an older version filled holds such envelopes (it
        kept every kind, and kept messages before their charter): they must
        go, or sync would serve them and peers' digests would never match.
        """
        assert self._store is not None
        charter = self._states[circle].charter
        junk: list[bytes] = []
        for stored in self._store.envelopes(circle):
            if stored.kind == "charter":
                continue
            try:
                envelope = protocol.decode(stored.data)
                if circle_of(envelope) != circle:
                    raise AdmissionRefused("filed under another circle", reason="wrong-circle")
                check_admissible(envelope, charter)
            except (protocol.ProtocolError, AdmissionRefused) as exc:
                log.debug("forgetting stored %s: %s", stored.id.hex()[:12], exc)
                junk.append(stored.id)
                continue
            self._apply(envelope, replay=replay)
        if junk:
            removed = self._store.discard(junk)
            log.info(
                "forgot %d stored envelopes that circle %s does not admit",
                removed,
                circle.hex()[:12],
            )

    def _signal(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _emit(self, event: NodeEvent) -> None:
        for channel in list(self._listeners):
            try:
                channel.send_nowait(event)
            except trio.WouldBlock:
                self._dropped_events[id(channel)] = self._dropped_events.get(id(channel), 0) + 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                with contextlib.suppress(ValueError):
                    self._listeners.remove(channel)

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

    async def _countersign_quietly(self, certificate: Envelope[protocol.Certificate]) -> None:
        try:
            await self.countersign(certificate)
        except (NodeError, protocol.ProtocolError) as exc:
            log.info("did not countersign %s: %s", certificate.id.hex()[:12], exc)

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
                due = state.next_deadline()
                if due is not None and due <= now:
                    for event in state.advance(now):
                        self._emit(CircleUpdated(circle=circle, event=event))
                    self._signal()

    async def _assemble_certificates(self) -> None:
        """Assemble and publish a certificate once a joined circle reaches quorum."""
        while True:
            await self._changed.wait()
            await trio.sleep(self._assemble_delay)
            for circle in sorted(self._joined):
                await self._maybe_assemble(circle)

    async def _maybe_assemble(self, circle: bytes) -> None:
        state = self._states.get(circle)
        if state is None or state.status is not protocol.CircleStatus.QUORUM:
            return
        if state.deal is not None:
            return
        try:
            body = state.certificate()
        except protocol.ProtocolError:
            return
        key = _certificate_key(body)
        if key in self._assembled:
            return
        if any(_certificate_key(c.message) == key for c in self._certificates.get(circle, ())):
            self._assembled.add(key)
            return
        signers = sorted({state.pledge(a.pledge).signer for a in body.allocations})
        if self.public_key not in signers:
            return
        rank = signers.index(self.public_key)
        if rank:
            # Others first: wait our turn, then re-check that nobody did it.
            self._nursery_start(self._assemble_later, circle, key, rank * 4 * self._assemble_delay)
            return
        await self._publish_certificate(circle, body, key)

    def _nursery_start(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)

    async def _assemble_later(self, circle: bytes, key: bytes, delay: float) -> None:
        await trio.sleep(delay)
        state = self._states.get(circle)
        if state is None or state.deal is not None or key in self._assembled:
            return
        if any(_certificate_key(c.message) == key for c in self._certificates.get(circle, ())):
            return
        try:
            body = state.certificate()
        except protocol.ProtocolError:
            return
        if _certificate_key(body) == key:
            await self._publish_certificate(circle, body, key)

    async def _publish_certificate(
        self, circle: bytes, body: protocol.Certificate, key: bytes
    ) -> None:
        self._assembled.add(key)
        envelope = await self._sign_own(body)
        await self.transport.publish(circle_topic(circle), envelope.data)

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

    async def _gossip_pledge(self, circle: bytes, data: bytes) -> None:
        """Gossip an own pledge now if the pace allows; else keep it as the circle's latest."""
        # A newer pledge makes any unsent older one of ours moot.
        self._gossip.pending.pop(circle, None)
        if self._gossip.take(trio.current_time()):
            await self.transport.publish(circle_topic(circle), data)
        else:
            self._gossip.pending[circle] = data
            self._gossip.wake()

    async def _gossip_pending(self) -> None:
        """Gossip the latest held-back pledge of each circle as the pace allows."""
        pacer = self._gossip
        while True:
            if not pacer.pending:
                await pacer.wait()
                continue
            wait = pacer.until_token(trio.current_time())
            if wait > 0:
                await trio.sleep(wait)
                continue
            circle = next(iter(pacer.pending))
            data = pacer.pending.pop(circle)
            pacer.take(trio.current_time())
            with contextlib.suppress(TransportError):
                await self.transport.publish(circle_topic(circle), data)

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
        return [s for s in store.envelopes(circle) if wanted is None or s.kind in wanted]

    def log_entry(self, message_id: bytes) -> StoredEnvelope | None:
        """One envelope of any circle's log, by message id, or None if the node lacks it."""
        found = self._running_store().get([message_id])
        return found[0] if found else None

    def _running_store(self) -> Store:
        if self._store is None:
            raise NodeError("the node is not running; use it inside `async with`")
        return self._store

    def _stored_charter_first(self, circle: bytes) -> list[StoredEnvelope]:
        """A circle's stored envelopes in arrival order, but the charter first, so
        whoever applies them has the circle's rules before anything else."""
        assert self._store is not None
        return sorted(self._store.envelopes(circle), key=lambda s: s.kind != "charter")


class _GossipPacer:
    """A token bucket for gossiping own pledges, and the pledges it held back.

    Why: py-libp2p gossip costs every host about a millisecond per copy it
    receives, and a burst past what the mesh carries was dropped at its queues
    or delayed for seconds, starving sync. Only a member's latest pledge counts
    in a circle, so the superseded ones need not be gossiped at all: they are
    on disk, and peers fetch them by sync in bulk, at a fraction of the cost.
    """

    def __init__(self, *, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp: float | None = None
        #: Circle id -> the latest own pledge not gossiped yet (oldest circle first).
        self.pending: dict[bytes, bytes] = {}
        self._wakeup = trio.Event()

    def _refill(self, now: float) -> None:
        if self.stamp is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, now: float) -> bool:
        """Spend a token if there is one."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def until_token(self, now: float) -> float:
        """Seconds until a token is available (0 if one is)."""
        self._refill(now)
        return max(0.0, (1.0 - self.tokens) / self.rate)

    def wake(self) -> None:
        self._wakeup.set()

    async def wait(self) -> None:
        await self._wakeup.wait()
        self._wakeup = trio.Event()


def _certificate_key(body: protocol.Certificate) -> bytes:
    """Identifies a certificate's content whoever signed it."""
    return pack(to_wire(body))


class _LogView:
    """The syncer's view of the node's store."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def ids(self, circle: bytes) -> set[bytes] | None:
        store = self._node._store
        if store is None or circle not in self._node._states:
            return None
        return set(store.ids(circle))

    def envelopes(self, circle: bytes) -> Iterable[tuple[bytes, bytes]]:
        # The charter first, so a requester that lacks it can apply the rest at once.
        return [(s.id, s.data) for s in self._node._stored_charter_first(circle)]

    async def ingest(self, circle: bytes, data: bytes, peer: PeerId) -> bool:
        admitted = self._node._admit(data, peer)
        if isinstance(admitted, Verdict) or self._node._judge(circle, admitted, peer) is not None:
            return False
        return self._node._take(admitted)
