"""``circles up`` / ``circles down``: the member's node as a background process.

``circles up`` starts ``circles up --foreground`` as a detached process
(its output goes to ``node.log`` in the data directory) and returns once the
node answers on its control socket, so the next command can use it at once.
The foreground process runs the node (mDNS on unless ``--no-mdns``), the
control socket, and, for ``circles vendor serve``, the catalog vendor; it
stops on SIGINT, SIGTERM or ``circles down``. Before it starts, the data
directory is checked (see :mod:`circles._datadir`): its lock, write access,
and the member's key; ``circles up`` reports only the node that it started
and that holds the lock as up.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._control import ControlError, call, socket_path
from ._errors import CirclesError

__all__ = ["serve_foreground", "start_background", "stop_background"]

LOG_NAME = "node.log"


def start_background(
    data_dir: Path, *, listen: str, bootstrap: Sequence[str], mdns: bool, timeout: float
) -> dict[str, Any]:
    """Start the node detached; return its status once it answers.

    Succeeds only when the node that answers is the one started here (it holds
    the data directory's lock); a node that could not start (another holds the
    lock, the directory is read-only, the key is lost) fails with its own reason.
    """
    from ._datadir import check_identity, check_writable, lock_holder

    # Here as well as in the node: so these faults are said on the terminal, not in a log.
    check_writable(data_dir)
    check_identity(data_dir)
    try:
        call(data_dir, "status", timeout=5)
    except ControlError as exc:
        if exc.reason != "not-running":
            raise
    else:
        raise CirclesError(
            f"a node is already running for {data_dir}; `circles down` stops it",
            reason="already-running",
        )
    command = [
        sys.executable,
        "-m",
        "circles._cli",
        "up",
        "--foreground",
        "--data-dir",
        str(data_dir),
        "--listen",
        listen,
        *(arg for addr in bootstrap for arg in ("--bootstrap", addr)),
        *(() if mdns else ("--no-mdns",)),
    ]
    log_path = data_dir / LOG_NAME
    with log_path.open("ab") as log:
        start = log.tell()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # a terminal's Ctrl-C must not reach it
        )
    deadline = time.monotonic() + timeout
    while True:
        code = process.poll()
        if code is not None:
            said = _said_at_exit(log_path, start)
            raise CirclesError(
                f"the node stopped while starting (exit status {code}): {said}"
                if said
                else f"the node stopped while starting (exit status {code}); see {log_path}",
                reason="start-failed",
            )
        try:
            status: dict[str, Any] = call(data_dir, "status", timeout=5)
        except ControlError as exc:
            if exc.reason != "not-running":
                raise
        else:
            # Another node, started at the same moment, may be the one answering:
            # then ours finds the lock taken and stops, and that is what to report.
            if lock_holder(data_dir) == process.pid:
                status["pid"] = process.pid
                status["log"] = str(log_path)
                return status
        if time.monotonic() > deadline:
            process.terminate()
            raise CirclesError(
                f"the node did not start within {timeout:g} s; see {log_path}", reason="timeout"
            )
        time.sleep(0.1)


def _said_at_exit(log_path: Path, start: int) -> str:
    """The last ``circles: …`` sentence the node wrote to its log after ``start``."""
    try:
        with log_path.open("rb") as log:
            log.seek(start)
            text = log.read(1 << 20).decode(errors="replace")
    except OSError:
        return ""
    said = [line for line in text.splitlines() if line.startswith("circles: ")]
    return said[-1].removeprefix("circles: ") if said else ""


def stop_background(data_dir: Path, *, timeout: float) -> bool:
    """Ask the node on ``data_dir`` to stop; wait until it has. False if none was running."""
    try:
        call(data_dir, "stop", timeout=10)
    except ControlError as exc:
        if exc.reason == "not-running":
            return False
        raise
    path = socket_path(data_dir)
    deadline = time.monotonic() + timeout
    while path.exists():
        if time.monotonic() > deadline:
            raise CirclesError(
                f"the node did not stop within {timeout:g} s; see {data_dir / LOG_NAME}",
                reason="timeout",
            )
        time.sleep(0.05)
    return True


def serve_foreground(
    *,
    data_dir: Path,
    listen: str,
    bootstrap: Sequence[str],
    mdns: bool,
    as_json: bool,
    catalog: Path | None = None,
) -> int:
    """Run the node and its control socket until stopped. Exit status 0."""
    import trio

    from ._control import claim_socket
    from ._datadir import NodeLock, check_writable, explain_store_error, start_identity
    from ._vendor import load_catalog

    check_writable(data_dir)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    logging.getLogger("circles").setLevel(logging.INFO)
    # Held until this process ends: a second node on one data directory is refused
    # at once, before the (slow) node starts, and whoever asks learns which process runs.
    with NodeLock(data_dir):
        identity = start_identity(data_dir)
        claim_socket(socket_path(data_dir))
        loaded = load_catalog(catalog) if catalog is not None else None
        options = {
            "listen": listen,
            "bootstrap": list(bootstrap),
            "mdns": mdns,
            "as_json": as_json,
        }
        with explain_store_error(data_dir):
            return trio.run(_serve, data_dir, identity, options, loaded)


async def _serve(data_dir: Path, identity: Any, options: dict[str, Any], catalog: Any) -> int:
    import trio

    from ._control import serve_control
    from ._node import Node
    from ._service import Service

    stopped = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            Node(
                identity,
                data_dir,
                listen=[options["listen"]],
                bootstrap=options["bootstrap"],
                mdns=options["mdns"],
                # A catalog vendor's agent countersigns, and only deals its stock can
                # still supply; the node signing on its own would get there first.
                auto_countersign=False,
            ) as node,
            trio.open_nursery() as nursery,
        ):
            service = Service(node, data_dir, nursery=nursery, stop=stopped.set)
            service.vendor = catalog is not None
            await service.start()
            await nursery.start(serve_control, socket_path(data_dir), service.handle)
            if catalog is not None:
                from ._vendor_agent import run_vendor

                nursery.start_soon(run_vendor, node, catalog)
            status = await service.op_status()
            status["pid"] = os.getpid()
            if options["as_json"]:
                print(json.dumps(status), flush=True)
            else:
                print(f"node {status['public_key']} listening on", flush=True)
                for addr in status["addresses"]:
                    print(f"  {addr}", flush=True)

            async def on_signal() -> None:
                async for signum in signals:
                    print(f"stopping on {signal.Signals(signum).name}", file=sys.stderr)
                    stopped.set()
                    return

            nursery.start_soon(on_signal)
            await stopped.wait()
            nursery.cancel_scope.cancel()
    return 0
