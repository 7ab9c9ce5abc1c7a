"""Hostile input: random and mutated bytes raise only ProtocolErrors, fast, in bounded memory.

100,000 random byte strings and 10,000 mutated valid envelopes, from a seeded
generator (the same inputs on every run), each decoded twice:

- once timed: each input takes at most 10 ms. A shared 2-core machine can
  pause any process for longer than that, so an input over the limit is timed
  twice more and judged by its fastest run: the bound is on the decoder's
  work, not the scheduler's.
- once under tracemalloc: the peak memory while decoding stays within 4x the
  input's size plus a fixed overhead. The peak also counts what every decode
  allocates whatever the input (the raised exception, its traceback and
  message, the message object built before the signature check, the
  structure check for inputs with long arrays), so that
  constant is measured in the same run, as the largest peak on trivial inputs,
  and the bound is ``4 * len(input) + constant``.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import random
import time
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

import protocol
from protocol import KINDS, MAX_ENVELOPE_SIZE, Envelope, Message, decode
from protocol._codec import pack

from .strategies import fixed_envelopes

SEED = 20_261_123
RANDOM_INPUTS = 100_000
MUTATED_INPUTS = 10_000
TIME_LIMIT_NS = 10_000_000
MEMORY_FACTOR = 4

# Starts of plausible envelopes, so that a share of the random inputs gets past
# the first byte and exercises the later checks.
PREFIXES = [b"\x95\x01" + pack(kind) for kind in sorted(KINDS)] + [b"\x95", b"\x95\x01", b"\xdc"]


def random_inputs(rng: random.Random, count: int) -> Iterator[bytes]:
    for _ in range(count):
        pick = rng.random()
        if pick < 0.6:
            size = rng.randint(0, 200)
        elif pick < 0.9:
            size = rng.randint(200, 4096)
        elif pick < 0.99:
            size = rng.randint(4096, MAX_ENVELOPE_SIZE)
        else:
            size = rng.randint(MAX_ENVELOPE_SIZE - 16, MAX_ENVELOPE_SIZE + 4096)
        data = rng.randbytes(size)
        if rng.random() < 1 / 3:
            prefix = rng.choice(PREFIXES)
            data = prefix + data[len(prefix) :]
        yield data


@functools.cache
def valid_envelopes() -> list[Envelope[Message]]:
    """A fixed pool of valid envelopes of every kind (derandomized Hypothesis draws)."""
    return fixed_envelopes(20)


def mutate(rng: random.Random, data: bytes, pool: list[Envelope[Message]]) -> bytes:
    """One random mutation (or a few) of an envelope's bytes."""
    buffer = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
        how = rng.randrange(8)
        position = rng.randrange(len(buffer) + 1)
        if how == 0 and buffer:  # change one byte
            buffer[min(position, len(buffer) - 1)] = rng.randrange(256)
        elif how == 1 and buffer:  # flip one bit
            buffer[min(position, len(buffer) - 1)] ^= 1 << rng.randrange(8)
        elif how == 2:  # insert bytes
            buffer[position:position] = rng.randbytes(rng.choice((1, 1, 2, 4, 32)))
        elif how == 3:  # delete bytes
            del buffer[position : position + rng.choice((1, 1, 2, 4, 32))]
        elif how == 4:  # truncate
            del buffer[position:]
        elif how == 5:  # a length or type header set to an extreme
            if buffer:
                buffer[min(position, len(buffer) - 1)] = rng.choice(
                    (0xC1, 0xC4, 0xC5, 0xC6, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0xFF)
                )
        elif how == 6:  # splice with another envelope
            other = rng.choice(pool).data
            cut = rng.randrange(len(other) + 1)
            buffer[position:] = other[cut:]
        else:  # repeat a slice
            end = min(len(buffer), position + rng.choice((1, 3, 16, 64)))
            buffer[position:position] = buffer[position:end] * rng.choice((2, 8, 100))
    return bytes(buffer)


