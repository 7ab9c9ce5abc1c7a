"""The circle's side of haggling over the network: negotiate with a vendor, run a reverse auction.

Theory of operation: :func:`negotiate` signs a request for quote with the
node's key and plays the circle's strategy against a vendor's desk (see
:mod:`circles._haggle_vendor`), one request/response pair per move, until the
session ends. The circle's own :class:`protocol.Negotiation` checks every
move both ways, and before each circle move its mandate is rebuilt from the
circle's live pledges as the node sees them then, so the negotiator can never
counter or accept at a price those pledges do not cover, whatever the
strategy says. Whenever the two sides disagree (the vendor refuses a move, or
sends one our machine refuses, or stops answering) the circle walks away, so
a negotiation always returns an outcome and never hangs past its deadline.

A reverse auction publishes one request for quote with no vendor on the
circle's topic (:func:`request_quotes`); vendors answer with sealed bids sent
to the request's signer on direct streams, never on the topic (see
:mod:`circles._haggle_auction` for why and for the close). At the close,
:func:`reverse_auction` ranks the bids with :func:`protocol.rank_offers`,
against the mandate of the pledges signed before ``respond_by``, and
publishes the winning offer alone, so the circle certifies the cheapest bid
taken and no other. :func:`auction_result` is that ranking as any node sees
it: the sealed bids it holds (the auctioneer's) plus the offers answering the
request in its log.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

import trio

import protocol
from protocol import Negotiation, QuoteRequest

from ._haggle import (
    MAX_MOVE_SIZE,
    HaggleError,
    NegotiationOutcome,
    Reply,
    decode_reply,
    encode_request,
    mandate_of,
)
from ._haggle_auction import held_bids, house_of, is_open
from ._node import Node
from ._strategies import Negotiator, Strategy, StrategyError
from ._topics import NEGOTIATE_PROTOCOL, circle_topic
from ._transport import RequestFailed, TransportError, peer_id_of

__all__ = [
    "AuctionOutcome",
    "auction_result",
    "negotiate",
    "quote_requests",
    "request_quotes",
    "reverse_auction",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuctionOutcome:
    """A reverse auction's request for quote and the ranking of the offers it drew."""

    rfq: bytes
    """The request for quote's envelope (its id names the auction)."""
    result: protocol.AuctionResult
    """The winner and the ranking of every bid taken before the close."""
    bids: tuple[bytes, ...]
    """The sealed bids taken (offer envelopes, by id); only the winner's was published."""


def _quote_request(
    node: Node,
    circle: bytes,
    *,
    vendor: bytes | None,
    quantity: int | None,
    product: str | None,
    respond_within: int,
    duration: int,
    max_rounds: int,
) -> bytes:
    charter = node.charter(circle)
    if respond_within < 1 or duration < respond_within:
        raise HaggleError(
            "respond_within must be at least 1 and duration at least respond_within",
            reason="bad-argument",
        )
    now = node.now()
    request = QuoteRequest(
        circle=circle,
        vendor=vendor,
        product=product or charter.title,
        quantity=charter.target if quantity is None else quantity,
        currency=charter.currency,
        respond_by=now + respond_within,
        deadline=now + duration,
        max_rounds=max_rounds,
        created=now,
    )
    return protocol.seal(request, node.identity).data


