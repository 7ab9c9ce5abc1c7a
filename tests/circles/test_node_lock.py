"""One node per data directory: in this process or in any other (node.lock, flock)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio

import protocol
from circles import DataDirError, MemoryNetwork, Node
from circles._datadir import LOCK_FILE, NodeLock


def ident(n: int) -> protocol.Identity:
    return protocol.Identity.from_seed(bytes([n]) * 32)


async def test_a_second_node_in_this_process_on_one_data_directory_is_refused(
    tmp_path: Path,
) -> None:
    network = MemoryNetwork(seed=1)
    with trio.fail_after(30):
        async with Node(ident(1), tmp_path / "d", transport=network.open_transport):
            with pytest.raises(DataDirError) as refused:
                async with Node(ident(1), tmp_path / "d", transport=network.open_transport):
                    pass  # pragma: no cover - refused on entry
            assert refused.value.reason == "already-running"
            assert "another Node in this process" in str(refused.value)
            # Another directory is fine meanwhile.
            async with Node(ident(2), tmp_path / "e", transport=network.open_transport):
                pass
        # Once the first has closed, the directory is free again.
        async with Node(ident(1), tmp_path / "d", transport=network.open_transport):
            pass


async def test_a_node_is_refused_while_another_process_holds_the_directory(
    tmp_path: Path,
) -> None:
    data = tmp_path / "d"
    data.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(data / LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, f'{os.getpid()}\\n'.encode())\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with trio.fail_after(30), pytest.raises(DataDirError) as refused:
            async with Node(ident(1), data, transport=MemoryNetwork(seed=2).open_transport):
                pass  # pragma: no cover - refused on entry
        assert refused.value.reason == "already-running"
        assert f"process {holder.pid}" in str(refused.value)
    finally:
        holder.kill()
        holder.wait(timeout=30)
        if holder.stdout is not None:
            holder.stdout.close()


async def test_the_command_lines_lock_and_its_node_share_one_flock(tmp_path: Path) -> None:
    """The daemon takes the lock before it makes its node; the node takes it again."""
    data = tmp_path / "d"
    data.mkdir()
    with NodeLock(data), trio.fail_after(30):
        async with Node(ident(1), data, transport=MemoryNetwork(seed=3).open_transport):
            pass
        # Still held by the command line's lock after the node closed.
        with pytest.raises(DataDirError):
            async with (
                Node(ident(1), data, transport=MemoryNetwork(seed=4).open_transport),
                Node(ident(1), data, transport=MemoryNetwork(seed=5).open_transport),
            ):
                pass  # pragma: no cover - refused on entry
