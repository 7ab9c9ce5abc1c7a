"""Haggling over the network: the vendor desk, the circle's negotiator, reverse auctions.

Most tests run on the in-memory network in virtual time; the last ones run on
real py-libp2p hosts on 127.0.0.1.
"""

from __future__ import annotations

import ast
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import circles
import protocol
from circles import (
    MemoryNetwork,
    NegotiationOutcome,
    Node,
    TakeItOrLeaveIt,
    TimeDependent,
    VendorDesk,
    auction_result,
    negotiate,
    quote_requests,
    request_quotes,
    reverse_auction,
)
from circles._haggle import (
    MAX_MOVE_SIZE,
    HaggleError,
    Reply,
    decode_reply,
    decode_request,
    encode_request,
)
from circles._topics import NEGOTIATE_PROTOCOL
from circles._transport import RequestFailed, Transport, peer_id_of
from protocol import Agreement, Ended, NegotiationState, envelope_id

EPOCH = 1_800_000_000


def ident(n: int) -> protocol.Identity:
    return protocol.Identity.from_seed(bytes([n]) * 32)


@contextlib.asynccontextmanager
async def memory_nodes(
    tmp_path: Path, network: MemoryNetwork, members: int, vendors: int
) -> AsyncIterator[list[Node]]:
    """``members`` member nodes then ``vendors`` vendor nodes (auto-countersigning), linked."""
    clock = lambda: EPOCH + trio.current_time()  # noqa: E731
    async with contextlib.AsyncExitStack() as stack:
        started: list[Node] = []
        for i in range(members + vendors):
            node = Node(
                ident(i + 1),
                tmp_path / f"n{i}",
                transport=network.open_transport,
                clock=clock,
                sync_interval=2.0,
                auto_countersign=i >= members,
                memory_store=True,
            )
            started.append(await stack.enter_async_context(node))
        for node in started[1:]:
            await node.connect(started[0].addresses()[0])
        for vendor in started[members:]:
            for member in started[1:members]:
                await vendor.connect(member.addresses()[0])
        yield started


async def circle_with_pledges(
    nodes: list[Node], pledges: list[tuple[int, int]], *, target: int = 10
) -> bytes:
    """Node 0 founds a circle, every node joins, the first len(pledges) nodes pledge."""
    founder = nodes[0]
    circle = await founder.found_circle(
        title="Olive oil", unit="tin", target=target, currency="EUR", deadline=EPOCH + 7 * 86400
    )
    for node in nodes[1:]:
        await node.wait_until(lambda n=node: circle in n.circles())  # type: ignore[misc]
        await node.join(circle)
    for node, (quantity, price) in zip(nodes, pledges, strict=False):
        await node.pledge(circle, quantity, max_price=price)
    for node in nodes:
        await node.wait_until(
            lambda n=node: len(n.circle(circle).live_pledges()) == len(pledges)  # type: ignore[misc]
        )
    return circle


def prices(outcome: NegotiationOutcome) -> list[tuple[str, str, int]]:
    """(who, kind, unit price) of every priced move, in order."""
    out = []
    for data in outcome.transcript:
        envelope = protocol.decode(data)
        who = "vendor" if envelope.signer == outcome.vendor else "circle"
        message = envelope.message
        if isinstance(message, protocol.Offer):
            out.append((who, "offer", message.tiers[0].unit_price))
        elif isinstance(message, protocol.CounterOffer | protocol.Accept):
            out.append((who, message.kind, message.unit_price))
    return out


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


BOULWARE = TimeDependent(reservation=4000, initial=6000, e=0.3)


