"""Reverse auctions over the network: a delayed cheaper bid still wins.

The race these tests pin down: bids used to be ordinary offers published on
the circle's topic at ``respond_by``, and a circle whose pledges clear an
offer assembles its certificate ``assemble_delay`` after the offer arrives.
A cheaper bid whose link was slower than that lost to a dearer bid that had
already closed a deal. The vendors here bid through a real transport whose
uplink is slow (every request and publication it makes takes longer), on the
in-memory network in virtual time and on py-libp2p hosts on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import gc
import time
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import protocol
from circles import (
    MemoryNetwork,
    Node,
    TakeItOrLeaveIt,
    VendorDesk,
    auction_result,
    request_quotes,
    reverse_auction,
)
from circles._haggle import (
    AUCTION_PROTOCOL,
    MAX_MOVE_SIZE,
    HaggleError,
    Reply,
    decode_bid,
    decode_bid_reply,
    decode_reply,
    encode_bid,
    encode_reply_move,
    encode_request,
    encode_taken,
)
from circles._haggle_auction import MAX_BIDS, held_bids, house_of
from circles._transport import (
    DEFAULT_MAX_RESPONSE,
    PeerId,
    RequestFailed,
    Transport,
    peer_id_of,
)

from .test_haggle import EPOCH, circle_with_pledges, ident


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class SlowUplink:
    """A real transport whose own requests and publications leave ``delay`` seconds late.

    It records, for every request, when it was sent and when it left the slow
    link (both on the node's clock), so a test can show a bid was in flight at
    a given time. Everything else is the wrapped transport's.
    """

    def __init__(self, inner: Transport, delay: float, clock: Callable[[], float]) -> None:
        self._inner = inner
        self._delay = delay
        self._clock = clock
        self.requests: list[tuple[str, float, float]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def publish(self, topic: str, data: bytes) -> None:
        await trio.sleep(self._delay)
        await self._inner.publish(topic, data)

    async def request(
        self,
        peer: PeerId,
        protocol_id: str,
        data: bytes,
        *,
        timeout: float,
        max_response: int = DEFAULT_MAX_RESPONSE,
    ) -> bytes:
        sent = self._clock()
        deadline = trio.current_time() + timeout
        # The slow link counts against the caller's timeout, as a real one would.
        with trio.move_on_at(deadline):
            await trio.sleep(self._delay)
            self.requests.append((protocol_id, sent, self._clock()))
            return await self._inner.request(
                peer,
                protocol_id,
                data,
                timeout=max(0.001, deadline - trio.current_time()),
                max_response=max_response,
            )
        raise RequestFailed(f"{peer} did not answer in {timeout} s", reason="timeout")


def slow(
    opener: Callable[[protocol.Identity], contextlib.AbstractAsyncContextManager[Transport]],
    delay: float,
    clock: Callable[[], float],
    links: list[SlowUplink],
) -> Callable[[protocol.Identity], contextlib.AbstractAsyncContextManager[Transport]]:
    @contextlib.asynccontextmanager
    async def open_slow(identity: protocol.Identity) -> AsyncIterator[Transport]:
        async with opener(identity) as inner:
            link = SlowUplink(inner, delay, clock)
            links.append(link)
            yield link  # type: ignore[misc]

    return open_slow


def virtual_clock() -> float:
    return EPOCH + trio.current_time()


@contextlib.asynccontextmanager
async def auction_nodes(
    tmp_path: Path, network: MemoryNetwork, members: int, delays: list[float]
) -> AsyncIterator[tuple[list[Node], list[SlowUplink]]]:
    """``members`` member nodes, then one vendor node per entry of ``delays`` (its uplink delay).

    Every node links to the first member (the auctioneer) and the vendors to
    every member; vendors countersign automatically.
    """
    links: list[SlowUplink] = []
    async with contextlib.AsyncExitStack() as stack:
        nodes: list[Node] = []
        for i in range(members + len(delays)):
            opener = network.open_transport
            if i >= members and delays[i - members] > 0:
                opener = slow(opener, delays[i - members], virtual_clock, links)  # type: ignore[assignment]
            node = Node(
                ident(40 + i),
                tmp_path / f"a{i}",
                transport=opener,
                clock=virtual_clock,
                sync_interval=2.0,
                auto_countersign=i >= members,
                memory_store=True,
            )
            nodes.append(await stack.enter_async_context(node))
        for node in nodes[1:]:
            await node.connect(nodes[0].addresses()[0])
        for vendor in nodes[members:]:
            for member in nodes[1:members]:
                await vendor.connect(member.addresses()[0])
        yield nodes, links


def offers_in(node: Node, circle: bytes) -> list[protocol.Envelope[protocol.Offer]]:
    return [e for e in node.envelopes(circle) if isinstance(e.message, protocol.Offer)]  # type: ignore[misc]


async def test_a_cheaper_bid_still_in_flight_at_the_close_wins_over_a_dearer_one(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """The cheap bid leaves before respond_by and lands after it, within the grace: it wins.

    A still cheaper bid that lands after the close is refused as "closed",
    and its vendor is told so.
    """
    network = MemoryNetwork(seed=11, latency=(0.01, 0.05))
    delays = [0.0, 2.5, 0.0, 8.0]
    async with auction_nodes(tmp_path, network, 2, delays) as (nodes, links):
        alice, _bob, dear, cheap, dearest, late = nodes
        circle = await circle_with_pledges(nodes, [(5, 5000), (5, 5000)])
        async with contextlib.AsyncExitStack() as stack:
            desks = [
                await stack.enter_async_context(
                    VendorDesk(vendor, strategy=TakeItOrLeaveIt(reservation=price, price=price))
                )
                for vendor, price in ((dear, 4600), (cheap, 4300), (dearest, 4800), (late, 4000))
            ]
            with trio.fail_after(120):
                auction = await reverse_auction(alice, circle, respond_within=2, grace=3.0)
                for node in nodes:
                    await node.wait_until(
                        lambda n=node: n.circle(circle).deal is not None  # type: ignore[misc]
                    )
                # Let anything still travelling arrive: the deal must not change.
                await trio.sleep(30)
            stats = [desk.statistics() for desk in desks]
            refusals = [desk.bid_refusals for desk in desks]
        winner = auction.result.winner
        assert winner is not None and winner.vendor == cheap.public_key
        for node in nodes:
            deal = node.circle(circle).deal
            assert (deal.signer, deal.message.unit_price) == (cheap.public_key, 4300)
            # Only the winning bid ever reached the circle's topic: nothing dearer to certify.
            assert [e.id for e in offers_in(node, circle)] == [winner.offer]
            assert {c.message.offer for c in node.certificates(circle)} == {winner.offer}
        assert [b.clearing_price for b in auction.result.ranking] == [4300, 4600, 4800]
        assert len(auction.bids) == 3
        # The cheap bid was sent before respond_by and was still on its way then;
        # the late one landed after the close.
        request = protocol.decode_as(auction.rfq, protocol.QuoteRequest).message
        closes_at = request.respond_by + 3
        (cheap_bid,), (late_bid,) = (
            [r for r in link.requests if "auction" in r[0]] for link in links
        )
        assert cheap_bid[1] < request.respond_by < cheap_bid[2] < closes_at
        assert late_bid[1] < request.respond_by and late_bid[2] > closes_at
        assert [(s.bids, s.bids_refused) for s in stats] == [(1, 0), (1, 0), (1, 0), (1, 1)]
        assert list(refusals[3].values()) == ["closed"] and refusals[:3] == [{}, {}, {}]


def bid_for(
    identity: protocol.Identity, rfq: bytes, price: int, now: int, **fields: object
) -> bytes:
    request = protocol.decode_as(rfq, protocol.QuoteRequest)
    body: dict[str, object] = {
        "circle": request.message.circle,
        "product": "Olive oil",
        "currency": "EUR",
        "list_price": price,
        "tiers": (protocol.Tier(min_quantity=1, unit_price=price),),
        "capacity": 10,
        "valid_until": now + 3600,
        "terms": "",
        "loyalty": (),
        "in_reply_to": request.id,
        "created": now,
    }
    body.update(fields)
    return protocol.seal(protocol.Offer(**body), identity).data  # type: ignore[arg-type]


async def test_the_auctioneer_takes_one_own_bid_per_vendor_until_the_close_and_refuses_the_rest(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(seed=12, latency=0.01)
    async with auction_nodes(tmp_path, network, 1, []) as (nodes, _):
        (alice,) = nodes
        circle = await circle_with_pledges(nodes, [(10, 5000)])
        mallory, vendor = ident(66), ident(67)
        async with (
            network.open_transport(mallory) as raw,
            network.open_transport(vendor) as honest,
        ):
            for transport in (raw, honest):
                await transport.connect(alice.addresses()[0])

            async def send(transport: Transport, frame: bytes) -> Reply:
                data = await transport.request(
                    peer_id_of(alice.public_key), AUCTION_PROTOCOL, frame, timeout=10
                )
                return decode_bid_reply(data)

            with trio.fail_after(120):
                # No auction yet: the node does not serve bids at all.
                with pytest.raises(RequestFailed) as unserved:
                    await send(raw, encode_bid(b"x"))
                assert unserved.value.reason == "unsupported"
                rfq = await request_quotes(alice, circle, respond_within=10, grace=3.0)
                request = protocol.decode_as(rfq, protocol.QuoteRequest).message
                now = alice.now()
                good = bid_for(vendor, rfq, 4500, now)
                reasons = []
                for transport, frame in (
                    (raw, b""),
                    (raw, b"\xc1"),
                    (raw, encode_bid(b"not an envelope")),
                    (raw, encode_request(b"\x00" * 32, good)),  # a negotiation frame
                    (raw, encode_bid(good)),  # someone else's bid
                    (raw, encode_bid(bid_for(mallory, rfq, 1, now, in_reply_to=b"\x01" * 32))),
                    (raw, encode_bid(bid_for(mallory, rfq, 1, now, created=request.respond_by))),
                    (
                        raw,
                        encode_bid(bid_for(mallory, rfq, 1, now, valid_until=request.respond_by)),
                    ),
                    (raw, encode_bid(bid_for(mallory, rfq, 1, now, currency="USD"))),
                ):
                    reply = await send(transport, frame)
                    assert reply.kind == "refused", reply
                    reasons.append(reply.reason)
                assert reasons == [
                    "garbage",
                    "garbage",
                    "trailing-bytes",
                    "garbage",
                    "not-a-party",
                    "unknown-auction",
                    "too-late",
                    "lapsed",
                    "wrong-request",
                ]
                # One sealed bid per vendor; a retry of it is answered the same.
                assert (await send(honest, encode_bid(good))).kind == "taken"
                assert (await send(honest, encode_bid(good))).kind == "taken"
                second = await send(honest, encode_bid(bid_for(vendor, rfq, 4400, now)))
                assert second.reason == "already-bid"
                # Opening the same request again keeps its close and its bids.
                assert house_of(alice).open(rfq, grace=9.0) == request.respond_by + 3
                assert held_bids(alice, protocol.envelope_id(rfq)) == (good,)
                # Signed before respond_by, arriving during the grace: taken.
                signed = alice.now()
                await trio.sleep(request.respond_by - alice.now() + 1)
                assert request.respond_by <= alice.now() < request.respond_by + 3
                in_flight = bid_for(mallory, rfq, 4450, signed)
                assert (await send(raw, encode_bid(in_flight))).kind == "taken"
                with pytest.raises(protocol.AuctionError) as early:
                    auction_result(alice, circle, rfq)
                assert early.value.reason == "still-open"
                # After the close nothing more is taken.
                await trio.sleep(3)
                after = bid_for(ident(68), rfq, 4000, signed)
                async with network.open_transport(ident(68)) as third:
                    await third.connect(alice.addresses()[0])
                    assert (await send(third, encode_bid(after))).reason == "closed"
                # A retry of a bid taken before the close is still answered "taken".
                assert (await send(honest, encode_bid(good))).kind == "taken"
                result = auction_result(alice, circle, rfq)
        assert [b.clearing_price for b in result.ranking] == [4450, 4500]
        assert [b.vendor for b in result.ranking] == [mallory.public_key, vendor.public_key]
        # Nothing of it reached the circle's topic: the bids are sealed.
        assert offers_in(alice, circle) == []


@given(st.binary(max_size=200) | st.lists(st.binary(max_size=40), max_size=5).map(b"".join))
def test_auction_frame_decoders_refuse_any_bytes_with_a_haggle_error(data: bytes) -> None:
    for decoder in (decode_bid, decode_bid_reply):
        try:
            decoder(data)
        except HaggleError as exc:
            assert exc.reason == "garbage"


@given(st.binary(max_size=MAX_MOVE_SIZE - 64))
def test_auction_frames_round_trip_and_stay_apart_from_negotiation_frames(offer: bytes) -> None:
    assert decode_bid(encode_bid(offer)) == offer
    assert decode_bid_reply(encode_taken()) == Reply(kind="taken")
    # A negotiation reply is no auction reply, and the other way round.
    for frame, decoder in (
        (encode_reply_move(offer), decode_bid_reply),
        (encode_taken(), decode_reply),
    ):
        with pytest.raises(HaggleError):
            decoder(frame)


async def test_over_libp2p_a_cheaper_bid_on_a_slow_link_still_wins(tmp_path: Path) -> None:
    """Real py-libp2p hosts on 127.0.0.1, real time: the slow cheap bid lands in the grace."""
    from circles._libp2p import open_libp2p_transport

    links: list[SlowUplink] = []
    with trio.fail_after(120):
        async with contextlib.AsyncExitStack() as stack:
            nodes = [
                await stack.enter_async_context(
                    Node(
                        ident(50 + i),
                        tmp_path / f"p2p{i}",
                        transport=slow(open_libp2p_transport, 2.5, time.time, links)
                        if i == 3
                        else None,
                        sync_interval=1.0,
                        auto_countersign=i >= 2,
                    )
                )
                for i in range(4)
            ]
            alice, bob, dear, cheap = nodes
            for node in nodes[1:]:
                await node.connect(alice.addresses()[0])
            for vendor in (dear, cheap):
                await vendor.connect(bob.addresses()[0])
            circle = await alice.found_circle(
                title="Olive oil",
                unit="tin",
                target=10,
                currency="EUR",
                deadline=alice.now() + 3600,
            )
            for node in nodes[1:]:
                await node.join(circle)
            await alice.pledge(circle, 5, max_price=5000)
            await bob.pledge(circle, 5, max_price=5000)
            for node in nodes:
                await node.wait_until(
                    lambda n=node: len(n.circle(circle).live_pledges()) == 2  # type: ignore[misc]
                )
            for vendor, price in ((dear, 4600), (cheap, 4300)):
                strategy = TakeItOrLeaveIt(reservation=price, price=price)
                await stack.enter_async_context(VendorDesk(vendor, strategy=strategy))
            auction = await reverse_auction(alice, circle, respond_within=2, grace=3.0)
            for node in nodes:
                await node.wait_until(
                    lambda n=node: n.circle(circle).deal is not None  # type: ignore[misc]
                )
            # A dearer certificate would come assemble_delay after its offer: give it time.
            await trio.sleep(2)
            winner = auction.result.winner
            assert winner is not None and winner.vendor == cheap.public_key
            assert [b.clearing_price for b in auction.result.ranking] == [4300, 4600]
            for node in nodes:
                deal = node.circle(circle).deal
                assert (deal.signer, deal.message.unit_price) == (cheap.public_key, 4300)
                assert [e.id for e in offers_in(node, circle)] == [winner.offer]
                assert {c.message.offer for c in node.certificates(circle)} == {winner.offer}
            respond_by = protocol.decode_as(auction.rfq, protocol.QuoteRequest).message.respond_by
            (link,) = links
            ((_, sent, left),) = [r for r in link.requests if "auction" in r[0]]
            assert sent < respond_by < left < respond_by + 3


async def test_running_an_auction_does_not_keep_a_stopped_node_alive(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(seed=13, latency=0.01)
    async with auction_nodes(tmp_path, network, 1, []) as (nodes, _):
        circle = await circle_with_pledges(nodes, [(10, 5000)])
        with trio.fail_after(60):
            await request_quotes(nodes[0], circle, respond_within=5)
        gone = weakref.ref(nodes[0])
    del nodes
    gc.collect()
    assert gone() is None


async def test_a_desk_bids_no_more_than_its_capacity_and_a_stock_hook_desk_does_not_bid(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """A bid is an offer: it holds at most the desk's ``capacity`` units.

    A desk whose supply is decided per agreement (``capacity_for``) has nothing
    to judge a bid by, so it stays out of auctions rather than offer the lot.
    """
    network = MemoryNetwork(seed=13, latency=0.01)
    async with auction_nodes(tmp_path, network, 1, [0.0, 0.0]) as (nodes, _):
        alice, small, hooked = nodes
        circle = await circle_with_pledges(nodes, [(10, 5000)])
        asked: list[protocol.Agreement] = []

        def supply(agreement: protocol.Agreement) -> int:
            asked.append(agreement)
            return 100

        cheap = TakeItOrLeaveIt(reservation=4000)
        async with (
            VendorDesk(small, strategy=TakeItOrLeaveIt(reservation=4500), capacity=3) as a,
            VendorDesk(hooked, strategy=cheap, capacity_for=supply) as b,
        ):
            with trio.fail_after(120):
                auction = await reverse_auction(alice, circle, respond_within=2, grace=1.0)
        bids = [protocol.decode_as(bid, protocol.Offer) for bid in auction.bids]
        assert [(bid.signer, bid.message.capacity) for bid in bids] == [(small.public_key, 3)]
        assert a.statistics().bids == 1
        assert b.statistics().bids == 0
        assert asked == []


async def test_throwaway_keys_filling_the_book_cannot_keep_out_a_better_vendor(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """More than MAX_BIDS worse bids from throwaway keys, then a real vendor's: taken, it wins.

    The book keeps the best MAX_BIDS bids by the protocol's ranking against the
    circle's pledges: a bid worse than every held one is refused as "outranked",
    a better one pushes the worst out (told "outranked" if it is sent again).
    """
    network = MemoryNetwork(seed=13, latency=0.01)
    async with auction_nodes(tmp_path, network, 1, []) as (nodes, _):
        (alice,) = nodes
        circle = await circle_with_pledges(nodes, [(10, 5000)])
        keys = [protocol.Identity.from_seed(i.to_bytes(4, "big") * 8) for i in range(MAX_BIDS + 2)]
        real, late = ident(67), ident(68)
        async with contextlib.AsyncExitStack() as stack:
            transports = {}
            for key in [*keys, real, late]:
                transport = await stack.enter_async_context(network.open_transport(key))
                await transport.connect(alice.addresses()[0])
                transports[key.public_key] = transport

            async def send(key: protocol.Identity, bid: bytes) -> Reply:
                data = await transports[key.public_key].request(
                    peer_id_of(alice.public_key), AUCTION_PROTOCOL, encode_bid(bid), timeout=10
                )
                return decode_bid_reply(data)

            with trio.fail_after(300):
                rfq = await request_quotes(alice, circle, respond_within=120, grace=3.0)
                session = protocol.envelope_id(rfq)
                now = alice.now()
                spam = {key.public_key: bid_for(key, rfq, 4900, now) for key in keys}
                outranked = 0
                for key in keys:
                    reply = await send(key, spam[key.public_key])
                    if reply.kind == "refused":
                        assert reply.reason == "outranked"
                        outranked += 1
                house = house_of(alice)
                assert len(held_bids(alice, session)) == MAX_BIDS
                assert outranked + len(house.evicted(session)) == len(keys) - MAX_BIDS
                # A bid the pledges do not clear ranks after every held one.
                dear = await send(late, bid_for(late, rfq, 6000, now))
                assert (dear.kind, dear.reason) == ("refused", "outranked")
                # The real vendor's better bid takes the place of the worst held one.
                good = bid_for(real, rfq, 4500, now)
                assert (await send(real, good)).kind == "taken"
                held = held_bids(alice, session)
                assert len(held) == MAX_BIDS and good in held
                pushed = [
                    offer_id for offer_id, reason in house.evicted(session) if reason == "outranked"
                ]
                assert len(pushed) == len(keys) - MAX_BIDS - outranked + 1
                # Its vendor, sending the pushed-out bid again, is told why.
                loser = next(
                    k for k in keys if protocol.envelope_id(spam[k.public_key]) == pushed[-1]
                )
                again = await send(loser, spam[loser.public_key])
                assert (again.kind, again.reason) == ("refused", "outranked")
                request = protocol.decode_as(rfq, protocol.QuoteRequest).message
                await trio.sleep(request.respond_by + 4 - alice.now())
                result = auction_result(alice, circle, rfq)
        assert result.winner is not None and result.winner.vendor == real.public_key
        assert result.winner.clearing_price == 4500 and len(result.ranking) == MAX_BIDS
