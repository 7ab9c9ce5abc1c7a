"""The research sweep example runs as a researcher would run it (quick mode)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_research_sweep_writes_the_discount_against_the_exponent(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("matplotlib")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "research_sweep.py"),
            "--quick",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["e"] for r in rows] == [0.2, 1.0]
    assert all(r["deals"] > 0 for r in rows)
    # Holding out harder (smaller e) earns the vendor more: a smaller discount.
    assert rows[0]["mean_discount"] < rows[1]["mean_discount"]
    assert (tmp_path / "discount_vs_exponent.png").stat().st_size > 1000
