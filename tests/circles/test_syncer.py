"""The syncer's memory of peers that refused sync: forgotten when they come back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import trio

import protocol
from circles import MemoryNetwork
from circles._syncer import Syncer
from circles._transport import PeerId


class _EmptyLog:
    def ids(self, circle: bytes) -> set[bytes] | None:
        return set()

    def envelopes(self, circle: bytes) -> Iterable[tuple[bytes, bytes]]:
        return []

    async def ingest(self, circle: bytes, data: bytes, peer: PeerId) -> bool:
        return False


def ident(n: int) -> protocol.Identity:
    return protocol.Identity.from_seed(bytes([n]) * 32)


async def test_a_refusing_peer_is_skipped_until_it_asks_or_reconnects(
    autojump_clock: trio.abc.Clock,
) -> None:
    network = MemoryNetwork(seed=1)
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(network.open_transport(ident(1)))
        b = await stack.enter_async_context(network.open_transport(ident(2)))
        peer_b = await a.connect(b.listen_addrs()[0])
        syncer_a = Syncer(a, _EmptyLog(), timeout=1.0)
        # b serves no sync protocol yet: a remembers the refusal.
        assert await syncer_a.sync_quietly(b"\0" * 32, peer_b) == 0
        assert not syncer_a.serves_sync(peer_b)
        syncer_a.forget_refusal(peer_b)
        assert syncer_a.serves_sync(peer_b)
        # Refused again, then b asks a for sync itself: a asks b again at once.
        await syncer_a.sync_quietly(b"\0" * 32, peer_b)
        assert not syncer_a.serves_sync(peer_b)
        syncer_b = Syncer(b, _EmptyLog(), timeout=1.0)
        with trio.fail_after(10):
            await syncer_b.sync(b"\0" * 32, a.peer_id)
        assert syncer_a.serves_sync(peer_b)
