"""What a negotiation reports: its two parties, its states, and the events a move makes.

The machine that produces these lives in :mod:`protocol._negotiation`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["Agreement", "Ended", "Event", "NegotiationState", "Party", "Proposal"]


class Party(enum.Enum):
    """The two sides of a negotiation."""

    CIRCLE = "circle"
    VENDOR = "vendor"

    # Enum hashes by name in Python code (~70 ns); identity is enough, since
    # members are singletons, and the machine looks parties up on every move.
    __hash__ = object.__hash__


class NegotiationState(enum.Enum):
    """Where a negotiation is; the last four are final."""

    AWAITING_OFFER = "awaiting-offer"
    CIRCLE_TO_MOVE = "circle-to-move"
    VENDOR_TO_MOVE = "vendor-to-move"
    AGREED = "agreed"
    REJECTED = "rejected"
    WALKED_AWAY = "walked-away"
    EXPIRED = "expired"

    # As for Party: the transition table is keyed by states on every move.
    __hash__ = object.__hash__


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


# Frozen dataclasses set each field through object.__setattr__ in __init__,
# about half a microsecond of every move; _proposal fills the slots directly
# instead, as protocol._envelope does for envelopes (Proposal checks nothing
# when built, so nothing is skipped). A field added to Proposal must be added
# to _proposal too: importing refuses to go on until it is.
_PROPOSAL_FIELDS = ("party", "unit_price", "quantity", "round", "valid_until", "id", "at")
if tuple(f.name for f in fields(Proposal)) != _PROPOSAL_FIELDS:  # pragma: no cover - for editors
    raise ImportError("protocol._negotiation_events: update _proposal() to Proposal's fields")
_SETTERS: tuple[Callable[[Any, Any], None], ...] = tuple(
    Proposal.__dict__[name].__set__ for name in _PROPOSAL_FIELDS
)
_set_party, _set_unit_price, _set_quantity, _set_round, _set_valid_until, _set_id, _set_at = (
    _SETTERS
)
_new = object.__new__


def _proposal(
    *,
    party: Party,
    unit_price: int,
    quantity: int,
    round: int,
    valid_until: int,
    id: bytes,
    at: int,
) -> Proposal:
    """``Proposal(...)`` with the same fields, built without its __init__."""
    proposal: Proposal = _new(Proposal)
    _set_party(proposal, party)
    _set_unit_price(proposal, unit_price)
    _set_quantity(proposal, quantity)
    _set_round(proposal, round)
    _set_valid_until(proposal, valid_until)
    _set_id(proposal, id)
    _set_at(proposal, at)
    return proposal


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
