"""Negotiation strategies: one small interface, three classic families, a negotiator.

A :class:`Strategy` sees a :class:`SessionView` of the negotiation (the session and
which side it plays) and the time, and returns a :class:`Move`. A
:class:`Negotiator` turns moves into signed envelopes and refuses, before
signing, any move beyond the strategy's reservation price or (for the circle)
outside the mandate its live pledges give: a strategy can be wrong, but it
cannot make its side agree to a price it must not. :func:`circles.simulate`
plays two strategies against each other.

The families follow Faratin, Sierra and Jennings (1998): time-dependent
concession with exponent ``e`` (Boulware ``e < 1`` holds out, linear
``e = 1``, conceder ``e > 1`` gives in early), relative tit-for-tat (concede in
proportion to what the other side conceded), and take-it-or-leave-it.

A move is made millions of times in a simulation, so the view reads the
session's running figures (its per-side price lists, its standing proposal)
rather than rebuilding them, and the negotiator reads its request's terms once.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass, field
from typing import Protocol

import protocol
from protocol import Negotiation, Party

from ._errors import CirclesError

__all__ = [
    "Action",
    "Move",
    "Negotiator",
    "RelativeTitForTat",
    "SessionView",
    "Strategy",
    "StrategyError",
    "TakeItOrLeaveIt",
    "TimeDependent",
]

# Enum members read through the class cost ~70 ns each; every move reads these.
_CIRCLE = Party.CIRCLE
_VENDOR = Party.VENDOR
_OTHER = {_CIRCLE: _VENDOR, _VENDOR: _CIRCLE}


class StrategyError(CirclesError):
    """A strategy returned a move its side must not make.

    Reasons: "beyond-reservation", "outside-mandate", "round-limit", "not-your-turn".
    """

    reason = "strategy-error"


class Action(enum.Enum):
    """What a move does."""

    PROPOSE = "propose"
    ACCEPT = "accept"
    REJECT = "reject"
    WALK_AWAY = "walk-away"


_PROPOSE = Action.PROPOSE
_ACCEPT = Action.ACCEPT
_REJECT = Action.REJECT


@dataclass(frozen=True, slots=True, kw_only=True)
class Move:
    """A strategy's decision; build one with the class methods."""

    action: Action
    """Propose, accept the standing proposal, reject it, or walk away."""
    unit_price: int | None = None
    """The unit price proposed (only for PROPOSE)."""
    reason: str = ""
    """Said with a rejection or a walk-away."""

    @classmethod
    def propose(cls, unit_price: int) -> Move:
        """Offer (vendor's first move) or counter-offer ``unit_price``."""
        return cls(action=_PROPOSE, unit_price=unit_price)

    @classmethod
    def accept(cls) -> Move:
        """Accept the other side's standing proposal."""
        return cls(action=_ACCEPT)

    @classmethod
    def reject(cls, reason: str = "") -> Move:
        """Decline the other side's last move and end the negotiation."""
        return cls(action=_REJECT, reason=reason)

    @classmethod
    def walk_away(cls, reason: str = "") -> Move:
        """Leave the negotiation."""
        return cls(action=Action.WALK_AWAY, reason=reason)


