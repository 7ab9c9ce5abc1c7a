"""The auctioneer's side of a reverse auction: sealed bids on direct streams, one close.

Theory of operation: a bid is an ordinary signed :class:`protocol.Offer`, and
an offer on a circle's topic is live at once: a circle whose pledges clear it
assembles a certificate ``assemble_delay`` later and the vendor countersigns.
Bids that travelled on the topic therefore raced each other, and a cheaper
bid whose link was slower than that lost to a dearer one that had already
closed a deal. So bids never touch the topic. Each vendor sends its bid on a
direct stream (``/buying-circles/auction/1.0.0``, see :mod:`circles._haggle`)
to the request's signer, whose node holds it sealed in a :class:`_Book`.

Every book has one close, fixed when it opens and the same for every bidder:
the request's ``respond_by`` plus a grace of whole seconds for bids already
on their way. A bid is taken only if it was signed before ``respond_by``
(``protocol.rank_offers`` refuses it as "too-late" otherwise) and reaches the
book before the close; after the close every bid is refused as "closed", and
the bidder is told so, so no bid is lost silently. At the close the
auctioneer ranks what it holds against the mandate of the pledges signed
before ``respond_by`` and publishes the winning offer alone on the circle's
topic. The circle then has exactly one auction offer to certify: the
cheapest bid the auctioneer took, whatever order the bids arrived in.

Losing bids stay sealed (vendors' prices are not shown to competitors), so a
member other than the auctioneer ranks only the offers in its own log. A
peer may submit only its own bid, one per auction: its first taken bid stands
and another is refused as "already-bid" (a repeat of the same bytes is
answered "taken" again, for retries). Books, bids per book and closed books
remembered are all bounded. A book holds at most ``MAX_BIDS``
(:data:`protocol.MAX_AUCTION_BIDS`) bids; when it is full, a new bid is
ranked with the held ones against the circle's pledges at that moment (the
protocol's clearing and ranking order, ties by vendor key; bids the pledges
do not clear rank last): if it ranks after all of them it is refused as
"outranked", otherwise it takes the place of the worst held bid, which is
evicted ("outranked", logged, and answered so if its vendor sends it again).
So throwaway keys cannot keep out a vendor whose bid clears at a better price
than theirs.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import protocol
from protocol import Mandate, QuoteRequest

from ._haggle import (
    AUCTION_PROTOCOL,
    MAX_MOVE_SIZE,
    HaggleError,
    decode_bid,
    encode_refused,
    encode_taken,
    mandate_of,
)
from ._node import Node, NodeError
from ._transport import PeerId, Transport, public_key_of

__all__ = ["MAX_BIDS", "MAX_OPEN_AUCTIONS", "AuctionHouse", "held_bids", "house_of", "is_open"]

log = logging.getLogger("circles.haggle")

#: Auctions one node may hold open at once.
MAX_OPEN_AUCTIONS = 16
#: Bids one auction holds at most (one per vendor): the protocol's cap.
MAX_BIDS = protocol.MAX_AUCTION_BIDS
#: Closed auctions whose bids a node keeps (for ranking, and to answer late bids "closed").
_REMEMBER_CLOSED = 32

# (0, clearing price, vendor) for a bid the pledges clear, (1, 0, vendor) for one
# they do not: the protocol's ranking order without reputations, which the
# house does not know until the close.
_RankKey = tuple[int, int, bytes]


def _rank_key(mandate: Mandate, offer: protocol.Envelope[protocol.Offer]) -> _RankKey:
    price = mandate.clearing_price(offer.message)
    return (1, 0, offer.signer) if price is None else (0, price, offer.signer)


class _Refusal(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class _Book:
    """One auction's sealed bids."""

    rfq: bytes
    request: protocol.Envelope[QuoteRequest]
    closes_at: int
    bids: dict[bytes, protocol.Envelope[protocol.Offer]] = field(default_factory=dict)  # by vendor
    closed: bool = False
    # Bids pushed out of a full book: offer id -> reason (at most MAX_BIDS remembered).
    evicted: OrderedDict[bytes, str] = field(default_factory=OrderedDict)
    # The held bids' rank keys against the mandate they were computed with.
    ranked: tuple[Mandate, dict[bytes, _RankKey]] | None = None