async def test_a_circle_negotiates_with_a_boulware_vendor_and_closes_a_deal(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(seed=1, latency=(0.01, 0.05))
    async with memory_nodes(tmp_path, network, 2, 1) as (alice, bob, vendor):
        circle = await circle_with_pledges([alice, bob], [(5, 5000), (5, 4800)])
        async with VendorDesk(vendor, strategy=BOULWARE) as desk:
            with trio.fail_after(600):
                outcome = await negotiate(
                    alice,
                    circle,
                    vendor.public_key,
                    strategy=TimeDependent(reservation=4800, initial=3000, e=1.0),
                    max_rounds=10,
                    pace=5.0,
                )
                assert isinstance(outcome.result, Agreement), outcome.result
                price = outcome.result.unit_price
                for node in (alice, bob, vendor):
                    await node.wait_until(
                        lambda n=node: n.circle(circle).deal is not None  # type: ignore[misc]
                    )
            stats = desk.statistics()
        assert 4000 <= price <= 4800
        assert outcome.refusal is None
        assert desk.agreements[0].unit_price == price
        assert desk.agreements[0].session == outcome.session
        assert stats.open_sessions == 0 and stats.errors == 0 and stats.refused == 0
        # The vendor started high and conceded; the circle never went past its pledges.
        moves = prices(outcome)
        assert moves[0] == ("vendor", "offer", 6000)
        assert all(p <= 4800 for who, _, p in moves if who == "circle")
        vendor_prices = [p for who, kind, p in moves if who == "vendor" and kind != "accept"]
        assert vendor_prices == sorted(vendor_prices, reverse=True) and len(vendor_prices) > 2
        deal = alice.circle(circle).deal
        assert deal.signer == vendor.public_key
        assert (deal.message.unit_price, deal.message.total) == (price, 10)
        # Both machines applied the same moves: the transcript verifies move by move.
        replay = protocol.Negotiation(
            outcome.transcript[0],
            vendor=vendor.public_key,
            mandate=protocol.Mandate.from_demand(((5000, 5), (4800, 5)), target=10),
        )
        for data in outcome.transcript[1:]:
            replay.receive(data, protocol.decode(data).message.created)  # type: ignore[attr-defined]
        assert isinstance(replay.result, Agreement) and replay.result.unit_price == price


async def test_the_circle_walks_away_rather_than_accept_what_its_pledges_no_longer_cover(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(seed=2, latency=0.01)
    async with memory_nodes(tmp_path, network, 2, 1) as (alice, bob, vendor):
        circle = await circle_with_pledges([alice, bob], [(5, 5000), (5, 5000)])
        async with VendorDesk(vendor, strategy=TakeItOrLeaveIt(reservation=4900)) as desk:

            async def withdraw_while_alice_thinks() -> None:
                await trio.sleep(5)
                await bob.withdraw(circle)

            with trio.fail_after(600):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(withdraw_while_alice_thinks)
                    # Alice's own limit takes 4900; once Bob leaves, the pledges cover nothing.
                    outcome = await negotiate(
                        alice,
                        circle,
                        vendor.public_key,
                        strategy=TakeItOrLeaveIt(reservation=5000),
                        pace=20.0,
                    )
                # The desk does not follow a circle it only negotiates with (it joins on
                # agreement), so the circle's own view shows Bob's withdrawal.
                await alice.wait_until(lambda: len(alice.circle(circle).live_pledges()) == 1)
            assert desk.statistics().open_sessions == 0
            assert desk.agreements == ()
        assert isinstance(outcome.result, Ended)
        assert outcome.result.state is NegotiationState.WALKED_AWAY
        assert outcome.result.by is protocol.Party.CIRCLE
        assert "outside-mandate" in outcome.result.reason
        assert not any(protocol.decode(d).kind == "accept" for d in outcome.transcript)
        assert alice.circle(circle).deal is None


async def test_a_reverse_auction_among_three_vendors_picks_one_winner_on_every_member(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(seed=3, latency=(0.01, 0.2))
    async with memory_nodes(tmp_path, network, 3, 3) as nodes:
        members, vendors = nodes[:3], nodes[3:]
        circle = await circle_with_pledges(nodes, [(4, 5000), (3, 5000), (3, 4800)])
        asks = [4500, 4300, 4400]
        async with contextlib.AsyncExitStack() as stack:
            for vendor, ask in zip(vendors, asks, strict=True):
                strategy = TakeItOrLeaveIt(reservation=ask - 200, price=ask)
                await stack.enter_async_context(VendorDesk(vendor, strategy=strategy))
            with trio.fail_after(600):
                auction = await reverse_auction(members[0], circle, respond_within=30)
                # The winner's offer is an ordinary offer: the circle closes its deal.
                for node in nodes:
                    await node.wait_until(
                        lambda n=node: n.circle(circle).deal is not None  # type: ignore[misc]
                    )
                results = []
                for node in nodes:
                    (rfq,) = quote_requests(node, circle)
                    assert rfq == auction.rfq
                    results.append(auction_result(node, circle, rfq))
        winner = auction.result.winner
        assert winner is not None and winner.vendor == vendors[1].public_key
        assert winner.clearing_price == 4300
        assert [b.vendor for b in auction.result.ranking] == [
            vendors[1].public_key,
            vendors[2].public_key,
            vendors[0].public_key,
        ]
        # The auctioneer ranked every sealed bid; the others see the winner's offer alone.
        assert results[0] == auction.result
        assert len(auction.bids) == 3
        for result in results[1:]:
            assert result.winner == winner and result.ranking == (winner,)
        deal = members[2].circle(circle).deal
        assert deal.signer == vendors[1].public_key and deal.message.unit_price == 4300


async def ask(transport: Transport, vendor: bytes, frame: bytes) -> Reply:
    data = await transport.request(
        peer_id_of(vendor), NEGOTIATE_PROTOCOL, frame, timeout=10, max_response=MAX_MOVE_SIZE
    )
    return decode_reply(data)


def rfq_for(
    identity: protocol.Identity, circle: bytes, vendor: bytes, now: int, **fields: object
) -> bytes:
    body = {
        "circle": circle,
        "vendor": vendor,
        "product": "Olive oil",
        "quantity": 10,
        "currency": "EUR",
        "respond_by": now + 60,
        "deadline": now + 600,
        "max_rounds": 10,
        "created": now,
    }
    body.update(fields)
    return protocol.seal(protocol.QuoteRequest(**body), identity).data  # type: ignore[arg-type]


async def test_a_hostile_peer_gets_refusals_and_the_desk_keeps_serving(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(seed=4, latency=0.01)
    async with memory_nodes(tmp_path, network, 2, 1) as (alice, bob, vendor):
        circle = await circle_with_pledges([alice, bob], [(5, 5000), (5, 4800)])
        mallory = ident(66)
        async with (
            VendorDesk(vendor, strategy=BOULWARE, max_sessions_per_peer=2) as desk,
            network.open_transport(mallory) as raw,
        ):
            await raw.connect(vendor.addresses()[0])
            v = vendor.public_key
            now = vendor.now()
            reasons = []
            with trio.fail_after(60):
                # Garbage of every shape.
                for frame in (
                    b"",
                    b"\xc1",
                    b"garbage" * 100,
                    encode_request(b"\x00" * 32, b"not an envelope"),
                    protocol.seal(
                        protocol.WalkAway(
                            circle=circle, session=b"\x01" * 32, reason="", created=now
                        ),
                        mallory,
                    ).data,
                ):
                    reasons.append((await ask(raw, v, frame)).reason)
                # Alice's request replayed by Mallory: Mallory is not its signer.
                stolen = rfq_for(alice.identity, circle, v, now)
                reasons.append(
                    (await ask(raw, v, encode_request(envelope_id(stolen), stolen))).reason
                )
                # Mallory's own session, then moves out of turn and off the table.
                mine = rfq_for(mallory, circle, v, now)
                session = envelope_id(mine)
                first = await ask(raw, v, encode_request(session, mine))
                assert first.kind == "move" and first.move is not None
                assert (await ask(raw, v, encode_request(session, mine))) == first  # a retry
                junk = await ask(raw, v, encode_request(session, b"not an envelope"))
                reasons.append(junk.reason)
                offer_id = envelope_id(first.move)
                off_turn = protocol.Offer(
                    circle=circle,
                    product="x",
                    currency="EUR",
                    list_price=1,
                    tiers=(protocol.Tier(min_quantity=1, unit_price=1),),
                    capacity=10,
                    valid_until=now + 600,
                    terms="",
                    loyalty=(),
                    in_reply_to=offer_id,
                    created=now,
                )
                wrong_round = protocol.CounterOffer(
                    circle=circle,
                    in_reply_to=offer_id,
                    round=5,
                    unit_price=100,
                    quantity=10,
                    currency="EUR",
                    valid_until=now + 600,
                    created=now,
                )
                cheap_accept = protocol.Accept(
                    circle=circle,
                    accepted=offer_id,
                    unit_price=1,
                    quantity=10,
                    currency="EUR",
                    created=now,
                )
                for body in (off_turn, wrong_round, cheap_accept):
                    move = protocol.seal(body, mallory).data
                    reasons.append((await ask(raw, v, encode_request(session, move))).reason)
                # Mallory's moves in Alice's name are not Mallory's to make.
                forged = protocol.seal(wrong_round, alice.identity).data
                reasons.append((await ask(raw, v, encode_request(session, forged))).reason)
                # A second and a third session: the per-peer limit holds.
                second = rfq_for(mallory, circle, v, now, product="more")
                assert (
                    await ask(raw, v, encode_request(envelope_id(second), second))
                ).kind == "move"
                third = rfq_for(mallory, circle, v, now, product="even more")
                reasons.append(
                    (await ask(raw, v, encode_request(envelope_id(third), third))).reason
                )
                # A frame over the size limit is cut off by the transport, unread.
                with pytest.raises(RequestFailed):
                    await raw.request(
                        peer_id_of(v), NEGOTIATE_PROTOCOL, b"\x00" * 100_000, timeout=10
                    )
                # Meanwhile Alice negotiates as if nothing happened.
                outcome = await negotiate(
                    alice,
                    circle,
                    v,
                    strategy=TimeDependent(reservation=4800, initial=3000, e=1.0),
                    pace=5.0,
                )
            stats = desk.statistics()
        assert reasons == [
            "garbage",
            "garbage",
            "garbage",
            "wrong-session",
            "garbage",
            "not-a-party",
            "trailing-bytes",
            "out-of-turn",
            "mismatch",
            "mismatch",
            "not-a-party",
            "busy",
        ]
        assert isinstance(outcome.result, Agreement)
        assert stats.errors == 0 and stats.refused == len(reasons)
        assert stats.open_sessions == 2  # Mallory's two, until their deadline


async def test_ended_sessions_are_forgotten_and_a_retried_last_move_gets_the_same_answer(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(seed=5, latency=0.01)
    async with memory_nodes(tmp_path, network, 1, 1) as (alice, vendor):
        circle = await circle_with_pledges([alice], [(10, 5000)])
        async with VendorDesk(vendor, strategy=TakeItOrLeaveIt(reservation=4500)) as desk:
            with trio.fail_after(1200):
                outcome = await negotiate(
                    alice, circle, vendor.public_key, strategy=TakeItOrLeaveIt(reservation=5000)
                )
                assert isinstance(outcome.result, Agreement)
                assert desk.statistics().open_sessions == 0
                last = outcome.transcript[-1]
                frame = encode_request(outcome.session, last)
                again = await ask(alice.transport, vendor.public_key, frame)
                assert again == Reply(kind="over", state="agreed")
                # Any other move for the forgotten session is refused.
                walk = protocol.seal(
                    protocol.WalkAway(
                        circle=circle, session=outcome.session, reason="", created=alice.now()
                    ),
                    alice.identity,
                ).data
                late = await ask(
                    alice.transport, vendor.public_key, encode_request(outcome.session, walk)
                )
                assert late.reason == "session-over"
                # A session nobody finishes is forgotten at its deadline.
                quiet = rfq_for(alice.identity, circle, vendor.public_key, alice.now(), product="q")
                reply = await ask(
                    alice.transport, vendor.public_key, encode_request(envelope_id(quiet), quiet)
                )
                assert reply.kind == "move"
                assert desk.statistics().open_sessions == 1
                await trio.sleep(700)
                assert desk.statistics().open_sessions == 0


async def test_over_libp2p_a_circle_negotiates_and_closes_a_deal_and_an_auction_agrees(
    tmp_path: Path,
) -> None:
    """Real py-libp2p hosts on 127.0.0.1, real time: a negotiation, then an auction."""
    with trio.fail_after(120):
        async with contextlib.AsyncExitStack() as stack:
            alice, bob, vendor, rival = [
                await stack.enter_async_context(
                    Node(
                        ident(10 + i),
                        tmp_path / f"p2p{i}",
                        sync_interval=1.0,
                        auto_countersign=i >= 2,
                    )
                )
                for i in range(4)
            ]
            for node in (bob, vendor, rival):
                await node.connect(alice.addresses()[0])
            await vendor.connect(bob.addresses()[0])
            await rival.connect(bob.addresses()[0])
            circle = await alice.found_circle(
                title="Olive oil",
                unit="tin",
                target=10,
                currency="EUR",
                deadline=alice.now() + 3600,
            )
            for node in (bob, vendor, rival):
                await node.join(circle)
            await alice.pledge(circle, 5, max_price=5000)
            await bob.pledge(circle, 5, max_price=4800)
            for node in (alice, bob):
                await node.wait_until(
                    lambda n=node: len(n.circle(circle).live_pledges()) == 2  # type: ignore[misc]
                )
            desk = await stack.enter_async_context(VendorDesk(vendor, strategy=BOULWARE))
            await stack.enter_async_context(
                VendorDesk(rival, strategy=TakeItOrLeaveIt(reservation=4700))
            )
            outcome = await negotiate(
                alice,
                circle,
                vendor.public_key,
                strategy=TimeDependent(reservation=4800, initial=3000, e=1.0),
                max_rounds=6,
            )
            assert isinstance(outcome.result, Agreement), outcome.result
            for node in (alice, bob, vendor):
                await node.wait_until(
                    lambda n=node: n.circle(circle).deal is not None  # type: ignore[misc]
                )
            deal = bob.circle(circle).deal
            assert deal.signer == vendor.public_key
            assert deal.message.unit_price == outcome.result.unit_price
            assert desk.statistics().errors == 0
            # A reverse auction on the same circle: both desks bid, both members agree.
            auction = await reverse_auction(alice, circle, respond_within=3, grace=1.0)
            await bob.wait_until(lambda: quote_requests(bob, circle) != [])
            assert auction.result.winner is not None
            winner = auction.result.winner.offer
            # Only the winner's bid was published: Bob ranks it alone, the same winner.
            await bob.wait_until(lambda: bob.log_entry(winner) is not None)
            ranked = auction_result(bob, circle, auction.rfq)
            assert ranked.winner == auction.result.winner and len(ranked.ranking) == 1
            # Both desks bid; the Boulware desk's opening 6000 is above what the pledges clear.
            assert [b.vendor for b in auction.result.ranking] == [rival.public_key]
            assert [reason for _, reason in auction.result.refused] == ["does-not-clear"]


def test_the_documented_network_examples_name_real_api() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "haggling.md").read_text()
    section = text[text.index("## Negotiating over the network") :]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 2
    for block in blocks:
        tree = ast.parse(block, mode="exec", feature_version=(3, 11), type_comments=False)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "circles":
                for alias in node.names:
                    assert alias.name in circles.__all__, alias.name
    for name in ("reverse_auction", "auction_result", "quote_requests", "mandate_of"):
        assert f"{name}(" in section and name in circles.__all__


@given(st.binary(max_size=200) | st.lists(st.binary(max_size=40), max_size=5).map(b"".join))
def test_frame_decoders_refuse_any_bytes_with_a_haggle_error(data: bytes) -> None:
    for decoder in (decode_request, decode_reply):
        try:
            decoder(data)
        except HaggleError as exc:
            assert exc.reason == "garbage"


@given(st.binary(min_size=32, max_size=32), st.binary(max_size=MAX_MOVE_SIZE - 64))
def test_request_frames_round_trip(session: bytes, move: bytes) -> None:
    assert decode_request(encode_request(session, move)) == (session, move)


async def test_a_vendor_without_a_desk_or_that_declines_ends_the_session_cleanly(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(seed=6, latency=0.01)
    async with memory_nodes(tmp_path, network, 1, 1) as (alice, vendor):
        circle = await circle_with_pledges([alice], [(10, 5000)])
        strategy = TakeItOrLeaveIt(reservation=5000)
        with trio.fail_after(600):
            silent = await negotiate(alice, circle, vendor.public_key, strategy=strategy)
            asked: list[bytes] = []

            def decline(rfq: protocol.Envelope[protocol.QuoteRequest]) -> None:
                asked.append(rfq.id)

            async with VendorDesk(vendor, strategy_for=decline) as desk:
                declined = await negotiate(alice, circle, vendor.public_key, strategy=strategy)
                assert desk.statistics().open_sessions == 0
            stranger = ident(99).public_key
            unknown = await negotiate(alice, circle, stranger, strategy=strategy)
        assert isinstance(silent.result, Ended)
        assert silent.result.state is NegotiationState.WALKED_AWAY
        assert "unsupported" in silent.result.reason
        assert isinstance(declined.result, Ended)
        assert declined.result.state is NegotiationState.REJECTED
        assert declined.result.by is protocol.Party.VENDOR
        assert asked == [declined.session]
        assert isinstance(unknown.result, Ended) and "unreachable" in unknown.result.reason
        with pytest.raises(circles.HaggleError):
            VendorDesk(vendor, strategy=strategy, strategy_for=decline)
        with pytest.raises(circles.HaggleError):
            await negotiate(alice, circle, b"short", strategy=strategy)


async def test_a_desk_bids_on_a_few_open_auctions_per_signer_only(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(seed=7, latency=0.01)
    async with memory_nodes(tmp_path, network, 1, 1) as (alice, vendor):
        # One circle's log keeps one open request per key (RFQS_PER_KEY): four
        # auctions at once by one signer run in four circles.
        circles = [await circle_with_pledges([alice, vendor], [(10, 5000)]) for _ in range(4)]
        strategy = TakeItOrLeaveIt(reservation=4000, price=4500)
        async with VendorDesk(vendor, strategy=strategy, max_sessions_per_peer=2) as desk:
            with trio.fail_after(600):
                for n, circle in enumerate(circles):
                    await request_quotes(alice, circle, respond_within=30, product=f"lot {n}")
                await vendor.wait_until(
                    lambda: all(len(quote_requests(vendor, c)) == 1 for c in circles)
                )
                await trio.sleep(5)
                assert desk.statistics().bids == 2
                # Once those auctions close, the same signer may run new ones.
                await trio.sleep(40)
                await request_quotes(alice, circles[0], respond_within=30, product="lot 5")
                await trio.sleep(5)
                assert desk.statistics().bids == 3
