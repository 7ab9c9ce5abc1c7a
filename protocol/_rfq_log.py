"""The open requests for quote a circle's log keeps: capped per key and per circle.

Theory of operation: a request for quote addressed to no vendor (a reverse
auction's call) is no circle state, yet every member keeps it in the
circle's log so that all rank the same bids. Without a cap any key could fill
every member's store with them, so :class:`RfqLog` keeps, like the caps of
:class:`~protocol.CircleState`, the best few by a fixed order, never "first
come" (numbers in docs/protocol.md, "Caps"):

- per key, its ``RFQS_PER_KEY`` newest by (created, id): a newer request
  supersedes the key's older one;
- per circle, the requests of ``RFQ_SIGNERS_PER_CIRCLE`` keys: first the keys
  that *stand* in the circle (its founder, and every key with a live pledge
  in it), then the others, each group by the circle's key lottery
  (:func:`~protocol._caps.lottery_rank`, smallest first). Throwaway keys
  therefore never crowd out the founder or a pledging member.

Standing is read from the circle's state each time a request arrives, and
only decides who gives way then: the log holds at most
``RFQ_SIGNERS_PER_CIRCLE`` keys, so a key gaining or losing standing drops
nothing by itself. What a cap drops is reported by :meth:`RfqLog.take_dropped`
and the node discards it, but does not remember it as refused: while a peer
still holds it sync brings it back, and it is judged again with the standing
of that time. With the standing fixed, the kept set is the best few of the
union of what was delivered, in any order; so once the peers' states agree,
every exchange of requests between them ends on the same kept set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _caps as caps
from ._caps import lottery_rank
from ._circle_view import CircleView
from ._envelope import Envelope
from ._events import Refused
from ._messages import Charter, QuoteRequest

__all__ = ["RfqLog"]

#: Says whether a key stands in the circle (founder, or a live pledge in it).
Standing = Callable[[bytes], bool]


def _newest(env: Envelope[QuoteRequest]) -> tuple[int, bytes]:
    return env.message.created, env.id


class RfqLog:
    """The open requests for quote one circle keeps; feed it each one as it arrives."""

    __slots__ = ("_by_key", "_circle", "_currency", "_dropped")

    def __init__(self, charter: Envelope[Charter]) -> None:
        self._circle = charter.id
        self._currency = charter.message.currency
        # Each kept key's requests, oldest first: at most RFQS_PER_KEY, at most
        # RFQ_SIGNERS_PER_CIRCLE keys.
        self._by_key: dict[bytes, list[Envelope[QuoteRequest]]] = {}
        self._dropped: list[bytes] = []

    @staticmethod
    def standing(circle: CircleView) -> Standing:
        """Who stands in ``circle`` now: its founder and every key with a live pledge in it."""
        founder = circle.charter.signer
        live = circle._live_of  # read in place: a copy would cost a pass over every member
        return lambda key: key == founder or live(key) is not None

    def add(self, envelope: Envelope[Any], stands: Standing) -> Refused | None:
        """Take one verified request for quote; None if it is kept, else why not.

        ``stands`` tells which keys stand in the circle now (see
        :meth:`standing`). Requests it displaces, and a new one a cap drops at
        once, are reported by :meth:`take_dropped`. A request already held is
        kept and changes nothing. Anything but an open request for quote of
        this circle in its currency is refused and not held.
        """
        refusal = self._misfit(envelope)
        if refusal is not None:
            return refusal
        key = envelope.signer
        held = self._by_key.get(key, [])
        if any(env.id == envelope.id for env in held):
            return None
        held = sorted([*held, envelope], key=_newest)
        self._by_key[key] = held
        gone = held[: -caps.RFQS_PER_KEY]
        del held[: -caps.RFQS_PER_KEY]
        if len(self._by_key) > caps.RFQ_SIGNERS_PER_CIRCLE:
            order = sorted(
                self._by_key, key=lambda k: (not stands(k), lottery_rank(self._circle, k))
            )
            for loser in order[caps.RFQ_SIGNERS_PER_CIRCLE :]:
                gone += self._by_key.pop(loser)
        self._dropped += [env.id for env in gone]
        if all(env.id != envelope.id for env in gone):
            return None
        if key in self._by_key:
            reason, detail = "superseded", "this key holds a newer request for quote"
        else:
            reason, detail = "circle-full", "the circle keeps the requests of other keys first"
        return Refused(
            message=envelope.id, kind=envelope.kind, signer=key, reason=reason, detail=detail
        )

    def _misfit(self, envelope: Envelope[Any]) -> Refused | None:
        message = envelope.message
        if not isinstance(message, QuoteRequest) or message.vendor is not None:
            detail = "only a request for quote addressed to no vendor is kept in the log"
            reason = "not-open-rfq"
        elif message.circle != self._circle:
            reason, detail = "unknown-circle", "it names another circle"
        elif message.currency != self._currency:
            reason = "wrong-currency"
            detail = f"this circle trades in {self._currency}; re-sign in that currency"
        else:
            return None
        return Refused(
            message=envelope.id,
            kind=envelope.kind,
            signer=envelope.signer,
            reason=reason,
            detail=detail,
        )

    def take_dropped(self) -> list[bytes]:
        """Ids of requests a cap dropped since the last call: forget them (not as refused)."""
        dropped, self._dropped = self._dropped, []
        return dropped

    def requests(self) -> list[Envelope[QuoteRequest]]:
        """The kept requests, oldest first by (created, id)."""
        return sorted((env for held in self._by_key.values() for env in held), key=_newest)

    def __contains__(self, message_id: object) -> bool:
        return any(env.id == message_id for held in self._by_key.values() for env in held)

    def __len__(self) -> int:
        return sum(len(held) for held in self._by_key.values())
