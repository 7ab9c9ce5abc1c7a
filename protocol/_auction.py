"""Reverse auctions: one request for quote, every listening vendor's offer, one winner.

Theory of operation: a circle's negotiator publishes a :class:`QuoteRequest`
with no vendor on the circle's topic; vendors answer with signed offers until
its ``respond_by``. The winner is a pure function of the request, the set of
offers and the reputations (never of arrival order or of who computes it):
each offer's clearing price is the price at which the circle's state would
clear it (see :meth:`Mandate.clearing_price`: the same
:meth:`~protocol._quorum.DemandBook.clear` the circle state runs, so a
winner always clears in the circle at the price it won with); each vendor's
best offer is its bid; bids rank by lowest clearing price, then higher
reputation score, then vendor key. Offers signed at or after ``respond_by``,
lapsing before it, for another circle or currency, or that the pledges cannot
clear are refused with a reason, so every member refuses the same ones.

Caps (so that throwaway keys cannot crowd out a real vendor, and no cost
grows with what the auction is sent): one bid per vendor key, its best offer
by (clearing price, offer id), the others refused as "superseded"; at most
:data:`MAX_AUCTION_BIDS` bids per auction, the best by the ranking order, the others
refused as "outranked". A vendor whose bid ranks better than a held one
therefore always takes part, however many worse bids came first.

:class:`ReverseAuction` is the collector a node runs: it refuses offers that
arrive after the deadline and holds the best bids under the caps; what it
holds is a function of the set of offers it was handed, in any order, and its
result equals :func:`rank_offers` over that set. Members who must agree should
rank the same set (the offers in the circle's log), with :func:`rank_offers`.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._circle_view import SMALLER_TIER_WINDOW
from ._envelope import Envelope, decode, decode_as, envelope_id
from ._errors import InvalidField, InvalidMessage, ProtocolError
from ._messages import MAX_MONEY, MAX_QUANTITY, MAX_TIME, Offer, Pledge, QuoteRequest
from ._quorum import Clearing, DemandBook, Entry
from ._reputation import Reputation

if TYPE_CHECKING:
    from ._circle import CircleState

__all__ = [
    "MAX_AUCTION_BIDS",
    "AuctionError",
    "AuctionResult",
    "Bid",
    "BidTaken",
    "Mandate",
    "ReverseAuction",
    "check_bid",
    "rank_offers",
]

#: Bids one auction holds and ranks at most (the best ones by the ranking order).
MAX_AUCTION_BIDS = 128


class AuctionError(ProtocolError):
    """An offer the auction refuses, or a result asked for too early.

    Reasons: "not-an-offer", "wrong-request", "wrong-vendor", "too-late",
    "lapsed", "does-not-clear", "superseded" (the vendor has a better offer in
    the auction), "outranked" (the auction holds :data:`MAX_AUCTION_BIDS` better bids),
    "still-open", or the offer's own decoding reason.
    """

    reason = "auction-error"


def _bad(detail: str, path: str) -> InvalidField:
    return InvalidField(detail, reason="out-of-range", field=path)


@dataclass(frozen=True, slots=True, kw_only=True)
class Mandate:
    """What the circle's live pledges let its negotiator agree to.

    Build it from the circle's state (:meth:`from_state`) or its live pledge
    envelopes (:meth:`from_pledges`): the clearing needs each pledge's
    ``created``, id and tolerance, because the fill rule admits pledges in
    priority order and stops at the first that does not fit an offer's
    capacity. :meth:`from_demand` makes one from a bare demand curve (a
    vendor's or a simulation's), each (price, units) pair standing for one
    pledge.
    """

    target: int
    """Units the circle must reach (its charter's target)."""
    pledges: tuple[Entry, ...] = ()
    """The live pledges, normalised to fill order (highest max price, then earliest, then id)."""
    relaxed: bool = False
    """True when the circle may settle for a smaller tier (past its deadline, "smaller-tier")."""
    demand: tuple[tuple[int, int], ...] = field(init=False)
    """(max unit price, units) pairs of the pledges, one per distinct price, highest first."""
    _book: DemandBook | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if type(self.target) is not int or not 1 <= self.target <= MAX_QUANTITY:
            raise _bad("a mandate's target must be an integer in 1..MAX_QUANTITY", "mandate.target")
        if type(self.relaxed) is not bool:
            raise _bad("a mandate's relaxed flag must be a bool", "mandate.relaxed")
        seen: set[bytes] = set()
        for e in self.pledges:
            if not isinstance(e, Entry) or not (
                type(e.pledge) is bytes
                and type(e.quantity) is int
                and 1 <= e.quantity <= MAX_QUANTITY
                and type(e.max_price) is int
                and 1 <= e.max_price <= MAX_MONEY
                and type(e.tolerance) is int
                and 0 <= e.tolerance <= MAX_QUANTITY
                and type(e.created) is int
                and 0 <= e.created <= MAX_TIME
            ):
                raise _bad(
                    "pledges are Entry values: quantity 1..MAX_QUANTITY, max price "
                    "1..MAX_MONEY, tolerance 0..MAX_QUANTITY, created 0..MAX_TIME",
                    "mandate.pledges",
                )
            if e.pledge in seen:
                raise _bad("a pledge appears twice in the mandate", "mandate.pledges")
            seen.add(e.pledge)
        ordered = tuple(sorted(self.pledges, key=lambda e: (-e.max_price, e.created, e.pledge)))
        merged: dict[int, int] = {}
        for e in ordered:
            merged[e.max_price] = merged.get(e.max_price, 0) + e.quantity
        object.__setattr__(self, "pledges", ordered)
        object.__setattr__(self, "demand", tuple(merged.items()))
        object.__setattr__(self, "_book", None)  # built on the first clearing asked for

    @classmethod
    def from_pledges(
        cls, pledges: Iterable[Envelope[Pledge]], *, target: int, relaxed: bool = False
    ) -> Mandate:
        """The mandate of a circle whose live pledges are ``pledges`` (withdrawals skipped)."""
        return cls(
            target=target,
            relaxed=relaxed,
            pledges=tuple(
                Entry(
                    pledge=env.id,
                    quantity=env.message.quantity,
                    max_price=env.message.max_price,
                    tolerance=env.message.tolerance,
                    created=env.message.created,
                )
                for env in pledges
                if env.message.quantity > 0
            ),
        )

    @classmethod
    def from_state(cls, state: CircleState) -> Mandate:
        """The mandate a circle's state gives its negotiator at the state's time.

        Its live pledges and target; relaxed while the circle, past its
        deadline, may still settle for a smaller tier (the state's own rule).
        The status is not consulted: a closed, cancelled or expired circle
        clears nothing, whatever its mandate says.
        """
        rules = state.charter.message
        relaxed = (
            rules.on_miss == "smaller-tier"
            and state.deadline < state.now <= state.deadline + SMALLER_TIER_WINDOW
        )
        return cls.from_pledges(state.live_pledges().values(), target=rules.target, relaxed=relaxed)

    @classmethod
    def from_demand(cls, demand: Iterable[tuple[int, int]], *, target: int) -> Mandate:
        """A mandate from a bare demand curve: each (max unit price, units) pair is one pledge.

        Pairs of one price fill in the order given. For a circle's real
        mandate use :meth:`from_state`: its pledges' order and tolerance count.
        """
        entries = []
        for i, pair in enumerate(demand):
            if (
                not isinstance(pair, tuple)
                or len(pair) != 2
                or any(type(v) is not int or v < 1 for v in pair)
            ):
                raise _bad(
                    "demand pairs are (max unit price, units), both integers >= 1",
                    "mandate.demand",
                )
            entries.append(
                Entry(
                    pledge=i.to_bytes(32, "big"),
                    quantity=pair[1],
                    max_price=pair[0],
                    tolerance=0,
                    created=0,
                )
            )
        return cls(target=target, pledges=tuple(entries))

    def units_at(self, unit_price: int) -> int:
        """Units the live pledges take at ``unit_price``."""
        return sum(units for price, units in self.demand if price >= unit_price)

    def covers(self, unit_price: int, quantity: int) -> bool:
        """True when buying ``quantity`` at ``unit_price`` is within the mandate."""
        return quantity >= self.target and self.units_at(unit_price) >= quantity

    def ceiling(self, quantity: int) -> int | None:
        """The highest unit price at which ``quantity`` is covered, or None."""
        if quantity < self.target:
            return None
        total = 0
        for price, units in self.demand:
            total += units
            if total >= quantity:
                return price
        return None

    def clearing(self, offer: Offer, *, offer_id: bytes = b"") -> Clearing | None:
        """How the circle clears ``offer``: its cheapest tier that clears, or None.

        This is the circle state's own clearing (:meth:`DemandBook.clear`):
        eligible pledges in fill order, admitted up to the first that does not
        fit the capacity, tolerance drawn to the need, the target required
        unless the mandate is relaxed. The offer's validity is not checked.
        """
        book = self._book
        if book is None:
            book = DemandBook()
            for entry in self.pledges:
                book.add(entry)
            object.__setattr__(self, "_book", book)
        return book.clear(
            offer=offer_id,
            tiers=offer.tiers,
            capacity=offer.capacity,
            target=self.target,
            relaxed=self.relaxed,
        )

    def clearing_price(self, offer: Offer) -> int | None:
        """The unit price at which the circle clears ``offer`` (see :meth:`clearing`), or None."""
        found = self.clearing(offer)
        return None if found is None else found.unit_price


@dataclass(frozen=True, slots=True, kw_only=True)
class Bid:
    """A vendor's best eligible offer in an auction."""

    vendor: bytes
    """The vendor's key."""
    offer: bytes
    """Id of the offer envelope."""
    clearing_price: int
    """The unit price at which the circle's pledges clear the offer."""
    score: int
    """The vendor's reputation score (Wilson lower bound, ppm) used to break ties."""


def _rank(bid: Bid) -> tuple[int, int, bytes]:
    """The ranking order: lowest clearing price, then higher score, then vendor key."""
    return (bid.clearing_price, -bid.score, bid.vendor)


def _better_of_one_vendor(bid: Bid, held: Bid) -> bool:
    """Of two bids of one vendor, the one kept: lower clearing price, then smaller offer id."""
    return (bid.clearing_price, bid.offer) < (held.clearing_price, held.offer)


@dataclass(frozen=True, slots=True, kw_only=True)
class BidTaken:
    """What :meth:`ReverseAuction.receive` did with an offer it took."""

    bid: Bid
    """The bid the offer makes."""
    evicted: tuple[tuple[bytes, str], ...]
    """(offer id, reason) of the held bid it pushed out ("superseded" or "outranked"), if any."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuctionResult:
    """The ranking every member computes from the same request, offers and reputations."""

    winner: Bid | None
    """The best bid, or None when no offer is eligible."""
    ranking: tuple[Bid, ...]
    """The bids taken, best first: one per vendor, at most :data:`MAX_AUCTION_BIDS`."""
    refused: tuple[tuple[bytes, str], ...]
    """(offer id, reason) for every offer that was not eligible or not kept, sorted."""


def _form(request: Envelope[QuoteRequest], offer: Envelope[Offer]) -> None:
    """Raise AuctionError unless the offer may take part, whatever the pledges."""
    rfq, body = request.message, offer.message
    if body.in_reply_to != request.id or body.circle != rfq.circle or body.currency != rfq.currency:
        raise AuctionError(
            "the offer answers another request, circle or currency", reason="wrong-request"
        )
    if rfq.vendor is not None and offer.signer != rfq.vendor:
        raise AuctionError("the request asked another vendor", reason="wrong-vendor")
    if offer.signer == request.signer:
        raise AuctionError("the circle's negotiator cannot bid", reason="wrong-vendor")
    if body.created >= rfq.respond_by:
        raise AuctionError("the offer was signed after the request's respond_by", reason="too-late")
    if body.valid_until <= rfq.respond_by:
        raise AuctionError("the offer lapses before the auction closes", reason="lapsed")


def _eligible(request: Envelope[QuoteRequest], offer: Envelope[Offer], mandate: Mandate) -> int:
    """The offer's clearing price; raises AuctionError unless it may take part."""
    _form(request, offer)
    price = mandate.clearing_price(offer.message)
    if price is None:
        raise AuctionError(
            "the circle's live pledges clear no tier of this offer", reason="does-not-clear"
        )
    return price


def check_bid(rfq: bytes, data: bytes) -> Envelope[Offer]:
    """Decode ``data`` as an offer that may bid in the auction ``rfq``, whatever the pledges.

    Raises InvalidMessage (the offer's decoding reason) or AuctionError
    ("not-an-offer", "wrong-request", "wrong-vendor", "too-late", "lapsed");
    the price is checked only against a mandate, by :func:`rank_offers`.
    """
    request = decode_as(rfq, QuoteRequest)
    envelope = decode(data)
    if not isinstance(envelope.message, Offer):
        raise AuctionError("the bid is not an offer", reason="not-an-offer")
    offer: Envelope[Offer] = envelope  # type: ignore[assignment]
    _form(request, offer)
    return offer


def _check_max_bids(max_bids: int) -> None:
    if type(max_bids) is not int or max_bids < 1:
        raise _bad("max_bids must be a positive integer", "auction.max_bids")


def rank_offers(
    rfq: bytes,
    offers: Iterable[bytes],
    *,
    mandate: Mandate,
    reputations: Mapping[bytes, Reputation] | None = None,
    max_bids: int = MAX_AUCTION_BIDS,
) -> AuctionResult:
    """Rank a set of offer envelopes answering ``rfq``; a vendor without a reputation scores 0.

    Each vendor's best offer is its bid (its others are refused as
    "superseded"); the best ``max_bids`` bids are ranked, the rest refused as
    "outranked".
    """
    _check_max_bids(max_bids)
    request = decode_as(rfq, QuoteRequest)
    reputations = reputations or {}
    best: dict[bytes, Bid] = {}
    refused: dict[bytes, str] = {}
    for data in offers:
        try:
            envelope = decode(data)
        except InvalidMessage as exc:
            refused[envelope_id(data)] = exc.reason
            continue
        if not isinstance(envelope.message, Offer):
            refused[envelope.id] = "not-an-offer"
            continue
        try:
            price = _eligible(request, envelope, mandate)  # type: ignore[arg-type]
        except AuctionError as exc:
            refused[envelope.id] = exc.reason
            continue
        rep = reputations.get(envelope.signer)
        bid = Bid(
            vendor=envelope.signer,
            offer=envelope.id,
            clearing_price=price,
            score=0 if rep is None else rep.score,
        )
        held = best.get(bid.vendor)
        if held is None or _better_of_one_vendor(bid, held):
            best[bid.vendor] = bid
            if held is not None:
                refused[held.offer] = "superseded"
        elif held.offer != bid.offer:
            refused[bid.offer] = "superseded"
    ranked = sorted(best.values(), key=_rank)
    for bid in ranked[max_bids:]:
        refused[bid.offer] = "outranked"
    ranking = tuple(ranked[:max_bids])
    return AuctionResult(
        winner=ranking[0] if ranking else None,
        ranking=ranking,
        refused=tuple(sorted(refused.items())),
    )


class ReverseAuction:
    """Collects the offers answering one request for quote until its ``respond_by``.

    It holds at most ``max_bids`` bids, one per vendor: the best by the
    ranking order (reputations as given here), so what it holds after any
    sequence of offers is the best of their set, whatever the order. Each
    offer costs O(log ``max_bids``) comparisons plus one clearing.
    """

    def __init__(
        self,
        rfq: bytes,
        *,
        mandate: Mandate,
        reputations: Mapping[bytes, Reputation] | None = None,
        max_bids: int = MAX_AUCTION_BIDS,
    ) -> None:
        _check_max_bids(max_bids)
        self.request = decode_as(rfq, QuoteRequest)
        self.mandate = mandate
        self.max_bids = max_bids
        self._reputations = dict(reputations or {})
        self._rfq = rfq
        # vendor -> (bid, offer envelope); _order holds the same bids' rank keys, sorted.
        self._held: dict[bytes, tuple[Bid, bytes]] = {}
        self._order: list[tuple[int, int, bytes]] = []

    @property
    def offers(self) -> tuple[bytes, ...]:
        """The offers held (at most ``max_bids``, one per vendor), by id."""
        return tuple(data for _, data in sorted(self._held.values(), key=lambda h: h[0].offer))

    def get_timer(self) -> int:
        """When the auction closes."""
        return self.request.message.respond_by

    def _drop(self, vendor: bytes) -> Bid:
        bid, _ = self._held.pop(vendor)
        self._order.remove(_rank(bid))
        return bid

    def receive(self, data: bytes, now: int) -> BidTaken:
        """Hold one offer; if refused, raises InvalidMessage or AuctionError and holds nothing.

        A vendor's worse offer than the one held is refused ("superseded"); a
        better one replaces it. When the auction holds ``max_bids`` bids, an
        offer ranking after all of them is refused ("outranked"); one ranking
        before the last pushes that one out. Handing in a held offer again
        changes nothing.
        """
        if now >= self.request.message.respond_by:
            raise AuctionError("the auction closed at respond_by", reason="too-late")
        envelope = decode_as(data, Offer)
        price = _eligible(self.request, envelope, self.mandate)
        rep = self._reputations.get(envelope.signer)
        bid = Bid(
            vendor=envelope.signer,
            offer=envelope.id,
            clearing_price=price,
            score=0 if rep is None else rep.score,
        )
        held = self._held.get(bid.vendor)
        evicted: tuple[tuple[bytes, str], ...] = ()
        if held is not None:
            if held[0].offer == bid.offer:
                return BidTaken(bid=held[0], evicted=())
            if not _better_of_one_vendor(bid, held[0]):
                raise AuctionError(
                    "this vendor's offer held in the auction clears at a lower price",
                    reason="superseded",
                )
            evicted = ((self._drop(bid.vendor).offer, "superseded"),)
        elif len(self._held) >= self.max_bids:
            if _rank(bid) > self._order[-1]:
                raise AuctionError(
                    f"the auction holds {self.max_bids} bids that rank before this one",
                    reason="outranked",
                )
            evicted = ((self._drop(self._order[-1][2]).offer, "outranked"),)
        self._held[bid.vendor] = (bid, data)
        insort(self._order, _rank(bid))
        return BidTaken(bid=bid, evicted=evicted)

    def result(
        self, now: int, *, reputations: Mapping[bytes, Reputation] | None = None
    ) -> AuctionResult:
        """The ranking of the offers held; raises AuctionError before ``respond_by``.

        ``reputations`` default to the ones the auction was made with.
        """
        if now < self.request.message.respond_by:
            raise AuctionError(
                "the auction is still open: ask again at its respond_by", reason="still-open"
            )
        return rank_offers(
            self._rfq,
            (data for _, data in self._held.values()),
            mandate=self.mandate,
            reputations=self._reputations if reputations is None else reputations,
            max_bids=self.max_bids,
        )
