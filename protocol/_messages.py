"""Message bodies: one frozen dataclass per kind, fields in wire order.

The field order of each class *is* the wire format (docs/protocol.md is
generated from these classes), so never reorder fields: add a new kind or a
new protocol version instead. Money is integer minor units next to an ISO 4217
code; quantities are integers; times are integer seconds since the UNIX epoch,
always handed in by the caller.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar

from ._errors import InvalidField
from ._schema import Bool, Bytes, Int, Opt, Seq, Struct, Structure, Text, field, structure

__all__ = [
    "Accept",
    "Allocation",
    "Certificate",
    "Charter",
    "CounterOffer",
    "Deal",
    "Extension",
    "Invite",
    "KINDS",
    "LoyaltyTier",
    "Message",
    "Misbehaviour",
    "Offer",
    "Pledge",
    "QuoteRequest",
    "Receipt",
    "Referral",
    "Reject",
    "Tier",
    "WalkAway",
]

#: Largest quantity of units anywhere in the protocol.
MAX_QUANTITY = 1_000_000_000
#: Largest amount of money in minor units (10^15 cents is ten trillion euros).
MAX_MONEY = 10**15
#: Latest time the protocol can express (seconds; about the year 36812).
MAX_TIME = 2**40
#: Largest per-member sequence number.
MAX_SEQ = 2**32 - 1
#: Most pledges one quorum certificate may name (it must still fit 64 KiB).
MAX_CERTIFICATE_PLEDGES = 1500

KEY = Bytes(32)
ID = Bytes(32)
TIME = Int(0, MAX_TIME)
QUANTITY = Int(0, MAX_QUANTITY)
POSITIVE_QUANTITY = Int(1, MAX_QUANTITY)
PRICE = Int(1, MAX_MONEY)
SEQ = Int(1, MAX_SEQ)
CURRENCY = Text(3, pattern="[A-Z]{3}")
GEOHASH = Text(12, min_chars=1, pattern="[0-9b-hjkmnp-z]{1,12}")


def _fail(path: str, detail: str) -> InvalidField:
    return InvalidField(f"{path} {detail}", reason="out-of-range", field=path)


class Message(Structure):
    """Base of every message body; ``kind`` is the envelope's kind string."""

    __slots__ = ()
    kind: ClassVar[str]


@structure("charter")
@dataclass(frozen=True, slots=True, kw_only=True)
class Charter(Message):
    """Founds a circle. The circle's id is the id of the charter's envelope."""

    kind: ClassVar[str] = "charter"

    title: str = field(Text(200, min_chars=1))
    """What the circle buys, in the founder's words."""
    unit: str = field(Text(32, min_chars=1))
    """The unit quantities count ("kg", "box of 12")."""
    target: int = field(POSITIVE_QUANTITY)
    """Units the circle must reach together before any deal."""
    currency: str = field(CURRENCY)
    """ISO 4217 code every price in the circle uses."""
    ceiling: int | None = field(Opt(PRICE))
    """Highest unit price (minor units) any pledge may name, or nil for none."""
    deadline: int = field(TIME)
    """Pledges made after this time are refused; no deal by then means the miss rule applies."""
    place: str | None = field(Opt(GEOHASH))
    """Where the circle is, as a geohash (1..12 characters), or nil."""
    tags: tuple[str, ...] = field(Seq(Text(32, min_chars=1), max_len=8))
    """Up to 8 short tags for discovery."""
    invite_only: bool = field(Bool())
    """True: only invited keys (and the founder) may pledge."""
    members_invite: bool = field(Bool())
    """True: any admitted member may invite; false: only the founder."""
    on_miss: str = field(Text(16, choices=("expire", "extend", "smaller-tier")))
    """What happens if the target is missed at the deadline."""
    created: int = field(TIME)
    """When the founder signed it."""

    def _check(self) -> None:
        if self.deadline <= self.created:
            raise _fail("charter.deadline", "must be later than charter.created")
        if self.members_invite and not self.invite_only:
            raise _fail("charter.members_invite", "only applies to an invite-only circle")


@structure("invite")
@dataclass(frozen=True, slots=True, kw_only=True)
class Invite(Message):
    """Admits a key to an invite-only circle."""

    kind: ClassVar[str] = "invite"

    circle: bytes = field(ID)
    """The circle's id."""
    invitee: bytes = field(KEY)
    """The invited member's public key."""
    sealed_key: bytes | None = field(Opt(Bytes(min_len=80, max_len=80)))
    """The circle's traffic key sealed to the invitee (a sealed box of 32 bytes), or nil."""
    created: int = field(TIME)
    """When it was signed."""


