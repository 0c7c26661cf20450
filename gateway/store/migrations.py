"""Versioned schema migrations.

Each backend has its own SQL, under the same version numbers: migration N means
the same change on SQLite and on PostgreSQL. A database is at version V when
``schema_migrations`` holds rows 1..V; at start every migration above V is
applied in order, each in its own transaction. A database from a newer telacd
(a version this code does not know) is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3
import time

from .base import StoreError

SQLITE_MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial schema",
        """
CREATE TABLE terminals (
  phone TEXT PRIMARY KEY,
  tenant TEXT NOT NULL DEFAULT '',
  auth_code TEXT,
  registered_at REAL,
  info TEXT NOT NULL DEFAULT '{}',
  last_seen REAL,
  last_position TEXT,
  last_alarm INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE sessions (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  channel TEXT NOT NULL,
  tenant TEXT NOT NULL,
  queue TEXT NOT NULL,
  klass TEXT NOT NULL,
  priority INTEGER NOT NULL,
  state TEXT NOT NULL,
  phone TEXT,
  incident TEXT,
  agent TEXT,
  disposition TEXT,
  idempotency_key TEXT UNIQUE,
  created_at REAL NOT NULL,
  arrival REAL NOT NULL,
  updated_at REAL NOT NULL,
  closed_at REAL,
  data TEXT NOT NULL
);
CREATE INDEX sessions_state ON sessions (state, queue);
CREATE INDEX sessions_created ON sessions (created_at);
CREATE INDEX sessions_phone ON sessions (phone, created_at);
-- the gateway-wide event log; seq is assigned by the committing transaction
CREATE TABLE events (
  seq INTEGER PRIMARY KEY,
  session TEXT NOT NULL,
  event TEXT NOT NULL,
  at REAL NOT NULL,
  tenant TEXT NOT NULL DEFAULT '',
  queue TEXT NOT NULL DEFAULT '',
  kind TEXT NOT NULL DEFAULT '',
  data TEXT NOT NULL
);
CREATE INDEX events_session ON events (session, seq);
-- one vehicle's day is one range of this index
CREATE TABLE locations (
  phone TEXT NOT NULL,
  t REAL NOT NULL,
  recv REAL NOT NULL,
  lat REAL,
  lon REAL,
  alt INTEGER,
  speed REAL,
  direction INTEGER,
  alarm INTEGER,
  status INTEGER,
  extra TEXT
);
CREATE INDEX locations_phone_t ON locations (phone, t);
CREATE TABLE commands (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  phone TEXT NOT NULL,
  session TEXT,
  agent TEXT,
  command TEXT NOT NULL,
  params TEXT NOT NULL,
  created_at REAL NOT NULL,
  expires_at REAL NOT NULL,
  status TEXT NOT NULL,
  result TEXT,
  updated_at REAL NOT NULL
);
CREATE INDEX commands_pending ON commands (phone, status, expires_at);
CREATE TABLE agent_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  agent TEXT NOT NULL,
  at REAL NOT NULL,
  old TEXT,
  new TEXT,
  reason TEXT
);
CREATE INDEX agent_events_agent ON agent_events (agent, id);
""",
    ),
]


def apply_sqlite(conn: sqlite3.Connection, migrations: list[tuple[int, str, str]]) -> list[int]:
    """Apply every migration newer than the database; return the versions applied."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at REAL)"
    )
    have = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
    known = {v for v, _, _ in migrations}
    newer = sorted(have - known)
    if newer:
        raise StoreError(
            f"database schema version {newer[-1]} is newer than this telacd knows ({max(known)})"
        )
    applied = []
    for version, name, sql in sorted(migrations):
        if version in have:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?,?,?)",
                (version, name, time.time()),
            )
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied


def _statements(sql: str) -> list[str]:
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


