"""The SQLite store: idempotence, queries, batching, durability settings, reopening."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import protocol
from circles import Store, StoredEnvelope, StoreError
from circles._store import STORE_FILE

ALICE = protocol.Identity.from_seed(bytes(range(32)))
BOB = protocol.Identity.from_seed(bytes(range(1, 33)))
VENDOR = protocol.Identity.from_seed(bytes(range(2, 34)))
T0 = 1_700_000_000


def charter(title: str = "rice", *, by: protocol.Identity = ALICE) -> protocol.Envelope[Any]:
    return protocol.seal(
        protocol.Charter(
            title=title, unit="kg", target=100, currency="EUR", ceiling=None,
            deadline=T0 + 3600, place=None, tags=(), invite_only=False, members_invite=False,
            on_miss="expire", created=T0,
        ),
        by,
    )  # fmt: skip


def pledge(
    circle: bytes, seq: int = 1, quantity: int = 3, *, by: protocol.Identity = ALICE
) -> protocol.Envelope[Any]:
    return protocol.seal(
        protocol.Pledge(
            circle=circle, seq=seq, quantity=quantity, max_price=1200, currency="EUR",
            tolerance=0, created=T0 + seq,
        ),
        by,
    )  # fmt: skip


def deal(circle: bytes) -> protocol.Envelope[Any]:
    return protocol.seal(
        protocol.Deal(
            circle=circle, certificate=b"\x07" * 32, unit_price=900, currency="EUR", total=100,
            created=T0 + 60,
        ),
        VENDOR,
    )  # fmt: skip


def receipt(deal_id: bytes) -> protocol.Envelope[Any]:
    return protocol.seal(
        protocol.Receipt(
            deal=deal_id, vendor=VENDOR.public_key, fulfilled="yes", rating=5, comment="",
            created=T0 + 120,
        ),
        BOB,
    )  # fmt: skip


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def raw_count(directory: Path) -> int:
    """Rows committed to disk, seen through a second connection (not the store's)."""
    with closing(sqlite3.connect(directory / STORE_FILE)) as db:
        return int(db.execute("SELECT COUNT(*) FROM envelopes").fetchone()[0])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path) as opened:
        yield opened


# -- idempotence ---------------------------------------------------------------


def test_put_is_idempotent_by_id(store: Store) -> None:
    c = charter()
    p = pledge(c.id)
    assert store.put(c) is True
    assert store.put(p) is True
    assert store.put(p) is False
    assert store.put_own(p) is False
    assert store.put(c) is False
    assert store.count() == 2
    assert store.ids(c.id) == [c.id, p.id]


def test_put_own_is_idempotent(store: Store) -> None:
    c = charter()
    assert store.put_own(c) is True
    assert store.put_own(c) is False
    assert store.put(c) is False
    assert store.count() == 1


# Each example opens a store and commits with fsync: bounded apart from the profile.
@settings(max_examples=60)
@given(st.lists(st.integers(0, 11), max_size=40), st.integers(1, 5))
def test_any_sequence_of_puts_stores_each_envelope_once(picks: list[int], batch: int) -> None:
    c = charter()
    pool = [c] + [pledge(c.id, seq=1 + i % 4, quantity=1 + i, by=(ALICE, BOB)[i % 2])
                  for i in range(11)]  # fmt: skip
    with (
        tempfile.TemporaryDirectory() as directory,
        Store.open(directory, max_batch=batch, max_delay=3600) as store,
    ):
        expected: list[bytes] = []
        for pick in picks:
            envelope = pool[pick]
            new = envelope.id not in expected
            assert store.put(envelope) is new
            if new:
                expected.append(envelope.id)
        assert store.count() == len(expected)
        assert store.count(c.id) == len(expected)
        assert store.ids(c.id) == expected
        assert [s.id for s in store.envelopes(c.id)] == expected


# -- the circle column and queries ---------------------------------------------


def test_each_kind_is_filed_under_its_circle(store: Store) -> None:
    c = charter()
    p = pledge(c.id)
    d = deal(c.id)
    r = receipt(d.id)
    for envelope in (c, p, d, r):
        store.put(envelope, received=T0 + 500)
    assert store.envelopes(c.id) == [
        StoredEnvelope(
            id=e.id, kind=e.kind, circle=c.id, signer=e.signer, received=T0 + 500, data=e.data
        )
        for e in (c, p, d, r)
    ]


def test_a_receipt_before_its_deal_gets_the_circle_when_the_deal_arrives(tmp_path: Path) -> None:
    c = charter()
    d = deal(c.id)
    r = receipt(d.id)
    with Store.open(tmp_path, max_batch=1) as store:
        store.put(r)
        assert store.get([r.id])[0].circle is None
        assert store.ids(c.id) == []
        store.put(d)
        assert store.get([r.id])[0].circle == c.id
        assert store.ids(c.id) == [r.id, d.id]


