"""The vendor desk's auction bidder: answers requests for quote published on circle topics.

Theory of operation: the node stores every request for quote that arrives on
the topic of a circle it follows (circle state refuses it as
``not-circle-state`` and the node reports that as an event). The bidder
watches those events and, for each open request addressed to no vendor in
particular (a reverse auction), asks the desk's strategy for its opening move
and signs that price as an ordinary offer for the circle, dated before the
request's ``respond_by``.

Bids are sealed: each goes at once, on a direct stream, to the request's
signer (the auctioneer, see :mod:`circles._haggle_auction`), never to the
circle's topic, where an offer is live at once and could close a deal before
cheaper bids arrive. The auctioneer answers "taken" or refuses with a reason
("closed" when the bid reached it after the auction's close); a bid that got
no answer is sent again, the same bytes, a bounded number of times. The
vendor's node must be able to reach the auctioneer (connected to it, or on
libp2p knowing its address). Requests cost a bid each, so each signer may hold
only a few auctions open with this vendor at a time, and every request is bid
on at most once.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

import trio

import protocol
from protocol import Mandate, Negotiation, Party, QuoteRequest

from ._haggle import (
    AUCTION_PROTOCOL,
    MAX_MOVE_SIZE,
    HaggleError,
    decode_bid_reply,
    encode_bid,
)
from ._node import EventStream, Node
from ._node_events import CircleUpdated
from ._strategies import Action, SessionView, Strategy
from ._transport import RequestFailed, TransportError, peer_id_of

__all__ = ["Bidder", "permissive_mandate"]

log = logging.getLogger("circles.haggle")

_MAX_PRICE = 10**15


def permissive_mandate(request: QuoteRequest) -> Mandate:
    """A mandate covering any price: the vendor's machines leave the mandate to the circle."""
    return Mandate.from_demand(((_MAX_PRICE, request.quantity),), target=request.quantity)


class Bidder:
    """Bids the strategy's opening price on every open reverse auction the node hears."""

    def __init__(
        self,
        node: Node,
        strategy_for: Callable[[protocol.Envelope[QuoteRequest]], Strategy | None],
        *,
        max_open_per_signer: int,
        max_duration: int,
        valid_for: int,
        remember: int,
        terms: str,
        timeout: float = 10.0,
        retries: int = 2,
        capacity: int | None = None,
    ) -> None:
        self.node = node
        self._capacity = capacity
        self._strategy_for = strategy_for
        self._max_open = max_open_per_signer
        self._max_duration = max_duration
        self._valid_for = valid_for
        self._remember = remember
        self._terms = terms
        self._timeout = timeout
        self._retries = retries
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        # Per request signer: the respond_by of each auction bid on and still open.
        self._open: dict[bytes, list[int]] = {}
        self.bids = 0
        self.refused = 0
        # Why recent bids did not take part (offer id -> reason), oldest first, bounded.
        self.refusals: OrderedDict[bytes, str] = OrderedDict()

    async def run(self, events: EventStream, nursery: trio.Nursery) -> None:
        """Bid on each request for quote the node reports, until cancelled.

        Each bid travels to its auctioneer in a task of ``nursery``.
        """
        async with events:
            async for event in events:
                if not isinstance(event, CircleUpdated):
                    continue
                refused = event.event
                if not isinstance(refused, protocol.Refused) or refused.kind != "rfq":
                    continue
                if refused.message in self._seen:
                    continue
                self._seen[refused.message] = None
                while len(self._seen) > self._remember:
                    self._seen.popitem(last=False)
                entry = self.node.log_entry(refused.message)
                bid = None if entry is None else self.bid(entry.data)
                if bid is not None:
                    nursery.start_soon(self._submit, *bid)

    def _room_for(self, signer: bytes, now: int) -> bool:
        still_open = [t for t in self._open.get(signer, ()) if t > now]
        if still_open:
            self._open[signer] = still_open
        else:
            self._open.pop(signer, None)
        return len(still_open) < self._max_open

    def bid(self, data: bytes) -> tuple[bytes, bytes] | None:
        """A sealed bid on one request for quote: (auctioneer's key, offer envelope), or None.

        None when the request is no open auction we take part in.
        """
        try:
            rfq = protocol.decode_as(data, QuoteRequest)
        except protocol.ProtocolError:
            return None
        body = rfq.message
        now = self.node.now()
        if body.vendor is not None or rfq.signer == self.node.public_key:
            return None  # addressed to one vendor: that one negotiates directly
        if now >= body.respond_by or body.deadline - now > self._max_duration:
            return None
        if not self._room_for(rfq.signer, now):
            log.info("too many open auctions from one signer; not bidding")
            return None
        strategy = self._strategy_for(rfq)
        if strategy is None:
            return None
        session = Negotiation(data, vendor=self.node.public_key, mandate=permissive_mandate(body))
        move = strategy.move(SessionView(session, Party.VENDOR), now)
        price = move.unit_price
        if move.action is not Action.PROPOSE or price is None or price < strategy.reservation:
            return None
        capacity = body.quantity if self._capacity is None else min(body.quantity, self._capacity)
        offer = protocol.Offer(
            circle=body.circle,
            product=body.product,
            currency=body.currency,
            list_price=price,
            tiers=(protocol.Tier(min_quantity=1, unit_price=price),),
            capacity=capacity,
            valid_until=max(body.deadline, now) + self._valid_for,
            terms=self._terms,
            loyalty=(),
            in_reply_to=rfq.id,
            created=now,
        )
        self._open.setdefault(rfq.signer, []).append(body.respond_by)
        self.bids += 1
        return rfq.signer, protocol.seal(offer, self.node.identity).data

    async def _submit(self, auctioneer: bytes, offer: bytes) -> None:
        """Send one bid to its auctioneer; note why, if it does not take part."""
        frame = encode_bid(offer)
        reason = ""
        for _ in range(self._retries + 1):
            try:
                data = await self.node.transport.request(
                    peer_id_of(auctioneer),
                    AUCTION_PROTOCOL,
                    frame,
                    timeout=self._timeout,
                    max_response=MAX_MOVE_SIZE,
                )
            except RequestFailed as exc:
                reason = exc.reason
                if exc.reason in ("unreachable", "unsupported"):
                    break
                continue  # the same bytes again: a bid already taken is answered "taken"
            except TransportError as exc:  # our own transport is closing: no retry helps
                reason = exc.reason
                break
            try:
                reply = decode_bid_reply(data)
            except HaggleError as exc:
                reason = exc.reason
                break
            if reply.kind == "taken":
                return
            reason = reply.reason
            break
        log.info("an auction bid did not take part: %s", reason)
        self.refused += 1
        self.refusals[protocol.envelope_id(offer)] = reason
        while len(self.refusals) > self._remember:
            self.refusals.popitem(last=False)
