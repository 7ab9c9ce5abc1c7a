"""Every status change a circle may make, in one table.

Theory of operation: a circle's status is *derived* from the set of messages
and the time (see ``_circle.py``), so a message that arrives late can move a
circle "backwards" (a withdrawal can undo a quorum; a deal signed before the
deadline can close an expired circle when it finally arrives). The table
lists, for each status and each kind of input, the statuses that may follow;
:class:`CircleState` checks every change against it, and a change missing
from the table is a bug in the rules, raised as a ``ProtocolError``. The state
diagram in docs/circles.md is generated from this table.
"""

from __future__ import annotations

import enum

from ._events import CircleStatus

__all__ = ["CIRCLE_TRANSITIONS", "CircleInput"]


class CircleInput(enum.Enum):
    """What was applied to a circle, as the transition table sees it."""

    PLEDGE = "pledge"
    WITHDRAWAL = "withdrawal"
    EQUIVOCATION = "equivocation"
    INVITE = "invite"
    OFFER = "offer"
    CERTIFICATE = "certificate"
    DEAL = "deal"
    EXTENSION = "extension"
    TIME = "time"
    CAPPED = "capped"
    IGNORED = "ignored"


F, Q, C, E, X = (
    CircleStatus.FORMING,
    CircleStatus.QUORUM,
    CircleStatus.CLOSED,
    CircleStatus.EXPIRED,
    CircleStatus.CANCELLED,
)

Input = CircleInput

#: {(status, input): statuses that may follow}. Before the deadline a circle is
#: FORMING or QUORUM; after it, EXPIRED, or QUORUM while it may still settle for
#: a smaller tier; CLOSED needs a valid deal; CANCELLED means the founder signed
#: two different extensions (a valid deal, once all it names has arrived, still
#: closes a cancelled circle).
CIRCLE_TRANSITIONS: dict[tuple[CircleStatus, Input], frozenset[CircleStatus]] = {
    # A new live pledge (or admitted member) can add demand, or push a pledge
    # past the capacity cut; it can also be the last pledge a deal names.
    (F, Input.PLEDGE): frozenset({F, Q, C}),
    (Q, Input.PLEDGE): frozenset({F, Q, E, C}),
    (E, Input.PLEDGE): frozenset({E, Q, C}),
    (C, Input.PLEDGE): frozenset({C}),
    (X, Input.PLEDGE): frozenset({X, C}),
    (F, Input.INVITE): frozenset({F, Q, C}),
    (Q, Input.INVITE): frozenset({F, Q, E, C}),
    (E, Input.INVITE): frozenset({E, Q, C}),
    (C, Input.INVITE): frozenset({C}),
    (X, Input.INVITE): frozenset({X, C}),
    # Removing a pledge can also let a smaller one fit under the capacity.
    (F, Input.WITHDRAWAL): frozenset({F, Q}),
    (Q, Input.WITHDRAWAL): frozenset({F, Q, E}),
    (E, Input.WITHDRAWAL): frozenset({E, Q}),
    (C, Input.WITHDRAWAL): frozenset({C}),
    (X, Input.WITHDRAWAL): frozenset({X}),
    # An equivocator stops counting, even in a certificate a vendor signed;
    # conflicting extensions cancel the circle.
    (F, Input.EQUIVOCATION): frozenset({F, Q, X}),
    (Q, Input.EQUIVOCATION): frozenset({F, Q, E, X}),
    (E, Input.EQUIVOCATION): frozenset({E, Q, X}),
    (C, Input.EQUIVOCATION): frozenset({C, F, Q, E, X}),
    (X, Input.EQUIVOCATION): frozenset({X}),
    (F, Input.OFFER): frozenset({F, Q, C}),
    (Q, Input.OFFER): frozenset({Q, C}),
    (E, Input.OFFER): frozenset({E, Q, C}),
    (C, Input.OFFER): frozenset({C}),
    (X, Input.OFFER): frozenset({X, C}),
    (F, Input.CERTIFICATE): frozenset({F, C}),
    (Q, Input.CERTIFICATE): frozenset({Q, C}),
    (E, Input.CERTIFICATE): frozenset({E, C}),
    (C, Input.CERTIFICATE): frozenset({C}),
    (X, Input.CERTIFICATE): frozenset({X, C}),
    (F, Input.DEAL): frozenset({F, C}),
    (Q, Input.DEAL): frozenset({Q, C}),
    (E, Input.DEAL): frozenset({E, C}),
    (C, Input.DEAL): frozenset({C}),
    (X, Input.DEAL): frozenset({X, C}),
    # A valid extension moves the deadline (and counts pledges made before the
    # new one); a second, different one cancels the circle.
    (F, Input.EXTENSION): frozenset({F, Q, C, X}),
    (Q, Input.EXTENSION): frozenset({F, Q, C, X}),
    (E, Input.EXTENSION): frozenset({F, Q, E, C, X}),
    (C, Input.EXTENSION): frozenset({C, X}),
    (X, Input.EXTENSION): frozenset({X}),
    # Time: the deadline passes, offers lapse, the smaller-tier window closes.
    (F, Input.TIME): frozenset({F, Q, E}),
    (Q, Input.TIME): frozenset({F, Q, E}),
    (E, Input.TIME): frozenset({E}),
    (C, Input.TIME): frozenset({C}),
    (X, Input.TIME): frozenset({X}),
    # A message that made a cap drop held messages (docs/protocol.md, Caps): a
    # vendor's newer offer supersedes the one its deal was over, a key's newer
    # pledges push out the one a deal named. The new message itself may also
    # close the circle.
    (F, Input.CAPPED): frozenset({F, Q, E, C}),
    (Q, Input.CAPPED): frozenset({F, Q, E, C}),
    (E, Input.CAPPED): frozenset({F, Q, E, C}),
    (C, Input.CAPPED): frozenset({F, Q, E, C}),
    (X, Input.CAPPED): frozenset({X, C}),
    **{(s, Input.IGNORED): frozenset({s}) for s in CircleStatus},
}
