"""Simulated transcripts, byte for byte: a change to the move path must not change a wire byte.

The digests were taken before the move path was optimised (and agree after):
SHA-256 over the transcript's envelopes, then the result's repr.
"""

from __future__ import annotations

import hashlib

import pytest

import protocol
from circles import RelativeTitForTat, TakeItOrLeaveIt, TimeDependent, simulate

CASES: dict[str, tuple[dict[str, object], int, str]] = {
    # issue 6's comparison: Boulware circle, conceder vendor, up to 100 offers a side
    "boulware-vs-conceder": (
        {
            "vendor": TimeDependent(reservation=1, initial=100, e=5.0),
            "circle": TimeDependent(reservation=100, initial=1, e=0.2),
            "seed": 7,
            "mandate": protocol.Mandate.from_demand(((100, 1),), target=1),
            "max_rounds": 199,
            "duration": 12000,
            "max_step": 60,
        },
        127,
        "6a4605f826c16fc4e50273873a3e5d4d8335a141c54d86c678354472c960b823",
    ),
    "tit-for-tat-vs-linear": (
        {
            "vendor": RelativeTitForTat(reservation=800, initial=1500, delta=2),
            "circle": TimeDependent(reservation=1000, initial=400),
            "seed": 3,
            "mandate": protocol.Mandate.from_demand(((1000, 50), (600, 20)), target=50),
            "max_rounds": 30,
        },
        23,
        "4833e0cea88a3f331d595e030dc22861ebd157da28d3cc72d556261e2c42db8f",
    ),
    "take-it-or-leave-it-rejected": (
        {
            "vendor": TakeItOrLeaveIt(reservation=900),
            "circle": RelativeTitForTat(reservation=700, initial=300),
            "seed": 11,
            "mandate": protocol.Mandate.from_demand(((700, 10),), target=10),
            "max_rounds": 3,
        },
        4,
        "cac5c3497513fe72692013e06ffe7dd1ebc603c51ba9a71899d5f05de2c2c96c",
    ),
    "deadline": (
        {
            "vendor": TimeDependent(reservation=500, initial=900, e=0.1),
            "circle": TimeDependent(reservation=400, initial=100, e=0.1),
            "seed": 5,
            "mandate": protocol.Mandate.from_demand(((400, 10),), target=10),
            "max_rounds": 500,
            "duration": 600,
            "max_step": 60,
        },
        16,
        "e91f4ef4a30dcf10f8f2e391094ecd6f03a3c12f4b1442ba148282271319fe94",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_simulated_transcripts_are_unchanged(name: str) -> None:
    arguments, length, digest = CASES[name]
    outcome = simulate(**arguments)  # type: ignore[arg-type]
    assert len(outcome.transcript) == length
    data = b"".join(outcome.transcript) + repr(outcome.result).encode()
    assert hashlib.sha256(data).hexdigest() == digest
