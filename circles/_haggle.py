"""Haggling over the network: the frames of ``/buying-circles/negotiate/1.0.0`` and shared parts.

Theory of operation: a negotiation between a circle and a vendor is a series
of request/response pairs on direct streams. The circle's negotiator always
asks and the vendor always answers, because after every circle move it is the
vendor's turn (or the session is over):

- request: the msgpack array ``[1, session, move]``: the version, the session
  id (the id of the request for quote that opened it) and one signed move
  envelope (the request for quote itself, a counter-offer, an acceptance, a
  rejection or a walk-away);
- response: ``[1, "move", envelope]`` (the vendor's signed answer),
  ``[1, "over", state]`` (the circle's move ended the session; nothing to
  answer) or ``[1, "refused", reason, detail]`` (the move was not applied).

Both sides run the same sans-IO :class:`protocol.Negotiation` and feed it
every move, so each checks the other: a move either machine refuses never
counts. The vendor's side lives in :mod:`circles._haggle_vendor`, the circle's
in :mod:`circles._haggle_circle`.

Reverse-auction bids travel the other way, from a vendor to the auction's
request signer, on ``/buying-circles/auction/1.0.0``, one request/response
pair per bid:

- request: ``[1, "bid", offer]``, one signed offer envelope answering the
  auction's request for quote;
- response: ``[1, "taken"]`` (the bid takes part in the auction; a repeat of
  the same bid gets the same answer) or ``[1, "refused", reason, detail]``.

The collecting side lives in :mod:`circles._haggle_auction`, the bidding side
in :mod:`circles._haggle_bidder`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

import protocol
from protocol import Mandate

from ._errors import CirclesError
from ._topics import AUCTION_PROTOCOL

__all__ = [
    "AUCTION_PROTOCOL",
    "FRAME_VERSION",
    "MAX_MOVE_SIZE",
    "HaggleError",
    "NegotiationOutcome",
    "Reply",
    "decode_bid",
    "decode_bid_reply",
    "decode_reply",
    "decode_request",
    "encode_bid",
    "encode_over",
    "encode_refused",
    "encode_reply_move",
    "encode_request",
    "encode_taken",
    "mandate_of",
]

#: The first element of every negotiation frame.
FRAME_VERSION = 1
#: Largest negotiation frame either side reads (a move is at most a few kilobytes).
MAX_MOVE_SIZE = 16 * 1024


class HaggleError(CirclesError):
    """Haggling over the network could not go on as asked (see ``reason``).

    Reasons: "bad-argument" (fix the call), "garbage" (a frame that does not
    parse), "unknown-circle" (join or connect to a member first).
    """

    reason = "haggle-error"


@dataclass(frozen=True, slots=True, kw_only=True)
class NegotiationOutcome:
    """How a networked negotiation ended, and every move both sides applied."""

    result: protocol.Agreement | protocol.Ended
    """The agreement, or how it ended without one."""
    transcript: tuple[bytes, ...]
    """Every move the circle's machine applied, the request for quote first."""
    session: bytes
    """The session id: the request for quote's id."""
    vendor: bytes
    """The vendor's key."""
    negotiator: bytes
    """The key that moved for the circle."""
    refusal: str | None = None
    """The vendor's reason for refusing the circle's last move, if it refused one.

    When set on an agreement the agreement is the circle's alone: the vendor
    will publish no offer for it.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """A decoded response frame."""

    kind: str
    """"move", "over" or "refused" (negotiation); "taken" or "refused" (auction bid)."""
    move: bytes | None = None
    """The vendor's move envelope (for "move")."""
    state: str = ""
    """The session's final state as the vendor saw it (for "over")."""
    reason: str = ""
    """The machine-readable reason (for "refused")."""
    detail: str = ""
    """What was wrong, for a person (for "refused")."""


def _pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def _unpack(data: bytes) -> tuple[Any, ...]:
    """One msgpack array from a peer; HaggleError("garbage") for anything else."""
    if type(data) is not bytes or len(data) > MAX_MOVE_SIZE:
        raise HaggleError("a negotiation frame must be at most 16 KiB", reason="garbage")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=False,
            strict_map_key=True,
            max_array_len=8,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many types for bad input; all mean garbage
        raise HaggleError(f"the frame is not msgpack: {exc}", reason="garbage") from None
    if type(value) is not tuple or not value or value[0] != FRAME_VERSION:
        raise HaggleError("a negotiation frame is an array starting with 1", reason="garbage")
    return value


def encode_request(session: bytes, move: bytes) -> bytes:
    """The request frame carrying ``move`` for ``session``."""
    return _pack([FRAME_VERSION, session, move])


def decode_request(data: bytes) -> tuple[bytes, bytes]:
    """(session id, move envelope) from a request frame; HaggleError("garbage") otherwise."""
    value = _unpack(data)
    if len(value) != 3 or type(value[1]) is not bytes or type(value[2]) is not bytes:
        raise HaggleError("a request is [1, session, move]", reason="garbage")
    if len(value[1]) != 32:
        raise HaggleError("a session id is 32 bytes", reason="garbage")
    return value[1], value[2]


def encode_reply_move(move: bytes) -> bytes:
    """The response frame carrying the vendor's ``move``."""
    return _pack([FRAME_VERSION, "move", move])


def encode_over(state: str) -> bytes:
    """The response frame saying the session ended in ``state`` with the circle's move."""
    return _pack([FRAME_VERSION, "over", state])


def encode_refused(reason: str, detail: str) -> bytes:
    """The response frame refusing a move."""
    return _pack([FRAME_VERSION, "refused", reason[:64], detail[:500]])


def decode_reply(data: bytes) -> Reply:
    """A response frame; HaggleError("garbage") for anything that is not one."""
    value = _unpack(data)
    kind = value[1] if len(value) > 1 else None
    if kind == "move" and len(value) == 3 and type(value[2]) is bytes:
        return Reply(kind="move", move=value[2])
    if kind == "over" and len(value) == 3 and type(value[2]) is str:
        return Reply(kind="over", state=value[2])
    if kind == "refused" and len(value) == 4 and all(type(v) is str for v in value[2:]):
        return Reply(kind="refused", reason=value[2], detail=value[3])
    raise HaggleError("the response is no negotiation reply", reason="garbage")


def encode_bid(offer: bytes) -> bytes:
    """The auction request frame carrying the bid ``offer``."""
    return _pack([FRAME_VERSION, "bid", offer])


def decode_bid(data: bytes) -> bytes:
    """The offer envelope from an auction request frame; HaggleError("garbage") otherwise."""
    value = _unpack(data)
    if len(value) != 3 or value[1] != "bid" or type(value[2]) is not bytes:
        raise HaggleError('a bid is [1, "bid", offer]', reason="garbage")
    return value[2]


def encode_taken() -> bytes:
    """The auction response frame saying the bid takes part."""
    return _pack([FRAME_VERSION, "taken"])


def decode_bid_reply(data: bytes) -> Reply:
    """An auction response frame: kind "taken" or "refused"; HaggleError("garbage") otherwise.

    Kept apart from :func:`decode_reply` so that neither side can be handed a
    reply from the other protocol.
    """
    value = _unpack(data)
    if value[1:] == ("taken",):
        return Reply(kind="taken")
    if len(value) == 4 and value[1] == "refused" and all(type(v) is str for v in value[2:]):
        return Reply(kind="refused", reason=value[2], detail=value[3])
    raise HaggleError("the response is no auction reply", reason="garbage")


def mandate_of(state: protocol.CircleState) -> Mandate:
    """The mandate a circle's live pledges give its negotiator right now."""
    return Mandate.from_state(state)
