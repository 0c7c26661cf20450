"""The dashboard's data side without a browser: regions, rolling counts, queue folding, endpoints.

The endpoint tests run a real gateway in this process (real sockets and store) and drive it
the way the floor does: a vehicle raises an SOS, an agent accepts and completes it.
"""

from __future__ import annotations

import asyncio
import math

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from acd_core import erlang
from gateway import config
from gateway.dashboard import (
    DASHBOARD,
    ELSEWHERE,
    NOWHERE,
    FleetSample,
    Regions,
    Rolling,
    _sum_windows,
    aggregate_queues,
)
from tests.gateway.harness import ADMINS, make_config, running_gateway
from tests.gateway.test_e2e import SOS, online_terminal, open_agent

OPS = {"Authorization": "Bearer ops-token"}
WALL = {"Authorization": "Bearer wall-token"}


# -- regions ------------------------------------------------------------------------------------


def square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


SYNTHETIC = {
    "regions": [
        # A: 10..20 x 10..20 with a hole 14..16; B: 21..25 x 10..20 (a 1° strait between them)
        {"name": "A", "polygons": [[square(10, 10, 20, 20), square(14, 14, 16, 16)]]},
        {"name": "B", "polygons": [[square(21, 10, 25, 20)], [square(30, 30, 31, 31)]]},
    ]
}


@pytest.mark.parametrize(
    "lat, lon, region",
    [
        (12, 12, "A"),
        (15, 15, ELSEWHERE),  # in A's hole, and farther than 0.3° from any border
        (15, 14.1, "A"),  # in the hole but 0.1° from its edge: the nearest border is A's
        (12, 20.2, "A"),  # in the strait, nearer to A
        (12, 20.8, "B"),  # in the strait, nearer to B
        (30.5, 30.5, "B"),  # B's second polygon
        (12, 26, ELSEWHERE),
        (-40, -150, ELSEWHERE),
    ],
)
def test_regions_locate_inside_holes_and_near(lat, lon, region):
    regions = Regions(SYNTHETIC)
    assert regions.locate_exact(lat, lon) == region


def test_regions_cache_answers_for_the_cell_centre():
    regions = Regions(SYNTHETIC, cell_deg=0.5)
    # 20.1 is in the cell 20.0..20.5 whose centre (20.25) is nearer to A than to B
    assert regions.locate(12.1, 20.45) == "A" == regions.locate_exact(12.25, 20.25)
    assert regions.locate(12.1, 20.55) == "B"  # next cell: centre 20.75


@pytest.fixture(scope="module")
def shipped() -> Regions:
    return Regions.load()


@pytest.mark.parametrize(
    "lat, lon, region",
    [
        (22.5431, 114.0579, "Guangdong"),  # Shenzhen, Futian
        (22.2819, 114.1582, "Hong Kong"),  # Central
        (22.22, 113.52, "Macao"),  # inside its coarse 1:50m outline, which Guangdong's also covers
        (39.9042, 116.4074, "Beijing"),
        (31.2304, 121.4737, "Shanghai"),
        (30.5728, 104.0668, "Sichuan"),  # Chengdu
        (43.8256, 87.6168, "Xinjiang"),  # Ürümqi
        (25.0330, 121.5654, "Taiwan"),  # Taipei
        (47.8864, 106.9057, "Mongolia"),  # Ulaanbaatar
        (21.0278, 105.8342, "Vietnam"),  # Hanoi
        (37.5665, 126.9780, "South Korea"),  # Seoul
        (0.0, -150.0, ELSEWHERE),  # the Pacific
    ],
)
def test_shipped_regions(shipped, lat, lon, region):
    assert shipped.locate(lat, lon) == region


# -- rolling window ---------------------------------------------------------------------------------


