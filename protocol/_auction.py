"""Reverse auctions: one request for quote, every listening vendor's offer, one winner.

Theory of operation: a circle's negotiator publishes a :class:`QuoteRequest`
with no vendor on the circle's topic; vendors answer with signed offers until
its ``respond_by``. The winner is a pure function of the request, the set of
offers and the reputations (never of arrival order or of who computes it):
each offer's clearing price is the lowest of its tier prices that the circle's
live pledges clear (see :meth:`Mandate.clearing_price`); each vendor's best
offer is its bid; bids rank by lowest clearing price, then higher reputation
score, then vendor key. Offers signed at or after ``respond_by``, lapsing
before it, for another circle or currency, or that the pledges cannot clear
are refused with a reason, so every member refuses the same ones.

:class:`ReverseAuction` is the collector a node runs: it refuses offers that
arrive after the deadline and ranks what it holds once the deadline passes.
Members who must agree should rank the same set (the offers in the circle's
log), with :func:`rank_offers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ._envelope import Envelope, decode, decode_as, envelope_id
from ._errors import InvalidField, InvalidMessage, ProtocolError
from ._messages import Offer, Pledge, QuoteRequest
from ._reputation import Reputation

__all__ = [
    "AuctionError",
    "AuctionResult",
    "Bid",
    "Mandate",
    "ReverseAuction",
    "rank_offers",
]


class AuctionError(ProtocolError):
    """An offer the auction refuses, or a result asked for too early.

    Reasons: "not-an-offer", "wrong-request", "wrong-vendor", "too-late",
    "lapsed", "does-not-clear", "still-open", or the offer's own decoding reason.
    """

    reason = "auction-error"


@dataclass(frozen=True, slots=True, kw_only=True)
class Mandate:
    """What the circle's live pledges let its negotiator agree to.

    ``demand`` is the circle's demand curve: (max unit price, units) pairs,
    one per live pledge or merged; the units demanded at price p are those of
    every pair whose price is at least p.
    """

    target: int
    """Units the circle must reach (its charter's target)."""
    demand: tuple[tuple[int, int], ...]
    """(max unit price, units) pairs, normalised to distinct prices, highest first."""

    def __post_init__(self) -> None:
        if type(self.target) is not int or self.target < 1:
            raise InvalidField(
                "a mandate's target must be a positive integer",
                reason="out-of-range",
                field="mandate.target",
            )
        merged: dict[int, int] = {}
        for pair in self.demand:
            if len(pair) != 2 or any(type(v) is not int or v < 1 for v in pair):
                raise InvalidField(
                    "demand pairs are (max unit price, units), both integers >= 1",
                    reason="out-of-range",
                    field="mandate.demand",
                )
            merged[pair[0]] = merged.get(pair[0], 0) + pair[1]
        object.__setattr__(self, "demand", tuple(sorted(merged.items(), reverse=True)))

    @classmethod
    def from_pledges(cls, pledges: Iterable[Pledge], *, target: int) -> Mandate:
        """The mandate of a circle whose live pledges are ``pledges`` (withdrawals skipped)."""
        return cls(
            target=target,
            demand=tuple((p.max_price, p.quantity) for p in pledges if p.quantity > 0),
        )

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

    def clearing_price(self, offer: Offer) -> int | None:
        """The lowest tier price of ``offer`` this circle clears, or None.

        A tier clears when the demand at its price meets both its minimum and
        the target, within the vendor's capacity.
        """
        best: int | None = None
        for tier in offer.tiers:
            need = max(tier.min_quantity, self.target)
            if need <= offer.capacity and self.units_at(tier.unit_price) >= need:
                best = tier.unit_price if best is None else min(best, tier.unit_price)
        return best


@dataclass(frozen=True, slots=True, kw_only=True)
class Bid:
    """A vendor's best eligible offer in an auction."""

    vendor: bytes
    """The vendor's key."""
    offer: bytes
    """Id of the offer envelope."""
    clearing_price: int
    """The lowest unit price of the offer that the circle's pledges clear."""
    score: int
    """The vendor's reputation score (Wilson lower bound, ppm) used to break ties."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuctionResult:
    """The ranking every member computes from the same request, offers and reputations."""

    winner: Bid | None
    """The best bid, or None when no offer is eligible."""
    ranking: tuple[Bid, ...]
    """Every bid, best first (one per vendor)."""
    refused: tuple[tuple[bytes, str], ...]
    """(offer id, reason) for every offer that was not eligible, sorted."""


def _eligible(request: Envelope[QuoteRequest], offer: Envelope[Offer], mandate: Mandate) -> int:
    """The offer's clearing price; raises AuctionError unless it may take part."""
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
    price = mandate.clearing_price(body)
    if price is None:
        raise AuctionError(
            "the circle's live pledges clear no tier of this offer", reason="does-not-clear"
        )
    return price


def rank_offers(
    rfq: bytes,
    offers: Iterable[bytes],
    *,
    mandate: Mandate,
    reputations: Mapping[bytes, Reputation] | None = None,
) -> AuctionResult:
    """Rank a set of offer envelopes answering ``rfq``; a vendor without a reputation scores 0."""
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
        if held is None or (bid.clearing_price, bid.offer) < (held.clearing_price, held.offer):
            best[bid.vendor] = bid
    ranking = tuple(sorted(best.values(), key=lambda b: (b.clearing_price, -b.score, b.vendor)))
    return AuctionResult(
        winner=ranking[0] if ranking else None,
        ranking=ranking,
        refused=tuple(sorted(refused.items())),
    )


class ReverseAuction:
    """Collects the offers answering one request for quote until its ``respond_by``."""

    def __init__(self, rfq: bytes, *, mandate: Mandate) -> None:
        self.request = decode_as(rfq, QuoteRequest)
        self.mandate = mandate
        self._rfq = rfq
        self._offers: dict[bytes, bytes] = {}

    @property
    def offers(self) -> tuple[bytes, ...]:
        """The offers held, by id."""
        return tuple(self._offers[k] for k in sorted(self._offers))

    def get_timer(self) -> int:
        """When the auction closes."""
        return self.request.message.respond_by

    def receive(self, data: bytes, now: int) -> Bid:
        """Hold one offer; if refused, raises InvalidMessage or AuctionError and holds nothing."""
        if now >= self.request.message.respond_by:
            raise AuctionError("the auction closed at respond_by", reason="too-late")
        envelope = decode_as(data, Offer)
        price = _eligible(self.request, envelope, self.mandate)
        self._offers[envelope.id] = data
        return Bid(vendor=envelope.signer, offer=envelope.id, clearing_price=price, score=0)

    def result(
        self, now: int, *, reputations: Mapping[bytes, Reputation] | None = None
    ) -> AuctionResult:
        """The ranking of the offers held; raises AuctionError before ``respond_by``."""
        if now < self.request.message.respond_by:
            raise AuctionError(
                "the auction is still open: ask again at its respond_by", reason="still-open"
            )
        return rank_offers(
            self._rfq, self._offers.values(), mandate=self.mandate, reputations=reputations
        )
