"""Quorum certificates and deals: assembled by members, countersigned by vendors.

Once a joined circle reaches quorum, the members whose pledges the
certificate counts take turns in a deterministic order: the first assembles
and publishes it after ``assemble_delay``, each next one waits longer and
first checks that nobody did, so usually one member assembles and any member
will if that one is gone. A vendor countersigns a certificate for one of its
own offers (by hand, or at once with ``auto_countersign``) into a binding
deal, at most one per circle.

The countersignature is the lock: a pledge it names binds its member even if
the member withdrew or pledged lower meanwhile. To narrow that race, the
vendor's node first syncs the circle with its peers (bounded by
``COUNTERSIGN_SYNC``), then refuses a certificate naming a pledge it knows is
superseded, or signed by an equivocator. What is left is the time a
withdrawal takes to reach the peers the vendor syncs with (docs/circles.md,
"Known limits").
"""

from __future__ import annotations

import random

import trio

import protocol
from protocol import Envelope
from protocol._codec import pack
from protocol._schema import to_wire

from ._node_core import CertificateSuperseded, NodeError, _NodeCore, log
from ._topics import circle_topic
from ._transport import PeerId, TransportError

__all__ = ["COUNTERSIGN_SYNC"]

#: Seconds a vendor's node spends syncing a circle with its peers before it
#: countersigns a certificate (all peers at once; past it, it goes on with what
#: it holds).
COUNTERSIGN_SYNC = 3.0
#: At most this many peers are asked in that sync (picked at random).
COUNTERSIGN_PEERS = 8


class _Certificates(_NodeCore):
    """Certificate assembly and countersigning."""

    def certificates(self, circle: bytes) -> list[Envelope[protocol.Certificate]]:
        """Certificates seen for a circle, in arrival order."""
        return list(self._certificates.get(circle, ()))

    async def countersign(
        self, certificate: Envelope[protocol.Certificate], *, sync: float = COUNTERSIGN_SYNC
    ) -> Envelope[protocol.Deal]:
        """As the vendor of its offer, verify ``certificate`` and sign the deal.

        First syncs the circle with every peer for at most ``sync`` seconds
        (0: not at all), so that a withdrawal or a lower pledge made before
        now is likely known here; then checks the certificate against this
        node's copy of the circle.

        Raises :class:`protocol.InvalidCertificate` (with a reason) when the
        certificate does not hold up, :class:`CertificateSuperseded` when it
        names a pledge its member has since replaced or withdrawn (or a key
        that equivocated), and :class:`NodeError` if this node did not make
        the offer or already signed a deal for the circle.
        """
        cert = certificate.message
        self.circle(cert.circle)
        if cert.offer not in self._my_offers:
            raise NodeError(
                "this node did not make the offer that certificate names", reason="not-my-offer"
            )
        if sync > 0:
            await self._sync_circle(cert.circle, sync)
        # Read after the sync: what it brought may have changed (or rebuilt) the state.
        state = self.circle(cert.circle)
        missing = [a.pledge for a in cert.allocations if state.pledge(a.pledge) is None]
        if missing:
            # certificate_inputs would fail on them; they may still be on their way.
            raise protocol.InvalidCertificate(
                f"this node does not hold pledge {missing[0].hex()[:16]}… the certificate "
                "names; try again once it arrives",
                reason="missing-pledge",
            )
        protocol.verify_certificate(certificate, **state.certificate_inputs(cert))
        _refuse_superseded(state, cert)
        _refuse_dearer(state, cert)
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

    async def _sync_circle(self, circle: bytes, seconds: float) -> None:
        """Sync ``circle`` with every peer at once, for at most ``seconds``.

        If no peer answers in time the node goes on with what it holds, and
        says so: the certificate is then checked against an older view.
        """
        serving = sorted(p for p in self.transport.peers() if self.syncer.serves_sync(p))
        # A few peers suffice to learn of a withdrawal; asking all would make the
        # cost grow with the number of connections. Drawn from a generator of
        # this node and circle, not the process's: a simulation replays by seed.
        draw = random.Random(self.public_key + circle)
        peers = draw.sample(serving, min(len(serving), COUNTERSIGN_PEERS))
        answered: list[PeerId] = []

        async def one(peer: PeerId) -> None:
            try:
                await self.syncer.sync(circle, peer)
            except TransportError as exc:
                log.debug("sync of %s with %s failed: %s", circle.hex()[:12], peer, exc)
            else:
                answered.append(peer)

        with trio.move_on_after(seconds):
            async with trio.open_nursery() as nursery:
                for peer in peers:
                    nursery.start_soon(one, peer)
        if not answered:
            log.warning(
                "countersigning in circle %s with what this node holds: no peer answered "
                "sync within %.1f s (%d asked)",
                circle.hex()[:12],
                seconds,
                len(peers),
            )

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
        except TransportError as exc:
            # Signed and stored; peers fetch the deal by sync.
            log.info("countersigned %s but could not publish: %s", certificate.id.hex()[:12], exc)
        except Exception:
            # A fault, not a refusal: this runs in the node's own tasks, and no
            # certificate a peer sends may stop the node.
            log.exception(
                "could not countersign %s: this is a bug in buying-circles, please report it",
                certificate.id.hex()[:12],
            )

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


def _refuse_superseded(state: protocol.CircleState, cert: protocol.Certificate) -> None:
    """Raise :class:`CertificateSuperseded` if a named pledge is not its member's live one.

    A member's live pledge is its highest-sequence pledge made by the
    deadline: a named pledge that is not live was replaced by a higher one
    (or a withdrawal), or its key equivocated. Certificates are checked
    standalone by ``verify_certificate``, which cannot know this; the vendor
    can, and a countersignature would bind the member to what it took back.
    """
    equivocators = state.equivocators()
    for allocation in cert.allocations:
        named = state.pledge(allocation.pledge)
        if named is None:  # pragma: no cover - verify_certificate checked it is held
            continue
        member = named.signer
        if member in equivocators:
            raise CertificateSuperseded(
                f"member {member.hex()[:16]}… signed conflicting pledges in this circle; "
                "not countersigning a certificate that names it",
                reason="equivocator",
            )
        current = state.live_pledge(member)
        if current is None or current.id != named.id:
            now = "withdrew" if current is None else f"pledged again (seq {current.message.seq})"
            raise CertificateSuperseded(
                f"member {member.hex()[:16]}… {now} after pledge seq {named.message.seq}, "
                "which the certificate names; wait for a certificate over the live pledges",
                reason="superseded",
            )


def _certificate_key(body: protocol.Certificate) -> bytes:
    """Identifies a certificate's content whoever signed it."""
    return pack(to_wire(body))


def _refuse_dearer(state: protocol.CircleState, cert: protocol.Certificate) -> None:
    """Raise :class:`CertificateSuperseded` (``dearer-than-view``) if this node's whole
    view of the circle clears the certificate's offer at a cheaper tier.

    ``verify_certificate`` checks "no cheaper tier" only against the pledges
    a certificate names, so a member colluding with a vendor could certify a
    subset that clears only a dearer tier. An honest vendor does not take
    that price: it countersigns only what its own view would certify.
    """
    try:
        fair = state.certificate(offer=cert.offer)
    except protocol.ProtocolError:
        return  # nothing clears in this view now; the deal's own rules decide
    if fair.unit_price < cert.unit_price:
        raise CertificateSuperseded(
            f"the circle's pledges clear this offer at {fair.unit_price}, below the "
            f"certificate's {cert.unit_price}; not countersigning the dearer tier "
            "(wait for a certificate over all the live pledges)",
            reason="dearer-than-view",
        )
