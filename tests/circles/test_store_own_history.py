"""The store's account of the member's own history: how the file was found, what it counted.

``Store.condition`` tells a first start (no file) from a file that was there
but empty (its history gone); ``Store.counted`` says whether the store ever
counted in a circle; ``reserve_seq(signer=...)`` hands out a number above
every pledge the key signed that the log holds, inside misbehaviour proofs too.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

import protocol
from circles import Store
from circles._store import STORE_FILE
from protocol._certificate import make_proof

ALICE = protocol.Identity.from_seed(bytes(range(32)))
BOB = protocol.Identity.from_seed(bytes(range(1, 33)))
T0 = 1_700_000_000


def charter(*, by: protocol.Identity = ALICE) -> protocol.Envelope[Any]:
    return protocol.seal(
        protocol.Charter(
            title="rice", unit="kg", target=100, currency="EUR", ceiling=None,
            deadline=T0 + 3600, place=None, tags=(), invite_only=False, members_invite=False,
            on_miss="expire", created=T0,
        ),
        by,
    )  # fmt: skip


def pledge(
    circle: bytes, seq: int, quantity: int = 3, *, by: protocol.Identity = ALICE
) -> protocol.Envelope[Any]:
    return protocol.seal(
        protocol.Pledge(
            circle=circle, seq=seq, quantity=quantity, max_price=1200, currency="EUR",
            tolerance=0, created=T0 + seq,
        ),
        by,
    )  # fmt: skip


def proof_of(circle: bytes, seq: int, *, offender: protocol.Identity) -> protocol.Envelope[Any]:
    """A proof, reported by a third key, that ``offender`` signed two pledges at ``seq``."""
    twin = make_proof(pledge(circle, seq, 1, by=offender), pledge(circle, seq, 2, by=offender))
    return protocol.seal(twin, BOB if offender is not BOB else ALICE)


def test_condition_tells_a_first_start_from_an_emptied_file(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        assert store.condition == "new"
        store.put_own(charter())
    with Store.open(tmp_path) as store:
        assert store.condition == "intact"
        assert store.count() == 1
    (tmp_path / STORE_FILE).write_bytes(b"")
    with Store.open(tmp_path) as store:
        assert store.condition == "emptied"
        assert store.count() == 0
    with Store.open(tmp_path) as store:
        assert store.condition == "intact"
    with Store.open_memory() as store:
        assert store.condition == "memory"


def test_a_sqlite_file_without_the_store_in_it_counts_as_emptied(tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / STORE_FILE)) as db:
        db.execute("CREATE TABLE other (x)")
        db.commit()
    with Store.open(tmp_path) as store:
        assert store.condition == "emptied"


def test_counted_says_whether_the_store_ever_counted_in_a_circle() -> None:
    with Store.open_memory() as store:
        ours, theirs = charter(), charter(by=BOB)
        store.put(theirs)
        assert store.counted(theirs.id) is None
        assert store.reserve_seq(theirs.id) == 1
        assert store.counted(theirs.id) == 1
        # Founding a circle counts in it: its store saw every pledge since.
        store.put_own(ours)
        assert store.counted(ours.id) == 0
        assert store.reserve_seq(ours.id) == 1
        # A synced-back charter of ours (the store was lost) does not.
        with Store.open_memory() as fresh:
            fresh.put(ours)
            assert fresh.counted(ours.id) is None


def test_reserve_seq_counts_above_a_pledge_kept_only_inside_a_proof() -> None:
    with Store.open_memory() as store:
        c = charter(by=BOB)
        store.put(c)
        store.put(proof_of(c.id, 7, offender=ALICE))
        store.put(proof_of(c.id, 30, offender=BOB))
        store.put(pledge(c.id, 3))
        assert store.highest_signed(c.id, ALICE.public_key) == 7
        assert store.reserve_seq(c.id, signer=ALICE.public_key) == 8


@given(
    pledged=st.lists(st.integers(1, 500), max_size=5),
    proved=st.lists(st.integers(1, 500), max_size=3),
    reserved=st.integers(0, 3),
)
def test_a_reserved_number_is_above_every_one_the_log_shows_signed(
    pledged: list[int], proved: list[int], reserved: int
) -> None:
    with Store.open_memory() as store:
        c = charter(by=BOB)
        store.put(c)
        handed = [store.reserve_seq(c.id) for _ in range(reserved)]
        for seq in pledged:
            store.put(pledge(c.id, seq))
        for seq in proved:
            store.put(proof_of(c.id, seq, offender=ALICE))
        # Other keys' pledges never hold a member back.
        store.put(pledge(c.id, 999, by=BOB))
        seen = [*pledged, *proved, *handed]
        assert store.highest_signed(c.id, ALICE.public_key) == max([*pledged, *proved], default=0)
        assert store.reserve_seq(c.id, signer=ALICE.public_key) == max(seen, default=0) + 1
