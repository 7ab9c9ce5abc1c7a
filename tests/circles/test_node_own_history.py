"""A member whose store is lost never signs a sequence number it may have signed before.

Real py-libp2p hosts on 127.0.0.1 and SQLite files in a temporary directory:
a member pledges, its node stops, its store file is emptied (truncated to
0 bytes) or deleted while its key is kept, and the node starts again on the
same data directory. Its next pledge must take a sequence number above the
one it signed before (which sync brings back from its peers), or the two
pledges with one number would make every peer exclude it as an equivocator.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import protocol
from circles import Node, NodeError, OwnHistoryRecovered, OwnHistoryUnknown, Store
from circles._store import STORE_FILE

DEADLINE_AHEAD = 24 * 3600


def ident(n: int) -> protocol.Identity:
    return protocol.Identity.from_seed(b"own-history".ljust(28, b".") + n.to_bytes(4, "big"))


def make_node(tmp_path: Path, n: int, **options: object) -> Node:
    options.setdefault("sync_interval", 1.0)
    return Node(ident(n), tmp_path / f"node-{n}", **options)  # type: ignore[arg-type]


def lose_store(data_dir: Path, *, how: str) -> None:
    """What a user's mishap leaves: the store file emptied or gone, the key file kept."""
    store = data_dir / STORE_FILE
    for side in ("-wal", "-shm"):
        Path(f"{store}{side}").unlink(missing_ok=True)
    if how == "truncated":
        store.write_bytes(b"")
    else:
        store.unlink()


@contextlib.asynccontextmanager
async def founder_and_member(tmp_path: Path) -> AsyncIterator[tuple[Node, bytes, int]]:
    """A founder that stays up, a circle, and the member's first pledge (seq 1) on its disk."""
    async with make_node(tmp_path, 0) as founder:
        circle = await founder.found_circle(
            title="Olive oil",
            unit="tin",
            target=1000,
            currency="EUR",
            deadline=founder.now() + DEADLINE_AHEAD,
        )
        async with make_node(tmp_path, 1) as member:
            await member.connect(founder.addresses()[0])
            with trio.fail_after(30):
                await member.join(circle)
            first = await member.pledge(circle, 3, max_price=500)
            assert first.message.seq == 1
            with trio.fail_after(30):
                await founder.wait_until(
                    lambda: founder.circle(circle).pledge(first.id) is not None
                )
        yield founder, circle, first.message.seq


@pytest.mark.parametrize("how", ["truncated", "deleted"])
async def test_a_member_whose_store_was_lost_pledges_above_its_old_sequence_number(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="circles")
    async with founder_and_member(tmp_path) as (founder, circle, old_seq):
        lose_store(tmp_path / "node-1", how=how)
        async with make_node(tmp_path, 1) as member:
            assert member.store_condition == ("emptied" if how == "truncated" else "new")
            async with member.events() as events:
                await member.connect(founder.addresses()[0])
                with trio.fail_after(30):
                    await member.join(circle)
                second = await member.pledge(circle, 4, max_price=450)
                assert second.message.seq > old_seq
                with trio.fail_after(10):
                    async for event in events:
                        if isinstance(event, OwnHistoryRecovered):
                            break
                assert event.circle == circle
                assert event.highest_seq == old_seq
            with trio.fail_after(30):
                await founder.wait_until(
                    lambda: founder.circle(circle).pledge(second.id) is not None
                )
            for node in (founder, member):
                state = node.circle(circle)
                assert member.public_key not in state.equivocators()
                assert state.live_pledges()[member.public_key].id == second.id
    if how == "truncated":
        # Said loudly: the history, sequence numbers included, is gone from this machine.
        assert any(
            r.levelno >= logging.ERROR and "sequence numbers" in r.getMessage()
            for r in caplog.records
        )


async def test_a_member_whose_store_was_lost_can_withdraw_its_old_pledge(tmp_path: Path) -> None:
    """The store no longer holds the pledge to withdraw: recovery brings it back first."""
    async with founder_and_member(tmp_path) as (founder, circle, old_seq):
        lose_store(tmp_path / "node-1", how="truncated")
        async with make_node(tmp_path, 1) as member:
            await member.connect(founder.addresses()[0])
            with trio.fail_after(30):
                await member.join(circle)
            withdrawal = await member.withdraw(circle)
            assert withdrawal.message.seq == old_seq + 1
            assert withdrawal.message.quantity == 0
            with trio.fail_after(30):
                await founder.wait_until(
                    lambda: member.public_key not in founder.circle(circle).live_pledges()
                )
            assert member.public_key not in founder.circle(circle).equivocators()