def test_receipt_and_deal_in_one_batch(tmp_path: Path) -> None:
    c = charter()
    d = deal(c.id)
    r = receipt(d.id)
    with Store.open(tmp_path, max_batch=100, max_delay=3600) as store:
        store.put(r)
        store.put(d)
        assert [s.circle for s in store.get([r.id, d.id])] == [c.id, c.id]


def test_a_misbehaviour_proof_is_filed_under_its_evidence_circle(store: Store) -> None:
    c = charter()
    first, second = sorted([pledge(c.id, 4, 1), pledge(c.id, 4, 2)], key=lambda e: e.id)
    proof = protocol.seal(
        protocol.Misbehaviour(
            offender=ALICE.public_key, first=first.data, second=second.data, created=T0
        ),
        BOB,
    )
    store.put(proof)
    assert store.ids(c.id) == [proof.id]


def test_get_returns_known_ids_in_arrival_order(store: Store) -> None:
    c = charter()
    pledges = [pledge(c.id, seq=n) for n in range(1, 1201)]
    store.put(c)
    for p in pledges:
        store.put(p)
    wanted = [p.id for p in reversed(pledges)] + [b"\x00" * 32, pledges[0].id]
    got = store.get(wanted)
    # More ids than one IN (...) query takes: every chunk is read, and in arrival order.
    assert [s.id for s in got] == [p.id for p in pledges]
    assert store.get([]) == []
    assert store.get([b"\x01" * 32]) == []


def test_charters_lists_known_circles(store: Store) -> None:
    first, second = charter("rice"), charter("oil", by=BOB)
    store.put(pledge(first.id))
    store.put(second)
    store.put(first)
    assert [s.id for s in store.charters()] == [second.id, first.id]
    assert all(s.circle == s.id for s in store.charters())


def test_contains_and_count(store: Store) -> None:
    c, other = charter(), charter("oil")
    p = pledge(c.id)
    store.put(c)
    store.put(p)
    store.put(other)
    assert c.id in store and p.id in store
    assert b"\x00" * 32 not in store
    assert "not bytes" not in store
    assert (store.count(), store.count(c.id), store.count(other.id)) == (3, 2, 1)
    assert store.count(b"\x09" * 32) == 0


# -- batching and durability ---------------------------------------------------


def test_received_envelopes_wait_at_most_max_delay(tmp_path: Path) -> None:
    clock = FakeClock()
    c = charter()
    with Store.open(tmp_path, max_batch=100, max_delay=0.5, clock=clock) as store:
        store.put(c)
        store.put(pledge(c.id, 1))
        assert raw_count(tmp_path) == 0
        assert c.id in store  # the batch is visible before it is committed
        clock.now = 0.5
        store.put(pledge(c.id, 2))
        assert raw_count(tmp_path) == 3


def test_received_envelopes_wait_at_most_max_batch(tmp_path: Path) -> None:
    c = charter()
    with Store.open(tmp_path, max_batch=3, max_delay=3600, clock=FakeClock()) as store:
        store.put(c)
        store.put(pledge(c.id, 1))
        assert raw_count(tmp_path) == 0
        store.put(pledge(c.id, 2))
        assert raw_count(tmp_path) == 3


@pytest.mark.parametrize(
    "durable", ["put_own", "reserve_seq", "flush", "read", "close", "mark_joined"]
)
def test_each_durable_call_commits_the_batch(tmp_path: Path, durable: str) -> None:
    c = charter()
    store = Store.open(tmp_path, max_batch=100, max_delay=3600, clock=FakeClock())
    store.put(c)
    store.put(pledge(c.id, 1, by=BOB))
    assert raw_count(tmp_path) == 0
    expected = 2
    if durable == "put_own":
        store.put_own(pledge(c.id, 1))
        expected = 3
    elif durable == "reserve_seq":
        store.reserve_seq(c.id)
    elif durable == "flush":
        store.flush()
    elif durable == "read":
        store.ids(c.id)
    elif durable == "mark_joined":
        store.mark_joined(c.id)
    store.close()
    assert raw_count(tmp_path) == expected


def test_put_own_is_committed_before_it_returns(tmp_path: Path) -> None:
    c = charter()
    with Store.open(tmp_path, max_batch=100, max_delay=3600) as store:
        store.put_own(c)
        assert raw_count(tmp_path) == 1


