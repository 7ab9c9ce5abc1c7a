"""The running side of a catalog vendor: watch circles, offer within stock, concede, sign.

See :mod:`circles._vendor` for the catalog and the strategies.

Theory of operation (stock): each unit of a product's stock is *sold* (in a
deal this vendor countersigned), *held* for a circle, or free. A circle holds
the largest capacity among this vendor's offers to it while it is forming or
at quorum, since the circle may still take up any of those offers; it frees
them once it closes with another vendor, expires or is cancelled. Every offer
is capped at what is free for its circle (the stock less what is sold and
held for other circles), so what is held never adds up to more than the
stock and two circles are never offered the same units.

The ledger is read from the node's store on every pass (the vendor's own
offers and deals, each written before it is published), so it keeps no file
of its own and a restarted vendor knows what it promised. The
countersignature is what binds, so it is gated too: the agent signs a
certificate for its offer only if the total fits what is left for that circle
(the stock, less what is sold and held for other circles). That gate matters
when the stock was lowered under offers already made; a node run with
``auto_countersign`` signs before the gate is asked.

Refusals are :class:`~circles._vendor.StockError` with a reason, logged once
per circle and reason (again only after an offer to that circle succeeded).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

import protocol

from ._node import Node, NodeError
from ._vendor import Catalog, Product, StockError, concede

__all__ = ["StockLedger", "run_vendor"]

log = logging.getLogger("circles.vendor")

OnRefusal = Callable[[bytes, StockError], None]

# A circle in one of these can no longer take up an offer we have not signed.
_OVER = (
    protocol.CircleStatus.CLOSED,
    protocol.CircleStatus.EXPIRED,
    protocol.CircleStatus.CANCELLED,
)

_Key = tuple[str, str]  # (product name, currency): what an offer names


def _key(product: Product) -> _Key:
    return (product.name, product.currency)


@dataclass(slots=True)
class StockLedger:
    """A vendor's units per product: sold, held per circle, free (read from its node)."""

    sold: dict[_Key, int] = field(default_factory=dict)
    """Units in deals this vendor countersigned, by (product name, currency)."""
    held: dict[bytes, tuple[_Key, int]] = field(default_factory=dict)
    """Circle -> (product, units) held by this vendor's offers to it."""
    offers: dict[bytes, _Key] = field(default_factory=dict)
    """Offer id -> product, for the vendor's offers to circles that hold stock."""
    dealt: set[bytes] = field(default_factory=set)
    """Circles this vendor signed a deal for (sold: never offered again)."""

    @classmethod
    def read(cls, node: Node) -> StockLedger:
        """The ledger as the node's store tells it: this vendor's offers and deals."""
        ledger = cls()
        me = node.public_key
        # node.offer joins the circle it offers to (and the store keeps that),
        # so only joined circles can hold our offers.
        for circle in node.joined():
            mine = [s for s in node.circle_log(circle, kinds=("offer", "deal")) if s.signer == me]
            offers = {
                s.id: protocol.decode_as(s.data, protocol.Offer).message
                for s in mine
                if s.kind == "offer"
            }
            if not offers:
                continue
            keys = {i: (o.product, o.currency) for i, o in offers.items()}
            deals = [protocol.decode_as(s.data, protocol.Deal) for s in mine if s.kind == "deal"]
            if deals:
                # Signed is sold, whatever became of the circle: the deal binds us.
                ledger.dealt.add(circle)
                for deal in deals:
                    key = ledger._product_of(node, deal.message, keys)
                    ledger.sold[key] = ledger.sold.get(key, 0) + deal.message.total
                continue
            if node.circle(circle).status in _OVER:
                continue
            latest = max(offers, key=lambda i: offers[i].created)
            ledger.held[circle] = (keys[latest], max(o.capacity for o in offers.values()))
            ledger.offers.update(keys)
        return ledger

    @staticmethod
    def _product_of(node: Node, deal: protocol.Deal, keys: dict[bytes, _Key]) -> _Key:
        """The product of the offer a deal's certificate names (else our latest offer's)."""
        entry = node.log_entry(deal.certificate)
        if entry is not None:
            offer = protocol.decode_as(entry.data, protocol.Certificate).message.offer
            if offer in keys:
                return keys[offer]
        return next(reversed(keys.values()))

    def held_for(self, circle: bytes) -> int:
        """Units held for ``circle`` by our offers."""
        held = self.held.get(circle)
        return 0 if held is None else held[1]

    def held_elsewhere(self, product: Product, circle: bytes) -> int:
        """Units of ``product`` held for circles other than ``circle``."""
        key = _key(product)
        return sum(units for c, (k, units) in self.held.items() if k == key and c != circle)

    def free_for(self, product: Product, circle: bytes) -> int:
        """Units of ``product`` neither sold nor held for other circles (may be below 0)."""
        sold = self.sold.get(_key(product), 0)
        return product.units - sold - self.held_elsewhere(product, circle)

    def hold(self, circle: bytes, product: Product, units: int, offer: bytes) -> None:
        """Record an offer of ``units`` to ``circle``: it holds the largest one made."""
        self.held[circle] = (_key(product), max(units, self.held_for(circle)))
        self.offers[offer] = _key(product)

    def sell(self, circle: bytes, key: _Key, units: int) -> None:
        """Record a deal we countersigned: what the circle held becomes ``units`` sold."""
        self.held.pop(circle, None)
        self.dealt.add(circle)
        self.sold[key] = self.sold.get(key, 0) + units


