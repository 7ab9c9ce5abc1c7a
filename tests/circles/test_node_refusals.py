"""Pledges and withdrawals the circle would not count are refused, not signed.

A pledge or a withdrawal on a circle closed by a deal, cancelled, expired or
past its deadline, and a withdrawal with no pledge to withdraw, raise
:class:`circles.PledgeRefused` with a reason and a message saying why; the
node signs nothing and uses no sequence number. The library on the in-memory
network with virtual time; the command line through its real subprocesses.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

import protocol
from circles import MemoryNetwork, Node, NodeError, PledgeRefused
from circles._topics import circle_topic

EPOCH = 1_800_000_000


def ident(n: int) -> protocol.Identity:
    return protocol.Identity.from_seed(bytes([n]) * 32)


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@contextlib.asynccontextmanager
async def nodes(
    tmp_path: Path, count: int, *, vendors: int = 0, tick: float = 1.0
) -> AsyncIterator[list[Node]]:
    network = MemoryNetwork(seed=11)
    async with contextlib.AsyncExitStack() as stack:
        started: list[Node] = []
        for i in range(count + vendors):
            node = Node(
                ident(i + 1),
                tmp_path / f"n{i}",
                transport=network.open_transport,
                clock=lambda: EPOCH + trio.current_time(),
                sync_interval=2.0,
                auto_countersign=i >= count,
                tick=tick,
            )
            started.append(await stack.enter_async_context(node))
        for node in started[1:]:
            await node.connect(started[0].addresses()[0])
        yield started


def own_pledges(node: Node, circle: bytes) -> int:
    return len(
        [s for s in node.circle_log(circle, kinds=("pledge",)) if s.signer == node.public_key]
    )


async def refused(call: object, reason: str) -> PledgeRefused:
    """Await ``call`` (a coroutine) and return the PledgeRefused it must raise."""
    with pytest.raises(PledgeRefused) as info:
        await call  # type: ignore[misc]
    assert isinstance(info.value, NodeError)
    assert info.value.reason == reason, str(info.value)
    return info.value


async def found(node: Node, **options: object) -> bytes:
    settings: dict[str, object] = {
        "title": "Olive oil",
        "unit": "tin",
        "target": 10,
        "currency": "EUR",
        "deadline": EPOCH + 3600,
    }
    settings.update(options)
    return await node.found_circle(**settings)  # type: ignore[arg-type]


async def test_a_closed_circle_refuses_pledges_and_withdrawals(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    async with nodes(tmp_path, 2, vendors=1) as (alice, bob, vendor):
        with trio.fail_after(120):
            circle = await found(alice)
            for node in (bob, vendor):
                await node.wait_until(lambda n=node: circle in n.circles())
                await node.join(circle)
            await vendor.offer(
                circle, product="Oil", tiers=[(10, 4200)], capacity=100, valid_until=EPOCH + 7200
            )
            await alice.pledge(circle, 6, max_price=4500)
            await bob.pledge(circle, 4, max_price=4500)
            await alice.wait_until(lambda: alice.circle(circle).deal is not None)
        before = (own_pledges(alice, circle), alice._running_store().counted(circle))
        error = await refused(alice.pledge(circle, 8, max_price=4500), "closed")
        assert "closed by a deal on 2027-01-15" in str(error)
        assert "no longer count" in str(error)
        await refused(alice.withdraw(circle), "closed")
        # Nothing signed, no sequence number used.
        assert (own_pledges(alice, circle), alice._running_store().counted(circle)) == before
        assert alice.circle(circle).status is protocol.CircleStatus.CLOSED


async def test_an_expired_circle_and_a_passed_deadline_refuse(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    async with nodes(tmp_path, 1, tick=10_000) as (alice,):
        circle = await found(alice, deadline=EPOCH + 60)
        await alice.pledge(circle, 2, max_price=100)
        await trio.sleep(120)
        # The node's tick has not handed the state the time yet: the deadline decides.
        assert alice.circle(circle).status is protocol.CircleStatus.FORMING
        error = await refused(alice.withdraw(circle), "late")
        assert "would not count" in str(error)
        await refused(alice.pledge(circle, 3, max_price=100), "late")
    async with nodes(tmp_path, 1) as (alice,):
        await trio.sleep(2)
        assert alice.circle(circle).status is protocol.CircleStatus.EXPIRED
        error = await refused(alice.withdraw(circle), "expired")
        assert "expired on 2027-01-15" in str(error) and "without a deal" in str(error)
        await refused(alice.pledge(circle, 3, max_price=100), "expired")
        assert own_pledges(alice, circle) == 1


async def test_a_cancelled_circle_refuses(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    async with nodes(tmp_path, 1) as (alice,):
        circle = await found(alice, on_miss="extend")
        await alice.pledge(circle, 2, max_price=100)
        # The founder signs two different extensions: the circle is cancelled.
        for deadline in (EPOCH + 7200, EPOCH + 9000):
            extension = protocol.Extension(circle=circle, deadline=deadline, created=alice.now())
            envelope = protocol.seal(extension, alice.identity)
            await alice.transport.publish(circle_topic(circle), envelope.data)
        with trio.fail_after(10):
            await alice.wait_until(
                lambda: alice.circle(circle).status is protocol.CircleStatus.CANCELLED
            )
        error = await refused(alice.pledge(circle, 3, max_price=100), "cancelled")
        assert "cancelled" in str(error)
        await refused(alice.withdraw(circle), "cancelled")


async def test_a_withdrawal_needs_a_pledge_to_withdraw(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    async with nodes(tmp_path, 2) as (alice, bob):
        circle = await found(alice)
        error = await refused(alice.withdraw(circle), "no-pledge")
        assert "no pledge" in str(error)
        assert alice._running_store().counted(circle) == 0
        # The raw protocol move, a pledge of quantity 0, is still signed when asked for.
        assert (await alice.pledge(circle, 0, max_price=0)).message.seq == 1
        await alice.pledge(circle, 2, max_price=100)
        withdrawal = await alice.withdraw(circle)
        assert withdrawal.message.quantity == 0 and withdrawal.message.seq == 3
        await refused(alice.withdraw(circle), "no-pledge")
        # A pledge the circle does not count yet (invite-only, not admitted) can be withdrawn.
        club = await found(alice, title="Club", invite_only=True)
        with trio.fail_after(30):
            await bob.wait_until(lambda: club in bob.circles())
            await bob.join(club)
        await bob.pledge(club, 1, max_price=100)
        assert bob.public_key not in bob.circle(club).live_pledges()
        assert (await bob.withdraw(club)).message.quantity == 0


CIRCLES = [sys.executable, "-m", "circles._cli"]
LOOPBACK = ["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"]


def run(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CIRCLES, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_command_line_refuses_a_withdrawal_with_no_pledge(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "n")
    up = run("up", "--data-dir", data_dir, *LOOPBACK)
    assert up.returncode == 0, up.stderr
    try:
        made = run(
            "circle", "new", "--data-dir", data_dir, "--what", "Rice", "--unit", "bag",
            "--target", "3", "--currency", "EUR", "--deadline", "2h", "--json",
        )  # fmt: skip
        circle = json.loads(made.stdout)["id"]
        done = run("withdraw", circle, "--data-dir", data_dir)
        assert done.returncode == 1, done.stdout
        assert "no pledge in circle" in done.stderr
        assert "signed" not in done.stdout
        as_json = run("withdraw", circle, "--data-dir", data_dir, "--json")
        assert as_json.returncode == 1
        assert json.loads(as_json.stdout)["reason"] == "no-pledge"
        # After a pledge, the withdrawal is signed.
        assert (
            run("pledge", circle, "1", "--max-price", "2", "--data-dir", data_dir).returncode == 0
        )
        assert run("withdraw", circle, "--data-dir", data_dir).returncode == 0
    finally:
        run("down", "--data-dir", data_dir, timeout=60)
