"""Admission at the gossip door: what the node's validators accept, ignore and reject."""

from __future__ import annotations

import contextlib
from pathlib import Path

import trio
import trio.testing

import protocol
from circles import MemoryNetwork, Node, Refused, Verdict
from circles._topics import circle_topic

EPOCH = 1_800_000_000


def ident(n: int) -> protocol.Identity:
    return protocol.Identity.from_seed(bytes([n]) * 32)


def clock() -> float:
    return EPOCH + trio.current_time()


async def test_validator_verdicts(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    network = MemoryNetwork(seed=5)
    async with contextlib.AsyncExitStack() as stack:
        alice = await stack.enter_async_context(
            Node(ident(1), tmp_path / "a", transport=network.open_transport, clock=clock)
        )
        circle = await alice.found_circle(
            title="Honey", unit="jar", target=10, currency="EUR", deadline=EPOCH + 3600
        )
        other = await alice.found_circle(
            title="Salt", unit="kg", target=10, currency="EUR", deadline=EPOCH + 3600
        )
        validate = alice._circle_validator(circle)
        bob = ident(2)

        def pledge(circle_id: bytes, created: int) -> bytes:
            body = protocol.Pledge(
                circle=circle_id,
                seq=1,
                quantity=2,
                max_price=100,
                currency="EUR",
                tolerance=0,
                created=created,
            )
            return protocol.seal(body, bob).data

        now = alice.now()
        assert validate(pledge(circle, now), "peer") is Verdict.ACCEPT
        # Dated up to five minutes ahead is fine; further is ignored, without penalty.
        assert validate(pledge(circle, now + 290), "peer") is Verdict.ACCEPT
        assert validate(pledge(circle, now + 400), "peer") is Verdict.IGNORE
        # Another circle's message on this circle's topic is rejected.
        assert validate(pledge(other, now), "peer") is Verdict.REJECT
        # Garbage, a forged signature and an oversize payload are rejected.
        assert validate(b"\x00garbage", "peer") is Verdict.REJECT
        forged = bytearray(pledge(circle, now))
        forged[-1] ^= 1
        assert validate(bytes(forged), "peer") is Verdict.REJECT
        assert validate(b"\x95" + b"\x00" * 70_000, "peer") is Verdict.REJECT
        # Only charters are welcome on the announce topic.
        assert alice._validate_announce(pledge(circle, now), "peer") is Verdict.REJECT
        assert alice.refused >= 5


async def test_refusals_are_reported_as_events(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    network = MemoryNetwork(seed=6)
    async with contextlib.AsyncExitStack() as stack:
        alice = await stack.enter_async_context(
            Node(ident(1), tmp_path / "a", transport=network.open_transport, clock=clock)
        )
        circle = await alice.found_circle(
            title="Honey", unit="jar", target=10, currency="EUR", deadline=EPOCH + 3600
        )
        seen: list[Refused] = []

        async def listen() -> None:
            async with alice.events() as events:
                async for event in events:
                    if isinstance(event, Refused):
                        seen.append(event)
                        return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            await trio.testing.wait_all_tasks_blocked()
            alice._circle_validator(circle)(b"\xc1junk", "mallory")
        assert seen and seen[0].reason == "malformed" and seen[0].peer == "mallory"


async def test_publish_of_invalid_bytes_never_reaches_the_circle(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """A raw peer floods a circle topic with junk: honest pledges still arrive, junk never."""
    network = MemoryNetwork(seed=7)
    async with contextlib.AsyncExitStack() as stack:
        alice = await stack.enter_async_context(
            Node(ident(1), tmp_path / "a", transport=network.open_transport, clock=clock)
        )
        bob = await stack.enter_async_context(
            Node(ident(2), tmp_path / "b", transport=network.open_transport, clock=clock)
        )
        mallory = await stack.enter_async_context(network.open_transport(ident(3)))
        await bob.connect(alice.addresses()[0])
        await mallory.connect(alice.addresses()[0])
        circle = await alice.found_circle(
            title="Honey", unit="jar", target=10, currency="EUR", deadline=EPOCH + 3600
        )
        with trio.fail_after(30):
            await bob.wait_until(lambda: circle in bob.circles())
            await bob.join(circle)
            topic = circle_topic(circle)
            await mallory.subscribe(topic)
            for i in range(500):
                await mallory.publish(topic, b"junk" + i.to_bytes(4, "big"))
            await bob.pledge(circle, 3, max_price=500)
            await alice.wait_until(lambda: alice.circle(circle).progress()[0] == 3)
            while alice.refused < 500:  # virtual time: the junk is still in flight
                await trio.sleep(0.01)
        assert alice._store is not None
        assert set(alice._store.ids(circle)) == set(bob._store.ids(circle))  # type: ignore[union-attr]
        assert alice.refused >= 500
        assert bob.refused == 0  # alice never forwarded any junk to bob
