"""The protocol demo runs as a user would run it, and tells the story it promises."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_protocol_demo_reaches_quorum_and_closes_a_deal() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "protocol_demo.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    for line in ("Ana", "Ben", "Chloé", "Dev", "Eli"):
        assert f"{line} pledges" in out
    assert "quorum: 12 tins clear at €39.00 a tin" in out
    assert "status: forming → quorum" in out
    assert "all 5 members assembled the same certificate: identical" in out
    assert "deal closed: 12 tins at €39.00 a tin (status closed)" in out
    assert "Dev: the vendor signed before it saw your withdrawal" in out
    assert "2 (+1 tolerance)" in out
    assert "save €108.00" in out
