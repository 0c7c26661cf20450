"""SQLite backend: the embedded default.

One writer thread owns the only writing connection. Everything that changes
the database is a job on its queue; the thread takes every job waiting, runs
them in ONE transaction and commits once (group commit), then resolves the
callers' futures on the event loop. Under load this turns N alert commits into
one fsync-bounded transaction, and the event loop never blocks on disk.

Reads go through a separate connection on a one-thread executor; WAL mode lets
them run while the writer writes.

Why not aiosqlite: it moves each call to a thread but keeps one transaction per
call, and the group commit and the location batching are the point here.

Durability: ``sync = "normal"`` (WAL + synchronous=NORMAL) survives a crash of
the gateway process, the failure the tests exercise with SIGKILL; ``"full"``
also survives a power cut, at one fsync per transaction.

The writer thread shares the interpreter lock (GIL) with the event loop, and
``executemany`` gives the lock up and takes it back around every row it
inserts; while the loop is busy, each taking-back waits for the switch
interval (5 ms by default). Measured with a busy loop thread: 3,500 rows/s and
a 256-row slice taking up to 160 ms, so an alert commit queued behind it
waited as long. Location rows therefore go in as multi-row INSERTs of up to
``_SLICE`` rows (one statement, one hand-over of the lock), and the store sets
the switch interval to 1 ms: 56,000 rows/s and 6 ms at p99 with the same busy
loop; unloaded, 90-110k rows/s either way.

WAL checkpoints (copying the log back into the database, with an fsync) run on
a connection and thread of their own, every ``CHECKPOINT_S``: SQLite's automatic
checkpoint runs inside whichever commit crosses 1000 pages, which under a GPS
flood is every few location batches, and a session commit queued behind that
one waited for the fsync. Measured on the reference machine (2000-row batches
sorted by phone, the locations index): 64k rows/s with automatic checkpoints,
97k with this.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import operator
import os
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from .base import (
    OPEN_STATES,
    CommandRow,
    EventRow,
    NewEvent,
    SessionRow,
    Store,
    StoreError,
    StoreStats,
    TerminalRow,
    session_query,
)
from .migrations import SQLITE_MIGRATIONS

_STOP = object()
CHECKPOINT_S = 0.5
_SLICE = 256  # location rows inserted between two looks at the commit queue
_PHONE = operator.itemgetter(0)
_mem_ids = itertools.count(1)

_SESSION_COLS = (
    "id, kind, channel, tenant, queue, klass, priority, state, phone, incident, agent, disposition, "
    "idempotency_key, created_at, arrival, updated_at, closed_at, data"
)
_UPSERT_SESSION = f"""
INSERT INTO sessions ({_SESSION_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
ON CONFLICT(id) DO UPDATE SET
  kind=excluded.kind, channel=excluded.channel, tenant=excluded.tenant, queue=excluded.queue,
  klass=excluded.klass, priority=excluded.priority, state=excluded.state, phone=excluded.phone,
  incident=excluded.incident, agent=excluded.agent, disposition=excluded.disposition,
  idempotency_key=excluded.idempotency_key, arrival=excluded.arrival, updated_at=excluded.updated_at,
  closed_at=excluded.closed_at, data=excluded.data
"""
_INSERT_EVENT = (
    "INSERT INTO events (seq, session, event, at, tenant, queue, kind, data) VALUES (?,?,?,?,?,?,?,?)"
)
_INSERT_LOCATION = (
    "INSERT INTO locations (phone, t, recv, lat, lon, alt, speed, direction, alarm, status, extra) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)


def _insert_locations_sql(n: int) -> str:
    """One INSERT of ``n`` rows (11 parameters each)."""
    return _INSERT_LOCATION + ",(?,?,?,?,?,?,?,?,?,?,?)" * (n - 1)


_UPSERT_TERMINAL = """
INSERT INTO terminals (phone, tenant, auth_code, registered_at, info, last_seen, last_position, last_alarm)
VALUES (?,?,?,?,?,?,?,?)
ON CONFLICT(phone) DO UPDATE SET
  tenant=excluded.tenant, auth_code=excluded.auth_code, registered_at=excluded.registered_at,
  info=excluded.info, last_seen=excluded.last_seen, last_position=excluded.last_position,
  last_alarm=excluded.last_alarm
"""


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _session_params(s: SessionRow) -> tuple:
    return (
        s.id, s.kind, s.channel, s.tenant, s.queue, s.klass, s.priority, s.state, s.phone, s.incident,
        s.agent, s.disposition, s.idempotency_key, s.created_at, s.arrival, s.updated_at, s.closed_at,
        _dumps(s.data),
    )  # fmt: skip


def _session_row(r: tuple) -> SessionRow:
    return SessionRow(
        id=r[0], kind=r[1], channel=r[2], tenant=r[3], queue=r[4], klass=r[5], priority=r[6], state=r[7],
        phone=r[8], incident=r[9], agent=r[10], disposition=r[11], idempotency_key=r[12], created_at=r[13],
        arrival=r[14], updated_at=r[15], closed_at=r[16], data=orjson.loads(r[17]),
    )  # fmt: skip


def _event_row(r: tuple) -> EventRow:
    return EventRow(
        seq=r[0],
        session=r[1],
        event=r[2],
        at=r[3],
        tenant=r[4],
        queue=r[5],
        kind=r[6],
        data=orjson.loads(r[7]),
    )


def _terminal_row(r: tuple) -> TerminalRow:
    return TerminalRow(
        phone=r[0], tenant=r[1], auth_code=r[2], registered_at=r[3], info=orjson.loads(r[4] or "{}"),
        last_seen=r[5], last_position=orjson.loads(r[6]) if r[6] else None, last_alarm=r[7] or 0,
    )  # fmt: skip


def _command_row(r: tuple) -> CommandRow:
    return CommandRow(
        id=r[0], phone=r[1], session=r[2], agent=r[3], command=r[4], params=orjson.loads(r[5]),
        created_at=r[6], expires_at=r[7], status=r[8], result=orjson.loads(r[9]) if r[9] else None,
        updated_at=r[10],
    )  # fmt: skip


def parse_sqlite_url(url: str) -> tuple[str, bool]:
    """``sqlite:///relative/or/./path.db``, ``sqlite:////abs/path.db`` or ``sqlite:///:memory:``.

    Returns (database argument for sqlite3.connect, uri flag).
    """
    if not url.startswith("sqlite://"):
        raise StoreError(f"not a sqlite URL: {url!r}")
    path = url[len("sqlite://") :]
    if path.startswith("/"):
        path = path[1:]  # sqlite:///x.db -> x.db ; sqlite:////abs -> /abs
    if not path:
        raise StoreError(f"sqlite URL without a path: {url!r}")
    if path == ":memory:":
        # a private shared-cache database, so the reader connection sees the writer's data
        return f"file:telacd-mem-{os.getpid()}-{next(_mem_ids)}?mode=memory&cache=shared", True
    return path, False


class SqliteStore(Store):
    def __init__(
        self,
        url: str,
        *,
        sync: str = "normal",
        location_batch: int = 2000,
        location_flush_ms: int = 200,
        location_queue_max: int = 200000,
        **_ignored: Any,
    ) -> None:
        self.url = url
        self.stats = StoreStats()
        self._db, self._uri = parse_sqlite_url(url)
        self._sync = sync
        self._batch = location_batch
        self._flush_s = location_flush_ms / 1000.0
        self._max = location_queue_max
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._locs: collections.deque = collections.deque()
        self._oldest_loc = 0.0
        self._flush_waiters: list[asyncio.Future] = []
        self._thread: threading.Thread | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._rconn: sqlite3.Connection | None = None
        self._keepalive: sqlite3.Connection | None = None  # holds a :memory: database open
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._stop_checkpoints: threading.Event | None = None
        self._slice = _SLICE
        self._slice_sql = _insert_locations_sql(_SLICE)
        # the writing connection is used by the writer thread, and by the loop for an urgent commit
        # made while the thread is idle (commit_nowait): whoever writes holds _wlock
        self._wconn: sqlite3.Connection | None = None
        self._wlock = threading.Lock()
        self._seq = 0  # the last event number committed (changed only by whoever holds _wlock)
        self._submitted = 0  # jobs put on the queue (counted by the loop)
        self._finished = 0  # jobs the thread has run (counted by the thread)

    # -- lifecycle ---------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._db, uri=self._uri, isolation_level=None, check_same_thread=False, timeout=30
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self._sync == 'full' else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys=OFF")
        return conn

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        # the writer thread must get the GIL back promptly from a busy loop (see the module docstring)
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
        if not self._uri:
            directory = os.path.dirname(os.path.abspath(self._db))
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the directory of {self._db!r}: {e.strerror}") from None
        else:
            self._keepalive = sqlite3.connect(self._db, uri=True, check_same_thread=False)
        ready: asyncio.Future = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._writer, args=(ready,), name="telacd-sqlite-writer", daemon=True
        )
        self._thread.start()
        await ready
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="telacd-sqlite-reader")
        if not self._uri:
            self._stop_checkpoints = threading.Event()
            threading.Thread(target=self._checkpointer, name="telacd-sqlite-checkpoint", daemon=True).start()

    def _checkpointer(self) -> None:
        """PASSIVE checkpoints: they never block the writer, which keeps appending to the log meanwhile."""
        conn = self._connect()
        try:
            while not self._stop_checkpoints.wait(CHECKPOINT_S):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    pass  # busy or closing: the next round tries again
        finally:
            conn.close()

    async def close(self) -> None:
        if self._closed or self._thread is None:
            return
        self._closed = True
        if self._stop_checkpoints is not None:
            self._stop_checkpoints.set()
        done: asyncio.Future = self._loop.create_future()
        self._jobs.put((_STOP, done))
        await done
        await asyncio.to_thread(self._thread.join)
        if self._reader:
            await self._loop.run_in_executor(self._reader, self._close_reader)
            self._reader.shutdown(wait=True)
        if self._keepalive:
            self._keepalive.close()

    def _close_reader(self) -> None:
        if self._rconn is not None:
            self._rconn.close()
            self._rconn = None

    async def ping(self) -> bool:
        try:
            return (await self._read(lambda c: c.execute("SELECT 1").fetchone()[0])) == 1
        except Exception:
            return False

    # -- the writer thread ---------------------------------------------------------------

    def _resolve(self, results: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
        for fut, value, exc in results:
            if fut.done():
                continue
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(value)

    def _writer(self, ready: asyncio.Future) -> None:
        loop = self._loop
        try:
            conn = self._connect()
            if not self._uri:
                conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it (see above)
            # a library built with a low parameter limit (999 before SQLite 3.32) gets smaller statements
            self._slice = max(1, min(_SLICE, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 11))
            self._slice_sql = _insert_locations_sql(self._slice)
            from .migrations import apply_sqlite

            apply_sqlite(conn, SQLITE_MIGRATIONS)
            self._seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
            self._wconn = conn
        except Exception as e:  # surfaced to open()
            loop.call_soon_threadsafe(self._resolve, [(ready, None, StoreError(f"{self.url}: {e}"))])
            return
        loop.call_soon_threadsafe(self._resolve, [(ready, None, None)])
        stop_future = None
        while True:
            timeout = self._flush_s if self._locs else 0.5
            jobs = []
            try:
                jobs.append(self._jobs.get(timeout=timeout))
                while len(jobs) < 512:
                    jobs.append(self._jobs.get_nowait())
            except queue.Empty:
                pass
            work = []
            for job in jobs:
                if job[0] is _STOP:
                    stop_future = job[1]
                elif job[0] == "flush":
                    self._flush_waiters.append(job[1])
                else:
                    work.append(job)
            with self._wlock:
                if work:
                    self._run_jobs(conn, work)
                    self._finished += len(work)
                self._write_locations(conn, force=bool(self._flush_waiters) or stop_future is not None)
            if self._flush_waiters:
                waiters, self._flush_waiters = self._flush_waiters, []
                loop.call_soon_threadsafe(self._resolve, [(f, None, None) for f in waiters])
            if stop_future is not None:
                with self._wlock:
                    self._wconn = None
                    conn.close()
                loop.call_soon_threadsafe(self._resolve, [(stop_future, None, None)])
                return

    def _run_jobs(self, conn: sqlite3.Connection, work: list) -> None:
        """Run jobs in one transaction; on failure, retry each alone so one bad job fails alone."""
        seq = self._seq
        t0 = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = []
            new_seq = seq
            for _kind, fn, fut in work:
                value, new_seq = fn(conn, new_seq)
                results.append((fut, value, None))
            conn.execute("COMMIT")
            seq = new_seq
        except Exception:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self.stats.errors += 1
            results = []
            for kind, fn, fut in work:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    value, new_seq = fn(conn, seq)
                    conn.execute("COMMIT")
                    seq = new_seq
                    results.append((fut, value, None))
                except Exception as e:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                    self.stats.last_error = f"{type(e).__name__}: {e}"
                    results.append((fut, None, StoreError(f"{kind} failed: {e}")))
        n_commits = sum(1 for kind, _, _ in work if kind == "commit")
        if n_commits:
            self.stats.commits += n_commits
            self.stats.commit_batches += 1
            self.stats.commit_seconds += time.perf_counter() - t0
        self._seq = seq
        self._loop.call_soon_threadsafe(self._resolve, results)

    def _write_locations(self, conn: sqlite3.Connection, force: bool) -> None:
        locs = self._locs
        while locs:
            if not force and len(locs) < self._batch and time.monotonic() - self._oldest_loc < self._flush_s:
                return
            n = min(len(locs), self._batch)
            rows = [locs.popleft() for _ in range(n)]
            # by phone (stable: a vehicle's rows keep their order): neighbouring index insertions
            # touch the same pages, so a batch dirties, logs and checkpoints fewer of them
            rows.sort(key=_PHONE)
            if locs:
                self._oldest_loc = time.monotonic()
            t0 = time.perf_counter()
            try:
                conn.execute("BEGIN")
                # in slices, looking for a session commit between them: one that arrives mid-batch waits
                # for a slice (a millisecond or two), not for the batch; the rest of the batch goes back
                # to the front of the queue and is written after it
                done = 0
                size = self._slice
                while done < n:
                    part = rows[done : done + size]
                    sql = self._slice_sql if len(part) == size else _insert_locations_sql(len(part))
                    conn.execute(sql, [v for r in part for v in r])
                    done += size
                    if done < n and not force and not self._jobs.empty():
                        locs.extendleft(reversed(rows[done:]))
                        rows, n = rows[:done], done
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                # put them back in front and try again on the next round
                locs.extendleft(reversed(rows))
                self.stats.errors += 1
                self.stats.last_error = f"locations: {e}"
                return
            s = self.stats
            s.location_rows += n
            s.location_batches += 1
            s.location_seconds += time.perf_counter() - t0
            s.location_batch_sizes.append(n)
            if len(s.location_batch_sizes) > 1024:
                del s.location_batch_sizes[:512]
            s.pending = len(locs)
            if not force and not self._jobs.empty():
                return  # a session commit is waiting: alerts go before the rest of the GPS backlog

    def _submit(self, kind: str, fn: Callable[[sqlite3.Connection, int], tuple[Any, int]]) -> asyncio.Future:
        if self._closed:
            raise StoreError("store is closed")
        fut = self._loop.create_future()
        self._submitted += 1
        self._jobs.put((kind, fn, fut))
        return fut

    def _run_inline(self, fn: Callable[[sqlite3.Connection, int], tuple[Any, int]]) -> asyncio.Future | None:
        """Run one job on the calling (loop) thread now, if the writer thread is idle; else None.

        Idle means every job queued before has run and the thread is not
        writing (it holds ``_wlock`` while it writes, locations included). A
        transaction of one alert takes about 0.2 ms here; through the thread
        the alert also waited for two hand-overs between threads (the thread
        waking, then the loop), about as long again, and on an idle machine
        each may wake a sleeping core. Under load the thread is busy and the
        commit goes through the queue as before, in order.
        """
        if self._sync == "full" or self._submitted != self._finished or not self._wlock.acquire(False):
            return None
        try:
            conn = self._wconn
            if conn is None or self._submitted != self._finished:
                return None
            # never wait on the loop for another connection's write lock (an operator's shell, say):
            # the thread may wait its 30 s for it, the loop must not, so a busy database sends the
            # commit to the thread's queue instead
            conn.execute("PRAGMA busy_timeout = 0")
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                return None
            finally:
                conn.execute("PRAGMA busy_timeout = 30000")
            fut = self._loop.create_future()
            t0 = time.perf_counter()
            try:
                value, seq = fn(conn, self._seq)
                conn.execute("COMMIT")
            except Exception as e:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                self.stats.errors += 1
                self.stats.last_error = f"{type(e).__name__}: {e}"
                fut.set_exception(StoreError(f"commit failed: {e}"))
                return fut
            self._seq = seq
            st = self.stats
            st.commits += 1
            st.commit_batches += 1
            st.commit_seconds += time.perf_counter() - t0
            st.inline_commits += 1
            fut.set_result(value)
            return fut
        finally:
            self._wlock.release()

    async def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        def run() -> Any:
            if self._rconn is None:
                self._rconn = self._connect()
            return fn(self._rconn)

        return await self._loop.run_in_executor(self._reader, run)

    # -- sessions and events -------------------------------------------------------

    async def commit(self, sessions: Sequence[SessionRow], events: Sequence[NewEvent]) -> list[EventRow]:
        return await self.commit_nowait(sessions, events)

    def commit_nowait(
        self, sessions: Sequence[SessionRow], events: Sequence[NewEvent], *, urgent: bool = False
    ) -> asyncio.Future:
        s_params = [_session_params(s) for s in sessions]
        ev = list(events)
        payloads = [_dumps(e.data) for e in ev]

        def job(conn: sqlite3.Connection, seq: int) -> tuple[list[EventRow], int]:
            if s_params:
                conn.executemany(_UPSERT_SESSION, s_params)
            rows = []
            params = []
            for e, payload in zip(ev, payloads):
                seq += 1
                params.append((seq, e.session, e.event, e.at, e.tenant, e.queue, e.kind, payload))
                rows.append(EventRow(seq, e.session, e.event, e.at, e.data, e.tenant, e.queue, e.kind))
            if params:
                conn.executemany(_INSERT_EVENT, params)
            return rows, seq

        if urgent and not self._closed:
            fut = self._run_inline(job)
            if fut is not None:
                return fut
        return self._submit("commit", job)

    async def last_seq(self) -> int:
        return await self._read(lambda c: c.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])

    async def events_after(self, after: int, limit: int = 1000) -> list[EventRow]:
        sql = "SELECT seq, session, event, at, tenant, queue, kind, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
        return await self._read(lambda c: [_event_row(r) for r in c.execute(sql, (after, limit))])

    async def session_events(self, session: str) -> list[EventRow]:
        sql = "SELECT seq, session, event, at, tenant, queue, kind, data FROM events WHERE session = ? ORDER BY seq"
        return await self._read(lambda c: [_event_row(r) for r in c.execute(sql, (session,))])

    async def get_session(self, session: str) -> SessionRow | None:
        sql = f"SELECT {_SESSION_COLS} FROM sessions WHERE id = ?"
        row = await self._read(lambda c: c.execute(sql, (session,)).fetchone())
        return _session_row(row) if row else None

    async def session_by_key(self, idempotency_key: str) -> SessionRow | None:
        sql = f"SELECT {_SESSION_COLS} FROM sessions WHERE idempotency_key = ?"
        row = await self._read(lambda c: c.execute(sql, (idempotency_key,)).fetchone())
        return _session_row(row) if row else None

    async def open_sessions(self) -> list[SessionRow]:
        marks = ",".join("?" * len(OPEN_STATES))
        sql = f"SELECT {_SESSION_COLS} FROM sessions WHERE state IN ({marks}) ORDER BY arrival, id"
        return await self._read(lambda c: [_session_row(r) for r in c.execute(sql, OPEN_STATES)])

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
        sql, args = session_query(
            _SESSION_COLS, lambda n: "?", state=state, queue=queue, tenant=tenant, kind=kind,
            since=since, until=until, limit=limit,
        )  # fmt: skip
        return await self._read(lambda c: [_session_row(r) for r in c.execute(sql, args)])

    # -- terminals ---------------------------------------------------------------------

    async def get_terminal(self, phone: str) -> TerminalRow | None:
        sql = "SELECT phone, tenant, auth_code, registered_at, info, last_seen, last_position, last_alarm FROM terminals WHERE phone = ?"
        row = await self._read(lambda c: c.execute(sql, (phone,)).fetchone())
        return _terminal_row(row) if row else None

    async def save_terminals(self, rows: Sequence[TerminalRow]) -> None:
        params = [
            (t.phone, t.tenant, t.auth_code, t.registered_at, _dumps(t.info), t.last_seen,
             _dumps(t.last_position) if t.last_position is not None else None, t.last_alarm)
            for t in rows
        ]  # fmt: skip

        def job(conn: sqlite3.Connection, seq: int) -> tuple[None, int]:
            conn.executemany(_UPSERT_TERMINAL, params)
            return None, seq

        await self._submit("terminals", job)

    async def list_terminals(self, limit: int = 10000) -> list[TerminalRow]:
        sql = "SELECT phone, tenant, auth_code, registered_at, info, last_seen, last_position, last_alarm FROM terminals ORDER BY phone LIMIT ?"
        return await self._read(lambda c: [_terminal_row(r) for r in c.execute(sql, (limit,))])

    # -- locations ---------------------------------------------------------------------

    def add_locations(self, rows: Sequence[tuple]) -> int:
        room = self._max - len(self._locs)
        if room <= 0:
            self.stats.shed += len(rows)
            return 0
        if not self._locs:
            self._oldest_loc = time.monotonic()
        if len(rows) > room:
            self._locs.extend(rows[:room])
            self.stats.shed += len(rows) - room
            self.stats.pending = len(self._locs)
            return room
        self._locs.extend(rows)
        self.stats.pending = len(self._locs)
        return len(rows)

    async def flush_locations(self) -> None:
        if self._closed:
            return
        fut = self._loop.create_future()
        self._jobs.put(("flush", fut))
        await fut

    async def trail(self, phone: str, since: float, until: float, limit: int = 10000) -> list[tuple]:
        sql = (
            "SELECT phone, t, recv, lat, lon, alt, speed, direction, alarm, status, extra FROM locations "
            "WHERE phone = ? AND t >= ? AND t <= ? ORDER BY t LIMIT ?"
        )
        return await self._read(lambda c: c.execute(sql, (phone, since, until, limit)).fetchall())

    # -- commands --------------------------------------------------------------------------

    async def save_command(self, row: CommandRow) -> int:
        params = (
            row.phone, row.session, row.agent, row.command, _dumps(row.params), row.created_at, row.expires_at,
            row.status, _dumps(row.result) if row.result is not None else None, row.updated_at or row.created_at,
        )  # fmt: skip

        def job(conn: sqlite3.Connection, seq: int) -> tuple[int, int]:
            if row.id is None:
                cur = conn.execute(
                    "INSERT INTO commands (phone, session, agent, command, params, created_at, expires_at, "
                    "status, result, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    params,
                )
                return cur.lastrowid, seq
            conn.execute(
                "UPDATE commands SET phone=?, session=?, agent=?, command=?, params=?, created_at=?, "
                "expires_at=?, status=?, result=?, updated_at=? WHERE id=?",
                (*params, row.id),
            )
            return row.id, seq

        return await self._submit("command", job)

    _COMMAND_COLS = (
        "id, phone, session, agent, command, params, created_at, expires_at, status, result, updated_at"
    )

    async def queued_phones(self, now: float) -> set[str] | None:
        sql = "SELECT DISTINCT phone FROM commands WHERE status = 'queued' AND expires_at > ?"
        return await self._read(lambda c: {r[0] for r in c.execute(sql, (now,))})

    async def pending_commands(self, phone: str, now: float) -> list[CommandRow]:
        sql = (
            f"SELECT {self._COMMAND_COLS} FROM commands WHERE phone = ? AND status = 'queued' "
            "AND expires_at > ? ORDER BY id"
        )
        return await self._read(lambda c: [_command_row(r) for r in c.execute(sql, (phone, now))])

    async def expire_commands(self, now: float) -> list[CommandRow]:
        cols = self._COMMAND_COLS

        def job(conn: sqlite3.Connection, seq: int) -> tuple[list[CommandRow], int]:
            rows = conn.execute(
                f"SELECT {cols} FROM commands WHERE status = 'queued' AND expires_at <= ?", (now,)
            ).fetchall()
            conn.execute(
                "UPDATE commands SET status = 'expired', updated_at = ? WHERE status = 'queued' AND expires_at <= ?",
                (now, now),
            )
            out = []
            for r in rows:
                c = _command_row(r)
                c.status, c.updated_at = "expired", now
                out.append(c)
            return out, seq

        return await self._submit("expire", job)

    # -- agents ------------------------------------------------------------------------------

    async def agent_events(self, rows: Sequence[tuple[str, float, str, str, str]]) -> None:
        params = list(rows)

        def job(conn: sqlite3.Connection, seq: int) -> tuple[None, int]:
            conn.executemany(
                "INSERT INTO agent_events (agent, at, old, new, reason) VALUES (?,?,?,?,?)", params
            )
            return None, seq

        await self._submit("agent_events", job)

    async def list_agent_events(self, agent: str, limit: int = 100) -> list[tuple]:
        sql = "SELECT agent, at, old, new, reason FROM agent_events WHERE agent = ? ORDER BY id DESC LIMIT ?"
        return await self._read(lambda c: c.execute(sql, (agent, limit)).fetchall())
