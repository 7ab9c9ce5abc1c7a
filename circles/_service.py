"""What a running node does for the command line: one method per control request.

Every answer is plain JSON (ids and keys as lowercase hex, money as integer
minor units with the currency beside it), so ``--json`` output is the same
object the node sent, and the command line formats it for people. Ids may be
given as a unique hex prefix of at least 6 characters, as people copy them.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import types
import typing
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import trio

import protocol

from ._errors import CirclesError
from ._money import parse_money
from ._node import Node
from ._receipts import (
    RECEIPT_PROTOCOL,
    RECEIPTS_TOPIC,
    ReceiptBook,
    ReceiptRefused,
    deal_members,
    verified_deals,
)
from ._topics import circle_topic
from ._transport import PeerId, RequestFailed, Verdict, peer_id_of
from ._views import circle_details, circle_summary

__all__ = ["Service", "ServiceError"]

log = logging.getLogger("circles.service")


class ServiceError(CirclesError):
    """A command the running node cannot do as asked (see ``reason``)."""

    reason = "bad-command"


def _ratio(value: Fraction | None) -> str | None:
    return None if value is None else f"{float(value):.2f}"


class Service:
    """Answers control requests with a running :class:`Node`."""

    def __init__(
        self, node: Node, data_dir: Path, *, nursery: trio.Nursery, stop: Callable[[], None]
    ) -> None:
        self.node = node
        self.receipts = ReceiptBook(data_dir)
        self._nursery = nursery
        self._stop = stop
        self.vendor = False

    async def start(self) -> None:
        """Listen for receipts, by gossip and directly."""
        transport = self.node.transport
        transport.set_validator(RECEIPTS_TOPIC, self._validate_receipt)
        transport.set_handler(RECEIPT_PROTOCOL, self._receive_receipt, max_request=4096)
        subscription = await transport.subscribe(RECEIPTS_TOPIC)
        self._nursery.start_soon(self._take_receipts, subscription)

    async def handle(self, op: str, args: dict[str, Any]) -> Any:
        """Run one control request; raise a CirclesError or ProtocolError to refuse it."""
        method = getattr(self, "op_" + op.replace(".", "_").replace("-", "_"), None)
        if method is None:
            raise ServiceError(f"the node does not know the command {op!r}", reason="unknown-op")
        _check_arguments(op, method, args)
        return await method(**args)

    # ------------------------------------------------------------- lookups
    def _circle(self, text: str) -> bytes:
        return _resolve(text, self.node.circles(), "circle")

    def _deal(self, text: str) -> tuple[bytes, Any]:
        deals = {}
        for circle in self.node.circles():
            deal = self.node.circle(circle).deal
            if deal is not None:
                deals[deal.id] = circle
        found = _resolve(text, sorted(deals), "deal")
        return found, self.node.circle(deals[found])

    # ---------------------------------------------------------------- ops
    async def op_status(self) -> dict[str, Any]:
        node = self.node
        return {
            "public_key": node.public_key.hex(),
            "addresses": node.addresses(),
            "peers": len(node.transport.peers()),
            "circles": len(node.circles()),
            "joined": len(node.joined()),
            "vendor": self.vendor,
            # Envelopes the node could not apply (a bug to report; see Node.set_aside).
            "set_aside": [
                {"id": e.id.hex(), "circle": e.circle.hex(), "reason": e.reason}
                for e in node.set_aside()
            ],
            # "emptied": the store file was empty at start, its history gone (see Node).
            "store": node.store_condition,
        }

    async def op_stop(self) -> dict[str, Any]:
        # Later, so this answer leaves before the node's tasks are cancelled.
        self._nursery.start_soon(self._stop_soon)
        return {"stopping": True}

    async def _stop_soon(self) -> None:
        await trio.sleep(0.1)
        self._stop()

    async def op_connect(self, addr: str) -> dict[str, Any]:
        return {"peer": str(await self.node.connect(addr))}

    async def op_circle_new(
        self,
        *,
        title: str,
        unit: str,
        target: int,
        currency: str,
        deadline: int,
        ceiling: str | None = None,
        place: str | None = None,
        tags: list[str] | None = None,
        invite_only: bool = False,
    ) -> dict[str, Any]:
        if deadline <= self.node.now():
            raise ServiceError("the deadline must be in the future", reason="late")
        circle = await self.node.found_circle(
            title=title,
            unit=unit,
            target=target,
            currency=currency,
            deadline=deadline,
            ceiling=parse_money(ceiling, currency) if ceiling else None,
            place=place or None,
            tags=tags or (),
            invite_only=invite_only,
        )
        return circle_summary(self.node, circle)

    async def op_circle_list(self) -> list[dict[str, Any]]:
        return [circle_summary(self.node, c) for c in self.node.circles()]

    async def op_circle_show(self, circle: str) -> dict[str, Any]:
        found = self._circle(circle)
        return circle_details(self.node, self.receipts, found)

    async def op_circle_wait(
        self, circle: str, until: str = "known", seconds: float = 60.0
    ) -> dict[str, Any]:
        """Wait until a circle is known, or has a status ("quorum", "closed", ...)."""
        if seconds < 0:
            raise ServiceError("seconds must be 0 or more", reason="bad-arguments")
        statuses = {s.value for s in protocol.CircleStatus}
        if until != "known" and until not in statuses:
            raise ServiceError(
                f"cannot wait for {until!r}; use known or {', '.join(sorted(statuses))}",
                reason="bad-arguments",
            )

        def ready() -> bool:
            try:
                found = self._circle(circle)
            except ServiceError as exc:
                if exc.reason == "unknown-circle":
                    return False
                raise
            return until == "known" or self.node.circle(found).status.value == until

        with trio.move_on_after(seconds):
            await self.node.wait_until(ready)
        if not ready():
            raise ServiceError(f"the circle was not {until} within {seconds:g} s", reason="timeout")
        return circle_summary(self.node, self._circle(circle))

    async def op_pledge(
        self, circle: str, quantity: int, max_price: str, tolerance: int = 0
    ) -> dict[str, Any]:
        found = self._circle(circle)
        currency = self.node.charter(found).currency
        if found not in self.node.joined():
            await self.node.join(found)
        envelope = await self.node.pledge(
            found, quantity, max_price=parse_money(max_price, currency), tolerance=tolerance
        )
        return {
            "pledge": envelope.id.hex(),
            "seq": envelope.message.seq,
            **circle_summary(self.node, found),
        }

    async def op_withdraw(self, circle: str) -> dict[str, Any]:
        found = self._circle(circle)
        envelope = await self.node.withdraw(found)
        return {
            "pledge": envelope.id.hex(),
            "seq": envelope.message.seq,
            **circle_summary(self.node, found),
        }

    async def op_invite(self, circle: str, key: str) -> dict[str, Any]:
        found = self._circle(circle)
        invitee = _key(key)
        if not self.node.circle(found).charter.message.invite_only:
            # Every member's node refuses an invite to an open circle (it could never
            # count): say so now rather than wait for a publication nobody keeps.
            raise ServiceError(
                "this circle is open: anyone may pledge without an invite; invites are "
                "only for circles founded with --invite-only",
                reason="not-invite-only",
            )
        if found not in self.node.joined():
            await self.node.join(found)
        invite = protocol.Invite(
            circle=found, invitee=invitee, sealed_key=None, created=self.node.now()
        )
        envelope = protocol.seal(invite, self.node.identity)
        # Our own subscription hears our publication, so the node stores and applies it too.
        await self.node.transport.publish(circle_topic(found), envelope.data)
        with trio.fail_after(10):
            await self.node.wait_until(lambda: self.node.log_entry(envelope.id) is not None)
        return {"invite": envelope.id.hex(), "circle": found.hex(), "invitee": invitee.hex()}

    async def op_receipt(
        self, deal: str, fulfilled: str, rating: int, comment: str = ""
    ) -> dict[str, Any]:
        deal_id, state = self._deal(deal)
        deal_envelope = state.deal
        certificate = next(
            c
            for c in self.node.certificates(deal_envelope.message.circle)
            if c.id == deal_envelope.message.certificate
        )
        bound = {state.pledge(a.pledge).signer for a in certificate.message.allocations}
        if self.node.public_key not in bound:
            raise ServiceError(
                "only a member whose pledge the deal counts can sign its receipt",
                reason="not-a-member",
            )
        receipt = protocol.Receipt(
            deal=deal_id,
            vendor=deal_envelope.signer,
            fulfilled=fulfilled,
            rating=rating,
            comment=comment,
            created=self.node.now(),
        )
        envelope = protocol.seal(receipt, self.node.identity)
        try:
            self._keep_receipt(envelope.data)
        except ReceiptRefused as exc:
            raise ServiceError(str(exc), reason=exc.reason) from None
        delivered = await self._deliver_receipt(envelope)
        return {
            "receipt": envelope.id.hex(),
            "deal": deal_id.hex(),
            "vendor": deal_envelope.signer.hex(),
            "fulfilled": fulfilled,
            "rating": rating,
            "delivered_to_vendor": delivered,
        }

    async def op_reputation(self, vendor: str) -> dict[str, Any]:
        deals = verified_deals(self.node)
        known = sorted({d.vendor for d in deals})
        key = _key(vendor) if len(vendor) == 64 else _resolve(vendor, known, "vendor")
        rep = protocol.vendor_reputation(key, deals, self.receipts.all())
        return {
            "vendor": key.hex(),
            "deals": rep.deals,
            "receipts": rep.receipts,
            "fulfilled": rep.fulfilled,
            "partly": rep.partly,
            "unfulfilled": rep.unfulfilled,
            "mean_rating": _ratio(rep.mean_rating),
            "share_fulfilled": _ratio(rep.share_fulfilled),
            "score_ppm": rep.score,
            "ignored": dict(rep.ignored),
        }

    # ------------------------------------------------------------ receipts
    async def _deliver_receipt(self, envelope: protocol.Envelope[protocol.Receipt]) -> bool:
        transport = self.node.transport
        await transport.publish(RECEIPTS_TOPIC, envelope.data)
        vendor_peer = peer_id_of(envelope.message.vendor)
        if vendor_peer not in transport.peers():
            return False
        try:
            await transport.request(vendor_peer, RECEIPT_PROTOCOL, envelope.data, timeout=10)
        except RequestFailed as exc:
            log.info("vendor did not take the receipt directly: %s", exc)
            return False
        return True

    def _keep_receipt(self, data: bytes) -> protocol.Envelope[protocol.Receipt]:
        return self.receipts.add(data, members_of=deal_members(self.node), now=self.node.now())

    def _validate_receipt(self, data: bytes, sender: PeerId) -> Verdict:
        # Only receipts that can count are forwarded (and then kept): a stranger's,
        # or one for a deal nobody here holds, would grow every node's file for nothing.
        try:
            self.receipts.check(data, members_of=deal_members(self.node), now=self.node.now())
        except ReceiptRefused as exc:
            if exc.reason == "not-a-member":
                return Verdict.REJECT  # never counts, on any node holding the deal
            return Verdict.IGNORE
        except protocol.ProtocolError:
            return Verdict.REJECT
        return Verdict.ACCEPT

    async def _receive_receipt(self, peer: PeerId, data: bytes) -> bytes:
        # A refusal raises: the stream is reset and the sender sees the request fail.
        self._keep_receipt(data)
        return b"ok"

    async def _take_receipts(self, subscription: Any) -> None:
        async for delivery in subscription:
            try:
                self._keep_receipt(delivery.data)
            except (protocol.ProtocolError, ReceiptRefused) as exc:
                log.debug("ignored a receipt: %s", exc.reason)
            except OSError as exc:
                # A full disk must not stop the node: the receipt is lost here, not elsewhere.
                log.warning("could not keep a receipt: %s", exc)


#: The range an integer argument may take (what the wire's integers hold).
_INT_RANGE = range(-(2**63), 2**63)


def _check_arguments(op: str, method: Callable[..., Any], args: dict[str, Any]) -> None:
    """Refuse arguments the command does not take, or of another type than it declares.

    Checked here, against the method's own annotations, because JSON gives any
    type for any name: ``"max_price": 1250`` must not be read as "1250.00",
    nor ``"quantity": true`` as 1.
    """
    try:
        inspect.signature(method).bind(**args)
    except TypeError as exc:
        raise ServiceError(f"bad arguments for {op!r}: {exc}", reason="bad-arguments") from None
    hints = typing.get_type_hints(method)
    for name, value in args.items():
        expected = hints[name]
        if not _fits(value, expected):
            raise ServiceError(
                f"bad arguments for {op!r}: {name} must be {_describe(expected)}, "
                f"not {_json_type(value)} {json.dumps(value)[:40]}",
                reason="bad-arguments",
            )


def _fits(value: Any, expected: Any) -> bool:
    if expected is type(None):
        return value is None
    if isinstance(expected, types.UnionType):
        return any(_fits(value, arm) for arm in typing.get_args(expected))
    if typing.get_origin(expected) is list:
        (item,) = typing.get_args(expected)
        return type(value) is list and all(_fits(v, item) for v in value)
    if expected is bool:
        return type(value) is bool
    if expected is int:
        return type(value) is int and value in _INT_RANGE
    if expected is float:
        return type(value) in (int, float) and math.isfinite(value) and abs(value) < 2**63
    if expected is str:
        return type(value) is str
    raise TypeError(f"a control command declares an argument of type {expected!r}")


def _describe(expected: Any) -> str:
    if expected is type(None):
        return "null"
    if isinstance(expected, types.UnionType):
        return " or ".join(_describe(arm) for arm in typing.get_args(expected))
    if typing.get_origin(expected) is list:
        return f"a list of {_describe(typing.get_args(expected)[0])}s"
    return {
        bool: "true or false",
        int: "a whole number",
        float: "a number",
        str: 'a string (prices too, e.g. "12.50")',
    }.get(expected, str(expected))


def _json_type(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _signed(envelope: protocol.Envelope[protocol.Pledge]) -> dict[str, Any]:
    return {"pledge": envelope.id.hex(), "seq": envelope.message.seq}


def _key(text: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ServiceError(
            f"{text!r} is not a member key; keys are 64 hex characters (see `circles id show`)",
            reason="bad-key",
        )
    return key


def _resolve(text: str, known: list[bytes], what: str) -> bytes:
    prefix = text.strip().lower()
    if len(prefix) < 6 or any(c not in "0123456789abcdef" for c in prefix):
        raise ServiceError(
            f"{text!r} is not a {what} id; give at least 6 of its hex characters",
            reason=f"bad-{what}-id",
        )
    matches = [k for k in known if k.hex().startswith(prefix)]
    if not matches:
        raise ServiceError(
            f"this node knows no {what} {prefix}…; `circles circle list` shows what it knows",
            reason=f"unknown-{what}",
        )
    if len(matches) > 1:
        raise ServiceError(
            f"{prefix} names {len(matches)} {what}s; give more of its characters",
            reason=f"ambiguous-{what}",
        )
    return matches[0]
