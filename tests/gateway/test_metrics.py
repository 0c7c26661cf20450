"""/metrics: the families issue 5 lists are exposed in the Prometheus text format, and they move with traffic.

The scrape is parsed with prometheus_client's own parser, as a Prometheus server
would read it; the traffic is real (a TCU over TCP, an agent over WebSocket).
"""

from __future__ import annotations

import asyncio
import copy

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.clients import agent_login, connect
from bench.terminal import device_now
from gateway import config

from .test_api import api_gateway, online_terminal, until

SOS = 1 << 0

# family -> type; the families the issue names (connections, frames by message id, malformed frames, acks,
# sessions by state/kind, queue depth, offers/accepts/timeouts, crash->offer latency, store batch sizes and
# latency, dropped/shed counts) and the gauges beside them
FAMILIES = {
    "telacd_connections": "counter",
    "telacd_connections_open": "gauge",
    "telacd_connections_closed": "counter",
    "telacd_frames": "counter",
    "telacd_malformed_frames": "counter",
    "telacd_acks": "counter",
    "telacd_acks_deferred": "counter",
    "telacd_sessions_created": "counter",
    "telacd_sessions_closed": "counter",
    "telacd_sessions_open": "gauge",
    "telacd_queue_depth": "gauge",
    "telacd_queue_longest_wait_seconds": "gauge",
    "telacd_offers": "counter",
    "telacd_escalations": "counter",
    "telacd_unresolved_escalations": "counter",
    "telacd_crash_to_offer_seconds": "histogram",
    "telacd_session_commit_seconds": "histogram",
    "telacd_store_commits": "counter",
    "telacd_store_commit_seconds": "counter",
    "telacd_store_location_rows": "counter",
    "telacd_store_location_batches": "counter",
    "telacd_store_location_seconds": "counter",
    "telacd_store_location_batch_rows": "histogram",
    "telacd_store_pending": "gauge",
    "telacd_store_shed": "counter",
    "telacd_store_errors": "counter",
    "telacd_gps_reports": "counter",
    "telacd_gps_shed": "counter",
    "telacd_unacked_alerts": "counter",
    "telacd_agents": "gauge",
    "telacd_agent_connections": "gauge",
    "telacd_feed_connections": "gauge",
    "telacd_loop_lag_seconds": "histogram",
}


class Scrape:
    def __init__(self, text: str) -> None:
        self.types: dict[str, str] = {}
        self.samples: dict[tuple[str, tuple], float] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for s in family.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(http: str) -> Scrape:
    async with aiohttp.ClientSession() as s, s.get(f"http://{http}/metrics") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        return Scrape(await r.text())


def emergency(**changes) -> dict:
    q = copy.deepcopy(config.DEFAULT_QUEUES[0])
    q.update(changes)
    return q


async def test_families_are_present_with_their_types(tmp_path):
    async with api_gateway(tmp_path) as (_gw, ep, _api):
        m = await scrape(ep.http)
        missing = {name for name in FAMILIES if name not in m.types}
        assert not missing, f"missing families: {sorted(missing)}"
        wrong = {name: m.types[name] for name, kind in FAMILIES.items() if m.types[name] != kind}
        assert not wrong, wrong
        # label sets are there before any traffic for the fixed ones
        assert ("telacd_offers_total", (("outcome", "timeout"),)) in m.samples
        assert ("telacd_agents", (("state", "logged_out"),)) in m.samples
        assert m("telacd_queue_depth", queue="emergency@default") == 0


