"""A vendor syncs the circle before countersigning, and refuses a superseded pledge.

The countersignature is the lock: a pledge a deal names binds its member even
if the member withdrew meanwhile. A member who withdrew before the vendor
countersigned was bound all the same when the vendor's node had only the
older pledge. The vendor's node now syncs the circle with its peers first
(bounded), and refuses a certificate naming a pledge its member has replaced
or withdrawn, or a key that equivocated (issue 11, section 2).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import protocol
from circles import CertificateSuperseded, MemoryNetwork, Node
from circles._topics import circle_topic
from protocol._certificate import make_proof

EPOCH = 1_800_000_000
#: Beyond any wait here: no anti-entropy and no certificate assembly of their own.
NEVER = 100_000.0


def ident(n: int) -> protocol.Identity:
    return protocol.Identity.from_seed(bytes([n]) * 32)


async def until(predicate: Callable[[], bool], *, seconds: float = 30) -> None:
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.02)


@contextlib.asynccontextmanager
async def circle_at_quorum(
    tmp_path: Path, **vendor_options: Any
) -> AsyncIterator[tuple[Node, Node, Node, bytes]]:
    """Ann (founder) - Bob, and Ann - Shop (the vendor): Shop is not connected to Bob.

    Ann and Bob pledge 5 each at most 4.00 against Shop's 10 @ 3.00: quorum.
    Bob gossips one pledge, then holds the rest back (a pacer budget that
    refills in days), so his withdrawal reaches only whoever syncs from him.
    """
    common: dict[str, Any] = {"sync_interval": NEVER, "assemble_delay": NEVER}
    async with contextlib.AsyncExitStack() as stack:
        ann = await stack.enter_async_context(Node(ident(1), tmp_path / "ann", **common))
        bob = await stack.enter_async_context(
            Node(ident(2), tmp_path / "bob", gossip_rate=1e-6, gossip_burst=1, **common)
        )
        shop = await stack.enter_async_context(
            Node(ident(3), tmp_path / "shop", **common, **vendor_options)
        )
        with trio.fail_after(60):
            await bob.connect(ann.addresses()[0])
            await shop.connect(ann.addresses()[0])
            circle = await ann.found_circle(
                title="Olive oil", unit="tin", target=10, currency="EUR", deadline=ann.now() + 3600
            )
            await bob.join(circle)
            await shop.join(circle)
            offer = await shop.offer(
                circle, product="oil", tiers=[(10, 300)], capacity=100, valid_until=ann.now() + 7200
            )
            await bob.pledge(circle, 5, max_price=400)
            await ann.pledge(circle, 5, max_price=400)
            # Sync, not gossip, spreads them: no wait on the mesh forming.
            ann_id, bob_id = ann.transport.peer_id, bob.transport.peer_id
            await ann.syncer.sync(circle, bob_id)
            await ann.syncer.sync(circle, shop.transport.peer_id)
            await shop.syncer.sync(circle, ann_id)
            await bob.syncer.sync(circle, ann_id)
            for node in (ann, bob, shop):
                await until(lambda n=node: n.circle(circle).status is protocol.CircleStatus.QUORUM)
        assert offer.id in shop._my_offers
        assert bob_id not in shop.transport.peers()
        yield ann, bob, shop, circle


async def withdraw_unseen_by_the_vendor(ann: Node, bob: Node, shop: Node, circle: bytes) -> Any:
    """Bob withdraws; Ann syncs it from him; Shop has not got it."""
    withdrawal = await bob.withdraw(circle)
    assert bob._gossip.pending == {circle: withdrawal.data}, "the withdrawal was gossiped"
    with trio.fail_after(30):
        assert await ann.syncer.sync(circle, bob.transport.peer_id) == 1
    assert ann.log_entry(withdrawal.id) is not None
    assert shop.log_entry(withdrawal.id) is None
    return withdrawal


async def test_the_vendor_syncs_first_and_refuses_a_withdrawn_pledge(tmp_path: Path) -> None:
    async with circle_at_quorum(tmp_path) as (ann, bob, shop, circle):
        # A certificate assembled while Bob's pledge was live (Shop's view still is).
        stale = protocol.seal(shop.circle(circle).certificate(), ann.identity)
        named = {shop.circle(circle).pledge(a.pledge).signer for a in stale.message.allocations}
        assert bob.public_key in named
        withdrawal = await withdraw_unseen_by_the_vendor(ann, bob, shop, circle)
        with pytest.raises(CertificateSuperseded) as refused:
            await shop.countersign(stale)
        assert refused.value.reason == "superseded"
        assert "withdrew" in str(refused.value)
        # The sync brought the withdrawal from Ann; no deal was signed.
        assert shop.log_entry(withdrawal.id) is not None
        assert shop.circle(circle).deal is None
        assert not [s for s in shop.circle_log(circle) if s.kind == "deal"]


async def test_a_lower_pledge_supersedes_too_and_a_live_certificate_is_signed(
    tmp_path: Path,
) -> None:
    async with circle_at_quorum(tmp_path) as (ann, bob, shop, circle):
        stale = protocol.seal(shop.circle(circle).certificate(), bob.identity)
        lower = await bob.pledge(circle, 5, max_price=350)  # still clears at 3.00
        with trio.fail_after(30):
            await ann.syncer.sync(circle, bob.transport.peer_id)
        assert shop.log_entry(lower.id) is None
        with pytest.raises(CertificateSuperseded) as refused:
            await shop.countersign(stale)
        assert refused.value.reason == "superseded"
        assert f"seq {lower.message.seq}" in str(refused.value)
        # A certificate over the live pledges is countersigned.
        fresh = protocol.seal(shop.circle(circle).certificate(), ann.identity)
        deal = await shop.countersign(fresh)
        assert deal.message.certificate == fresh.id


async def test_no_peer_answering_is_logged_and_the_vendor_goes_on_with_what_it_holds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with circle_at_quorum(tmp_path) as (ann, bob, shop, circle):
        stale = protocol.seal(shop.circle(circle).certificate(), ann.identity)
        await withdraw_unseen_by_the_vendor(ann, bob, shop, circle)

        # Ann answers nothing: Shop waits its bound, says so, and signs what it holds.
        async def silent(peer: Any, request: bytes) -> bytes:
            await trio.sleep_forever()
            raise AssertionError  # pragma: no cover

        from circles._topics import SYNC_PROTOCOL

        ann.transport.set_handler(SYNC_PROTOCOL, silent)
        caplog.set_level(logging.WARNING, logger="circles.node")
        started = trio.current_time()
        with trio.fail_after(30):
            deal = await shop.countersign(stale, sync=1.0)
        assert 1.0 <= trio.current_time() - started < 10
        assert deal.message.certificate == stale.id
        assert [r for r in caplog.records if "no peer answered sync" in r.getMessage()]


async def test_the_auto_countersign_path_refuses_and_logs_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """On the in-memory network: an equivocator named in a certificate, auto path."""
    network = MemoryNetwork(seed=21, latency=0.01)
    clock = lambda: EPOCH + trio.current_time()  # noqa: E731
    options: dict[str, Any] = {
        "transport": network.open_transport,
        "clock": clock,
        "sync_interval": NEVER,
        "assemble_delay": NEVER,
    }
    caplog.set_level(logging.INFO, logger="circles.node")
    async with (
        Node(ident(1), tmp_path / "ann", **options) as ann,
        Node(ident(3), tmp_path / "shop", auto_countersign=True, **options) as shop,
    ):
        await shop.connect(ann.addresses()[0])
        with trio.fail_after(60):
            circle = await ann.found_circle(
                title="Oil", unit="tin", target=10, currency="EUR", deadline=EPOCH + 3600
            )
            await shop.join(circle)
            await shop.offer(
                circle, product="oil", tiers=[(10, 300)], capacity=100, valid_until=EPOCH + 7200
            )
            pledge = await ann.pledge(circle, 10, max_price=400)
            await shop.wait_until(lambda: shop.circle(circle).pledge(pledge.id) is not None)
            stale = protocol.seal(shop.circle(circle).certificate(), ann.identity)
            # Ann signs a second pledge with the same sequence number: an equivocation,
            # which Ann's own node would never do; a proof of it reaches Ann's node only.
            twin = protocol.seal(
                protocol.Pledge(
                    circle=circle,
                    seq=pledge.message.seq,
                    quantity=9,
                    max_price=400,
                    currency="EUR",
                    tolerance=0,
                    created=ann.now(),
                ),
                ann.identity,
            )
            proof = protocol.seal(make_proof(pledge, twin), ann.identity)
            assert ann._take(proof)
            assert shop.log_entry(proof.id) is None
            await ann.transport.publish(circle_topic(circle), stale.data)
            await shop.wait_until(lambda: bool(shop.certificates(circle)))
            await trio.sleep(30)
        assert shop.log_entry(proof.id) is not None, "the vendor did not sync first"
        assert shop.circle(circle).deal is None
        refusals = [r for r in caplog.records if "did not countersign" in r.getMessage()]
        assert len(refusals) == 1
        assert "signed conflicting pledges" in refusals[0].getMessage()


async def test_a_certificate_naming_an_unknown_pledge_does_not_stop_an_auto_countersigning_vendor(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Any key could gossip such a certificate for a vendor's offer: on c4e5d4a the
    vendor's countersign raised KeyError in a node task and the node died."""
    network = MemoryNetwork(seed=22, latency=0.01)
    clock = lambda: EPOCH + trio.current_time()  # noqa: E731
    options: dict[str, Any] = {"transport": network.open_transport, "clock": clock}
    async with (
        Node(ident(1), tmp_path / "ann", **options) as ann,
        Node(ident(3), tmp_path / "shop", auto_countersign=True, **options) as shop,
    ):
        await shop.connect(ann.addresses()[0])
        with trio.fail_after(60):
            circle = await ann.found_circle(
                title="Oil", unit="tin", target=10, currency="EUR", deadline=EPOCH + 3600
            )
            await shop.join(circle)
            offer = await shop.offer(
                circle, product="oil", tiers=[(10, 300)], capacity=100, valid_until=EPOCH + 7200
            )
            await ann.wait_until(lambda: ann.log_entry(offer.id) is not None)
            forged = protocol.seal(
                protocol.Certificate(
                    circle=circle,
                    offer=offer.id,
                    unit_price=300,
                    currency="EUR",
                    total=10,
                    allocations=(protocol.Allocation(pledge=b"\7" * 32, quantity=10),),
                    created=ann.now(),
                ),
                ident(99),
            )
            await ann.transport.publish(circle_topic(circle), forged.data)
            await shop.wait_until(lambda: bool(shop.certificates(circle)))
            await trio.sleep(10)
            # Still running, and it signed nothing.
            assert shop.circle(circle).deal is None
            pledge = await ann.pledge(circle, 2, max_price=400)
            await shop.wait_until(lambda: shop.circle(circle).pledge(pledge.id) is not None)
        with pytest.raises(protocol.InvalidCertificate) as refused:
            await shop.countersign(forged, sync=0)
        assert refused.value.reason == "missing-pledge"


