"""A member pledging in a loop, for test_store_crash.py to kill with SIGKILL.

Usage: ``python crash_worker.py DATA_DIR``. It prints ``opening`` before it
opens the store and ``ready`` after. Each round reserves a sequence
number, signs a pledge with it, prints ``signed SEQ ID``, stores it with
``put_own`` and prints ``ack SEQ ID`` (the moment ``pledge()`` would return).
Each line is flushed before the next step, so whatever the parent read was
true when it was printed. The quantity comes from the OS's randomness: were
a sequence number ever reused after a crash, the two pledges would differ,
which is what the parent looks for. A pledge from another member is also
stored with ``put`` each round, so kills land in batched writes too.
"""

from __future__ import annotations

import os
import sys
import time

import protocol
from circles._store import Store

#: The member whose pledges are checked, and a peer whose pledges are only received.
MEMBER = protocol.Identity.from_seed(b"\x01" * 32)
PEER = protocol.Identity.from_seed(b"\x02" * 32)
CREATED = 1_700_000_000

CHARTER = protocol.seal(
    protocol.Charter(
        title="crash test",
        unit="kg",
        target=1_000_000,
        currency="EUR",
        ceiling=None,
        deadline=CREATED + 86_400,
        place=None,
        tags=(),
        invite_only=False,
        members_invite=False,
        on_miss="expire",
        created=CREATED,
    ),
    MEMBER,
)


def pledge(seq: int, quantity: int, by: protocol.Identity) -> protocol.Envelope[protocol.Pledge]:
    """A pledge in the crash-test circle."""
    return protocol.seal(
        protocol.Pledge(
            circle=CHARTER.id,
            seq=seq,
            quantity=quantity,
            max_price=100,
            currency="EUR",
            tolerance=0,
            created=CREATED + 1,
        ),
        by,
    )


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    say("opening")
    store = Store.open(sys.argv[1], max_batch=16, max_delay=0.02)
    store.put_own(CHARTER)
    say("ready")
    start = time.monotonic()
    while time.monotonic() - start < 60:  # a bound, should the parent never kill it
        seq = store.reserve_seq(CHARTER.id, signer=MEMBER.public_key)
        envelope = pledge(seq, 1 + int.from_bytes(os.urandom(4), "big") % 1000, MEMBER)
        say(f"signed {seq} {envelope.id.hex()}")
        store.put_own(envelope)
        say(f"ack {seq} {envelope.id.hex()}")
        received = pledge(1 + int.from_bytes(os.urandom(3), "big"), 1, PEER)
        store.put(received)
    store.close()


if __name__ == "__main__":
    main()
