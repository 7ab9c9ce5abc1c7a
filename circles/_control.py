"""The local control socket: how ``circles`` commands talk to a running node.

A UNIX socket named ``control.sock`` in the data directory, mode 0600, never
a network port: only the user who owns the data directory can reach it. The
protocol is one JSON line each way per connection::

    -> {"op": "pledge", "args": {"circle": "ab12…", "quantity": 2, "max_price": "12.50"}}
    <- {"ok": true, "result": {...}}
    <- {"ok": false, "reason": "late", "error": "the circle's pledge deadline has passed"}

The client side uses the standard library only, so a command that talks to a
running node never imports trio or libp2p and starts in a fraction of a second.

The node serves whoever can open the socket, but no line may stop it: a line
is read for at most 10 s and 1 MiB, its nesting is measured (a linear scan)
before it is parsed, at most 32 clients are served at once, and every fault
is answered ``{"ok": false, "reason": …}`` (see :func:`read_request`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ._errors import CirclesError

__all__ = [
    "MAX_DEPTH",
    "MAX_LINE",
    "SOCKET_NAME",
    "BadRequest",
    "ControlError",
    "call",
    "claim_socket",
    "nesting_depth",
    "read_request",
    "serve_control",
    "socket_path",
]

log = logging.getLogger("circles.control")

SOCKET_NAME = "control.sock"
#: Longest request line read, in bytes; every command's arguments fit in far less.
MAX_LINE = 1 << 20
#: Deepest nesting of ``[`` / ``{`` in a request; requests nest 3 deep ({args: {tags: []}}).
MAX_DEPTH = 16
#: Seconds a client has to send its request line, and to take its answer.
READ_TIMEOUT = 10.0
WRITE_TIMEOUT = 10.0
#: Requests served at once; a client beyond this is answered "busy" at once.
MAX_CLIENTS = 32
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
        _connect(sock, path, data_dir, timeout)
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


def _connect(sock: socket.socket, path: Path, data_dir: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock.connect(str(path))
            return
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(
                f"no node is running for {Path(data_dir)}; start it with `circles up`",
                reason="not-running",
            ) from None
        except BlockingIOError:
            # The node's queue of clients waiting to be accepted is full: it is
            # busy, not gone; a UNIX socket says so at once instead of waiting.
            if time.monotonic() > deadline:
                raise ControlError(
                    f"the node is too busy to take a command (waited {timeout:g} s)",
                    reason="busy",
                ) from None
            time.sleep(0.05)


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
    caller's handler if it wants). No request, however malformed, slow or
    numerous, ends this loop: every fault is answered as a refusal (see
    :func:`read_request`) and the node keeps serving.
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
    listener.listen(128)
    busy = trio.Semaphore(MAX_CLIENTS)
    try:
        async with trio.open_nursery() as nursery:
            if task_status is not None:
                task_status.started()
            with listener:
                while True:
                    try:
                        conn, _ = await listener.accept()
                    except OSError as exc:
                        # Out of file descriptors (EMFILE) or memory: wait for
                        # clients to finish rather than let the node die.
                        log.warning("control socket cannot accept a client: %s", exc)
                        await trio.sleep(0.1)
                        continue
                    try:
                        busy.acquire_nowait()
                    except trio.WouldBlock:
                        nursery.start_soon(_refuse_busy, conn)
                    else:
                        nursery.start_soon(_serve_one, conn, handler, busy)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def _refusal(reason: str, error: str) -> dict[str, Any]:
    return {"ok": False, "reason": reason, "error": error}


class BadRequest(ControlError):
    """A control request line that cannot be read (too long, too deep, not {op, args})."""

    reason = "bad-request"


def nesting_depth(data: bytes) -> int:
    """How deep ``[`` and ``{`` nest in the JSON text ``data``, brackets in strings ignored.

    A linear scan that never recurses, so the depth of a hostile line is known
    before a recursive parser sees it.
    """
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a request may carry")


def read_request(data: bytes) -> tuple[str, dict[str, Any]]:
    """The ``(op, args)`` of one request line; :class:`BadRequest` for anything else."""
    if len(data) > MAX_LINE:
        raise BadRequest(
            f"the request is longer than {MAX_LINE} bytes; no command needs that much",
            reason="too-large",
        )
    if nesting_depth(data) > MAX_DEPTH:
        raise BadRequest(
            f"the request nests deeper than {MAX_DEPTH} levels; no command needs that",
            reason="too-deep",
        )
    try:
        # NaN and Infinity are not JSON; no argument may be one.
        request = json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the request is not one JSON line: {exc}") from None
    if not isinstance(request, dict):
        raise BadRequest(
            f"the request is a JSON {type(request).__name__}, not an object {{op, args}}"
        )
    op, args = request.get("op"), request.get("args", {})
    if not isinstance(op, str):
        raise BadRequest('the request has no "op" string naming the command')
    if not isinstance(args, dict):
        raise BadRequest('the request\'s "args" is not an object of named arguments')
    unknown = set(request) - {"op", "args"}
    if unknown:
        raise BadRequest(f"the request has fields besides op and args: {sorted(unknown)}")
    return op, args


async def _receive_line(stream: Any) -> bytes:
    """One request line, read for at most READ_TIMEOUT seconds and MAX_LINE bytes."""
    import trio

    data = bytearray()
    with trio.move_on_after(READ_TIMEOUT) as waited:
        while b"\n" not in data and len(data) <= MAX_LINE:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
    if waited.cancelled_caught:
        raise BadRequest(
            f"no complete request line within {READ_TIMEOUT:g} s; end the request with a newline",
            reason="timeout",
        )
    if len(data) > MAX_LINE:
        raise BadRequest(
            f"the request is longer than {MAX_LINE} bytes; no command needs that much",
            reason="too-large",
        )
    line, _, _ = bytes(data).partition(b"\n")
    return line


async def _refuse_busy(conn: Any) -> None:
    import trio

    stream = trio.SocketStream(conn)
    answer = _refusal(
        "busy", f"the node is already serving {MAX_CLIENTS} commands; try again shortly"
    )
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        async with stream:
            with trio.move_on_after(1):
                await stream.send_all(json.dumps(answer).encode() + b"\n")


async def _serve_one(conn: Any, handler: Handler, busy: Any) -> None:
    """Answer one client; ``busy`` was acquired for it and is released here."""
    import trio

    stream = trio.SocketStream(conn)
    try:
        await _serve_stream(stream, handler)
    finally:
        busy.release()


async def _serve_stream(stream: Any, handler: Handler) -> None:
    import trio

    async with stream:
        try:
            answer = await _answer(stream, handler)
            reply = json.dumps(answer).encode() + b"\n"
        except Exception:
            # Whatever goes wrong with one client, the node keeps serving the others.
            log.exception("control request failed")
            reply = json.dumps(_refusal("internal", "the node failed to answer")).encode() + b"\n"
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            # A client that never reads its answer does not hold the slot for ever.
            with trio.move_on_after(WRITE_TIMEOUT):
                await stream.send_all(reply)


async def _answer(stream: Any, handler: Handler) -> dict[str, Any]:
    import trio

    import protocol

    try:
        op, args = read_request(await _receive_line(stream))
    except BadRequest as exc:
        return _refusal(exc.reason, str(exc))
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return _refusal("bad-request", "the client closed the connection")
    try:
        return {"ok": True, "result": await handler(op, args)}
    except (CirclesError, protocol.ProtocolError) as exc:
        return _refusal(exc.reason, str(exc))
    except Exception:
        # A bug in one command must not take the member's node down with it.
        log.exception("control request %r failed", op)
        return _refusal("internal", f"the node failed to run {op!r}; its log has the details")
