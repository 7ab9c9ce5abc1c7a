"""What must hold of a store after its writer was SIGKILLed (test_store_crash, test_node_crash)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import protocol
from circles import Store
from circles._store import STORE_FILE
from protocol._caps import PLEDGE_SEQS_PER_KEY


def reused_numbers(signed: dict[int, set[bytes]]) -> dict[int, set[bytes]]:
    """The sequence numbers signed for more than one pledge (equivocation)."""
    return {seq: ids for seq, ids in signed.items() if len(ids) > 1}


def check_after_kill(
    trial: int,
    data_dir: Path,
    circle: bytes,
    signer: bytes,
    *,
    acked: dict[bytes, int],
    signed: dict[int, set[bytes]],
) -> dict[bytes, int] | None:
    """Check a killed writer's store; return ``signer``'s pledges in it (id -> seq).

    None when the kill came before SQLite created the file, in which case
    nothing can have been acknowledged. Otherwise the file passes
    ``PRAGMA integrity_check`` and ``Store.check``, and every pledge in
    ``acked`` (id -> seq, all ever acknowledged) is stored with its number.
    The stored pledges join ``signed`` (seq -> ids, all ever seen signed), in
    which no number may belong to two pledges.
    """
    stored: dict[bytes, int] | None = None
    if (data_dir / STORE_FILE).exists():
        with closing(sqlite3.connect(data_dir / STORE_FILE)) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)], f"trial {trial}"
        with Store.open(data_dir) as store:
            store.check()
            stored = {
                s.id: protocol.decode(s.data).message.seq  # type: ignore[attr-defined]
                for s in store.envelopes(circle)
                if s.kind == "pledge" and s.signer == signer
            }
    # A key keeps its PLEDGE_SEQS_PER_KEY highest seqs (protocol/_caps.py): older
    # pledges are dropped by design; every acknowledged one in that window is kept.
    held_seqs = sorted(set((stored or {}).values()))
    floor = held_seqs[-PLEDGE_SEQS_PER_KEY] if len(held_seqs) >= PLEDGE_SEQS_PER_KEY else 0
    missing = {
        i.hex()[:16]: s for i, s in acked.items() if s >= floor and (stored or {}).get(i) != s
    }
    if acked:
        top = max(acked.values())
        assert top in held_seqs, f"trial {trial}: the latest acknowledged pledge is lost"
    assert not missing, f"trial {trial}: acknowledged pledges lost: {missing}"
    for message_id, seq in (stored or {}).items():
        signed.setdefault(seq, set()).add(message_id)
    assert not reused_numbers(signed), f"trial {trial}: a number was signed twice"
    return stored
