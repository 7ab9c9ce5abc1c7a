"""The ``circles`` command line.

Commands that need no network (``--help``, ``id``) never import libp2p, which
costs about a second to import.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "buying-circles"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="circles",
        description="Peer-to-peer group buying: circles, conditional pledges, vendors.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ident = commands.add_parser("id", help="manage this member's key pair")
    ident_commands = ident.add_subparsers(dest="id_command", required=True, metavar="ACTION")
    for name, text in (("new", "create a key pair"), ("show", "show the public key")):
        sub = ident_commands.add_parser(name, help=text)
        sub.add_argument("--data-dir", type=Path, default=_default_data_dir())
        sub.add_argument("--json", action="store_true", help="print JSON for scripts")

    node = commands.add_parser("node", help="run a node until SIGINT or SIGTERM")
    node.add_argument("--data-dir", type=Path, default=_default_data_dir())
    node.add_argument("--listen", default="/ip4/127.0.0.1/tcp/0", help="multiaddr to listen on")
    node.add_argument("--bootstrap", action="append", default=[], metavar="MULTIADDR")
    node.add_argument("--no-mdns", action="store_true", help="do not discover peers by mDNS")

    demo = commands.add_parser(
        "demo", help="buyers and vendors on loopback reach a deal (real libp2p hosts)"
    )
    demo.add_argument("--buyers", type=int, default=5)
    demo.add_argument("--vendors", type=int, default=2)
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--timeout", type=float, default=120.0, help="give up after SECONDS")
    demo.add_argument("--json", action="store_true", help="print one JSON object")

    from ._cli_simulate import add_simulate_parser

    add_simulate_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``circles`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "id":
            return _id(args)
        if args.command == "node":
            from ._cli_node import run_node

            return run_node(
                data_dir=args.data_dir,
                listen=args.listen,
                bootstrap=args.bootstrap,
                mdns=not args.no_mdns,
            )
        if args.command == "demo":
            from ._demo import run_demo_command

            return run_demo_command(
                buyers=args.buyers,
                vendors=args.vendors,
                seed=args.seed,
                timeout=args.timeout,
                as_json=args.json,
            )
        if args.command == "simulate":
            from ._cli_simulate import run_simulate

            return run_simulate(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear sentence, not a traceback
        import protocol

        from ._errors import CirclesError

        if isinstance(exc, CirclesError | protocol.ProtocolError):
            print(f"circles: {exc}", file=sys.stderr)
            return 1
        raise
    return 2  # pragma: no cover - argparse requires a command


def _id(args: argparse.Namespace) -> int:
    from ._keyfile import generate_identity, load_identity, save_identity

    path = Path(args.data_dir) / "identity.key"
    if args.id_command == "new":
        save_identity(generate_identity(), path)
    key = load_identity(path).public_key
    if args.json:
        print(json.dumps({"public_key": key.hex(), "key_file": str(path)}))
    else:
        print(key.hex())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
