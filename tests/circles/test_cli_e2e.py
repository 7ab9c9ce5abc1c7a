"""The command line end to end, every command a subprocess as a user would type it.

Two members and a vendor, each with its own data directory and a running node
on 127.0.0.1 (mDNS off, explicit bootstrap addresses): found a circle,
pledge, get an offer from the vendor's catalog, close the deal, sign receipts;
then the vendor's reputation shows those receipts. Every wait is bounded: the
subprocess timeouts, and ``circles circle wait --timeout`` on the node side.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CIRCLES = [sys.executable, "-m", "circles._cli"]
LOOPBACK = ["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"]

CATALOG = """
[vendor]
strategy = "fixed"

[[products]]
name = "Arabica beans, 1 kg"
match = ["coffee"]
currency = "EUR"
list_price = "24.00"
floor = "17.00"
capacity = 100
tiers = [[5, "21.00"], [10, "19.00"]]
terms = "delivered within 7 days"
"""


def run(*args: str, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*CIRCLES, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check:
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def run_json(*args: str, timeout: float = 90) -> Any:
    return json.loads(run(*args, "--json", timeout=timeout).stdout)


def first_line(proc: subprocess.Popen[str], *, timeout: float) -> str:
    """The first line a subprocess prints, waiting at most ``timeout`` seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the vendor printed nothing in time"
    return proc.stdout.readline()


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[dict[str, Path]]:
    # Short names: a UNIX socket path must stay under ~100 bytes.
    names = {"ann": tmp_path / "a", "bob": tmp_path / "b", "shop": tmp_path / "v"}
    yield names
    for path in (names["ann"], names["bob"]):
        run("down", "--data-dir", str(path), check=False, timeout=60)


@pytest.fixture
def vendor(dirs: dict[str, Path], tmp_path: Path) -> Iterator[Any]:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG, encoding="utf-8")
    process: list[subprocess.Popen[str]] = []

    def start(*bootstrap: str) -> subprocess.Popen[str]:
        args = [*CIRCLES, "vendor", "serve", "--data-dir", str(dirs["shop"]), *LOOPBACK]
        args += ["--catalog", str(catalog), "--json"]
        for addr in bootstrap:
            args += ["--bootstrap", addr]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        process.append(proc)
        return proc

    yield start
    for proc in process:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err


def test_two_members_and_a_vendor_close_a_deal_and_rate_it(
    dirs: dict[str, Path], vendor: Any
) -> None:
    ann, bob, shop = (str(dirs[n]) for n in ("ann", "bob", "shop"))
    ann_up = run_json("up", "--data-dir", ann, *LOOPBACK)
    ann_addr = ann_up["addresses"][0]
    assert ann_addr.startswith("/ip4/127.0.0.1/")
    assert os.stat(Path(ann) / "control.sock").st_mode & 0o777 == 0o600
    bob_addr = run_json("up", "--data-dir", bob, *LOOPBACK, "--bootstrap", ann_addr)["addresses"][0]
    proc = vendor(ann_addr, bob_addr)
    shop_status = json.loads(first_line(proc, timeout=60))
    assert shop_status["vendor"] is True
    assert shop_status["peers"] == 2

    circle = run_json(
        "circle", "new", "--data-dir", ann,
        "--what", "Fresh coffee, 1 kg bags", "--unit", "kg", "--target", "10",
        "--currency", "EUR", "--ceiling", "25", "--deadline", "1h",
    )["id"]  # fmt: skip
    # The vendor hears the charter on the announce topic and offers at once.
    run("circle", "wait", circle, "--data-dir", shop, "--until", "known", "--timeout", "30")
    pledged = run_json("pledge", circle, "6", "--max-price", "20.00", "--data-dir", ann)
    assert pledged["pledged"] == 6
    run("pledge", circle[:10], "4", "--max-price", "20", "--data-dir", bob)
    closed = run_json(
        "circle", "wait", circle, "--data-dir", bob, "--until", "closed", "--timeout", "60"
    )
    assert closed["status"] == "closed"

    shown = run_json("circle", "show", circle, "--data-dir", ann)
    assert [o["product"] for o in shown["offers"]] == ["Arabica beans, 1 kg"]
    assert shown["deal"]["unit_price"] == 1900
    assert shown["deal"]["total"] == 10
    assert shown["deal"]["vendor"] == shop_status["public_key"]
    deal = shown["deal"]["deal"]
    text = run("circle", "show", circle, "--data-dir", ann).stdout
    assert "10 kg at 19.00 EUR" in text
    assert "20.00 EUR" in text

    ann_receipt = run_json(
        "receipt", deal[:12], "--fulfilled", "yes", "--rating", "5", "--data-dir", ann
    )
    bob_receipt = run_json(
        "receipt", deal, "--fulfilled", "partly", "--rating", "4", "--data-dir", bob
    )
    assert ann_receipt["delivered_to_vendor"] and bob_receipt["delivered_to_vendor"]

    rep = run_json("vendor", "reputation", shop_status["public_key"], "--data-dir", shop)
    assert rep["deals"] == 1
    assert (rep["receipts"], rep["fulfilled"], rep["partly"]) == (2, 1, 1)
    assert rep["mean_rating"] == "4.50"
    assert rep["ignored"] == {}
    text = run("vendor", "reputation", shop_status["public_key"][:8], "--data-dir", shop).stdout
    assert "receipts: 2 (fulfilled 1, partly 1, not 0)" in text

    # A member whose pledge the deal does not count cannot sign a receipt for it.
    refused = run("receipt", deal, "--fulfilled", "no", "--rating", "1", "--data-dir", shop,
                  check=False)  # fmt: skip
    assert refused.returncode == 1
    assert "only a member" in refused.stderr

    assert run_json("down", "--data-dir", ann) == {"stopped": True}
    assert not (Path(ann) / "control.sock").exists()


