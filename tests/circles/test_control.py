"""The control socket: owner-only, one JSON line each way, refusals keep their reason."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from circles._control import ControlError, call, claim_socket, serve_control, socket_path
from circles._errors import CirclesError


async def handler(op: str, args: dict[str, Any]) -> Any:
    if op == "echo":
        return args
    if op == "refuse":
        raise CirclesError("pledge later", reason="late")
    raise RuntimeError("a bug")


async def test_requests_answers_and_refusals(tmp_path: Path) -> None:
    path = socket_path(tmp_path)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, path, handler)
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            assert stat.S_ISSOCK(os.stat(path).st_mode)
            echoed = await trio.to_thread.run_sync(lambda: call(tmp_path, "echo", n=1, s="é"))
            assert echoed == {"n": 1, "s": "é"}
            with pytest.raises(ControlError) as refused:
                await trio.to_thread.run_sync(lambda: call(tmp_path, "refuse"))
            assert (refused.value.reason, str(refused.value)) == ("late", "pledge later")
            with pytest.raises(ControlError) as crashed:
                await trio.to_thread.run_sync(lambda: call(tmp_path, "crash"))
            assert crashed.value.reason == "internal"
            # A second node on the same directory is refused while this one answers.
            with pytest.raises(ControlError) as taken:
                claim_socket(path)
            assert taken.value.reason == "already-running"
            # The server survived the crash.
            assert await trio.to_thread.run_sync(lambda: call(tmp_path, "echo")) == {}
            nursery.cancel_scope.cancel()
    assert not path.exists()


def test_no_node_running(tmp_path: Path) -> None:
    with pytest.raises(ControlError) as missing:
        call(tmp_path, "status")
    assert missing.value.reason == "not-running"
    assert "circles up" in str(missing.value)


def test_a_stale_socket_is_claimed(tmp_path: Path) -> None:
    path = socket_path(tmp_path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # bound but never listening: what a killed node leaves
    claim_socket(path)
    assert not path.exists()


def test_a_regular_file_is_not_removed(tmp_path: Path) -> None:
    path = socket_path(tmp_path)
    path.write_text("mine")
    with pytest.raises(ControlError) as taken:
        claim_socket(path)
    assert taken.value.reason == "path-taken"
    assert path.read_text() == "mine"


def test_too_long_a_path_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ControlError) as long:
        socket_path(tmp_path / ("x" * 120))
    assert long.value.reason == "path-too-long"
