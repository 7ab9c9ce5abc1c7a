"""Two strategies haggling in virtual time: :func:`simulate`, byte for byte reproducible.

ed25519 signatures are deterministic, and the only randomness is a
``random.Random`` drawn from the seed, so one seed always gives the same
transcript. Both sides are :class:`Negotiator` objects over one
:class:`protocol.Negotiation`, so a simulated move passes every check a real one does.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import protocol
from protocol import Mandate, Negotiation, Party

from ._strategies import Negotiator, Strategy

__all__ = ["SimulationOutcome", "simulate"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationOutcome:
    """How a simulated negotiation ended, and everything that was signed."""

    result: protocol.Agreement | protocol.Ended
    """The agreement, or how it ended without one."""
    transcript: tuple[bytes, ...]
    """Every envelope, the request first."""
    vendor: bytes
    """The simulated vendor's key."""
    negotiator: bytes
    """The simulated circle negotiator's key."""


def _identity(seed: int, role: str) -> protocol.Identity:
    return protocol.Identity.from_seed(hashlib.blake2b(f"{seed}:{role}".encode()).digest()[:32])


def simulate(
    vendor: Strategy,
    circle: Strategy,
    *,
    seed: int,
    mandate: Mandate,
    max_rounds: int = 20,
    duration: int = 3600,
    max_step: int = 60,
    start: int = 1_700_000_000,
) -> SimulationOutcome:
    """Play ``vendor`` against ``circle`` in virtual time; the same seed gives the same bytes.

    The circle asks for its mandate's target; each move comes 1..``max_step``
    seconds after the last (drawn from the seed). A strategy that moves beyond
    its reservation or the mandate stops the simulation with StrategyError.
    """
    rng = random.Random(seed)
    negotiator, seller = _identity(seed, "circle"), _identity(seed, "vendor")
    request = protocol.QuoteRequest(
        circle=hashlib.blake2b(f"{seed}:circle-id".encode()).digest()[:32],
        vendor=seller.public_key,
        product="simulated goods",
        quantity=mandate.target,
        currency="EUR",
        respond_by=start + max(1, duration // 2),
        deadline=start + duration,
        max_rounds=max_rounds,
        created=start,
    )
    rfq = protocol.seal(request, negotiator).data
    session = Negotiation(rfq, vendor=seller.public_key, mandate=mandate)
    sides = {
        Party.VENDOR: Negotiator(seller, session, vendor),
        Party.CIRCLE: Negotiator(negotiator, session, circle),
    }
    now, step = start, max(1, max_step)
    # Each pass either ends the session by its timer or makes one move, and the
    # machine allows at most max_rounds + 2 moves: the loop is bounded.
    turn = session.turn
    while turn is not None:
        now += rng.randint(1, step)
        if session.handle_timer(now) is not None:
            break
        data = sides[turn].act(now)
        assert data is not None
        session.receive(data, now)
        turn = session.turn  # None once the move ended the session
    assert session.result is not None
    return SimulationOutcome(
        result=session.result,
        transcript=session.transcript,
        vendor=seller.public_key,
        negotiator=negotiator.public_key,
    )