def test_commands_without_a_node_say_how_to_start_one(tmp_path: Path) -> None:
    done = run("circle", "list", "--data-dir", str(tmp_path / "none"), check=False)
    assert done.returncode == 1
    assert done.stderr.strip().endswith("start it with `circles up`")
    assert done.stderr.count("\n") == 1
    as_json = run("status", "--json", "--data-dir", str(tmp_path / "none"), check=False)
    assert json.loads(as_json.stdout)["reason"] == "not-running"
    assert run_json("down", "--data-dir", str(tmp_path / "none")) == {"stopped": False}


def test_one_member_founds_invites_and_gets_clear_refusals(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "n")
    up = run_json("up", "--data-dir", data_dir, *LOOPBACK)
    try:
        circle = run_json(
            "circle", "new", "--data-dir", data_dir, "--what", "Rice", "--unit", "bag",
            "--target", "3", "--currency", "JPY", "--deadline", "2h",
        )  # fmt: skip
        assert circle["founder"] == up["public_key"]
        bad = run("pledge", circle["id"], "1", "--max-price", "1200.5", "--data-dir", data_dir,
                  check=False)  # fmt: skip
        assert bad.returncode == 1
        assert "JPY has 0 decimals" in bad.stderr
        assert "1200 JPY" in bad.stderr
        second = run("up", "--data-dir", data_dir, *LOOPBACK, check=False)
        assert second.returncode == 1
        assert "already running" in second.stderr
        listed = run_json("circle", "list", "--data-dir", data_dir)
        assert [(c["title"], c["joined"]) for c in listed] == [("Rice", True)]

        club = run_json(
            "circle", "new", "--data-dir", data_dir, "--what", "Club jerseys", "--unit", "shirt",
            "--target", "5", "--currency", "BHD", "--deadline", "3d", "--invite-only",
            "--ceiling", "12.5",
        )  # fmt: skip
        assert club["invite_only"] and club["ceiling"] == 12500
        friend = "ab" * 32
        assert (
            friend not in run_json("circle", "show", club["id"], "--data-dir", data_dir)["members"]
        )
        invited = run_json("invite", club["id"][:8], friend, "--data-dir", data_dir)
        assert invited["invitee"] == friend
        shown = run_json("circle", "show", club["id"], "--data-dir", data_dir)
        assert friend in shown["members"]
        bad_key = run("invite", club["id"], "abc", "--data-dir", data_dir, check=False)
        assert "keys are 64 hex characters" in bad_key.stderr
        open_circle = run("invite", circle["id"], friend, "--data-dir", data_dir, check=False)
        assert open_circle.returncode == 1
        assert "this circle is open" in open_circle.stderr
        refused = run("invite", circle["id"], friend, "--json", "--data-dir", data_dir, check=False)
        assert json.loads(refused.stdout)["reason"] == "not-invite-only"
    finally:
        run("down", "--data-dir", data_dir, check=False)
