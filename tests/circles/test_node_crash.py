"""Crash safety of a whole node: a pledging member's node is SIGKILLed, again and again.

The member's node runs in a subprocess (node_crash_worker.py) on 127.0.0.1,
connected to a peer node that runs here, in the test. At a seeded random
moment it is killed with SIGKILL: mostly right after some ``pledge()`` calls
returned, sometimes while it starts (importing, opening the store, dialling,
joining). After each kill its store must pass ``PRAGMA integrity_check`` and
hold every pledge whose ``pledge()`` had returned; no sequence number may
ever be signed for two different pledges; and once restarted, the node must
reconverge with its peer (the same circle digest on both, the peer holding the
member's latest stored pledge, even one the kill kept from being published).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import trio

import protocol
from circles import Node

from ._crash_checks import check_after_kill
from .node_crash_worker import MAX_PRICE, MEMBER

WORKER = Path(__file__).with_name("node_crash_worker.py")
TRIALS = 20
SEED = 20261123
PEER = protocol.Identity.from_seed(b"\x06" * 32)
#: Starting a node includes importing libp2p: about a second, more under load.
START_TIMEOUT = 60
#: Reconverging takes one sync round trip once connected.
CONVERGE_TIMEOUT = 30


class Worker:
    """A running worker and what it printed."""

    def __init__(self, process: trio.Process, log: Path) -> None:
        self.process = process
        self.log = log
        self.up = trio.Event()
        self.acks: list[tuple[int, bytes]] = []
        self.digest = b""
        self.changed = trio.Event()

    async def read(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        while chunk := await self.process.stdout.receive_some(65536):
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                word, *rest = raw.decode().split()
                if word == "up":
                    self.up.set()
                elif word == "digest":
                    self.digest = bytes.fromhex(rest[0])
                elif word == "ack":
                    self.acks.append((int(rest[0]), bytes.fromhex(rest[1])))
                self.changed.set()
                self.changed = trio.Event()
        # A line cut by the kill was never acknowledged: it is dropped.

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


async def converged(peer: Node, worker: Worker, circle: bytes, latest: bytes | None) -> None:
    """Return once the worker's digest equals the peer's and the peer holds ``latest``."""

    def done() -> bool:
        state = peer.circle(circle)
        live = state.live_pledges().get(MEMBER.public_key)
        holds_latest = latest is None or (live is not None and live.id == latest)
        return holds_latest and worker.digest == state.digest()

    while not done():
        # Wake on whichever changes first: the peer's state or the worker's output.
        async with trio.open_nursery() as nursery:
            digest = peer.circle(circle).digest()

            async def peer_changed(before: bytes = digest) -> None:
                await peer.wait_until(lambda: peer.circle(circle).digest() != before)
                nursery.cancel_scope.cancel()

            async def worker_changed() -> None:
                await worker.changed.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(peer_changed)
            nursery.start_soon(worker_changed)


@pytest.mark.slow
async def test_sigkilled_node_keeps_acknowledged_pledges_and_reconverges(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    data_dir = tmp_path / "member"
    log = tmp_path / "worker-stderr.log"
    signed: dict[int, set[bytes]] = defaultdict(set)
    acked: dict[bytes, int] = {}
    stored: dict[bytes, int] = {}
    early = reconverged = 0
    async with Node(PEER, tmp_path / "peer", sync_interval=1.0) as peer:
        circle = await peer.found_circle(
            title="crash test",
            unit="kg",
            target=10**9,
            currency="EUR",
            deadline=peer.now() + 3600,
            ceiling=MAX_PRICE,
        )
        address = peer.addresses()[0]
        # One start more than kills: the last start only checks reconvergence.
        for trial in range(TRIALS + 1):
            last = trial == TRIALS
            # The member's latest pledge on disk, which the peer must end up with.
            latest = max(stored, key=stored.__getitem__) if stored else None
            # Every fourth kill lands at a random moment of the start-up.
            early_kill = not last and trial % 4 == 2
            wanted_acks = rng.randint(1, 30)
            jitter = rng.uniform(0, 2.0 if early_kill else 0.03)
            with log.open("ab") as stderr:
                process = await trio.lowlevel.open_process(
                    [sys.executable, str(WORKER), str(data_dir), address, circle.hex()],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                )
            worker = Worker(process, log)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(worker.read)
                    if early_kill:
                        # A random moment of its start-up, not a wait for a state.
                        await trio.sleep(jitter)
                        early += 1
                    else:
                        with trio.fail_after(START_TIMEOUT):
                            await worker.up.wait()
                        with trio.move_on_after(CONVERGE_TIMEOUT):
                            await converged(peer, worker, circle, latest)
                        state = peer.circle(circle)
                        live = state.live_pledges().get(MEMBER.public_key)
                        assert worker.digest == state.digest(), (
                            f"trial {trial}: no reconvergence in {CONVERGE_TIMEOUT} s: "
                            f"worker {worker.digest.hex()[:16]}, peer {state.digest().hex()[:16]}, "
                            f"peer holds {live and live.id.hex()[:16]}, latest on disk "
                            f"{latest and latest.hex()[:16]}; {worker.stderr()}"
                        )
                        assert latest is None or (live is not None and live.id == latest)
                        reconverged += 1
                        assert not peer.circle(circle).equivocators()
                        assert process.stdin is not None
                        if last:
                            process.send_signal(signal.SIGTERM)
                            break
                        await process.stdin.send_all(b"go\n")
                        with trio.fail_after(START_TIMEOUT):
                            while len(worker.acks) < wanted_acks:
                                await worker.changed.wait()
                        await trio.sleep(jitter)  # the random moment of the kill
                    process.send_signal(signal.SIGKILL)
                with trio.fail_after(10):
                    await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            if last:
                assert process.returncode == 0, worker.stderr()
                break
            assert process.returncode == -signal.SIGKILL, (
                f"trial {trial}: the worker exited by itself ({process.returncode}): "
                f"{worker.stderr()}"
            )
            for seq, message_id in worker.acks:
                acked[message_id] = seq
                signed[seq].add(message_id)
            live = peer.circle(circle).live_pledges().get(MEMBER.public_key)
            if live is not None:
                signed[live.message.seq].add(live.id)
            found = check_after_kill(
                trial, data_dir, circle, MEMBER.public_key, acked=acked, signed=signed
            )
            if found is not None:
                stored = found
        assert not peer.circle(circle).equivocators()
    print(
        f"\n{TRIALS} kills ({early} during start-up), {reconverged} reconvergences: "
        f"{len(acked)} pledges acknowledged, {len(stored)} stored"
    )
    # The trials did exercise the node: pledges were acknowledged across many restarts.
    assert len(acked) >= TRIALS - early
    assert reconverged >= TRIALS - early