@dataclass(frozen=True, slots=True)
class SessionView:
    """What a strategy sees: the session, from one side."""

    session: Negotiation
    """The negotiation (read it; never feed it from a strategy)."""
    party: Party
    """The side the strategy plays."""
    # The request's terms never change in a session: read once, here.
    _vendor: bool = field(init=False, repr=False, compare=False)
    _created: int = field(init=False, repr=False, compare=False)
    _span: int = field(init=False, repr=False, compare=False)
    _max_rounds: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        request = self.session.request.message
        object.__setattr__(self, "_vendor", self.party is _VENDOR)
        object.__setattr__(self, "_created", request.created)
        object.__setattr__(self, "_span", max(1, request.deadline - request.created))
        object.__setattr__(self, "_max_rounds", request.max_rounds)

    @property
    def mine(self) -> tuple[int, ...]:
        """The unit prices this side proposed, in order."""
        return self.session.prices(self.party)

    @property
    def theirs(self) -> tuple[int, ...]:
        """The unit prices the other side proposed, in order."""
        return self.session.prices(_OTHER[self.party])

    @property
    def standing(self) -> int | None:
        """The other side's proposal this side may accept now, or None."""
        standing = self.session.standing
        if standing is None or standing.party is self.party:
            return None
        return standing.unit_price

    @property
    def can_propose(self) -> bool:
        """False once the round limit leaves only accept, reject or walk away."""
        session = self.session
        return session.standing is None or session.rounds_left > 0

    def progress(self, now: int) -> float:
        """How far the negotiation is, 0..1: by time or by rounds, whichever is further."""
        session = self.session
        by_time = (now - self._created) / self._span
        # The opening offer is round 0; each counter-offer takes the next round.
        next_round = session.rounds + (session.standing is not None)
        by_rounds = next_round / self._max_rounds
        # by_rounds is never negative, so neither is the further of the two.
        further = by_time if by_time > by_rounds else by_rounds
        return 1.0 if further > 1.0 else further

    def at_least_as_good(self, price: int, than: int) -> bool:
        """True when ``price`` suits this side at least as well as ``than``."""
        return price >= than if self._vendor else price <= than

    def toward_me(self, price: float) -> int:
        """Round ``price`` to whole minor units in this side's favour."""
        return math.ceil(price) if self._vendor else max(1, math.floor(price))

    def within(self, price: int, reservation: int) -> bool:
        """True when ``price`` does not go beyond ``reservation`` for this side."""
        return price >= reservation if self._vendor else price <= reservation


class Strategy(Protocol):
    """The interface a negotiation strategy implements."""

    @property
    def reservation(self) -> int:
        """The worst unit price this side will agree to (vendor floor, circle ceiling)."""
        ...

    def move(self, view: SessionView, now: int) -> Move:
        """The next move, for the side ``view.party``, at time ``now``."""
        ...


def _final_answer(view: SessionView, reservation: int) -> Move:
    """Accept the standing proposal if within the reservation, else reject it."""
    standing = view.standing
    if standing is not None and view.within(standing, reservation):
        return Move.accept()
    return Move.reject("no agreement within my limits")


@functools.lru_cache(maxsize=4096, typed=True)
def _proposing(unit_price: int) -> Move:
    """``Move.propose(unit_price)``, built once per price.

    Moves are immutable, so one serves every session, and concession strategies
    propose on nearly every move (building a frozen dataclass costs ~0.6 us).
    """
    return Move.propose(unit_price)


def _concede(view: SessionView, next_price: int, reservation: int) -> Move:
    """Accept when the other side already offers what I would propose, else propose."""
    standing = view.standing
    if standing is not None and view.at_least_as_good(standing, next_price):
        return Move.accept()
    if not view.can_propose:
        return _final_answer(view, reservation)
    return _proposing(next_price)


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeDependent:
    """Concede from ``initial`` to ``reservation`` as ``progress ** (1 / e)``."""

    reservation: int
    """The worst unit price this side will agree to."""
    initial: int
    """The first price proposed."""
    e: float = 1.0
    """Concession exponent: below 1 Boulware, 1 linear, above 1 conceder."""

    def move(self, view: SessionView, now: int) -> Move:
        share = view.progress(now) ** (1.0 / self.e)
        target = view.toward_me(self.initial + (self.reservation - self.initial) * share)
        # Never beyond the reservation, never worse than the opening.
        if view.within(target, self.initial):
            target = self.initial
        if not view.within(target, self.reservation):
            target = self.reservation
        return _concede(view, target, self.reservation)


@dataclass(frozen=True, slots=True, kw_only=True)
class RelativeTitForTat:
    """Concede in proportion to the other side's last concession (over ``delta`` moves)."""

    reservation: int
    """The worst unit price this side will agree to."""
    initial: int
    """The first price proposed."""
    delta: int = 1
    """How many of the other side's moves back to compare."""

    def move(self, view: SessionView, now: int) -> Move:
        mine, theirs = view.mine, view.theirs
        if not mine:
            target = self.initial
        elif len(theirs) <= self.delta:
            target = mine[-1]
        else:
            target = view.toward_me(mine[-1] * theirs[-1 - self.delta] / theirs[-1])
        if view.within(target, self.initial):
            target = self.initial
        if not view.within(target, self.reservation):
            target = self.reservation
        return _concede(view, target, self.reservation)


