"""Negotiation between a circle and a vendor: a sans-IO alternating-offers machine.

Theory of operation: a circle's negotiator signs a request for quote
(:class:`QuoteRequest`); that envelope opens one :class:`Negotiation` per
vendor. The vendor answers with an :class:`Offer` (or a :class:`Reject`), then
the two sides alternate: each move answers the other side's last one with a
:class:`CounterOffer`, an :class:`Accept` of the standing proposal, or a
:class:`Reject`. Either side may :class:`WalkAway` at any time, since leaving
needs nobody's turn. Every move is a signed envelope handed in as bytes and
checked with :func:`protocol.decode`; only the request's signer (for the
circle) and the vendor may move, and only in turn, as :data:`NEGOTIATION_TRANSITIONS`
says. Anything missing from that table is refused with a
:class:`NegotiationError` and leaves the machine unchanged.

The session always ends: counter-offers carry a round number up to the
request's ``max_rounds``, after which only accept, reject or walk away remain;
and at the request's deadline (or at ``respond_by`` with no offer)
:meth:`Negotiation.handle_timer` ends it. Time is handed in, never read.

The circle's side is bound by a :class:`Mandate` derived from its live
pledges: no circle counter-offer and no acceptance (by either side) is recorded
at a price those pledges do not cover, whoever signs it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ._auction import Mandate
from ._envelope import Envelope, decode, decode_as
from ._errors import ProtocolError
from ._messages import (
    Accept,
    CounterOffer,
    Message,
    Offer,
    QuoteRequest,
    Reject,
    WalkAway,
)

__all__ = [
    "NEGOTIATION_TRANSITIONS",
    "Agreement",
    "Ended",
    "Negotiation",
    "NegotiationError",
    "NegotiationState",
    "Party",
    "Proposal",
    "offer_unit_price",
]


class NegotiationError(ProtocolError):
    """A move the negotiation refuses; ``reason`` says which rule it broke.

    Reasons: "duplicate", "not-a-party", "out-of-turn", "wrong-kind", "session-over",
    "wrong-session", "not-in-reply", "lapsed", "no-tier",
    "round-limit", "mismatch", "outside-mandate", "below-target", "bad-mandate".
    """

    reason = "negotiation-error"


class Party(enum.Enum):
    """The two sides of a negotiation."""

    CIRCLE = "circle"
    VENDOR = "vendor"


class NegotiationState(enum.Enum):
    """Where a negotiation is; the last four are final."""

    AWAITING_OFFER = "awaiting-offer"
    CIRCLE_TO_MOVE = "circle-to-move"
    VENDOR_TO_MOVE = "vendor-to-move"
    AGREED = "agreed"
    REJECTED = "rejected"
    WALKED_AWAY = "walked-away"
    EXPIRED = "expired"


_S = NegotiationState
_C = Party.CIRCLE
_V = Party.VENDOR
_OPEN = (_S.AWAITING_OFFER, _S.CIRCLE_TO_MOVE, _S.VENDOR_TO_MOVE)

#: Every allowed move: (state, who moves, message kind) -> next state.
NEGOTIATION_TRANSITIONS: dict[tuple[NegotiationState, Party, str], NegotiationState] = {
    (_S.AWAITING_OFFER, _V, "offer"): _S.CIRCLE_TO_MOVE,
    (_S.AWAITING_OFFER, _V, "reject"): _S.REJECTED,
    (_S.CIRCLE_TO_MOVE, _C, "counter"): _S.VENDOR_TO_MOVE,
    (_S.CIRCLE_TO_MOVE, _C, "accept"): _S.AGREED,
    (_S.CIRCLE_TO_MOVE, _C, "reject"): _S.REJECTED,
    (_S.VENDOR_TO_MOVE, _V, "counter"): _S.CIRCLE_TO_MOVE,
    (_S.VENDOR_TO_MOVE, _V, "accept"): _S.AGREED,
    (_S.VENDOR_TO_MOVE, _V, "reject"): _S.REJECTED,
    **{(state, party, "walkaway"): _S.WALKED_AWAY for state in _OPEN for party in Party},
}


def _error(reason: str, message: str) -> NegotiationError:
    return NegotiationError(message, reason=reason)


def offer_unit_price(offer: Offer, quantity: int) -> int | None:
    """The unit price ``offer`` quotes for ``quantity`` units, or None if it quotes none."""
    if quantity > offer.capacity:
        return None
    price: int | None = None
    for tier in offer.tiers:
        if tier.min_quantity <= quantity:
            price = tier.unit_price
    return price


@dataclass(frozen=True, slots=True, kw_only=True)
class Proposal:
    """An offer or counter-offer the machine recorded."""

    party: Party
    """Who proposed."""
    unit_price: int
    """Proposed unit price in minor units."""
    quantity: int
    """Units proposed."""
    round: int
    """0 for the vendor's offer, then 1, 2, ... for counter-offers."""
    valid_until: int
    """The proposal can be accepted until (not at) this time."""
    id: bytes
    """Id of its envelope."""
    at: int
    """When the machine received it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Agreement:
    """Both sides agreed on a price: the input to a quorum certificate and a deal."""

    circle: bytes
    """The circle."""
    session: bytes
    """Id of the request for quote."""
    vendor: bytes
    """The vendor's key."""
    negotiator: bytes
    """The circle negotiator's key."""
    unit_price: int
    """Agreed unit price in minor units."""
    quantity: int
    """Agreed units."""
    currency: str
    """Currency of the price."""
    proposal: bytes
    """Id of the proposal accepted."""
    accept: bytes
    """Id of the acceptance."""
    by: Party
    """Who accepted."""
    at: int
    """When the machine received the acceptance."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Ended:
    """The negotiation ended without agreement."""

    state: NegotiationState
    """REJECTED, WALKED_AWAY or EXPIRED."""
    by: Party | None
    """Who ended it, or None when time ran out."""
    reason: str
    """The signer's stated reason, or "deadline" / "no-offer" for a timeout."""
    at: int
    """When it ended."""