def test_store_file_is_wal_full_sync_and_sound(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.put(charter())
        assert store.path == tmp_path / STORE_FILE
        # synchronous is a per-connection setting: read it on the store's own connection.
        assert store._db is not None
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        store.check()
    with closing(sqlite3.connect(tmp_path / STORE_FILE)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    # One file per data directory once closed: the write-ahead log is folded back.
    assert sorted(p.name for p in tmp_path.iterdir()) == [STORE_FILE]


def test_everything_survives_reopening(tmp_path: Path) -> None:
    c = charter()
    envelopes = [c, pledge(c.id, 1), pledge(c.id, 1, by=BOB), deal(c.id)]
    with Store.open(tmp_path, max_delay=3600) as store:
        for n, envelope in enumerate(envelopes):
            store.put(envelope, received=T0 + n)
        store.mark_joined(c.id, now=T0)
        before = (store.envelopes(c.id), store.charters(), store.count())
        assert store.reserve_seq(c.id) == 1
    with Store.open(tmp_path) as store:
        assert (store.envelopes(c.id), store.charters(), store.count()) == before
        assert [s.received for s in store.envelopes(c.id)] == [T0, T0 + 1, T0 + 2, T0 + 3]
        assert store.joined_circles() == [c.id]
        assert store.reserve_seq(c.id) == 2
        assert all(protocol.decode(s.data).id == s.id for s in store.envelopes(c.id))


# -- the pledge sequence counter -----------------------------------------------


def test_reserve_seq_counts_per_circle(store: Store) -> None:
    a, b = charter("a").id, charter("b").id
    assert [store.reserve_seq(a) for _ in range(3)] == [1, 2, 3]
    assert store.reserve_seq(b) == 1
    assert store.reserve_seq(a) == 4


def test_put_own_raises_the_counter_past_its_pledge(store: Store) -> None:
    c = charter()
    store.put_own(pledge(c.id, seq=7))
    assert store.reserve_seq(c.id) == 8
    # A received copy of an own pledge does not touch the counter, unless named.
    store.put(pledge(c.id, seq=20))
    assert store.reserve_seq(c.id) == 9
    assert store.reserve_seq(c.id, signer=ALICE.public_key) == 21
    assert store.reserve_seq(c.id, signer=BOB.public_key) == 22


def test_put_own_of_a_synced_back_pledge_still_raises_the_counter(store: Store) -> None:
    c = charter()
    p = pledge(c.id, seq=5)
    store.put(p)
    assert store.put_own(p) is False
    assert store.reserve_seq(c.id) == 6


def test_reserve_seq_refuses_past_the_protocol_limit(tmp_path: Path) -> None:
    c = charter()
    with Store.open(tmp_path) as store:
        store.put_own(pledge(c.id, seq=2**32 - 1))
        with pytest.raises(StoreError) as info:
            store.reserve_seq(c.id)
        assert info.value.reason == "sequence-exhausted"


def test_reserve_seq_needs_a_circle_id(store: Store) -> None:
    with pytest.raises(ValueError, match="32-byte"):
        store.reserve_seq(b"short")


def test_two_stores_on_one_directory_never_share_a_number(tmp_path: Path) -> None:
    circle = charter().id
    with Store.open(tmp_path) as one, Store.open(tmp_path) as two:
        numbers = [s.reserve_seq(circle) for _ in range(20) for s in (one, two)]
    assert sorted(numbers) == list(range(1, 41))


async def test_reserve_seq_from_worker_threads_never_repeats(tmp_path: Path) -> None:
    circle = charter().id
    numbers: list[int] = []
    with Store.open(tmp_path) as store:

        async def reserve() -> None:
            for _ in range(10):
                numbers.append(await trio.to_thread.run_sync(store.reserve_seq, circle))

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(reserve)
    assert sorted(numbers) == list(range(1, 41))


# -- joined circles ------------------------------------------------------------


def test_joined_circles(store: Store) -> None:
    a, b = charter("a").id, charter("b").id
    store.mark_joined(a, now=T0)
    store.mark_joined(b, now=T0 + 1)
    store.mark_joined(a, now=T0 + 2)
    assert store.joined_circles() == [a, b]
    store.mark_left(a)
    store.mark_left(a)
    assert store.joined_circles() == [b]


# -- refusals ------------------------------------------------------------------


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    store.close()
    store.close()
    for call in (lambda: store.put(charter()), store.count, store.flush):
        with pytest.raises(StoreError) as info:
            call()
        assert info.value.reason == "closed"
    assert "closed" in repr(store)


def test_only_verified_envelopes_are_kept(store: Store) -> None:
    with pytest.raises(TypeError, match="verified envelopes"):
        store.put(charter().data)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.put_own(protocol.decode_unverified(charter().data))  # type: ignore[arg-type]


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    (tmp_path / STORE_FILE).write_bytes(b"this is not a database" * 200)
    with pytest.raises(StoreError) as info:
        Store.open(tmp_path)
    assert info.value.reason == "unreadable"


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    with closing(sqlite3.connect(tmp_path / STORE_FILE)) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError) as info:
        Store.open(tmp_path)
    assert info.value.reason == "newer-schema"


def test_a_damaged_file_fails_check(tmp_path: Path) -> None:
    c = charter()
    with Store.open(tmp_path) as store:
        for n in range(1, 400):
            store.put(pledge(c.id, seq=n))
    path = tmp_path / STORE_FILE
    data = bytearray(path.read_bytes())
    page = 4096
    # Scribble over a page in the middle of the file (an index or table page).
    data[page * 3 : page * 3 + 200] = b"\xff" * 200
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError) as info, Store.open(tmp_path) as store:
        store.check()
    assert info.value.reason in {"corrupt", "unreadable"}


