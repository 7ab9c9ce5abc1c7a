"""A helper process that checks signatures while the calling thread decodes.

Theory of operation: a batch's decoding is Python, so it holds the GIL, and a
verifying thread in the same process that finishes a signature cannot start
the next until the decoder lets the GIL go: on a 2-core VM the two took
turns instead of overlapping. A separate process has its own GIL. It gets the
batch's bytes through a pipe and checks signatures from the *end* of the batch
backwards while the calling thread decodes; then the calling thread checks
from the front forwards, and they meet in the middle. Each side publishes the
next index it will take in 16 bytes of shared memory (one 8-byte counter each)
and takes an index only while the other side has not: both may take the one
index they meet on (checked twice, same answer), but none is left out, since a
counter read late is only further from the meeting point. The process checks
what :func:`protocol.decode` checks (the signed bytes sliced from the
envelope, see ``_verify``) and also computes the id, so the calling thread
only builds results.

The process runs ``python -c`` with a few lines that need nothing but PyNaCl:
it does not import this package, so starting it costs about 40 ms and never
re-runs the caller's ``__main__`` (as multiprocessing's spawn would). It
ignores SIGINT (Ctrl-C is the parent's to handle), exits when its input
closes, and is closed at interpreter exit. Whatever goes wrong with it (it
died, it hangs, it answers nonsense), the caller checks the rest itself and
stops using it: a failure costs time, never a wrong answer.
"""

from __future__ import annotations

import atexit
import mmap
import os
import select
import struct
import subprocess
import sys
import tempfile
import threading
from array import array
from collections.abc import Sequence

__all__ = ["HelperProcess", "helper_process", "lock"]

# The child: read a batch, check signatures from the end down to where the
# parent's counter is, answer with the batch's serial number, the lowest index
# taken and 33 bytes per index from there (1 if valid, then the 32-byte id).
# The slicing's sources of truth are _verify._SIGNED_PREFIX and _verify._TAIL,
# passed in argv.
_CHILD = r"""
import hashlib, mmap, os, signal, struct, sys, threading
signal.signal(signal.SIGINT, signal.SIG_IGN)
from nacl._sodium import ffi, lib

prefix = bytes.fromhex(sys.argv[1])
tail = int(sys.argv[2])
limit = int(sys.argv[3])
shm = mmap.mmap(int(sys.argv[4]), 16)
pos = memoryview(shm).cast("q")
rin = open(0, "rb", buffering=0)
wout = open(1, "wb", buffering=0)


def read(size):
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = rin.readinto(view[got:])
        if not n:
            sys.exit(0)
        got += n
    return bytes(buf)


def work(items, out, lock):
    buffer = ffi.new("unsigned char[]", limit)
    null = ffi.NULL
    sign_open = lib.crypto_sign_open
    blake2b = hashlib.blake2b
    while True:
        with lock:
            j = pos[0] - 1
            if j < pos[1]:
                return
            pos[0] = j
        data = items[j]
        if tail + 2 <= len(data) <= limit:
            signed = data[-64:] + prefix + data[2:-tail]
            if sign_open(buffer, null, signed, len(signed), data[-98:-66]) == 0:
                out[33 * j : 33 * j + 33] = b"\x01" + blake2b(data, digest_size=32).digest()


wout.write(b"R")
while True:
    serial, n, threads, size = struct.unpack("<IIII", read(16))
    lengths = memoryview(read(4 * n)).cast("I")
    blob = read(size)
    items = []
    start = 0
    for length in lengths:
        items.append(blob[start : start + length])
        start += length
    out = bytearray(33 * n)
    lock = threading.Lock()
    helpers = [threading.Thread(target=work, args=(items, out, lock)) for _ in range(threads - 1)]
    for helper in helpers:
        helper.start()
    work(items, out, lock)
    for helper in helpers:
        helper.join()
    low = max(pos[0], 0)
    wout.write(struct.pack("<II", serial, low) + out[33 * low :])
"""

# How long to wait for the helper's answer, beyond the time the batch should
# take: far longer than any healthy answer, short enough that a stopped
# helper does not look like a hung node.
_GRACE_SECONDS = 5.0
_SECONDS_PER_ITEM = 0.001
# After this many failures, stop starting helper processes for good.
_MAX_FAILURES = 3


