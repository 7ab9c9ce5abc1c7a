"""Gossip over the libp2p transport: gossipsub, hardened, and the validator wrapper.

What py-libp2p's gossipsub defaults get wrong (see shared/LIBP2P.md) is
overridden in :func:`_new_pubsub`, each with the reason beside it. The
:class:`_Gossip` part of :class:`~circles._libp2p.Libp2pTransport` wraps the
user's validator: it de-duplicates by content before the validator runs,
contains every exception (one escaping a sync validator stops pubsub), lets an
ignored message cost its sender nothing, and waits while a peer's outbound
queue is past half full rather than letting the queue drop the message.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any

import trio

from ._libp2p_core import _Libp2pCore, logger
from ._libp2p_host import MAX_INBOUND_RPC, OUTBOUND_QUEUE
from ._transport import (
    MAX_GOSSIP_MESSAGE,
    Delivery,
    PeerId,
    Subscription,
    TransportError,
    Validator,
    Verdict,
    _BufferedSubscription,
    _run_validator,
    message_id,
)

if TYPE_CHECKING:
    from libp2p.abc import IHost

__all__ = ["BACKPRESSURE_HIGH_WATER", "BACKPRESSURE_PATIENCE", "MAX_TOPIC_LENGTH"]

#: Longest topic name a remote peer may subscribe to (ours are under 100
#: characters). py-libp2p keeps every topic a peer subscribes to, up to
#: ``max_subscriptions_per_peer`` of them, whatever their length: without this
#: one peer could make the host hold 64 KiB per subscription.
MAX_TOPIC_LENGTH = 256

#: ``publish`` waits while some peer's queue holds at least this many RPCs.
BACKPRESSURE_HIGH_WATER = OUTBOUND_QUEUE // 2
#: Longest ``publish`` waits for one stalled peer before going ahead anyway
#: (that peer's queue then drops; sync repairs it). A peer that stops reading
#: must not stop us publishing to everyone else.
BACKPRESSURE_PATIENCE = 2.0


def _score_params() -> Any:
    from libp2p.pubsub.score import ScoreParams, TopicScoreParams

    # Each rejected message costs 1 point, decaying by 1% per heartbeat (~70 s
    # half-life). 20 invalid messages stop us publishing to the peer; 40 make
    # us ignore it (graylist). py-libp2p's defaults are -inf: scoring off.
    return ScoreParams(
        p4_invalid_messages=TopicScoreParams(weight=1.0, cap=1000.0, decay=0.99),
        p7_ip_colocation_weight=0.0,
        publish_threshold=-20.0,
        gossip_threshold=-10.0,
        graylist_threshold=-40.0,
        accept_px_threshold=math.inf,
    )


def _new_pubsub(host: IHost, *, heartbeat_interval: int) -> tuple[Any, Any]:
    """Gossipsub for ``host`` and the guarded pubsub running it: ``(pubsub, gossipsub)``."""
    from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub

    gossipsub = GossipSub(
        protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
        degree=6,
        degree_low=4,
        degree_high=12,
        heartbeat_initial_delay=0.1,
        heartbeat_interval=heartbeat_interval,
        score_params=_score_params(),
        adaptive_gossip_enabled=False,
        spam_protection_enabled=False,
        eclipse_protection_enabled=False,
    )
    pubsub = _guarded_pubsub_class()(
        host, gossipsub, max_inbound_rpc_size=MAX_INBOUND_RPC, max_subscriptions_per_peer=10_000
    )
    return pubsub, gossipsub


class _Gossip(_Libp2pCore):
    """Publish, subscribe and validate: the transport's gossip part."""

    def set_validator(self, topic: str, validator: Validator | None) -> None:
        if validator is None:
            self._validators.pop(topic, None)
        else:
            self._validators[topic] = validator

    async def subscribe(self, topic: str) -> Subscription:
        self._check_open()
        if topic in self._subscriptions:
            raise TransportError(
                f"already subscribed to {topic!r}; close that subscription first",
                reason="already-subscribed",
            )
        subscription = _BufferedSubscription(
            topic,
            capacity=self._subscription_buffer,
            counters=self._counters,
            on_close=self._unsubscribe,
        )
        self._subscriptions[topic] = subscription
        # Registered before subscribing so that no message slips past it.
        self._pubsub.set_topic_validator(topic, self._make_validator(topic), False)
        await self._pubsub.subscribe(topic)
        return subscription

    async def _unsubscribe(self, subscription: _BufferedSubscription) -> None:
        topic = subscription.topic
        if self._subscriptions.get(topic) is not subscription:
            return
        del self._subscriptions[topic]
        if not self._closing:
            with contextlib.suppress(Exception):
                await self._pubsub.unsubscribe(topic)
            self._pubsub.remove_topic_validator(topic)

    def _make_validator(self, topic: str) -> Any:
        def validate(forwarder: Any, msg: Any) -> bool:
            # Runs inside py-libp2p, where an exception stops pubsub: contain all.
            try:
                return self._validate(topic, forwarder, msg)
            except Exception:
                self._counters.contained_errors += 1
                logger.exception("validator wrapper failed; message rejected")
                return False

        return validate

    def _validate(self, topic: str, forwarder: Any, msg: Any) -> bool:
        data: bytes = msg.data
        sender = PeerId(forwarder.to_base58())
        key = message_id(data)
        now = trio.current_time()
        if sender == self._peer_id:
            # Our own publication: never judged by our own validator.
            self._remember(key, sender, now)
            return True
        if len(data) > MAX_GOSSIP_MESSAGE:
            self._counters.oversize += 1
            return False
        if self._accepted.seen(key, now):
            self._counters.duplicates += 1
            self._ignoring = self._pubsub.get_message_id(msg)
            return False
        verdict = _run_validator(self._validators.get(topic), data, sender, self._counters)
        if verdict is Verdict.ACCEPT:
            self._remember(key, sender, now)
            return True
        if verdict is Verdict.IGNORE:
            self._ignoring = self._pubsub.get_message_id(msg)
        return False

    def _remember(self, key: bytes, sender: PeerId, now: float) -> None:
        self._accepted.add(key, now)
        if len(self._forwarders) > 10_000:
            # Only reached if deliveries never come (they always should).
            self._forwarders.clear()
        self._forwarders[key] = sender

    def _on_invalid_message(self, original: Any, peer: Any, topic: str) -> None:
        ignoring, self._ignoring = self._ignoring, None
        if ignoring is not None:
            # py-libp2p cached the failed validation by its own id; forget it
            # so the same message may be judged again (it may become valid).
            with contextlib.suppress(Exception):
                self._pubsub.validation_cache._remove(ignoring)
            return
        original(peer, topic)

    def _notify(self, msg: Any) -> None:
        """Called by pubsub for each accepted message (instead of its 32-slot queue)."""
        data: bytes = msg.data
        key = message_id(data)
        sender = self._forwarders.pop(key, None)
        now = trio.current_time()
        if self._delivered.seen(key, now):
            return
        self._delivered.add(key, now)
        from libp2p.peer.id import ID

        try:
            origin = PeerId(ID(msg.from_id).to_base58())
        except Exception:
            origin = PeerId("")
        for topic in msg.topicIDs:
            subscription = self._subscriptions.get(topic)
            if subscription is not None:
                subscription.offer(
                    Delivery(
                        topic=topic,
                        data=data,
                        sender=sender or origin,
                        origin=origin,
                        message_id=key,
                    )
                )

    async def publish(self, topic: str, data: bytes) -> None:
        self._check_open()
        if len(data) > MAX_GOSSIP_MESSAGE:
            raise TransportError(
                f"a gossip message is at most {MAX_GOSSIP_MESSAGE} bytes, not {len(data)}; "
                "send large content over a request stream",
                reason="oversize",
            )
        await self._wait_for_queue_room()
        try:
            await self._pubsub.publish(topic, bytes(data))
        except trio.Cancelled:
            raise
        except Exception as exc:
            raise TransportError(f"publishing failed: {exc}", reason="publish-failed") from None
        self._counters.published += 1

    async def _wait_for_queue_room(self) -> None:
        deadline = trio.current_time() + BACKPRESSURE_PATIENCE
        while True:
            full = [
                queue
                for queue in list(self._pubsub.peer_queues.values())
                if len(queue) >= BACKPRESSURE_HIGH_WATER and not queue.closed
            ]
            if not full or trio.current_time() >= deadline:
                return
            drained = getattr(full[0], "drained", None)
            if drained is None:
                return
            with trio.move_on_at(deadline):
                await drained.wait()


