"""The buying-circles protocol: messages, canonical encoding, signatures, rules.

Pure and sans-IO: nothing here reads a clock, a socket, a file or a random
source; time and bytes are handed in, events and bytes come out.
"""

from ._codec import MAX_ENVELOPE_SIZE as MAX_ENVELOPE_SIZE
from ._envelope import DOMAIN as DOMAIN
from ._envelope import VERSION as VERSION
from ._envelope import Envelope as Envelope
from ._envelope import UnverifiedEnvelope as UnverifiedEnvelope
from ._envelope import decode as decode
from ._envelope import decode_as as decode_as
from ._envelope import decode_unverified as decode_unverified
from ._envelope import envelope_id as envelope_id
from ._envelope import seal as seal
from ._envelope import signing_bytes as signing_bytes
from ._errors import BadSignature as BadSignature
from ._errors import IdentityError as IdentityError
from ._errors import InvalidField as InvalidField
from ._errors import InvalidMessage as InvalidMessage
from ._errors import KeyFileError as KeyFileError
from ._errors import MalformedEncoding as MalformedEncoding
from ._errors import NonCanonical as NonCanonical
from ._errors import Oversize as Oversize
from ._errors import ProtocolError as ProtocolError
from ._errors import UnknownKind as UnknownKind
from ._errors import UnsupportedVersion as UnsupportedVersion
from ._identity import Identity as Identity
from ._messages import KINDS as KINDS
from ._messages import Allocation as Allocation
from ._messages import Certificate as Certificate
from ._messages import Charter as Charter
from ._messages import CounterOffer as CounterOffer
from ._messages import Deal as Deal
from ._messages import Extension as Extension
from ._messages import Invite as Invite
from ._messages import LoyaltyTier as LoyaltyTier
from ._messages import Message as Message
from ._messages import Misbehaviour as Misbehaviour
from ._messages import Offer as Offer
from ._messages import Pledge as Pledge
from ._messages import Receipt as Receipt
from ._messages import Referral as Referral
from ._messages import Tier as Tier

__all__ = [
    "DOMAIN",
    "KINDS",
    "MAX_ENVELOPE_SIZE",
    "VERSION",
    "Allocation",
    "BadSignature",
    "Certificate",
    "Charter",
    "CounterOffer",
    "Deal",
    "Envelope",
    "Extension",
    "IdentityError",
    "Identity",
    "InvalidField",
    "InvalidMessage",
    "Invite",
    "KeyFileError",
    "LoyaltyTier",
    "MalformedEncoding",
    "Message",
    "Misbehaviour",
    "NonCanonical",
    "Offer",
    "Oversize",
    "Pledge",
    "ProtocolError",
    "Receipt",
    "Referral",
    "Tier",
    "UnknownKind",
    "UnsupportedVersion",
    "UnverifiedEnvelope",
    "decode",
    "decode_as",
    "decode_unverified",
    "envelope_id",
    "seal",
    "signing_bytes",
]
