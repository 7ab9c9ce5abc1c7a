"""``circles vendor serve`` and ``circles vendor reputation``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_vendor_commands", "run_vendor_command"]


def add_vendor_commands(commands: Any, common: Any, network: Any) -> None:
    """Add the vendor commands to the top-level subparsers."""
    vendor = commands.add_parser("vendor", help="sell to circles from a catalog")
    actions = vendor.add_subparsers(dest="vendor_command", required=True, metavar="ACTION")
    serve = network(
        common(
            actions.add_parser("serve", help="offer to circles within stock and countersign deals")
        )
    )
    serve.add_argument(
        "--catalog", required=True, type=Path, help="catalog TOML file (products, stock)"
    )
    rep = common(actions.add_parser("reputation", help="a vendor's record from receipts"))
    rep.add_argument("key", metavar="KEY", help="the vendor's key (or a prefix of it)")


def run_vendor_command(args: argparse.Namespace) -> int:
    """Run one of the commands added by :func:`add_vendor_commands`."""
    if args.vendor_command == "serve":
        from ._daemon import serve_foreground

        return serve_foreground(
            data_dir=args.data_dir,
            listen=args.listen,
            bootstrap=args.bootstrap,
            mdns=not args.no_mdns,
            as_json=args.json,
            catalog=args.catalog,
        )
    from ._control import call

    result = call(args.data_dir, "reputation", vendor=args.key)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"vendor {result['vendor']}")
    print(f"  deals closed: {result['deals']}")
    print(
        f"  receipts: {result['receipts']} (fulfilled {result['fulfilled']}, "
        f"partly {result['partly']}, not {result['unfulfilled']})"
    )
    if result["receipts"]:
        print(f"  mean rating: {result['mean_rating']}/5")
        print(f"  fulfilled share: {result['share_fulfilled']}")
    print(f"  score (Wilson lower bound): {result['score_ppm'] / 10_000:.1f}%")
    if result["ignored"]:
        ignored = ", ".join(f"{n} {reason}" for reason, n in sorted(result["ignored"].items()))
        print(f"  receipts ignored: {ignored}")
    return 0