Event = Proposal | Agreement | Ended


class Negotiation:
    """One negotiation between a circle (the request's signer) and one vendor.

    Feed every move's envelope bytes to :meth:`receive` with the current time
    and call :meth:`handle_timer` when :meth:`get_timer` says; read
    :attr:`state`, :attr:`turn`, :attr:`standing` and :attr:`result`.
    """

    def __init__(self, rfq: bytes, *, vendor: bytes, mandate: Mandate) -> None:
        request = decode_as(rfq, QuoteRequest)
        body = request.message
        if body.vendor is not None and body.vendor != vendor:
            raise _error("not-a-party", "this request for quote names another vendor")
        if vendor == request.signer:
            raise _error("not-a-party", "the vendor and the circle's negotiator must differ")
        if body.quantity < mandate.target:
            raise _error(
                "below-target",
                f"the request asks for {body.quantity} units, below the circle's target "
                f"{mandate.target}: ask for at least the target",
            )
        self.request: Envelope[QuoteRequest] = request
        self.vendor = vendor
        self._mandate = mandate
        self._state = NegotiationState.AWAITING_OFFER
        self._rounds = 0
        self._proposals: list[Proposal] = []
        self._result: Agreement | Ended | None = None
        self._transcript: list[bytes] = [rfq]
        self._last_id = request.id
        self._seen = {request.id}

    @property
    def state(self) -> NegotiationState:
        """Where the negotiation is."""
        return self._state

    @property
    def rounds(self) -> int:
        """Counter-offers made so far."""
        return self._rounds

    @property
    def result(self) -> Agreement | Ended | None:
        """The agreement or the ending, once over."""
        return self._result

    @property
    def proposals(self) -> tuple[Proposal, ...]:
        """Every offer and counter-offer recorded, in order."""
        return tuple(self._proposals)

    @property
    def mandate(self) -> Mandate:
        """The circle's mandate the machine enforces (see :meth:`update_mandate`)."""
        return self._mandate

    @property
    def session(self) -> bytes:
        """The negotiation's id: the request for quote's id."""
        return self.request.id

    @property
    def negotiator(self) -> bytes:
        """The key that moves for the circle."""
        return self.request.signer

    @property
    def transcript(self) -> tuple[bytes, ...]:
        """Every accepted envelope, request first, in order."""
        return tuple(self._transcript)

    @property
    def last_id(self) -> bytes:
        """Id of the last move (the request at first): what the next move answers."""
        return self._last_id

    @property
    def is_over(self) -> bool:
        """True once the negotiation has reached a final state."""
        return self._state not in _OPEN

    @property
    def turn(self) -> Party | None:
        """Whose move it is, or None when it is over."""
        if self._state is NegotiationState.CIRCLE_TO_MOVE:
            return Party.CIRCLE
        if self._state in (NegotiationState.AWAITING_OFFER, NegotiationState.VENDOR_TO_MOVE):
            return Party.VENDOR
        return None

    @property
    def standing(self) -> Proposal | None:
        """The last proposal, which the side to move may accept."""
        return self._proposals[-1] if self._proposals else None

    @property
    def rounds_left(self) -> int:
        """Counter-offers still allowed."""
        return self.request.message.max_rounds - self._rounds

    def party_of(self, key: bytes) -> Party:
        """The side ``key`` moves for; raises NegotiationError for anyone else."""
        if key == self.request.signer:
            return Party.CIRCLE
        if key == self.vendor:
            return Party.VENDOR
        raise _error("not-a-party", "only the circle's negotiator and the vendor may move")

    def update_mandate(self, mandate: Mandate) -> None:
        """Replace the mandate when the circle's live pledges change."""
        self._mandate = mandate

    def get_timer(self) -> int | None:
        """When :meth:`handle_timer` must next be called, or None when over."""
        if self._state is NegotiationState.AWAITING_OFFER:
            return self.request.message.respond_by
        if self.is_over:
            return None
        return self.request.message.deadline

    def handle_timer(self, now: int) -> Ended | None:
        """End the negotiation if its time is up; returns the ending, if this call made it."""
        timer = self.get_timer()
        if timer is None or now < timer:
            return None
        reason = "no-offer" if self._state is NegotiationState.AWAITING_OFFER else "deadline"
        return self._end(NegotiationState.EXPIRED, None, reason, now)

    def receive(self, data: bytes, now: int) -> Event:
        """Check and apply one move; returns what it did, or raises and applies nothing.

        A due timer is handled first, so a move that arrives too late finds the
        negotiation expired.
        """
        envelope = decode(data)
        if envelope.id in self._seen:
            # Gossip delivers copies: say so, so callers can drop them quietly.
            raise _error("duplicate", "this move was already applied")
        self.handle_timer(now)
        if self.is_over:
            state = self._state.value
            raise _error("session-over", f"the negotiation is over ({state}); ask for a new quote")
        party = self.party_of(envelope.signer)
        message = envelope.message
        after = NEGOTIATION_TRANSITIONS.get((self._state, party, message.kind))
        if after is None:
            if not any(key[2] == message.kind for key in NEGOTIATION_TRANSITIONS):
                raise _error("wrong-kind", f"a {message.kind} is not a negotiation move")
            raise _error(
                "out-of-turn",
                f"a {party.value} {message.kind} is not allowed now ({self._state.value})",
            )
        if getattr(message, "circle", None) != self.request.message.circle:
            raise _error("wrong-session", "the move names another circle")
        self._check(message, party, now)
        self._transcript.append(data)
        self._seen.add(envelope.id)
        if isinstance(message, WalkAway | Reject):
            return self._end(after, party, message.reason, now)
        self._last_id = envelope.id
        self._state = after
        if isinstance(message, Accept):
            standing = self._proposals[-1]
            agreement = Agreement(
                circle=message.circle,
                session=self.session,
                vendor=self.vendor,
                negotiator=self.negotiator,
                unit_price=message.unit_price,
                quantity=message.quantity,
                currency=message.currency,
                proposal=standing.id,
                accept=envelope.id,
                by=party,
                at=now,
            )
            self._result = agreement
            return agreement
        if isinstance(message, CounterOffer):
            self._rounds = message.round
            price, valid_until = message.unit_price, message.valid_until
        else:
            assert isinstance(message, Offer)
            quoted = offer_unit_price(message, self.request.message.quantity)
            assert quoted is not None  # _check refused an offer without a price
            price, valid_until = quoted, message.valid_until
        proposal = Proposal(
            party=party,
            unit_price=price,
            quantity=self.request.message.quantity,
            round=self._rounds,
            valid_until=valid_until,
            id=envelope.id,
            at=now,
        )
        self._proposals.append(proposal)
        return proposal

    def _end(self, state: NegotiationState, by: Party | None, reason: str, now: int) -> Ended:
        self._state = state
        ended = Ended(state=state, by=by, reason=reason, at=now)
        self._result = ended
        return ended

    def _check(self, message: Message, party: Party, now: int) -> None:
        request = self.request.message
        if isinstance(message, WalkAway):
            if message.session != self.session:
                raise _error("wrong-session", "the walk-away names another request for quote")
            return
        if isinstance(message, Reject):
            self._check_reply(message.in_reply_to)
            return
        if isinstance(message, Offer):
            self._check_reply(message.in_reply_to)
            self._check_terms(message.currency, request.quantity, message.valid_until, now)
            if offer_unit_price(message, request.quantity) is None:
                raise _error(
                    "no-tier",
                    f"the offer quotes no price for {request.quantity} units "
                    "(capacity or smallest tier): add a tier that covers it",
                )
            return
        if isinstance(message, CounterOffer):
            self._check_reply(message.in_reply_to)
            if message.round != self._rounds + 1:
                raise _error("mismatch", f"this counter-offer must be round {self._rounds + 1}")
            if message.round > request.max_rounds:
                raise _error(
                    "round-limit",
                    f"the {request.max_rounds} counter-offers are used: accept or reject",
                )
            if message.quantity != request.quantity:
                raise _error("mismatch", f"the negotiation is for {request.quantity} units")
            self._check_terms(message.currency, message.quantity, message.valid_until, now)
            if party is Party.CIRCLE:
                self._check_mandate(message.unit_price, message.quantity)
            return
        assert isinstance(message, Accept)
        standing = self._proposals[-1]
        if message.accepted != standing.id:
            raise _error("not-in-reply", "an acceptance must name the standing proposal")
        if (message.unit_price, message.quantity, message.currency) != (
            standing.unit_price,
            standing.quantity,
            request.currency,
        ):
            raise _error("mismatch", "an acceptance must repeat the proposal's price and quantity")
        if now >= standing.valid_until:
            raise _error("lapsed", "the standing proposal has lapsed: counter it instead")
        # Re-checked whoever accepts: pledges may have been withdrawn since.
        self._check_mandate(message.unit_price, message.quantity)

    def _check_reply(self, in_reply_to: bytes | None) -> None:
        if in_reply_to != self._last_id:
            raise _error("not-in-reply", "a move must answer the other side's last move")

    def _check_terms(self, currency: str, quantity: int, valid_until: int, now: int) -> None:
        if currency != self.request.message.currency:
            raise _error("mismatch", f"the negotiation is in {self.request.message.currency}")
        if quantity != self.request.message.quantity:
            raise _error("mismatch", f"the negotiation is for {self.request.message.quantity}")
        if valid_until <= now:
            raise _error("lapsed", "the proposal is already lapsed when received")

    def _check_mandate(self, unit_price: int, quantity: int) -> None:
        if not self._mandate.covers(unit_price, quantity):
            raise _error(
                "outside-mandate",
                f"the circle's live pledges do not cover {quantity} units at {unit_price}: "
                "the circle cannot agree to that price",
            )
