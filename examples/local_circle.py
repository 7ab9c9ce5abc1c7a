"""Three neighbours and a vendor run a buying circle on loopback, with the ``circles`` command.

This is docs/quickstart.md as a script: each neighbour starts a node
(``circles up``), one founds a circle, all three pledge, a vendor serving a
catalog offers and countersigns, and each neighbour signs a receipt. Every
command is printed before it runs. The nodes listen on 127.0.0.1 and find
each other through bootstrap addresses here; on a LAN, mDNS does that.
"""

import json
import signal
import subprocess
import sys
import tempfile

CIRCLES = [sys.executable, "-m", "circles._cli"]
LOOPBACK = ["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"]
CATALOG = """\
[vendor]
strategy = "fixed"

[[products]]
name = "Rye sourdough loaf"
match = ["bread", "sourdough"]
currency = "EUR"
list_price = "6.50"
capacity = 40
tiers = [[6, "5.20"], [12, "4.60"]]
terms = "baked and delivered on Saturday morning"
"""


HOME = tempfile.TemporaryDirectory(prefix="circle-")  # each neighbour's data directory is in it


def circles(*args: str, show: bool = True) -> str:
    if show:
        print("$ circles " + " ".join(repr(a) if " " in a else a for a in args))
    done = subprocess.run(
        [*CIRCLES, *args], cwd=HOME.name, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode:
        sys.exit(f"failed: {done.stderr.strip()}")
    return done.stdout


def main() -> None:
    homes = {name: name for name in ("ana", "ben", "cleo", "bakery")}
    with open(f"{HOME.name}/catalog.toml", "w", encoding="utf-8") as file:
        file.write(CATALOG)
    up: list[str] = []
    bakery = None
    try:
        addrs: list[str] = []
        for name in ("ana", "ben", "cleo"):
            boot = ["--bootstrap", addrs[0]] if addrs else []
            out = circles("up", "--data-dir", homes[name], *LOOPBACK, *boot, "--json", show=False)
            up.append(name)
            addrs.append(json.loads(out)["addresses"][0])
            print(f"{name}'s node is up")
        # The bakery dials every neighbour, so receipts reach it directly.
        bakery = subprocess.Popen(
            [*CIRCLES, "vendor", "serve", "--data-dir", homes["bakery"], *LOOPBACK, "--json",
             "--catalog", "catalog.toml", *(f"--bootstrap={a}" for a in addrs)],
            cwd=HOME.name, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert bakery.stdout is not None
        if not bakery.stdout.readline():
            sys.exit("failed: the bakery's node did not start")
        print("the bakery serves its catalog")
        out = circles("circle", "new", "--data-dir", homes["ana"], "--what", "Sourdough bread",
                      "--unit", "loaf", "--target", "12", "--currency", "EUR",
                      "--ceiling", "6.00", "--deadline", "2d", "--json")  # fmt: skip
        circle = json.loads(out)["id"]
        circles("circle", "wait", circle[:8], "--data-dir", homes["bakery"], "--timeout", "30")
        for name, loaves in (("ana", "5"), ("ben", "4"), ("cleo", "3")):
            print(circles("pledge", circle[:8], loaves, "--max-price", "5.00",
                          "--data-dir", homes[name]))  # fmt: skip
        circles("circle", "wait", circle[:8], "--until", "closed", "--data-dir", homes["cleo"])
        shown = circles("circle", "show", circle[:8], "--data-dir", homes["ana"], "--json")
        deal = json.loads(shown)["deal"]
        print(f"deal: {deal['total']} loaves at {deal['unit_price'] / 100:.2f} EUR")
        for name, rating in (("ana", "5"), ("ben", "4"), ("cleo", "5")):
            print(circles("receipt", deal["deal"][:12], "--fulfilled", "yes",
                          "--rating", rating, "--data-dir", homes[name]))  # fmt: skip
        print(circles("vendor", "reputation", deal["vendor"][:12], "--data-dir", homes["bakery"]))
    finally:
        for name in up:
            circles("down", "--data-dir", homes[name], show=False)
        if bakery is not None:
            bakery.send_signal(signal.SIGTERM)
            bakery.wait(timeout=60)
        HOME.cleanup()


main()
