"""Each example runs as a user would run it (a script, never ``import examples``: the libp2p
wheel installs a top-level ``examples`` package) and tells the story it promises."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run_example(name: str, timeout: float = 240) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def test_embed_in_app_is_short_and_closes_a_deal() -> None:
    source = (ROOT / "examples" / "embed_in_app.py").read_text(encoding="utf-8")
    assert len(source.splitlines()) < 40
    assert run_example("embed_in_app.py") == "deal: 5 kg at 19.00 EUR, signed by the vendor\n"


def test_vendor_bot_holds_its_price_then_concedes_late() -> None:
    lines = run_example("vendor_bot.py").splitlines()
    offers = [int(line.split(" at ")[1].replace(".", "").split()[0]) for line in lines[:-1]]
    assert offers == sorted(offers, reverse=True)
    # Boulware: after half the time, under a tenth of the concession made.
    half = offers[len(offers) // 2]
    assert offers[0] - half < (offers[0] - offers[-1]) / 10
    assert lines[0] == "minute  0: offer at 24.00 EUR"
    assert lines[-1] == "deal: 10 bags at 18.58 EUR (5.42 EUR off list)"


def test_local_circle_three_neighbours_and_a_bakery() -> None:
    out = run_example("local_circle.py")
    for name in ("ana", "ben", "cleo"):
        assert f"{name}'s node is up" in out
        assert f"--max-price 5.00 --data-dir {name}" in out
    assert "the bakery serves its catalog" in out
    assert "deal: 12 loaves at 4.60 EUR" in out
    assert out.count("fulfilled yes, rating") == 3
    assert "deals closed: 1" in out
    assert "receipts: 3 (fulfilled 3, partly 0, not 0)" in out
    assert "mean rating: 4.67/5" in out
