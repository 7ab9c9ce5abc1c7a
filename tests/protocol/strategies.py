"""Hypothesis strategies for valid protocol values: one per message kind, and envelopes.

Field values are derived from each class's schema (the field types in
``protocol._schema``), so a field added to a kind is generated without a change
here; the rules that span several fields (deadline after creation, sorted
tiers, a certificate's total) are what each kind's strategy adds. Importing
this module fails loudly when a kind in ``protocol.KINDS`` has no strategy, so
a new kind cannot silently escape every property test.

Use :func:`messages` for a message of any kind (or of named kinds),
:func:`message_of` for one kind, :func:`identities` for keys and
:func:`envelopes` for sealed envelopes, and :func:`fixed_sample` for a
reproducible list of values to loop over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

import protocol
from protocol import (
    KINDS,
    Allocation,
    Certificate,
    Charter,
    CounterOffer,
    Envelope,
    Identity,
    Message,
    Misbehaviour,
    Offer,
    Pledge,
    Tier,
)
from protocol._messages import MAX_MONEY, MAX_QUANTITY, MAX_TIME
from protocol._schema import Bool, Bytes, FieldType, Int, Opt, Seq, Struct, Text

__all__ = [
    "KIND_STRATEGIES",
    "envelopes",
    "field_values",
    "fixed_envelopes",
    "fixed_sample",
    "fields_of",
    "identities",
    "message_of",
    "messages",
    "texts",
]

T = TypeVar("T")


def texts(ftype: Text) -> st.SearchStrategy[str]:
    """Text valid for ``ftype``: within its UTF-8 byte limit, choices and pattern."""
    if ftype.choices is not None:
        return st.sampled_from(ftype.choices)
    if ftype.pattern_text is not None:
        # Every pattern in the protocol is ASCII, so characters are bytes.
        return st.from_regex(ftype.pattern_text, fullmatch=True).filter(
            lambda s: ftype.min_chars <= len(s) and len(s.encode("utf-8")) <= ftype.max_bytes
        )

    def fit(text: str) -> str:
        # Cut to the byte limit on a character boundary: a long draw still yields
        # text that fills the field, where a filter would throw most draws away.
        return text.encode("utf-8")[: ftype.max_bytes].decode("utf-8", errors="ignore")

    return (
        st.text(
            alphabet=st.characters(codec="utf-8"),
            min_size=ftype.min_chars,
            max_size=ftype.max_bytes,
        )
        .map(fit)
        .filter(lambda s: len(s) >= ftype.min_chars)
    )


def field_values(ftype: FieldType) -> st.SearchStrategy[Any]:
    """Any value valid for one field type, taken alone (no cross-field rules)."""
    if isinstance(ftype, Int):
        return st.one_of(
            st.sampled_from(sorted({ftype.lo, ftype.hi, min(ftype.lo + 1, ftype.hi)})),
            st.integers(ftype.lo, ftype.hi),
        )
    if isinstance(ftype, Bool):
        return st.booleans()
    if isinstance(ftype, Text):
        return texts(ftype)
    if isinstance(ftype, Bytes):
        return st.binary(min_size=ftype.min_len, max_size=ftype.max_len)
    if isinstance(ftype, Opt):
        return st.none() | field_values(ftype.inner)
    if isinstance(ftype, Seq):
        return st.lists(
            field_values(ftype.inner), min_size=ftype.min_len, max_size=ftype.max_len
        ).map(tuple)
    if isinstance(ftype, Struct):
        return structures(ftype.cls)
    raise TypeError(f"no strategy for field type {type(ftype).__name__}: add one to strategies.py")


def fields_of(cls: type[Any], **overrides: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A dict of valid values for every field of ``cls``, some fields overridden."""
    schema: tuple[tuple[str, FieldType], ...] = cls._schema
    unknown = set(overrides) - {name for name, _ in schema}
    if unknown:
        raise TypeError(f"{cls.__name__} has no fields {sorted(unknown)}")
    return st.fixed_dictionaries(
        {name: overrides.get(name, field_values(ftype)) for name, ftype in schema}
    )


