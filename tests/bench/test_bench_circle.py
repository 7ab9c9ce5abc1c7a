"""bench/bench_circle.py's issue-11 figures, run small: costs must not grow with what is held.

Each figure is a ratio against the same work in the same run (see the bench's
docstring), so the machine's speed cancels out. The state-bytes figure is a
count, not a time: it is the same on every machine for a given Python.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"

#: Issue 11: state bytes per live pledge at most 4x the envelope's bytes.
BYTES_TARGET = 4.0


def _bench() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_circle", BENCH / "bench_circle.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_apply_cost_does_not_grow_with_held_offers_deals_or_seqs() -> None:
    bench = _bench()
    for figure in (
        bench.measure_offers(1000, rounds=3, ops=100),
        bench.measure_deals(1000, rounds=3, ops=50),
        bench.measure_reseq(2000, rounds=3, ops=100),
    ):
        assert figure["ratio"] <= figure["target"], figure


def test_state_bytes_per_live_pledge_are_at_most_four_envelopes() -> None:
    bench = _bench()
    figure = bench.measure_bytes(2000)
    assert figure["target"] == BYTES_TARGET
    assert figure["ratio"] <= BYTES_TARGET, figure