@dataclass(slots=True)
class _Agent:
    node: Node
    catalog: Catalog
    on_offer: Any
    on_refusal: OnRefusal | None
    #: circle -> (lowest price, capacity) of our last offer to it.
    last: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    #: (circle, reason) of refusals already logged.
    refused: set[tuple[bytes, str]] = field(default_factory=set)
    #: certificates decided on (signed, or refused for want of stock).
    decided: set[bytes] = field(default_factory=set)

    def refuse(self, circle: bytes, error: StockError) -> None:
        if (circle, error.reason) in self.refused:
            return
        self.refused.add((circle, error.reason))
        log.info("circle %s refused (%s): %s", circle.hex()[:12], error.reason, error)
        if self.on_refusal is not None:
            self.on_refusal(circle, error)


async def run_vendor(
    node: Node,
    catalog: Catalog,
    *,
    tick: float = 1.0,
    on_offer: Any = None,
    on_refusal: OnRefusal | None = None,
    countersign: bool = True,
) -> None:
    """Offer to every circle that asks for a catalog product, within stock, until cancelled.

    ``on_offer(circle, product, tiers)`` is called after each offer (for
    printing); ``on_refusal(circle, error)`` once per circle and
    :class:`StockError` reason. Offers and deals survive restarts in the
    node's store, and so does the stock they hold. With ``countersign`` the
    agent signs certificates for its offers that fit the stock left (a node
    run with ``auto_countersign`` may sign first; then it has nothing to do).
    """
    agent = _Agent(node=node, catalog=catalog, on_offer=on_offer, on_refusal=on_refusal)
    for circle in node.circles():
        for envelope in node.envelopes(circle):
            if isinstance(envelope.message, protocol.Offer) and envelope.signer == node.public_key:
                price = envelope.message.tiers[-1].unit_price
                capacity = envelope.message.capacity
                before = agent.last.get(circle, (price, capacity))
                agent.last[circle] = (min(before[0], price), max(before[1], capacity))
    while True:
        ledger = StockLedger.read(node)
        for circle in node.circles():
            try:
                await _consider(agent, ledger, circle)
            except StockError as exc:
                agent.refuse(circle, exc)
            except (NodeError, protocol.ProtocolError) as exc:
                log.info("no offer to %s: %s", circle.hex()[:12], exc)
        if countersign:
            await _countersign_within(agent, ledger)
        # Woken by the next change (a new charter, a pledge), or by the clock for concessions:
        # the predicate is false when first checked and true once anything has changed.
        with trio.move_on_after(tick):
            await node.wait_until(_after_first_check())


