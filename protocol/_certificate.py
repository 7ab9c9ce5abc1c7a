"""Quorum certificates and proofs of misbehaviour, checked standalone.

Theory of operation: a certificate names pledges by id; whoever holds the
charter, the offer and those pledge envelopes can check it without the rest
of the circle. The vendor runs :func:`verify_certificate` before it signs a
deal. The pledges it is handed are :class:`Envelope` objects, which only
``decode`` and ``seal`` make, so their signatures were checked once already
(a node checks every envelope as it arrives); verification here is about the
circle's rules, in one pass over the pledges, plus a sort.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ._envelope import Envelope, decode
from ._errors import InvalidMessage, ProtocolError
from ._messages import (
    Allocation,
    Certificate,
    Charter,
    Extension,
    Invite,
    Message,
    Misbehaviour,
    Offer,
    Pledge,
    Tier,
)

__all__ = [
    "InvalidCertificate",
    "InvalidProof",
    "build_certificate",
    "effective_deadline",
    "evidence_problem",
    "verify_certificate",
    "verify_misbehaviour",
]


class InvalidCertificate(ProtocolError, ValueError):
    """A certificate (or the deal over it) breaks a circle rule: do not sign or count it."""

    reason = "invalid-certificate"


class InvalidProof(ProtocolError, ValueError):
    """A proof of misbehaviour that proves nothing: drop it."""

    reason = "invalid-proof"


def _fail(reason: str, message: str) -> InvalidCertificate:
    return InvalidCertificate(message, reason=reason)


def _expect(envelope: Any, cls: type[Message], role: str) -> None:
    if not isinstance(envelope, Envelope) or type(envelope.message) is not cls:
        raise _fail(
            "wrong-kind",
            f"{role} must be a verified {cls.kind} Envelope (from protocol.decode or seal)",
        )


def extension_is_valid(charter: Envelope[Charter], extension: Envelope[Extension]) -> bool:
    """True when ``extension`` is one the charter allows (founder, once, before the deadline)."""
    c, e = charter.message, extension.message
    return (
        e.circle == charter.id
        and extension.signer == charter.signer
        and c.on_miss == "extend"
        and e.created <= c.deadline
        and e.deadline > c.deadline
    )


def evidence_problem(charter: Envelope[Charter], envelope: Envelope[Any]) -> str | None:
    """Why ``envelope`` cannot count as evidence of equivocation in this circle, or None.

    The one rule for who equivocates, shared by :func:`verify_misbehaviour`
    (given a charter), :func:`verify_certificate` and :class:`CircleState`: a
    key equivocates when it signed two different pledges for the circle with
    one sequence number, each one the circle does not refuse outright (in the
    charter's currency, not above its ceiling; a pledge made after the
    deadline still counts), or two different valid extensions (founder only).
    A pledge the circle refuses outright proves nothing, because no peer
    counts it: a key cannot be framed, nor frame itself, with one.
    """
    message = envelope.message
    if getattr(message, "circle", None) != charter.id:
        return "wrong-circle"
    rules = charter.message
    if isinstance(message, Pledge):
        if message.currency != rules.currency:
            return "wrong-currency"
        if rules.ceiling is not None and message.max_price > rules.ceiling:
            return "above-ceiling"
        return None
    if isinstance(message, Extension):
        return None if extension_is_valid(charter, envelope) else "bad-extension"
    return "not-circle-state"


def effective_deadline(
    charter: Envelope[Charter], extensions: Iterable[Envelope[Extension]] = ()
) -> int:
    """The pledge deadline: the charter's, or the one valid extension's.

    Two different valid extensions are the founder equivocating: neither counts.
    """
    valid = {e.id: e for e in extensions if extension_is_valid(charter, e)}
    if len(valid) == 1:
        return next(iter(valid.values())).message.deadline
    return charter.message.deadline


def build_certificate(
    *,
    charter: Envelope[Charter],
    offer: Envelope[Offer],
    unit_price: int,
    allocations: Sequence[tuple[Envelope[Pledge], int]],
) -> Certificate:
    """The certificate body for a clearing; identical for every member with the same messages.

    ``created`` is the latest ``created`` of the charter, the offer and the
    named pledges, so it derives from the messages, not from a clock.
    """
    ordered = sorted(allocations, key=lambda pair: pair[0].id)
    created = max(
        [charter.message.created, offer.message.created]
        + [env.message.created for env, _ in ordered]
    )
    return Certificate(
        circle=charter.id,
        offer=offer.id,
        unit_price=unit_price,
        currency=charter.message.currency,
        total=sum(q for _, q in ordered),
        allocations=tuple(Allocation(pledge=env.id, quantity=q) for env, q in ordered),
        created=created,
    )


def verify_certificate(
    certificate: Envelope[Certificate],
    *,
    charter: Envelope[Charter],
    offer: Envelope[Offer],
    pledges: Iterable[Envelope[Pledge]],
    invites: Iterable[Envelope[Invite]] = (),
    extension: Envelope[Extension] | None = None,
) -> None:
    """Check a certificate standalone; raise :class:`InvalidCertificate` on any violation.

    ``pledges`` must hold every pledge the certificate names (others are
    ignored, except that two pledges by one key with one sequence number make
    that key an equivocator, by the rule of :func:`evidence_problem`). Only a
    member the certificate names may seal it: a vendor or a stranger cannot
    pick the pledges, and with them the tier. For an invite-only circle pass the invites that
    admit the named members; pass the founder's extension if the deadline was
    moved. Reasons: wrong-kind, wrong-circle, wrong-offer, wrong-currency,
    not-a-tier, missing-pledge, withdrawal, member-twice, equivocator, late,
    unadmitted, above-ceiling, price-above-max, over-capacity, below-target,
    not-canonical, not-cheapest-tier, bad-extension, not-a-member.
    """
    _expect(certificate, Certificate, "certificate")
    _expect(charter, Charter, "charter")
    _expect(offer, Offer, "offer")
    cert, rules, terms = certificate.message, charter.message, offer.message
    circle = charter.id
    if cert.circle != circle or terms.circle != circle:
        raise _fail("wrong-circle", "the certificate or offer names another circle")
    if cert.offer != offer.id:
        raise _fail("wrong-offer", "the certificate names another offer than the one given")
    currency = rules.currency
    if cert.currency != currency or terms.currency != currency:
        raise _fail("wrong-currency", f"every price in this circle is in {currency}")
    tier = next((t for t in terms.tiers if t.unit_price == cert.unit_price), None)
    if tier is None:
        raise _fail("not-a-tier", f"{cert.unit_price} is not one of the offer's tier prices")
    if cert.total > terms.capacity:
        raise _fail("over-capacity", f"total {cert.total} exceeds capacity {terms.capacity}")
    deadline = rules.deadline
    if extension is not None:
        _expect(extension, Extension, "extension")
        if not extension_is_valid(charter, extension):
            raise _fail("bad-extension", "the extension is not one this charter allows")
        deadline = extension.message.deadline

    by_id: dict[bytes, Envelope[Pledge]] = {}
    first_seq: dict[tuple[bytes, int], bytes] = {}
    equivocators: set[bytes] = set()
    for env in pledges:
        if type(env) is not Envelope or type(env.message) is not Pledge:
            raise _fail("wrong-kind", "each pledge must be a verified pledge Envelope")
        env_id = env.id
        by_id[env_id] = env
        p = env.message
        if (
            evidence_problem(charter, env) is None
            and first_seq.setdefault((env.signer, p.seq), env_id) != env_id
        ):
            equivocators.add(env.signer)

    admitted: set[bytes] | None = None
    if rules.invite_only:
        admitted = _admitted(charter, invites)

    price = cert.unit_price
    ceiling = rules.ceiling if rules.ceiling is not None else price
    members: set[bytes] = set()
    # (-max_price, created, id, quantity, tolerance, allocated): the fill order, for tolerance.
    rows: list[tuple[int, int, bytes, int, int, int]] = []
    base = tolerance = 0
    for allocation in cert.allocations:
        env = by_id.get(allocation.pledge)  # type: ignore[assignment]
        if env is None:
            raise _fail("missing-pledge", f"pledge {allocation.pledge.hex()} was not given")
        p = env.message
        signer = env.signer
        q = p.quantity
        if p.circle != circle:
            raise _fail("wrong-circle", f"pledge {env.id.hex()} is for another circle")
        if p.currency != currency:
            raise _fail("wrong-currency", f"pledge {env.id.hex()} is not in {currency}")
        if q == 0:
            raise _fail("withdrawal", f"pledge {env.id.hex()} is a withdrawal")
        if signer in members:
            raise _fail("member-twice", f"member {signer.hex()} is named twice")
        members.add(signer)
        if signer in equivocators:
            raise _fail("equivocator", f"member {signer.hex()} signed conflicting pledges")
        if p.created > deadline:
            raise _fail("late", f"pledge {env.id.hex()} was made after the deadline")
        if admitted is not None and signer not in admitted:
            raise _fail("unadmitted", f"member {signer.hex()} was not invited")
        if p.max_price > ceiling and rules.ceiling is not None:
            raise _fail("above-ceiling", f"pledge {env.id.hex()} names a price above the ceiling")
        if p.max_price < price:
            raise _fail("price-above-max", f"pledge {env.id.hex()} accepts at most {p.max_price}")
        a = allocation.quantity
        t = p.tolerance
        if not q <= a <= q + t:
            raise _fail("not-canonical", f"pledge {env.id.hex()} is allocated outside q+tolerance")
        base += q
        tolerance += t
        rows.append((-p.max_price, p.created, env.id, q, t, a))

    if certificate.signer not in members:
        raise _fail(
            "not-a-member",
            "only a member the certificate names may seal it; assemble it from the "
            "circle's whole log with CircleState.certificate() and seal it as that member",
        )
    _check_fill(
        total=cert.total,
        base=base,
        tolerance=tolerance,
        rows=rows,
        tier=tier,
        terms=terms,
        rules=rules,
    )


def _check_fill(
    *,
    total: int,
    base: int,
    tolerance: int,
    rows: list[tuple[int, int, bytes, int, int, int]],
    tier: Tier,
    terms: Offer,
    rules: Charter,
) -> None:
    """The allocations are the clearing rule's, and no cheaper tier clears.

    Every named pledge is eligible at the certificate's price and their
    quantities fit the capacity, so the clearing rule admits all of them: the
    only freedom left is tolerance, drawn in fill order up to the need.
    """
    target, capacity = rules.target, terms.capacity
    smaller = rules.on_miss == "smaller-tier"
    full_need = max(tier.min_quantity, target)
    reach = base + min(tolerance, capacity - base)
    relaxed = total < full_need
    if relaxed and not smaller:
        raise _fail("below-target", f"total {total} is below the target {target}")
    if relaxed and full_need <= capacity and reach >= full_need:
        raise _fail("not-canonical", "these pledges meet the target: the certificate must too")
    need = tier.min_quantity if relaxed else full_need
    if total < need:
        raise _fail("below-target", f"total {total} is below the tier's minimum {need}")
    if base >= need:
        if total != base:
            raise _fail("not-canonical", "tolerance is drawn only when it lets the tier fill")
    else:
        if total != need:
            raise _fail("not-canonical", "tolerance is drawn exactly up to the tier's need")
        missing = need - base
        for _, _, pledge_id, q, t, a in sorted(rows):
            extra = min(t, missing)
            missing -= extra
            if a != q + extra:
                raise _fail(
                    "not-canonical",
                    f"pledge {pledge_id.hex()}: tolerance is drawn in fill order "
                    "(highest max price, then earliest, then smallest id)",
                )
    for cheaper in terms.tiers:
        if cheaper.unit_price >= tier.unit_price:
            continue
        need_there = cheaper.min_quantity if relaxed else max(cheaper.min_quantity, target)
        if need_there <= capacity and reach >= need_there:
            raise _fail(
                "not-cheapest-tier",
                f"these pledges also clear the cheaper tier at {cheaper.unit_price}",
            )


def _admitted(charter: Envelope[Charter], invites: Iterable[Envelope[Invite]]) -> set[bytes]:
    """Keys admitted to an invite-only circle by these invites (closure from the founder)."""
    by_signer: dict[bytes, list[bytes]] = {}
    for env in invites:
        _expect(env, Invite, "each invite")
        if env.message.circle == charter.id:
            by_signer.setdefault(env.signer, []).append(env.message.invitee)
    founder = charter.signer
    admitted = {founder}
    frontier = [founder]
    while frontier:
        signer = frontier.pop()
        if signer != founder and not charter.message.members_invite:
            continue
        for invitee in by_signer.get(signer, ()):
            if invitee not in admitted:
                admitted.add(invitee)
                frontier.append(invitee)
    return admitted


def conflicting(first: Envelope[Any], second: Envelope[Any]) -> bool:
    """True when two envelopes by one key conflict (same circle and sequence number)."""
    if first.id == second.id or first.signer != second.signer:
        return False
    a, b = first.message, second.message
    if isinstance(a, Pledge) and isinstance(b, Pledge):
        return a.circle == b.circle and a.seq == b.seq
    if isinstance(a, Extension) and isinstance(b, Extension):
        return a.circle == b.circle
    return False


def verify_misbehaviour(
    proof: Misbehaviour, *, charter: Envelope[Charter] | None = None
) -> tuple[Envelope[Message], Envelope[Message]]:
    """Check a proof; return its two envelopes, or raise :class:`InvalidProof`.

    The two envelopes must verify, be signed by ``offender``, be different,
    come smaller id first, and conflict: two pledges for one circle with one
    sequence number, or two extensions of one circle. Given the circle's
    ``charter``, each must also count as evidence there (see
    :func:`evidence_problem`; reason ``not-evidence``): pass it whenever the
    circle is known, as the circle's state does.
    """
    if not isinstance(proof, Misbehaviour):
        raise InvalidProof("verify_misbehaviour takes a Misbehaviour body", reason="wrong-kind")
    try:
        first, second = decode(proof.first), decode(proof.second)
    except InvalidMessage as exc:
        raise InvalidProof(
            f"an envelope in the proof is not valid ({exc.reason})", reason="bad-envelope"
        ) from None
    if first.signer != proof.offender or second.signer != proof.offender:
        raise InvalidProof("the envelopes are not both signed by the offender", reason="signer")
    if first.id >= second.id:
        raise InvalidProof(
            "the proof must carry two different envelopes, smaller id first", reason="order"
        )
    if not conflicting(first, second):
        raise InvalidProof("the two envelopes do not conflict", reason="no-conflict")
    if charter is not None:
        for env in (first, second):
            problem = evidence_problem(charter, env)
            if problem is not None:
                raise InvalidProof(
                    f"the circle refuses {env.id.hex()[:16]} outright ({problem}): "
                    "it proves nothing",
                    reason="wrong-circle" if problem == "wrong-circle" else "not-evidence",
                )
    return first, second


def make_proof(first: Envelope[Any], second: Envelope[Any]) -> Misbehaviour:
    """The proof for two conflicting envelopes (in either order)."""
    if second.id < first.id:
        first, second = second, first
    return Misbehaviour(
        offender=first.signer,
        first=first.data,
        second=second.data,
        created=max(_created(first.message), _created(second.message)),
    )


def _created(message: Message) -> int:
    created: int = getattr(message, "created", 0)
    return created
