"""Every rule a move can break, each refused with its reason and leaving the machine unchanged."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from protocol import (
    Accept,
    CounterOffer,
    Identity,
    Negotiation,
    NegotiationError,
    Offer,
    Party,
    Pledge,
    Reject,
    Tier,
    WalkAway,
    seal,
)

from .test_negotiation_helpers import (
    CIRCLE,
    NEGOTIATOR,
    QUANTITY,
    T0,
    VENDOR,
    mandate,
    move,
    rfq,
)

V = Party.VENDOR
NOW = T0 + 20
OTHER_CIRCLE = b"\x08" * 32


def opened() -> Negotiation:
    """A session where the vendor offered 1000 (valid 500 s) and the circle is to move."""
    s = Negotiation(rfq(), vendor=VENDOR.public_key, mandate=mandate(1000))
    s.receive(move(s, V, "offer", 1000, T0 + 10), T0 + 10)
    return s


def countered(s: Negotiation, **changes: object) -> bytes:
    fields: dict[str, object] = {
        "circle": CIRCLE,
        "in_reply_to": s.last_id,
        "round": s.rounds + 1,
        "unit_price": 900,
        "quantity": QUANTITY,
        "currency": "EUR",
        "valid_until": NOW + 500,
        "created": NOW - 5,
    }
    fields.update(changes)
    return seal(CounterOffer(**fields), NEGOTIATOR).data  # type: ignore[arg-type]


def accepted(s: Negotiation, **changes: object) -> bytes:
    standing = s.standing
    assert standing is not None
    fields: dict[str, object] = {
        "circle": CIRCLE,
        "accepted": standing.id,
        "unit_price": standing.unit_price,
        "quantity": QUANTITY,
        "currency": "EUR",
        "created": NOW,
    }
    fields.update(changes)
    return seal(Accept(**fields), NEGOTIATOR).data  # type: ignore[arg-type]


def offered(s: Negotiation, **changes: object) -> bytes:
    fields: dict[str, object] = {
        "circle": CIRCLE,
        "product": "olive oil, 5 l",
        "currency": "EUR",
        "list_price": 2000,
        "tiers": (Tier(min_quantity=1, unit_price=1000),),
        "capacity": 1000,
        "valid_until": NOW + 500,
        "terms": "",
        "loyalty": (),
        "in_reply_to": s.last_id,
        "created": NOW - 5,
    }
    fields.update(changes)
    return seal(Offer(**fields), VENDOR).data  # type: ignore[arg-type]


def fresh() -> Negotiation:
    return Negotiation(rfq(), vendor=VENDOR.public_key, mandate=mandate(1000))


def signed_by(identity: Identity, body: object) -> bytes:
    return seal(body, identity).data  # type: ignore[arg-type]


# (name, session factory, flawed move, reason): one per rule in Negotiation.receive.
CASES: list[tuple[str, Callable[[], Negotiation], Callable[[Negotiation], bytes], str]] = [
    (
        "not a negotiation kind",
        opened,
        lambda s: signed_by(
            NEGOTIATOR,
            Pledge(
                circle=CIRCLE,
                seq=1,
                quantity=1,
                max_price=1,
                currency="EUR",
                tolerance=0,
                created=NOW,
            ),
        ),
        "wrong-kind",
    ),
    (
        "counter for another circle",
        opened,
        lambda s: countered(s, circle=OTHER_CIRCLE),
        "wrong-session",
    ),
    (
        "reject for another circle",
        opened,
        lambda s: signed_by(
            NEGOTIATOR, Reject(circle=OTHER_CIRCLE, in_reply_to=s.last_id, reason="", created=NOW)
        ),
        "wrong-session",
    ),
    (
        "counter answering an old move",
        opened,
        lambda s: countered(s, in_reply_to=s.session),
        "not-in-reply",
    ),
    ("counter skipping a round", opened, lambda s: countered(s, round=2), "mismatch"),
    ("counter for other units", opened, lambda s: countered(s, quantity=QUANTITY + 1), "mismatch"),
    ("counter in another currency", opened, lambda s: countered(s, currency="USD"), "mismatch"),
    (
        "counter lapsed on arrival",
        opened,
        lambda s: countered(s, valid_until=NOW, created=NOW - 10),
        "lapsed",
    ),
    (
        "counter beyond the pledges",
        opened,
        lambda s: countered(s, unit_price=1001),
        "outside-mandate",
    ),
    (
        "accept naming another proposal",
        opened,
        lambda s: accepted(s, accepted=s.session),
        "not-in-reply",
    ),
    ("accept at another price", opened, lambda s: accepted(s, unit_price=999), "mismatch"),
    ("accept of other units", opened, lambda s: accepted(s, quantity=QUANTITY + 1), "mismatch"),
    ("accept in another currency", opened, lambda s: accepted(s, currency="USD"), "mismatch"),
    (
        "reject answering an old move",
        opened,
        lambda s: signed_by(
            NEGOTIATOR, Reject(circle=CIRCLE, in_reply_to=s.session, reason="", created=NOW)
        ),
        "not-in-reply",
    ),
    (
        "walk-away from another request",
        opened,
        lambda s: signed_by(
            NEGOTIATOR, WalkAway(circle=CIRCLE, session=b"\x09" * 32, reason="", created=NOW)
        ),
        "wrong-session",
    ),
    ("offer answering nothing", fresh, lambda s: offered(s, in_reply_to=None), "not-in-reply"),
    ("offer in another currency", fresh, lambda s: offered(s, currency="USD"), "mismatch"),
    (
        "offer lapsed on arrival",
        fresh,
        lambda s: offered(s, valid_until=NOW, created=NOW - 10),
        "lapsed",
    ),
]


@pytest.mark.parametrize(("name", "make", "flawed", "reason"), CASES, ids=[c[0] for c in CASES])
def test_each_broken_rule_is_refused_with_its_reason(
    name: str,
    make: Callable[[], Negotiation],
    flawed: Callable[[Negotiation], bytes],
    reason: str,
) -> None:
    s = make()
    before = (s.state, s.turn, s.transcript, s.proposals, s.rounds, s.last_id, s.result)
    timer = s.get_timer()
    with pytest.raises(NegotiationError) as info:
        s.receive(flawed(s), NOW)
    assert info.value.reason == reason, name
    assert (s.state, s.turn, s.transcript, s.proposals, s.rounds, s.last_id, s.result) == before
    assert s.get_timer() == timer
