"""The node's own moves: found, join, pledge, withdraw, offer.

Messages the node signs are on disk, committed, before the call that made
them returns and before they are published; a pledge's sequence number is
reserved durably before it is signed, so a crash can never make the node sign
two pledges with one sequence number. A store that never counted in a circle
(it is new, was emptied, or the key pledged there from another store) first
fetches the circle's log from peers and counts above every pledge this key
signed there, or refuses: losing the store must not make the member an
equivocator. Pledges and withdrawals the circle would not count (closed,
cancelled, expired, late, nothing to withdraw) are refused, not signed.
Own pledges are gossiped within a
budget (:class:`_GossipPacer`); past it only each circle's latest unsent
pledge is gossiped as the budget refills, and peers fetch the superseded ones
by sync, in bulk.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterable, Sequence
from typing import Any

import trio

import protocol
from protocol import Envelope

from ._node_core import NodeError, OwnHistoryUnknown, PledgeRefused, _NodeCore, log
from ._node_events import OwnHistoryRecovered
from ._topics import ANNOUNCE_TOPIC, circle_topic
from ._transport import PeerId, TransportError

__all__: list[str] = []


class _OwnMoves(_NodeCore):
    """The verbs that sign and publish the node's own messages."""

    async def found_circle(
        self,
        *,
        title: str,
        unit: str,
        target: int,
        currency: str,
        deadline: int,
        ceiling: int | None = None,
        place: str | None = None,
        tags: Iterable[str] = (),
        invite_only: bool = False,
        members_invite: bool = False,
        on_miss: str = "expire",
    ) -> bytes:
        """Found a circle, announce it, and return its id."""
        charter = protocol.Charter(
            title=title,
            unit=unit,
            target=target,
            currency=currency,
            ceiling=ceiling,
            deadline=deadline,
            place=place,
            tags=tuple(tags),
            invite_only=invite_only,
            members_invite=members_invite,
            on_miss=on_miss,
            created=self.now(),
        )
        envelope = await self._sign_own(charter)
        self._store_joined(envelope.id)
        await self._subscribe(envelope.id)
        await self.transport.publish(ANNOUNCE_TOPIC, envelope.data)
        await self.transport.publish(circle_topic(envelope.id), envelope.data)
        return envelope.id

    async def join(self, circle: bytes, *, timeout: float = 10.0) -> None:
        """Take part in a circle: fetch it from peers if needed, then follow it."""
        if circle not in self._states:
            with trio.move_on_after(timeout):
                for peer in sorted(self.transport.peers()):
                    await self.syncer.sync_quietly(circle, peer)
                    if circle in self._states:
                        break
        if circle not in self._states:
            raise NodeError(
                f"no connected peer knows circle {circle.hex()[:16]}…; connect to a member first",
                reason="unknown-circle",
            )
        self._store_joined(circle)
        await self._subscribe(circle)

    async def pledge(
        self, circle: bytes, quantity: int, *, max_price: int, tolerance: int = 0
    ) -> Envelope[protocol.Pledge]:
        """Pledge to buy ``quantity`` at a unit price of at most ``max_price``.

        On disk before it returns and before it is published; a later pledge
        supersedes it, and quantity 0 withdraws (:meth:`withdraw` also checks
        that there is a pledge to withdraw). Raises :class:`PledgeRefused`
        when the circle would not count it (closed, cancelled, expired, past
        its deadline, above its ceiling), and :class:`OwnHistoryUnknown` when
        this store never pledged in the circle and no peer answers to show
        what this key signed there before.
        """
        return await self._pledge(
            circle, quantity, max_price=max_price, tolerance=tolerance, withdrawing=False
        )

    async def withdraw(self, circle: bytes) -> Envelope[protocol.Pledge]:
        """Withdraw from a circle (a pledge of quantity 0).

        Raises :class:`PledgeRefused` with reason ``no-pledge`` when this key
        has no pledge in the circle to withdraw, and as :meth:`pledge` does
        when the circle no longer counts pledges.
        """
        return await self._pledge(circle, 0, max_price=0, tolerance=0, withdrawing=True)

    async def _pledge(
        self, circle: bytes, quantity: int, *, max_price: int, tolerance: int, withdrawing: bool
    ) -> Envelope[protocol.Pledge]:
        state = self.circle(circle)
        charter: protocol.Charter = state.charter.message
        if circle not in self._joined:
            raise NodeError("join the circle before pledging", reason="not-joined")
        if quantity and charter.ceiling is not None and max_price > charter.ceiling:
            raise PledgeRefused(
                f"max_price {max_price} is above the circle's ceiling {charter.ceiling}",
                reason="above-ceiling",
            )
        store = self._running_store()
        # A store that never counted here may lack our pledge: look after recovery.
        counted = store.counted(circle) is not None
        self._check_counts(circle, quantity, withdrawing=withdrawing and counted)
        async with self._own_lock:
            if store.counted(circle) is None:
                await self._recover_own_history(circle)
            # What sync brought, or another call while we waited for the lock,
            # may have closed the circle or taken the pledge to withdraw.
            self._check_counts(circle, quantity, withdrawing=withdrawing)
            seq = store.reserve_seq(circle, signer=self.public_key)
            pledge = protocol.Pledge(
                circle=circle,
                seq=seq,
                quantity=quantity,
                max_price=max_price if quantity else 0,
                currency=charter.currency,
                tolerance=tolerance if quantity else 0,
                created=self.now(),
            )
            envelope = await self._sign_own(pledge)
        await self._gossip_pledge(circle, envelope.data)
        return envelope

    def _check_counts(self, circle: bytes, quantity: int, *, withdrawing: bool) -> None:
        """Raise :class:`PledgeRefused` unless the circle would count this pledge now.

        The node's clock decides the deadline, not the state's last tick: the
        state moves on only when the node hands it the time.
        """
        state = self.circle(circle)
        what = "a pledge" if quantity else "a withdrawal"
        deal = state.deal
        if deal is not None:
            raise PledgeRefused(
                f"circle {_short(circle)} was closed by a deal on {_when(deal.message.created)}; "
                f"pledges no longer count there, so {what} was not signed",
                reason="closed",
            )
        if state.status is protocol.CircleStatus.CANCELLED:
            raise PledgeRefused(
                f"circle {_short(circle)} is cancelled (its founder signed two different "
                f"extensions); pledges no longer count there, so {what} was not signed",
                reason="cancelled",
            )
        deadline = state.deadline
        if state.status is protocol.CircleStatus.EXPIRED:
            raise PledgeRefused(
                f"circle {_short(circle)} expired on {_when(deadline)} without a deal; "
                f"pledges no longer count there, so {what} was not signed",
                reason="expired",
            )
        if self.now() > deadline:
            raise PledgeRefused(
                f"the circle's pledge deadline passed on {_when(deadline)}: {what} made now "
                "would not count (the pledges made by then stand)",
                reason="late",
            )
        if withdrawing and not self._has_pledge(circle):
            raise PledgeRefused(
                f"you have no pledge in circle {_short(circle)} to withdraw",
                reason="no-pledge",
            )

    def _has_pledge(self, circle: bytes) -> bool:
        """True if this key's latest pledge in the circle is not a withdrawal.

        Not only a live pledge: one the circle does not count yet (an
        invite-only circle that has not admitted us) may still be withdrawn.
        """
        if self.circle(circle).live_pledge(self.public_key) is not None:
            return True
        latest: protocol.Pledge | None = None
        for stored in self._running_store().envelopes(circle):
            if stored.kind != "pledge" or stored.signer != self.public_key:
                continue
            message = protocol.decode_unverified(stored.data).message
            if isinstance(message, protocol.Pledge) and (
                latest is None or message.seq > latest.seq
            ):
                latest = message
        return latest is not None and latest.quantity > 0

    async def _recover_own_history(self, circle: bytes) -> None:
        """Fetch the circle's log from every peer before this store first pledges there.

        The store never counted in this circle: it is new, or was emptied, or
        this key pledged there from another store. Whatever this key signed
        there before is in the peers' logs; once it is here, ``reserve_seq``
        counts above it. Refuses (:class:`OwnHistoryUnknown`) when no peer
        holding the circle answers within the bound: a guess could equivocate.
        """
        store = self._running_store()
        peers = sorted(p for p in self.transport.peers() if self.syncer.serves_sync(p))
        bound = self.syncer.timeout * 2
        answered: list[PeerId] = []

        async def ask(peer: PeerId) -> None:
            try:
                await self.syncer.sync(circle, peer, strict=True)
            except TransportError as exc:
                log.info("peer %s did not bring back own history: %s", peer, exc)
            else:
                answered.append(peer)

        if peers:
            with trio.move_on_after(bound):
                async with trio.open_nursery() as nursery:
                    for peer in peers:
                        nursery.start_soon(ask, peer)
        if not answered:
            raise OwnHistoryUnknown(
                f"this node's store has no record of pledges in circle {_short(circle)} (the "
                "store is new or was emptied), and this key may have pledged there before; "
                f"{'no peer is connected' if not peers else 'no peer answered'} to show "
                f"which sequence numbers it used (waited {bound:g} s), and signing one twice "
                "would exclude you from the circle. Connect to a member of the circle "
                "(`circles connect ADDRESS`) and try again",
                reason="own-history-unknown",
            )
        highest = store.highest_signed(circle, self.public_key)
        if highest:
            log.warning(
                "this key had signed pledges up to sequence number %d in circle %s, which this "
                "store had no record of; they came back from %d peers, and the next pledge "
                "counts above them",
                highest,
                circle.hex()[:16],
                len(answered),
            )
            self._emit(OwnHistoryRecovered(circle=circle, highest_seq=highest, peers=len(answered)))

    async def offer(
        self,
        circle: bytes,
        *,
        product: str,
        tiers: Sequence[tuple[int, int]],
        capacity: int,
        valid_until: int,
        list_price: int | None = None,
        terms: str = "",
        in_reply_to: bytes | None = None,
    ) -> Envelope[protocol.Offer]:
        """As a vendor, offer volume ``tiers`` of ``(min_quantity, unit_price)`` to a circle."""
        charter = self.charter(circle)
        if circle not in self._joined:
            self._store_joined(circle)
            await self._subscribe(circle)
        offer = protocol.Offer(
            circle=circle,
            product=product,
            currency=charter.currency,
            list_price=list_price if list_price is not None else tiers[0][1],
            tiers=tuple(protocol.Tier(min_quantity=q, unit_price=p) for q, p in tiers),
            capacity=capacity,
            valid_until=valid_until,
            terms=terms,
            loyalty=(),
            in_reply_to=in_reply_to,
            created=self.now(),
        )
        envelope = await self._sign_own(offer)
        await self.transport.publish(circle_topic(circle), envelope.data)
        return envelope

    async def _sign_own(self, message: protocol.Message) -> Envelope[Any]:
        envelope = protocol.seal(message, self.identity)
        assert self._store is not None
        self._store.put_own(envelope)
        self._recently_stored.add(envelope.id, self.now())
        self._apply(envelope)
        return envelope

    def _store_joined(self, circle: bytes) -> None:
        assert self._store is not None
        self._store.mark_joined(circle)
        self._joined.add(circle)

    async def _gossip_pledge(self, circle: bytes, data: bytes) -> None:
        """Gossip an own pledge now if the pace allows; else keep it as the circle's latest."""
        # A newer pledge makes any unsent older one of ours moot.
        self._gossip.pending.pop(circle, None)
        if self._gossip.take(trio.current_time()):
            await self.transport.publish(circle_topic(circle), data)
        else:
            self._gossip.pending[circle] = data
            self._gossip.wake()

    async def _gossip_pending(self) -> None:
        """Gossip the latest held-back pledge of each circle as the pace allows."""
        pacer = self._gossip
        while True:
            if not pacer.pending:
                await pacer.wait()
                continue
            wait = pacer.until_token(trio.current_time())
            if wait > 0:
                await trio.sleep(wait)
                continue
            circle = next(iter(pacer.pending))
            data = pacer.pending.pop(circle)
            pacer.take(trio.current_time())
            with contextlib.suppress(TransportError):
                await self.transport.publish(circle_topic(circle), data)


def _short(circle: bytes) -> str:
    return circle.hex()[:16] + "…"


def _when(timestamp: int) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


class _GossipPacer:
    """A token bucket for gossiping own pledges, and the pledges it held back.

    Why: py-libp2p gossip costs every host about a millisecond per copy it
    receives, and a burst past what the mesh carries was dropped at its queues
    or delayed for seconds, starving sync. Only a member's latest pledge counts
    in a circle, so the superseded ones need not be gossiped at all: they are
    on disk, and peers fetch them by sync in bulk, at a fraction of the cost.
    """

    def __init__(self, *, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp: float | None = None
        #: Circle id -> the latest own pledge not gossiped yet (oldest circle first).
        self.pending: dict[bytes, bytes] = {}
        self._wakeup = trio.Event()

    def _refill(self, now: float) -> None:
        if self.stamp is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, now: float) -> bool:
        """Spend a token if there is one."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def until_token(self, now: float) -> float:
        """Seconds until a token is available (0 if one is)."""
        self._refill(now)
        return max(0.0, (1.0 - self.tokens) / self.rate)

    def wake(self) -> None:
        self._wakeup.set()

    async def wait(self) -> None:
        await self._wakeup.wait()
        self._wakeup = trio.Event()
