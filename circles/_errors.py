"""Errors raised by the circles package.

::

    CirclesError
    ├── KeyFileError (also protocol.KeyFileError): an unsafe or unreadable key file
    ├── StoreError: the store cannot be opened or written (circles._store_db)
    ├── TransportError: the network cannot do what was asked (circles._transport)
    │   └── RequestFailed: a direct request got no valid response
    ├── NodeError: a node call that cannot be done as asked (circles._node)
    │   ├── CertificateSuperseded: a certificate names a pledge replaced since
    │   ├── PledgeRefused: a pledge or withdrawal the circle would not count
    │   └── OwnHistoryUnknown: no peer can show what this key signed before
    ├── HaggleError: a negotiation frame or move refused (circles._haggle)
    ├── StrategyError: a strategy asked for a move beyond its limits (circles._strategies)
    ├── ControlError: the local control socket cannot be used (circles._control)
    │   └── BadRequest: a control request line refused unread (too long, too deep, not JSON)
    ├── DataDirError: a node cannot start on a data directory (circles._datadir)
    ├── ServiceError: a command the running node refused (circles._service)
    ├── CatalogError: a vendor catalog file that is wrong (circles._vendor)
    ├── StockError: a vendor will not offer or sign beyond its stock (circles._vendor)
    ├── MoneyError (also ValueError): a price that cannot be read exactly (circles._money)
    └── ScenarioError (also ValueError): a simulation scenario that is wrong (circles.sim)

Each carries a machine-readable ``reason``; each module defines its own
errors next to the code that raises them, all under this one root.

Protocol refusals keep their own root, :class:`protocol.ProtocolError`.
"""

from __future__ import annotations

import protocol


class CirclesError(Exception):
    """Root of every error the circles package raises itself."""

    reason: str = "circles-error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class KeyFileError(CirclesError, protocol.KeyFileError):
    """A key file that is unsafe (readable by others) or cannot be read."""

    reason = "bad-key-file"
