"""``circles demo --json`` as a real subprocess: one JSON object describing a closed deal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import trio

CIRCLES = Path(sys.executable).with_name("circles")
COMMAND = [str(CIRCLES)] if CIRCLES.exists() else [sys.executable, "-m", "circles._cli"]
HEX_KEY_LENGTH = 64


async def test_demo_json_prints_one_object_with_the_deal() -> None:
    with trio.fail_after(180):
        done = await trio.run_process(
            [*COMMAND, "demo", "--buyers", "5", "--vendors", "2", "--json", "--timeout", "150"],
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    stdout, stderr = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, stderr
    # Exactly one JSON object and nothing else on stdout; nothing on stderr
    # (py-libp2p's shutdown warnings used to land there).
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    result = json.loads(lines[0])
    assert isinstance(result, dict)
    assert stderr == "", stderr

    deal = result["deal"]
    assert {"vendor", "unit_price", "currency", "quantity", "members"} <= deal.keys()
    assert isinstance(deal["vendor"], str) and len(bytes.fromhex(deal["vendor"])) == 32
    assert deal["currency"] == "EUR"
    assert isinstance(deal["unit_price"], int) and deal["unit_price"] > 0
    assert isinstance(deal["quantity"], int) and deal["quantity"] > 0
    members = deal["members"]
    assert 1 <= len(members) <= 5
    assert len(set(members)) == len(members)
    assert all(len(m) == HEX_KEY_LENGTH and bytes.fromhex(m) for m in members)
    assert deal["vendor"] not in members  # the vendor is not one of the buyers

    assert result["peers"] == 7
    # At least the charter, the bound members' pledges, two offers, a certificate, the deal.
    assert result["messages"] >= 1 + len(members) + 2 + 1 + 1
    assert isinstance(result["seconds"], int | float) and 0 < result["seconds"] < 150