def _guarded_pubsub_class() -> type[Any]:
    from libp2p.pubsub.pubsub import Pubsub

    class GuardedPubsub(Pubsub):
        """Pubsub whose remote-facing paths contain every exception.

        Measured on 0.8.1: an undecodable protobuf frame (pubsub.py ~562) and
        a message with a junk key escaped the host's nursery and stopped it.
        """

        transport: _Gossip | None = None

        async def stream_handler(self, stream: Any) -> None:
            try:
                await super().stream_handler(stream)
            except trio.Cancelled:
                raise
            except Exception:
                self._contain("pubsub stream", stream.muxed_conn.peer_id)
                with contextlib.suppress(Exception):
                    await stream.reset()
                with contextlib.suppress(Exception):
                    self._handle_dead_peer(stream.muxed_conn.peer_id)

        async def push_msg(self, msg_forwarder: Any, msg: Any) -> None:
            try:
                await super().push_msg(msg_forwarder, msg)
            except trio.Cancelled:
                raise
            except Exception:
                self._contain("pubsub message", msg_forwarder)

        def handle_subscription(self, origin_id: Any, sub_message: Any) -> None:
            if sub_message.subscribe and len(sub_message.topicid) > MAX_TOPIC_LENGTH:
                if self.transport is not None:
                    self.transport._counters.oversize += 1
                return  # never held; an unsubscribe of such a topic is a no-op anyway
            super().handle_subscription(origin_id, sub_message)

        def notify_subscriptions(self, publish_message: Any) -> None:
            transport = self.transport
            if transport is not None:
                transport._notify(publish_message)

        def _contain(self, what: str, peer: Any) -> None:
            if self.transport is not None:
                self.transport._counters.contained_errors += 1
            logger.warning("contained an error from %s of peer %s", what, peer, exc_info=True)

    return GuardedPubsub