# -- PostgreSQL ---------------------------------------------------------------------
#
# The same version numbers as SQLITE_MIGRATIONS. Differences that are on purpose:
# * times stay epoch seconds in float8, as in the store interface, so rows cross
#   the wire without conversion (``to_timestamp(t)`` gives a timestamptz in SQL);
# * JSON columns are ``json``, not ``jsonb``: json keeps the text as written and
#   accepts the ``\u0000`` escape that jsonb rejects, so no payload a vehicle can
#   send makes an alert unstorable;
# * ``phone`` is COLLATE "C": digits compare bytewise, which makes the (phone, t)
#   index cheaper to maintain on every COPY than a libc collation would;
# * ``event_counter`` is the one-row source of event numbers (see postgres.py);
# * ``locations`` is range-partitioned by day on ``t``; the daily partitions are
#   created at run time by the location writer, and ``locations_other`` (the
#   default partition) takes rows whose device time is far from the present.
POSTGRES_MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial schema",
        """
CREATE TABLE terminals (
  phone text COLLATE "C" PRIMARY KEY,
  tenant text NOT NULL DEFAULT '',
  auth_code text,
  registered_at float8,
  info json NOT NULL DEFAULT '{}',
  last_seen float8,
  last_position json,
  last_alarm bigint NOT NULL DEFAULT 0
);
CREATE TABLE sessions (
  id text PRIMARY KEY,
  kind text NOT NULL,
  channel text NOT NULL,
  tenant text NOT NULL,
  queue text NOT NULL,
  klass text NOT NULL,
  priority integer NOT NULL,
  state text NOT NULL,
  phone text COLLATE "C",
  incident text,
  agent text,
  disposition text,
  idempotency_key text UNIQUE,
  created_at float8 NOT NULL,
  arrival float8 NOT NULL,
  updated_at float8 NOT NULL,
  closed_at float8,
  data json NOT NULL
);
CREATE INDEX sessions_state ON sessions (state, queue);
CREATE INDEX sessions_created ON sessions (created_at);
CREATE INDEX sessions_phone ON sessions (phone, created_at);
-- the gateway-wide event log; seq is assigned by the committing transaction
CREATE TABLE events (
  seq bigint PRIMARY KEY,
  session text NOT NULL,
  event text NOT NULL,
  at float8 NOT NULL,
  tenant text NOT NULL DEFAULT '',
  queue text NOT NULL DEFAULT '',
  kind text NOT NULL DEFAULT '',
  data json NOT NULL
);
CREATE INDEX events_session ON events (session, seq);
-- the last event number handed out, and the token of the transaction that
-- last moved it (lets a writer whose COMMIT got no answer learn the outcome)
CREATE TABLE event_counter (
  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  seq bigint NOT NULL,
  txn text
);
INSERT INTO event_counter (seq) VALUES (0);
-- one vehicle's day is one range of the (phone, t) index of one daily partition
CREATE TABLE locations (
  phone text COLLATE "C" NOT NULL,
  t float8 NOT NULL,
  recv float8 NOT NULL,
  lat float8,
  lon float8,
  alt integer,
  speed float8,
  direction integer,
  alarm bigint,
  status bigint,
  extra text
) PARTITION BY RANGE (t);
CREATE INDEX locations_phone_t ON locations (phone, t);
CREATE TABLE locations_other PARTITION OF locations DEFAULT;
CREATE TABLE commands (
  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  phone text COLLATE "C" NOT NULL,
  session text,
  agent text,
  command text NOT NULL,
  params json NOT NULL,
  created_at float8 NOT NULL,
  expires_at float8 NOT NULL,
  status text NOT NULL,
  result json,
  updated_at float8 NOT NULL
);
CREATE INDEX commands_pending ON commands (phone, status, expires_at);
CREATE TABLE agent_events (
  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  agent text NOT NULL,
  at float8 NOT NULL,
  old text,
  new text,
  reason text
);
CREATE INDEX agent_events_agent ON agent_events (agent, id);
""",
    ),
]

# Serialises migrations (and partition creation) between gateways that start
# against the same database at once; an arbitrary constant ("telacd" in ASCII).
PG_LOCK_KEY = 0x74656C616364


async def apply_postgres(conn, migrations: list[tuple[int, str, str]]) -> list[int]:
    """Apply every migration newer than the database over an asyncpg connection.

    Each migration runs in its own transaction holding a transaction-level
    advisory lock, so two gateways starting together apply it once; the set of
    applied versions is re-read under the lock. Returns the versions applied.
    """
    known = {v for v, _, _ in migrations}
    applied = []
    for version, name, sql in sorted(migrations):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PG_LOCK_KEY)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version integer PRIMARY KEY, name text, applied_at float8)"
            )
            have = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            newer = sorted(have - known)
            if newer:
                raise StoreError(
                    f"database schema version {newer[-1]} is newer than this telacd knows ({max(known)})"
                )
            if version in have:
                continue
            await conn.execute(sql)  # several statements: simple query protocol, no arguments
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                version,
                name,
                time.time(),
            )
        applied.append(version)
    return applied
