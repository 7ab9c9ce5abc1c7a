"""Verifying many envelopes at once on every core, and remembering the ones seen.

Theory of operation: almost all of an envelope's cost is the ed25519 check,
and libsodium runs it with the GIL released, so threads verify in parallel.
What does not parallelise is the Python around it (decoding, typed fields,
building results): when two threads both run Python they take turns on the
GIL, and every hand-over costs far more than the work itself (measured on a
2-core VM: each Python step ran twice as slowly). So a batch goes in three
phases: the calling thread decodes every envelope (cheap, serial), then every
worker, the calling thread among them, runs a tight loop that does nothing but
call libsodium on the prepared bytes, then the calling thread builds the
results. The bytes checked are exactly the ones :func:`protocol.decode`
checks, so a batch accepts and refuses exactly what ``decode`` does.

Threads cannot overlap the decoding with the checking (a checker that
finishes a signature waits for the decoder to let the GIL go; interleaving
the two, or a shorter ``sys.setswitchinterval``, was measured slower on a
2-core VM, as every hand-over of the GIL wakes a sleeping thread). So a large
batch goes to a helper process instead (``_verify_process``): it checks from
the batch's end while this thread decodes, then this thread checks from the
front until they meet. That is what reaches 1.7x a single core's raw rate
on 2 cores; the cost is one extra Python process (started on first use,
about 40 ms and a few MB), and a batch too small to repay the pipe uses
threads.

Gossip delivers one message many times: with a :class:`SeenCache` (in
``_seen_cache``), a batch answers bytes already verified without checking
them again.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import msgpack

# PyNaCl ships no type information for its compiled libsodium binding.
from nacl._sodium import ffi, lib  # type: ignore[import-not-found]

from protocol import (
    DOMAIN,
    MAX_ENVELOPE_SIZE,
    VERSION,
    BadSignature,
    Envelope,
    Message,
    ProtocolError,
    UnverifiedEnvelope,
    decode,
    decode_unverified,
)

from . import _verify_process

# SeenCache moved to _seen_cache; still importable from here.
from ._seen_cache import SeenCache, SeenCacheStatistics

__all__ = ["SeenCache", "SeenCacheStatistics", "verify_batch"]

# Below this many envelopes to verify, handing work to other threads costs
# more than it saves: verify them in the calling thread.
_PARALLEL_FROM = 16
# Most threads one batch may use, whatever ``workers`` asks for.
_MAX_WORKERS = 64
# From this many envelopes to verify, a batch uses the helper process by default.
_PROCESS_FROM = 256
# How long a batch told to use the helper process waits for it to start.
_START_WAIT = 10.0

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - platforms without sched_getaffinity
        return os.cpu_count() or 1


def _executor() -> ThreadPoolExecutor:
    global _pool  # noqa: PLW0603 - one pool per process, created on first use
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=_MAX_WORKERS, thread_name_prefix="circles-verify"
            )
        return _pool


def _bad_signature(kind: str) -> BadSignature:
    return BadSignature(
        f"signature does not verify for this {kind} and signer: "
        "the message was altered, replayed from another kind, or forged",
        reason="bad-signature",
    )


# Every envelope that decodes ends with the signer and the signature at fixed
# offsets (a bin8 header before each), and the bytes its signature covers are
# the signed-payload prefix followed by everything between the envelope's
# first two bytes and that tail: exactly what protocol.decode checks, sliced
# here in the workers instead of in the calling thread.
_SIGNED_PREFIX = b"\x94" + msgpack.packb(DOMAIN) + msgpack.packb(VERSION)
_TAIL = 2 + 32 + 2 + 64


def _open_loop(
    datas: Sequence[bytes],
    ids: list[bytes | None],
    claims: Iterator[int],
    chunk: int,
) -> None:
    # The loop every worker runs: as little Python as possible between the
    # libsodium calls, so the GIL is almost never contended. crypto_sign_open
    # is what nacl.bindings.crypto_sign_open (and so protocol.decode) calls,
    # here with one output buffer reused instead of one allocated per call.
    # A verified envelope gets its id here too, in parallel; a refused one
    # keeps None.
    buffer = ffi.new("unsigned char[]", MAX_ENVELOPE_SIZE)
    null = ffi.NULL
    sign_open = lib.crypto_sign_open
    blake2b = hashlib.blake2b
    prefix = _SIGNED_PREFIX
    total = len(datas)
    for claim in claims:
        start = claim * chunk
        if start >= total:
            return
        for index in range(start, min(start + chunk, total)):
            data = datas[index]
            signed = data[-64:] + prefix + data[2:-_TAIL]
            if sign_open(buffer, null, signed, len(signed), data[-98:-66]) == 0:
                ids[index] = blake2b(data, digest_size=32).digest()


def _verify_all(datas: Sequence[bytes], workers: int) -> list[bytes | None]:
    ids: list[bytes | None] = [None] * len(datas)
    helpers = min(workers, _MAX_WORKERS) - 1
    if len(datas) < _PARALLEL_FROM or helpers <= 0:
        _open_loop(datas, ids, itertools.count(), len(datas) or 1)
        return ids
    # Small chunks claimed from one counter (next() on it is atomic under the
    # GIL) keep every worker busy to the end even when one is slowed down.
    chunk = max(4, len(datas) // ((helpers + 1) * 8))
    claims = itertools.count()
    pool = _executor()
    futures: list[Future[None]] = [
        pool.submit(_open_loop, datas, ids, claims, chunk) for _ in range(helpers)
    ]
    _open_loop(datas, ids, claims, chunk)
    for future in futures:
        future.result()
    return ids


# Envelope is a frozen dataclass: its __init__ sets each field through
# object.__setattr__, a third of the calling thread's time per result in a
# batch. Filling the slots directly builds the same object (Envelope checks
# nothing when built); test_verify holds this list to Envelope's fields.
_ENVELOPE_FIELDS = ("message", "signer", "signature", "data", "id")
_new = object.__new__
_set_message, _set_signer, _set_signature, _set_data, _set_id = (
    Envelope.__dict__[name].__set__ for name in _ENVELOPE_FIELDS
)


def verify_batch(
    datas: Sequence[bytes],
    *,
    workers: int | None = None,
    cache: SeenCache | None = None,
    process: bool | None = None,
) -> list[Envelope[Message] | ProtocolError]:
    """Decode and verify many envelopes, using every core; results keep the input order.

    Each result is the verified :class:`protocol.Envelope`, or the
    :class:`protocol.ProtocolError` that :func:`protocol.decode` would have
    raised for those bytes: refusals are returned, never raised. ``workers``
    is the number of cores to use (the calling thread's included; default:
    the cores this process may use). With a ``cache``, envelopes it has seen
    are answered from it and the newly verified ones are added to it.
    Identical bytes within one batch are verified once.

    ``process`` says whether signatures may be checked in a helper process
    while this thread decodes (faster, as decoding then overlaps checking;
    see ``circles._verify_process``): None (default) uses it for batches of
    at least 256 envelopes to verify once it has started (the first such
    batch starts it and uses threads); True uses it for any batch, waiting
    for it to start; False never does. Without it, threads check the
    signatures after the decoding. Answers are the same either way.

    This blocks while it works; from trio, call it through
    ``trio.to_thread.run_sync``.
    """
    if workers is None:
        workers = _default_workers()
    elif type(workers) is not int or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if process is not None and type(process) is not bool:
        raise ValueError(f"process must be None, True or False, got {process!r}")
    results: list[Envelope[Message] | ProtocolError | None] = [None] * len(datas)
    # Phase 1 (calling thread): cache hits, duplicates and non-bytes answered.
    positions: list[int] = []
    jobs: list[bytes] = []
    first_of: dict[bytes, int] = {}
    repeats: list[tuple[int, int]] = []
    for index, given in enumerate(datas):
        if type(given) is bytes:
            data = given
        elif isinstance(given, bytearray | memoryview):
            data = bytes(given)
        else:
            results[index] = _refusal(given)
            continue
        if cache is not None:
            seen = cache.get(data)
            if seen is not None:
                results[index] = seen
                continue
        first = first_of.setdefault(data, index)
        if first != index:
            repeats.append((index, first))
            continue
        positions.append(index)
        jobs.append(data)
    if jobs:
        use = workers > 1 and process is not False and (process or len(jobs) >= _PROCESS_FROM)
        if use and _verify_process.lock.acquire(blocking=False):
            try:
                helper = _verify_process.helper_process(
                    _SIGNED_PREFIX, _TAIL, MAX_ENVELOPE_SIZE, wait=_START_WAIT if process else 0.0
                )
                decoded, ids = (
                    _with_helper(helper, jobs, workers)
                    if helper is not None
                    else _with_threads(jobs, workers)
                )
            finally:
                _verify_process.lock.release()
        else:
            decoded, ids = _with_threads(jobs, workers)
        # Phase 3 (calling thread): the results.
        for index, unverified, envelope_id in zip(positions, decoded, ids, strict=True):
            if type(unverified) is not UnverifiedEnvelope:
                results[index] = unverified  # type: ignore[assignment] # the decode error
            elif envelope_id is not None:
                envelope: Envelope[Message] = _new(Envelope)
                _set_message(envelope, unverified.message)
                _set_signer(envelope, unverified.signer)
                _set_signature(envelope, unverified.signature)
                _set_data(envelope, unverified.data)
                _set_id(envelope, envelope_id)
                results[index] = envelope
                if cache is not None:
                    cache._remember(envelope)
            else:
                results[index] = _bad_signature(unverified.message.kind)
    for index, first in repeats:
        results[index] = results[first]
    return results  # type: ignore[return-value] # every slot is filled above


def _decode_all(jobs: list[bytes]) -> list[UnverifiedEnvelope[Message] | ProtocolError]:
    decoded: list[UnverifiedEnvelope[Message] | ProtocolError] = []
    append = decoded.append
    for data in jobs:
        try:
            append(decode_unverified(data))
        except ProtocolError as error:
            append(error)
    return decoded


def _with_threads(
    jobs: list[bytes], workers: int
) -> tuple[list[UnverifiedEnvelope[Message] | ProtocolError], list[bytes | None]]:
    # Decode everything, then every thread checks signatures (phase 2).
    decoded = _decode_all(jobs)
    good = [k for k, u in enumerate(decoded) if type(u) is UnverifiedEnvelope]
    if len(good) == len(jobs):
        return decoded, _verify_all(jobs, workers)
    ids: list[bytes | None] = [None] * len(jobs)
    for k, envelope_id in zip(good, _verify_all([jobs[k] for k in good], workers), strict=True):
        ids[k] = envelope_id
    return decoded, ids


def _with_helper(
    helper: _verify_process.HelperProcess, jobs: list[bytes], workers: int
) -> tuple[list[UnverifiedEnvelope[Message] | ProtocolError], list[bytes | None]]:
    # The helper process checks from the end while this thread decodes, then
    # this thread checks from the front until they meet (phase 2).
    total = len(jobs)
    started = helper.start(jobs, workers - 1)
    try:
        decoded = _decode_all(jobs)
    except BaseException:
        helper.close()
        raise
    ids: list[bytes | None] = [None] * total
    counters = helper.counters
    buffer = ffi.new("unsigned char[]", MAX_ENVELOPE_SIZE)
    null = ffi.NULL
    sign_open = lib.crypto_sign_open
    blake2b = hashlib.blake2b
    prefix = _SIGNED_PREFIX
    mine = 0
    if started:
        finished = False
        try:
            while mine < counters[0]:
                counters[1] = mine + 1
                if type(decoded[mine]) is UnverifiedEnvelope:
                    data = jobs[mine]
                    signed = data[-64:] + prefix + data[2:-_TAIL]
                    if sign_open(buffer, null, signed, len(signed), data[-98:-66]) == 0:
                        ids[mine] = blake2b(data, digest_size=32).digest()
                mine += 1
            low, answer = helper.finish(total)
            finished = True
        finally:
            if not finished:
                # Interrupted (KeyboardInterrupt, MemoryError...): the helper's
                # answer to this batch is still coming, so it cannot take another.
                helper.close()
    else:
        low, answer = total, b""
    for k in range(max(low, mine), total):
        if answer[33 * (k - low)] == 1:
            ids[k] = answer[33 * (k - low) + 1 : 33 * (k - low) + 33]
    if low > mine:
        # The helper failed: check what it left here, in threads.
        rest = [k for k in range(mine, low) if type(decoded[k]) is UnverifiedEnvelope]
        for k, envelope_id in zip(rest, _verify_all([jobs[k] for k in rest], workers), strict=True):
            ids[k] = envelope_id
    return decoded, ids


def _refusal(data: object) -> ProtocolError:
    # Whatever decode() says about a value that is not bytes-like.
    try:
        decode(data)  # type: ignore[arg-type]
    except ProtocolError as error:
        return error
    raise AssertionError("unreachable")  # pragma: no cover