class AuctionHouse:
    """The auctions one node runs: opens books, serves bids, closes them.

    Get a node's house with :func:`house_of`; it serves ``AUCTION_PROTOCOL``
    on the node's transport from then on.
    """

    def __init__(self, node: Node) -> None:
        # Both weak: the registry maps nodes to houses weakly, and a house
        # holding its node (or the transport, which holds the node's handlers)
        # would keep both alive for good.
        self._node = weakref.ref(node)
        self._transport: weakref.ref[Transport] | None = None
        self._open: dict[bytes, _Book] = {}
        self._closed: OrderedDict[bytes, _Book] = OrderedDict()
        self.taken = 0
        self.refused = 0
        self.evictions = 0

    @property
    def node(self) -> Node:
        """The node this house runs auctions for."""
        node = self._node()
        if node is None:
            raise HaggleError("the auctioneer's node is gone", reason="unknown-auction")
        return node

    def _serve(self) -> None:
        transport = self.node.transport
        if not self.serves(transport):
            # A restarted node has a new transport; books of the old run are void.
            self._open.clear()
            self._closed.clear()
            transport.set_handler(AUCTION_PROTOCOL, self._handle, max_request=MAX_MOVE_SIZE + 64)
            self._transport = weakref.ref(transport)

    def serves(self, transport: Transport) -> bool:
        """True if this house serves bids on ``transport``."""
        return self._transport is not None and self._transport() is transport

    # ------------------------------------------------------------- books
    def open(self, rfq: bytes, *, grace: float) -> int:
        """Hold bids for the auction ``rfq`` until its close; returns the close (node time).

        The close is ``respond_by`` plus ``grace`` rounded up to whole seconds,
        the node clock's resolution.
        """
        request = protocol.decode_as(rfq, QuoteRequest)
        self._expire()
        held = self._open.get(request.id) or self._closed.get(request.id)
        if held is not None:
            return held.closes_at  # the same request again: its bids stay
        if len(self._open) >= MAX_OPEN_AUCTIONS:
            raise HaggleError(
                f"at most {MAX_OPEN_AUCTIONS} auctions open at once; wait for one to close",
                reason="busy",
            )
        closes_at = request.message.respond_by + math.ceil(grace)
        self._open[request.id] = _Book(rfq=rfq, request=request, closes_at=closes_at)
        return closes_at

    def closes_at(self, session: bytes) -> int | None:
        """The close (node time) of auction ``session``, or None if it is not held here."""
        book = self._open.get(session) or self._closed.get(session)
        return None if book is None else book.closes_at

    def is_open(self, session: bytes) -> bool:
        """True while the auction ``session`` (its request's id) still takes bids here."""
        self._expire()
        return session in self._open

    def bids(self, session: bytes) -> tuple[bytes, ...]:
        """The bids held for auction ``session``, open or closed, by offer id."""
        book = self._open.get(session) or self._closed.get(session)
        if book is None:
            return ()
        return tuple(offer.data for offer in sorted(book.bids.values(), key=lambda o: o.id))

    def evicted(self, session: bytes) -> tuple[tuple[bytes, str], ...]:
        """(offer id, reason) of the bids a full book of auction ``session`` pushed out."""
        book = self._open.get(session) or self._closed.get(session)
        return () if book is None else tuple(sorted(book.evicted.items()))

    def close(self, session: bytes) -> tuple[bytes, ...]:
        """Close auction ``session`` now (no bid is taken after this); its bids, by offer id."""
        book = self._open.pop(session, None)
        if book is not None:
            self._retire(book)
        return self.bids(session)

    def _retire(self, book: _Book) -> None:
        book.closed = True
        self._closed[book.request.id] = book
        while len(self._closed) > _REMEMBER_CLOSED:
            self._closed.popitem(last=False)

    def _expire(self) -> None:
        now = self.node.now()
        for session, book in list(self._open.items()):
            if now >= book.closes_at:
                del self._open[session]
                self._retire(book)

    # ----------------------------------------------------------- serving
    async def _handle(self, peer: PeerId, data: bytes) -> bytes:
        try:
            self._take(peer, data)
        except _Refusal as refusal:
            self.refused += 1
            return encode_refused(refusal.reason, refusal.detail)
        except (HaggleError, protocol.ProtocolError) as exc:
            self.refused += 1
            return encode_refused(exc.reason, str(exc))
        except Exception:  # a bug here must not stop the node taking other bids
            log.exception("the auction house failed on a bid from %s", peer)
            self.refused += 1
            return encode_refused("internal-error", "the auctioneer failed on this bid")
        return encode_taken()

    def _take(self, peer: PeerId, data: bytes) -> None:
        """Hold one bid, or raise why not; nothing changes on a refusal."""
        offer = protocol.decode_as(decode_bid(data), protocol.Offer)
        if public_key_of(peer) != offer.signer:
            raise _Refusal("not-a-party", "send your own bid, from your own peer id")
        session = offer.message.in_reply_to or b""
        self._expire()
        book = self._open.get(session) or self._closed.get(session)
        if book is None:
            raise _Refusal("unknown-auction", "this node runs no auction for that request")
        held = book.bids.get(offer.signer)
        if held is not None and held.id == offer.id:
            return  # a retry of a bid already taken, even after the close
        if book.closed:
            raise _Refusal("closed", "the auction closed before your bid arrived")
        if held is not None:
            raise _Refusal("already-bid", "one sealed bid per vendor and auction")
        evicted = book.evicted.get(offer.id)
        if evicted is not None:
            raise _Refusal(evicted, "better bids pushed this one out of the full auction")
        # The same checks every member's ranking applies, except the price:
        # a bid that the pledges do not clear at the close simply ranks nowhere.
        try:
            protocol.check_bid(book.rfq, offer.data)
        except protocol.ProtocolError as exc:
            raise _Refusal(exc.reason, f"the auction refuses this bid ({exc.reason})") from None
        if len(book.bids) >= MAX_BIDS:
            self._make_room(book, offer)
        book.bids[offer.signer] = offer
        if book.ranked is not None:
            mandate, keys = book.ranked
            keys[offer.signer] = _rank_key(mandate, offer)
        self.taken += 1

    def _make_room(self, book: _Book, offer: protocol.Envelope[protocol.Offer]) -> None:
        """Push the worst held bid out for ``offer``, or raise "outranked" if it ranks last.

        Ranked against the circle's pledges now; each held bid's clearing is
        computed again only when the pledges changed since the last full-book bid.
        """
        try:
            mandate = mandate_of(self.node.circle(book.request.message.circle))
        except (NodeError, protocol.ProtocolError):
            raise _Refusal("full", f"this auction takes at most {MAX_BIDS} bids") from None
        if book.ranked is None or book.ranked[0] != mandate:
            book.ranked = (
                mandate,
                {vendor: _rank_key(mandate, held) for vendor, held in book.bids.items()},
            )
        keys = book.ranked[1]
        worst = max(keys, key=keys.__getitem__)
        if _rank_key(mandate, offer) > keys[worst]:
            raise _Refusal(
                "outranked", f"this auction holds {MAX_BIDS} bids that rank before this one"
            )
        pushed = book.bids.pop(worst)
        del keys[worst]
        book.evicted[pushed.id] = "outranked"
        while len(book.evicted) > MAX_BIDS:
            book.evicted.popitem(last=False)
        self.evictions += 1
        log.info(
            "auction %s is full: bid %s of %s pushed out by a better one",
            book.request.id.hex()[:12],
            pushed.id.hex()[:12],
            pushed.signer.hex()[:12],
        )


_houses: weakref.WeakKeyDictionary[Node, AuctionHouse] = weakref.WeakKeyDictionary()


def house_of(node: Node) -> AuctionHouse:
    """The running ``node``'s auction house, serving bids on its transport."""
    house = _houses.get(node)
    if house is None:
        house = _houses[node] = AuctionHouse(node)
    house._serve()
    return house


def _running_house(node: Node) -> AuctionHouse | None:
    """The node's house if it serves bids on the node's current transport."""
    house = _houses.get(node)
    if house is None:
        return None
    try:
        current = node.transport
    except NodeError:
        return None
    return house if house.serves(current) else None


def held_bids(node: Node, session: bytes) -> tuple[bytes, ...]:
    """The sealed bids ``node`` holds for auction ``session`` (none unless it runs it)."""
    house = _running_house(node)
    return () if house is None else house.bids(session)


def is_open(node: Node, session: bytes) -> bool:
    """True while ``node`` runs auction ``session`` and it still takes bids."""
    house = _running_house(node)
    return house is not None and house.is_open(session)
