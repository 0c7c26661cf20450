"""PostgreSQL-only store tests: COPY batching, the partition layout, migrations, outages.

The shared contract is in test_store.py (run on both backends). Outages are made
without touching the shared server: the store talks to PostgreSQL through a TCP
proxy started here, which can refuse and cut connections, or cut one exactly
around a COMMIT to leave its outcome unknown to the client.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from gateway.store import NewEvent, SessionRow, StoreError, TerminalRow, make_store
from gateway.store.migrations import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS
from gateway.store.postgres import (
    DAY,
    PostgresStore,
    drop_schema_url,
    fresh_schema_url,
    parse_postgres_url,
    partition_name,
)
from tests.gateway.conftest import require_pg

pytestmark = pytest.mark.services


def session(sid: str, **kw) -> SessionRow:
    base = dict(
        id=sid, kind="crash", channel="data", tenant="t1", queue="emergency", klass="crash", priority=300,
        state="waiting", created_at=100.0, arrival=100.0, updated_at=100.0, phone="013800000001", data={},
    )  # fmt: skip
    base.update(kw)
    return SessionRow(**base)


def event(sid: str, name: str) -> NewEvent:
    return NewEvent(session=sid, event=name, at=100.0, data={}, tenant="t1", queue="emergency", kind="crash")


def loc(phone: str, t: float, extra: str | None = None) -> tuple:
    return (phone, t, t + 0.5, 22.5, 114.0, 10, 50.0, 90, 0, 3, extra)


async def until(predicate, timeout: float = 10.0) -> None:
    """Wait for a condition the store reaches on its own (a bound against hanging, not a speed check)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


class _Link:
    __slots__ = ("client", "dead", "server")

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client, self.server, self.dead = client, server, False

    def kill(self) -> None:
        self.dead = True
        self.client.transport.abort()
        self.server.transport.abort()


class Proxy:
    """A TCP relay to PostgreSQL that a test can cut and restore.

    ``cut()`` aborts every relayed connection and refuses new ones (accepts
    and resets them) until ``restore()``. ``cut_at(pattern, forward)`` cuts
    the connection whose client next sends bytes containing ``pattern``:
    with ``forward`` the bytes reach the server first (so a COMMIT commits
    but its answer is lost), without it they are dropped.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.up = True
        self.links: set[_Link] = set()
        self.trap: tuple[bytes, bool] | None = None
        self.trapped = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.cut()
        self.server.close()
        await self.server.wait_closed()

    def cut(self) -> None:
        self.up = False
        for link in list(self.links):
            link.kill()
        self.links.clear()

    def restore(self) -> None:
        self.up = True

    def cut_at(self, pattern: bytes, *, forward: bool) -> None:
        self.trap = (pattern, forward)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self.links.add(link)
        await asyncio.gather(
            self._pipe(reader, link, upstream=True), self._pipe(up_reader, link, upstream=False)
        )
        self.links.discard(link)

    async def _pipe(self, reader: asyncio.StreamReader, link: _Link, *, upstream: bool) -> None:
        out = link.server if upstream else link.client
        try:
            while data := await reader.read(65536):
                if link.dead:
                    return
                if upstream and self.trap and self.trap[0] in data:
                    _, forward = self.trap
                    self.trap = None
                    self.trapped += 1
                    link.dead = True  # nothing more goes back to the client
                    link.client.transport.abort()
                    if forward:
                        out.write(data)
                        await out.drain()
                        out.close()  # FIN after the bytes: the server reads them, then EOF
                    else:
                        out.transport.abort()
                    return
                out.write(data)
                await out.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not link.dead:
                link.kill()


@pytest.fixture
def pg():
    return require_pg()


@pytest.fixture
async def schema_url(pg):
    url = await fresh_schema_url(pg)
    yield url
    await drop_schema_url(url)


@pytest.fixture
async def proxy(pg):
    parts = urlsplit(pg)
    p = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    p.port = await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def open_store(schema_url):
    """``await open_store(via=proxy, **options)``: a store on this test's schema, closed afterwards."""
    stores = []

    async def factory(via: Proxy | None = None, **options) -> PostgresStore:
        url = schema_url
        if via is not None:
            parts = urlsplit(url)
            netloc = parts.netloc.rsplit("@", 1)
            host = f"127.0.0.1:{via.port}"
            url = urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))
        store = make_store(url, **options)
        await store.open()
        stores.append(store)
        return store

    yield factory
    for s in stores:
        await s.close(timeout=2.0)