@structure("pledge")
@dataclass(frozen=True, slots=True, kw_only=True)
class Pledge(Message):
    """A conditional promise: buy ``quantity`` if the unit price is at most ``max_price``."""

    kind: ClassVar[str] = "pledge"

    circle: bytes = field(ID)
    """The circle's id."""
    seq: int = field(SEQ)
    """Per member and circle; the highest sequence number is the live pledge."""
    quantity: int = field(QUANTITY)
    """Units wanted; 0 withdraws."""
    max_price: int = field(Int(0, MAX_MONEY))
    """Highest acceptable unit price in minor units (0 only with quantity 0)."""
    currency: str = field(CURRENCY)
    """Must equal the charter's currency."""
    tolerance: int = field(QUANTITY)
    """Extra units the member also takes if that lets a tier fill."""
    created: int = field(TIME)
    """When the member signed it."""

    def _check(self) -> None:
        if self.quantity == 0:
            if self.max_price != 0 or self.tolerance != 0:
                raise _fail(
                    "pledge", "a withdrawal (quantity 0) must have max_price 0, tolerance 0"
                )
        elif self.max_price == 0:
            raise _fail("pledge.max_price", "must be at least 1 when quantity is above 0")

    @property
    def is_withdrawal(self) -> bool:
        """True when this pledge withdraws the member from the circle."""
        return self.quantity == 0


@structure("tier")
@dataclass(frozen=True, slots=True, kw_only=True)
class Tier(Structure):
    """One step of a volume price schedule."""

    min_quantity: int = field(POSITIVE_QUANTITY)
    """The tier applies when the circle takes at least this many units."""
    unit_price: int = field(PRICE)
    """Unit price in minor units at this tier."""


@structure("loyalty")
@dataclass(frozen=True, slots=True, kw_only=True)
class LoyaltyTier(Structure):
    """A better price for a member who proves earlier fulfilled deals with this vendor."""

    deals: int = field(Int(1, 1000))
    """Earlier fulfilled deals the member must prove."""
    unit_price: int = field(PRICE)
    """Unit price for such a member."""


def _check_tiers(path: str, tiers: tuple[Tier, ...]) -> None:
    for before, after in itertools.pairwise(tiers):
        if after.min_quantity <= before.min_quantity:
            raise _fail(path, "must be sorted by strictly increasing min_quantity")
        if after.unit_price >= before.unit_price:
            raise _fail(path, "must have strictly decreasing unit_price as quantity grows")


@structure("offer")
@dataclass(frozen=True, slots=True, kw_only=True)
class Offer(Message):
    """A vendor's signed quote to a circle: volume tiers within a capacity."""

    kind: ClassVar[str] = "offer"

    circle: bytes = field(ID)
    """The circle the offer is made to."""
    product: str = field(Text(200, min_chars=1))
    """What the vendor sells, in the vendor's words."""
    currency: str = field(CURRENCY)
    """Currency of every price in the offer."""
    list_price: int = field(PRICE)
    """The vendor's ordinary unit price (for comparison only)."""
    tiers: tuple[Tier, ...] = field(Seq(Struct(Tier), min_len=1, max_len=32))
    """Volume tiers, strictly increasing minimum, strictly decreasing price."""
    capacity: int = field(POSITIVE_QUANTITY)
    """Most units the vendor will supply to this circle."""
    valid_until: int = field(TIME)
    """The offer binds the vendor until this time."""
    terms: str = field(Text(1000))
    """Delivery and payment terms, free text."""
    loyalty: tuple[LoyaltyTier, ...] = field(Seq(Struct(LoyaltyTier), max_len=8))
    """Loyalty prices, for members proving earlier deals."""
    in_reply_to: bytes | None = field(Opt(ID))
    """Id of the request or counter-offer this answers, or nil."""
    created: int = field(TIME)
    """When the vendor signed it."""

    def _check(self) -> None:
        _check_tiers("offer.tiers", self.tiers)
        if self.tiers[0].min_quantity > self.capacity:
            raise _fail("offer.capacity", "is below the smallest tier's min_quantity")
        if self.valid_until <= self.created:
            raise _fail("offer.valid_until", "must be later than offer.created")


