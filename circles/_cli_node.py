"""``circles node``: one node in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

__all__ = ["run_node"]


def run_node(*, data_dir: Path, listen: str, bootstrap: Sequence[str], mdns: bool) -> int:
    """Serve until SIGINT or SIGTERM; print the full multiaddr first. Exit status 0."""
    return trio.run(_serve, data_dir, listen, list(bootstrap), mdns)


async def _serve(data_dir: Path, listen: str, bootstrap: list[str], mdns: bool) -> int:
    from ._keyfile import generate_identity, load_identity, save_identity
    from ._node import Node

    key_file = data_dir / "identity.key"
    if not key_file.exists():
        save_identity(generate_identity(), key_file)
    identity = load_identity(key_file)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with Node(
            identity, data_dir, listen=[listen], bootstrap=bootstrap, mdns=mdns
        ) as node:
            print(node.addresses()[0], flush=True)
            async for signum in signals:
                print(f"stopping on {signal.Signals(signum).name}", file=sys.stderr, flush=True)
                break
    return 0
