"""An exception while applying one stored envelope never stops the node nor its restart.

A fault in the circle's rules (``CircleState.apply`` raising, where a refusal
would be an event) used to kill the node's delivery task, and the same
envelope killed every restart in ``_replay``. The node now sets the envelope
aside (kept, recorded in the store, logged once, reported as an event and by
``Node.set_aside()``), rebuilds the circle's state without it, and goes on;
a restart leaves it out and loads the rest.

The fault is forced first (``CircleState.apply`` patched to half-apply one
chosen envelope and raise), on real SQLite stores; the last test makes it
with a real attack, a self-made misbehaviour proof gossiped over libp2p.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import protocol
from circles import (
    EnvelopeSetAside,
    MemoryNetwork,
    Node,
    NodeEvent,
    SetAside,
    Store,
    Verdict,
)
from circles._topics import circle_topic
from protocol._certificate import make_proof

EPOCH = 1_800_000_000


def ident(n: int) -> protocol.Identity:
    return protocol.Identity.from_seed(bytes([n]) * 32)


def clock() -> float:
    return EPOCH + trio.current_time()


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class Fault:
    """Makes ``CircleState.apply`` apply one chosen envelope half-way, then raise."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.target: bytes | None = None
        self.raised = 0
        original: Callable[..., Any] = protocol.CircleState.apply

        def apply(state: Any, envelope: Any, now: int) -> Any:
            events = original(state, envelope, now)
            if envelope.id == self.target:
                # The state now holds the envelope: only a rebuild takes it out.
                self.raised += 1
                raise RuntimeError("forced fault in the circle's rules")
            return events

        monkeypatch.setattr(protocol.CircleState, "apply", apply)


@contextlib.asynccontextmanager
async def running(tmp_path: Path, network: MemoryNetwork, n: int, name: str) -> AsyncIterator[Node]:
    async with Node(
        ident(n), tmp_path / name, transport=network.open_transport, clock=clock, sync_interval=2.0
    ) as node:
        yield node


