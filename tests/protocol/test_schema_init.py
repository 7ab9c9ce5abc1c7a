"""Messages are built by a generated ``__init__`` (protocol._schema._generate_init).

It must accept and refuse exactly what the dataclass ``__init__`` followed by
``__post_init__`` did: same arguments and defaults, same checks in the same
order, same errors.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given

import protocol
from protocol._messages import KINDS

from .strategies import messages


@pytest.mark.parametrize("cls", [KINDS[kind] for kind in sorted(KINDS)])
def test_every_kind_is_built_by_the_generated_init(cls: type[Any]) -> None:
    # The dataclass __init__ sets the fields, then calls __post_init__ to check them.
    assert "__post_init__" not in cls.__init__.__code__.co_names
    assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"


@given(messages())
def test_rebuilding_a_message_gives_it_back(message: protocol.Message) -> None:
    fields = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}  # type: ignore[arg-type]
    assert type(message)(**fields) == message
    assert dataclasses.replace(message) == message  # type: ignore[type-var]


def test_refusals_name_the_field_and_arguments_are_keyword_only() -> None:
    good = dict(
        circle=b"c" * 32,
        in_reply_to=b"r" * 32,
        round=1,
        unit_price=100,
        quantity=2,
        currency="EUR",
        valid_until=2,
        created=1,
    )
    assert protocol.CounterOffer(**good).unit_price == 100  # type: ignore[arg-type]
    with pytest.raises(protocol.InvalidField) as wrong:
        protocol.CounterOffer(**{**good, "unit_price": True})  # type: ignore[arg-type]
    assert wrong.value.reason == "wrong-type"
    assert wrong.value.field == "counter.unit_price"
    # The first invalid field in declaration order is the one reported, as before.
    with pytest.raises(protocol.InvalidField) as first:
        protocol.CounterOffer(**{**good, "circle": b"short", "quantity": 0})  # type: ignore[arg-type]
    assert first.value.field == "counter.circle"
    with pytest.raises(TypeError, match=r"CounterOffer.__init__\(\) missing 1 required"):
        protocol.CounterOffer(**{k: v for k, v in good.items() if k != "created"})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        protocol.CounterOffer(b"c" * 32)  # type: ignore[call-arg]


def test_sequences_are_normalised_to_tuples() -> None:
    tier = protocol.Tier(min_quantity=1, unit_price=100)
    offer = protocol.Offer(
        circle=b"c" * 32,
        product="beans",
        currency="EUR",
        list_price=120,
        tiers=[tier],  # type: ignore[arg-type]
        capacity=10,
        valid_until=2,
        terms="",
        loyalty=[],  # type: ignore[arg-type]
        in_reply_to=None,
        created=1,
    )
    assert offer.tiers == (tier,)
    assert offer.loyalty == ()
