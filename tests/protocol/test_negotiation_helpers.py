"""Builders shared by the negotiation, auction, reputation and loyalty tests (no tests here)."""

from __future__ import annotations

from protocol import (
    Accept,
    Allocation,
    Certificate,
    CounterOffer,
    Deal,
    Identity,
    Mandate,
    Negotiation,
    Offer,
    Party,
    Pledge,
    QuoteRequest,
    Receipt,
    Reject,
    Tier,
    WalkAway,
    envelope_id,
    seal,
)

CIRCLE = b"\x07" * 32
NEGOTIATOR = Identity.from_seed(b"\x01" * 32)
VENDOR = Identity.from_seed(b"\x02" * 32)
STRANGER = Identity.from_seed(b"\x03" * 32)
T0 = 1_700_000_000
QUANTITY = 100


def rfq(
    *,
    vendor: bytes | None = None,
    max_rounds: int = 6,
    respond_by: int = T0 + 100,
    deadline: int = T0 + 1000,
    quantity: int = QUANTITY,
    signer: Identity = NEGOTIATOR,
) -> bytes:
    return seal(
        QuoteRequest(
            circle=CIRCLE,
            vendor=vendor,
            product="olive oil, 5 l",
            quantity=quantity,
            currency="EUR",
            respond_by=respond_by,
            deadline=deadline,
            max_rounds=max_rounds,
            created=T0,
        ),
        signer,
    ).data


def mandate(ceiling: int = 1000, *, target: int = QUANTITY) -> Mandate:
    """Pledges covering ``target`` units up to ``ceiling``, and a few more cheaply."""
    return Mandate.from_demand(((ceiling, target), (ceiling // 2 or 1, 7)), target=target)


def offer(
    in_reply_to: bytes | None,
    price: int,
    *,
    now: int,
    signer: Identity = VENDOR,
    tiers: tuple[Tier, ...] | None = None,
    capacity: int = 1000,
    valid_for: int = 500,
    created: int | None = None,
) -> bytes:
    return seal(
        Offer(
            circle=CIRCLE,
            product="olive oil, 5 l",
            currency="EUR",
            list_price=price * 2,
            tiers=tiers or (Tier(min_quantity=1, unit_price=price),),
            capacity=capacity,
            valid_until=now + valid_for,
            terms="",
            loyalty=(),
            in_reply_to=in_reply_to,
            created=now if created is None else created,
        ),
        signer,
    ).data


def counter(
    in_reply_to: bytes, round: int, price: int, *, now: int, signer: Identity, valid_for: int = 500
) -> bytes:
    return seal(
        CounterOffer(
            circle=CIRCLE,
            in_reply_to=in_reply_to,
            round=round,
            unit_price=price,
            quantity=QUANTITY,
            currency="EUR",
            valid_until=now + valid_for,
            created=now,
        ),
        signer,
    ).data


def accept(accepted: bytes, price: int, *, now: int, signer: Identity) -> bytes:
    return seal(
        Accept(
            circle=CIRCLE,
            accepted=accepted,
            unit_price=price,
            quantity=QUANTITY,
            currency="EUR",
            created=now,
        ),
        signer,
    ).data


def reject(in_reply_to: bytes, *, now: int, signer: Identity) -> bytes:
    return seal(
        Reject(circle=CIRCLE, in_reply_to=in_reply_to, reason="no", created=now), signer
    ).data


def walkaway(session: bytes, *, now: int, signer: Identity) -> bytes:
    return seal(WalkAway(circle=CIRCLE, session=session, reason="bye", created=now), signer).data


def identity_of(party: Party) -> Identity:
    return NEGOTIATOR if party is Party.CIRCLE else VENDOR


def last_id(session: Negotiation) -> bytes:
    """Id of the last accepted move (what the next move must answer)."""
    return envelope_id(session.transcript[-1])


def move(session: Negotiation, party: Party, kind: str, price: int, now: int) -> bytes:
    """A well-formed move of ``kind`` by ``party`` answering the session's last move."""
    signer = identity_of(party)
    standing = session.standing
    if kind == "offer":
        return offer(last_id(session), price, now=now, signer=signer)
    if kind == "counter":
        return counter(last_id(session), session.rounds + 1, price, now=now, signer=signer)
    if kind == "accept":
        if standing is None:
            return accept(last_id(session), price, now=now, signer=signer)
        return accept(standing.id, standing.unit_price, now=now, signer=signer)
    if kind == "reject":
        return reject(last_id(session), now=now, signer=signer)
    assert kind == "walkaway"
    return walkaway(session.session, now=now, signer=signer)


def members(n: int, salt: int = 0) -> list[Identity]:
    return [Identity.from_seed(bytes([0x40 + salt]) + i.to_bytes(31, "big")) for i in range(n)]


def pledged(member: Identity, *, circle: bytes = CIRCLE, quantity: int = 10) -> bytes:
    return seal(
        Pledge(
            circle=circle,
            seq=1,
            quantity=quantity,
            max_price=1000,
            currency="EUR",
            tolerance=0,
            created=T0,
        ),
        member,
    ).data


def closed_deal(
    people: list[Identity],
    *,
    vendor: Identity = VENDOR,
    circle: bytes = CIRCLE,
    price: int = 900,
    created: int = T0 + 50,
) -> tuple[bytes, bytes, list[bytes]]:
    """(deal, certificate, pledges) for a deal ``vendor`` closed with ``people``."""
    pledges = [pledged(m, circle=circle) for m in people]
    allocations = sorted(
        (Allocation(pledge=envelope_id(p), quantity=10) for p in pledges),
        key=lambda a: a.pledge,
    )
    certificate = seal(
        Certificate(
            circle=circle,
            offer=b"\x0f" * 32,
            unit_price=price,
            currency="EUR",
            total=10 * len(people),
            allocations=tuple(allocations),
            created=created - 1,
        ),
        people[0],
    )
    deal = seal(
        Deal(
            circle=circle,
            certificate=certificate.id,
            unit_price=price,
            currency="EUR",
            total=10 * len(people),
            created=created,
        ),
        vendor,
    )
    return deal.data, certificate.data, pledges


def receipt(
    deal: bytes,
    member: Identity,
    *,
    fulfilled: str = "yes",
    rating: int = 5,
    created: int = T0 + 500,
    vendor: Identity = VENDOR,
) -> bytes:
    return seal(
        Receipt(
            deal=envelope_id(deal),
            vendor=vendor.public_key,
            fulfilled=fulfilled,
            rating=rating,
            comment="",
            created=created,
        ),
        member,
    ).data
