"""Events a node reports to the app, beside the circles' own state events."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio

import protocol

__all__ = [
    "CircleDiscovered",
    "CircleUpdated",
    "EnvelopeSetAside",
    "EventStream",
    "NodeEvent",
    "OwnHistoryRecovered",
    "Refused",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeEvent:
    """Base of the events :meth:`Node.events` yields."""

    circle: bytes
    """The circle concerned."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CircleDiscovered(NodeEvent):
    """A charter arrived on the announce topic (the node has not necessarily joined)."""

    charter: protocol.Envelope[protocol.Charter]
    """The circle's signed charter."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CircleUpdated(NodeEvent):
    """A circle's state changed; ``event`` is the state's own event."""

    event: object
    """The circle state's event (see protocol's circle events)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Refused(NodeEvent):
    """A peer sent an envelope the node refused."""

    reason: str
    """The machine-readable reason of the refusal."""
    peer: str
    """The peer it came from."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvelopeSetAside(NodeEvent):
    """Applying a stored envelope to its circle failed; it is kept but left out.

    A fault in the circle's rules, not a refusal: the node logs it once, keeps
    the envelope (see :meth:`Node.set_aside`), rebuilds the circle's state
    without it and goes on. Read the circle's state again: it was rebuilt.
    """

    envelope: bytes
    """The message id of the envelope set aside."""
    reason: str
    """What went wrong, in words."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnHistoryRecovered(NodeEvent):
    """Peers showed pledges this key signed in the circle that the store had no record of.

    The store is new or was emptied, but the identity had pledged here
    before: the node now counts above those pledges, so it never signs a
    sequence number twice. The member's earlier pledge (if it is the latest)
    still counts as it was.
    """

    highest_seq: int
    """The highest sequence number this key had signed in the circle, as the log shows."""
    peers: int
    """How many peers answered the sync that brought it back."""


class EventStream:
    """A node's events as an async iterator; close it (or leave its ``async with``) when done.

    Made by ``Node.events()``; the node fills ``send`` and never waits for a
    slow reader (see ``dropped``).
    """

    def __init__(
        self,
        send: trio.MemorySendChannel[NodeEvent],
        receive: trio.MemoryReceiveChannel[NodeEvent],
        *,
        dropped: Callable[[], int],
        detach: Callable[[], None],
    ) -> None:
        self._send = send
        self._receive = receive
        self._dropped = dropped
        self._detach = detach

    @property
    def dropped(self) -> int:
        """Events dropped because this stream's buffer was full."""
        return self._dropped()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> NodeEvent:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Stop receiving events."""
        self._detach()
        self._send.close()
        await self._receive.aclose()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
