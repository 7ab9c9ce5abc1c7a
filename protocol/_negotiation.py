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

Simulations play millions of moves, so a move does its work once: the
request's terms are read into attributes when the session opens, whose turn
it is and the next timer are kept beside the state instead of being derived
on every read, and the mandate is reduced to the highest unit price it covers
for the session's quantity (every price the machine checks is for that
quantity), so a price check is one comparison, not a sum over the pledges.
"""

from __future__ import annotations

from ._auction import Mandate
from ._envelope import Envelope, decode, decode_as
from ._errors import ProtocolError
from ._messages import Accept, CounterOffer, Offer, QuoteRequest, Reject, WalkAway
from ._negotiation_events import (
    Agreement,
    Ended,
    Event,
    NegotiationState,
    Party,
    Proposal,
    _proposal,
)

__all__ = ["NEGOTIATION_TRANSITIONS", "Negotiation", "NegotiationError", "offer_unit_price"]


class NegotiationError(ProtocolError):
    """A move the negotiation refuses; ``reason`` says which rule it broke.

    Reasons: "duplicate", "not-a-party", "out-of-turn", "wrong-kind", "session-over",
    "wrong-session", "not-in-reply", "lapsed", "no-tier",
    "round-limit", "mismatch", "outside-mandate", "below-target".
    """

    reason = "negotiation-error"


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

# Whose move it is in each open state; a final state is in no one's turn.
_TURN = {_S.AWAITING_OFFER: _V, _S.CIRCLE_TO_MOVE: _C, _S.VENDOR_TO_MOVE: _V}
# Enum members read through the class cost ~70 ns each; the hot path reads these.
_AWAITING_OFFER = _S.AWAITING_OFFER
_EXPIRED = _S.EXPIRED


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


class Negotiation:
    """One negotiation between a circle (the request's signer) and one vendor.

    Feed every move's envelope bytes to :meth:`receive` with the current time
    and call :meth:`handle_timer` when :meth:`get_timer` says; read
    :attr:`state`, :attr:`turn`, :attr:`standing` and :attr:`result`.
    """

    __slots__ = (
        "_ceiling",
        "_circle",
        "_currency",
        "_deadline",
        "_last_id",
        "_mandate",
        "_max_rounds",
        "_negotiator",
        "_prices",
        "_proposals",
        "_quantity",
        "_result",
        "_rounds",
        "_seen",
        "_session",
        "_standing",
        "_state",
        "_timer",
        "_transcript",
        "_turn",
        "request",
        "vendor",
    )

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
        """The request for quote that opened the session (do not replace it)."""
        self.vendor = vendor
        self._session = request.id
        self._negotiator = request.signer
        self._circle = body.circle
        self._quantity = body.quantity
        self._currency = body.currency
        self._max_rounds = body.max_rounds
        self._deadline = body.deadline
        self._mandate = mandate
        # mandate.covers(price, quantity) holds exactly when price <= ceiling(quantity),
        # since demand is summed from the highest price down (a test checks they agree).
        self._ceiling = mandate.ceiling(body.quantity)
        self._state = NegotiationState.AWAITING_OFFER
        self._turn: Party | None = _V
        self._timer: int | None = body.respond_by
        self._rounds = 0
        self._proposals: list[Proposal] = []
        self._standing: Proposal | None = None
        self._prices: dict[Party, list[int]] = {_C: [], _V: []}
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

    def prices(self, party: Party) -> tuple[int, ...]:
        """The unit prices ``party`` proposed, in order (the vendor's starts with its offer)."""
        return tuple(self._prices[party])

    @property
    def mandate(self) -> Mandate:
        """The circle's mandate the machine enforces (see :meth:`update_mandate`)."""
        return self._mandate

    @property
    def session(self) -> bytes:
        """The negotiation's id: the request for quote's id."""
        return self._session

    @property
    def negotiator(self) -> bytes:
        """The key that moves for the circle."""
        return self._negotiator

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
        return self._turn is None

    @property
    def turn(self) -> Party | None:
        """Whose move it is, or None when it is over."""
        return self._turn

    @property
    def standing(self) -> Proposal | None:
        """The last proposal, which the side to move may accept."""
        return self._standing

    @property
    def rounds_left(self) -> int:
        """Counter-offers still allowed."""
        return self._max_rounds - self._rounds

    def party_of(self, key: bytes) -> Party:
        """The side ``key`` moves for; raises NegotiationError for anyone else."""
        if key == self._negotiator:
            return _C
        if key == self.vendor:
            return _V
        raise _error("not-a-party", "only the circle's negotiator and the vendor may move")

    def mandate_covers(self, unit_price: int) -> bool:
        """True when the mandate covers the session's quantity at ``unit_price``."""
        ceiling = self._ceiling
        return ceiling is not None and unit_price <= ceiling

    def update_mandate(self, mandate: Mandate) -> None:
        """Replace the mandate when the circle's live pledges change."""
        self._mandate = mandate
        self._ceiling = mandate.ceiling(self._quantity)

    def get_timer(self) -> int | None:
        """When :meth:`handle_timer` must next be called, or None when over."""
        return self._timer

    def handle_timer(self, now: int) -> Ended | None:
        """End the negotiation if its time is up; returns the ending, if this call made it."""
        timer = self._timer
        if timer is None or now < timer:
            return None
        reason = "no-offer" if self._state is _AWAITING_OFFER else "deadline"
        return self._end(_EXPIRED, None, reason, now)

    def receive(self, data: bytes, now: int) -> Event:
        """Check and apply one move; returns what it did, or raises and applies nothing.

        A due timer is handled first, so a move that arrives too late finds the
        negotiation expired.
        """
        envelope = decode(data)
        move_id = envelope.id
        if move_id in self._seen:
            # Gossip delivers copies: say so, so callers can drop them quietly.
            raise _error("duplicate", "this move was already applied")
        timer = self._timer
        if timer is not None and now >= timer:
            self.handle_timer(now)
        state = self._state
        if self._turn is None:
            raise _error(
                "session-over", f"the negotiation is over ({state.value}); ask for a new quote"
            )
        party = self.party_of(envelope.signer)
        message = envelope.message
        after = NEGOTIATION_TRANSITIONS.get((state, party, message.kind))
        if after is None:
            raise _refusal(state, party, message.kind)
        if getattr(message, "circle", None) != self._circle:
            raise _error("wrong-session", "the move names another circle")
        # Each kind is checked in full before anything changes, so a refusal
        # leaves the machine as it was.
        if isinstance(message, CounterOffer):
            self._check_counter(message, party, now)
            price = message.unit_price
            self._rounds = message.round
        elif isinstance(message, Offer):
            price = self._check_offer(message, now)
        elif isinstance(message, Accept):
            standing = self._check_accept(message, now)
            self._advance(data, move_id, after)
            return self._agree(message, standing, move_id, party, now)
        else:
            if isinstance(message, Reject):
                if message.in_reply_to != self._last_id:
                    raise _not_in_reply()
            else:
                assert isinstance(message, WalkAway)  # the only other kind in the table
                if message.session != self._session:
                    raise _error("wrong-session", "the walk-away names another request for quote")
            # An ending move is recorded but answers nothing: last_id stays the move it ends.
            self._transcript.append(data)
            self._seen.add(move_id)
            return self._end(after, party, message.reason, now)
        self._advance(data, move_id, after)
        proposal = _proposal(
            party=party,
            unit_price=price,
            quantity=self._quantity,
            round=self._rounds,
            valid_until=message.valid_until,
            id=move_id,
            at=now,
        )
        self._proposals.append(proposal)
        self._standing = proposal
        self._prices[party].append(price)
        return proposal

    def _agree(
        self, message: Accept, standing: Proposal, move_id: bytes, party: Party, now: int
    ) -> Agreement:
        agreement = Agreement(
            circle=message.circle,
            session=self._session,
            vendor=self.vendor,
            negotiator=self._negotiator,
            unit_price=message.unit_price,
            quantity=message.quantity,
            currency=message.currency,
            proposal=standing.id,
            accept=move_id,
            by=party,
            at=now,
        )
        self._result = agreement
        return agreement

    def _advance(self, data: bytes, move_id: bytes, after: NegotiationState) -> None:
        """Record an accepted move that the next move will answer, and enter ``after``."""
        self._transcript.append(data)
        self._seen.add(move_id)
        self._last_id = move_id
        self._state = after
        turn = self._turn = _TURN.get(after)
        # No move leads back to awaiting an offer, so the deadline is the only timer left.
        self._timer = None if turn is None else self._deadline

    def _end(self, state: NegotiationState, by: Party | None, reason: str, now: int) -> Ended:
        self._state = state
        self._turn = self._timer = None
        ended = Ended(state=state, by=by, reason=reason, at=now)
        self._result = ended
        return ended

    def _check_counter(self, message: CounterOffer, party: Party, now: int) -> None:
        if message.in_reply_to != self._last_id:
            raise _not_in_reply()
        if message.round != self._rounds + 1:
            raise _error("mismatch", f"this counter-offer must be round {self._rounds + 1}")
        if message.round > self._max_rounds:
            raise _error(
                "round-limit",
                f"the {self._max_rounds} counter-offers are used: accept or reject",
            )
        if message.quantity != self._quantity:
            raise _error("mismatch", f"the negotiation is for {self._quantity} units")
        if message.currency != self._currency:
            raise self._wrong_currency()
        if message.valid_until <= now:
            raise _lapsed_on_arrival()
        if party is _C and not self.mandate_covers(message.unit_price):
            raise self._outside_mandate(message.unit_price)

    def _check_offer(self, message: Offer, now: int) -> int:
        """The offer's unit price for the session's quantity, once every rule holds."""
        if message.in_reply_to != self._last_id:
            raise _not_in_reply()
        if message.currency != self._currency:
            raise self._wrong_currency()
        if message.valid_until <= now:
            raise _lapsed_on_arrival()
        price = offer_unit_price(message, self._quantity)
        if price is None:
            raise _error(
                "no-tier",
                f"the offer quotes no price for {self._quantity} units "
                "(capacity or smallest tier): add a tier that covers it",
            )
        return price

    def _check_accept(self, message: Accept, now: int) -> Proposal:
        """The standing proposal ``message`` accepts, once every rule holds."""
        # Accepting is only in the table once a proposal stands.
        standing = self._standing
        assert standing is not None
        if message.accepted != standing.id:
            raise _error("not-in-reply", "an acceptance must name the standing proposal")
        if (
            message.unit_price != standing.unit_price
            or message.quantity != standing.quantity
            or message.currency != self._currency
        ):
            raise _error("mismatch", "an acceptance must repeat the proposal's price and quantity")
        if now >= standing.valid_until:
            raise _error("lapsed", "the standing proposal has lapsed: counter it instead")
        # Re-checked whoever accepts: pledges may have been withdrawn since.
        if not self.mandate_covers(message.unit_price):
            raise self._outside_mandate(message.unit_price)
        return standing

    def _wrong_currency(self) -> NegotiationError:
        return _error("mismatch", f"the negotiation is in {self._currency}")

    def _outside_mandate(self, unit_price: int) -> NegotiationError:
        # Every price checked is for the session's quantity (counter-offers and
        # acceptances must repeat it), so that is the quantity refused.
        return _error(
            "outside-mandate",
            f"the circle's live pledges do not cover {self._quantity} units at {unit_price}: "
            "the circle cannot agree to that price",
        )


def _not_in_reply() -> NegotiationError:
    return _error("not-in-reply", "a move must answer the other side's last move")


def _lapsed_on_arrival() -> NegotiationError:
    return _error("lapsed", "the proposal is already lapsed when received")


def _refusal(state: NegotiationState, party: Party, kind: str) -> NegotiationError:
    """Why a move missing from the table is refused: not a move at all, or not now."""
    if not any(key[2] == kind for key in NEGOTIATION_TRANSITIONS):
        return _error("wrong-kind", f"a {kind} is not a negotiation move")
    return _error("out-of-turn", f"a {party.value} {kind} is not allowed now ({state.value})")
