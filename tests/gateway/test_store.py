"""The store suite: every backend must pass the same tests.

Backends are listed in ``conftest.BACKENDS``; a backend whose server is not
reachable skips (or fails under TELACD_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.store import CommandRow, NewEvent, SessionRow, StoreError, TerminalRow


def session(sid: str, *, state: str = "waiting", arrival: float = 100.0, **kw) -> SessionRow:
    base = dict(
        id=sid, kind="crash", channel="data", tenant="t1", queue="emergency", klass="crash", priority=300,
        state=state, created_at=arrival, arrival=arrival, updated_at=arrival, phone="013800000001",
        data={"vehicle": {"phone": "013800000001"}, "alarms": ["collision_warning"]},
    )  # fmt: skip
    base.update(kw)
    return SessionRow(**base)


def event(sid: str, name: str, at: float = 100.0, **data) -> NewEvent:
    return NewEvent(session=sid, event=name, at=at, data=data, tenant="t1", queue="emergency", kind="crash")


async def test_commit_numbers_events_gap_free_in_submission_order(store):
    # many concurrent commits are grouped into few transactions, yet numbered in submission order
    results = await asyncio.gather(
        *(
            store.commit([session(f"s{i}")], [event(f"s{i}", "created"), event(f"s{i}", "queued")])
            for i in range(60)
        )
    )
    seqs = [e.seq for rows in results for e in rows]
    assert seqs == list(range(1, 121))
    assert [rows[0].session for rows in results] == [f"s{i}" for i in range(60)]
    assert await store.last_seq() == 120
    after = await store.events_after(100, limit=10)
    assert [e.seq for e in after] == list(range(101, 111))
    assert after[0].data == {} and after[0].event == "created" and after[0].tenant == "t1"


async def test_failed_commit_takes_no_number(store):
    await store.commit([session("a", idempotency_key="k1")], [event("a", "created")])
    with pytest.raises(StoreError):
        # same idempotency key on another session violates the unique constraint
        await store.commit([session("b", idempotency_key="k1")], [event("b", "created")])
    rows = await store.commit([session("c")], [event("c", "created")])
    assert rows[0].seq == 2
    assert await store.get_session("b") is None
    found = await store.session_by_key("k1")
    assert found is not None and found.id == "a"


async def test_failing_commit_in_a_group_fails_alone(store):
    await store.commit([session("a", idempotency_key="dup")], [])
    good1 = store.commit([session("g1")], [event("g1", "created")])
    bad = store.commit([session("bad", idempotency_key="dup")], [event("bad", "created")])
    good2 = store.commit([session("g2")], [event("g2", "created")])
    r1, rb, r2 = await asyncio.gather(good1, bad, good2, return_exceptions=True)
    assert isinstance(rb, StoreError)
    assert [r1[0].seq, r2[0].seq] == [1, 2]


async def test_session_upsert_and_queries(store):
    await store.commit([session("s1", arrival=10.0)], [event("s1", "created", 10.0)])
    await store.commit(
        [session("s2", arrival=5.0, state="assigned", agent="a1")], [event("s2", "created", 5.0)]
    )
    await store.commit([session("s3", arrival=20.0, state="completed", queue="service", kind="service")], [])
    updated = session("s1", arrival=10.0, state="offered", updated_at=11.0, data={"x": 1})
    await store.commit([updated], [event("s1", "offered", 11.0, agent="a1")])
    s1 = await store.get_session("s1")
    assert s1.state == "offered" and s1.data == {"x": 1} and s1.arrival == 10.0 and s1.updated_at == 11.0
    assert [s.id for s in await store.open_sessions()] == ["s2", "s1"]  # oldest arrival first
    assert [s.id for s in await store.list_sessions(state="completed")] == ["s3"]
    assert [s.id for s in await store.list_sessions(queue="emergency")] == ["s1", "s2"]  # newest first
    assert [s.id for s in await store.list_sessions(kind="service")] == ["s3"]
    assert [s.id for s in await store.list_sessions(since=6.0, until=15.0)] == ["s1"]
    assert await store.list_sessions(tenant="nobody") == []
    events = await store.session_events("s1")
    assert [(e.event, e.data) for e in events] == [("created", {}), ("offered", {"agent": "a1"})]


async def test_reopen_keeps_data_and_numbering(store_factory):
    store = await store_factory()
    await store.commit([session("s1")], [event("s1", "created"), event("s1", "queued")])
    await store.close()
    again = await store_factory(fresh=False)
    assert await again.last_seq() == 2
    rows = await again.commit([session("s2")], [event("s2", "created")])
    assert rows[0].seq == 3
    assert (await again.get_session("s1")).state == "waiting"


async def test_locations_batched_and_trail_is_a_time_range(store):
    rows = [
        ("013800000001", 1000.0 + i, 1000.5 + i, 22.5, 114.0 + i / 1e4, 10, 50.5, 90, 0, 3, None)
        for i in range(50)
    ]
    rows += [
        ("013800000002", 1000.0 + i, 1000.5 + i, 23.0, 113.0, 0, 0.0, 0, 1, 3, '{"mileage_km": 12.5}')
        for i in range(5)
    ]
    assert store.add_locations(rows) == 55
    await store.flush_locations()
    trail = await store.trail("013800000001", 1010.0, 1019.0)
    assert [r[1] for r in trail] == [1010.0 + i for i in range(10)]
    assert trail[0][0] == "013800000001" and trail[0][4] == pytest.approx(114.001)
    other = await store.trail("013800000002", 0, 2000)
    assert len(other) == 5 and other[0][10] == '{"mileage_km": 12.5}' and other[0][8] == 1
    assert store.stats.location_rows == 55 and store.stats.shed == 0


async def test_location_queue_is_bounded_and_counts_what_it_sheds(store_factory):
    store = await store_factory(location_queue_max=10, location_flush_ms=60000, location_batch=1000)
    rows = [("p", float(i), float(i), 0.0, 0.0, 0, 0.0, 0, 0, 0, None) for i in range(25)]
    assert store.add_locations(rows[:8]) == 8
    assert store.add_locations(rows[8:]) == 2  # room for two more
    assert store.stats.shed == 15
    await store.flush_locations()
    assert len(await store.trail("p", 0, 100)) == 10


async def test_terminals(store):
    await store.save_terminals(
        [
            TerminalRow(
                phone="013800000001", tenant="t1", auth_code="abc", registered_at=5.0, info={"model": "X1"}
            )
        ]
    )
    t = await store.get_terminal("013800000001")
    assert t.auth_code == "abc" and t.info == {"model": "X1"} and t.last_position is None
    t.last_seen, t.last_position, t.last_alarm = 9.0, {"lat": 22.5, "lon": 114.0}, 1
    await store.save_terminals([t])
    again = await store.get_terminal("013800000001")
    assert (
        again.last_position == {"lat": 22.5, "lon": 114.0}
        and again.last_alarm == 1
        and again.last_seen == 9.0
    )
    assert [t.phone for t in await store.list_terminals()] == ["013800000001"]
    assert await store.get_terminal("nope") is None


async def test_commands_queue_expire_and_update(store):
    a = await store.save_command(
        CommandRow(None, "p1", "text", {"text": "hi"}, 10.0, 100.0, "queued", session="s1", agent="a1")
    )
    b = await store.save_command(CommandRow(None, "p1", "locate", {}, 11.0, 20.0, "queued"))
    await store.save_command(CommandRow(None, "p2", "locate", {}, 11.0, 200.0, "queued"))
    pending = await store.pending_commands("p1", now=15.0)
    assert (
        [c.id for c in pending] == [a, b] and pending[0].params == {"text": "hi"} and pending[0].agent == "a1"
    )
    assert [c.id for c in await store.pending_commands("p1", now=50.0)] == [a]  # b has expired by then
    expired = await store.expire_commands(now=50.0)
    assert [c.id for c in expired] == [b] and expired[0].status == "expired"
    cmd = pending[0]
    cmd.status, cmd.result, cmd.updated_at = "answered", {"result": 0}, 16.0
    assert await store.save_command(cmd) == a
    assert await store.pending_commands("p1", now=15.0) == []


async def test_agent_events(store):
    await store.agent_events(
        [("a1", 1.0, "logged_out", "available", "login"), ("a1", 2.0, "available", "break", "lunch")]
    )
    rows = await store.list_agent_events("a1")
    assert [r[3] for r in rows] == ["break", "available"]


async def test_ping(store):
    assert await store.ping() is True


async def test_any_json_payload_round_trips(store):
    # vehicle-supplied text reaches session and event data; none of it may make an alert unstorable
    # (a NUL escape is the case PostgreSQL's jsonb would refuse)
    data = {"text": "nul \x00 here", "gbk": "粤B12345", "nested": {"n": [1, 2.5, None, True]}}
    rows = await store.commit([session("s1", data=data)], [event("s1", "created", **data)])
    assert (await store.get_session("s1")).data == data
    assert (await store.session_events("s1"))[0].data == data == rows[0].data


async def test_commit_nowait_numbers_in_call_order(store):
    # the session pipeline submits without awaiting; numbering must follow the calls
    futures = [store.commit_nowait([session(f"s{i}")], [event(f"s{i}", "created")]) for i in range(30)]
    rows = await asyncio.gather(*futures)
    assert [r[0].seq for r in rows] == list(range(1, 31))
    assert [r[0].session for r in rows] == [f"s{i}" for i in range(30)]


async def test_urgent_commits_keep_call_order_with_queued_ones(store):
    # an alert's commit may take a faster path (SQLite: at once on the loop when the writer is idle);
    # numbering still follows the calls, whichever path each took
    futures = []
    for i in range(40):
        urgent = i % 3 == 0
        futures.append(store.commit_nowait([session(f"s{i}")], [event(f"s{i}", "created")], urgent=urgent))
        if i % 7 == 0:
            await asyncio.sleep(0.01)  # let the writer go idle now and then
    rows = await asyncio.gather(*futures)
    assert [r[0].seq for r in rows] == list(range(1, 41))
    assert [e.seq for e in await store.events_after(0, limit=100)] == list(range(1, 41))


@pytest.fixture
async def sqlite_store(tmp_path):
    """The embedded backend alone, for what only it does (its urgent commits run inline when idle)."""
    from gateway.store import make_store

    store = make_store(f"sqlite:///{tmp_path}/inline.db")
    await store.open()
    yield store
    await store.close()


async def test_urgent_commit_runs_at_once_when_the_writer_is_idle(sqlite_store):
    store = sqlite_store
    await store.commit([session("a")], [event("a", "created")])  # the writer has started and gone idle
    fut = store.commit_nowait([session("b")], [event("b", "created"), event("b", "queued")], urgent=True)
    assert fut.done() and store.stats.inline_commits == 1  # committed before commit_nowait returned
    assert [e.seq for e in fut.result()] == [2, 3]
    assert [e.event for e in await store.session_events("b")] == ["created", "queued"]
    # with a job still queued, an urgent commit waits its turn behind it
    queued = store.commit_nowait([session("c")], [event("c", "created")])
    behind = store.commit_nowait([session("d")], [event("d", "created")], urgent=True)
    assert not behind.done() and store.stats.inline_commits == 1
    assert [(await queued)[0].seq, (await behind)[0].seq] == [4, 5]


async def test_urgent_commit_that_fails_inline_takes_no_number(sqlite_store):
    store = sqlite_store
    await store.commit([session("a", idempotency_key="k")], [event("a", "created")])
    bad = store.commit_nowait([session("b", idempotency_key="k")], [event("b", "created")], urgent=True)
    with pytest.raises(StoreError):
        await bad
    rows = await store.commit_nowait([session("c")], [event("c", "created")], urgent=True)
    assert rows[0].seq == 2 and await store.get_session("b") is None


async def test_a_session_committed_twice_in_one_group_keeps_its_last_row(store):
    # PostgreSQL writes a group of commits as one statement, which may touch a row only once
    first = store.commit_nowait([session("s", state="waiting")], [event("s", "created")])
    other = store.commit_nowait([session("t")], [event("t", "created")])
    last = store.commit_nowait([session("s", state="offered", agent="a1")], [event("s", "offered")])
    rows = await asyncio.gather(first, other, last)
    assert [r[0].seq for r in rows] == [1, 2, 3]
    got = await store.get_session("s")
    assert got.state == "offered" and got.agent == "a1"
    assert [e.event for e in await store.session_events("s")] == ["created", "offered"]
    assert store.stats.errors == 0  # in one go, not failed and retried alone


async def test_urgent_commit_never_waits_on_the_loop_for_another_writer(sqlite_store, tmp_path):
    import sqlite3
    import time

    store = sqlite_store
    await store.commit([session("a")], [event("a", "created")])
    other = sqlite3.connect(f"{tmp_path}/inline.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # someone else holds the write lock (an operator's shell, say)
    try:
        t0 = time.monotonic()
        fut = store.commit_nowait([session("b")], [event("b", "created")], urgent=True)
        assert time.monotonic() - t0 < 0.5  # the loop did not wait for the lock
        assert not fut.done() and store.stats.inline_commits == 0  # the thread's queue has it
    finally:
        other.execute("COMMIT")
        other.close()
    assert (await fut)[0].seq == 2
    rows = await store.commit_nowait([session("c")], [event("c", "created")], urgent=True)
    assert rows[0].seq == 3 and store.stats.inline_commits == 1  # free again: at once
