"""The control socket: owner-only, one JSON line each way, refusals keep their reason."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from circles._control import (
    MAX_DEPTH,
    MAX_LINE,
    BadRequest,
    ControlError,
    call,
    claim_socket,
    nesting_depth,
    read_request,
    serve_control,
    socket_path,
)
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


# ---------------------------------------------------- reading a request line
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:\n'),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\ab'), inner, max_size=3)
    ),
    max_leaves=20,
)


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


@given(json_values, st.booleans())
def test_the_nesting_scan_agrees_with_the_parser(value: Any, ascii_only: bool) -> None:
    """The linear scan measures what json.loads would recurse into, strings aside."""
    text = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert nesting_depth(text) == depth_of(value)


def test_a_request_line_is_refused_before_it_is_parsed_when_too_deep_or_long() -> None:
    with pytest.raises(BadRequest) as deep:
        read_request(b"[" * 100_000)
    assert deep.value.reason == "too-deep"
    nested = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    with pytest.raises(BadRequest) as not_object:
        read_request(nested)  # deep enough to be allowed, but not an object
    assert not_object.value.reason == "bad-request"
    with pytest.raises(BadRequest) as long:
        read_request(b" " * (MAX_LINE + 1))
    assert long.value.reason == "too-large"
    assert read_request(b'{"op": "status"}') == ("status", {})
