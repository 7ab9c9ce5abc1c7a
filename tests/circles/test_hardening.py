"""A remote peer cannot stop a node: hostile input from a raw py-libp2p peer.

Each case was measured to stop an unguarded py-libp2p 0.8.1 host (see
shared/LIBP2P.md); here the honest node must keep serving requests and
delivering gossip from its honest peers afterwards.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import protocol
from circles._libp2p import Libp2pTransport, open_libp2p_transport
from circles._transport import PeerId, Verdict

TOPIC = "/buying-circles/1/circle/cd"
ECHO = "/test/echo/1"


def identity(n: int) -> protocol.Identity:
    return protocol.Identity.from_seed((1000 + n).to_bytes(32, "big"))


@asynccontextmanager
async def raw_peer(*, plaintext_only: bool = False) -> AsyncIterator[Any]:
    """A bare py-libp2p host, used to send what an honest node never would."""
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
    from multiaddr import Multiaddr

    key_pair = create_new_key_pair(os.urandom(32))
    options: dict[str, Any] = {}
    if plaintext_only:
        options["sec_opt"] = {PLAINTEXT_PROTOCOL_ID: InsecureTransport(key_pair)}
    host = new_host(key_pair=key_pair, **options)
    async with host.run(listen_addrs=[Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        try:
            yield host
        finally:
            with trio.move_on_after(1):
                await host.close()


async def dial(raw: Any, target: Libp2pTransport) -> None:
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    with trio.fail_after(10):
        await raw.connect(info_from_p2p_addr(Multiaddr(target.listen_addrs()[0])))


async def send_frames(raw: Any, target: Libp2pTransport, *frames: bytes) -> None:
    """Open a /meshsub/1.1.0 stream to ``target`` and write raw length-prefixed frames."""
    from libp2p.custom_types import TProtocol
    from libp2p.peer.id import ID
    from libp2p.utils.varint import encode_uvarint

    with trio.fail_after(10):
        stream = await raw.new_stream(ID.from_base58(target.peer_id), [TProtocol("/meshsub/1.1.0")])
        for frame in frames:
            await stream.write(encode_uvarint(len(frame)) + frame)
        # Give the target time to read them before the stream goes away.
        with trio.move_on_after(0.3), pytest.raises(Exception):  # noqa: B017
            await stream.read(1)
            await stream.read(1)
    with trio.move_on_after(1):
        await stream.reset()


def signed_message(raw: Any, data: bytes, *, seqno: int) -> bytes:
    """One RPC publishing ``data`` on TOPIC, correctly signed by ``raw``."""
    from libp2p.pubsub.pb import rpc_pb2

    message = rpc_pb2.Message(
        data=data,
        topicIDs=[TOPIC],
        from_id=raw.get_id().to_bytes(),
        seqno=seqno.to_bytes(8, "big"),
    )
    message.signature = raw.get_private_key().sign(b"libp2p-pubsub:" + message.SerializeToString())
    return rpc_pb2.RPC(publish=[message]).SerializeToString()


def junk_key_message() -> bytes:
    """A message whose from_id hashes its key (not inline) and whose key is junk."""
    from libp2p.pubsub.pb import rpc_pb2

    message = rpc_pb2.Message(
        data=b"junk key",
        topicIDs=[TOPIC],
        from_id=b"\x12\x20" + os.urandom(32),  # sha2-256 multihash: key not embedded
        seqno=(1).to_bytes(8, "big"),
        signature=os.urandom(64),
        key=b"\x08\x01\x12\x05junk!" + os.urandom(7),
    )
    return rpc_pb2.RPC(publish=[message]).SerializeToString()


@asynccontextmanager
async def honest_pair() -> AsyncIterator[tuple[Libp2pTransport, Libp2pTransport, list[bytes]]]:
    """Honest node B (the target) and its honest peer C, subscribed and connected."""
    async with (
        open_libp2p_transport(identity(1)) as b,
        open_libp2p_transport(identity(2)) as c,
    ):
        validated: list[bytes] = []

        def validator(data: bytes, sender: PeerId) -> Verdict:
            validated.append(data)
            if data == b"raise":
                raise RuntimeError("validator bug triggered by a remote message")
            return Verdict.ACCEPT

        b.set_validator(TOPIC, validator)

        async def echo(peer: PeerId, data: bytes) -> bytes:
            return data[::-1]

        b.set_handler(ECHO, echo)
        await c.subscribe(TOPIC)
        await c.connect(b.listen_addrs()[0])
        yield b, c, validated


async def assert_still_serving(b: Libp2pTransport, c: Libp2pTransport, tag: bytes) -> None:
    """B answers a request and delivers a fresh publication from C."""
    subscription = b._subscriptions[TOPIC]
    assert await c.request(b.peer_id, ECHO, tag, timeout=5) == tag[::-1]
    with trio.fail_after(10):
        while True:
            await c.publish(TOPIC, tag)
            with trio.move_on_after(1):
                async for delivery in subscription:
                    if delivery.data == tag:
                        return
            tag += b"."  # the mesh may still be forming: publish anew


async def test_garbage_frames_and_messages_do_not_stop_the_node() -> None:
    async with honest_pair() as (b, c, validated):
        await b.subscribe(TOPIC)
        await assert_still_serving(b, c, b"before")
        async with raw_peer() as raw:
            await dial(raw, b)

            # 1. An undecodable protobuf frame.
            await send_frames(raw, b, b"\xff\xff\xff\xff\x0f garbage, not protobuf")
            assert b.statistics().contained_errors >= 1
            await assert_still_serving(b, c, b"after garbage frame")

            # 2. A pubsub message with a junk `key` field.
            await send_frames(raw, b, junk_key_message())
            await assert_still_serving(b, c, b"after junk key")
            assert b"junk key" not in validated

            # 3. A correctly signed message that makes the validator raise.
            await send_frames(raw, b, signed_message(raw, b"raise", seqno=1))
            with trio.fail_after(5):
                while b.statistics().validator_errors < 1:
                    await trio.sleep(0.01)
            await assert_still_serving(b, c, b"after validator raise")

            # 4a. Just over 64 KiB of payload: read, then dropped by size alone.
            before = len(validated)
            await send_frames(raw, b, signed_message(raw, bytes(64 * 1024 + 1), seqno=2))
            with trio.fail_after(5):
                while b.statistics().oversize < 1:
                    await trio.sleep(0.01)
            assert len(validated) == before
            # 4b. Far over: the frame's length prefix alone gets it dropped unread.
            await send_frames(raw, b, signed_message(raw, bytes(200 * 1024), seqno=3))
            assert b.statistics().oversize == 1 and len(validated) == before
            await assert_still_serving(b, c, b"after oversize")

        # Nothing hostile was delivered or forwarded to C.
        assert c.statistics().rejected == 0
        assert b._pubsub.manager.is_running


async def test_a_plaintext_only_dialer_is_refused() -> None:
    async with honest_pair() as (b, c, _):
        await b.subscribe(TOPIC)
        async with raw_peer(plaintext_only=True) as raw:
            with pytest.raises(Exception):  # noqa: B017
                await dial(raw, b)
            raw_id = PeerId(raw.get_id().to_base58())
            assert raw_id not in b.peers()
        await assert_still_serving(b, c, b"after plaintext")