async def connect(url: str) -> asyncpg.Connection:
    dsn, schema = parse_postgres_url(url)
    return await asyncpg.connect(dsn, server_settings={"search_path": f'"{schema}"'})


# -- URLs, migrations ------------------------------------------------------------------------


def test_url_schema_is_taken_out_of_the_dsn():
    dsn, schema = parse_postgres_url("postgresql://u@h:5433/db?schema=telacd&sslmode=disable")
    assert (dsn, schema) == ("postgresql://u@h:5433/db?sslmode=disable", "telacd")
    assert parse_postgres_url("postgres://h/db") == ("postgres://h/db", None)
    with pytest.raises(StoreError):
        parse_postgres_url('postgresql://h/db?schema=x";drop')
    assert isinstance(make_store("postgresql://h/db"), PostgresStore)


def test_postgres_migrations_use_the_sqlite_numbers():
    assert [v for v, _, _ in POSTGRES_MIGRATIONS] == [v for v, _, _ in SQLITE_MIGRATIONS]


async def test_migrations_apply_once_and_refuse_a_newer_schema(open_store, schema_url):
    store = await open_store()
    await store.close()
    again = await open_store()  # already at the latest version: nothing to apply
    await again.close()
    conn = await connect(schema_url)
    try:
        versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")]
        assert versions == [v for v, _, _ in POSTGRES_MIGRATIONS]
        await conn.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', 0)")
    finally:
        await conn.close()
    with pytest.raises(StoreError, match="newer"):
        await open_store()


async def test_open_against_nothing_raises_store_error():
    # a port nothing listens on (the proxy's, once it is gone)
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    store = make_store(f"postgresql://postgres@127.0.0.1:{port}/test", connect_timeout_s=2.0)
    with pytest.raises(StoreError):
        await store.open()


# -- locations: COPY batches and the partition layout -----------------------------------------------


async def test_locations_go_in_copy_batches_of_the_configured_size(open_store):
    store = await open_store(location_batch=100, location_flush_ms=60000)
    now = time.time()
    store.add_locations([loc(f"p{i % 7}", now + i) for i in range(250)])
    await until(lambda: store.stats.location_rows == 200)  # two full batches go without a flush
    assert store.stats.pending == 50
    await store.flush_locations()
    assert sorted(store.stats.location_batch_sizes) == [50, 100, 100]
    assert store.stats.location_batches == 3 and store.stats.pending == 0


async def test_a_partial_batch_is_written_after_flush_ms(open_store):
    store = await open_store(location_batch=1000, location_flush_ms=30)
    store.add_locations([loc("p", time.time())])
    await until(lambda: store.stats.location_rows == 1)
    assert store.stats.location_batch_sizes == [1]


async def test_daily_partitions_hold_their_day_and_the_default_the_rest(open_store, schema_url):
    store = await open_store()
    today = int(time.time() // DAY)
    rows = [
        loc("013800000001", today * DAY + 3600),
        loc("013800000001", (today - 2) * DAY + 7200),  # uploaded late: gets its own day
        loc("013800000001", 946684800.0),  # 2000-01-01, a clock without a fix: default partition
        loc("013800000001", float("nan")),  # garbage: default partition too
    ]
    assert store.add_locations(rows) == 4
    await store.flush_locations()
    conn = await connect(schema_url)
    try:
        placed = await conn.fetch("SELECT tableoid::regclass::text AS part, t FROM locations ORDER BY t")
        where = {r["t"]: r["part"] for r in placed if r["t"] == r["t"]}
        assert where[today * DAY + 3600] == partition_name(today)
        assert where[(today - 2) * DAY + 7200] == partition_name(today - 2)
        assert where[946684800.0] == "locations_other"
        assert len(placed) == 4
        parts = {
            r[0]
            for r in await conn.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'locations'::regclass"
            )
        }
        assert {partition_name(today), partition_name(today + 1)} <= parts  # tomorrow made ahead
        # a vehicle's day reads one partition through its (phone, t) index
        await conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN SELECT * FROM locations WHERE phone = '013800000001' AND t >= $1 AND t <= $2",
                today * DAY,
                today * DAY + 86399,
            )
        )
        assert "Index" in plan and partition_name(today) in plan
        assert partition_name(today - 2) not in plan and "locations_other" not in plan
    finally:
        await conn.close()
    trail = await store.trail("013800000001", 0, 2e9)
    assert [r[1] for r in trail] == [946684800.0, (today - 2) * DAY + 7200, today * DAY + 3600]


