"""``telacd bench dashboard``: what the live dashboard costs the gateway's event loop.

The dashboard shares the loop with the TCU hot path, so its once-a-second work must stay
small at fleet sizes the gateway is built for. This builds a gateway in memory (no
listeners, no store traffic) with ``--vehicles`` known vehicles (every one with a last
position, spread over China), ``--sessions`` open sessions with alert positions,
``--agents`` logged-in agents and the default queues, and times:

* ``tick_ms``: one full tick while somebody watches — drain the inbox, sample the
  metrics, build the snapshot and serialise it once for every viewer (median of
  ``--repeat``), and ``snapshot_bytes``, what each viewer receives per second;
  ``first_tick_ms`` is the tick right after the fleet grew to that size at once (the
  fleet sample takes in every new vehicle; a real fleet connects over minutes);
* ``locate_miss_us`` / ``locate_hit_us``: placing a session's position in a region,
  first sight of a 0.01° cell (point-in-polygon over the shipped outline) and again;
* ``listener_us``: the feed listener, which runs inside the session-commit callback.

    telacd bench dashboard --json
    telacd bench dashboard --vehicles 1000 10000 100000 --repeat 15
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import time
from typing import Any

import orjson


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vehicles", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument(
        "--sessions", type=int, default=300, help="open sessions (the list shows 300 at most)"
    )
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def main(args: argparse.Namespace) -> int:
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
    else:
        for row in result["fleets"]:
            print(
                f"{row['vehicles']:>7} vehicles: tick {row['tick_ms']:.2f} ms, {row['snapshot_bytes']} bytes"
            )
        print(f"locate: miss {result['locate_miss_us']:.0f} µs, hit {result['locate_hit_us']:.2f} µs; "
              f"listener {result['listener_us']:.2f} µs")  # fmt: skip
    return 0


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from gateway import config
    from gateway.app import Gateway
    from gateway.dashboard import Dashboard, Regions
    from gateway.sessions import Session, new_session_id
    from gateway.store import EventRow
    from protocols.jt808.messages import make_location

    rnd = random.Random(1)
    raw = {
        "store": {"url": "sqlite:///:memory:"},
        "agents": [{"id": f"a{i:03d}", "token": "t", "skills": {"emergency": 5, "service": 5}}
                   for i in range(args.agents)],
        "admins": [{"id": "ops", "token": "ops", "role": "admin"}],
    }  # fmt: skip
    cfg = config.build(raw, "<bench>", {})
    gw = Gateway(cfg)
    gw.routing.apply(cfg)
    now = gw.routing.now()
    for a in cfg.agents:
        gw.routing.router.login(a.id, now)
    dash = Dashboard(gw)

    def point() -> tuple[float, float]:
        return rnd.uniform(21.0, 45.0), rnd.uniform(98.0, 125.0)

    # open sessions, as sessions._open_or_merge makes them (not routed: no store behind this gateway)
    for i in range(args.sessions):
        lat, lon = point()
        t = time.time() - rnd.uniform(0, 600)
        s = Session(id=new_session_id(t), kind=rnd.choice(["crash", "sos", "service"]), channel="voice",
                    tenant="default", queue="emergency", klass="sos", priority=200, state="waiting",
                    created_at=t, arrival=t, updated_at=t, phone=f"0139{i:08d}",
                    data={"vehicle": {"phone": f"0139{i:08d}", "plate": f"B{i:05d}"},
                          "position": {"lat": lat, "lon": lon}, "alarms": ["emergency"]})  # fmt: skip
        gw.sessions.open[s.id] = s

    fleets = []
    made = 0
    for n in sorted(args.vehicles):
        while made < n:
            lat, lon = point()
            v = gw.terminals.vehicle(f"0138{made:08d}")
            v.last_loc = make_location(lat, lon, device_time=0)
            v.last_recv = time.time()
            made += 1
        for c in range(2):  # as if two viewers were connected: one snapshot serves both
            dash.clients.add(_Viewer(c))  # type: ignore[arg-type]
        t0 = time.perf_counter()
        dash.tick()  # the first tick after the fleet grew takes in the new vehicles (FleetSample)
        first = time.perf_counter() - t0
        times, size = [], 0
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            dash.tick()
            times.append(time.perf_counter() - t0)
            size = len(orjson.dumps(dash.snapshot()))
        dash.clients.clear()
        fleets.append({"vehicles": n, "tick_ms": round(statistics.median(times) * 1000, 3),
                       "tick_ms_max": round(max(times) * 1000, 3), "first_tick_ms": round(first * 1000, 3),
                       "snapshot_bytes": size})  # fmt: skip

    regions = Regions.load()
    pts = [point() for _ in range(300)]
    t0 = time.perf_counter()
    for lat, lon in pts:
        regions.locate(lat, lon)
    miss = (time.perf_counter() - t0) / len(pts)
    t0 = time.perf_counter()
    for _ in range(20):
        for lat, lon in pts:
            regions.locate(lat, lon)
    hit = (time.perf_counter() - t0) / (20 * len(pts))

    row = EventRow(1, "S1", "created", time.time(), {"position": {"lat": 22.5, "lon": 114.0}}, "default",
                   "emergency", "crash")  # fmt: skip
    k = 200_000
    t0 = time.perf_counter()
    for _ in range(k):
        dash._on_event(row)
    listener = (time.perf_counter() - t0) / k
    dash._inbox.clear()
    gw.feed.listeners.clear()
    return {
        "bench": "dashboard",
        "python": platform.python_version(),
        "engine_compiled": gw.routing.compiled,
        "sessions": args.sessions,
        "agents": args.agents,
        "fleets": fleets,
        "locate_miss_us": round(miss * 1e6, 1),
        "locate_hit_us": round(hit * 1e6, 3),
        "listener_us": round(listener * 1e6, 3),
    }


class _Viewer:
    """Stands in for a connected LiveClient: takes the serialised snapshot and drops it."""

    def __init__(self, n: int) -> None:
        self.token = "ops"
        self.n = n
        self.latest: str | None = None

    def offer(self, text: str) -> None:
        self.latest = text
