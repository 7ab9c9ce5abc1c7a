"""Protocol benchmark: every figure next to a raw PyNaCl baseline timed in the same run.

Run ``python bench/bench_protocol.py`` for a table, ``--json`` for one JSON object.

Each round times every candidate and its baseline back to back on the same
bytes (a ~160-byte pledge envelope and the payload its signature covers), so
a ratio compares like with like even on a machine shared with other work.
A figure's ratio is baseline time / candidate time taken from the fastest
round of each (the least disturbed by other processes); the range of the
per-round ratios shows how noisy the run was. Targets are from issue 2:

- decode + canonical check + verify + id of one pledge >= 0.85 x raw verify;
- sign + encode (seal) >= 0.80 x raw sign;
- 1,000 distinct envelopes through ``verify_batch`` >= 1.7 x single-core raw verify
  (with its defaults: after the first round it checks signatures in its helper
  process; "threads only" is the same batch without it, as context);
- an envelope already seen, answered by ``SeenCache`` >= 20 x raw verify.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgpack
import nacl.signing

from circles import SeenCache, verify_batch
from protocol import Identity, Pledge, decode, decode_unverified, seal

# Copies per timed loop for the one-envelope figures: long enough to swamp the
# timer, short enough that a round stays well under a second.
LOOP = 1000
BATCH = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Figure:
    """One measured figure and its baseline."""

    name: str
    """What was timed."""
    baseline: str
    """The raw operation it is compared with."""
    micros: float
    """Best time per operation, in microseconds."""
    baseline_micros: float
    """Best time per baseline operation, in microseconds."""
    ratio_low: float
    """Lowest per-round ratio (noise)."""
    ratio_high: float
    """Highest per-round ratio (noise)."""
    target: float | None
    """The ratio the issue asks for, or None for a figure given as context."""

    @property
    def ratio(self) -> float:
        """Baseline time / candidate time: above 1 means faster than the baseline."""
        return self.baseline_micros / self.micros

    @property
    def passed(self) -> bool | None:
        """Whether the ratio meets the target (None when there is no target)."""
        return None if self.target is None else self.ratio >= self.target


def pledge(seq: int) -> Pledge:
    return Pledge(
        circle=bytes(range(32)),
        seq=seq,
        quantity=3,
        max_price=1250,
        currency="EUR",
        tolerance=1,
        created=1_700_000_000,
    )


def timed(run: Callable[[], object], operations: int) -> float:
    """Microseconds per operation for one call of ``run`` doing ``operations``."""
    gc.disable()
    try:
        start = time.perf_counter()
        run()
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    return elapsed * 1e6 / operations


def raw_verify_all(items: list[tuple[bytes, bytes, bytes]]) -> None:
    for public_key, payload, signature in items:
        nacl.signing.VerifyKey(public_key).verify(payload, signature)


def raw_verify_threads(items: list[tuple[bytes, bytes, bytes]], threads: int) -> None:
    """The hardware's own parallel speed: raw verify split over ``threads`` threads."""
    share = (len(items) + threads - 1) // threads
    workers = [
        threading.Thread(target=raw_verify_all, args=(items[k * share : (k + 1) * share],))
        for k in range(1, threads)
    ]
    for worker in workers:
        worker.start()
    raw_verify_all(items[:share])
    for worker in workers:
        worker.join()


