"""``circles node`` as a real subprocess: its first line, bootstrap, and clean exit on signals."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

#: The command line under test, as installed (falls back to the module).
CIRCLES = Path(sys.executable).with_name("circles")
COMMAND = [str(CIRCLES)] if CIRCLES.exists() else [sys.executable, "-m", "circles._cli"]
FULL_ADDRESS = re.compile(r"^/ip4/127\.0\.0\.1/tcp/(\d+)/p2p/(12D3KooW[1-9A-HJ-NP-Za-km-z]+)$")
#: Starting includes importing libp2p (about a second, more on a loaded machine).
START_TIMEOUT = 60
#: "Promptly": the node's own exit is bounded by 2 s; this leaves room for a busy machine.
EXIT_TIMEOUT = 10


class NodeProcess:
    """A running ``circles node`` and the lines it printed so far."""

    def __init__(self, process: trio.Process, stderr_path: Path) -> None:
        self.process = process
        self.stderr_path = stderr_path
        self.lines: list[str] = []
        self._changed = trio.Event()
        self.eof = False

    async def read(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        while chunk := await self.process.stdout.receive_some(65536):
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            self.lines.extend(raw.decode() for raw in complete)
            self._wake()
        self.eof = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for_line(self, index: int = 0, *, containing: str = "") -> str:
        """The first line at or after ``index`` containing ``containing`` (bound it!)."""
        while True:
            for line in self.lines[index:]:
                if containing in line:
                    return line
            if self.eof:
                raise AssertionError(
                    f"the node ended without printing {containing!r}; it printed {self.lines}, "
                    f"stderr: {self.stderr()[-2000:]}"
                )
            await self._changed.wait()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def stop(self, signum: signal.Signals) -> float:
        """Send ``signum``; return the seconds until the process exited."""
        started = trio.current_time()
        self.process.send_signal(signum)
        with trio.fail_after(EXIT_TIMEOUT):
            await self.process.wait()
        return trio.current_time() - started


@asynccontextmanager
async def circles_node(
    tmp_path: Path, name: str, *extra: str, mdns: bool = False
) -> AsyncIterator[NodeProcess]:
    args = [
        *COMMAND,
        "node",
        "--data-dir",
        str(tmp_path / name),
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        *extra,
    ]
    if not mdns:
        args.append("--no-mdns")
    stderr_path = tmp_path / f"{name}.stderr"
    with stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr
        )
    node = NodeProcess(process, stderr_path)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.read)
            yield node
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(EXIT_TIMEOUT):
                await process.wait()


async def test_first_line_is_the_full_multiaddr_and_a_bootstrapped_node_connects(
    tmp_path: Path,
) -> None:
    async with circles_node(tmp_path, "a") as a:
        with trio.fail_after(START_TIMEOUT):
            first = await a.wait_for_line()
        match = FULL_ADDRESS.match(first)
        assert match, f"first line is not a full multiaddr: {first!r}"
        a_peer = match.group(2)
        async with circles_node(tmp_path, "b", "--bootstrap", first) as b:
            with trio.fail_after(START_TIMEOUT):
                b_first = await b.wait_for_line()
                b_match = FULL_ADDRESS.match(b_first)
                assert b_match, b_first
                b_peer = b_match.group(2)
                assert b_peer != a_peer
                # Each side reports the other: the dial really made a connection.
                await b.wait_for_line(1, containing=f"connected {a_peer}")
                await a.wait_for_line(1, containing=f"connected {b_peer}")
            assert await b.stop(signal.SIGTERM) < EXIT_TIMEOUT
            assert b.process.returncode == 0, b.stderr()
            with trio.fail_after(START_TIMEOUT):
                await a.wait_for_line(1, containing=f"disconnected {b_peer}")
        assert await a.stop(signal.SIGINT) < EXIT_TIMEOUT
        assert a.process.returncode == 0, a.stderr()
    for node in (a, b):
        assert "Traceback" not in node.stderr(), node.stderr()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_signal_stops_the_node_promptly_with_status_zero(
    tmp_path: Path, signum: signal.Signals
) -> None:
    async with circles_node(tmp_path, "solo") as node:
        with trio.fail_after(START_TIMEOUT):
            await node.wait_for_line()
        seconds = await node.stop(signum)
        assert node.process.returncode == 0, node.stderr()
    assert f"stopping on {signum.name}" in node.stderr()
    assert "Traceback" not in node.stderr(), node.stderr()
    # The node itself closes within 2 s; the rest is the interpreter exiting.
    assert seconds < 5, f"{signum.name} took {seconds:.1f} s"


async def test_the_same_data_directory_keeps_its_peer_id(tmp_path: Path) -> None:
    peers = []
    for _ in range(2):
        async with circles_node(tmp_path, "same") as node:
            with trio.fail_after(START_TIMEOUT):
                match = FULL_ADDRESS.match(await node.wait_for_line())
            assert match
            peers.append(match.group(2))
            await node.stop(signal.SIGTERM)
            assert node.process.returncode == 0, node.stderr()
    assert peers[0] == peers[1]
