"""The store interface both backends implement (SQLite embedded, PostgreSQL via asyncpg).

What the gateway keeps durable, and how:

* **Sessions and their events** go together through :meth:`Store.commit`, one
  transaction per call (backends may group several calls into one
  transaction: group commit). The event sequence number is assigned *inside*
  the committing transaction, one greater than the last committed, so the
  numbering is strictly increasing and gap-free across the whole gateway
  whatever fails: an event that was not committed never had a number. The
  caller learns the numbers from the returned rows, and only then
  acknowledges the vehicle (persist, then acknowledge) and feeds subscribers.
* **Locations** are many and individually cheap: :meth:`Store.add_locations`
  never blocks; rows wait in a bounded in-memory queue and are written in
  batches by size or time. When the queue is full the rows are shed and
  counted in ``stats.shed`` — never silently.
* **Terminals, queued downlink commands, agent state changes, idempotency
  keys**: small, awaited writes.

Times are UNIX epoch seconds (UTC) as floats everywhere in this interface.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# session states kept in the store
OPEN_STATES = ("waiting", "offered", "assigned", "wrapup")
CLOSED_STATES = ("completed", "abandoned", "cancelled", "merged")

# Location rows are tuples in this column order (the COPY layout for PostgreSQL):
LOCATION_COLUMNS = (
    "phone",
    "t",
    "recv",
    "lat",
    "lon",
    "alt",
    "speed",
    "direction",
    "alarm",
    "status",
    "extra",
)
# phone str, t device time, recv arrival time, lat/lon degrees, alt m (int), speed km/h, direction deg (int),
# alarm/status ints, extra: JSON text of the additional items or None


@dataclass(slots=True)
class SessionRow:
    id: str
    kind: str  # crash, sos, rollover, service, chat, ...
    channel: str  # voice, data, chat
    tenant: str
    queue: str
    klass: str
    priority: int
    state: str
    created_at: float
    arrival: float  # the ACD arrival time: kept across restarts and escalations
    updated_at: float
    phone: str | None = None
    incident: str | None = None
    agent: str | None = None
    disposition: str | None = None
    idempotency_key: str | None = None
    closed_at: float | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class NewEvent:
    session: str
    event: str
    at: float
    data: dict[str, Any]
    tenant: str = ""
    queue: str = ""
    kind: str = ""


@dataclass(slots=True, frozen=True)
class EventRow:
    seq: int
    session: str
    event: str
    at: float
    data: dict[str, Any]
    tenant: str = ""
    queue: str = ""
    kind: str = ""


@dataclass(slots=True)
class TerminalRow:
    phone: str
    tenant: str = ""
    auth_code: str | None = None
    registered_at: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    last_seen: float | None = None
    last_position: dict[str, Any] | None = None
    last_alarm: int = 0


@dataclass(slots=True)
class CommandRow:
    id: int | None
    phone: str
    command: str
    params: dict[str, Any]
    created_at: float
    expires_at: float
    status: str  # queued, sent, answered, failed, expired
    session: str | None = None
    agent: str | None = None
    result: dict[str, Any] | None = None
    updated_at: float = 0.0


@dataclass(slots=True)
class StoreStats:
    """Counters the metrics endpoint and the benchmarks read."""

    commits: int = 0  # commit() calls completed
    commit_batches: int = 0  # transactions those calls were grouped into
    commit_seconds: float = 0.0  # time spent in commit transactions
    location_rows: int = 0  # rows written
    location_batches: int = 0
    location_seconds: float = 0.0
    location_batch_sizes: list[int] = field(default_factory=list)  # recent, for a histogram
    shed: int = 0  # rows dropped because the location queue was full
    pending: int = 0  # rows waiting for the writer
    errors: int = 0  # failed writes (retried)
    inline_commits: int = 0  # urgent commits run at once on the loop, the writer being idle (SQLite)
    last_error: str = ""


def session_query(
    columns: str,
    mark: Callable[[int], str],
    *,
    state: str | None,
    queue: str | None,
    tenant: str | None,
    kind: str | None,
    since: float | None,
    until: float | None,
    limit: int,
) -> tuple[str, list[Any]]:
    """The SQL and arguments of :meth:`Store.list_sessions`, for any backend.

    ``mark(n)`` is the n-th placeholder of the backend's driver (``?`` for
    sqlite3, ``$n`` for asyncpg).
    """
    where: list[str] = []
    args: list[Any] = []

    def cond(sql: str, value: Any) -> None:
        args.append(value)
        where.append(sql.format(mark(len(args))))

    for col, value in (("state", state), ("queue", queue), ("tenant", tenant), ("kind", kind)):
        if value is not None:
            cond(col + " = {}", value)
    if since is not None:
        cond("created_at >= {}", since)
    if until is not None:
        cond("created_at <= {}", until)
    sql = f"SELECT {columns} FROM sessions"
    if where:
        sql += " WHERE " + " AND ".join(where)
    args.append(limit)
    sql += f" ORDER BY created_at DESC, id DESC LIMIT {mark(len(args))}"
    return sql, args


class StoreError(Exception):
    """The store cannot do what was asked (unreachable, bad URL, schema newer than this code)."""


class Store(abc.ABC):
    """One durable home for the gateway's facts. Call :meth:`open` first."""

    url: str
    stats: StoreStats

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, apply pending migrations (numbered; the same numbers on every backend)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush queued locations and close. Idempotent."""

    async def ping(self) -> bool:
        """True when the backend answers a trivial query (used by /api/ready)."""
        return True

    # -- sessions and events -------------------------------------------------

    @abc.abstractmethod
    async def commit(self, sessions: Sequence[SessionRow], events: Sequence[NewEvent]) -> list[EventRow]:
        """Upsert ``sessions`` and append ``events`` atomically; return the events with their numbers."""

    def commit_nowait(
        self, sessions: Sequence[SessionRow], events: Sequence[NewEvent], *, urgent: bool = False
    ) -> asyncio.Future:
        """:meth:`commit` submitted now, in call order, without awaiting: a future of its rows.

        Backends with a writer queue override this to enqueue synchronously, so
        that commits made one after another are numbered in that order even
        when nobody awaits them. ``urgent``: an alert waits for this commit (its
        acknowledgement and its offer); a backend may take a faster path for it.
        """
        return asyncio.ensure_future(self.commit(sessions, events))

    @abc.abstractmethod
    async def last_seq(self) -> int:
        """The number of the last committed event (0 when there is none)."""

    @abc.abstractmethod
    async def events_after(self, after: int, limit: int = 1000) -> list[EventRow]:
        """Committed events with ``seq > after`` in order, at most ``limit``."""

    @abc.abstractmethod
    async def session_events(self, session: str) -> list[EventRow]: ...

    @abc.abstractmethod
    async def get_session(self, session: str) -> SessionRow | None: ...

    @abc.abstractmethod
    async def session_by_key(self, idempotency_key: str) -> SessionRow | None: ...

    @abc.abstractmethod
    async def open_sessions(self) -> list[SessionRow]:
        """Sessions in an open state, oldest arrival first (for recovery at start)."""

    @abc.abstractmethod
    async def list_sessions(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        tenant: str | None = None,
        kind: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> list[SessionRow]:
        """Newest first, filtered by the given fields; ``since``/``until`` bound created_at."""

    # -- terminals --------------------------------------------------------------

    @abc.abstractmethod
    async def get_terminal(self, phone: str) -> TerminalRow | None: ...

    @abc.abstractmethod
    async def save_terminals(self, rows: Sequence[TerminalRow]) -> None:
        """Upsert whole terminal rows."""

    @abc.abstractmethod
    async def list_terminals(self, limit: int = 10000) -> list[TerminalRow]: ...

    # -- locations --------------------------------------------------------------

    @abc.abstractmethod
    def add_locations(self, rows: Sequence[tuple]) -> int:
        """Queue rows (LOCATION_COLUMNS order) for the batched writer without blocking.

        Returns how many were accepted; the rest were shed (and counted) because
        the queue is at ``location_queue_max``.
        """

    @abc.abstractmethod
    async def flush_locations(self) -> None:
        """Wait until every location queued before this call is written."""

    @abc.abstractmethod
    async def trail(self, phone: str, since: float, until: float, limit: int = 10000) -> list[tuple]:
        """Locations of one vehicle with since <= t <= until, oldest first (LOCATION_COLUMNS order)."""

    # -- downlink commands --------------------------------------------------------

    @abc.abstractmethod
    async def save_command(self, row: CommandRow) -> int:
        """Insert (row.id None) or update a command; return its id."""

    async def queued_phones(self, now: float) -> set[str] | None:
        """Phones with commands still queued and not expired; None if the backend cannot tell.

        The downlink loads this once at start, so that a hundred thousand vehicles
        reconnecting at once do not each cost a query for commands none of them have.
        """
        return None

    @abc.abstractmethod
    async def pending_commands(self, phone: str, now: float) -> list[CommandRow]:
        """Commands still queued for a vehicle and not expired, oldest first."""

    @abc.abstractmethod
    async def expire_commands(self, now: float) -> list[CommandRow]:
        """Mark queued commands past their expiry as expired; return them."""

    # -- agents -------------------------------------------------------------------

    @abc.abstractmethod
    async def agent_events(self, rows: Sequence[tuple[str, float, str, str, str]]) -> None:
        """Append agent state changes: (agent, at, old, new, reason)."""

    @abc.abstractmethod
    async def list_agent_events(self, agent: str, limit: int = 100) -> list[tuple]: ...
