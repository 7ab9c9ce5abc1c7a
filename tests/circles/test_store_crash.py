"""Crash safety: a member pledging in a loop is killed with SIGKILL, again and again.

After every kill the store is reopened and must hold every pledge whose
``put_own`` had returned, pass ``PRAGMA integrity_check``, and show that no
sequence number was ever signed for two different pledges.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from circles import Store

from ._crash_checks import check_after_kill, reused_numbers
from .crash_worker import CHARTER, MEMBER, pledge

WORKER = Path(__file__).with_name("crash_worker.py")
TRIALS = 24
SEED = 20261123


@dataclass
class Transcript:
    """What one worker said before it died."""

    lines: list[str] = field(default_factory=list)
    acks: int = 0
    opening: trio.Event = field(default_factory=trio.Event)
    ready: trio.Event = field(default_factory=trio.Event)
    enough: trio.Event = field(default_factory=trio.Event)


async def run_and_kill(data_dir: Path, rng: random.Random, log: Path, *, first: bool) -> Transcript:
    """Start the worker, SIGKILL it at a seeded random moment, return all it printed."""
    transcript = Transcript()
    # Mostly after some acknowledged pledges; sometimes (always the first time)
    # while it opens the store: creating the schema, or recovering the log.
    early = first or rng.random() < 0.2
    wanted_acks = rng.randint(1, 40)
    jitter = rng.uniform(0, 0.003 if early else 0.03)

    async def read(stream: trio.abc.ReceiveStream) -> None:
        buffer = b""
        while chunk := await stream.receive_some(65536):
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                line = raw.decode()
                transcript.lines.append(line)
                if line == "opening":
                    transcript.opening.set()
                elif line == "ready":
                    transcript.ready.set()
                elif line.startswith("ack "):
                    transcript.acks += 1
                    if transcript.acks >= wanted_acks:
                        transcript.enough.set()
        # A line cut by the kill was never acknowledged: it is dropped.

    with log.open("ab") as stderr, trio.fail_after(120):
        process = await trio.lowlevel.open_process(
            [sys.executable, str(WORKER), str(data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        assert process.stdout is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, process.stdout)
            await (transcript.opening if early else transcript.enough).wait()
            await trio.sleep(jitter)  # the random moment of the kill, not a wait for a state
            process.send_signal(signal.SIGKILL)
        await process.wait()
    assert process.returncode == -signal.SIGKILL, (
        f"the worker exited by itself ({process.returncode}): {log.read_text()[-2000:]}"
    )
    return transcript


def test_reused_numbers_finds_equivocation() -> None:
    assert reused_numbers({1: {b"a"}, 2: {b"b"}}) == {}
    assert reused_numbers({1: {b"a"}, 2: {b"b", b"c"}}) == {2: {b"b", b"c"}}


def test_check_after_kill_fails_on_a_lost_pledge_or_a_reused_number(tmp_path: Path) -> None:
    kept, lost, other = pledge(1, 5, MEMBER), pledge(2, 5, MEMBER), pledge(1, 6, MEMBER)
    # No file yet: fine while nothing was acknowledged.
    assert check_after_kill(0, tmp_path, CHARTER.id, MEMBER.public_key, acked={}, signed={}) is None
    with pytest.raises(AssertionError, match="lost"):
        check_after_kill(0, tmp_path, CHARTER.id, MEMBER.public_key, acked={kept.id: 1}, signed={})
    with Store.open(tmp_path) as store:
        store.put_own(CHARTER)
        store.put_own(kept)
    signed: dict[int, set[bytes]] = {}
    found = check_after_kill(
        1, tmp_path, CHARTER.id, MEMBER.public_key, acked={kept.id: 1}, signed=signed
    )
    assert found == {kept.id: 1}
    assert signed == {1: {kept.id}}
    with pytest.raises(AssertionError, match="lost"):
        check_after_kill(2, tmp_path, CHARTER.id, MEMBER.public_key, acked={lost.id: 2}, signed={})
    with pytest.raises(AssertionError, match="signed twice"):
        check_after_kill(
            3, tmp_path, CHARTER.id, MEMBER.public_key, acked={}, signed={1: {other.id}}
        )


@pytest.mark.slow
async def test_sigkill_never_loses_an_acknowledged_pledge_nor_reuses_a_number(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    data_dir = tmp_path / "data"
    log = tmp_path / "worker-stderr.log"
    signed: dict[int, set[bytes]] = defaultdict(set)
    acked: dict[bytes, int] = {}
    stored: dict[bytes, int] = {}
    early = 0
    for trial in range(TRIALS):
        transcript = await run_and_kill(data_dir, rng, log, first=trial == 0)
        for line in transcript.lines:
            word, *rest = line.split()
            if word in {"signed", "ack"}:
                seq, message_id = int(rest[0]), bytes.fromhex(rest[1])
                signed[seq].add(message_id)
                if word == "ack":
                    acked[message_id] = seq
        if not transcript.ready.is_set():
            early += 1
        found = check_after_kill(
            trial, data_dir, CHARTER.id, MEMBER.public_key, acked=acked, signed=signed
        )
        if found is not None:
            stored = found
    cut = sum(len(ids) for ids in signed.values()) - len(stored)
    print(
        f"\n{TRIALS} kills, {early} while opening the store: {len(acked)} pledges acknowledged, "
        f"{len(stored)} stored, {cut} signed but never stored (killed in between)"
    )
    # The trials did exercise the store: pledges were acknowledged across many restarts.
    assert len(acked) >= TRIALS
    assert sorted(acked.values()) == sorted(set(acked.values()))
