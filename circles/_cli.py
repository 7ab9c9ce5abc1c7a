"""The ``circles`` command line."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``circles`` command."""
    return 0
