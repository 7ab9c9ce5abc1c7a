"""The vendor's desk: serves ``/buying-circles/negotiate/1.0.0`` and bids in reverse auctions.

Theory of operation: a :class:`VendorDesk` is an ``async with`` block around a
running :class:`~circles.Node`. It installs a handler for negotiation
requests (see :mod:`circles._haggle` for the frames) and keeps one
:class:`protocol.Negotiation` per open session, with a
:class:`~circles.Negotiator` playing the vendor's strategy. Each request
carries one circle move; the desk applies it to the session's machine and
answers with the strategy's move, or with a refusal when the machine (or a
limit of the desk) refuses the move. A refusal changes nothing, so a peer
sending garbage, other people's sessions or out-of-turn moves only gets
refusals, and the desk keeps serving everyone else.

Only the request's signer may move for the circle, and it must ask from its
own peer id (which embeds its key), so nobody else can open, steer or end its
session. The desk bounds the number of open sessions (overall and per peer),
the size of each frame and how far ahead a session's deadline may lie; a
session is forgotten as soon as it ends (agreement, rejection, walk-away or
deadline), keeping only its last answer, in a bounded memory, so that a
retried request gets the same answer again.

The desk does not join a circle to negotiate with it: anyone may name any
circle in a request for quote, even one made up for the purpose, and a node
follows a joined circle for good. It fetches an unknown circle's charter and
pledges from its peers (only while the node holds fewer circles it has not
joined than it keeps, ``MAX_UNJOINED_CIRCLES``; else it refuses with
"unknown-circle"), and joins the circle when a session agrees, syncing its
pledges before it signs the offer.

When a session agrees, the desk publishes the agreed price as an ordinary
:class:`protocol.Offer` on the circle's topic (one tier at the agreed price,
for the agreed quantity), so the circle's certificate and deal path closes
it. Run the vendor's node with ``auto_countersign=True`` (or countersign
certificates yourself) to sign the deal.

The offer's capacity is every unit the circle pledged at the agreed price (at
least the agreed quantity), capped by what the vendor can supply: ``capacity``
(the same for every circle) or ``capacity_for(agreement)`` (asked just before
the offer is signed, so a stock ledger can hold what it answers). The circle's
fill rule then admits pledges up to that capacity, so a circle that outgrew
the vendor's stock still buys what the vendor has; with nothing to supply, no
offer is published (:attr:`DeskStatistics.unsupplied`).

With ``bid_auctions`` the desk also answers requests for quote published on
the topics of circles the node follows (reverse auctions) with the opening
price of its strategy, a sealed bid sent to the request's signer (see
:mod:`circles._haggle_bidder`).

The vendor's machine does not enforce the circle's mandate (the vendor cannot
tell which pledges the circle counts): it takes a mandate that covers any
price, and the circle's own machine and the certificate rules hold the line.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import trio

import protocol
from protocol import Negotiation, QuoteRequest

from ._haggle import (
    MAX_MOVE_SIZE,
    HaggleError,
    decode_request,
    encode_over,
    encode_refused,
    encode_reply_move,
)
from ._haggle_bidder import Bidder, permissive_mandate
from ._node import Node, NodeError
from ._strategies import Negotiator, Strategy, StrategyError
from ._topics import NEGOTIATE_PROTOCOL
from ._transport import PeerId, public_key_of

__all__ = ["CapacityFor", "DeskStatistics", "StrategyFor", "VendorDesk"]

log = logging.getLogger("circles.haggle")

StrategyFor = Callable[[protocol.Envelope[QuoteRequest]], Strategy | None]
"""Chooses the vendor's strategy for a request for quote; None declines it."""

