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
