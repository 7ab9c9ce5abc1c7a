"""mDNS discovery for the libp2p transport: dial the peers it finds.

py-libp2p's mDNS (``enable_mDNS`` on the host, see :mod:`circles._libp2p_host`)
only records the peers it hears of in the peerstore; :func:`_dial_discovered`
is the task that connects to them.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from libp2p.abc import IHost

__all__: list[str] = []


async def _dial_discovered(host: IHost) -> None:
    """Dial peers that mDNS put in the peerstore (it does not dial them itself).

    Polls rather than hooking zeroconf's callbacks, which run on its own
    thread; one dial at a time, since parallel dials under load time out.
    """
    from libp2p.peer.peerinfo import PeerInfo

    attempted: set[Any] = set()
    first_seen: dict[Any, float] = {}
    peerstore = host.get_peerstore()
    me = host.get_id()
    while True:
        await trio.sleep(1.0)
        connected = set(host.get_connected_peers())
        for peer in list(peerstore.peers_with_addrs()):
            if peer == me or peer in attempted or peer in connected:
                continue
            # Both sides discover each other at once; two simultaneous
            # dials left a duplicate connection's socket unclosed. The
            # smaller peer id dials; the other only if that never comes.
            seen = first_seen.setdefault(peer, trio.current_time())
            if me.to_bytes() > peer.to_bytes() and trio.current_time() - seen < 5.0:
                continue
            attempted.add(peer)
            with trio.move_on_after(10), contextlib.suppress(Exception):
                await host.connect(PeerInfo(peer, peerstore.addrs(peer)))
