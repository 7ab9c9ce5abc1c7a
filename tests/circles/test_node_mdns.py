"""Two nodes with ``mdns=True`` find and connect to each other with no bootstrap address.

Tests may use 127.0.0.1 and nothing else, while py-libp2p's mDNS announces
on every interface; so zeroconf is confined to the loopback interface here
(multicast on ``lo`` stays on this machine). Should this sandbox carry no
multicast on loopback, the mDNS test is skipped with that reason, and the
bootstrap path, which a LAN without multicast relies on, is tested instead.
"""

from __future__ import annotations

import functools
import socket
import struct
from pathlib import Path

import pytest
import trio

import protocol
from circles import Node

MDNS_GROUP = "224.0.0.251"
#: mDNS found a peer in ~3.3 s when measured; this leaves room for a loaded machine.
DISCOVERY_TIMEOUT = 45


def loopback_multicast_works() -> bool:
    """Whether a datagram to the mDNS group on 127.0.0.1 reaches a member socket."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # Bound to the group address: it only receives datagrams sent to the group.
        receiver.bind((MDNS_GROUP, 0))
        port = receiver.getsockname()[1]
        membership = struct.pack(
            "4s4s", socket.inet_aton(MDNS_GROUP), socket.inet_aton("127.0.0.1")
        )
        receiver.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        receiver.settimeout(1.0)
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
        sender.sendto(b"probe", (MDNS_GROUP, port))
        return receiver.recvfrom(16)[0] == b"probe"
    except OSError:
        return False
    finally:
        receiver.close()
        sender.close()


@pytest.fixture
def loopback_only_zeroconf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make py-libp2p's mDNS announce and listen on 127.0.0.1 alone."""
    import libp2p.discovery.mdns.mdns as mdns_module
    from zeroconf import IPVersion, Zeroconf

    monkeypatch.setattr(
        mdns_module,
        "Zeroconf",
        functools.partial(Zeroconf, interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only),
    )


async def connected(node: Node, peer: str) -> None:
    events = node.transport.events()  # listening before looking: nothing falls between
    if peer in node.transport.peers():
        return
    async for event in events:
        if event.peer == peer and peer in node.transport.peers():
            return


@pytest.mark.usefixtures("loopback_only_zeroconf")
async def test_two_nodes_find_each_other_by_mdns_alone(tmp_path: Path) -> None:
    if not loopback_multicast_works():
        pytest.skip(
            "no multicast on the loopback interface in this sandbox (see the bootstrap test)"
        )
    a_id = protocol.Identity.from_seed(b"\x21" * 32)
    b_id = protocol.Identity.from_seed(b"\x22" * 32)
    async with (
        Node(a_id, tmp_path / "a", mdns=True) as a,
        Node(b_id, tmp_path / "b", mdns=True) as b,
    ):
        assert not a.transport.peers() and not b.transport.peers()
        with trio.fail_after(DISCOVERY_TIMEOUT):
            await connected(a, b.transport.peer_id)
            await connected(b, a.transport.peer_id)
        # And the connection carries the node's traffic: a circle founded on
        # one is known on the other.
        circle = await a.found_circle(
            title="found by mDNS", unit="kg", target=5, currency="EUR", deadline=a.now() + 600
        )
        with trio.fail_after(DISCOVERY_TIMEOUT):
            await b.join(circle)
        assert b.charter(circle).title == "found by mDNS"


async def test_a_bootstrap_address_connects_without_mdns(tmp_path: Path) -> None:
    a_id = protocol.Identity.from_seed(b"\x23" * 32)
    b_id = protocol.Identity.from_seed(b"\x24" * 32)
    async with Node(a_id, tmp_path / "a") as a:
        bootstrap = [a.addresses()[0]]
        async with Node(b_id, tmp_path / "b", bootstrap=bootstrap) as b:
            with trio.fail_after(DISCOVERY_TIMEOUT):
                await connected(a, b.transport.peer_id)
            assert a.transport.peer_id in b.transport.peers()
