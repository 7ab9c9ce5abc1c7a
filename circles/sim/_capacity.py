"""A simulated vendor's capacity: held while it haggles, promised on agreement, sold on signing.

Why: a vendor haggles with several circles at once, and every agreement is a
promise (its desk publishes an offer the circle can clear at once). Taking
capacity only when a deal closed let concurrent negotiations promise, and
then sign, more units than the vendor had.

Theory of operation: each of a vendor's units is sold (in a deal it
countersigned), promised to a circle, or free. A proposal or an acceptance
is a promise, since the circle can take it up at any moment: before the
vendor's strategy makes one, :class:`CappedStrategy` asks the ledger to hold
the units it would cost, and walks away when they are not free. What a
promise costs is what the desk's published offer would let the circle take:
``max(quantity asked, the circle's demand at that price)`` as the vendor's
node sees it. A circle costs the largest of its promises (it closes with one
deal at most), so asking again after a failed round holds no more.

The ledger learns how things end from the vendor's own view only, as a vendor
app would: its desk's negotiation (still open, agreed, or over without
agreement) and its node's copy of the circle (closed by another vendor,
expired, cancelled: the promise is released). It settles lazily, before every
decision, so it needs no clock or task of its own for that.

The countersignature is what binds, so it is gated too: the vendor's node runs
without ``auto_countersign`` and :meth:`CapacityLedger.countersign_within`
signs a certificate for one of its offers only if the certificate's total fits
the units not sold or promised to other circles. The circle's demand can grow
between the vendor's last move and the circle's acceptance; the gate is what
makes "never beyond capacity" hold then too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import protocol
from protocol import Negotiation

from .._node import Node, NodeError
from .._strategies import Action, Move, SessionView, Strategy

__all__ = ["CapacityLedger", "CappedStrategy"]

log = logging.getLogger("circles.sim")

_OVER = (
    protocol.CircleStatus.CLOSED,
    protocol.CircleStatus.EXPIRED,
    protocol.CircleStatus.CANCELLED,
)


@dataclass(slots=True)
class _Promise:
    circle: bytes
    session: Negotiation  # the desk's machine: read here, never fed
    units: int
    agreed: bool = False


class CapacityLedger:
    """One vendor's units: sold, promised per circle, free."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.sold = 0
        #: Certificates not signed because their total did not fit.
        self.refused = 0
        self.node: Node | None = None
        self._promises: dict[bytes, _Promise] = {}  # by session id
        self._signed: set[bytes] = set()

    # -------------------------------------------------------------- queries
    def cost(self, circle: bytes, quantity: int, unit_price: int) -> int:
        """Units a promise at ``unit_price`` may cost: what the desk's offer would allow."""
        return max(quantity, self._demand(circle, unit_price))

    def free_for(self, circle: bytes) -> int:
        """Units neither sold nor promised to circles other than ``circle``."""
        self.settle()
        promised: dict[bytes, int] = {}
        for p in self._promises.values():
            if p.circle != circle:
                promised[p.circle] = max(promised.get(p.circle, 0), p.units)
        return self.capacity - self.sold - sum(promised.values())

    def promised(self) -> int:
        """Units promised to circles right now (for reports and tests)."""
        self.settle()
        by_circle: dict[bytes, int] = {}
        for p in self._promises.values():
            by_circle[p.circle] = max(by_circle.get(p.circle, 0), p.units)
        return sum(by_circle.values())

    # ------------------------------------------------------------- promises
    def promise(self, session: Negotiation, units: int) -> bool:
        """Hold ``units`` for ``session``'s circle if they are free; False if not."""
        circle = session.request.message.circle
        if units > self.free_for(circle):
            return False
        held = self._promises.get(session.session)
        if held is None:
            self._promises[session.session] = _Promise(circle=circle, session=session, units=units)
        else:
            # The standing proposal is the only one the circle can accept: its
            # cost replaces the earlier ones.
            held.units = units
        return True

    def settle(self) -> None:
        """Release what ended: sessions over without agreement, circles decided."""
        if self.node is None:
            return
        now = self.node.now()
        for key, p in list(self._promises.items()):
            if not p.agreed:
                result = p.session.result
                if isinstance(result, protocol.Agreement):
                    p.agreed = True
                    # The desk offers every unit pledged at the agreed price; the
                    # circle may have grown since our last move.
                    p.units = max(p.units, self.cost(p.circle, result.quantity, result.unit_price))
                elif p.session.is_over or now > p.session.request.message.deadline:
                    del self._promises[key]
                    continue
            if p.agreed and self._status(p.circle) in _OVER:
                del self._promises[key]

    # ------------------------------------------------------------- signing
    def waiting(self, handled: dict[bytes, int]) -> bool:
        """True when a circle we promised has certificates not yet considered."""
        self.settle()
        node = self.node
        assert node is not None
        return any(
            len(node.certificates(c)) > handled.get(c, 0)
            for c in {p.circle for p in self._promises.values() if p.agreed}
        )

    async def countersign_within(self) -> None:
        """Countersign certificates for our offers that fit our capacity, until cancelled."""
        node = self.node
        assert node is not None
        handled: dict[bytes, int] = {}
        while True:
            await node.wait_until(lambda: self.waiting(handled))
            circles = sorted({p.circle for p in self._promises.values() if p.agreed})
            for circle in circles:
                certificates = node.certificates(circle)
                start = handled.get(circle, 0)
                handled[circle] = len(certificates)
                for certificate in certificates[start:]:
                    await self._consider(certificate)

    async def _consider(self, certificate: protocol.Envelope[protocol.Certificate]) -> None:
        node = self.node
        assert node is not None
        body = certificate.message
        if body.circle in self._signed:
            return
        try:
            offer = node.circle(body.circle).certificate_inputs(body)["offer"]
        except (KeyError, NodeError):
            return  # not an offer this node holds
        if offer.signer != node.public_key:
            return
        if body.total > self.free_for(body.circle):
            self.refused += 1
            log.info("not signing %d units for %s: beyond capacity", body.total, body.circle.hex())
            return
        try:
            await node.countersign(certificate)
        except (NodeError, protocol.ProtocolError) as exc:
            log.info("did not countersign for %s: %s", body.circle.hex()[:12], exc)
            return
        self.sold += body.total
        self._signed.add(body.circle)
        for key in [k for k, p in self._promises.items() if p.circle == body.circle]:
            del self._promises[key]

    # ------------------------------------------------------------ internals
    def _demand(self, circle: bytes, unit_price: int) -> int:
        if self.node is None:
            return 0
        try:
            demand: int = self.node.circle(circle).demand(unit_price)
        except NodeError:
            return 0
        return demand

    def _status(self, circle: bytes) -> protocol.CircleStatus | None:
        assert self.node is not None
        try:
            status: protocol.CircleStatus = self.node.circle(circle).status
        except NodeError:
            return None
        return status


@dataclass(frozen=True, slots=True, kw_only=True)
class CappedStrategy:
    """A vendor strategy that makes no promise its ledger cannot hold."""

    inner: Strategy
    """The scenario's strategy."""
    ledger: CapacityLedger
    """The vendor's capacity."""
    quantity: int
    """Units the circle asked for."""

    @property
    def reservation(self) -> int:
        """The inner strategy's reservation (the vendor's floor)."""
        return self.inner.reservation

    def move(self, view: SessionView, now: int) -> Move:
        """The inner strategy's move, unless it promises units the vendor does not have."""
        move = self.inner.move(view, now)
        if move.action is Action.PROPOSE:
            price = move.unit_price
        elif move.action is Action.ACCEPT:
            price = view.standing
        else:
            return move
        if price is None:
            return move  # the Negotiator refuses it
        circle = view.session.request.message.circle
        if self.ledger.promise(view.session, self.ledger.cost(circle, self.quantity, price)):
            return move
        return Move.walk_away("capacity promised to other circles")
