"""Events: what :meth:`CircleState.apply` reports, one frozen dataclass per kind.

Refusals by circle rules are events (``Refused``, with a stable ``reason``),
never exceptions: a peer sending a late pledge is ordinary traffic. Only bytes
that are not a valid message raise, and that happens earlier, in ``decode``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ._messages import Misbehaviour

__all__ = [
    "CircleEvent",
    "DealClosed",
    "EquivocationDetected",
    "ExtensionAccepted",
    "MemberAdmitted",
    "OfferReceived",
    "PledgeBound",
    "PledgeCounted",
    "PledgeWithdrawn",
    "QuorumChanged",
    "Refused",
    "RuleAnomaly",
    "CircleStatus",
    "StatusChanged",
]


class CircleStatus(enum.Enum):
    """Where a circle stands; every status but ``CLOSED`` has a deadline."""

    FORMING = "forming"
    QUORUM = "quorum"
    CLOSED = "closed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True, kw_only=True)
class Refused:
    """A message the circle's rules do not count (it may count later, see ``reason``)."""

    message: bytes
    """Id of the refused envelope."""
    kind: str
    """Its kind ("pledge", "deal", ...)."""
    signer: bytes
    """Who signed it."""
    reason: str
    """Stable machine-readable reason, e.g. "late", "unadmitted", "wrong-currency"."""
    detail: str
    """What was wrong and what to do, for a person."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PledgeCounted:
    """A member's live pledge changed to this one and now counts towards demand."""

    member: bytes
    """The member's key."""
    pledge: bytes
    """Id of the pledge envelope."""
    seq: int
    """Its sequence number."""
    quantity: int
    """Units pledged."""
    max_price: int
    """Highest unit price accepted."""
    tolerance: int
    """Extra units accepted if that lets a tier fill."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PledgeWithdrawn:
    """A member no longer counts: withdrawal (quantity 0) or exclusion."""

    member: bytes
    """The member's key."""
    pledge: bytes | None
    """Id of the withdrawal envelope, or None when the member was excluded."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PledgeBound:
    """A deal binds a member's earlier pledge although the member later changed it."""

    member: bytes
    """The member's key."""
    pledge: bytes
    """Id of the pledge the deal's certificate names (the one that binds)."""
    later: bytes
    """Id of the member's later pledge or withdrawal, which the deal overrides."""
    deal: bytes
    """Id of the deal envelope."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberAdmitted:
    """A key was invited into an invite-only circle (its pledges may now count)."""

    member: bytes
    """The admitted key."""
    invite: bytes
    """Id of the invite that admitted it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EquivocationDetected:
    """A member signed two different pledges with one sequence number."""

    member: bytes
    """The offender's key; none of its pledges count in this circle any more."""
    proof: Misbehaviour
    """A self-verifying proof to seal and gossip (``created`` is the later pledge's)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OfferReceived:
    """A vendor's offer to this circle was recorded."""

    offer: bytes
    """Id of the offer envelope."""
    vendor: bytes
    """The vendor's key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtensionAccepted:
    """The founder moved the deadline (once, as the charter allows)."""

    extension: bytes
    """Id of the extension envelope."""
    deadline: int
    """The new deadline."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QuorumChanged:
    """The best clearing changed: a new price or total, or none any more."""

    offer: bytes | None
    """Id of the offer that clears best, or None when none clears."""
    unit_price: int | None
    """The clearing unit price, or None."""
    total: int | None
    """Units the circle would take, or None."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DealClosed:
    """A vendor countersigned a valid certificate: the circle is closed."""

    deal: bytes
    """Id of the deal envelope."""
    certificate: bytes
    """Id of the certificate it countersigns."""
    vendor: bytes
    """The vendor's key."""
    unit_price: int
    """The agreed unit price."""
    total: int
    """Units the vendor delivers."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusChanged:
    """The circle's status changed."""

    previous: CircleStatus
    """The status before."""
    status: CircleStatus
    """The status now."""
    at: int
    """The time (as handed in) when the change was seen."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleAnomaly:
    """The status moved in a way the transition table does not list (a bug: please report it).

    The status itself is still the one derived from the set of messages; the
    event exists so that an incomplete table is seen without stopping a node.
    """

    previous: CircleStatus
    """The status before."""
    status: CircleStatus
    """The status now."""
    input: str
    """What was applied, as the transition table names it (comma-separated for a proof)."""
    detail: str
    """What to do about it."""


CircleEvent = (
    Refused
    | PledgeCounted
    | PledgeWithdrawn
    | PledgeBound
    | MemberAdmitted
    | EquivocationDetected
    | OfferReceived
    | ExtensionAccepted
    | QuorumChanged
    | DealClosed
    | StatusChanged
    | RuleAnomaly
)