async def test_an_envelope_whose_apply_raises_is_set_aside_and_the_node_goes_on(
    tmp_path: Path, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    fault = Fault(monkeypatch)
    network = MemoryNetwork(seed=11)
    events: list[NodeEvent] = []
    async with (
        running(tmp_path, network, 1, "alice") as alice,
        running(tmp_path, network, 2, "bob") as bob,
    ):
        await bob.connect(alice.addresses()[0])
        deadline = EPOCH + 3600
        oil = await alice.found_circle(
            title="Oil", unit="tin", target=100, currency="EUR", deadline=deadline
        )
        rice = await alice.found_circle(
            title="Rice", unit="kg", target=100, currency="EUR", deadline=deadline
        )
        with trio.fail_after(30):
            await bob.join(oil)
            await bob.join(rice)

        async def record() -> None:
            async with bob.events() as stream:
                async for event in stream:
                    events.append(event)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(record)
            await trio.sleep(0)
            # Bob's node meets the fault on Alice's first oil pledge, by gossip.
            bad = protocol.seal(
                protocol.Pledge(
                    circle=oil,
                    seq=1,
                    quantity=5,
                    max_price=300,
                    currency="EUR",
                    tolerance=0,
                    created=alice.now(),
                ),
                alice.identity,
            )
            fault.target = bad.id
            await alice.transport.publish(circle_topic(oil), bad.data)
            with trio.fail_after(30):
                await bob.wait_until(lambda: bool(bob.set_aside()))
            # Later envelopes, in that circle and in another, still apply.
            later = await alice.pledge(oil, 7, max_price=300)
            other = await alice.pledge(rice, 3, max_price=200)
            own = await bob.pledge(oil, 2, max_price=250)
            with trio.fail_after(30):
                await bob.wait_until(
                    lambda: (
                        bob.circle(oil).pledge(later.id) is not None
                        and bob.circle(rice).pledge(other.id) is not None
                    )
                )
            nursery.cancel_scope.cancel()

        # Once at Bob's (and once at Alice's, whose node takes its own publication).
        raised = fault.raised
        [entry] = bob.set_aside()
        assert (entry.id, entry.circle) == (bad.id, oil)
        assert "forced fault" in entry.reason
        assert [e for e in events if isinstance(e, EnvelopeSetAside)] == [
            EnvelopeSetAside(circle=oil, envelope=bad.id, reason=entry.reason)
        ]
        state = bob.circle(oil)
        # Rebuilt: the half-applied pledge is gone from the state, the rest is there.
        assert state.pledge(bad.id) is None
        assert state.pledge(own.id) is not None
        assert bad.id not in [s.id for s in bob.circle_log(oil)]
        # Kept (its id still counts as held, so sync does not fetch it again),
        # not served by sync, and a copy is neither taken nor forwarded.
        assert bad.id in bob._store  # type: ignore[operator]
        assert bad.id in bob.syncer._log.ids(oil)  # type: ignore[attr-defined,operator]
        served = [i for i, _ in bob.syncer._log.envelopes(oil)]  # type: ignore[attr-defined]
        assert bad.id not in served
        assert bob._admit(bad.data, "peer") is Verdict.IGNORE
        digest = state.digest()

    # A restart on the same data directory, fault still there: it comes up,
    # leaves the envelope out (never applied again) and loads the rest.
    async with running(tmp_path, network, 2, "bob") as bob:
        assert fault.raised == raised
        assert [(e.id, e.circle) for e in bob.set_aside()] == [(bad.id, oil)]
        assert bob.circle(oil).digest() == digest
        assert bob.circle(rice).pledge(other.id) is not None
    # The record is in the store itself.
    with Store.open(tmp_path / "bob") as store:
        assert [(e.id, e.circle) for e in store.set_aside_envelopes()] == [(bad.id, oil)]


async def test_a_restart_sets_aside_an_envelope_that_fails_on_replay(
    tmp_path: Path, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault met only at start (a new version, say): replay sets it aside, loads the rest."""
    network = MemoryNetwork(seed=12)
    async with running(tmp_path, network, 1, "alice") as alice:
        circle = await alice.found_circle(
            title="Oil", unit="tin", target=10, currency="EUR", deadline=EPOCH + 3600
        )
        first = await alice.pledge(circle, 4, max_price=300)
        second = await alice.pledge(circle, 6, max_price=300)
        other = await alice.found_circle(
            title="Tea", unit="box", target=10, currency="EUR", deadline=EPOCH + 3600
        )
        tea = await alice.pledge(other, 2, max_price=100)
    fault = Fault(monkeypatch)
    fault.target = first.id
    async with running(tmp_path, network, 1, "alice") as alice:
        assert [(e.id, e.circle) for e in alice.set_aside()] == [(first.id, circle)]
        state = alice.circle(circle)
        assert state.pledge(first.id) is None
        assert state.pledge(second.id) is not None
        assert alice.circle(other).pledge(tea.id) is not None
        # The node works: its next pledge takes the next sequence number.
        third = await alice.pledge(circle, 1, max_price=300)
        assert third.message.seq == second.message.seq + 1


async def test_a_fault_while_time_passes_rebuilds_the_circle(
    tmp_path: Path, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    network = MemoryNetwork(seed=13)
    original = protocol.CircleState.advance
    failures: list[int] = []

    def advance(state: Any, now: int) -> Any:
        events = original(state, now)
        if now > EPOCH + 30 and not failures:
            failures.append(now)
            raise RuntimeError("forced fault while time passes")
        return events

    monkeypatch.setattr(protocol.CircleState, "advance", advance)
    async with running(tmp_path, network, 1, "alice") as alice:
        circle = await alice.found_circle(
            title="Oil", unit="tin", target=10, currency="EUR", deadline=EPOCH + 30
        )
        pledge = await alice.pledge(circle, 4, max_price=300)
        with trio.fail_after(600):
            await alice.wait_until(
                lambda: alice.circle(circle).status is protocol.CircleStatus.EXPIRED
            )
        assert failures
        assert alice.circle(circle).pledge(pledge.id) is not None
        assert alice.set_aside() == []
        # Still running: it founds and pledges.
        again = await alice.found_circle(
            title="Tea", unit="box", target=10, currency="EUR", deadline=alice.now() + 60
        )
        await alice.pledge(again, 1, max_price=100)


def test_the_set_aside_table_is_added_to_an_older_store(tmp_path: Path) -> None:
    """A store made before the table (schema 1) gains it when opened."""
    import sqlite3

    with Store.open(tmp_path) as store:
        path = store.path
    db = sqlite3.connect(path)
    db.execute("DROP TABLE set_aside")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    circle = bytes(32)
    with Store.open(tmp_path) as store:
        entry = store.set_aside(b"\1" * 32, circle, "why", now=5)
        assert entry == SetAside(id=b"\1" * 32, circle=circle, reason="why", since=5)
        store.set_aside(b"\1" * 32, circle, "again", now=6)  # the first record stays
    with Store.open(tmp_path) as store:
        assert store.set_aside_envelopes() == [entry]


def twin_pledges(
    circle: bytes, attacker: protocol.Identity, now: int
) -> tuple[protocol.Envelope[Any], protocol.Envelope[Any]]:
    """Two pledges of one key with one sequence number, the second in another currency."""
    pledges = [
        protocol.seal(
            protocol.Pledge(
                circle=circle,
                seq=1,
                quantity=10,
                max_price=400,
                currency=currency,
                tolerance=0,
                created=now,
            ),
            attacker,
        )
        for currency in ("EUR", "USD")
    ]
    return pledges[0], pledges[1]


async def test_a_self_made_misbehaviour_proof_does_not_stop_a_libp2p_node(
    tmp_path: Path,
) -> None:
    """Issue 11 item 1: any key could crash every node following a circle, and its restarts.

    The attacker offers the circle's target at one tier, then gossips a proof
    pairing its own valid pledge (enough for quorum) with a same-sequence
    twin in another currency. On c4e5d4a applying the proof raised
    ``no-transition`` and the victim's node died, and died again at restart.
    Now the proof proves nothing (a twin the circle refuses outright) and is
    refused at the door; the node goes on.
    """
    options: dict[str, Any] = {"sync_interval": 1.0}
    async with (
        Node(ident(1), tmp_path / "victim", **options) as victim,
        Node(ident(66), tmp_path / "attacker", **options) as attacker,
        Node(ident(67), tmp_path / "mallory", **options) as mallory,
    ):
        with trio.fail_after(30):
            await attacker.connect(victim.addresses()[0])
            await mallory.connect(victim.addresses()[0])
            circle = await victim.found_circle(
                title="Oil",
                unit="tin",
                target=10,
                currency="EUR",
                ceiling=500,
                deadline=victim.now() + 3600,
            )
            await attacker.join(circle)
            offer = await attacker.offer(
                circle,
                product="oil",
                tiers=[(10, 300)],
                capacity=100,
                valid_until=victim.now() + 7200,
            )
            await victim.wait_until(lambda: victim.log_entry(offer.id) is not None)
        first, second = twin_pledges(circle, attacker.identity, victim.now())
        proof = protocol.seal(make_proof(first, second), attacker.identity)
        refused = victim.refused
        # Sent by a node that never joined the circle, so no validator of its own
        # (which knows the charter) stops it before it reaches the victim.
        with trio.fail_after(30):
            while victim.refused == refused:
                await mallory.transport.publish(circle_topic(circle), proof.data)
                await trio.sleep(0.5)
        assert victim.log_entry(proof.id) is None
        assert victim.set_aside() == []
        # Still running: the node takes its member's next move.
        mine = await victim.pledge(circle, 3, max_price=400)
        with trio.fail_after(30):
            await attacker.wait_until(lambda: attacker.log_entry(mine.id) is not None)
        state = victim.circle(circle)
        assert state.pledge(mine.id) is not None
        digest = state.digest()
    # And its restart on the same data directory comes up, in the same state.
    async with Node(ident(1), tmp_path / "victim") as victim:
        assert victim.circle(circle).digest() == digest
        assert victim.circle(circle).pledge(mine.id) is not None


def test_circles_status_lists_what_is_set_aside(tmp_path: Path) -> None:
    """``circles status`` (a subprocess, as a user types it) shows each envelope set aside."""
    import json
    import subprocess
    import sys

    from circles import save_identity

    data = tmp_path / "d"  # short: the control socket's path must stay under ~100 bytes
    founder = ident(1)
    charter = protocol.seal(
        protocol.Charter(
            title="Oil",
            unit="tin",
            target=10,
            currency="EUR",
            ceiling=None,
            deadline=4_000_000_000,
            place=None,
            tags=(),
            invite_only=False,
            members_invite=False,
            on_miss="expire",
            created=EPOCH,
        ),
        founder,
    )
    first, _ = twin_pledges(charter.id, founder, EPOCH)
    # The store holds the founder's history: the founder's key must be there too.
    save_identity(founder, data / "identity.key")
    with Store.open(data) as store:
        store.put_own(charter)
        store.put_own(first)
        store.set_aside(first.id, charter.id, "RuntimeError: a fault", now=EPOCH)

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "circles._cli", *args, "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    cli("up", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns")
    try:
        status = json.loads(cli("status", "--json"))
        text = cli("status")
    finally:
        cli("down")
    assert status["set_aside"] == [
        {"id": first.id.hex(), "circle": charter.id.hex(), "reason": "RuntimeError: a fault"}
    ]
    assert status["circles"] == 1
    assert f"set aside {first.id.hex()[:16]} of circle {charter.id.hex()[:16]}" in text
    assert "RuntimeError: a fault" in text