@structure("counter")
@dataclass(frozen=True, slots=True, kw_only=True)
class CounterOffer(Message):
    """A proposal of one unit price for a quantity, answering an offer or counter-offer."""

    kind: ClassVar[str] = "counter"

    circle: bytes = field(ID)
    """The circle negotiating."""
    in_reply_to: bytes = field(ID)
    """Id of the offer or counter-offer this answers."""
    round: int = field(Int(1, 10_000))
    """Negotiation round, starting at 1."""
    unit_price: int = field(PRICE)
    """Proposed unit price in minor units."""
    quantity: int = field(POSITIVE_QUANTITY)
    """Units the proposal is for."""
    currency: str = field(CURRENCY)
    """Currency of the price."""
    valid_until: int = field(TIME)
    """The proposal lapses at this time."""
    created: int = field(TIME)
    """When it was signed."""

    def _check(self) -> None:
        if self.valid_until <= self.created:
            raise _fail("counter.valid_until", "must be later than counter.created")


@structure("allocation")
@dataclass(frozen=True, slots=True, kw_only=True)
class Allocation(Structure):
    """One pledge counted by a certificate, and the units it takes."""

    pledge: bytes = field(ID)
    """Id of the pledge envelope."""
    quantity: int = field(POSITIVE_QUANTITY)
    """Units allocated to that pledge (its quantity, plus tolerance if used)."""


@structure("certificate")
@dataclass(frozen=True, slots=True, kw_only=True)
class Certificate(Message):
    """A quorum certificate: the pledges that reach the target at one tier price.

    It counts only when sealed by a member whose pledge it names (circle
    state and :func:`protocol.verify_certificate` refuse others as
    ``not-a-member``), so a vendor or a stranger cannot pick its pledges.
    """

    kind: ClassVar[str] = "certificate"

    circle: bytes = field(ID)
    """The circle (id of its charter)."""
    offer: bytes = field(ID)
    """Id of the offer whose tier clears."""
    unit_price: int = field(PRICE)
    """The clearing unit price."""
    currency: str = field(CURRENCY)
    """Currency of the price."""
    total: int = field(POSITIVE_QUANTITY)
    """Sum of the allocated quantities."""
    allocations: tuple[Allocation, ...] = field(
        Seq(Struct(Allocation), min_len=1, max_len=MAX_CERTIFICATE_PLEDGES)
    )
    """The clearing pledges, sorted by pledge id."""
    created: int = field(TIME)
    """When the member who assembled it signed it."""

    def _check(self) -> None:
        if sum(a.quantity for a in self.allocations) != self.total:
            raise _fail("certificate.total", "must equal the sum of the allocations")
        ids = [a.pledge for a in self.allocations]
        if any(b <= a for a, b in itertools.pairwise(ids)):
            raise _fail("certificate.allocations", "must be sorted by pledge id, no repeats")


@structure("deal")
@dataclass(frozen=True, slots=True, kw_only=True)
class Deal(Message):
    """The vendor's countersignature of a certificate: binding on both sides."""

    kind: ClassVar[str] = "deal"

    circle: bytes = field(ID)
    """The circle."""
    certificate: bytes = field(ID)
    """Id of the certificate envelope the vendor countersigns."""
    unit_price: int = field(PRICE)
    """The agreed unit price (repeats the certificate's)."""
    currency: str = field(CURRENCY)
    """Currency of the price."""
    total: int = field(POSITIVE_QUANTITY)
    """Units the vendor will deliver (repeats the certificate's)."""
    created: int = field(TIME)
    """When the vendor signed it."""


@structure("receipt")
@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt(Message):
    """A member's signed report on how a deal was fulfilled."""

    kind: ClassVar[str] = "receipt"

    deal: bytes = field(ID)
    """Id of the deal envelope."""
    vendor: bytes = field(KEY)
    """The vendor's key (who signed the deal)."""
    fulfilled: str = field(Text(8, choices=("yes", "partly", "no")))
    """Whether the member got what the deal promised."""
    rating: int = field(Int(1, 5))
    """1 (worst) to 5 (best)."""
    comment: str = field(Text(500))
    """Optional free text."""
    created: int = field(TIME)
    """When the member signed it."""


@structure("referral")
@dataclass(frozen=True, slots=True, kw_only=True)
class Referral(Message):
    """A vendor points a circle to another vendor who serves it better."""

    kind: ClassVar[str] = "referral"

    circle: bytes = field(ID)
    """The circle referred."""
    vendor: bytes = field(KEY)
    """The vendor referred to."""
    offer: bytes | None = field(Opt(ID))
    """Id of that vendor's offer, if one exists."""
    note: str = field(Text(500))
    """Why, in the referrer's words."""
    created: int = field(TIME)
    """When it was signed."""


@structure("extension")
@dataclass(frozen=True, slots=True, kw_only=True)
class Extension(Message):
    """The founder moves a circle's deadline once, if its charter allows it."""

    kind: ClassVar[str] = "extension"

    circle: bytes = field(ID)
    """The circle."""
    deadline: int = field(TIME)
    """The new pledge deadline."""
    created: int = field(TIME)
    """When the founder signed it."""


