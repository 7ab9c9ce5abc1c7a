"""Log sync: the frames a late joiner exchanges to fetch what it is missing.

Theory of operation: gossip can drop messages (py-libp2p's queues overflow
under bursts, and in a small circle there is no gossip repair), so every node
periodically compares its set of a circle's message ids with a peer's and
fetches the difference. A round starts cheap: the requester sends a
:class:`SyncSummary` (count and digest of its ids); a peer with the same set
answers :class:`SyncInSync` and the round ends. Otherwise the requester sends a
:class:`SyncFetch` naming every id it has (8-byte prefixes, so 10,000
messages cost 80 KB) and receives the envelopes it lacks in
:class:`SyncEnvelopes` frames of bounded size, asking again while ``more`` is
set. Nothing it already has is sent twice, and the envelopes received go
through :func:`protocol.decode` like any other input.

Frames are unsigned (the transport authenticates the peer) canonical msgpack
arrays ``[kind, body]``, decoded with the same strict rules as envelopes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from ._codec import canonical_unpack, pack
from ._errors import InvalidField, UnknownKind
from ._messages import ID
from ._schema import Bool, Bytes, Int, Seq, Structure, field, from_wire, structure, to_wire

__all__ = [
    "MAX_SYNC_FRAME",
    "SyncEnvelopes",
    "SyncFetch",
    "SyncFrame",
    "SyncInSync",
    "SyncSummary",
    "decode_sync_frame",
    "encode_sync_frame",
    "id_prefixes",
    "ids_digest",
]

#: Largest sync frame either side sends or accepts, in bytes.
MAX_SYNC_FRAME = 1024 * 1024
#: Bytes of each id named in a fetch.
PREFIX = 8
#: Most ids one fetch can name (8-byte prefixes within one frame).
MAX_HAVE = 100_000


def ids_digest(ids: Iterable[bytes]) -> bytes:
    """Digest of a set of message ids: BLAKE2b-256 over the sorted ids."""
    h = hashlib.blake2b(digest_size=32)
    for message_id in sorted(set(ids)):
        h.update(message_id)
    return h.digest()


def id_prefixes(ids: Iterable[bytes]) -> bytes:
    """The ``have`` field of a fetch: sorted 8-byte id prefixes, concatenated."""
    return b"".join(sorted({i[:PREFIX] for i in ids}))


class SyncFrame(Structure):
    """Base of the sync frames."""

    __slots__ = ()
    kind: ClassVar[str]


@structure("sync-summary")
@dataclass(frozen=True, slots=True, kw_only=True)
class SyncSummary(SyncFrame):
    """Requester: this is what I hold of a circle."""

    kind: ClassVar[str] = "summary"

    circle: bytes = field(ID)
    """The circle's id."""
    count: int = field(Int(0, MAX_HAVE))
    """How many of its messages the requester holds."""
    digest: bytes = field(Bytes(32))
    """:func:`ids_digest` of their ids."""


@structure("sync-in-sync")
@dataclass(frozen=True, slots=True, kw_only=True)
class SyncInSync(SyncFrame):
    """Responder: I hold exactly the same set; nothing to send."""

    kind: ClassVar[str] = "in-sync"

    circle: bytes = field(ID)
    """The circle's id."""


@structure("sync-fetch")
@dataclass(frozen=True, slots=True, kw_only=True)
class SyncFetch(SyncFrame):
    """Requester: send me the circle's messages whose ids are not in ``have``."""

    kind: ClassVar[str] = "fetch"

    circle: bytes = field(ID)
    """The circle's id."""
    have: bytes = field(Bytes(min_len=0, max_len=MAX_HAVE * PREFIX))
    """:func:`id_prefixes` of the ids the requester holds."""

    def _check(self) -> None:
        if len(self.have) % PREFIX:
            raise InvalidField(
                f"sync-fetch.have must be a multiple of {PREFIX} bytes",
                reason="out-of-range",
                field="sync-fetch.have",
            )

    def has(self) -> frozenset[bytes]:
        """The id prefixes the requester holds."""
        have = self.have
        return frozenset(have[i : i + PREFIX] for i in range(0, len(have), PREFIX))


@structure("sync-envelopes")
@dataclass(frozen=True, slots=True, kw_only=True)
class SyncEnvelopes(SyncFrame):
    """Responder: envelopes the requester lacks; ``more`` asks it to fetch again."""

    kind: ClassVar[str] = "envelopes"

    circle: bytes = field(ID)
    """The circle's id."""
    envelopes: tuple[bytes, ...] = field(Seq(Bytes(min_len=1, max_len=64 * 1024), max_len=2048))
    """Envelope bytes, charter first when it is included."""
    more: bool = field(Bool())
    """True when the responder stopped at the frame size and holds more."""


_FRAMES: dict[str, type[SyncFrame]] = {
    cls.kind: cls for cls in (SyncSummary, SyncInSync, SyncFetch, SyncEnvelopes)
}


def encode_sync_frame(frame: SyncFrame) -> bytes:
    """The bytes of a sync frame."""
    return pack([frame.kind, to_wire(frame)])


def decode_sync_frame(data: bytes) -> SyncFrame:
    """Decode a sync frame strictly; raises a ProtocolError subclass."""
    value: Any = canonical_unpack(data, max_size=MAX_SYNC_FRAME)
    if type(value) is not tuple or len(value) != 2 or type(value[0]) is not str:
        raise InvalidField(
            "a sync frame is an array [kind, body]", reason="wrong-type", field="sync"
        )
    cls = _FRAMES.get(value[0])
    if cls is None:
        raise UnknownKind(f"unknown sync frame {value[0][:40]!r}", reason="unknown-kind")
    return from_wire(cls, value[1])