async def test_rows_move_out_of_the_default_partition_when_their_day_is_created(open_store, schema_url):
    store = await open_store()
    later = int(time.time() // DAY) + 5  # beyond the window: lands in the default partition
    store.add_locations([loc("p", later * DAY + 60), loc("p", later * DAY + 120)])
    await store.flush_locations()
    await store._ensure_days({later})  # what the writer does once that day comes into range
    conn = await connect(schema_url)
    try:
        parts = [r[0] for r in await conn.fetch("SELECT tableoid::regclass::text FROM locations")]
        assert parts == [partition_name(later)] * 2
    finally:
        await conn.close()
    assert len(await store.trail("p", later * DAY, later * DAY + DAY)) == 2


async def test_a_row_the_server_refuses_is_dropped_alone_and_counted(open_store):
    store = await open_store(location_batch=64)
    now = time.time()
    rows = [loc("p", now + i) for i in range(40)]
    rows[17] = loc("p", now + 17, extra="nul \x00 byte")  # PostgreSQL text cannot hold NUL
    assert store.add_locations(rows) == 40
    await store.flush_locations()
    written = await store.trail("p", 0, 2e9)
    assert len(written) == 39 and now + 17 not in [r[1] for r in written]
    assert store.rejected_rows == 1 and store.stats.errors >= 1 and "rejected" in store.stats.last_error
    assert store.stats.pending == 0 and store.stats.shed == 0


async def test_close_flushes_queued_locations(open_store):
    store = await open_store(location_flush_ms=60000)
    store.add_locations([loc("p", time.time() + i) for i in range(30)])
    await store.close()
    again = await open_store()
    assert len(await again.trail("p", 0, 2e9)) == 30


# -- numbering ----------------------------------------------------------------------------------


async def test_concurrent_commits_share_transactions(open_store):
    store = await open_store()
    await asyncio.gather(*(store.commit([session(f"s{i}")], [event(f"s{i}", "created")]) for i in range(50)))
    assert store.stats.commits == 50
    assert store.stats.commit_batches < 50  # grouped: the first alone, the rest queued behind it


async def test_two_stores_on_one_database_still_number_gap_free(open_store):
    # two gateways on one database breaks the deployment rules, but must not break numbering
    a, b = await open_store(), await open_store()
    results = await asyncio.gather(
        *(
            (a if i % 2 else b).commit(
                [session(f"s{i}")], [event(f"s{i}", "created"), event(f"s{i}", "queued")]
            )
            for i in range(40)
        )
    )
    seqs = sorted(e.seq for rows in results for e in rows)
    assert seqs == list(range(1, 81))
    assert await a.last_seq() == 80 and [e.seq for e in await b.events_after(0, 1000)] == seqs


# -- outages, through the proxy ------------------------------------------------------------------------


async def test_commit_during_an_outage_fails_after_its_bound_and_takes_no_number(open_store, proxy):
    store = await open_store(via=proxy, commit_timeout_s=1.0)
    assert [e.seq for e in await store.commit([session("a")], [event("a", "created")])] == [1]
    proxy.cut()
    # a session commit is one statement that commits itself, so a link that dies under it leaves
    # the outcome unknown until the server can be asked again; either way it fails within its bound
    with pytest.raises(StoreError, match=r"not stored|outcome unknown"):
        await store.commit([session("b")], [event("b", "created")])
    assert await store.ping() is False
    with pytest.raises(StoreError):  # reads fail as StoreError too, not as a driver exception
        await store.get_session("a")
    assert store.stats.errors > 0 and store.stats.last_error
    proxy.restore()
    rows = await store.commit([session("c")], [event("c", "created")])
    assert rows[0].seq == 2  # b never had a number
    assert await store.get_session("b") is None and await store.ping() is True


async def test_commit_during_an_outage_goes_through_when_the_server_returns(open_store, proxy):
    store = await open_store(via=proxy, commit_timeout_s=30.0)
    await store.commit([session("a")], [event("a", "created")])
    proxy.cut()
    pending = asyncio.ensure_future(store.commit([session("b")], [event("b", "created")]))
    await until(lambda: store.stats.errors >= 2)  # it is retrying against the dead link
    assert not pending.done()
    proxy.restore()
    rows = await pending
    assert rows[0].seq == 2 and (await store.get_session("b")).state == "waiting"


async def test_locations_back_up_to_their_bound_during_an_outage_and_resume(open_store, proxy):
    store = await open_store(via=proxy, location_batch=10, location_flush_ms=10, location_queue_max=100)
    now = time.time()
    store.add_locations([loc("p", now - 1000 + i) for i in range(5)])
    await store.flush_locations()
    proxy.cut()
    assert store.add_locations([loc("p", now + i) for i in range(60)]) == 60
    await until(lambda: store.stats.errors >= 1)  # the writer has met the outage
    assert "locations" in store.stats.last_error
    assert store.add_locations([loc("p", now + 60 + i) for i in range(80)]) == 40  # the bound is 100 queued
    assert store.stats.shed == 40 and store.stats.pending == 100
    proxy.restore()
    await store.flush_locations()
    trail = await store.trail("p", now, now + 1000)
    assert [r[1] for r in trail] == [now + i for i in range(100)]
    assert store.stats.pending == 0 and store.stats.location_rows == 105


@pytest.mark.parametrize("committed", [True, False], ids=["commit-reached-server", "commit-lost"])
@pytest.mark.parametrize("path", ["statement", "transaction"])
async def test_a_commit_whose_answer_is_lost_is_settled_exactly_once(
    open_store, proxy, schema_url, committed, path
):
    """Session commits alone go as one self-committing statement; with other writes in the group, as a
    transaction. Either way a connection that dies as the commit goes out is settled by asking."""
    store = await open_store(via=proxy)
    await store.commit([session("a")], [event("a", "created")])
    settled = []
    settle = store._settle

    async def watch_settle(*args):
        settled.append(await settle(*args))
        return settled[-1]

    store._settle = watch_settle
    sid = "b-lost-answer"
    others = []
    if path == "statement":
        proxy.cut_at(sid.encode(), forward=committed)  # the statement's parameters carry the session id
    else:
        # the connection dies right at COMMIT: either after the server got it, or before
        proxy.cut_at(b"COMMIT", forward=committed)
        others.append(store.save_terminals([TerminalRow("013800000009", "t1", "code", 1.0)]))
    rows = await store.commit([session(sid)], [event(sid, "created"), event(sid, "queued")])
    await asyncio.gather(*others)
    assert proxy.trapped == 1 and settled == [committed]  # the store asked the server what happened
    assert [e.seq for e in rows] == [2, 3]
    assert [e.seq for e in await store.commit([session("c")], [event("c", "created")])] == [4]
    conn = await connect(schema_url)
    try:
        logged = [
            (r[0], r[1], r[2])
            for r in await conn.fetch("SELECT seq, session, event FROM events ORDER BY seq")
        ]
    finally:
        await conn.close()
    assert logged == [(1, "a", "created"), (2, sid, "created"), (3, sid, "queued"), (4, "c", "created")]


# -- the benchmark runs ------------------------------------------------------------------------------


async def test_bench_store_measures_both_paths(pg):
    import argparse

    from bench import store as bench_store

    parser = argparse.ArgumentParser()
    bench_store.add_arguments(parser)
    args = parser.parse_args(["--rows", "3000", "--rounds", "1", "--batch", "500", "--dsn", pg])
    result = await bench_store.run(args)  # raises unless the store wrote every row, none shed
    assert result["batch"] == 500 and result["rows"] == 3000
    assert result["synchronous_commit"] == "off"  # the bare loops commit as the store's location COPYs do
    assert result["bare_copy_rows_per_s"] > 0 and result["store_rows_per_s"] > 0
    assert result["ratio"] == pytest.approx(
        result["store_rows_per_s"] / result["bare_copy_rows_per_s"], abs=1e-3
    )


async def test_close_during_an_outage_gives_up_after_its_bound_and_says_what_was_lost(open_store, proxy):
    store = await open_store(via=proxy, location_flush_ms=10)
    proxy.cut()
    store.add_locations([loc("p", time.time() + i) for i in range(25)])
    waiter = asyncio.ensure_future(store.flush_locations())
    await until(lambda: store.stats.errors >= 1)
    await store.close(timeout=0.5)
    assert store.stats.pending == 25
    with pytest.raises(StoreError, match="25 locations unwritten"):
        await waiter


async def test_a_commit_whose_caller_stops_waiting_is_still_written(open_store):
    # as on SQLite: cancelling the wait does not cancel the write (its numbers stay gap-free)
    store = await open_store()
    waiting = asyncio.ensure_future(store.commit([session("a")], [event("a", "created")]))
    await asyncio.sleep(0)  # submitted
    waiting.cancel()
    rows = await store.commit([session("b")], [event("b", "created")])
    assert rows[0].seq == 2 and (await store.get_session("a")) is not None