CapacityFor = Callable[[protocol.Agreement], int | None]
"""The most units the vendor will supply for an agreement (None: no limit)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeskStatistics:
    """Counters of one vendor desk."""

    open_sessions: int
    """Sessions open right now."""
    opened: int
    """Sessions opened since the desk started."""
    answered: int
    """Moves applied and answered."""
    refused: int
    """Requests answered with a refusal."""
    agreements: int
    """Sessions that ended in agreement."""
    bids: int
    """Offers made in reverse auctions."""
    bids_refused: int
    """Of those, bids that take no part: refused by the auctioneer (see
    :attr:`VendorDesk.bid_refusals`) or never answered."""
    errors: int
    """Requests that hit an unexpected error in the desk (a bug; answered with a refusal)."""
    capped: int = 0
    """Agreed offers whose capacity the vendor's capacity cut below what the circle pledged."""
    unsupplied: int = 0
    """Agreements left without an offer: the vendor's capacity for them was 0."""


class _Refusal(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class _Session:
    negotiation: Negotiation
    player: Negotiator | None
    peer: PeerId
    last_move: bytes = b""
    reply: bytes = b""


class VendorDesk:
    """Serves negotiations for a vendor's node; use it as ``async with VendorDesk(node, ...)``.

    Args:
        node: the vendor's running node.
        strategy: the strategy for every session; or give ``strategy_for``.
        strategy_for: chooses a strategy per request for quote (None declines).
        bid_auctions: answer requests for quote published on followed circles.
        max_sessions: most sessions open at once; more are refused ("busy").
        max_sessions_per_peer: most open sessions per peer ("busy").
        max_duration: seconds from now to a session's deadline, at most ("too-long").
        offer_valid_for: seconds the vendor's proposals and published offers stay valid.
        join_timeout: seconds to fetch an unknown circle from peers when a session opens.
        remember: ended sessions whose last answer is kept for retries.
        terms: the terms text of every offer.
        capacity: the most units an agreed offer or an auction bid holds, for
            every circle.
        capacity_for: the most units for one agreement (None: no limit); called
            just before its offer is signed. Give at most one of the two. A desk
            with ``capacity_for`` does not bid in auctions: a bid is an offer
            made before any agreement the hook could judge.
    """

    def __init__(
        self,
        node: Node,
        *,
        strategy: Strategy | None = None,
        strategy_for: StrategyFor | None = None,
        bid_auctions: bool = True,
        max_sessions: int = 256,
        max_sessions_per_peer: int = 8,
        max_duration: int = 24 * 3600,
        offer_valid_for: int = 24 * 3600,
        join_timeout: float = 5.0,
        remember: int = 4096,
        terms: str = "",
        capacity: int | None = None,
        capacity_for: CapacityFor | None = None,
    ) -> None:
        if capacity is not None and capacity_for is not None:
            raise HaggleError(
                "give at most one of capacity and capacity_for", reason="bad-argument"
            )
        if capacity is not None and capacity < 1:
            raise HaggleError("the desk's capacity must be at least 1", reason="bad-argument")
        if (strategy is None) == (strategy_for is None):
            raise HaggleError(
                "give exactly one of strategy and strategy_for", reason="bad-argument"
            )
        if min(max_sessions, max_sessions_per_peer, max_duration, offer_valid_for) < 1:
            raise HaggleError("the desk's limits must be at least 1", reason="bad-argument")
        self.node = node
        self._strategy_for: StrategyFor = strategy_for or (lambda _rfq: strategy)
        self._bid_auctions = bid_auctions and capacity_for is None
        self._max_sessions = max_sessions
        self._max_per_peer = max_sessions_per_peer
        self._max_duration = max_duration
        self._valid_for = offer_valid_for
        self._join_timeout = join_timeout
        self._remember = max(1, remember)
        self._terms = terms
        self._capacity_for: CapacityFor = capacity_for or (lambda _agreement: capacity)
        self._sessions: dict[bytes, _Session] = {}
        self._opening: dict[bytes, PeerId] = {}
        self._ended: OrderedDict[bytes, tuple[bytes, bytes]] = OrderedDict()
        self._bidder = Bidder(
            node,
            self._strategy_for,
            max_open_per_signer=max_sessions_per_peer,
            max_duration=max_duration,
            valid_for=offer_valid_for,
            remember=self._remember,
            terms=terms,
            capacity=capacity,
        )
        self._agreements: list[protocol.Agreement] = []
        self._nursery: trio.Nursery | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._counts = dict.fromkeys(
            ("opened", "answered", "refused", "errors", "capped", "unsupplied"), 0
        )

    # ------------------------------------------------------------------ life
    async def __aenter__(self) -> VendorDesk:
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            self._nursery = await stack.enter_async_context(trio.open_nursery())
            # Last in, first out: stop serving, then cancel the desk's own tasks.
            stack.callback(self._nursery.cancel_scope.cancel)
            stack.callback(self._unserve)
            if self._bid_auctions:
                self._nursery.start_soon(self._bidder.run, self.node.events(), self._nursery)
            self._nursery.start_soon(self._sweep)
            self.node.transport.set_handler(
                NEGOTIATE_PROTOCOL, self._handle, max_request=MAX_MOVE_SIZE + 64
            )
        except BaseException:
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()
            await stack.__aexit__(None, None, None)
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(None, None, None)

    def _unserve(self) -> None:
        # The node may have stopped first: then there is nothing to unhook.
        with contextlib.suppress(NodeError):
            self.node.transport.set_handler(NEGOTIATE_PROTOCOL, None)

    # --------------------------------------------------------------- queries
    @property
    def agreements(self) -> tuple[protocol.Agreement, ...]:
        """Every agreement the desk reached, in order."""
        return tuple(self._agreements)

    @property
    def bid_refusals(self) -> dict[bytes, str]:
        """Why recent auction bids take no part: offer id -> the auctioneer's reason.

        Reasons: "closed" (the bid reached the auctioneer after the auction's
        close), "too-late", "already-bid", "unknown-auction", ... or the
        transport's ("timeout", "unreachable", "unsupported") if none came.
        """
        return dict(self._bidder.refusals)

    def statistics(self) -> DeskStatistics:
        """Current counters."""
        return DeskStatistics(
            open_sessions=len(self._sessions),
            agreements=len(self._agreements),
            bids=self._bidder.bids,
            bids_refused=self._bidder.refused,
            **self._counts,
        )

    # -------------------------------------------------------------- serving
    async def _handle(self, peer: PeerId, data: bytes) -> bytes:
        try:
            reply = await self._serve(peer, data)
        except _Refusal as refusal:
            self._counts["refused"] += 1
            return encode_refused(refusal.reason, refusal.detail)
        except HaggleError as exc:
            self._counts["refused"] += 1
            return encode_refused(exc.reason, str(exc))
        except protocol.ProtocolError as exc:
            self._counts["refused"] += 1
            return encode_refused(exc.reason, str(exc))
        except Exception:  # a bug here must not stop the desk serving others
            log.exception("the vendor desk failed on a request from %s", peer)
            self._counts["errors"] += 1
            self._counts["refused"] += 1
            return encode_refused("internal-error", "the desk failed on this move; try later")
        self._counts["answered"] += 1
        return reply

    async def _serve(self, peer: PeerId, data: bytes) -> bytes:
        session_id, move = decode_request(data)
        key = public_key_of(peer)
        if key is None:
            raise _Refusal("not-a-party", "your peer id names no ed25519 key")
        self._expire(self.node.now())
        move_id = protocol.envelope_id(move)
        live = self._sessions.get(session_id)
        if live is None:
            ended = self._ended.get(session_id)
            if ended is not None:
                if move_id == ended[0]:
                    return ended[1]  # a retry of the move that ended it: same answer
                raise _Refusal("session-over", "this session is over; ask for a new quote")
            return await self._open(peer, key, session_id, move)
        if key != live.negotiation.negotiator:
            raise _Refusal("not-a-party", "only the circle's negotiator may move in its session")
        if move_id == live.last_move:
            return live.reply  # the circle retried after losing our answer
        live.negotiation.receive(move, self.node.now())
        return self._answer(live, move_id)

    async def _open(self, peer: PeerId, key: bytes, session_id: bytes, move: bytes) -> bytes:
        if protocol.envelope_id(move) != session_id:
            raise _Refusal(
                "wrong-session", "no such session here: open one with its request for quote"
            )
        rfq = protocol.decode_as(move, QuoteRequest)
        body = rfq.message
        if rfq.signer != key:
            raise _Refusal("not-a-party", "only the request's signer may open its session")
        if body.vendor is not None and body.vendor != self.node.public_key:
            raise _Refusal("not-a-party", "the request names another vendor")
        now = self.node.now()
        if now >= body.respond_by:
            raise _Refusal("lapsed", "the request's respond_by has passed; ask again")
        if body.deadline - now > self._max_duration:
            raise _Refusal("too-long", f"sessions here end within {self._max_duration} s")
        if session_id in self._opening:
            raise _Refusal("busy", "this session is being opened")
        if len(self._sessions) + len(self._opening) >= self._max_sessions:
            raise _Refusal("busy", "the desk is full; try again later")
        mine = sum(1 for s in self._sessions.values() if s.peer == peer)
        mine += sum(1 for p in self._opening.values() if p == peer)
        if mine >= self._max_per_peer:
            raise _Refusal("busy", f"at most {self._max_per_peer} open sessions per peer")
        self._opening[session_id] = peer
        try:
            if body.circle not in self.node.circles():
                # Fetch the charter (and the pledges) from peers, without joining:
                # anyone may name any circle, even one made up for the purpose, and a
                # joined circle is followed for good. The node joins it when the desk
                # agrees (its offer). Only while the node holds fewer circles it has
                # not joined than its bound (the announce topic's), so requests naming
                # made-up circles cannot grow what the node holds without bound.
                if self.node.unjoined_circles_full():
                    raise _Refusal(
                        "unknown-circle",
                        "this node holds as many circles as it keeps unjoined: announce "
                        "the circle first, or ask again later",
                    )
                await self._fetch_circle(body.circle)
            if body.circle not in self.node.circles():
                raise _Refusal("unknown-circle", "no peer gave us the circle's charter")
        finally:
            del self._opening[session_id]
        negotiation = Negotiation(
            move, vendor=self.node.public_key, mandate=permissive_mandate(body)
        )
        strategy = self._strategy_for(rfq)
        player = (
            None
            if strategy is None
            else Negotiator(
                self.node.identity,
                negotiation,
                strategy,
                valid_for=self._valid_for,
                terms=self._terms,
            )
        )
        live = _Session(negotiation=negotiation, player=player, peer=peer)
        self._sessions[session_id] = live
        self._counts["opened"] += 1
        return self._answer(live, session_id)

    async def _fetch_circle(self, circle: bytes, *, until_known: bool = True) -> None:
        """Sync ``circle`` from connected peers, within ``join_timeout`` seconds in all.

        ``until_known``: stop at the first peer that gave the charter; otherwise
        ask up to three peers, for the latest pledges.
        """
        node = self.node
        peers = sorted(node.transport.peers())
        with trio.move_on_after(self._join_timeout):
            for peer in peers if until_known else peers[:3]:
                await node.syncer.sync_quietly(circle, peer)
                if until_known and circle in node.circles():
                    return

    def _answer(self, live: _Session, move_id: bytes) -> bytes:
        """The vendor's answer to the circle move ``move_id`` just applied."""
        negotiation = live.negotiation
        now = self.node.now()
        if negotiation.is_over:
            reply = encode_over(negotiation.state.value)
        else:
            negotiation.handle_timer(now)
            if negotiation.is_over:
                reply = encode_over(negotiation.state.value)
            else:
                reply = encode_reply_move(self._vendor_move(live, now))
        live.last_move, live.reply = move_id, reply
        if negotiation.is_over:
            self._finish(live)
        return reply

    def _vendor_move(self, live: _Session, now: int) -> bytes:
        """Sign and apply the vendor's move; a strategy that fails walks away instead."""
        negotiation = live.negotiation
        data = self._strategy_move(live, now)
        if data is not None:
            try:
                negotiation.receive(data, now)
            except protocol.ProtocolError as exc:
                log.warning("the vendor's own move was refused (%s); walking away", exc.reason)
            else:
                return data
        walk = protocol.WalkAway(
            circle=negotiation.request.message.circle,
            session=negotiation.session,
            reason="the vendor's strategy has no valid move",
            created=now,
        )
        data = protocol.seal(walk, self.node.identity).data
        negotiation.receive(data, now)
        return data

    def _strategy_move(self, live: _Session, now: int) -> bytes | None:
        negotiation = live.negotiation
        request = negotiation.request.message
        if live.player is None:
            body: protocol.Message = protocol.Reject(
                circle=request.circle,
                in_reply_to=negotiation.last_id,
                reason="no quote for this request",
                created=now,
            )
            return protocol.seal(body, self.node.identity).data
        try:
            return live.player.act(now)
        except StrategyError as exc:
            # The strategy wanted a move beyond its own limits: leave rather than sign it.
            log.warning("the vendor's strategy failed (%s); walking away", exc.reason)
            return None

    def _finish(self, live: _Session) -> None:
        negotiation = live.negotiation
        session = negotiation.session
        self._sessions.pop(session, None)
        self._ended[session] = (live.last_move, live.reply)
        while len(self._ended) > self._remember:
            self._ended.popitem(last=False)
        result = negotiation.result
        if isinstance(result, protocol.Agreement):
            self._agreements.append(result)
            assert self._nursery is not None
            self._nursery.start_soon(self._publish_agreement, result, negotiation.request.message)

    def _expire(self, now: int) -> None:
        for live in list(self._sessions.values()):
            if live.negotiation.handle_timer(now) is not None:
                self._finish(live)

    async def _sweep(self) -> None:
        """Forget sessions whose deadline passed while nobody asked."""
        while True:
            await trio.sleep(5.0)
            self._expire(self.node.now())

    async def _publish_agreement(
        self, agreement: protocol.Agreement, request: QuoteRequest
    ) -> None:
        try:
            # Follow the circle from now on (the offer, its certificate and the deal
            # travel on its topic) and bring its pledges up to date: the desk did not
            # follow it while negotiating, so what it holds may be old.
            await self.node.join(agreement.circle, timeout=self._join_timeout)
            await self._fetch_circle(agreement.circle, until_known=False)
            # Pledges are admitted whole, dearest first, until one does not fit:
            # a capacity of exactly the agreed quantity often clears nothing when
            # the circle pledged more. The agreed price holds for every unit the
            # circle pledged at it, at least the agreed quantity.
            demand = self.node.circle(agreement.circle).demand(agreement.unit_price)
            units = max(agreement.quantity, demand)
            supply = self._supply(agreement)
            if supply is not None and supply < units:
                if supply < 1:
                    self._counts["unsupplied"] += 1
                    log.info(
                        "agreed with circle %s but have nothing to supply: no offer",
                        agreement.circle.hex()[:12],
                    )
                    return
                # Sell what we have: the circle's fill rule admits pledges up to it.
                self._counts["capped"] += 1
                units = supply
            await self.node.offer(
                agreement.circle,
                product=request.product,
                tiers=[(min(agreement.quantity, units), agreement.unit_price)],
                capacity=units,
                valid_until=max(request.deadline, self.node.now()) + self._valid_for,
                terms=self._terms,
                in_reply_to=agreement.session,
            )
        except (NodeError, protocol.ProtocolError) as exc:
            log.warning("could not publish the agreed offer: %s", exc)

    def _supply(self, agreement: protocol.Agreement) -> int | None:
        try:
            return self._capacity_for(agreement)
        except Exception:  # the hook is the caller's code: a bug there offers nothing
            log.exception("capacity_for failed; no offer for this agreement")
            self._counts["errors"] += 1
            return 0
