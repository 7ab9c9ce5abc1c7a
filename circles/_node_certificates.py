"""Quorum certificates and deals: assembled by members, countersigned by vendors.

Once a joined circle reaches quorum, the members whose pledges the
certificate counts take turns in a deterministic order: the first assembles
and publishes it after ``assemble_delay``, each next one waits longer and
first checks that nobody did, so usually one member assembles and any member
will if that one is gone. A vendor countersigns a certificate for one of its
own offers (by hand, or at once with ``auto_countersign``) into a binding
deal, at most one per circle.
"""

from __future__ import annotations

import trio

import protocol
from protocol import Envelope
from protocol._codec import pack
from protocol._schema import to_wire

from ._node_core import NodeError, _NodeCore, log
from ._topics import circle_topic

__all__: list[str] = []


class _Certificates(_NodeCore):
    """Certificate assembly and countersigning."""

    def certificates(self, circle: bytes) -> list[Envelope[protocol.Certificate]]:
        """Certificates seen for a circle, in arrival order."""
        return list(self._certificates.get(circle, ()))

    async def countersign(
        self, certificate: Envelope[protocol.Certificate]
    ) -> Envelope[protocol.Deal]:
        """As the vendor of its offer, verify ``certificate`` and sign the deal.

        Raises :class:`protocol.InvalidCertificate` (with a reason) when the
        certificate does not hold up against this node's copy of the circle,
        and :class:`NodeError` if this node already signed a deal for the circle.
        """
        cert = certificate.message
        state = self.circle(cert.circle)
        inputs = state.certificate_inputs(cert) if cert.offer in self._my_offers else None
        if inputs is None:
            raise NodeError(
                "this node did not make the offer that certificate names", reason="not-my-offer"
            )
        protocol.verify_certificate(certificate, **inputs)
        async with self._own_lock:
            if state.deal is not None or self._signed_deal_in(cert.circle):
                raise NodeError("a deal for this circle is already signed", reason="deal-exists")
            deal = protocol.Deal(
                circle=cert.circle,
                certificate=certificate.id,
                unit_price=cert.unit_price,
                currency=cert.currency,
                total=cert.total,
                created=max(self.now(), cert.created),
            )
            envelope = await self._sign_own(deal)
        await self.transport.publish(circle_topic(cert.circle), envelope.data)
        return envelope

    def _signed_deal_in(self, circle: bytes) -> bool:
        """True if this node already signed a deal for ``circle`` (the store files
        a deal under its circle, so one circle's rows answer it)."""
        assert self._store is not None
        return any(
            s.kind == "deal" and s.signer == self.public_key for s in self._store.envelopes(circle)
        )

    async def _countersign_quietly(self, certificate: Envelope[protocol.Certificate]) -> None:
        try:
            await self.countersign(certificate)
        except (NodeError, protocol.ProtocolError) as exc:
            log.info("did not countersign %s: %s", certificate.id.hex()[:12], exc)

    async def _assemble_certificates(self) -> None:
        """Assemble and publish a certificate once a joined circle reaches quorum."""
        while True:
            await self._changed.wait()
            await trio.sleep(self._assemble_delay)
            for circle in sorted(self._joined):
                await self._maybe_assemble(circle)

    async def _maybe_assemble(self, circle: bytes) -> None:
        state = self._states.get(circle)
        if state is None or state.status is not protocol.CircleStatus.QUORUM:
            return
        if state.deal is not None:
            return
        try:
            body = state.certificate()
        except protocol.ProtocolError:
            return
        key = _certificate_key(body)
        if key in self._assembled:
            return
        if any(_certificate_key(c.message) == key for c in self._certificates.get(circle, ())):
            self._assembled.add(key)
            return
        signers = sorted({state.pledge(a.pledge).signer for a in body.allocations})
        if self.public_key not in signers:
            return
        rank = signers.index(self.public_key)
        if rank:
            # Others first: wait our turn, then re-check that nobody did it.
            self._nursery_start(self._assemble_later, circle, key, rank * 4 * self._assemble_delay)
            return
        await self._publish_certificate(circle, body, key)

    async def _assemble_later(self, circle: bytes, key: bytes, delay: float) -> None:
        await trio.sleep(delay)
        state = self._states.get(circle)
        if state is None or state.deal is not None or key in self._assembled:
            return
        if any(_certificate_key(c.message) == key for c in self._certificates.get(circle, ())):
            return
        try:
            body = state.certificate()
        except protocol.ProtocolError:
            return
        if _certificate_key(body) == key:
            await self._publish_certificate(circle, body, key)

    async def _publish_certificate(
        self, circle: bytes, body: protocol.Certificate, key: bytes
    ) -> None:
        self._assembled.add(key)
        envelope = await self._sign_own(body)
        await self.transport.publish(circle_topic(circle), envelope.data)


def _certificate_key(body: protocol.Certificate) -> bytes:
    """Identifies a certificate's content whoever signed it."""
    return pack(to_wire(body))
