"""The overload policy: GPS storage thinned under pressure (counted), alerts never; alerts ahead of GPS.

The policy object is driven with lag samples directly; the thinning and the
alert path are driven through real TCU connections on an in-process gateway.
"""

from __future__ import annotations

import asyncio
import socket
import time
import types

import pytest

from bench.terminal import TerminalClient, device_now
from gateway import config
from gateway.metrics import Metrics
from gateway.tcu import OverloadPolicy, TcuProtocol

from .harness import running_gateway
from .test_e2e import CRASH, SOS, online_terminal, open_agent


def policy(lag_ms: int = 20, queue_max: int = 1000, backlog: int = 0) -> tuple[OverloadPolicy, Metrics]:
    cfg = config.build(
        {
            "terminals": {"overload_lag_ms": lag_ms, "overload_commit_ms": 25},
            "store": {"location_queue_max": queue_max},
        },
        "<test>",
        {},
    )
    metrics = Metrics()
    gw = types.SimpleNamespace(
        cfg=cfg,
        metrics=metrics,
        store=types.SimpleNamespace(stats=types.SimpleNamespace(pending=backlog)),
        loop=types.SimpleNamespace(time=time.monotonic),
    )
    return OverloadPolicy(gw), metrics


def test_one_late_wakeup_is_not_overload_two_of_three_halve_the_stored_share():
    p, m = policy(lag_ms=20)
    assert p.update(0.030) == 1.0 and not p.shedding  # a single spike: already over
    for _ in range(3):
        assert p.update(0.001) == 1.0
    assert p.update(0.025) == 1.0
    assert p.update(0.001) == 1.0
    assert p.update(0.025) == 0.5 and p.shedding  # late, on time, late: two of three
    assert (m.overload, m.overload_episodes) == (1, 1)
    assert p.update(0.100) == 0.25
    assert p.update(0.100) == 0.125


def test_the_share_falls_to_nothing_then_climbs_back_slowly_and_the_episode_ends():
    p, m = policy(lag_ms=20)
    for _ in range(12):
        p.update(0.050)
    assert p.store_fraction == 0.0
    # on time again, but the last three samples are not all on time yet: no climb
    for lag in (0.001, 0.001):
        p.update(lag)
        assert p.store_fraction == 0.0
    # between half the threshold and the threshold: neither worse nor better (hysteresis)
    p.update(0.015)
    assert p.store_fraction == 0.0
    samples = 0
    while p.shedding:
        p.update(0.001)
        samples += 1
    assert samples == round(1 / OverloadPolicy.STEP)  # additive increase: 2.5 s of calm at 50 ms a sample
    assert p.store_fraction == 1.0 and m.overload == 0 and m.overload_episodes == 1
    p.update(0.030)
    p.update(0.030)
    assert m.overload_episodes == 2


def test_a_location_backlog_is_overload_at_once():
    p, _ = policy(queue_max=1000, backlog=250)  # a quarter of location_queue_max
    assert p.update(0.0) == 0.5
    p.gw.store.stats.pending = 100  # under half the threshold: calm again
    assert p.update(0.0) == 0.5 + OverloadPolicy.STEP
    p.backlog = lambda: 10_000  # a worker counts the rows still on their way to the owner
    assert p.update(0.0) < 0.5


def test_each_slow_session_commit_halves_gps_once_and_the_owner_can_press_the_workers():
    p, m = policy()
    m.commit_latency.observe(0.005)
    assert p.update(0.0) == 1.0
    m.commit_latency.observe(0.040)  # an alert waited 40 ms for the store
    assert p.update(0.0) == 0.5
    # one slow commit is one signal (not one per sample while it is recent): the share holds, then climbs
    assert p.update(0.0) == 0.5
    p._slow_until = 0.0  # the hold (SLOW_HOLD_S) is over
    assert p.update(0.0) == 0.5 + OverloadPolicy.STEP
    for _ in range(3):  # a store that stays slow keeps finishing slow commits: each sample halves again
        m.commit_latency.observe(0.030)
        before = p.store_fraction
        assert p.update(0.0) == before * 0.5
    w, _ = policy()  # a worker: no commits of its own, the owner's signal instead
    w.press()
    assert w.update(0.0) == 0.5 and w.shedding
    assert w.update(0.0) == 0.5  # the press counted once: no second halving, a hold
    w._slow_until = 0.0
    assert w.update(0.0) == 0.5 + OverloadPolicy.STEP


