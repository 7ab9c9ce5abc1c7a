"""Envelopes already verified, answered again without checking the signature.

Gossip delivers one message many times; :class:`SeenCache` recognises bytes
already verified by their id (BLAKE2b-256 of the bytes) and hands back the
verified envelope without touching the signature again.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from protocol import MAX_ENVELOPE_SIZE, Envelope, Message, decode

__all__ = ["SeenCache", "SeenCacheStatistics"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SeenCacheStatistics:
    """What a :class:`SeenCache` holds and how often it answered."""

    size: int
    """Envelopes held now."""
    total_bytes: int
    """Sum of their lengths in bytes."""
    hits: int
    """Lookups answered from the cache."""
    misses: int
    """Lookups that had to decode and verify."""


class SeenCache:
    """Envelopes already verified, by id; the least recently seen is dropped first.

    Bounded by a number of envelopes and a total of bytes, whichever is
    reached first. Only envelopes this cache verified itself (through
    :meth:`decode` or :func:`verify_batch`) go in, and an answer from it is
    given only for exactly the bytes that were verified, so a forged or
    altered envelope is never served from it. Not thread-safe: use one from a
    single thread (the node's trio thread).
    """

    __slots__ = ("_entries", "_hits", "_max_bytes", "_max_entries", "_misses", "_total_bytes")

    def __init__(self, *, max_entries: int = 65536, max_bytes: int = 64 * 1024 * 1024) -> None:
        if type(max_entries) is not int or max_entries < 1:
            raise ValueError(f"max_entries must be a positive integer, got {max_entries!r}")
        if type(max_bytes) is not int or max_bytes < MAX_ENVELOPE_SIZE:
            raise ValueError(
                f"max_bytes must be an integer of at least {MAX_ENVELOPE_SIZE} "
                f"(one largest envelope), got {max_bytes!r}"
            )
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._entries: OrderedDict[bytes, Envelope[Message]] = OrderedDict()
        self._total_bytes = 0
        self._hits = 0
        self._misses = 0

    def decode(self, data: bytes) -> Envelope[Message]:
        """Like :func:`protocol.decode`, but bytes seen before are answered without verifying.

        Raises the same :class:`protocol.ProtocolError` as ``decode`` for
        bytes that are not a valid envelope (refusals are not remembered).
        """
        if type(data) is bytes:
            seen = self._lookup(hashlib.blake2b(data, digest_size=32).digest(), data)
            if seen is not None:
                return seen
        envelope = decode(data)
        self._remember(envelope)
        return envelope

    def get(self, data: bytes) -> Envelope[Message] | None:
        """The verified envelope for exactly these bytes if seen before, else None."""
        if type(data) is not bytes:
            return None
        return self._lookup(hashlib.blake2b(data, digest_size=32).digest(), data)

    def __contains__(self, id: object) -> bool:
        """Whether the envelope with this id (32 bytes) has been verified and is held."""
        return id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def statistics(self) -> SeenCacheStatistics:
        """Size and hit counts, for metrics."""
        return SeenCacheStatistics(
            size=len(self._entries),
            total_bytes=self._total_bytes,
            hits=self._hits,
            misses=self._misses,
        )

    def _lookup(self, envelope_id: bytes, data: bytes) -> Envelope[Message] | None:
        envelope = self._entries.get(envelope_id)
        # Comparing the bytes as well makes a hit independent of BLAKE2b's
        # collision resistance: only the exact bytes verified are answered.
        if envelope is None or envelope.data != data:
            self._misses += 1
            return None
        self._entries.move_to_end(envelope_id)
        self._hits += 1
        return envelope

    def _remember(self, envelope: Envelope[Message]) -> None:
        entries = self._entries
        old = entries.pop(envelope.id, None)
        if old is not None:
            self._total_bytes -= len(old.data)
        entries[envelope.id] = envelope
        self._total_bytes += len(envelope.data)
        while len(entries) > self._max_entries or self._total_bytes > self._max_bytes:
            _, dropped = entries.popitem(last=False)
            self._total_bytes -= len(dropped.data)