def test_bad_arguments_are_refused_early(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Store.open(tmp_path, max_batch=0)
    with pytest.raises(ValueError):
        Store.open(tmp_path, max_delay=-1)


# -- a model of durability -----------------------------------------------------

POOL_CIRCLES = [charter("a"), charter("b", by=BOB)]
POOL = [
    *POOL_CIRCLES,
    *(
        pledge(c.id, seq, quantity, by=who)
        for c in POOL_CIRCLES
        for seq in (1, 3)
        for quantity in (1, 2)
        for who in (ALICE, BOB)
    ),
]


class StoreModel(RuleBasedStateMachine):
    """The store against a model: what is committed, what waits in the batch, the counters.

    A simulated crash drops the batch and the connection without committing,
    as SIGKILL would; the model says exactly which envelopes must survive it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.TemporaryDirectory()
        self.root = Path(self.directory.name)
        self.store = self.open()
        self.committed: list[bytes] = []
        self.pending: list[bytes] = []
        self.counters: dict[bytes, int] = {}

    def open(self) -> Store:
        return Store.open(self.root, max_batch=3, max_delay=3600, clock=FakeClock())

    def commit(self, *extra: bytes) -> None:
        self.committed += self.pending + list(extra)
        self.pending = []

    def known(self, message_id: bytes) -> bool:
        return message_id in self.committed or message_id in self.pending

    @rule(envelope=st.sampled_from(POOL))
    def put(self, envelope: protocol.Envelope[Any]) -> None:
        new = not self.known(envelope.id)
        assert self.store.put(envelope) is new
        if new:
            self.pending.append(envelope.id)
        if len(self.pending) >= 3:
            self.commit()

    @rule(envelope=st.sampled_from(POOL))
    def put_own(self, envelope: protocol.Envelope[Any]) -> None:
        new = not self.known(envelope.id)
        assert self.store.put_own(envelope) is new
        self.commit(*([envelope.id] if new else []))
        message = envelope.message
        if isinstance(message, protocol.Pledge):
            last = self.counters.get(message.circle, 0)
            self.counters[message.circle] = max(last, message.seq)

    @rule(circle=st.sampled_from(POOL_CIRCLES), signer=st.sampled_from([None, ALICE, BOB]))
    def reserve_seq(self, circle: protocol.Envelope[Any], signer: protocol.Identity | None) -> None:
        self.commit()
        last = self.counters.get(circle.id, 0)
        if signer is not None:
            seqs = [
                e.message.seq
                for e in POOL
                if e.id in self.committed
                and isinstance(e.message, protocol.Pledge)
                and e.message.circle == circle.id
                and e.signer == signer.public_key
            ]
            last = max([last, *seqs])
        key = None if signer is None else signer.public_key
        assert self.store.reserve_seq(circle.id, signer=key) == last + 1
        self.counters[circle.id] = last + 1

    @rule(circle=st.sampled_from(POOL_CIRCLES))
    def read(self, circle: protocol.Envelope[Any]) -> None:
        self.commit()
        members = {
            e.id for e in POOL if e.id == circle.id or getattr(e.message, "circle", 0) == circle.id
        }
        assert self.store.ids(circle.id) == [i for i in self.committed if i in members]

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.commit()
        self.store = self.open()

    @rule()
    def crash(self) -> None:
        # What SIGKILL leaves: the file as last committed, the batch gone.
        assert self.store._db is not None
        self.store._db.close()
        self.store._db = None
        self.pending = []
        self.store = self.open()

    @invariant()
    def committed_rows_match(self) -> None:
        assert raw_ids(self.root) == self.committed

    def teardown(self) -> None:
        self.store.close()
        self.directory.cleanup()


def raw_ids(directory: Path) -> list[bytes]:
    with closing(sqlite3.connect(directory / STORE_FILE)) as db:
        return [r[0] for r in db.execute("SELECT id FROM envelopes ORDER BY position")]


TestStoreModel = StoreModel.TestCase
TestStoreModel.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
