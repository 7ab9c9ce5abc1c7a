"""``circles node``: one node in the foreground until SIGINT or SIGTERM.

Standard output is for scripts: the first line is the node's full multiaddr
(ending in ``/p2p/<peer id>``), so another node can be started with
``--bootstrap "$(head -1)"``; after it, one line per change of peers,
``connected <peer id>`` or ``disconnected <peer id>``. Diagnostics go to
standard error. Like ``circles up`` it holds the data directory's lock and
refuses a read-only directory or a lost key (see :mod:`circles._datadir`).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    import protocol

    from ._node import Node

__all__ = ["run_node"]


def run_node(*, data_dir: Path, listen: str, bootstrap: Sequence[str], mdns: bool) -> int:
    """Serve until SIGINT or SIGTERM; print the full multiaddr first. Exit status 0."""
    from ._datadir import NodeLock, check_writable, explain_store_error, start_identity

    check_writable(data_dir)
    # Held until this process ends: one node per data directory (see circles._datadir).
    with NodeLock(data_dir):
        identity = start_identity(data_dir)
        with explain_store_error(data_dir):
            return trio.run(_serve, data_dir, identity, listen, list(bootstrap), mdns)


async def _serve(
    data_dir: Path, identity: protocol.Identity, listen: str, bootstrap: list[str], mdns: bool
) -> int:
    from ._node import Node

    # Installed before the node starts (importing libp2p alone takes about a
    # second), so a signal that arrives while it starts still ends it cleanly.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            Node(identity, data_dir, listen=[listen], bootstrap=bootstrap, mdns=mdns) as node,
            trio.open_nursery() as nursery,
        ):
            _say(node.addresses()[0])
            nursery.start_soon(_report_peers, node)
            async for signum in signals:
                print(f"stopping on {signal.Signals(signum).name}", file=sys.stderr, flush=True)
                break
            nursery.cancel_scope.cancel()
    return 0


async def _report_peers(node: Node) -> None:
    from ._transport import PeerEventKind

    # Listening first, then reading who is already connected (the bootstrap
    # peers were dialled while the node started), so no change falls between.
    events = node.transport.events()
    known: set[str] = set()
    for peer in sorted(node.transport.peers()):
        known.add(peer)
        _say(f"connected {peer}")
    async for event in events:
        if event.kind is PeerEventKind.CONNECTED and event.peer not in known:
            known.add(event.peer)
            _say(f"connected {event.peer}")
        elif event.kind is PeerEventKind.DISCONNECTED and event.peer in known:
            known.discard(event.peer)
            _say(f"disconnected {event.peer}")


def _say(line: str) -> None:
    # Flushed at once: the reader is usually a script waiting for this line.
    print(line, flush=True)