async def negotiate(
    node: Node,
    circle: bytes,
    vendor: bytes,
    *,
    strategy: Strategy,
    quantity: int | None = None,
    product: str | None = None,
    respond_within: int = 60,
    duration: int = 600,
    max_rounds: int = 10,
    move_timeout: float = 10.0,
    retries: int = 2,
    pace: float = 0.0,
    valid_for: int = 3600,
) -> NegotiationOutcome:
    """Negotiate for ``circle`` with the vendor whose key is ``vendor``, until the session ends.

    The node must be connected to the vendor's node. The request asks for
    ``quantity`` units (the circle's target by default) of ``product`` (the
    circle's title by default); the vendor must answer by ``respond_within``
    seconds and the session ends after ``duration`` seconds at most. Each
    move waits up to ``move_timeout`` seconds for the answer and is retried
    ``retries`` times; ``pace`` seconds pass before each circle move (time
    that a time-dependent strategy on either side concedes with).

    On agreement the vendor publishes the agreed price as an offer on the
    circle's topic, and the circle's certificate and deal path closes it:
    wait for ``node.circle(circle).deal``.
    """
    if type(vendor) is not bytes or len(vendor) != 32:
        raise HaggleError("vendor is the vendor's 32-byte public key", reason="bad-argument")
    if move_timeout <= 0 or retries < 0 or pace < 0:
        raise HaggleError(
            "move_timeout must be positive, retries and pace not negative", reason="bad-argument"
        )
    rfq = _quote_request(
        node,
        circle,
        vendor=vendor,
        quantity=quantity,
        product=product,
        respond_within=respond_within,
        duration=duration,
        max_rounds=max_rounds,
    )
    session = Negotiation(rfq, vendor=vendor, mandate=mandate_of(node.circle(circle)))
    player = Negotiator(node.identity, session, strategy, valid_for=valid_for)
    talk = _Talk(node, session, move_timeout=move_timeout, retries=retries)
    refusal: str | None = None
    move = rfq
    while True:
        reply = await talk.send(move)
        if reply is None:
            break  # talk walked away: the vendor stopped answering
        if reply.kind == "refused":
            refusal = reply.reason
            talk.leave(f"the vendor refused our move ({reply.reason})")
            break
        if reply.kind == "over":
            if not session.is_over:
                talk.leave(f"the vendor ended the session ({reply.state}) out of turn")
            break
        if session.is_over:
            break  # cannot happen with an honest vendor: it answered a final move
        assert reply.move is not None
        try:
            session.receive(reply.move, node.now())
        except protocol.ProtocolError as exc:
            await talk.leave_and_tell(f"the vendor's move was refused ({exc.reason})")
            break
        if session.is_over:
            break
        if pace:
            await trio.sleep(pace)
        now = node.now()
        if session.handle_timer(now) is not None:
            break
        # Pledges may have changed while we waited: the mandate is what they cover now.
        session.update_mandate(mandate_of(node.circle(circle)))
        try:
            data = player.act(now)
        except StrategyError as exc:
            await talk.leave_and_tell(f"the circle's strategy has no valid move ({exc.reason})")
            break
        assert data is not None  # it is our turn after every vendor move
        try:
            session.receive(data, now)
        except protocol.ProtocolError as exc:
            await talk.leave_and_tell(f"the circle's own move was refused ({exc.reason})")
            break
        move = data
    assert session.result is not None
    return NegotiationOutcome(
        result=session.result,
        transcript=session.transcript,
        session=session.session,
        vendor=vendor,
        negotiator=node.public_key,
        refusal=refusal,
    )


class _Talk:
    """One session's conversation with the vendor's desk."""

    def __init__(
        self, node: Node, session: Negotiation, *, move_timeout: float, retries: int
    ) -> None:
        self.node = node
        self.session = session
        self.peer = peer_id_of(session.vendor)
        self.move_timeout = move_timeout
        self.retries = retries

    async def send(self, move: bytes) -> Reply | None:
        """The desk's reply to ``move``; on silence, walks away and returns None.

        A retry re-sends the same move; the desk answers a repeated move with
        the answer it gave the first time.
        """
        frame = encode_request(self.session.session, move)
        failure = ""
        for _ in range(self.retries + 1):
            try:
                data = await self.node.transport.request(
                    self.peer,
                    NEGOTIATE_PROTOCOL,
                    frame,
                    timeout=self.move_timeout,
                    max_response=MAX_MOVE_SIZE,
                )
            except RequestFailed as exc:
                failure = exc.reason
                if exc.reason in ("unreachable", "unsupported"):
                    break
                continue
            try:
                return decode_reply(data)
            except HaggleError:
                failure = "garbage"
                break
        if not self.session.is_over:
            self.leave(f"the vendor did not answer ({failure})")
        return None

    def leave(self, reason: str) -> bytes | None:
        """Walk away in our own machine; the walk-away's bytes, or None if already over."""
        if self.session.is_over:
            return None
        walk = protocol.WalkAway(
            circle=self.session.request.message.circle,
            session=self.session.session,
            reason=reason[:500],
            created=self.node.now(),
        )
        data = protocol.seal(walk, self.node.identity).data
        self.session.receive(data, self.node.now())
        return data

    async def leave_and_tell(self, reason: str) -> None:
        """Walk away and tell the vendor, once, without waiting long for it."""
        data = self.leave(reason)
        if data is None:
            return
        # If the vendor does not hear it, its session ends at the deadline anyway.
        with contextlib.suppress(RequestFailed):
            await self.node.transport.request(
                self.peer,
                NEGOTIATE_PROTOCOL,
                encode_request(self.session.session, data),
                timeout=self.move_timeout,
                max_response=MAX_MOVE_SIZE,
            )


