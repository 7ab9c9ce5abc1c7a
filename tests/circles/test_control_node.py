"""No input on the control socket stops the node: a real ``circles up`` node, a real UNIX socket.

Each test sends one kind of fault as a raw client would (too deep, too long,
not an object, wrong argument types, no newline, many clients at once), checks
the typed refusal, and then that the same node still answers.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from circles._control import MAX_CLIENTS, MAX_LINE, READ_TIMEOUT, call, socket_path

CIRCLES = [sys.executable, "-m", "circles._cli"]


def run(*args: str) -> Any:
    done = subprocess.run(
        [*CIRCLES, *args, "--json"], capture_output=True, text=True, timeout=90, check=False
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return json.loads(done.stdout)


class Node:
    def __init__(self, data_dir: Path, pid: int, circle: str) -> None:
        self.data_dir = data_dir
        self.pid = pid
        self.circle = circle

    def raw(self, payload: bytes, *, timeout: float = 30) -> dict[str, Any]:
        """Send ``payload`` as is; the node's one-line answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            connect(sock, self.data_dir)
            # The node stops reading a line too long; its answer is waiting all the same.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(payload)
            return read_answer(sock)

    def request(self, op: str, **args: Any) -> dict[str, Any]:
        return self.raw(json.dumps({"op": op, "args": args}).encode() + b"\n")

    def assert_alive(self) -> None:
        """The same node (same process) still answers a normal request."""
        status = call(self.data_dir, "status", timeout=30)
        assert status["circles"] == 1
        assert (self.data_dir / "node.lock").read_text().strip() == str(self.pid)


