"""Storage behind one interface (see base.py); ``open_store`` picks the backend from the URL."""

from __future__ import annotations

from typing import Any

from .base import (
    CLOSED_STATES,
    LOCATION_COLUMNS,
    OPEN_STATES,
    CommandRow,
    EventRow,
    NewEvent,
    SessionRow,
    Store,
    StoreError,
    StoreStats,
    TerminalRow,
)


def make_store(url: str, **options: Any) -> Store:
    """A store for ``url`` (not yet opened). Options are the ``[store]`` keys."""
    if url.startswith("sqlite://"):
        from .sqlite import SqliteStore

        return SqliteStore(url, **options)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from .postgres import PostgresStore
        except ImportError as e:  # pragma: no cover - the backend ships with the package
            raise StoreError(f"PostgreSQL backend unavailable: {e}") from None
        return PostgresStore(url, **options)
    raise StoreError(f"unsupported store URL {url!r} (sqlite:// or postgresql://)")


__all__ = [
    "CLOSED_STATES",
    "LOCATION_COLUMNS",
    "OPEN_STATES",
    "CommandRow",
    "EventRow",
    "NewEvent",
    "SessionRow",
    "Store",
    "StoreError",
    "StoreStats",
    "TerminalRow",
    "make_store",
]