async def test_the_vendor_refuses_a_subset_certificate_its_view_clears_cheaper(
    tmp_path: Path,
) -> None:
    """A member certifies two of six pledges at the dearer tier (every rule the
    certificate carries holds); an honest vendor's whole view clears 30 units at
    the cheaper tier, so it refuses, and signs the certificate over all six."""
    network = MemoryNetwork(seed=11)
    common: dict[str, Any] = {
        "sync_interval": NEVER,
        "assemble_delay": NEVER,
        "transport": network.open_transport,
    }
    members = [ident(20 + i) for i in range(6)]
    async with (
        Node(ident(1), tmp_path / "ann", **common) as ann,
        Node(ident(3), tmp_path / "shop", **common) as shop,
    ):
        with trio.fail_after(30):
            await shop.connect(ann.addresses()[0])
            circle = await ann.found_circle(
                title="Oil", unit="tin", target=10, currency="EUR", deadline=ann.now() + 3600
            )
            await shop.join(circle)
            await shop.offer(
                circle,
                product="oil",
                tiers=[(10, 100), (30, 80)],
                capacity=100,
                valid_until=ann.now() + 7200,
            )
            await ann.syncer.sync(circle, shop.transport.peer_id)
            pledges = [
                protocol.seal(
                    protocol.Pledge(
                        circle=circle,
                        seq=1,
                        quantity=5,
                        max_price=150,
                        currency="EUR",
                        tolerance=0,
                        created=ann.now(),
                    ),
                    m,
                )
                for m in members
            ]
            for env in pledges:
                await ann.transport.publish(circle_topic(circle), env.data)
                assert shop._take(env)
            view = shop.circle(circle)
            assert view.best_offer is not None and view.best_offer.unit_price == 80
            subset = protocol.CircleState.from_envelopes(
                view.charter,
                [*[e for e in shop.envelopes(circle) if e.kind == "offer"], *pledges[:2]],
                now=shop.now(),
            ).certificate()
            assert subset.unit_price == 100
            dear = protocol.seal(subset, members[0])
            # Every rule the certificate carries holds: only the whole view tells.
            protocol.verify_certificate(dear, **view.certificate_inputs(subset))
            with pytest.raises(CertificateSuperseded) as refused:
                await shop.countersign(dear, sync=0)
            assert refused.value.reason == "dearer-than-view"
            fair = protocol.seal(view.certificate(), members[0])
            deal = await shop.countersign(fair, sync=0)
            assert deal.message.unit_price == 80