class HelperProcess:
    """One helper process and the shared counters; used by one batch at a time."""

    def __init__(self, prefix: bytes, tail: int, limit: int) -> None:
        # Kept open for the helper's lifetime and closed in close().
        self._shm_file = tempfile.TemporaryFile()  # noqa: SIM115
        self._shm_file.truncate(16)
        self._shm = mmap.mmap(self._shm_file.fileno(), 16)
        # [0]: lowest index the helper has taken; [1]: next index the caller takes.
        self.counters = memoryview(self._shm).cast("q")
        fd = self._shm_file.fileno()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _CHILD, prefix.hex(), str(tail), str(limit), str(fd)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                pass_fds=(fd,),
            )
        except BaseException:
            self.counters.release()
            self._shm.close()
            self._shm_file.close()
            raise
        self._ready = False
        self._serial = 0
        self.broken = False

    def ready(self, timeout: float = 0.0) -> bool:
        """Whether the helper has started and can take a batch (waits up to ``timeout``)."""
        if self._ready or self.broken:
            return self._ready and not self.broken
        stdout = self._process.stdout
        assert stdout is not None
        try:
            if _readable(stdout.fileno(), timeout):
                self._ready = os.read(stdout.fileno(), 1) == b"R"
                if not self._ready:
                    self.close()
        except (OSError, ValueError):
            self.close()
        return self._ready and not self.broken

    def start(self, datas: Sequence[bytes], threads: int) -> bool:
        """Hand over a batch; the helper starts at its end. False if the helper is gone.

        Every batch started must be finished with :meth:`finish`, or the
        helper closed: its answer would otherwise be read as the next one's.
        """
        self._serial = (self._serial + 1) & 0xFFFFFFFF
        counters = self.counters
        counters[0] = len(datas)
        counters[1] = 0
        lengths = array("I", map(len, datas))
        blob = b"".join(datas)
        stdin = self._process.stdin
        assert stdin is not None
        try:
            stdin.write(struct.pack("<IIII", self._serial, len(datas), threads, len(blob)))
            stdin.write(lengths.tobytes())
            stdin.write(blob)
            stdin.flush()
        except (OSError, ValueError):
            self.close()
            return False
        return True

    def finish(self, total: int) -> tuple[int, bytes]:
        """Wait for the helper's answer: the lowest index it took and 33 bytes per index on.

        On any failure, closes the helper and answers ``(total, b"")``: it took nothing.
        """
        stdout = self._process.stdout
        assert stdout is not None
        deadline = _GRACE_SECONDS + _SECONDS_PER_ITEM * total
        try:
            serial, low = struct.unpack("<II", self._read(stdout.fileno(), 8, deadline))
            if serial != self._serial or not 0 <= low <= total:
                raise OSError("helper answered another batch, or out of range")
            return low, self._read(stdout.fileno(), 33 * (total - low), deadline)
        except (OSError, ValueError, struct.error):
            self.close()
            return total, b""

    @staticmethod
    def _read(fd: int, size: int, timeout: float) -> bytes:
        parts: list[bytes] = []
        while size:
            if not _readable(fd, timeout):
                raise OSError("helper process did not answer in time")
            part = os.read(fd, size)
            if not part:
                raise OSError("helper process exited")
            parts.append(part)
            size -= len(part)
        return b"".join(parts)

    def close(self) -> None:
        """Stop the helper (idempotent)."""
        self.broken = True
        process = self._process
        try:
            if process.stdin is not None:
                process.stdin.close()
        except OSError:
            pass
        try:
            process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        self.counters.release()
        self._shm.close()
        self._shm_file.close()


def _readable(fd: int, timeout: float) -> bool:
    # poll, not select: a node may hold more than FD_SETSIZE descriptors.
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


_helper: HelperProcess | None = None
_failures = 0
#: Held while a batch uses the helper; a batch that cannot take it at once uses threads.
lock = threading.Lock()


def helper_process(
    prefix: bytes, tail: int, limit: int, *, wait: float = 0.0
) -> HelperProcess | None:
    """The process-wide helper if it is ready (within ``wait`` seconds); starts it if needed.

    Call with :data:`lock` held. Returns None while the helper is starting
    (the batch that starts it does not wait for it unless told to), after it
    failed too often, or on a platform that cannot run it.
    """
    global _helper, _failures  # noqa: PLW0603 - one helper per process, started on first use
    if _helper is not None and _helper.broken:
        _helper = None
        _failures += 1
    if _helper is None:
        if _failures >= _MAX_FAILURES or not hasattr(select, "poll") or os.name != "posix":
            return None
        try:
            _helper = HelperProcess(prefix, tail, limit)
        except (OSError, ValueError):
            _failures += 1
            return None
    return _helper if _helper.ready(wait) else None


def _close_at_exit() -> None:
    with lock:
        if _helper is not None:
            _helper.close()


atexit.register(_close_at_exit)
