"""The in-memory network as the simulator uses it: latency and loss, in virtual time."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import protocol
from circles._memnet import MemoryNetwork
from circles.sim import modelled_signatures


def ident(n: int) -> protocol.Identity:
    return protocol.Identity.from_seed(bytes([n]) * 32)


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def arrivals(network: MemoryNetwork, count: int) -> list[float]:
    """Publish ``count`` messages from one host; when (virtual time) each reached the other."""
    times: list[float] = []
    async with network.open_transport(ident(1)) as a, network.open_transport(ident(2)) as b:
        await b.connect(a.listen_addrs()[0])
        await a.subscribe("t")
        inbox = await b.subscribe("t")
        start = trio.current_time()
        for i in range(count):
            await a.publish("t", i.to_bytes(4, "big"))
        with trio.move_on_after(60):
            async for _ in inbox:
                times.append(trio.current_time() - start)
    return times


async def test_latency_is_paid_in_virtual_time(mock_clock: trio.testing.MockClock) -> None:
    times = await arrivals(MemoryNetwork(seed=1, latency=0.25), 50)
    assert len(times) == 50
    assert all(t == pytest.approx(0.25) for t in times)


async def test_latency_range_is_honoured(mock_clock: trio.testing.MockClock) -> None:
    times = await arrivals(MemoryNetwork(seed=2, latency=(0.1, 0.4)), 400)
    assert len(times) == 400
    assert 0.1 <= min(times) < 0.15 and 0.35 < max(times) <= 0.4


async def test_loss_drops_that_share_of_hops(mock_clock: trio.testing.MockClock) -> None:
    times = await arrivals(MemoryNetwork(seed=3, latency=0.05, loss=0.3), 2000)
    # Binomial(2000, 0.7): mean 1400, sd ~20.5; 5 sd either side.
    assert 1300 < len(times) < 1500


def test_modelled_signatures_keep_forgery_impossible() -> None:
    alice, mallory = ident(1), ident(2)
    body = protocol.Pledge(
        circle=b"\1" * 32,
        seq=1,
        quantity=1,
        max_price=10,
        currency="EUR",
        tolerance=0,
        created=1_800_000_000,
    )
    real = protocol.seal(body, alice)
    with modelled_signatures():
        modelled = protocol.seal(body, alice)
        assert protocol.decode(modelled.data).signer == alice.public_key
        assert modelled.signature != real.signature
        # Mallory signs with her own key and claims to be Alice: refused.
        forged = protocol.seal(body, mallory)
        claimed = forged.data[:-100] + b"\xc4\x20" + alice.public_key + forged.data[-66:]
        with pytest.raises(protocol.BadSignature):
            protocol.decode(claimed)
        # A key that never signed in this simulation has no valid signatures.
        with pytest.raises(protocol.BadSignature):
            protocol.decode(real.data)
    # Outside the block, ed25519 again: the modelled envelope is not valid.
    with pytest.raises(protocol.BadSignature):
        protocol.decode(modelled.data)
    assert protocol.decode(real.data).signer == alice.public_key