async def test_thinning_stores_the_share_counts_the_rest_and_acknowledges_every_report(tmp_path):
    async with running_gateway(tmp_path, terminals={"overload_keep_s": 3600.0}) as (gw, ep):
        t = await online_terminal(ep)  # one report stored before the episode
        await gw.store.flush_locations()
        before = len(await gw.store.trail(t.phone, 0, 2e9))
        gw.overload.store_fraction, gw.overload.shedding = 0.25, True
        shed0 = gw.metrics.gps_shed
        serials, data = [], b""
        for i in range(9):
            serial, frame = t.conn.report_location(lat=22.5 + i / 1000, lon=114.0, device_time=device_now())
            serials.append(serial)
            data += frame
        await t.send(data)  # one read: nine reports
        for serial in serials:
            assert (await t.ack_of(serial)).result == 0
        await gw.store.flush_locations()
        stored = len(await gw.store.trail(t.phone, 0, 2e9)) - before
        # the first report (none stored for keep_s yet), then every fourth (a credit of 0.25 per report)
        assert stored == 3
        assert gw.metrics.gps_shed - shed0 == 9 - stored
        await t.close()


async def test_alerts_are_never_thinned(tmp_path):
    async with running_gateway(tmp_path) as (gw, ep):
        agent = await open_agent(ep, "tcp")
        t = await online_terminal(ep)
        gw.overload.store_fraction, gw.overload.shedding = 0.0, True
        gw.overload.keep_s = 3600.0
        frames = [t.conn.report_location(lat=22.5, lon=114.0, device_time=device_now())[1] for _ in range(5)]
        serial, alarm = t.conn.report_location(lat=22.51, lon=114.01, device_time=device_now(), alarm=CRASH)
        await t.send(b"".join([*frames, alarm, *frames]))
        assert (await t.ack_of(serial)).result == 0  # acknowledged once its session was stored
        offer = await agent.expect("offer")
        assert offer["session"]["kind"] == "crash"
        assert offer["session"]["position"]["lat"] == pytest.approx(22.51)
        await gw.store.flush_locations()
        rows = await gw.store.trail(t.phone, 0, 2e9)
        assert any(r[8] & CRASH for r in rows)  # the alert's own position is stored
        await agent.close()
        await t.close()


class _Transport:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def get_extra_info(self, name: str, default=None):
        return default

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...


async def test_an_alert_commit_is_submitted_in_the_read_that_carried_it(tmp_path):
    """Not on a later turn of the loop, behind every other socket that turn reads (the GPS of thousands)."""
    async with running_gateway(tmp_path) as (gw, _ep):
        proto = TcuProtocol(gw)
        proto.connection_made(_Transport())
        term = TerminalClient("013800138099")
        proto.data_received(term.conn.authenticate("x")[1])
        submitted = []
        commit = gw.store.commit_nowait
        gw.store.commit_nowait = lambda *a, **k: submitted.append(a) or commit(*a, **k)
        frames = [
            term.conn.report_location(lat=22.5, lon=114.0, device_time=device_now())[1] for _ in range(3)
        ]
        _, alarm = term.conn.report_location(lat=22.5, lon=114.0, device_time=device_now(), alarm=SOS)
        proto.data_received(b"".join([*frames, alarm]))
        assert len(submitted) == 1  # before data_received returned
        assert submitted[0][1][0].event == "created"
        acks = len(proto.transport.out)
        await asyncio.sleep(0.5)
        assert len(proto.transport.out) == acks + 1  # the alert's ack, once stored
        proto.connection_lost(None)