def measure(rounds: int) -> tuple[list[Figure], dict[str, object]]:
    identity = Identity.from_seed(bytes(range(100, 132)))
    message = pledge(1)
    envelope = seal(message, identity)
    data = envelope.data
    payload = decode_unverified(data).signed_payload()
    signature = envelope.signature
    public_key = identity.public_key
    signing_key = nacl.signing.SigningKey(identity.seed)
    # Fresh equal copies, as the network would hand them over.
    copies = [bytes(bytearray(data)) for _ in range(LOOP)]
    payloads = [bytes(bytearray(payload)) for _ in range(LOOP)]
    one = [(public_key, p, signature) for p in payloads]

    signers = [Identity.from_seed(hashlib.sha256(b"bench %d" % n).digest()) for n in range(50)]
    batch = [seal(pledge(seq), signers[seq % 50]).data for seq in range(1, BATCH + 1)]
    batch_raw = [(u.signer, u.signed_payload(), u.signature) for u in map(decode_unverified, batch)]
    cache = SeenCache()
    cache.decode(data)
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1

    def loop_decode() -> None:
        for d in copies:
            decode(d)

    def loop_raw_sign() -> None:
        for p in payloads:
            signing_key.sign(p)

    def loop_seal() -> None:
        for _ in range(LOOP):
            seal(message, identity)

    def loop_cache() -> None:
        for d in copies:
            cache.decode(d)

    def loop_unpack() -> None:
        for d in copies:
            msgpack.unpackb(d)

    def loop_blake() -> None:
        for d in copies:
            hashlib.blake2b(d, digest_size=32).digest()

    # (name, candidate, operations, baseline name, baseline, operations, target)
    plan: list[tuple[str, Callable[[], object], int, str, Callable[[], object], int, float | None]]
    plan = [
        (
            "decode: canonical + verify + id",
            loop_decode,
            LOOP,
            "raw verify",
            lambda: raw_verify_all(one),
            LOOP,
            0.85,
        ),
        ("seal: sign + encode", loop_seal, LOOP, "raw sign", loop_raw_sign, LOOP, 0.80),
        (
            f"verify_batch, {BATCH} distinct",
            lambda: verify_batch(batch),
            BATCH,
            "raw verify, 1 thread",
            lambda: raw_verify_all(batch_raw),
            BATCH,
            1.7,
        ),
        (
            f"verify_batch, {BATCH}, threads only",
            lambda: verify_batch(batch, process=False),
            BATCH,
            "raw verify, 1 thread",
            lambda: raw_verify_all(batch_raw),
            BATCH,
            None,
        ),
        (
            "seen again: SeenCache hit",
            loop_cache,
            LOOP,
            "raw verify",
            lambda: raw_verify_all(one),
            LOOP,
            20.0,
        ),
        (
            f"raw verify on {threads} threads",
            lambda: raw_verify_threads(batch_raw, threads),
            BATCH,
            "raw verify, 1 thread",
            lambda: raw_verify_all(batch_raw),
            BATCH,
            None,
        ),
        (
            "msgpack unpackb (lax)",
            loop_unpack,
            LOOP,
            "raw verify",
            lambda: raw_verify_all(one),
            LOOP,
            None,
        ),
        (
            "BLAKE2b-256 id (hashlib)",
            loop_blake,
            LOOP,
            "raw verify",
            lambda: raw_verify_all(one),
            LOOP,
            None,
        ),
    ]
    samples: list[tuple[list[float], list[float]]] = [([], []) for _ in plan]
    for _ in range(rounds):
        for (_, candidate, ops, _, baseline, base_ops, _), (mine, theirs) in zip(
            plan, samples, strict=True
        ):
            theirs.append(timed(baseline, base_ops))
            mine.append(timed(candidate, ops))
    figures = []
    for (name, _, _, base_name, _, _, target), (mine, theirs) in zip(plan, samples, strict=True):
        per_round = [b / c for b, c in zip(theirs, mine, strict=True)]
        figures.append(
            Figure(
                name=name,
                baseline=base_name,
                micros=min(mine),
                baseline_micros=min(theirs),
                ratio_low=min(per_round),
                ratio_high=max(per_round),
                target=target,
            )
        )
    machine: dict[str, object] = {
        "python": platform.python_version(),
        "cpus": threads,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "envelope_bytes": len(data),
        "signed_payload_bytes": len(payload),
        "rounds": rounds,
    }
    return figures, machine


def as_json(figures: list[Figure], machine: dict[str, object]) -> str:
    return json.dumps(
        {
            "machine": machine,
            "method": "ratio = best baseline time / best candidate time over the rounds",
            "figures": [
                {
                    "name": f.name,
                    "micros": round(f.micros, 3),
                    "baseline": f.baseline,
                    "baseline_micros": round(f.baseline_micros, 3),
                    "ratio": round(f.ratio, 3),
                    "ratio_range": [round(f.ratio_low, 3), round(f.ratio_high, 3)],
                    "target": f.target,
                    "pass": f.passed,
                }
                for f in figures
            ],
            "all_targets_met": all(f.passed is not False for f in figures),
        },
        indent=2,
    )


def print_table(figures: list[Figure], machine: dict[str, object]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=(
            f"protocol benchmark: Python {machine['python']}, {machine['cpus']} cores, "
            f"{machine['rounds']} rounds, load {machine['load_average']}"
        ),
        caption="ratio = best baseline time / best time (higher is better); "
        "range = per-round ratios (noise)",
    )
    for column in ("figure", "us/op", "baseline", "us/op", "ratio", "range", "target", "result"):
        table.add_column(column, justify="left" if column in {"figure", "baseline"} else "right")
    for f in figures:
        verdict = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "context"}[f.passed]
        table.add_row(
            f.name,
            f"{f.micros:.2f}",
            f.baseline,
            f"{f.baseline_micros:.2f}",
            f"{f.ratio:.2f}x",
            f"{f.ratio_low:.2f}..{f.ratio_high:.2f}",
            "" if f.target is None else f">= {f.target:g}x",
            verdict,
        )
    console = Console()
    console.width = max(console.width, 120)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--rounds", type=int, default=15, help="rounds of every figure")
    parser.add_argument(
        "--check", action="store_true", help="exit with status 1 when a target is missed"
    )
    args = parser.parse_args(argv)
    figures, machine = measure(max(1, args.rounds))
    if args.json:
        print(as_json(figures, machine))
    else:
        print_table(figures, machine)
    missed = [f.name for f in figures if f.passed is False]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
