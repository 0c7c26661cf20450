"""The gateway on PostgreSQL through an outage.

The gateway's store URL points at a TCP proxy started by the test (the one the
PostgreSQL store tests use), so the server can be cut away and given back
without touching the shared server. What must hold (ARCHITECTURE.md rules 1-2):

* an alert is acknowledged to the vehicle only once stored: during the outage
  the SOS frame gets no 0x8001, and the vehicle's re-sent frame is stored,
  acknowledged and offered once the server is back;
* GPS is acknowledged throughout; it backs up to [store] location_queue_max
  and whatever does not fit is counted as shed, never silently lost; the
  backlog is written when the server returns.

A gateway killed with SIGKILL and restarted on PostgreSQL is tested with the
SQLite case, over the ``backend`` fixture (tests/gateway/test_e2e.py): nothing
lost, waiting sessions keep their arrival, assigned ones wait for their agents.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from bench.clients import agent_login, connect
from bench.terminal import device_now
from gateway.store.postgres import drop_schema_url, fresh_schema_url
from protocols.jt808 import events as ev

from .conftest import require_pg
from .test_api import api_gateway, online_terminal
from .test_store_postgres import Proxy

pytestmark = pytest.mark.services

SOS = 1 << 0
CRASH = 1 << 29


@pytest.fixture
async def schema_url():
    url = await fresh_schema_url(require_pg())
    yield url
    await drop_schema_url(url)


@pytest.fixture
async def proxy(schema_url):
    parts = urlsplit(schema_url)
    p = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    p.port = await p.start()
    yield p
    await p.stop()


def through(url: str, proxy: Proxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    user = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=f"{user[0]}@{host}" if len(user) == 2 else host))


async def until(predicate, timeout: float = 15.0) -> None:
    """Wait for a state the gateway reaches on its own (a bound against hanging, not a speed check)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def drain_acks(t, timeout: float = 0.3) -> list:
    """Every 0x8001 the terminal has received until the line stays quiet for ``timeout``."""
    acks = []
    while True:
        try:
            e = await t.next_event(ev.Acknowledged, timeout)
        except TimeoutError:
            return acks
        assert e is not None, "the gateway closed the terminal"
        acks.append(e.message.body)


async def test_alerts_wait_for_the_store_gps_backs_up_counted_and_all_resumes(tmp_path, schema_url, proxy):
    queue_max = 200
    overrides = dict(
        store={"url": through(schema_url, proxy), "commit_timeout_s": 1.0, "location_queue_max": queue_max,
               "location_batch": 50, "location_flush_ms": 50},
        terminals={"max_frames_per_s": 100000},
    )  # fmt: skip
    async with api_gateway(tmp_path, **overrides) as (gw, ep, api):
        alice = await connect("ws", http=ep.http, path="/agent")
        await agent_login(alice, "alice", "alice-token")
        t = await online_terminal(ep)
        assert (await api.get("/api/ready", token=None))["store"] is True

        proxy.cut()
        # the SOS press, then the vehicle keeps reporting with the bit held
        now = device_now()
        sos_serial, sos_frame = t.conn.report_location(lat=22.55, lon=114.06, device_time=now, alarm=SOS)
        await t.send(sos_frame)
        gps = [t.conn.report_location(lat=22.55 + i / 1e4, lon=114.06, device_time=now + 1 + i, alarm=SOS)
               for i in range(2 * queue_max)]  # fmt: skip
        await t.send(b"".join(frame for _, frame in gps))

        await until(lambda: gw.metrics.unacked_alerts == 1)  # the commit gave up after commit_timeout_s
        acks = await drain_acks(t)
        assert sos_serial not in {a.reply_serial for a in acks}, (
            "an alert was acknowledged before it was stored"
        )
        assert sorted(a.reply_serial for a in acks) == sorted(s for s, _ in gps)  # every GPS report answered
        assert all(a.result == 0 for a in acks)
        # the GPS that did not fit is counted, the rest waits in memory for the server
        assert gw.metrics.gps_shed > 0
        assert gw.store.stats.pending <= queue_max
        assert gw.metrics.gps_reports + gw.metrics.gps_shed == 2 + 2 * queue_max  # + login report + SOS row
        err = await api.get("/api/ready", token=None, expect=503)
        assert err["store"] is False
        assert (await api.get("/api/sessions", expect=503))["error"] == "store_unavailable"
        assert gw.sessions.open == {}  # nothing half-made: the session was not kept
        with pytest.raises(TimeoutError):
            await alice.expect("offer", timeout=0.2)

        proxy.restore()
        # the vehicle re-sends the unanswered frame (the same bytes, the same serial)
        await t.send(sos_frame)
        assert (await t.ack_of(sos_serial, timeout=15)).result == 0
        offer = await alice.expect("offer", timeout=10)
        sid = offer["session"]["id"]
        assert offer["session"]["kind"] == "sos" and offer["session"]["position"]["lat"] == pytest.approx(
            22.55
        )
        detail = await api.get(f"/api/sessions/{sid}")
        assert [e["event"] for e in detail["events"]][:2] == ["created", "queued"]

        # the GPS backlog reaches the server: every row accepted is stored, none twice
        await until(lambda: gw.store.stats.pending == 0)
        await gw.store.flush_locations()
        trail = await api.get("/api/terminals/013800138000/trail", params={"from": str(time.time() - 600),
                                                                             "to": str(time.time() + 3600)})  # fmt: skip
        assert trail["count"] == gw.metrics.gps_reports
        assert (await api.get("/api/ready", token=None))["store"] is True
        await alice.close()
        await t.close()