def test_rolling_counts_expire_exactly_even_out_of_order():
    r = Rolling(span=60)
    for t, key in [(0, "sos"), (10, "crash"), (20, "sos"), (5, "crash"), (30, "service")]:
        r.add(t, key)
    assert r.top() == [["crash", 2], ["sos", 2], ["service", 1]]  # ties by name
    r.expire(64)  # cutoff 4: only the entry at 0 falls out, the late-inserted 5 stays
    assert dict(r.counts) == {"crash": 2, "sos": 1, "service": 1} and len(r) == 4
    r.expire(65.5)  # cutoff 5.5: the entry at 5 goes too
    assert dict(r.counts) == {"crash": 1, "sos": 1, "service": 1}
    r.expire(1000)
    assert r.top() == [] and len(r) == 0


# -- fleet sample -----------------------------------------------------------------------------------


@given(cap=st.integers(1, 40), batches=st.lists(st.integers(0, 200), max_size=12))
def test_fleet_sample_is_an_even_stride_of_the_registry(cap, batches):
    registry: dict[str, int] = {}
    sample = FleetSample(cap=cap)
    for size in batches:
        for _ in range(size):
            registry[f"v{len(registry)}"] = len(registry)
        members = sample.update(registry)
        assert members == list(registry.values())[:: sample.stride]
        assert len(members) <= 2 * cap
        assert sample.stride == 1 or len(registry) > 2 * cap  # no thinning before it is needed


def test_fleet_sample_rescans_when_the_registry_shrinks():
    registry = {f"v{i}": i for i in range(10)}
    sample = FleetSample(cap=100)
    assert sample.update(registry) == list(range(10))
    del registry["v3"]
    registry["v10"] = 10
    del registry["v4"]
    assert sample.update(registry) == [0, 1, 2, 5, 6, 7, 8, 9, 10]


# -- folding engine queues onto configured queues -------------------------------------------------------


def window(offered=0, answered=0, abandoned=0, handled=0, sl=None, asa=None, aht=None, rate=0.0, span=900.0):
    return {"offered": offered, "answered": answered, "abandoned": abandoned, "handled": handled,
            "service_level": sl, "asa_s": asa, "aht_s": aht, "arrival_rate": rate, "span_s": span}  # fmt: skip


def engine_queue(depth, longest, staffed, win, classes):
    return {"window": win, "depth": depth, "longest_wait_s": longest, "staffed": staffed, "classes": classes}


def cls(depth, longest, win):
    return {"window": win, "depth": depth, "longest_wait_s": longest}


def queue_spec(name="emergency", classes=(("crash", 300, 10.0), ("sos", 200, 10.0))):
    return config.QueueSpec(
        name=name, tenant="*", strategy="most-skilled", skills={"emergency": 1}, order="priority",
        offer_timeout_s=15.0, wrapup_s=0.0, max_no_answer=3, sticky_s=0.0, preempt_wrapup=False,
        aging_per_s=0.0, sl_threshold_s=10.0, escalation=(),
        classes=tuple(config.ClassSpec(n, p, t) for n, p, t in classes),
    )  # fmt: skip