async def request_quotes(
    node: Node,
    circle: bytes,
    *,
    respond_within: int = 60,
    quantity: int | None = None,
    product: str | None = None,
    duration: int | None = None,
    max_rounds: int = 10,
    grace: float = 2.0,
) -> bytes:
    """Open a reverse auction: publish a request for quote to every vendor on the circle's topic.

    Returns the request's envelope. Vendors send their bids, signed before its
    ``respond_by`` (``respond_within`` seconds from now), to this node, which
    takes them until ``respond_by`` plus ``grace`` (whole seconds, rounded
    up): the auction's close. :func:`reverse_auction` also waits for the
    close and publishes the winner; this alone only collects the bids.
    """
    if grace < 0:
        raise HaggleError("grace must not be negative", reason="bad-argument")
    rfq = _quote_request(
        node,
        circle,
        vendor=None,
        quantity=quantity,
        product=product,
        respond_within=respond_within,
        duration=respond_within if duration is None else duration,
        max_rounds=max_rounds,
    )
    # The book is open before any vendor can hear of the auction.
    house = house_of(node)
    house.open(rfq, grace=grace)
    try:
        await node.transport.publish(circle_topic(circle), rfq)
    except BaseException:
        house.close(protocol.envelope_id(rfq))
        raise
    return rfq


def quote_requests(node: Node, circle: bytes) -> list[bytes]:
    """The requests for quote of ``circle`` in the node's log (auctions and others), in order."""
    return [entry.data for entry in node.circle_log(circle, kinds=("rfq",))]


def auction_result(
    node: Node,
    circle: bytes,
    rfq: bytes,
    *,
    reputations: Mapping[bytes, protocol.Reputation] | None = None,
) -> protocol.AuctionResult:
    """Rank the bids answering ``rfq`` that this node holds.

    Those are the sealed bids the auctioneer's node took, plus the offers
    answering the request in the node's log (on other members, the winner's
    once the auctioneer published it). The mandate is that of the pledges
    signed before the request's ``respond_by`` (later pledges do not change
    who won). Raises :class:`protocol.AuctionError` ("still-open") before
    ``respond_by``, and on the auctioneer's node before the close.
    """
    request = protocol.decode_as(rfq, QuoteRequest)
    respond_by = request.message.respond_by
    if node.now() < respond_by or is_open(node, request.id):
        raise protocol.AuctionError(
            "the auction is still open: ask again after its close", reason="still-open"
        )
    state = node.circle(circle)
    before = []
    offers = list(held_bids(node, request.id))
    for data in (entry.data for entry in node.circle_log(circle)):
        envelope = protocol.decode(data)
        message = envelope.message
        if isinstance(message, protocol.Offer) and message.in_reply_to == request.id:
            offers.append(data)
        if isinstance(message, protocol.Charter) or getattr(message, "created", respond_by) >= (
            respond_by
        ):
            continue
        before.append(envelope)
    then = protocol.CircleState.from_envelopes(state.charter, before, now=respond_by - 1)
    return protocol.rank_offers(rfq, offers, mandate=mandate_of(then), reputations=reputations)


async def reverse_auction(
    node: Node,
    circle: bytes,
    *,
    respond_within: int = 60,
    quantity: int | None = None,
    product: str | None = None,
    grace: float = 2.0,
    reputations: Mapping[bytes, protocol.Reputation] | None = None,
    publish_timeout: float = 10.0,
) -> AuctionOutcome:
    """Run a reverse auction: request quotes, close it, rank the bids, publish the winner.

    The auction closes ``grace`` seconds (rounded up to whole seconds) after
    its ``respond_by``, so that bids signed before ``respond_by`` and still on
    their way arrive; bids arriving later are refused as "closed". Only the
    winning offer is published on the circle's topic, so the circle's deal
    closes at the cheapest bid taken whatever order the bids arrived in.
    Raises HaggleError("not-published") if the winner could not be published
    within ``publish_timeout`` seconds.
    """
    if grace < 0 or publish_timeout <= 0:
        raise HaggleError(
            "grace must not be negative and publish_timeout must be positive",
            reason="bad-argument",
        )
    rfq = await request_quotes(
        node, circle, respond_within=respond_within, quantity=quantity, product=product, grace=grace
    )
    session = protocol.envelope_id(rfq)
    house = house_of(node)
    closes_at = house.closes_at(session)
    assert closes_at is not None  # request_quotes opened the book
    # Bounded: the close is a fixed time on the node's clock.
    while node.now() < closes_at:
        await trio.sleep(max(0.05, closes_at - node.now()))
    bids = house.close(session)
    result = auction_result(node, circle, rfq, reputations=reputations)
    winner = result.winner
    sealed = {protocol.envelope_id(b): b for b in bids}
    if winner is not None and winner.offer in sealed:
        offer = sealed[winner.offer]
        try:
            with trio.fail_after(publish_timeout):
                await node.transport.publish(circle_topic(circle), offer)
        except (trio.TooSlowError, TransportError) as exc:
            raise HaggleError(
                f"the winning bid could not be published ({exc})",
                reason="not-published",
            ) from None
    return AuctionOutcome(rfq=rfq, result=result, bids=bids)
