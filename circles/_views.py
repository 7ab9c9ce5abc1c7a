"""The JSON views of a circle the command line prints (ids hex, money in minor units)."""

from __future__ import annotations

from typing import Any

import protocol

from ._node import Node
from ._receipts import ReceiptBook

__all__ = ["circle_details", "circle_summary"]


def circle_summary(node: Node, circle: bytes) -> dict[str, Any]:
    """What `circle list` shows of a circle."""
    state: Any = node.circle(circle)
    charter: protocol.Charter = state.charter.message
    pledged, target = state.progress()
    best = state.best_offer
    return {
        "id": circle.hex(),
        "title": charter.title,
        "unit": charter.unit,
        "currency": charter.currency,
        "target": target,
        "pledged": pledged,
        "ceiling": charter.ceiling,
        "deadline": charter.deadline,
        "place": charter.place,
        "invite_only": charter.invite_only,
        "status": state.status.value,
        "joined": circle in node.joined(),
        "founder": state.charter.signer.hex(),
        "best_price": best.unit_price if best is not None else None,
        "deal": state.deal.id.hex() if state.deal is not None else None,
    }


def circle_details(node: Node, receipts: ReceiptBook, circle: bytes) -> dict[str, Any]:
    """What `circle show` shows: pledges, demand, offers, negotiation, deal, receipts."""
    state: Any = node.circle(circle)
    envelopes = node.envelopes(circle)
    live = state.live_pledges()
    details = circle_summary(node, circle)
    details["me"] = node.public_key.hex()
    details["members"] = [key.hex() for key in state.members()]
    details["pledges"] = [
        {
            "member": member.hex(),
            "pledge": env.id.hex(),
            "seq": env.message.seq,
            "quantity": env.message.quantity,
            "max_price": env.message.max_price,
            "tolerance": env.message.tolerance,
        }
        for member, env in sorted(live.items())
    ]
    details["demand_curve"] = [list(point) for point in state.demand_curve()]
    details["offers"] = [
        {
            "offer": e.id.hex(),
            "vendor": e.signer.hex(),
            "product": e.message.product,
            "list_price": e.message.list_price,
            "tiers": [[t.min_quantity, t.unit_price] for t in e.message.tiers],
            "capacity": e.message.capacity,
            "valid_until": e.message.valid_until,
            "terms": e.message.terms,
        }
        for e in envelopes
        if isinstance(e.message, protocol.Offer)
    ]
    details["negotiation"] = [
        {"kind": e.message.kind, "signer": e.signer.hex(), **_move(e.message)}
        for e in envelopes
        if isinstance(
            e.message,
            protocol.QuoteRequest
            | protocol.CounterOffer
            | protocol.Accept
            | protocol.Reject
            | protocol.WalkAway,
        )
    ]
    best = state.best_offer
    details["clearing"] = (
        None
        if best is None
        else {"offer": best.offer.hex(), "unit_price": best.unit_price, "total": best.total}
    )
    details["certificates"] = [
        {
            "certificate": c.id.hex(),
            "signer": c.signer.hex(),
            "unit_price": c.message.unit_price,
        }
        for c in node.certificates(circle)
    ]
    deal = state.deal
    details["deal"] = (
        None
        if deal is None
        else {
            "deal": deal.id.hex(),
            "vendor": deal.signer.hex(),
            "unit_price": deal.message.unit_price,
            "total": deal.message.total,
            "certificate": deal.message.certificate.hex(),
            "receipts": [
                {
                    "member": r.signer.hex(),
                    "fulfilled": r.message.fulfilled,
                    "rating": r.message.rating,
                }
                for r in receipts.for_deal(deal.id)
            ],
        }
    )
    return details


def _move(message: Any) -> dict[str, Any]:
    return {
        name: getattr(message, name)
        for name in ("round", "unit_price", "quantity", "reason")
        if isinstance(getattr(message, name, None), int | str)
    }