def structures(cls: type[T]) -> st.SearchStrategy[T]:
    """A nested structure (Tier, Allocation, ...) without cross-field rules."""
    return fields_of(cls).map(lambda kwargs: cls(**kwargs))


def _created_before(draw: st.DrawFn) -> tuple[int, int]:
    """(created, later): two times with ``created < later``."""
    created = draw(st.integers(0, MAX_TIME - 1))
    later = draw(st.integers(created + 1, MAX_TIME) | st.just(created + 1))
    return created, later


@st.composite
def charters(draw: st.DrawFn) -> Charter:
    kwargs = draw(fields_of(Charter))
    kwargs["created"], kwargs["deadline"] = _created_before(draw)
    if kwargs["members_invite"]:
        kwargs["invite_only"] = True
    return Charter(**kwargs)


@st.composite
def pledges(draw: st.DrawFn) -> Pledge:
    kwargs = draw(fields_of(Pledge))
    if kwargs["quantity"] == 0:
        kwargs["max_price"] = kwargs["tolerance"] = 0
    elif kwargs["max_price"] == 0:
        kwargs["max_price"] = draw(st.integers(1, MAX_MONEY))
    return Pledge(**kwargs)


@st.composite
def tier_schedules(draw: st.DrawFn, *, max_tiers: int = 32) -> tuple[Tier, ...]:
    """1..max_tiers tiers: strictly increasing quantity, strictly decreasing price."""
    n = draw(st.integers(1, max_tiers))
    quantities = sorted(
        draw(st.lists(st.integers(1, MAX_QUANTITY), min_size=n, max_size=n, unique=True))
    )
    prices = sorted(
        draw(st.lists(st.integers(1, MAX_MONEY), min_size=n, max_size=n, unique=True)),
        reverse=True,
    )
    return tuple(
        Tier(min_quantity=q, unit_price=p) for q, p in zip(quantities, prices, strict=True)
    )


@st.composite
def offers(draw: st.DrawFn) -> Offer:
    tiers = draw(tier_schedules())
    kwargs = draw(fields_of(Offer, tiers=st.just(tiers)))
    kwargs["capacity"] = draw(st.integers(tiers[0].min_quantity, MAX_QUANTITY))
    kwargs["created"], kwargs["valid_until"] = _created_before(draw)
    return Offer(**kwargs)


@st.composite
def counter_offers(draw: st.DrawFn) -> CounterOffer:
    kwargs = draw(fields_of(CounterOffer))
    kwargs["created"], kwargs["valid_until"] = _created_before(draw)
    return CounterOffer(**kwargs)


@st.composite
def certificates(draw: st.DrawFn, *, max_allocations: int = 40) -> Certificate:
    """A certificate; ``max_allocations`` bounds the draw (the protocol allows 1,500)."""
    ids = sorted(
        draw(
            st.lists(
                st.binary(min_size=32, max_size=32),
                min_size=1,
                max_size=max_allocations,
                unique=True,
            )
        )
    )
    # The total is one quantity field too, so the allocations share its limit.
    share = MAX_QUANTITY // len(ids)
    allocations = tuple(
        Allocation(pledge=pledge, quantity=draw(st.integers(1, share))) for pledge in ids
    )
    kwargs = draw(fields_of(Certificate, allocations=st.just(allocations), total=st.just(1)))
    kwargs["total"] = sum(a.quantity for a in allocations)
    return Certificate(**kwargs)


