"""What a circle's log admits: the per-kind rules, the same for gossip and for sync.

Theory of operation: every member keeps the same *set* of a circle's messages,
and sync compares those sets by digest, so what a node admits must be a pure
function of the envelope and the circle's charter. If it also depended on
what else the node held, or on the time, two honest nodes could settle on
different sets and every sync round between them would fetch, and refuse,
the same envelopes forever. A charter never changes (its id is the circle's
id), so a refusal decided against it is final: the node refuses such an
envelope once and never stores, forwards or serves it.

The log admits:

- circle state (what :class:`protocol.CircleState` reads): the circle's own
  charter, invites (in an invite-only circle), pledges, offers, quorum
  certificates, deals, extensions, and misbehaviour proofs whose evidence is
  about the circle;
- a request for quote addressed to no vendor: the reverse auction's call,
  which vendors answer with offers on the circle's topic, and which every
  member needs in its log to rank the same offers. Its caps (each key's
  newest, 16 keys per circle: :class:`protocol.RfqLog`) are applied after
  admission, like the state's caps, and what they drop is discarded.

It refuses, with a reason:

- ``negotiation-traffic``: counter-offers, acceptances, rejections,
  walk-aways and requests for quote addressed to one vendor. They travel on
  the negotiate stream between one negotiator and one vendor, and nothing
  reads them from the circle's log;
- ``not-circle-traffic``: receipts (they have their own topic) and referrals
  (nothing in a circle reads them yet), and any kind not listed above;
- ``bad-proof``: a misbehaviour proof that does not verify, or (once the
  charter is known) one with a twin the circle refuses outright, which
  proves nothing;
- against the charter: ``wrong-currency`` (a pledge, offer, certificate, deal
  or request for quote in another currency), ``above-ceiling`` (a pledge
  above the charter's ceiling), ``not-invite-only`` (an invite to an open
  circle), ``may-not-invite`` (an invite by a key other than the founder
  where members may not invite), ``bad-extension`` (an extension the
  charter does not allow).
  :class:`protocol.CircleState` refuses each of these whatever else arrives,
  before or after.

What could still count later is admitted: a pledge from a key not invited
yet, a pledge after the deadline (it can complete an equivocation proof, and
an extension may move the deadline), a deal before its certificate.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import protocol
from protocol._certificate import extension_is_valid

from ._errors import CirclesError

__all__ = [
    "CIRCLE_LOG_KINDS",
    "FORWARD_WINDOW",
    "NEGOTIATION_KINDS",
    "AdmissionRefused",
    "RecentlyStored",
    "RefusedIds",
    "check_admissible",
    "circle_of",
]

#: Kinds a circle's log may hold (each still subject to the rules above).
CIRCLE_LOG_KINDS = frozenset(
    {
        "charter",
        "invite",
        "pledge",
        "offer",
        "certificate",
        "deal",
        "extension",
        "misbehaviour",
        "rfq",
    }
)
#: Moves of a two-party negotiation: they belong on the negotiate stream.
NEGOTIATION_KINDS = frozenset({"counter", "accept", "reject", "walkaway"})


class AdmissionRefused(CirclesError):
    """An envelope a circle's log never admits (see ``reason`` and the module docstring)."""

    reason = "not-admitted"


def circle_of(envelope: protocol.Envelope[Any]) -> bytes | None:
    """The circle an envelope belongs to, or None when it names none.

    A charter's circle is its own id; a misbehaviour proof names no circle
    itself, so its evidence does (the first envelope's circle; a valid
    proof's two envelopes name the same one).
    """
    message = envelope.message
    if isinstance(message, protocol.Charter):
        return envelope.id
    if isinstance(message, protocol.Misbehaviour):
        try:
            message = protocol.decode_unverified(message.first).message
        except protocol.ProtocolError:
            return None
    circle = getattr(message, "circle", None)
    return circle if isinstance(circle, bytes) else None


