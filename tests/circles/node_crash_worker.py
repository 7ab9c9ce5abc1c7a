"""A member's node pledging in a loop, for test_node_crash.py to kill with SIGKILL.

Usage: ``python node_crash_worker.py DATA_DIR BOOTSTRAP_MULTIADDR CIRCLE_HEX``.

A real :class:`circles.Node` (py-libp2p on 127.0.0.1) with the member key
:data:`MEMBER` starts from ``DATA_DIR``, dials the test's peer node, joins the
circle if it has not yet, and prints ``up``. Until the parent writes ``go``
on standard input it prints ``digest HEX`` each time its state of the circle
changes, so the parent can see it reconverge with the peer. Then it pledges in
a loop and prints ``ack SEQ ID`` right after each ``pledge()`` returns. Every
line is flushed before the next step, so whatever the parent read was true
when it was printed. Quantities come from the OS's randomness: were a
sequence number ever reused after a crash, the two pledges would differ, which
is what the parent looks for.
"""

from __future__ import annotations

import os
import sys

import trio

import protocol
from circles import Node

#: The member whose pledges are checked.
MEMBER = protocol.Identity.from_seed(b"\x05" * 32)
#: Largest unit price the worker pledges (the test's charter allows it).
MAX_PRICE = 100
#: A bound, should the parent never kill it.
LIFETIME = 120


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def report_digests(node: Node, circle: bytes) -> None:
    last = b""
    while True:
        await node.wait_until(lambda seen=last: node.circle(circle).digest() != seen)  # type: ignore[misc]
        last = node.circle(circle).digest()
        say(f"digest {last.hex()}")


async def wait_for_go() -> None:
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    async with stdin:
        while b"go\n" not in buffer:
            chunk = await stdin.receive_some(64)
            if not chunk:
                raise SystemExit("the parent closed standard input before saying go")
            buffer += chunk


async def main(data_dir: str, bootstrap: str, circle: bytes) -> None:
    with trio.fail_after(LIFETIME):
        async with Node(MEMBER, data_dir, bootstrap=[bootstrap], sync_interval=1.0) as node:
            if circle not in node.joined():
                await node.join(circle)
            say("up")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(report_digests, node, circle)
                await wait_for_go()
                nursery.cancel_scope.cancel()
            while True:
                quantity = 1 + int.from_bytes(os.urandom(4), "big") % 1000
                envelope = await node.pledge(circle, quantity, max_price=MAX_PRICE)
                say(f"ack {envelope.message.seq} {envelope.id.hex()}")


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]))
