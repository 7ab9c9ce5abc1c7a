"""The running side of a catalog vendor: watch circles, offer, concede over time.

See :mod:`circles._vendor` for the catalog and the strategies. The node does
the countersigning (``auto_countersign``); this task only decides offers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

import protocol

from ._node import Node, NodeError
from ._vendor import Catalog, Product, concede

__all__ = ["run_vendor"]

log = logging.getLogger("circles.vendor")


async def run_vendor(
    node: Node, catalog: Catalog, *, tick: float = 1.0, on_offer: Any = None
) -> None:
    """Offer to every circle that asks for a catalog product, until cancelled.

    ``on_offer(circle, product, tiers)`` is called after each offer (for
    printing); offers already made survive restarts in the node's store.
    """
    last: dict[bytes, int] = {}
    for circle in node.circles():
        for envelope in node.envelopes(circle):
            if isinstance(envelope.message, protocol.Offer) and envelope.signer == node.public_key:
                price = envelope.message.tiers[-1].unit_price
                last[circle] = min(last.get(circle, price), price)
    while True:
        for circle in node.circles():
            try:
                await _consider(node, catalog, circle, last, on_offer)
            except (NodeError, protocol.ProtocolError) as exc:
                log.info("no offer to %s: %s", circle.hex()[:12], exc)
        # Woken by the next change (a new charter, a pledge), or by the clock for concessions:
        # the predicate is false when first checked and true once anything has changed.
        with trio.move_on_after(tick):
            await node.wait_until(_after_first_check())


def _after_first_check() -> Callable[[], bool]:
    checks = iter((False,))
    return lambda: next(checks, True)


async def _consider(
    node: Node, catalog: Catalog, circle: bytes, last: dict[bytes, int], on_offer: Any
) -> None:
    state: Any = node.circle(circle)
    if state.status is not protocol.CircleStatus.FORMING:
        return
    charter: protocol.Charter = state.charter.message
    product = catalog.product_for(charter)
    now = node.now()
    if product is None or now >= charter.deadline:
        return
    span = max(charter.deadline - charter.created, 1)
    tiers = product.offer_tiers(concede(catalog.strategy, (now - charter.created) / span))
    lowest = tiers[-1][1]
    before = last.get(circle)
    step = max(1, int(product.list_price * catalog.step))
    if before is not None and before - lowest < step:
        return
    await _offer(node, circle, product, tiers, charter)
    last[circle] = lowest
    if on_offer is not None:
        on_offer(circle, product, tiers)


async def _offer(
    node: Node,
    circle: bytes,
    product: Product,
    tiers: list[tuple[int, int]],
    charter: protocol.Charter,
) -> None:
    if circle not in node.joined():
        await node.join(circle)
    # Valid a week past the deadline: members assemble the certificate after quorum.
    await node.offer(
        circle,
        product=product.name,
        tiers=tiers,
        capacity=product.capacity,
        valid_until=charter.deadline + 7 * 86400,
        list_price=product.list_price,
        terms=product.terms,
    )
