"""Gossip topic and stream protocol names (fixed by the wire spec)."""

from __future__ import annotations

__all__ = [
    "ANNOUNCE_TOPIC",
    "AUCTION_PROTOCOL",
    "NEGOTIATE_PROTOCOL",
    "SYNC_PROTOCOL",
    "circle_of_topic",
    "circle_topic",
]

#: Every charter is also announced here, so nodes learn of circles they have not joined.
ANNOUNCE_TOPIC = "/buying-circles/1/announce"
#: Direct-stream protocol for fetching a circle's missing messages.
SYNC_PROTOCOL = "/buying-circles/sync/1.0.0"
#: Direct-stream protocol for negotiation moves between a circle and a vendor.
NEGOTIATE_PROTOCOL = "/buying-circles/negotiate/1.0.0"
#: Direct-stream protocol carrying reverse-auction bids to the auction's request signer.
AUCTION_PROTOCOL = "/buying-circles/auction/1.0.0"

_CIRCLE_PREFIX = "/buying-circles/1/circle/"


def circle_topic(circle: bytes) -> str:
    """The gossip topic of a circle: its id in lowercase hex."""
    return _CIRCLE_PREFIX + circle.hex()


def circle_of_topic(topic: str) -> bytes | None:
    """The circle id a topic names, or None if it is not a circle topic."""
    if not topic.startswith(_CIRCLE_PREFIX):
        return None
    text = topic[len(_CIRCLE_PREFIX) :]
    if len(text) != 64 or text != text.lower():
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None