@dataclass(frozen=True, slots=True, kw_only=True)
class TakeItOrLeaveIt:
    """Name one price once; accept anything at least as good, reject the rest."""

    reservation: int
    """The worst unit price this side will agree to."""
    price: int | None = None
    """The one price proposed (the reservation if None)."""

    def move(self, view: SessionView, now: int) -> Move:
        price = self.reservation if self.price is None else self.price
        standing = view.standing
        if standing is not None and view.at_least_as_good(standing, price):
            return Move.accept()
        if view.mine or not view.can_propose:
            return Move.reject("take it or leave it")
        return Move.propose(price)


class Negotiator:
    """Plays one side of a negotiation with a strategy, signing its moves."""

    def __init__(
        self,
        identity: protocol.Identity,
        session: Negotiation,
        strategy: Strategy,
        *,
        valid_for: int = 3600,
        terms: str = "",
    ) -> None:
        self.identity = identity
        self.session = session
        self.strategy = strategy
        self.party = session.party_of(identity.public_key)
        self.valid_for = valid_for
        self.terms = terms
        # A view holds only the session and the side, so one serves every move.
        self._view = SessionView(session, self.party)
        self._request = session.request.message

    def act(self, now: int) -> bytes | None:
        """The strategy's next move as envelope bytes, or None when it is not this side's turn.

        Raises StrategyError, without signing, for a move beyond the reservation
        or outside the circle's mandate.
        """
        session = self.session
        # The turn is None once the session is over, and a party never is.
        if session.turn is not self.party:
            return None
        view = self._view
        move = self.strategy.move(view, now)
        request = self._request
        action = move.action
        body: protocol.Message
        if action is _PROPOSE:
            price = move.unit_price
            if price is None or price < 1:
                raise StrategyError("a proposal needs a unit price of at least 1")
            if not view.can_propose:
                raise StrategyError("no counter-offers are left", reason="round-limit")
            self._check(view, price)
            body = self._proposal(price, now)
        elif action is _ACCEPT:
            standing = session.standing
            if standing is None or standing.party is self.party:
                raise StrategyError("there is nothing to accept", reason="not-your-turn")
            self._check(view, standing.unit_price)
            body = protocol.Accept(
                circle=request.circle,
                accepted=standing.id,
                unit_price=standing.unit_price,
                quantity=standing.quantity,
                currency=request.currency,
                created=now,
            )
        elif action is _REJECT:
            body = protocol.Reject(
                circle=request.circle, in_reply_to=session.last_id, reason=move.reason, created=now
            )
        else:
            body = protocol.WalkAway(
                circle=request.circle, session=session.session, reason=move.reason, created=now
            )
        return protocol.seal(body, self.identity).data

    def _check(self, view: SessionView, price: int) -> None:
        reservation = self.strategy.reservation
        if not view.within(price, reservation):
            raise StrategyError(
                f"{price} is beyond this side's reservation {reservation}",
                reason="beyond-reservation",
            )
        # The session's quantity is the only one either side may propose or accept.
        if self.party is _CIRCLE and not self.session.mandate_covers(price):
            raise StrategyError(
                f"the circle's live pledges do not cover {self._request.quantity} units at {price}",
                reason="outside-mandate",
            )

    def _proposal(self, price: int, now: int) -> protocol.Message:
        session = self.session
        request = self._request
        if session.standing is None:
            return protocol.Offer(
                circle=request.circle,
                product=request.product,
                currency=request.currency,
                list_price=price,
                tiers=(protocol.Tier(min_quantity=1, unit_price=price),),
                capacity=request.quantity,
                valid_until=now + self.valid_for,
                terms=self.terms,
                loyalty=(),
                in_reply_to=session.last_id,
                created=now,
            )
        return protocol.CounterOffer(
            circle=request.circle,
            in_reply_to=session.last_id,
            round=session.rounds + 1,
            unit_price=price,
            quantity=request.quantity,
            currency=request.currency,
            valid_until=now + self.valid_for,
            created=now,
        )