async def test_counters_move_with_traffic(tmp_path):
    overrides = dict(
        queues=[emergency(offer_timeout_s=0.3)],
        store={"location_queue_max": 50, "location_flush_ms": 50},
        terminals={"max_frames_per_s": 100000},
    )
    async with api_gateway(tmp_path, **overrides) as (gw, ep, _api):
        before = await scrape(ep.http)
        t = await online_terminal(ep)

        # an SOS waits: it is in the queue depth and the open sessions by state and kind
        assert await t.report(alarm=SOS) == 0
        waiting = await scrape(ep.http)
        assert waiting("telacd_queue_depth", queue="emergency@default") == 1
        assert waiting("telacd_sessions_open", state="waiting", kind="sos") == 1
        assert waiting("telacd_queue_longest_wait_seconds", queue="emergency@default") > 0

        # the first agent lets the offer time out; the next candidate takes it
        alice = await connect("ws", http=ep.http, path="/agent")
        await agent_login(alice, "alice", "alice-token")
        await alice.expect("offer")
        await alice.expect("offer_withdrawn")
        bob = await connect("tcp", tcp=ep.agent_tcp)
        await agent_login(bob, "bob", "bob-token")
        offer = await bob.expect("offer")
        await bob.send({"type": "accept", "offer": offer["offer"]})
        sid = (await bob.expect("assigned"))["session"]
        busy = await scrape(ep.http)
        assert busy("telacd_sessions_open", state="assigned", kind="sos") == 1
        assert busy("telacd_agents", state="busy") == 1 and busy("telacd_agent_connections") == 2
        await bob.send({"type": "complete", "session": sid})
        await bob.expect("completed")

        # a malformed frame, then a burst of GPS larger than the location queue: acknowledged, and shed counted
        bad = bytearray(t.conn.heartbeat()[1])
        bad[-2] ^= 0x55
        await t.send(bytes(bad))
        now = device_now()
        burst = [
            t.conn.report_location(lat=22.5 + i / 1e4, lon=114.0, device_time=now)[1] for i in range(300)
        ]
        await t.send(b"".join(burst))
        acks = 0
        while acks < 300:
            e = await t.next_event()
            if type(e).__name__ == "Acknowledged" and e.message.body.reply_id == 0x0200:
                assert e.message.body.result == 0
                acks += 1

        async def written() -> bool:
            await gw.store.flush_locations()
            return gw.store.stats.pending == 0

        await until(written)
        after = await scrape(ep.http)

        def delta(name: str, **labels: str) -> float:
            return after(name, **labels) - before(name, **labels)

        assert delta("telacd_connections_total") == 1 and after("telacd_connections_open") == 1
        assert delta("telacd_frames_total", msg_id="0x0200") >= 302
        assert delta("telacd_frames_total", msg_id="0x0102") == 1  # the authentication
        assert delta("telacd_malformed_frames_total", kind="checksum") == 1
        # one 0x8001 per report, the SOS's after its commit
        assert delta("telacd_acks_total") == 302 and delta("telacd_acks_deferred_total") == 1
        assert delta("telacd_sessions_created_total", kind="sos") == 1
        assert delta("telacd_sessions_closed_total", state="completed") == 1
        assert after("telacd_sessions_open", state="assigned", kind="sos") == 0
        assert delta("telacd_offers_total", outcome="offered") == 2
        assert delta("telacd_offers_total", outcome="timeout") == 1
        assert delta("telacd_offers_total", outcome="accepted") == 1
        assert delta("telacd_crash_to_offer_seconds_count") == 1
        assert 0 < after("telacd_crash_to_offer_seconds_sum") < 5
        assert delta("telacd_session_commit_seconds_count") >= 6  # created+queued, offered x2, assigned, ...
        assert delta("telacd_store_commits_total") >= 6 and delta("telacd_store_commit_seconds_total") > 0
        stored, shed = delta("telacd_gps_reports_total"), delta("telacd_gps_shed_total")
        assert shed > 0 and stored + shed == 302  # every report is either stored or counted as shed
        assert delta("telacd_store_location_rows_total") == stored
        assert delta("telacd_store_location_batches_total") >= 1
        assert delta("telacd_store_location_batch_rows_count") >= 1
        assert after("telacd_store_location_batch_rows_sum") >= stored
        assert delta("telacd_store_shed_total") <= shed
        assert after("telacd_store_pending") == 0
        assert after("telacd_loop_lag_seconds_count") > 0
        await alice.close()
        await bob.close()
        await t.close()
        await asyncio.sleep(0)


async def test_crash_to_offer_counts_vehicle_alarms_only(tmp_path):
    # a chat from an app and a one-key service call wait for an agent; neither is an alarm's latency
    async with api_gateway(tmp_path) as (gw, ep, api):
        t = await online_terminal(ep)
        chat = await api.post("/api/sessions", {"channel": "chat", "queue": "service"}, expect=201)
        assert await t.service_call("请帮我预约保养") == 0
        await asyncio.sleep(0.3)  # both wait: nobody is logged in
        bob = await connect("ws", http=ep.http, path="/agent")
        await agent_login(bob, "bob", "bob-token")
        offered = {(await bob.expect("offer"))["session"]["id"] for _ in range(2)}
        assert chat["id"] in offered and len(offered) == 2
        m = await scrape(ep.http)
        assert m("telacd_crash_to_offer_seconds_count") == 0 and gw.metrics.crash_to_offer.count == 0
        assert gw.metrics.snapshot()["crash_to_offer_ms"] == {"p50": None, "p99": None}  # dashboard, demo

        # a vehicle's SOS is what it measures
        alice = await connect("ws", http=ep.http, path="/agent")
        await agent_login(alice, "alice", "alice-token")
        assert await t.report(alarm=SOS) == 0
        assert (await alice.expect("offer"))["session"]["kind"] == "sos"
        m = await scrape(ep.http)
        assert m("telacd_crash_to_offer_seconds_count") == 1
        assert 0 < m("telacd_crash_to_offer_seconds_sum") < 0.3
        await alice.close()
        await bob.close()
        await t.close()
