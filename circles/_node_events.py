"""Events a node reports to the app, beside the circles' own state events."""

from __future__ import annotations

from dataclasses import dataclass

import protocol

__all__ = ["CircleDiscovered", "CircleUpdated", "NodeEvent", "Refused"]


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
