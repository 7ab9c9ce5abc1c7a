"""buying-circles: the node, persistence, discovery, vendors and command line."""

from ._datadir import DataDirError as DataDirError
from ._errors import CirclesError as CirclesError
from ._errors import KeyFileError as KeyFileError
from ._haggle import HaggleError as HaggleError
from ._haggle import NegotiationOutcome as NegotiationOutcome
from ._haggle import mandate_of as mandate_of
from ._haggle_circle import AuctionOutcome as AuctionOutcome
from ._haggle_circle import auction_result as auction_result
from ._haggle_circle import negotiate as negotiate
from ._haggle_circle import quote_requests as quote_requests
from ._haggle_circle import request_quotes as request_quotes
from ._haggle_circle import reverse_auction as reverse_auction
from ._haggle_vendor import CapacityFor as CapacityFor
from ._haggle_vendor import DeskStatistics as DeskStatistics
from ._haggle_vendor import StrategyFor as StrategyFor
from ._haggle_vendor import VendorDesk as VendorDesk
from ._keyfile import generate_identity as generate_identity
from ._keyfile import load_identity as load_identity
from ._keyfile import save_identity as save_identity
from ._libp2p import open_libp2p_transport as open_libp2p_transport
from ._memnet import MemoryNetwork as MemoryNetwork
from ._node import EventStream as EventStream
from ._node import Node as Node
from ._node import NodeError as NodeError
from ._node import OwnHistoryUnknown as OwnHistoryUnknown
from ._node import PledgeRefused as PledgeRefused
from ._node import TransportFactory as TransportFactory
from ._node_core import CertificateSuperseded as CertificateSuperseded
from ._node_events import CircleDiscovered as CircleDiscovered
from ._node_events import CircleUpdated as CircleUpdated
from ._node_events import EnvelopeSetAside as EnvelopeSetAside
from ._node_events import NodeEvent as NodeEvent
from ._node_events import OwnHistoryRecovered as OwnHistoryRecovered
from ._node_events import Refused as Refused
from ._simulate import SimulationOutcome as SimulationOutcome
from ._simulate import simulate as simulate
from ._store import SetAside as SetAside
from ._store import Store as Store
from ._store import StoreCondition as StoreCondition
from ._store import StoredEnvelope as StoredEnvelope
from ._store import StoreError as StoreError
from ._strategies import Action as Action
from ._strategies import Move as Move
from ._strategies import Negotiator as Negotiator
from ._strategies import RelativeTitForTat as RelativeTitForTat
from ._strategies import SessionView as SessionView
from ._strategies import Strategy as Strategy
from ._strategies import StrategyError as StrategyError
from ._strategies import TakeItOrLeaveIt as TakeItOrLeaveIt
from ._strategies import TimeDependent as TimeDependent
from ._transport import RequestFailed as RequestFailed
from ._transport import Transport as Transport
from ._transport import TransportError as TransportError
from ._transport import Verdict as Verdict
from ._verify import SeenCache as SeenCache
from ._verify import SeenCacheStatistics as SeenCacheStatistics
from ._verify import verify_batch as verify_batch

__all__ = [
    "Action",
    "auction_result",
    "AuctionOutcome",
    "CapacityFor",
    "CertificateSuperseded",
    "CircleDiscovered",
    "CirclesError",
    "CircleUpdated",
    "DataDirError",
    "DeskStatistics",
    "EnvelopeSetAside",
    "EventStream",
    "generate_identity",
    "HaggleError",
    "KeyFileError",
    "load_identity",
    "mandate_of",
    "MemoryNetwork",
    "Move",
    "negotiate",
    "NegotiationOutcome",
    "Negotiator",
    "Node",
    "NodeError",
    "NodeEvent",
    "open_libp2p_transport",
    "OwnHistoryRecovered",
    "OwnHistoryUnknown",
    "PledgeRefused",
    "quote_requests",
    "Refused",
    "RelativeTitForTat",
    "request_quotes",
    "RequestFailed",
    "reverse_auction",
    "save_identity",
    "SeenCache",
    "SeenCacheStatistics",
    "SessionView",
    "SetAside",
    "simulate",
    "SimulationOutcome",
    "Store",
    "StoreCondition",
    "StoredEnvelope",
    "StoreError",
    "Strategy",
    "StrategyError",
    "StrategyFor",
    "TakeItOrLeaveIt",
    "TimeDependent",
    "Transport",
    "TransportError",
    "TransportFactory",
    "VendorDesk",
    "Verdict",
    "verify_batch",
]