async def test_an_alert_stored_at_once_is_routed_in_the_same_read(tmp_path):
    """The embedded store commits an alert inline when its writer is idle; the session then reaches
    the engine before data_received returns, not on a later turn of the loop."""
    async with running_gateway(tmp_path) as (gw, _ep):
        proto = TcuProtocol(gw)
        proto.connection_made(_Transport())
        term = TerminalClient("013800138098")
        proto.data_received(term.conn.authenticate("x")[1])
        await asyncio.sleep(0.3)  # the writer thread has stored the registration and gone idle
        routed = []
        enqueue = gw.routing.enqueue
        gw.routing.enqueue = lambda s: routed.append(s.id) or enqueue(s)
        inline = gw.store.stats.inline_commits
        _, alarm = term.conn.report_location(lat=22.5, lon=114.0, device_time=device_now(), alarm=SOS)
        proto.data_received(alarm)
        assert gw.store.stats.inline_commits == inline + 1
        assert len(routed) == 1 and routed[0] in gw.sessions.open  # before data_received returned
        acks = len(proto.transport.out)
        await asyncio.sleep(0.05)
        assert len(proto.transport.out) == acks + 1  # and the vehicle has its acknowledgement
        proto.connection_lost(None)


async def test_sqlite_commits_pass_the_location_backlog(tmp_path):
    from gateway.store import NewEvent, SessionRow, make_store

    n = 100_000
    store = make_store(
        f"sqlite:///{tmp_path}/s.db", location_batch=2000, location_flush_ms=10, location_queue_max=1_000_000
    )
    await store.open()
    try:
        now = time.time()
        store.add_locations(
            [(f"0139{i % 500:08d}", now + i, now, 22.5, 114.0, 20, 40.0, 90, 0, 3, None) for i in range(n)]
        )
        while store.stats.location_rows == 0:  # the writer is busy with the backlog now
            await asyncio.sleep(0.001)
        s = SessionRow(
            id="S1",
            kind="crash",
            channel="voice",
            tenant="t",
            queue="q",
            klass="c",
            priority=1,
            state="waiting",
            created_at=now,
            arrival=now,
            updated_at=now,
        )
        await store.commit([s], [NewEvent("S1", "created", now, {})])
        written_when_committed = store.stats.location_rows
        await store.flush_locations()
        assert store.stats.location_rows == n
        assert written_when_committed < n / 2  # the commit went after a batch, not after the backlog
    finally:
        await store.close()


async def test_terminal_sockets_get_the_bounded_receive_buffer(tmp_path):
    async with running_gateway(tmp_path, terminals={"rcvbuf": 8192}) as (_gw, ep):
        seen = []
        made = TcuProtocol.connection_made

        def spy(self, transport):
            made(self, transport)
            seen.append(transport.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

        TcuProtocol.connection_made = spy
        try:
            t = await online_terminal(ep)
        finally:
            TcuProtocol.connection_made = made
        assert seen == [2 * 8192]  # Linux doubles the value asked for (socket(7))
        await t.close()


async def test_queued_phones_index_the_offline_command_queue(store):
    from gateway.store import CommandRow

    now = time.time()
    for phone, expires, status in (
        ("A", now + 60, "queued"),
        ("B", now - 1, "queued"),
        ("C", now + 60, "sent"),
    ):
        await store.save_command(CommandRow(None, phone, "text", {"text": "x"}, now, expires, status))
    assert await store.queued_phones(now) == {"A"}


async def test_a_reconnect_storm_costs_no_lookups_for_vehicles_with_nothing_queued(tmp_path):
    async with running_gateway(tmp_path) as (gw, ep):
        lookups = []
        pending = gw.store.pending_commands

        async def counting(phone, now):
            lookups.append(phone)
            return await pending(phone, now)

        gw.store.pending_commands = counting
        terminals = [await online_terminal(ep, f"0138001380{i:02d}") for i in range(5)]
        assert lookups == []
        # a vehicle with a command waiting is looked up when it comes back
        await terminals[0].close()
        await asyncio.sleep(0.1)
        out = await gw.downlink.request(terminals[0].phone, "text", {"text": "late"})
        assert out["status"] == "queued"
        t = await TerminalClient(terminals[0].phone).connect(*ep.tcu)
        assert await t.login() == 0
        await t.answer_commands()
        assert lookups == [terminals[0].phone]
        for c in (t, *terminals[1:]):
            await c.close()
