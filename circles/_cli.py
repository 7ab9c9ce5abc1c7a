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
    """The user's data directory (platformdirs); ``CIRCLES_DATA_DIR`` and ``--data-dir`` win."""
    override = os.environ.get("CIRCLES_DATA_DIR")
    if override:
        return Path(override)
    try:
        import platformdirs
    except ImportError:  # pragma: no cover - platformdirs is a dependency
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(base) / "buying-circles"
    return Path(platformdirs.user_data_dir("buying-circles", appauthor=False))


def _common(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sub.add_argument(
        "--data-dir", type=Path, default=_default_data_dir(), help="the node's data directory"
    )
    sub.add_argument("--json", action="store_true", help="print JSON for scripts")
    return sub


def _network(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
    # Loopback unless asked: opening a port to the LAN is the user's choice (docs/quickstart.md).
    sub.add_argument(
        "--listen",
        default="/ip4/127.0.0.1/tcp/0",
        help="multiaddr to listen on; /ip4/0.0.0.0/tcp/4001 to be reachable on the LAN",
    )
    sub.add_argument("--bootstrap", action="append", default=[], metavar="MULTIADDR")
    sub.add_argument("--no-mdns", action="store_true", help="do not discover peers by mDNS")
    return sub


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

    up = _network(_common(commands.add_parser("up", help="start this member's node")))
    up.add_argument("--foreground", action="store_true", help="run here until Ctrl-C")
    up.add_argument("--timeout", type=float, default=60.0, help="give up starting after SECONDS")
    down = _common(commands.add_parser("down", help="stop this member's node"))
    down.add_argument("--timeout", type=float, default=30.0, help="give up after SECONDS")
    _common(commands.add_parser("status", help="is the node running; its addresses"))
    connect = _common(commands.add_parser("connect", help="dial a peer by multiaddr"))
    connect.add_argument("addr", metavar="MULTIADDR")

    from ._cli_circle import add_circle_commands
    from ._cli_vendor import add_vendor_commands

    add_circle_commands(commands, _common)
    add_vendor_commands(commands, _common, _network)

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
        if args.command in ("up", "down", "status", "connect"):
            return _daemon_command(args)
        if args.command in ("circle", "pledge", "withdraw", "invite", "receipt"):
            from ._cli_circle import run_circle_command

            return run_circle_command(args)
        if args.command == "vendor":
            from ._cli_vendor import run_vendor_command

            return run_vendor_command(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear sentence, not a traceback
        import protocol

        from ._errors import CirclesError

        if isinstance(exc, CirclesError | protocol.ProtocolError):
            if getattr(args, "json", False):
                print(json.dumps({"error": str(exc), "reason": exc.reason}))
            print(f"circles: {exc}", file=sys.stderr)
            return 1
        raise
    return 2  # pragma: no cover - argparse requires a command


def _id(args: argparse.Namespace) -> int:
    from ._datadir import KEY_FILE, own_history, record_public_key
    from ._errors import KeyFileError
    from ._keyfile import generate_identity, load_identity, save_identity

    data_dir = Path(args.data_dir)
    path = data_dir / KEY_FILE
    if args.id_command == "new":
        if path.exists() or path.is_symlink():
            raise KeyFileError(
                f"{path} already holds this member's key; a data directory has one identity. "
                "To take a new one, move that file away first (keep it: it is the only way to "
                "sign for that member's pledges and deals), or use another --data-dir",
                reason="exists",
            )
        # The explicit way to start over after a key is lost: say what it means.
        records, old = own_history(data_dir)
        identity = generate_identity()
        save_identity(identity, path)
        record_public_key(identity, data_dir)
        if records:
            whose = f"key {old.hex()}" if old is not None else "the lost key"
            print(
                f"circles: a new identity for {data_dir}; the {records} records its store "
                f"holds stay signed by {whose}, which this key cannot sign for",
                file=sys.stderr,
            )
    key = load_identity(path).public_key
    if args.json:
        print(json.dumps({"public_key": key.hex(), "key_file": str(path)}))
    else:
        print(key.hex())
    return 0


def _daemon_command(args: argparse.Namespace) -> int:
    from ._control import call
    from ._daemon import serve_foreground, start_background, stop_background

    if args.command == "up" and args.foreground:
        return serve_foreground(
            data_dir=args.data_dir,
            listen=args.listen,
            bootstrap=args.bootstrap,
            mdns=not args.no_mdns,
            as_json=args.json,
        )
    if args.command == "up":
        result = start_background(
            args.data_dir,
            listen=args.listen,
            bootstrap=args.bootstrap,
            mdns=not args.no_mdns,
            timeout=args.timeout,
        )
        text = f"node {result['public_key']} is up (pid {result['pid']}, log {result['log']})"
        text += _store_warning(result)
    elif args.command == "down":
        stopped = stop_background(args.data_dir, timeout=args.timeout)
        result = {"stopped": stopped}
        text = "node stopped" if stopped else "no node was running"
    elif args.command == "connect":
        result = call(args.data_dir, "connect", addr=args.addr)
        text = f"connected to {result['peer']}"
    else:
        result = call(args.data_dir, "status")
        text = (
            f"node {result['public_key']} is up: {result['peers']} peers, "
            f"{result['circles']} circles ({result['joined']} joined)\n"
            + "\n".join(f"  {a}" for a in result["addresses"])
            + "".join(
                f"\n  set aside {e['id'][:16]} of circle {e['circle'][:16]}: {e['reason']}"
                for e in result.get("set_aside", ())
            )
            + _store_warning(result)
        )
    print(json.dumps(result) if args.json else text)
    return 0


def _store_warning(status: dict[str, object]) -> str:
    """A loud line when the node found its store file empty at start (else nothing)."""
    if status.get("store") != "emptied":
        return ""
    return (
        "\nwarning: the store file was empty when the node started: this member's history "
        "on this machine, pledges and their sequence numbers included, is gone. The node "
        "fetches each circle's log from peers before pledging there again; restore "
        "store.sqlite3 from a backup instead if you have one."
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
