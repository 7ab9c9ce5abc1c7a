"""The buying-circles protocol: messages, canonical encoding, signatures, rules.

Pure and sans-IO: nothing here reads a clock, a socket, a file or a random
source; time and bytes are handed in, events and bytes come out.
"""

from ._auction import MAX_AUCTION_BIDS as MAX_AUCTION_BIDS
from ._auction import AuctionError as AuctionError
from ._auction import AuctionResult as AuctionResult
from ._auction import Bid as Bid
from ._auction import BidTaken as BidTaken
from ._auction import Mandate as Mandate
from ._auction import ReverseAuction as ReverseAuction
from ._auction import check_bid as check_bid
from ._auction import rank_offers as rank_offers
from ._certificate import InvalidCertificate as InvalidCertificate
from ._certificate import InvalidProof as InvalidProof
from ._certificate import build_certificate as build_certificate
from ._certificate import verify_certificate as verify_certificate
from ._certificate import verify_misbehaviour as verify_misbehaviour
from ._circle import SMALLER_TIER_WINDOW as SMALLER_TIER_WINDOW
from ._circle import CircleState as CircleState
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
from ._events import CircleEvent as CircleEvent
from ._events import CircleStatus as CircleStatus
from ._events import DealClosed as DealClosed
from ._events import EquivocationDetected as EquivocationDetected
from ._events import ExtensionAccepted as ExtensionAccepted
from ._events import MemberAdmitted as MemberAdmitted
from ._events import OfferReceived as OfferReceived
from ._events import PledgeBound as PledgeBound
from ._events import PledgeCounted as PledgeCounted
from ._events import PledgeWithdrawn as PledgeWithdrawn
from ._events import QuorumChanged as QuorumChanged
from ._events import Refused as Refused
from ._events import RuleAnomaly as RuleAnomaly
from ._events import StatusChanged as StatusChanged
from ._identity import Identity as Identity
from ._loyalty import DealProof as DealProof
from ._loyalty import LoyaltyError as LoyaltyError
from ._loyalty import verify_loyalty as verify_loyalty
from ._messages import KINDS as KINDS
from ._messages import Accept as Accept
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
from ._messages import QuoteRequest as QuoteRequest
from ._messages import Receipt as Receipt
from ._messages import Referral as Referral
from ._messages import Reject as Reject
from ._messages import Tier as Tier
from ._messages import WalkAway as WalkAway
from ._negotiation import NEGOTIATION_TRANSITIONS as NEGOTIATION_TRANSITIONS
from ._negotiation import Negotiation as Negotiation
from ._negotiation import NegotiationError as NegotiationError
from ._negotiation import offer_unit_price as offer_unit_price
from ._negotiation_events import Agreement as Agreement
from ._negotiation_events import Ended as Ended
from ._negotiation_events import NegotiationState as NegotiationState
from ._negotiation_events import Party as Party
from ._negotiation_events import Proposal as Proposal
from ._quorum import Clearing as Clearing
from ._quorum import DemandBook as DemandBook
from ._quorum import Entry as Entry
from ._reputation import RelationshipError as RelationshipError
from ._reputation import Reputation as Reputation
from ._reputation import VerifiedDeal as VerifiedDeal
from ._reputation import vendor_reputation as vendor_reputation
from ._reputation import verify_deal as verify_deal
from ._reputation import verify_referral as verify_referral
from ._reputation import wilson_lower_ppm as wilson_lower_ppm
from ._rfq_log import RfqLog as RfqLog
from ._transitions import CIRCLE_TRANSITIONS as CIRCLE_TRANSITIONS
from ._transitions import CircleInput as CircleInput

__all__ = [
    "Accept",
    "Agreement",
    "Allocation",
    "AuctionError",
    "AuctionResult",
    "BadSignature",
    "Bid",
    "BidTaken",
    "build_certificate",
    "Certificate",
    "Charter",
    "check_bid",
    "CIRCLE_TRANSITIONS",
    "CircleEvent",
    "CircleInput",
    "CircleState",
    "CircleStatus",
    "Clearing",
    "CounterOffer",
    "Deal",
    "DealClosed",
    "DealProof",
    "decode",
    "decode_as",
    "decode_unverified",
    "DemandBook",
    "DOMAIN",
    "Ended",
    "Entry",
    "Envelope",
    "envelope_id",
    "EquivocationDetected",
    "Extension",
    "ExtensionAccepted",
    "Identity",
    "IdentityError",
    "InvalidCertificate",
    "InvalidField",
    "InvalidMessage",
    "InvalidProof",
    "Invite",
    "KeyFileError",
    "KINDS",
    "LoyaltyError",
    "LoyaltyTier",
    "MalformedEncoding",
    "Mandate",
    "MAX_AUCTION_BIDS",
    "MAX_ENVELOPE_SIZE",
    "MemberAdmitted",
    "Message",
    "Misbehaviour",
    "Negotiation",
    "NEGOTIATION_TRANSITIONS",
    "NegotiationError",
    "NegotiationState",
    "NonCanonical",
    "Offer",
    "offer_unit_price",
    "OfferReceived",
    "Oversize",
    "Party",
    "Pledge",
    "PledgeBound",
    "PledgeCounted",
    "PledgeWithdrawn",
    "Proposal",
    "ProtocolError",
    "QuorumChanged",
    "QuoteRequest",
    "rank_offers",
    "Receipt",
    "Referral",
    "Refused",
    "Reject",
    "RelationshipError",
    "Reputation",
    "ReverseAuction",
    "RfqLog",
    "RuleAnomaly",
    "seal",
    "signing_bytes",
    "SMALLER_TIER_WINDOW",
    "StatusChanged",
    "Tier",
    "UnknownKind",
    "UnsupportedVersion",
    "UnverifiedEnvelope",
    "vendor_reputation",
    "VerifiedDeal",
    "verify_certificate",
    "verify_deal",
    "verify_loyalty",
    "verify_misbehaviour",
    "verify_referral",
    "VERSION",
    "WalkAway",
    "wilson_lower_ppm",
]
