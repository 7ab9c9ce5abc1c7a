"""The node's log and store obey the circle's caps (issue 11, item 3).

Each log-growth path is flooded through the node's own door (the gossip
validator, then ``_take``, as delivery does) on a real SQLite store, and the
circle's row count must stay bounded by the cap, not by the flood, while the
node runs and after a restart on the same data directory. Open requests for
quote had no cap at all before (any key could fill every member's store); the
other paths check that what ``CircleState`` drops the store forgets too. The
last tests show that the lock survives: a deal's pledge outlives the member's
newer pledges, restarts included, and the rfq cap holds over real libp2p hosts.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import protocol
from circles import MemoryNetwork, Node, Store, Verdict
from circles._topics import circle_topic
from protocol import _caps as caps
from protocol._caps import lottery_rank
from protocol._certificate import make_proof

EPOCH = 1_800_000_000
DEADLINE = EPOCH + 3600
#: How many messages each flood sends: well past every cap it meets.
FLOOD = 40


def ident(n: int) -> protocol.Identity:
    return protocol.Identity.from_seed(n.to_bytes(2, "big") * 16)


def clock() -> float:
    return EPOCH + trio.current_time()


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, network: MemoryNetwork, n: int = 1, name: str = "alice", **options: Any
) -> AsyncIterator[Node]:
    async with Node(
        ident(n),
        tmp_path / name,
        transport=network.open_transport,
        clock=clock,
        sync_interval=2.0,
        **options,
    ) as node:
        yield node


def feed(node: Node, circle: bytes, data: bytes) -> Verdict:
    """Hand one envelope to the node as gossip delivers it: validator, then store and state."""
    verdict = node._circle_validator(circle)(data, "peer")
    if verdict is Verdict.ACCEPT:
        node._take(node._validated.pop(protocol.envelope_id(data)))
    return verdict


def rows(node: Node, circle: bytes) -> int:
    assert node._store is not None
    return node._store.count(circle)


def stored_ids(node: Node, circle: bytes, kind: str) -> set[bytes]:
    return {entry.id for entry in node.circle_log(circle, kinds=(kind,))}


def seal(message: protocol.Message, who: protocol.Identity) -> bytes:
    return protocol.seal(message, who).data


def pledge(
    circle: bytes, who: protocol.Identity, *, seq: int = 1, created: int, q: int = 2
) -> bytes:
    body = protocol.Pledge(
        circle=circle,
        seq=seq,
        quantity=q,
        max_price=500,
        currency="EUR",
        tolerance=0,
        created=created,
    )
    return seal(body, who)


def rfq(circle: bytes, who: protocol.Identity, *, created: int) -> bytes:
    body = protocol.QuoteRequest(
        circle=circle,
        vendor=None,
        product="Olive oil",
        quantity=10,
        currency="EUR",
        respond_by=created + 60,
        deadline=created + 600,
        max_rounds=10,
        created=created,
    )
    return seal(body, who)


def capped(circle: bytes, standing: list[bytes], others: list[bytes]) -> set[bytes]:
    """The requests a circle keeps: those of keys that stand (the founder, members with
    a live pledge), then the others' (one each) by the circle's lottery, 16 keys in all."""

    def rank(data: bytes) -> bytes:
        return lottery_rank(circle, protocol.decode(data).signer)

    room = caps.RFQ_SIGNERS_PER_CIRCLE - len(standing)
    return {protocol.envelope_id(d) for d in [*standing, *sorted(others, key=rank)[:room]]}


def offer(circle: bytes, who: protocol.Identity, *, created: int) -> bytes:
    body = protocol.Offer(
        circle=circle,
        product="Olive oil",
        currency="EUR",
        list_price=500,
        tiers=(protocol.Tier(min_quantity=10, unit_price=400),),
        capacity=100,
        valid_until=DEADLINE + 3600,
        terms="",
        loyalty=(),
        in_reply_to=None,
        created=created,
    )
    return seal(body, who)


def invite(circle: bytes, who: protocol.Identity, invitee: bytes, *, created: int) -> bytes:
    return seal(
        protocol.Invite(circle=circle, invitee=invitee, sealed_key=None, created=created), who
    )


async def found(node: Node, *, invite_only: bool = False) -> bytes:
    return await node.found_circle(
        title="Olive oil",
        unit="tin",
        target=10,
        currency="EUR",
        deadline=DEADLINE,
        invite_only=invite_only,
        members_invite=invite_only,
    )


async def bounded_after_restart(
    tmp_path: Path, network: MemoryNetwork, circle: bytes, expected: int
) -> None:
    """The same row count once the node stopped (in the file) and after its restart."""
    with Store.open(tmp_path / "alice") as store:
        assert store.count(circle) == expected
    async with running(tmp_path, network) as again:
        assert rows(again, circle) == expected


# -------------------------------------------------------------- open rfqs


async def test_open_rfqs_from_many_keys_and_from_one_key_are_capped(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """Failed before the rfq caps: every request was stored (here 1 + 1 + 40 + 40 + 2 rows)."""
    network = MemoryNetwork(seed=1)
    bob = ident(2)
    async with running(tmp_path, network) as alice:
        circle = await found(alice)
        now = alice.now()
        assert feed(alice, circle, pledge(circle, bob, created=now)) is Verdict.ACCEPT
        # Throwaway keys, one request each, and one key with many requests.
        many = [rfq(circle, ident(100 + i), created=now) for i in range(FLOOD)]
        one = [rfq(circle, ident(99), created=now + i) for i in range(FLOOD)]
        # The founder and a pledging member come last and still find room.
        ours = [rfq(circle, alice.identity, created=now), rfq(circle, bob, created=now)]
        for data in many + one + ours:
            assert feed(alice, circle, data) is Verdict.ACCEPT
        held = stored_ids(alice, circle, "rfq")
        assert len(held) == caps.RFQ_SIGNERS_PER_CIRCLE
        assert {protocol.envelope_id(d) for d in ours} <= held
        # One request per key: only the newest of the key with many could be held.
        assert not held & {protocol.envelope_id(d) for d in one[:-1]}
        # What every peer keeps, whatever the order: ours, then the lottery's best.
        assert held == capped(circle, ours, [*many, one[-1]])
        total = 1 + 1 + caps.RFQ_SIGNERS_PER_CIRCLE  # charter, pledge, rfqs
        assert rows(alice, circle) == total
        # A dropped request sent again (by sync, say) is dropped again, not kept.
        assert feed(alice, circle, many[-1]) in (Verdict.ACCEPT, Verdict.IGNORE)
        assert rows(alice, circle) == total
    await bounded_after_restart(tmp_path, network, circle, total)
    async with running(tmp_path, network) as alice:
        assert stored_ids(alice, circle, "rfq") == held


async def test_an_rfq_the_cap_drops_is_no_auction_for_a_vendor(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """The node reports each request as before (vendors' desks bid on it); a capped one
    comes with the cap's reason and is not in the log, so no desk bids on it."""
    network = MemoryNetwork(seed=2)
    async with running(tmp_path, network) as alice:
        circle = await found(alice)
        now = alice.now()
        seen: list[protocol.Refused] = []

        async def listen() -> None:
            async with alice.events() as events:
                async for event in events:
                    inner = getattr(event, "event", None)
                    if isinstance(inner, protocol.Refused) and inner.kind == "rfq":
                        seen.append(inner)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            await trio.testing.wait_all_tasks_blocked()
            newer = rfq(circle, ident(99), created=now + 10)
            older = rfq(circle, ident(99), created=now)
            feed(alice, circle, newer)
            feed(alice, circle, older)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert [(r.message, r.reason) for r in seen] == [
            (protocol.envelope_id(newer), "not-circle-state"),
            (protocol.envelope_id(older), "superseded"),
        ]
        assert alice.log_entry(protocol.envelope_id(older)) is None
        assert stored_ids(alice, circle, "rfq") == {protocol.envelope_id(newer)}


# ---------------------------------------------------------------- invites


async def test_invites_are_capped_and_refused_in_an_open_circle(
    tmp_path: Path, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small caps, so that a flood of a few dozen reaches each of them.
    monkeypatch.setattr(caps, "INVITES_PER_KEY", 4)
    monkeypatch.setattr(caps, "INVITERS_PER_CIRCLE", 3)
    network = MemoryNetwork(seed=3)
    carol = ident(3).public_key
    async with running(tmp_path, network) as alice:
        closed = await found(alice, invite_only=True)
        open_circle = await found(alice)
        now = alice.now()
        # One inviter, one invitee, many times: one invite is kept.
        for i in range(FLOOD):
            data = invite(closed, alice.identity, carol, created=now + i)
            assert feed(alice, closed, data) is Verdict.ACCEPT
        assert len(stored_ids(alice, closed, "invite")) == 1
        # Many inviters (strangers too), many invitees each.
        for n in range(8):
            for i in range(10):
                who = ident(200 + n)
                feed(alice, closed, invite(closed, who, ident(300 + i).public_key, created=now))
        # The charter, the founder's invite (members need no place in the inviters'
        # lottery), and the strangers' lottery places, each with its quota.
        total = 2 + caps.INVITERS_PER_CIRCLE * caps.INVITES_PER_KEY
        assert rows(alice, closed) == total
        # An invite in an open circle means nothing: refused, never stored.
        for i in range(FLOOD):
            data = invite(open_circle, alice.identity, carol, created=now + i)
            assert feed(alice, open_circle, data) is Verdict.REJECT
        assert rows(alice, open_circle) == 1
    await bounded_after_restart(tmp_path, network, closed, total)
    await bounded_after_restart(tmp_path, network, open_circle, 1)


# ------------------------------------------------------------------ proofs


async def test_proofs_of_one_offender_differing_only_in_created_keep_one(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(seed=4)
    mallory = ident(66)
    async with running(tmp_path, network) as alice:
        circle = await found(alice)
        now = alice.now()
        first = protocol.decode(pledge(circle, mallory, created=now, q=2))
        second = protocol.decode(pledge(circle, mallory, created=now, q=3))
        base = make_proof(first, second)
        reporters = [ident(400 + i) for i in range(4)]
        for i in range(FLOOD):
            proof = protocol.Misbehaviour(
                offender=base.offender, first=base.first, second=base.second, created=now + i
            )
            assert feed(alice, circle, seal(proof, reporters[i % 4])) is Verdict.ACCEPT
        assert len(stored_ids(alice, circle, "misbehaviour")) == caps.PROOFS_PER_OFFENDER
        assert mallory.public_key in alice.circle(circle).equivocators()
        total = 1 + caps.PROOFS_PER_OFFENDER
        assert rows(alice, circle) == total
    await bounded_after_restart(tmp_path, network, circle, total)


# ----------------------------------------------------------------- pledges


async def test_pledges_of_one_key_keep_only_the_window_of_seqs(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(seed=5)
    bob = ident(2)
    async with running(tmp_path, network) as alice:
        circle = await found(alice)
        now = alice.now()
        sent = [pledge(circle, bob, seq=s, created=now + s) for s in range(1, FLOOD + 1)]
        for data in sent:
            assert feed(alice, circle, data) is Verdict.ACCEPT
        held = stored_ids(alice, circle, "pledge")
        newest = sent[-caps.PLEDGE_SEQS_PER_KEY :]
        assert held == {protocol.envelope_id(d) for d in newest}
        live = alice.circle(circle).live_pledges()[bob.public_key]
        assert live.id == protocol.envelope_id(sent[-1])
        total = 1 + caps.PLEDGE_SEQS_PER_KEY
        assert rows(alice, circle) == total
    await bounded_after_restart(tmp_path, network, circle, total)


async def test_pledges_from_many_keys_keep_the_circle_s_key_cap(
    tmp_path: Path, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(caps, "PLEDGING_KEYS_PER_CIRCLE", 8)
    network = MemoryNetwork(seed=6)
    async with running(tmp_path, network) as alice:
        circle = await found(alice)
        now = alice.now()
        for i in range(FLOOD):
            feed(alice, circle, pledge(circle, ident(500 + i), created=now))
        assert len(alice.circle(circle).live_pledges()) == 8
        total = 1 + 8
        assert rows(alice, circle) == total
    await bounded_after_restart(tmp_path, network, circle, total)


# ------------------------------------------------------------------ offers


async def test_offers_of_one_vendor_keep_one_and_vendors_their_cap(
    tmp_path: Path, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(caps, "VENDORS_PER_CIRCLE", 3)
    network = MemoryNetwork(seed=7)
    vendor = ident(7)
    async with running(tmp_path, network) as alice:
        circle = await found(alice)
        now = alice.now()
        sent = [offer(circle, vendor, created=now + i) for i in range(FLOOD)]
        for data in sent:
            assert feed(alice, circle, data) is Verdict.ACCEPT
        assert stored_ids(alice, circle, "offer") == {protocol.envelope_id(sent[-1])}
        assert rows(alice, circle) == 1 + caps.OFFERS_PER_KEY
        for i in range(10):
            feed(alice, circle, offer(circle, ident(600 + i), created=now))
        total = 1 + caps.VENDORS_PER_CIRCLE * caps.OFFERS_PER_KEY
        assert rows(alice, circle) == total
    await bounded_after_restart(tmp_path, network, circle, total)


# ---------------------------------------------------------------- the lock


async def test_a_deal_s_pledge_outlives_the_member_s_newer_pledges_and_restarts(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(seed=8, latency=0.01)
    async with (
        running(tmp_path, network) as alice,
        running(tmp_path, network, 7, "vendor", auto_countersign=True) as vendor,
    ):
        await vendor.connect(alice.addresses()[0])
        circle = await found(alice)
        with trio.fail_after(120):
            await vendor.wait_until(lambda: circle in vendor.circles())
            await vendor.join(circle)
            sold = await vendor.offer(
                circle, product="Olive oil", tiers=[(10, 400)], capacity=100, valid_until=DEADLINE
            )
            await alice.wait_until(lambda: alice.log_entry(sold.id) is not None)
            bound = await alice.pledge(circle, 10, max_price=500)
            await alice.wait_until(lambda: alice.circle(circle).deal is not None)
        state = alice.circle(circle)
        assert state.status is protocol.CircleStatus.CLOSED
        # The member (another device of hers, or her key stolen) signs newer pledges.
        now = alice.now()
        later = [
            pledge(circle, alice.identity, seq=s, created=now, q=1)
            for s in range(2, caps.PLEDGE_SEQS_PER_KEY + 5)
        ]
        for data in later:
            assert feed(alice, circle, data) is Verdict.ACCEPT
        state = alice.circle(circle)
        assert state.status is protocol.CircleStatus.CLOSED
        held = stored_ids(alice, circle, "pledge")
        assert bound.id in held
        assert held - {bound.id} == {
            protocol.envelope_id(d) for d in later[-caps.PLEDGE_SEQS_PER_KEY :]
        }
        count = rows(alice, circle)
        digest = state.digest()
    async with running(tmp_path, network) as alice:
        assert rows(alice, circle) == count
        state = alice.circle(circle)
        assert state.status is protocol.CircleStatus.CLOSED
        assert state.digest() == digest
        assert alice.log_entry(bound.id) is not None


# ---------------------------------------------------------- real libp2p


async def test_an_rfq_flood_over_libp2p_leaves_a_bounded_log_on_every_node(
    tmp_path: Path,
) -> None:
    """Throwaway keys gossip requests on a circle's topic; the founder's request,
    sent last, is kept; both nodes keep the same capped set, and restart with it."""
    options: dict[str, Any] = {"sync_interval": 1.0}
    async with (
        Node(ident(1), tmp_path / "alice", **options) as alice,
        Node(ident(66), tmp_path / "mallory", **options) as mallory,
    ):
        with trio.fail_after(60):
            await mallory.connect(alice.addresses()[0])
            circle = await found(alice)
            await mallory.wait_until(lambda: circle in mallory.circles())
            await mallory.join(circle)
            now = alice.now()
            flood = [rfq(circle, ident(700 + i), created=now) for i in range(FLOOD)]
            for data in flood:
                await mallory.transport.publish(circle_topic(circle), data)
            ours = await alice_rfq(alice, circle)
            kept = capped(circle, [ours], flood)
            for node in (alice, mallory):
                await node.wait_until(
                    lambda n=node: stored_ids(n, circle, "rfq") == kept  # type: ignore[misc]
                )
        total = 1 + caps.RFQ_SIGNERS_PER_CIRCLE
        assert rows(alice, circle) == rows(mallory, circle) == total
    async with Node(ident(1), tmp_path / "alice") as alice:
        assert rows(alice, circle) == total
        assert stored_ids(alice, circle, "rfq") == kept


async def alice_rfq(alice: Node, circle: bytes) -> bytes:
    data = rfq(circle, alice.identity, created=alice.now())
    await alice.transport.publish(circle_topic(circle), data)
    return data