def test_tenant_lines_fold_into_their_configured_queue():
    spec = queue_spec()
    a_crash = window(offered=6, answered=5, abandoned=1, handled=5, sl=0.5, asa=4.0, aht=100.0, rate=0.012)
    a_sos = window(offered=4, answered=4, handled=4, sl=1.0, asa=2.0, aht=50.0, rate=0.008)
    b_crash = window(offered=10, answered=10, handled=10, sl=1.0, asa=1.0, aht=70.0, rate=0.015)
    stats = {
        "emergency@oem-a": engine_queue(3, 12.0, 4, window(), {"crash": cls(2, 12.0, a_crash), "sos": cls(1, 3.0, a_sos)}),
        "emergency@oem-b": engine_queue(1, 30.0, 4, window(), {"crash": cls(1, 30.0, b_crash)}),
        "emergency~pool0": engine_queue(0, 0.0, 9, window(), {}),  # every agent: not staffing
        "service@oem-a": engine_queue(5, 99.0, 2, window(), {}),
    }  # fmt: skip
    # queue-level windows are the engine's sums over classes; use them as the engine does
    for name in ("emergency@oem-a", "emergency@oem-b"):
        wins = [c["window"] for c in stats[name]["classes"].values()]
        stats[name]["window"] = _sum_windows(wins)
    (row,) = aggregate_queues([spec], stats, {"emergency": 0.9})
    assert row["engine_queues"] == ["emergency@oem-a", "emergency@oem-b", "emergency~pool0"]
    assert row["depth"] == 4 and row["longest_wait_s"] == 30.0
    assert row["staffed"] == 4  # the pool's 9 are not counted
    w = row["window"]
    assert (w["offered"], w["answered"], w["abandoned"], w["handled"]) == (20, 19, 1, 19)
    # SL from counts: crash A met 3 of 6 resolved, sos A 4 of 4, crash B 10 of 10
    assert w["service_level"] == pytest.approx(17 / 20)
    assert w["aht_s"] == pytest.approx((5 * 100 + 4 * 50 + 10 * 70) / 19)
    crash, sos = row["classes"]
    assert (crash["name"], crash["depth"], crash["longest_wait_s"]) == ("crash", 3, 30.0)
    assert crash["window"]["service_level"] == pytest.approx(13 / 16)
    assert (sos["depth"], sos["window"]["service_level"]) == (1, 1.0)

    # the prediction is Erlang C for the folded queue
    lam, aht = 0.035, w["aht_s"]  # 2.6 Erlangs on 4 agents
    p = row["predicted"]
    assert p["load_erlangs"] == pytest.approx(lam * aht)
    assert p["service_level"] == pytest.approx(erlang.service_level(4, lam * aht, aht, 10.0))
    assert p["agents_needed"] == erlang.agents_needed(lam * aht, aht, 10.0, 0.9)
    # a higher class never waits longer than a lower one
    assert crash["predicted"]["asa_s"] < sos["predicted"]["asa_s"]
    assert crash["predicted"]["service_level"] > sos["predicted"]["service_level"]


def test_single_class_prediction_is_erlang_c():
    spec = queue_spec("one", (("normal", 10, 10.0),))  # class target = the queue's threshold
    win = window(offered=30, answered=30, handled=30, sl=0.9, asa=5.0, aht=120.0, rate=0.02)
    stats = {"one": engine_queue(0, 0.0, 4, win, {"normal": cls(0, 0.0, win)})}
    (row,) = aggregate_queues([spec], stats)
    a = 0.02 * 120.0
    expected = erlang.service_level(4, a, 120.0, 10.0)
    assert row["classes"][0]["predicted"]["service_level"] == pytest.approx(expected)
    assert row["predicted"]["service_level"] == pytest.approx(expected)
    assert row["classes"][0]["predicted"]["asa_s"] == pytest.approx(erlang.asa(4, a, 120.0))


def test_no_handled_tasks_means_no_prediction_and_overload_predicts_zero():
    spec = queue_spec("one", (("normal", 10, 20.0),))
    idle = window(offered=2, answered=2, sl=1.0, asa=1.0, rate=0.01)
    (row,) = aggregate_queues([spec], {"one": engine_queue(0, 0.0, 2, idle, {"normal": cls(0, 0.0, idle)})})
    assert (
        row["predicted"]["service_level"] is None and row["classes"][0]["predicted"]["service_level"] is None
    )
    busy = window(offered=100, answered=50, handled=50, sl=0.2, asa=60.0, aht=300.0, rate=0.1)
    (row,) = aggregate_queues([spec], {"one": engine_queue(9, 80.0, 2, busy, {"normal": cls(9, 80.0, busy)})})
    assert row["predicted"]["service_level"] == 0.0 and row["predicted"]["asa_s"] is None  # 30 Erlangs on 2
    assert row["classes"][0]["predicted"]["service_level"] == 0.0
    assert math.isfinite(row["predicted"]["load_erlangs"])


def test_a_queue_without_engine_statistics_is_listed_empty():
    (row,) = aggregate_queues([queue_spec()], {})
    assert row["depth"] == 0 and row["window"]["service_level"] is None and row["engine_queues"] == []