def connect(sock: socket.socket, data_dir: Path) -> None:
    """Connect, waiting while the node's accept queue is full (EAGAIN on a UNIX socket)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            sock.connect(str(socket_path(data_dir)))
            return
        except BlockingIOError:
            assert time.monotonic() < deadline, "the node accepted no client for 30 s"
            time.sleep(0.02)


def read_answer(sock: socket.socket) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    answer = json.loads(data)
    assert isinstance(answer, dict)
    return answer


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    data_dir = tmp_path_factory.mktemp("ctl") / "n"
    up = run("up", "--data-dir", str(data_dir), "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns")
    try:
        circle = run(
            "circle", "new", "--data-dir", str(data_dir), "--what", "Oil", "--unit", "tin",
            "--target", "5", "--currency", "EUR", "--deadline", "3d",
        )  # fmt: skip
        yield Node(data_dir, up["pid"], circle["id"])
    finally:
        subprocess.run([*CIRCLES, "down", "--data-dir", str(data_dir)], timeout=60, check=False)


def refused(answer: dict[str, Any], reason: str) -> str:
    assert answer["ok"] is False, answer
    assert answer["reason"] == reason, answer
    assert isinstance(answer["error"], str) and answer["error"]
    return str(answer["error"])


@pytest.mark.parametrize("depth", [1_200, 100_000])
def test_a_deeply_nested_line_is_refused_and_the_node_keeps_serving(node: Node, depth: int) -> None:
    for payload in (
        b"[" * depth + b"]" * depth,
        b'{"op": "status", "args": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}",
        b"[" * depth,  # never closed
    ):
        assert "deeper than" in refused(node.raw(payload + b"\n"), "too-deep")
        node.assert_alive()
    # Brackets inside strings are text, not nesting.
    answer = node.request("circle.show", circle="[" * 5000)
    assert refused(answer, "bad-circle-id")
    node.assert_alive()


@pytest.mark.parametrize(
    "payload",
    [b"[1, 2]", b'"status"', b"42", b"null", b"true", b"", b"{", b"\xff\xfe{}", b"{}",
     b'{"op": 7}', b'{"op": "status", "args": [1]}', b'{"op": "status", "args": null}',
     b'{"op": "status", "extra": 1}', b'{"op": "circle.wait", "args": {"circle": "abcdef", '
     b'"seconds": NaN}}', b'{"op": "status"}{"op": "stop"}'],
    ids=["list", "string", "number", "null", "bool", "empty", "unclosed", "not-utf8",
         "no-op", "op-not-string", "args-list", "args-null", "extra-field", "nan", "two-objects"],
)  # fmt: skip
def test_a_line_that_is_not_a_request_object_is_refused(node: Node, payload: bytes) -> None:
    refused(node.raw(payload + b"\n"), "bad-request")
    node.assert_alive()


def test_an_unknown_command_is_refused(node: Node) -> None:
    for op in ("launch", "_stop_soon", "__init__", "handle", "op_status", "", "é" * 100):
        assert "does not know the command" in refused(node.request(op), "unknown-op")
    node.assert_alive()


@pytest.mark.parametrize(
    ("op", "args", "named"),
    [
        # An integer where a price string belongs would be read as 1,250.00.
        ("pledge", {"quantity": 1, "max_price": 1250}, "max_price"),
        ("pledge", {"quantity": 1, "max_price": 12.5}, "max_price"),
        ("pledge", {"quantity": "2", "max_price": "12.50"}, "quantity"),
        ("pledge", {"quantity": True, "max_price": "12.50"}, "quantity"),
        ("pledge", {"quantity": 1.0, "max_price": "12.50"}, "quantity"),
        ("pledge", {"quantity": 2**64, "max_price": "12.50"}, "quantity"),
        ("pledge", {"quantity": 1, "max_price": "12.50", "tolerance": None}, "tolerance"),
        ("circle.wait", {"seconds": "soon"}, "seconds"),
        ("circle.wait", {"seconds": -1}, "seconds"),
        ("circle.show", {"circle": ["a"]}, "circle"),
        ("circle.show", {"circle": {"id": "a"}}, "circle"),
    ],
)
def test_arguments_of_the_wrong_type_are_refused_not_coerced(
    node: Node, op: str, args: dict[str, Any], named: str
) -> None:
    error = refused(node.request(op, **{"circle": node.circle, **args}), "bad-arguments")
    assert named in error
    node.assert_alive()
    # Nothing was pledged.
    shown = call(node.data_dir, "circle.show", circle=node.circle)
    assert shown["pledged"] == 0


def test_a_number_too_large_to_be_finite_is_refused(node: Node) -> None:
    line = '{"op": "circle.wait", "args": {"circle": "' + node.circle + '", "seconds": 1e400}}\n'
    assert "seconds" in refused(node.raw(line.encode()), "bad-arguments")
    node.assert_alive()


def test_missing_and_unknown_arguments_are_refused(node: Node) -> None:
    assert "bad arguments" in refused(node.request("pledge", circle=node.circle), "bad-arguments")
    answer = node.request("status", verbose=True)
    assert "verbose" in refused(answer, "bad-arguments")
    answer = node.request("circle.new", title="x", unit="u", target=5, currency="EUR",
                          deadline=2**40, tags="coffee")  # fmt: skip
    assert "tags" in refused(answer, "bad-arguments")
    node.assert_alive()


def test_a_line_longer_than_the_limit_is_refused(node: Node) -> None:
    for payload in (
        b'{"op": "status", "args": {"pad": "' + b"x" * (2 * MAX_LINE) + b'"}}\n',
        b"x" * (4 * MAX_LINE),  # and never a newline
    ):
        assert "longer than" in refused(node.raw(payload), "too-large")
        node.assert_alive()


def test_a_client_that_never_ends_its_line_is_answered_after_the_timeout(node: Node) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as slow:
        slow.settimeout(READ_TIMEOUT + 20)
        slow.connect(str(socket_path(node.data_dir)))
        slow.sendall(b'{"op": "status"')
        started = time.monotonic()
        # Others are served while it waits.
        node.assert_alive()
        answer = read_answer(slow)
        waited = time.monotonic() - started
    assert "newline" in refused(answer, "timeout")
    assert READ_TIMEOUT - 1 <= waited <= READ_TIMEOUT + 15
    node.assert_alive()


def test_a_client_that_hangs_up_at_once_does_not_matter(node: Node) -> None:
    for payload in (b"", b'{"op": "sta', b'{"op": "status"}\n'):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(socket_path(node.data_dir)))
            sock.sendall(payload)
    node.assert_alive()


def test_many_clients_at_once_are_served_or_told_busy(node: Node) -> None:
    count = 8 * MAX_CLIENTS
    # Idle clients that hold their connections open: beyond the limit, others hear "busy".
    idle = []
    for _ in range(MAX_CLIENTS):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        connect(sock, node.data_dir)
        idle.append(sock)
    try:
        time.sleep(0.5)
        assert "try again" in refused(node.request("status"), "busy")
    finally:
        for sock in idle:
            sock.close()
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()

    def one() -> None:
        answer = node.request("status")
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == count
    assert {a.get("reason") for a in answers if not a["ok"]} <= {"busy"}
    assert any(a["ok"] for a in answers)
    # Slots are given back: once the crowd is gone, requests are served again.
    deadline = time.monotonic() + 15
    while not node.request("status")["ok"]:
        assert time.monotonic() < deadline, "the node stayed busy"
        time.sleep(0.2)
    node.assert_alive()