@st.composite
def misbehaviours(draw: st.DrawFn) -> Misbehaviour:
    # Usually short blobs (the field allows 30,000 bytes each; drawing that much
    # every time would make every test slow), sometimes the field's full size.
    # Hypothesis draws at most a few KiB of raw data per example, so a long blob
    # repeats a short drawn pattern.
    long_blobs = st.tuples(st.binary(min_size=1, max_size=32), st.integers(29_000, 30_000)).map(
        lambda drawn: (drawn[0] * (drawn[1] // len(drawn[0]) + 1))[: drawn[1]]
    )
    blob = st.binary(min_size=1, max_size=300) | long_blobs
    kwargs = draw(fields_of(Misbehaviour, first=blob, second=blob))
    return Misbehaviour(**kwargs)


@st.composite
def quote_requests(draw: st.DrawFn) -> Message:
    cls = KINDS["rfq"]
    kwargs = draw(fields_of(cls))
    kwargs["created"], kwargs["respond_by"] = _created_before(draw)
    kwargs["deadline"] = draw(
        st.integers(kwargs["respond_by"], MAX_TIME) | st.just(kwargs["respond_by"])
    )
    return cls(**kwargs)


def _plain(cls: type[T]) -> st.SearchStrategy[T]:
    """Kinds with no rule across fields: the schema is the whole story."""
    return fields_of(cls).map(lambda kwargs: cls(**kwargs))


# Kinds whose only rules are their fields' own: the schema-derived strategy is complete.
_PLAIN_KINDS = (
    "accept",
    "deal",
    "extension",
    "invite",
    "receipt",
    "referral",
    "reject",
    "walkaway",
)
_RULED_KINDS: dict[str, st.SearchStrategy[Message]] = {
    "certificate": certificates(),
    "charter": charters(),
    "counter": counter_offers(),
    "misbehaviour": misbehaviours(),
    "offer": offers(),
    "pledge": pledges(),
    "rfq": quote_requests(),
}

#: One strategy per kind string in protocol.KINDS (checked at import).
KIND_STRATEGIES: dict[str, st.SearchStrategy[Message]] = {
    **{kind: _plain(KINDS[kind]) for kind in _PLAIN_KINDS if kind in KINDS},
    **{kind: strategy for kind, strategy in _RULED_KINDS.items() if kind in KINDS},
}

_missing = sorted(set(KINDS) - set(KIND_STRATEGIES))
if _missing:
    raise RuntimeError(
        f"tests/protocol/strategies.py has no strategy for the kinds {_missing} of "
        "protocol.KINDS: add one (to _PLAIN_KINDS when the kind has no rule across fields)"
    )


def message_of(kind: str) -> st.SearchStrategy[Message]:
    """A valid message of one kind."""
    try:
        return KIND_STRATEGIES[kind]
    except KeyError:
        raise ValueError(
            f"no strategy for kind {kind!r}; known: {sorted(KIND_STRATEGIES)}"
        ) from None


def messages(*kinds: str) -> st.SearchStrategy[Message]:
    """A valid message of any of ``kinds`` (default: every kind)."""
    return st.one_of([message_of(kind) for kind in (kinds or sorted(KIND_STRATEGIES))])


def identities() -> st.SearchStrategy[Identity]:
    """An identity from an arbitrary 32-byte seed."""
    return st.binary(min_size=32, max_size=32).map(Identity.from_seed)


def envelopes(
    message: st.SearchStrategy[Message] | None = None,
    identity: st.SearchStrategy[Identity] | None = None,
) -> st.SearchStrategy[Envelope[Message]]:
    """A sealed envelope of ``message`` (default: any kind) by ``identity``."""
    seal: Callable[[Message, Identity], Envelope[Message]] = protocol.seal
    return st.builds(
        seal,
        messages() if message is None else message,
        identities() if identity is None else identity,
    )


def fixed_sample(strategy: st.SearchStrategy[T], count: int) -> list[T]:
    """``count`` draws from ``strategy``, the same on every run (derandomized).

    For tests that loop over many values quickly; call it from a plain test,
    not from inside another ``@given`` test.
    """
    drawn: list[T] = []

    @settings(max_examples=count, derandomize=True, database=None)
    @given(value=strategy)
    def collect(value: T) -> None:
        drawn.append(value)

    collect()
    return drawn


def fixed_envelopes(per_kind: int) -> list[Envelope[Message]]:
    """``per_kind`` envelopes of every kind, the same on every run."""
    return [
        envelope
        for kind in sorted(KIND_STRATEGIES)
        for envelope in fixed_sample(envelopes(message_of(kind)), per_kind)
    ]