def _after_first_check() -> Callable[[], bool]:
    checks = iter((False,))
    return lambda: next(checks, True)


async def _consider(agent: _Agent, ledger: StockLedger, circle: bytes) -> None:
    node = agent.node
    state: Any = node.circle(circle)
    if state.status is not protocol.CircleStatus.FORMING:
        return
    charter: protocol.Charter = state.charter.message
    product = agent.catalog.product_for(charter)
    now = node.now()
    if product is None or now >= charter.deadline or circle in ledger.dealt:
        return
    free = ledger.free_for(product, circle)
    capacity = min(product.capacity, free)
    if capacity < 1:
        raise StockError(
            f"no {product.name!r} left to offer: stock {product.units}, "
            f"sold {ledger.sold.get(_key(product), 0)}, "
            f"held for other circles {ledger.held_elsewhere(product, circle)}",
            reason="out-of-stock",
        )
    if capacity < charter.target <= product.capacity and charter.on_miss != "smaller-tier":
        # Short of stock, not of capacity: such an offer could never clear, and
        # would hold units another circle could buy.
        raise StockError(
            f"only {capacity} of {product.name!r} left; the circle needs {charter.target} "
            "and does not settle for fewer",
            reason="out-of-stock",
        )
    span = max(charter.deadline - charter.created, 1)
    tiers = product.offer_tiers(
        concede(agent.catalog.strategy, (now - charter.created) / span), capacity
    )
    lowest = tiers[-1][1]
    before = agent.last.get(circle)
    step = max(1, int(product.list_price * agent.catalog.step))
    # Offer again once prices moved by a step, or once more stock is free for it.
    if before is not None and before[0] - lowest < step and capacity <= before[1]:
        return
    envelope = await _offer(node, circle, product, tiers, capacity=capacity, charter=charter)
    ledger.hold(circle, product, capacity, envelope.id)
    agent.last[circle] = (lowest, capacity)
    agent.refused = {r for r in agent.refused if r[0] != circle}
    if agent.on_offer is not None:
        agent.on_offer(circle, product, tiers)


async def _offer(
    node: Node,
    circle: bytes,
    product: Product,
    tiers: list[tuple[int, int]],
    *,
    capacity: int,
    charter: protocol.Charter,
) -> protocol.Envelope[protocol.Offer]:
    if circle not in node.joined():
        await node.join(circle)
    # Valid a week past the deadline: members assemble the certificate after quorum.
    return await node.offer(
        circle,
        product=product.name,
        tiers=tiers,
        capacity=capacity,
        valid_until=charter.deadline + 7 * 86400,
        list_price=product.list_price,
        terms=product.terms,
    )


async def _countersign_within(agent: _Agent, ledger: StockLedger) -> None:
    """Sign the certificates for our offers whose totals fit the stock left for them."""
    node = agent.node
    products = {_key(p): p for p in agent.catalog.products}
    for circle in list(ledger.held):
        if node.circle(circle).deal is not None:
            continue
        for certificate in node.certificates(circle):
            body = certificate.message
            key = ledger.offers.get(body.offer)
            if certificate.id in agent.decided or key is None:
                continue
            product = products.get(key)
            if product is None:
                continue  # no longer in the catalog: no stock to sell it from
            room = ledger.free_for(product, circle)
            if body.total > room:
                agent.decided.add(certificate.id)
                agent.refuse(
                    circle,
                    StockError(
                        f"not signing {body.total} of {product.name!r}: only {room} left",
                        reason="over-stock",
                    ),
                )
                continue
            try:
                await node.countersign(certificate)
            except NodeError as exc:
                # "deal-exists": the node (auto_countersign) or an earlier pass signed.
                agent.decided.add(certificate.id)
                log.debug("not countersigning for %s: %s", circle.hex()[:12], exc)
                continue
            except protocol.ProtocolError as exc:
                # Its pledges may still be on their way: try again on a later pass.
                log.debug("certificate for %s not signed yet: %s", circle.hex()[:12], exc)
                continue
            agent.decided.add(certificate.id)
            ledger.sell(circle, key, body.total)
            break