def check_admissible(
    envelope: protocol.Envelope[Any], charter: protocol.Envelope[protocol.Charter] | None
) -> None:
    """Raise :class:`AdmissionRefused` if the circle's log never admits ``envelope``.

    ``charter`` is the circle's charter, or None when it is not known yet:
    then only the rules that need no charter are applied, and the caller must
    check again once the charter is known. Does not check that the envelope
    names the circle (compare :func:`circle_of` first).
    """
    message = envelope.message
    kind = envelope.kind
    if kind in NEGOTIATION_KINDS or (
        isinstance(message, protocol.QuoteRequest) and message.vendor is not None
    ):
        raise AdmissionRefused(
            f"a {kind} belongs on the negotiate stream, not in the circle's log",
            reason="negotiation-traffic",
        )
    if kind not in CIRCLE_LOG_KINDS:
        raise AdmissionRefused(
            f"a {kind} is not kept in a circle's log", reason="not-circle-traffic"
        )
    if isinstance(message, protocol.Misbehaviour):
        try:
            # With the charter, a twin the circle refuses outright proves nothing.
            protocol.verify_misbehaviour(message, charter=charter)
        except protocol.InvalidProof as exc:
            raise AdmissionRefused(
                f"the misbehaviour proof does not verify ({exc.reason})", reason="bad-proof"
            ) from None
    if charter is None:
        return
    rules = charter.message
    currency = getattr(message, "currency", None)
    if currency is not None and currency != rules.currency:
        raise AdmissionRefused(
            f"this circle trades in {rules.currency}, not {currency}", reason="wrong-currency"
        )
    if isinstance(message, protocol.Pledge):
        if rules.ceiling is not None and message.max_price > rules.ceiling:
            raise AdmissionRefused(
                f"the charter caps unit prices at {rules.ceiling}", reason="above-ceiling"
            )
    elif isinstance(message, protocol.Invite):
        if not rules.invite_only:
            raise AdmissionRefused(
                "the circle is open to anyone: an invite means nothing in it",
                reason="not-invite-only",
            )
        if not rules.members_invite and envelope.signer != charter.signer:
            raise AdmissionRefused(
                "only the founder invites in this circle (members_invite is off)",
                reason="may-not-invite",
            )
    elif isinstance(message, protocol.Extension) and not extension_is_valid(charter, envelope):
        raise AdmissionRefused(
            "only the founder may extend, once, before the deadline, if the charter allows",
            reason="bad-extension",
        )


class RefusedIds:
    """Ids of envelopes refused for good, so a copy sent again is dropped unread.

    Bounded: past ``limit`` the oldest are forgotten (a copy of one of those
    is only judged again, at the cost of a decode).
    """

    __slots__ = ("_ids", "_limit")

    def __init__(self, *, limit: int = 65_536) -> None:
        self._ids: OrderedDict[bytes, None] = OrderedDict()
        self._limit = limit

    def add(self, message_id: bytes) -> None:
        self._ids[message_id] = None
        while len(self._ids) > self._limit:
            self._ids.popitem(last=False)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)


#: Seconds after storing an envelope during which a gossip copy of it is still
#: forwarded: as long as gossipsub remembers a message id (120 s), so a copy
#: that sync outran still travels on, while a replay of old envelopes stops at
#: the first node that holds them.
FORWARD_WINDOW = 120.0


class RecentlyStored:
    """When each recently stored envelope was stored (node clock), bounded by age and count."""

    __slots__ = ("_at", "_limit", "window")

    def __init__(self, *, window: float = FORWARD_WINDOW, limit: int = 65_536) -> None:
        self._at: OrderedDict[bytes, float] = OrderedDict()
        self._limit = limit
        self.window = window

    def add(self, message_id: bytes, now: float) -> None:
        self._at[message_id] = now
        self._at.move_to_end(message_id)
        while len(self._at) > self._limit:
            self._at.popitem(last=False)
        # Oldest first (the clock only moves forward): drop what has aged out.
        while self._at and now - next(iter(self._at.values())) > self.window:
            self._at.popitem(last=False)

    def fresh(self, message_id: bytes, now: float) -> bool:
        """True if ``message_id`` was stored at most ``window`` seconds before ``now``."""
        at = self._at.get(message_id)
        return at is not None and now - at <= self.window