async def test_first_pledge_on_a_lost_store_is_refused_when_no_peer_can_tell(
    tmp_path: Path,
) -> None:
    """The store is sound but has no record of the member's pledges in the circle
    (it was emptied, then got the charter back): with no peer there to show the
    member's earlier pledges, the node refuses rather than guess a number."""
    async with founder_and_member(tmp_path) as (founder, circle, _):
        lose_store(tmp_path / "node-1", how="truncated")
        charter = founder.circle(circle).charter
        with Store.open(tmp_path / "node-1") as store:
            assert store.condition == "emptied"
            store.put(charter)
            store.mark_joined(circle)
        async with make_node(tmp_path, 1) as member:
            assert member.store_condition == "intact"
            with trio.fail_after(30), pytest.raises(OwnHistoryUnknown) as refused:
                await member.pledge(circle, 4, max_price=450)
            assert isinstance(refused.value, NodeError)
            assert refused.value.reason == "own-history-unknown"
            assert "connect" in str(refused.value)
            # Once a peer is there, the same call works and counts above the old pledge.
            await member.connect(founder.addresses()[0])
            second = await member.pledge(circle, 4, max_price=450)
            assert second.message.seq == 2
            assert member.public_key not in member.circle(circle).equivocators()


async def test_an_intact_store_is_the_truth_and_needs_no_peer(tmp_path: Path) -> None:
    """A founder pledges in its own circle with no peer at all, before and after a restart."""
    async with make_node(tmp_path, 0) as founder:
        assert founder.store_condition == "new"
        circle = await founder.found_circle(
            title="Flour",
            unit="sack",
            target=10,
            currency="EUR",
            deadline=founder.now() + DEADLINE_AHEAD,
        )
        assert (await founder.pledge(circle, 1, max_price=100)).message.seq == 1
    async with make_node(tmp_path, 0) as founder:
        assert founder.store_condition == "intact"
        assert (await founder.pledge(circle, 2, max_price=100)).message.seq == 2


async def test_a_peer_that_does_not_hold_the_circle_cannot_vouch(tmp_path: Path) -> None:
    """Connected, but only to a node that never heard of the circle: still refused."""
    async with founder_and_member(tmp_path) as (founder, circle, _):
        charter = founder.circle(circle).charter
    lose_store(tmp_path / "node-1", how="deleted")
    with Store.open(tmp_path / "node-1") as store:
        store.put(charter)
        store.mark_joined(circle)
    async with make_node(tmp_path, 2) as stranger, make_node(tmp_path, 1) as member:
        await member.connect(stranger.addresses()[0])
        with trio.fail_after(60), pytest.raises(OwnHistoryUnknown, match="no peer answered"):
            await member.pledge(circle, 4, max_price=450)
        assert member._running_store().counted(circle) is None


CIRCLES = [sys.executable, "-m", "circles._cli"]
LOOPBACK = ["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"]


def run(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*CIRCLES, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def test_circles_up_says_loudly_that_an_emptied_store_lost_the_history(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "n")
    first = run("up", "--data-dir", data_dir, *LOOPBACK)
    assert "warning" not in first.stdout
    run("down", "--data-dir", data_dir, timeout=60)
    (Path(data_dir) / STORE_FILE).write_bytes(b"")
    try:
        again = run("up", "--data-dir", data_dir, *LOOPBACK)
        assert "warning: the store file was empty" in again.stdout
        assert "sequence numbers included, is gone" in again.stdout
        status = json.loads(run("status", "--data-dir", data_dir, "--json").stdout)
        assert status["store"] == "emptied"
        assert "sequence numbers" in (Path(data_dir) / "node.log").read_text()
    finally:
        subprocess.run(
            [*CIRCLES, "down", "--data-dir", data_dir], capture_output=True, timeout=60, check=False
        )
