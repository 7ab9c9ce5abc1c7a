"""The local control socket: how ``circles`` commands talk to a running node.

A UNIX socket named ``control.sock`` in the data directory, mode 0600, never
a network port: only the user who owns the data directory can reach it. The
protocol is one JSON line each way per connection::

    -> {"op": "pledge", "args": {"circle": "ab12…", "quantity": 2, "max_price": 1250}}
    <- {"ok": true, "result": {...}}
    <- {"ok": false, "reason": "late", "error": "the circle's pledge deadline has passed"}

The client side uses the standard library only, so a command that talks to a
running node never imports trio or libp2p and starts in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ._errors import CirclesError

__all__ = ["SOCKET_NAME", "ControlError", "call", "claim_socket", "serve_control", "socket_path"]

log = logging.getLogger("circles.control")

SOCKET_NAME = "control.sock"
MAX_LINE = 1 << 20
# UNIX socket paths are limited to 108 bytes on Linux (104 on macOS).
_MAX_PATH = 100

Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]


class ControlError(CirclesError):
    """A control request that failed; ``reason`` is the node's or "not-running"."""

    reason = "control-error"


def socket_path(data_dir: Path) -> Path:
    """Where the control socket of ``data_dir``'s node lives."""
    path = Path(data_dir).absolute() / SOCKET_NAME
    if len(os.fsencode(path)) > _MAX_PATH:
        raise ControlError(
            f"the data directory path is too long for a control socket ({path}); "
            "use a shorter --data-dir",
            reason="path-too-long",
        )
    return path


def call(data_dir: Path, op: str, *, timeout: float = 60.0, **args: Any) -> Any:
    """Send one request to the node running on ``data_dir`` and return its result.

    Raises :class:`ControlError`: "not-running" when no node answers there, or
    the node's own reason when it refused the request.
    """
    path = socket_path(data_dir)
    request = json.dumps({"op": op, "args": args}).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(
                f"no node is running for {Path(data_dir)}; start it with `circles up`",
                reason="not-running",
            ) from None
        try:
            sock.sendall(request)
            reply = _read_line(sock)
        except TimeoutError:
            raise ControlError(
                f"the node did not answer {op!r} within {timeout:g} s; see its log in "
                f"{Path(data_dir) / 'node.log'}",
                reason="timeout",
            ) from None
    try:
        answer = json.loads(reply)
    except ValueError:
        raise ControlError("the node sent an unreadable answer", reason="bad-answer") from None
    if not isinstance(answer, dict):
        raise ControlError("the node sent an unreadable answer", reason="bad-answer")
    if answer.get("ok"):
        return answer.get("result")
    raise ControlError(str(answer.get("error", "the node refused")), reason=answer.get("reason"))


def _read_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n") or size > MAX_LINE:
            break
    return b"".join(chunks)


def claim_socket(path: Path) -> None:
    """Remove a socket left by a node that died; refuse if a node still answers."""
    if not path.exists() and not path.is_symlink():
        return
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise ControlError(
            f"{path} exists and is not a control socket; move it away", reason="path-taken"
        )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)
            return
    raise ControlError(
        f"a node is already running for {path.parent}; stop it with `circles down`",
        reason="already-running",
    )


async def serve_control(path: Path, handler: Handler, *, task_status: Any = None) -> None:
    """Serve requests on the UNIX socket ``path`` until cancelled (then remove it).

    Each request is handled in its own task; the handler's
    :class:`CirclesError` or ``protocol.ProtocolError`` becomes a refusal with
    its reason, anything else an "internal" refusal (and is logged by the
    caller's handler if it wants).
    """
    import trio

    claim_socket(path)
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The umask covers the moment between bind and chmod, when the socket
    # would otherwise be reachable with the default mode.
    old = os.umask(0o177)
    try:
        await listener.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    listener.listen(16)
    try:
        async with trio.open_nursery() as nursery:
            if task_status is not None:
                task_status.started()
            with listener:
                while True:
                    conn, _ = await listener.accept()
                    nursery.start_soon(_serve_one, conn, handler)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


async def _serve_one(conn: Any, handler: Handler) -> None:
    import trio

    import protocol

    stream = trio.SocketStream(conn)
    async with stream:
        data = b""
        with trio.move_on_after(30):
            while not data.endswith(b"\n") and len(data) <= MAX_LINE:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
        try:
            request = json.loads(data)
            op, args = request["op"], request.get("args", {})
            if not isinstance(op, str) or not isinstance(args, dict):
                raise ValueError(op)
        except (ValueError, KeyError, TypeError):
            answer: dict[str, Any] = {
                "ok": False,
                "reason": "bad-request",
                "error": "the request is not one JSON line {op, args}",
            }
        else:
            try:
                answer = {"ok": True, "result": await handler(op, args)}
            except (CirclesError, protocol.ProtocolError) as exc:
                answer = {"ok": False, "reason": exc.reason, "error": str(exc)}
            except Exception:
                # A bug in one command must not take the member's node down with it.
                log.exception("control request %r failed", op)
                answer = {
                    "ok": False,
                    "reason": "internal",
                    "error": f"the node failed to run {op!r}; its log has the details",
                }
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(json.dumps(answer).encode() + b"\n")
