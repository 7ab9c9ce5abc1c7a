"""A buying circle of five reaches quorum against a vendor's offer, with no server.

Everything here is the pure protocol (no network): each person signs
messages with their own key, and every member's ``CircleState`` turns the
same set of messages into the same answer, whatever order they arrived in.
Run it with ``make demo`` (or ``python examples/protocol_demo.py``).
"""

from __future__ import annotations

import hashlib

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from protocol import (
    Charter,
    CircleState,
    Deal,
    DealClosed,
    Identity,
    Offer,
    Pledge,
    PledgeBound,
    QuorumChanged,
    StatusChanged,
    Tier,
    seal,
    verify_certificate,
)
from protocol._codec import pack
from protocol._schema import to_wire

T0 = 1_700_000_000  # the demo's clock: times are handed in, never read
HOUR = 3600
console = Console(width=100, highlight=False)


def person(name: str) -> Identity:
    # Fixed keys so the demo prints the same thing every run; real keys come from os.urandom.
    return Identity.from_seed(hashlib.sha256(name.encode()).digest())


def euros(cents: int) -> str:
    return f"€{cents / 100:,.2f}"


def main() -> None:
    names = ["Ana", "Ben", "Chloé", "Dev", "Eli"]
    people = {n: person(n) for n in names}
    vendor = person("Olive Grove Co-op")
    who = {p.public_key: n for n, p in people.items()} | {vendor.public_key: "Olive Grove"}

    charter = seal(
        Charter(
            title="Extra virgin olive oil, 5 l tins",
            unit="tin",
            target=12,
            currency="EUR",
            ceiling=4500,
            deadline=T0 + 48 * HOUR,
            place="u0yjj",
            tags=("food", "olive-oil"),
            invite_only=False,
            members_invite=False,
            on_miss="expire",
            created=T0,
        ),
        people["Ana"],
    )
    console.rule("[bold]A buying circle, peer to peer")
    console.print(
        Panel.fit(
            f"[bold]{charter.message.title}[/]\n"
            f"founded by Ana · target {charter.message.target} tins · "
            f"ceiling {euros(4500)} a tin · pledges close in 48 h\n"
            f"circle id {charter.id.hex()[:16]}…",
            title="charter",
        )
    )

    offer = seal(
        Offer(
            circle=charter.id,
            product="Extra virgin olive oil, 5 l tin",
            currency="EUR",
            list_price=4800,
            tiers=(
                Tier(min_quantity=6, unit_price=4200),
                Tier(min_quantity=12, unit_price=3900),
                Tier(min_quantity=24, unit_price=3500),
            ),
            capacity=20,
            valid_until=T0 + 72 * HOUR,
            terms="delivered to one address within 10 days; pay on delivery",
            loyalty=(),
            in_reply_to=None,
            created=T0 + HOUR,
        ),
        vendor,
    )
    tiers = Table(title="Olive Grove's offer (list price €48.00)", show_edge=False)
    tiers.add_column("tins at least", justify="right")
    tiers.add_column("price a tin", justify="right")
    for tier in offer.message.tiers:
        tiers.add_row(str(tier.min_quantity), euros(tier.unit_price))
    console.print(tiers)
    console.print(f"capacity: {offer.message.capacity} tins\n")

    # (name, tins, max price a tin, tolerance: extra tins taken if that fills a tier)
    wishes = [("Ana", 3, 4200, 0), ("Ben", 2, 4000, 1), ("Chloé", 4, 4500, 0), ("Dev", 1, 3900, 2)]
    wishes.append(("Eli", 1, 4100, 1))
    pledges = {
        n: seal(
            Pledge(
                circle=charter.id,
                seq=1,
                quantity=q,
                max_price=m,
                currency="EUR",
                tolerance=t,
                created=T0 + 2 * HOUR + i * 60,
            ),
            people[n],
        )
        for i, (n, q, m, t) in enumerate(wishes)
    }

    state = CircleState(charter, now=T0)
    now = T0 + 2 * HOUR
    state.apply(offer, now)
    for n, q, m, t in wishes:
        now += 600
        events = state.apply(pledges[n], now)
        units, target = state.progress()
        extra = f" (+{t} if it fills a tier)" if t else ""
        console.print(
            f"{n:>6} pledges {q} tin(s) up to {euros(m)}{extra}: {units}/{target} pledged"
        )
        for event in events:
            if isinstance(event, QuorumChanged) and event.unit_price is not None:
                console.print(
                    f"        [green]quorum: {event.total} tins clear at "
                    f"{euros(event.unit_price)} a tin[/]"
                )
            if isinstance(event, StatusChanged):
                console.print(f"        status: {event.previous.value} → {event.status.value}")

    curve = Table(title="demand curve", show_edge=False)
    curve.add_column("at a price of", justify="right")
    curve.add_column("tins wanted", justify="right")
    for price, demand in state.demand_curve():
        curve.add_row(euros(price), str(demand))
    console.print(curve)

    # Every member assembles the certificate on their own; the bodies are byte-identical.
    body = state.certificate()
    others = []
    for _member in names[1:]:
        replica = CircleState(charter, now=T0)
        for env in [*reversed(list(pledges.values())), offer]:  # another arrival order
            replica.apply(env, now)
        others.append(pack(to_wire(replica.certificate())))
    same = all(o == pack(to_wire(body)) for o in others)
    console.print(
        f"\nall {len(names)} members assembled the same certificate: "
        f"{'[green]identical[/]' if same else '[red]different[/]'}"
    )
    certificate = seal(body, people["Ben"])

    # The vendor checks the certificate standalone, then countersigns it: that is the deal.
    verify_certificate(certificate, **state.certificate_inputs(body))
    deal = seal(
        Deal(
            circle=charter.id,
            certificate=certificate.id,
            unit_price=body.unit_price,
            currency=body.currency,
            total=body.total,
            created=now + HOUR,
        ),
        vendor,
    )
    console.print("Olive Grove verified the certificate and signed the deal.")

    # Dev withdraws, but the vendor signs before his withdrawal reaches it.
    withdrawal = seal(
        Pledge(
            circle=charter.id,
            seq=2,
            quantity=0,
            max_price=0,
            currency="EUR",
            tolerance=0,
            created=now + 30 * 60,
        ),
        people["Dev"],
    )
    for env in (certificate, withdrawal, deal):
        for event in state.apply(env, now + 2 * HOUR):
            if isinstance(event, DealClosed):
                console.print(
                    f"[bold green]deal closed[/]: {event.total} tins at "
                    f"{euros(event.unit_price)} a tin (status {state.status.value})"
                )
            if isinstance(event, PledgeBound):
                console.print(
                    f"[yellow]{who[event.member]}: the vendor signed before it saw your "
                    "withdrawal; the deal binds the pledge it names[/]"
                )

    table = Table(title="who takes what", show_edge=False)
    table.add_column("member")
    table.add_column("tins", justify="right")
    table.add_column("pays", justify="right")
    table.add_column("worst case pledged", justify="right")
    taken = {a.pledge: a.quantity for a in body.allocations}
    for n in names:
        p = pledges[n].message
        tins = taken.get(pledges[n].id, 0)
        worst = (p.quantity + p.tolerance) * p.max_price
        note = f" (+{tins - p.quantity} tolerance)" if tins > p.quantity else ""
        table.add_row(n, f"{tins}{note}", euros(tins * body.unit_price), euros(worst))
    console.print(table)
    saved = (offer.message.list_price - body.unit_price) * body.total
    console.print(f"together they save {euros(saved)} on the list price, with no middleman.")


if __name__ == "__main__":
    main()