# -- the endpoints on a running gateway -----------------------------------------------------------------


async def get(http, url, headers=None):
    async with http.get(url, headers=headers or {}) as r:
        return (
            r.status,
            (await r.json() if r.content_type == "application/json" else await r.text()),
            r.headers,
        )


async def test_page_assets_and_auth(tmp_path):
    async with running_gateway(tmp_path) as (_gw, ep), aiohttp.ClientSession() as http:
        base = f"http://{ep.http}"
        status, body, headers = await get(http, base + "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        assert '<script type="module" src="/dashboard/js/main.js">' in body
        for asset in ("/dashboard/js/main.js", "/dashboard/js/map.js", "/dashboard/dashboard.css"):
            status, _, headers = await get(http, base + asset)
            assert status == 200, asset
        status, body, _ = await get(http, base + "/api/dashboard/map")
        assert status == 200 and len(body["regions"]) > 50 and "Natural Earth" in body["source"]

        status, body, headers = await get(http, base + "/api/dashboard")
        assert status == 401 and body["error"] == "unauthorized" and "Bearer" in headers["WWW-Authenticate"]
        status, body, _ = await get(http, base + "/api/dashboard", {"Authorization": "Bearer nope"})
        assert (status, body["message"]) == (401, "unknown token")
        status, body, _ = await get(http, base + "/api/dashboard?token=wall-token")
        assert status == 401  # a query token only where headers are impossible (the WebSocket)
        status, body, _ = await get(http, base + "/api/dashboard", WALL)
        assert status == 200 and body["viewer"] == {"id": "wall", "role": "viewer"}
        assert [q["name"] for q in body["queues"]] == ["emergency", "service"]
        assert {a["id"] for a in body["agents"]} == {"alice", "bob"}
        assert all(a["state"] == "logged_out" for a in body["agents"])
        status, body, _ = await get(http, base + "/api/dashboard/sessions/S-nope", OPS)
        assert (status, body["error"]) == (404, "not_found")

        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await http.ws_connect(base + "/api/dashboard/live?token=nope")
        assert e.value.status == 401


async def test_an_sos_on_the_board_from_alarm_to_disposition(tmp_path):
    async with running_gateway(tmp_path) as (_gw, ep), aiohttp.ClientSession() as http:
        base = f"http://{ep.http}"
        live = await http.ws_connect(base + "/api/dashboard/live?token=wall-token")
        first = await live.receive_json(timeout=5)
        assert first["type"] == "snapshot" and first["viewer"]["role"] == "viewer" and first["sessions"] == []

        agent = await open_agent(ep, "ws")
        t = await online_terminal(ep)
        assert await t.report(alarm=SOS) == 0
        offer = await agent.expect("offer")
        sid = offer["session"]["id"]

        # the live channel shows the session, the vehicle on the map and the agent offered
        async def next_with(pred, timeout=5.0):
            async with asyncio.timeout(timeout):
                while True:
                    snap = await live.receive_json()
                    if pred(snap):
                        return snap

        snap = await next_with(lambda s: any(x["id"] == sid for x in s["sessions"]))
        (row,) = [x for x in snap["sessions"] if x["id"] == sid]
        assert (row["kind"], row["plate"], row["phone"]) == ("sos", "粤B12345", "013800138000")
        assert (row["lat"], row["lon"]) == pytest.approx((22.543096, 114.057865))
        assert snap["map"]["vehicles"] == [[22.5431, 114.05787, 3]]  # online, with an open session
        assert snap["map"]["online"] == 1

        await agent.send({"type": "accept", "offer": offer["offer"]})
        await agent.expect("assigned")
        snap = await next_with(
            lambda s: any(a["id"] == "alice" and a["state"] == "busy" for a in s["agents"])
        )
        alice = next(a for a in snap["agents"] if a["id"] == "alice")
        assert alice["sessions"] == [sid] and alice["connected"] is True
        emergency = snap["queues"][0]
        assert emergency["window"]["answered"] == 1 and emergency["window"]["service_level"] == 1.0

        status, detail, _ = await get(http, f"{base}/api/dashboard/sessions/{sid}", WALL)
        assert status == 200 and detail["session"]["agent"] == "alice" and detail["session"]["open"] is True
        assert detail["vehicle"]["online"] is True and detail["vehicle"]["plate"] == "粤B12345"
        assert detail["trail"] and detail["trail"][-1][1:3] == pytest.approx([22.543096, 114.057865])
        assert [e["event"] for e in detail["events"]][:4] == ["created", "queued", "offered", "assigned"]

        await agent.send({"type": "complete", "session": sid, "disposition": "ambulance_sent"})
        await agent.expect("completed")
        snap = await next_with(lambda s: s["topics"]["dispositions"] and not s["sessions"])
        assert snap["topics"]["kinds"] == [["sos", 1]]
        assert snap["topics"]["dispositions"] == [["ambulance_sent", 1]]
        assert snap["regions"] == [["Guangdong", 1]]
        assert len(snap["ingest"]["spark"]) >= 1 and snap["ingest"]["connections_open"] == 1

        status, detail, _ = await get(http, f"{base}/api/dashboard/sessions/{sid}", OPS)
        assert detail["session"]["state"] == "completed" and detail["session"]["open"] is False
        assert detail["session"]["disposition"] == "ambulance_sent"
        await live.close()
        await agent.close()
        await t.close()

    # a restart keeps the last hour: the board is seeded from the store
    async with running_gateway(tmp_path) as (_gw, ep), aiohttp.ClientSession() as http:
        live = await http.ws_connect(f"http://{ep.http}/api/dashboard/live?token=ops-token")
        async with asyncio.timeout(5):
            while True:
                snap = await live.receive_json()
                if snap["topics"]["kinds"]:
                    break
        assert snap["topics"]["kinds"] == [["sos", 1]]
        assert snap["topics"]["dispositions"] == [["ambulance_sent", 1]]
        assert snap["regions"] == [["Guangdong", 1]]
        await live.close()


async def test_requests_from_other_channels_count_as_unlocated(tmp_path):
    async with running_gateway(tmp_path) as (gw, _ep):
        s, created = await gw.sessions.request(
            channel="chat", queue="service", tenant="default", kind="chat", klass=None,
            customer={"name": "Li"}, skills={}, data={}, idempotency_key=None,
        )  # fmt: skip
        assert created
        dash = gw._runner.app[DASHBOARD]
        async with asyncio.timeout(5):  # until the commit is published and the backfill is in
            while True:
                dash.drain()
                snap = dash.snapshot()
                if snap["topics"]["kinds"]:
                    break
                await asyncio.sleep(0.02)
        assert snap["regions"] == [[NOWHERE, 1]] and snap["topics"]["kinds"] == [["chat", 1]]
        assert any(x["id"] == s.id and x["lat"] is None for x in snap["sessions"])


async def test_a_token_removed_by_a_reload_loses_its_live_view(tmp_path):
    async with running_gateway(tmp_path) as (gw, ep), aiohttp.ClientSession() as http:
        wall = await http.ws_connect(f"http://{ep.http}/api/dashboard/live?token=wall-token")
        ops = await http.ws_connect(f"http://{ep.http}/api/dashboard/live?token=ops-token")
        assert (await wall.receive_json(timeout=5))["viewer"]["id"] == "wall"
        raw = make_config(tmp_path, gateway=dict(gw.cfg.gateway), admins=[ADMINS[0]])
        await gw.reload(config.build(raw, "<test>", {}))
        async with asyncio.timeout(5):
            while (msg := await wall.receive()).type == aiohttp.WSMsgType.TEXT:
                pass
        assert msg.type == aiohttp.WSMsgType.CLOSE and wall.close_code == 4001
        assert (await ops.receive_json(timeout=5))["type"] == "snapshot"  # the other viewer stays
        await ops.close()