@structure("misbehaviour")
@dataclass(frozen=True, slots=True, kw_only=True)
class Misbehaviour(Message):
    """Proof that one key signed two conflicting messages (self-verifying).

    Both envelopes are carried whole; anyone can check them with
    :func:`protocol.verify_misbehaviour`. In a circle, each must be one the
    circle does not refuse outright (its currency, not above its ceiling; a
    valid extension): a proof with another twin proves nothing and is
    refused whole (``not-evidence``).
    """

    kind: ClassVar[str] = "misbehaviour"

    offender: bytes = field(KEY)
    """The key that equivocated."""
    first: bytes = field(Bytes(min_len=1, max_len=30_000))
    """One envelope, the smaller id of the two."""
    second: bytes = field(Bytes(min_len=1, max_len=30_000))
    """The other envelope."""
    created: int = field(TIME)
    """When the reporter signed it."""


#: Most counter-offers one negotiation may hold (the counter-offer's round limit).
MAX_ROUNDS = 10_000


@structure("rfq")
@dataclass(frozen=True, slots=True, kw_only=True)
class QuoteRequest(Message):
    """A circle's request for quote: opens a negotiation with one vendor or all on its topic.

    The signer is the circle's negotiator; only that key moves for the circle.
    """

    kind: ClassVar[str] = "rfq"

    circle: bytes = field(ID)
    """The circle asking."""
    vendor: bytes | None = field(Opt(KEY))
    """The one vendor asked, or nil for every vendor listening (a reverse auction)."""
    product: str = field(Text(200, min_chars=1))
    """What the circle wants, in its own words."""
    quantity: int = field(POSITIVE_QUANTITY)
    """Units the circle will buy."""
    currency: str = field(CURRENCY)
    """Currency every price in the negotiation uses."""
    respond_by: int = field(TIME)
    """Offers made at or after this time are refused."""
    deadline: int = field(TIME)
    """The negotiation ends at this time, agreed or not."""
    max_rounds: int = field(Int(1, MAX_ROUNDS))
    """Most counter-offers (both sides together) after the vendor's offer."""
    created: int = field(TIME)
    """When the negotiator signed it."""

    def _check(self) -> None:
        if self.respond_by <= self.created:
            raise _fail("rfq.respond_by", "must be later than rfq.created")
        if self.deadline < self.respond_by:
            raise _fail("rfq.deadline", "must not be earlier than rfq.respond_by")


@structure("accept")
@dataclass(frozen=True, slots=True, kw_only=True)
class Accept(Message):
    """Accepts the other side's standing offer or counter-offer, repeating its terms."""

    kind: ClassVar[str] = "accept"

    circle: bytes = field(ID)
    """The circle negotiating."""
    accepted: bytes = field(ID)
    """Id of the offer or counter-offer accepted."""
    unit_price: int = field(PRICE)
    """The accepted unit price (must equal the proposal's)."""
    quantity: int = field(POSITIVE_QUANTITY)
    """The accepted quantity (must equal the proposal's)."""
    currency: str = field(CURRENCY)
    """Currency of the price."""
    created: int = field(TIME)
    """When it was signed."""


@structure("reject")
@dataclass(frozen=True, slots=True, kw_only=True)
class Reject(Message):
    """Declines the other side's last move and ends the negotiation."""

    kind: ClassVar[str] = "reject"

    circle: bytes = field(ID)
    """The circle negotiating."""
    in_reply_to: bytes = field(ID)
    """Id of the request, offer or counter-offer declined."""
    reason: str = field(Text(500))
    """Why, in the signer's words (may be empty)."""
    created: int = field(TIME)
    """When it was signed."""


@structure("walkaway")
@dataclass(frozen=True, slots=True, kw_only=True)
class WalkAway(Message):
    """Leaves a negotiation at any time, whoever's turn it is."""

    kind: ClassVar[str] = "walkaway"

    circle: bytes = field(ID)
    """The circle negotiating."""
    session: bytes = field(ID)
    """Id of the request for quote that opened the negotiation."""
    reason: str = field(Text(500))
    """Why, in the signer's words (may be empty)."""
    created: int = field(TIME)
    """When it was signed."""


#: Every kind this library understands, by its envelope kind string.
KINDS: dict[str, type[Message]] = {
    cls.kind: cls
    for cls in (
        Charter,
        Invite,
        Pledge,
        Offer,
        CounterOffer,
        Certificate,
        Deal,
        Receipt,
        Referral,
        Extension,
        Misbehaviour,
        QuoteRequest,
        Accept,
        Reject,
        WalkAway,
    )
}