def mutated_inputs(rng: random.Random, count: int) -> Iterator[bytes]:
    pool = valid_envelopes()
    for _ in range(count):
        yield mutate(rng, rng.choice(pool).data, pool)


def decode_refused(data: bytes) -> bool:
    """Decode; True when refused. Any exception but a ProtocolError propagates."""
    try:
        decode(data)
    except protocol.ProtocolError as error:
        assert isinstance(error, protocol.InvalidMessage), repr(error)
        return True
    return False


def timed(data: bytes) -> int:
    start = time.perf_counter_ns()
    with contextlib.suppress(protocol.ProtocolError):
        decode(data)
    return time.perf_counter_ns() - start


def peak_memory(data: bytes) -> int:
    """Peak bytes traced while decoding ``data`` (tracemalloc must be running)."""
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    with contextlib.suppress(protocol.ProtocolError):
        decode(data)
    return tracemalloc.get_traced_memory()[1] - before


def fixed_overhead() -> int:
    """The largest peak on trivial inputs: what any decode costs whatever its size."""
    trivial = [b"", b"\xc1", b"\x00", b"\x90", b"\x95\x01\xa4nope\x90\x00\x00"]
    # An array of 16 items or more takes a second path, which first checks the
    # input is complete with a msgpack Unpacker (about 45 KiB, whatever the size).
    trivial += [pack(list(range(16))), pack(list(range(16)))[:-1]]
    # The smallest envelope of each kind with a broken signature goes through
    # every check but the last, building its message object on the way.
    pool = valid_envelopes()
    for kind in sorted(KINDS):
        smallest = min((e for e in pool if e.kind == kind), key=lambda e: len(e.data))
        trivial.append(smallest.data[:-1] + bytes([smallest.data[-1] ^ 1]))
    for data in trivial:
        peak_memory(data)  # warm caches (interned strings, method lookups)
    return max(peak_memory(data) for data in trivial)


def check_inputs(inputs: Callable[[], Iterator[bytes]]) -> dict[str, int]:
    counts = {"inputs": 0, "refused": 0, "slowest_ns": 0, "worst_excess": 0}
    for data in inputs():
        counts["inputs"] += 1
        counts["refused"] += decode_refused(data)
    gc.collect()
    for data in inputs():
        elapsed = timed(data)
        if elapsed > TIME_LIMIT_NS:
            elapsed = min(elapsed, timed(data), timed(data))
        assert elapsed <= TIME_LIMIT_NS, (
            f"decoding {len(data)} bytes took {elapsed / 1e6:.1f} ms: {data[:64].hex()}"
        )
        counts["slowest_ns"] = max(counts["slowest_ns"], elapsed)
    tracemalloc.start()
    try:
        overhead = fixed_overhead()
        for data in inputs():
            peak = peak_memory(data)
            allowed = MEMORY_FACTOR * len(data) + overhead
            assert peak <= allowed, (
                f"decoding {len(data)} bytes peaked at {peak} bytes, over "
                f"{MEMORY_FACTOR} x size + {overhead}: {data[:64].hex()}"
            )
            counts["worst_excess"] = max(counts["worst_excess"], peak - MEMORY_FACTOR * len(data))
    finally:
        tracemalloc.stop()
    return counts


@pytest.mark.slow  # 10 to 20 s on a shared 2-core machine
def test_random_bytes() -> None:
    counts = check_inputs(lambda: random_inputs(random.Random(SEED), RANDOM_INPUTS))
    assert counts["inputs"] == RANDOM_INPUTS
    # Random bytes are never a validly signed envelope.
    assert counts["refused"] == RANDOM_INPUTS


def test_mutated_envelopes() -> None:
    counts = check_inputs(lambda: mutated_inputs(random.Random(SEED + 1), MUTATED_INPUTS))
    assert counts["inputs"] == MUTATED_INPUTS
    # A mutant may be the original again (a byte set to its own value, say);
    # nearly all are refused.
    assert counts["refused"] >= MUTATED_INPUTS * 0.95
