"""``circles circle …``, ``pledge``, ``withdraw``, ``invite``, ``receipt``: ask the running node.

Each command is one control request (see :mod:`circles._control`); with
``--json`` the node's answer is printed as it came, otherwise as rich tables
with prices in the currency's own format.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime
from typing import Any

from ._control import call
from ._errors import CirclesError
from ._money import format_money

__all__ = ["add_circle_commands", "parse_deadline", "run_circle_command"]

_DURATION = re.compile(r"(?P<n>\d+)\s*(?P<unit>[mhdw])")
_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_deadline(text: str, now: float) -> int:
    """A deadline as people write it: "3d", "12h", "90m", "2w", or a local "2026-12-01 18:00"."""
    text = text.strip()
    match = _DURATION.fullmatch(text)
    if match:
        return int(now) + int(match.group("n")) * _SECONDS[match.group("unit")]
    try:
        return int(datetime.fromisoformat(text).timestamp())
    except ValueError:
        raise CirclesError(
            f"cannot read the deadline {text!r}; write a duration like 3d or 12h, "
            "or a date like 2026-12-01 18:00",
            reason="bad-deadline",
        ) from None


def add_circle_commands(commands: Any, common: Any) -> None:
    """Add the circle commands to the top-level subparsers."""
    circle = commands.add_parser("circle", help="found, list and inspect circles")
    actions = circle.add_subparsers(dest="circle_command", required=True, metavar="ACTION")
    new = common(actions.add_parser("new", help="found a circle (asks for what is missing)"))
    new.add_argument("--what", help='what the circle buys, e.g. "Olive oil, 5 l tin"')
    new.add_argument("--unit", help='the unit counted, e.g. "tin"')
    new.add_argument("--target", type=int, help="units needed for the deal")
    new.add_argument("--currency", help="ISO code, e.g. EUR")
    new.add_argument("--ceiling", help="highest unit price members may pledge, e.g. 45.00")
    new.add_argument("--deadline", help="pledge deadline: 3d, 12h, or 2026-12-01 18:00")
    new.add_argument("--place", help="geohash of the place, e.g. u33dc")
    new.add_argument("--tag", action="append", default=[], help="a tag vendors match (repeat)")
    new.add_argument("--invite-only", action="store_true", help="members join by invitation")
    common(actions.add_parser("list", help="circles nearby and joined, with progress"))
    show = common(actions.add_parser("show", help="pledges, demand, offers, deal"))
    show.add_argument("circle", metavar="ID")
    wait = common(actions.add_parser("wait", help="wait until a circle is known or has a status"))
    wait.add_argument("circle", metavar="ID")
    wait.add_argument(
        "--until",
        default="known",
        choices=("known", "forming", "quorum", "closed", "expired", "cancelled"),
    )
    wait.add_argument("--timeout", type=float, default=60.0, help="give up after SECONDS")

    pledge = common(commands.add_parser("pledge", help="pledge to buy, up to a unit price"))
    pledge.add_argument("circle", metavar="ID")
    pledge.add_argument("quantity", type=int, metavar="QTY")
    pledge.add_argument("--max-price", required=True, help="highest unit price, e.g. 12.50")
    pledge.add_argument("--tolerance", type=int, default=0, help="extra units you would take")
    withdraw = common(commands.add_parser("withdraw", help="withdraw your pledge"))
    withdraw.add_argument("circle", metavar="ID")
    invite = common(commands.add_parser("invite", help="invite a member to a circle"))
    invite.add_argument("circle", metavar="ID")
    invite.add_argument("key", metavar="KEY", help="the member's key (`circles id show`)")
    receipt = common(commands.add_parser("receipt", help="report how a deal was fulfilled"))
    receipt.add_argument("deal", metavar="DEAL")
    receipt.add_argument("--fulfilled", required=True, choices=("yes", "partly", "no"))
    receipt.add_argument("--rating", required=True, type=int, choices=range(1, 6), metavar="1-5")
    receipt.add_argument("--comment", default="")


def run_circle_command(args: argparse.Namespace) -> int:
    """Run one of the commands added by :func:`add_circle_commands`."""
    data_dir = args.data_dir
    if args.command == "circle" and args.circle_command == "new":
        result = call(data_dir, "circle.new", **_charter_args(args))
        return _out(args, result, _print_summary)
    if args.command == "circle" and args.circle_command == "list":
        return _out(args, call(data_dir, "circle.list"), _print_list)
    if args.command == "circle" and args.circle_command == "wait":
        result = call(
            data_dir,
            "circle.wait",
            timeout=args.timeout + 10,
            circle=args.circle,
            until=args.until,
            seconds=args.timeout,
        )
        return _out(args, result, _print_summary)
    if args.command == "circle":
        return _out(args, call(data_dir, "circle.show", circle=args.circle), _print_details)
    if args.command == "pledge":
        result = call(
            data_dir,
            "pledge",
            circle=args.circle,
            quantity=args.quantity,
            max_price=args.max_price,
            tolerance=args.tolerance,
        )
        return _out(args, result, _print_summary)
    if args.command == "withdraw":
        return _out(args, call(data_dir, "withdraw", circle=args.circle), _print_summary)
    if args.command == "invite":
        result = call(data_dir, "invite", circle=args.circle, key=args.key)
        return _out(args, result, lambda r: print(f"invited {r['invitee'][:16]}… to {r['circle']}"))
    result = call(
        data_dir,
        "receipt",
        deal=args.deal,
        fulfilled=args.fulfilled,
        rating=args.rating,
        comment=args.comment,
    )
    return _out(args, result, _print_receipt)


def _out(args: argparse.Namespace, result: Any, printer: Any) -> int:
    if args.json:
        print(json.dumps(result))
    else:
        printer(result)
    return 0


def _charter_args(args: argparse.Namespace) -> dict[str, Any]:
    asked = {
        "what": ("What will the circle buy? ", None),
        "unit": ("Unit counted (e.g. tin, kg): ", None),
        "target": ("How many units are needed? ", int),
        "currency": ("Currency (e.g. EUR): ", str.upper),
        "deadline": ("Pledge deadline (e.g. 3d, 12h, 2026-12-01 18:00): ", None),
    }
    values: dict[str, Any] = {}
    missing = [name for name in asked if getattr(args, name) is None]
    if missing and not sys.stdin.isatty():
        flags = ", ".join(f"--{name}" for name in missing)
        raise CirclesError(f"a new circle needs {flags}", reason="missing-arguments")
    for name, (question, convert) in asked.items():
        value = getattr(args, name)
        while value is None:
            answer = input(question).strip()
            try:
                value = convert(answer) if convert and answer else answer or None
            except ValueError:
                print("please answer with a whole number", file=sys.stderr)
        values[name] = value
    if args.ceiling is None and not missing:
        ceiling = None
    elif args.ceiling is None:
        ceiling = input("Highest unit price members may pledge (empty: none): ").strip() or None
    else:
        ceiling = args.ceiling
    return {
        "title": values["what"],
        "unit": values["unit"],
        "target": int(values["target"]),
        "currency": str(values["currency"]).upper(),
        "deadline": parse_deadline(str(values["deadline"]), time.time()),
        "ceiling": ceiling,
        "place": args.place,
        "tags": args.tag,
        "invite_only": args.invite_only,
    }


def _when(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def _bar(pledged: int, target: int, width: int = 20) -> str:
    filled = min(width, pledged * width // max(target, 1))
    return "█" * filled + "░" * (width - filled) + f" {pledged}/{target}"


def _print_summary(r: dict[str, Any]) -> None:
    lines = [f"circle {r['id']}", f"  {r['title']}: {_bar(r['pledged'], r['target'])} {r['unit']}"]
    lines.append(f"  status {r['status']}, pledges close {_when(r['deadline'])}")
    if r.get("seq") is not None:
        lines.append(f"  your pledge #{r['seq']} is signed and sent")
    if r.get("best_price") is not None:
        lines.append(f"  best offer clears at {format_money(r['best_price'], r['currency'])}")
    print("\n".join(lines))


def _print_list(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    if not rows:
        print("no circles yet: found one with `circles circle new`, or wait for neighbours")
        return
    table = Table(title="Circles")
    for column in ("id", "what", "progress", "status", "best price", "closes", "joined"):
        table.add_column(column, no_wrap=column in ("id", "progress"))
    for r in rows:
        table.add_row(
            r["id"][:8],
            r["title"],
            f"{_bar(r['pledged'], r['target'], 10)} {r['unit']}",
            r["status"],
            format_money(r["best_price"], r["currency"]) if r["best_price"] else "-",
            _when(r["deadline"]),
            "yes" if r["joined"] else "",
        )
    Console(width=max(Console().width, 110)).print(table)


def _print_details(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 110))
    cur = r["currency"]

    def money(value: int | None) -> str:
        return "-" if value is None else format_money(value, cur)

    console.print(f"[bold]{r['title']}[/bold]  ({r['id']})")
    console.print(
        f"status {r['status']}; {_bar(r['pledged'], r['target'])} {r['unit']}; "
        f"ceiling {money(r['ceiling'])}; pledges close {_when(r['deadline'])}"
    )
    pledges = Table(title="Pledges")
    for column in ("member", "quantity", "max price", "tolerance"):
        pledges.add_column(column)
    for p in r["pledges"]:
        me = " (you)" if p["member"] == r["me"] else ""
        pledges.add_row(
            p["member"][:12] + me, str(p["quantity"]), money(p["max_price"]), str(p["tolerance"])
        )
    console.print(pledges)
    if r["demand_curve"]:
        curve = ", ".join(f"{d} at {money(p)}" for p, d in r["demand_curve"])
        console.print(f"demand: {curve}")
    for o in r["offers"]:
        tiers = ", ".join(f"{q}+ at {money(p)}" for q, p in o["tiers"])
        console.print(
            f"offer {o['offer'][:12]} from vendor {o['vendor'][:12]}: {o['product']}; {tiers}; "
            f"capacity {o['capacity']}"
        )
    for m in r["negotiation"]:
        price = f" {money(m['unit_price'])}" if "unit_price" in m else ""
        console.print(f"negotiation: {m['kind']} by {m['signer'][:12]}{price}")
    if r["clearing"]:
        c = r["clearing"]
        console.print(f"clears at {money(c['unit_price'])} for {c['total']} {r['unit']}")
    deal = r["deal"]
    if deal:
        console.print(
            f"[bold]deal {deal['deal']}[/bold]: {deal['total']} {r['unit']} at "
            f"{money(deal['unit_price'])}, signed by vendor {deal['vendor'][:12]}"
        )
        for rec in deal["receipts"]:
            console.print(
                f"  receipt from {rec['member'][:12]}: fulfilled {rec['fulfilled']}, "
                f"rating {rec['rating']}/5"
            )


def _print_receipt(r: dict[str, Any]) -> None:
    where = "handed to the vendor" if r["delivered_to_vendor"] else "gossiped to the network"
    print(
        f"receipt {r['receipt'][:16]}… for deal {r['deal'][:16]}…: fulfilled {r['fulfilled']}, "
        f"rating {r['rating']}/5, {where}"
    )
