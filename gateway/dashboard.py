"""The live operations dashboard: the page at ``/``, its data, and a live WebSocket.

What a call-centre floor sees on its big screen, and where each figure comes from:

* **queues** — ``router.stats(now)`` per *engine* queue, folded back onto the
  configured queue (``name@tenant`` and ``name~poolN`` are one line on the
  board, see gateway/routing.py). Service level is the engine's sliding window
  (answered within the class target / answered + abandoned); next to it the
  Erlang C prediction for the same window's arrival rate and handle time
  (:func:`aggregate_queues` says how the prediction is made per class);
* **agents** — ``router.agents(now)``: state and time in state;
* **active sessions** — ``gw.sessions.open``; a click asks
  ``GET /api/dashboard/sessions/{id}`` for the vehicle and its trail from the store;
* **map** — vehicles' last positions (``Vehicle.last_loc``) and alert positions
  of open sessions, drawn over an outline shipped in gateway/data/regions.json
  (Natural Earth; see the README there), which also defines the **regions**
  sessions are counted by: China's provincial-level divisions, Hong Kong, Macao,
  Taiwan and the neighbouring countries (:class:`Regions`);
* **hot topics** — session kinds, dispositions and service-call requests of the
  last hour, a rolling window fed by ``gw.feed.listeners`` (every committed
  event, in order);
* **ingest** — reports/s from ``metrics.gps_reports``, open connections, and
  the crash→offer p50/p99 as a sparkline sampled here once a second.

Cost on the gateway: the feed listener only appends to an inbox (it runs
inside the commit callback, next to the hot path); once a second one task
drains the inbox, locates new sessions (point-in-polygon, cached per 0.01°
cell), samples the metrics and, only while somebody watches, builds one
snapshot that every viewer shares. A viewer that reads slowly gets the newest
snapshot when it is ready, never a backlog.

Access: an ``[[admins]]`` token, as ``Authorization: Bearer`` on HTTP or
``?token=`` on the WebSocket (browsers cannot set headers there). Viewer
tokens see everything; the dashboard changes nothing, so there is nothing
for an admin token to add yet. The page and its assets are public (code, no data).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import itertools
import logging
import math
import pathlib
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSMsgType, web

from acd_core import erlang

from .auth import admin, json_error
from .routing import gateway_queue

if TYPE_CHECKING:
    from .app import Gateway
    from .config import QueueSpec
    from .store import EventRow

log = logging.getLogger("telacd.dashboard")

STATIC_DIR = pathlib.Path(__file__).with_name("static")
DATA_DIR = pathlib.Path(__file__).with_name("data")

HOUR = 3600.0
TICK_S = 1.0  # one snapshot a second: the floor reads it, nobody needs more
SPARK_POINTS = 180  # three minutes of one-second samples
LATENCY_WINDOW_S = 60.0  # each sparkline point is the percentile over the last minute
MAX_VEHICLES = 2000  # vehicle dots per update (up to twice this); larger fleets are sampled evenly
MAX_SESSIONS = 300  # rows in the active-sessions list (waiting first, most urgent first)
TRAIL_POINTS = 1500  # points of a trail sent to the page
BACKFILL_LIMIT = 20000  # sessions read from the store at start to seed the last hour

NOWHERE = "unlocated"  # a session with no position (app/web requests)
ELSEWHERE = "elsewhere"  # a position in no region and not near one
AGENT_STATES = ("available", "offered", "busy", "wrapup", "break", "disconnected", "logged_out")
SESSION_STATES = ("waiting", "offered", "assigned", "wrapup")

DASHBOARD: web.AppKey[Dashboard] = web.AppKey("dashboard")


# -- regions -------------------------------------------------------------------------------------


class Regions:
    """Region polygons from gateway/data/regions.json and a point locator over them.

    A point belongs to the region whose polygon contains it (even-odd rule, holes
    respected). A point in none of them — a car on a bridge or a ferry, a GPS fix a
    little off a 1:50m coastline — belongs to the nearest region whose border is
    within ``near_deg``, else to :data:`ELSEWHERE`. Answers are cached per cell of
    ``cell_deg`` (the cell's centre is located), so a fleet that stays in one city
    costs a dict lookup per session.
    """

    def __init__(self, doc: dict[str, Any], *, near_deg: float = 0.3, cell_deg: float = 0.01) -> None:
        self.near = near_deg
        self.cell = cell_deg
        self.names: list[str] = []
        self._shapes: list[
            tuple[tuple[float, float, float, float], list[list[list[tuple[float, float]]]]]
        ] = []
        for r in doc["regions"]:
            polys = [[[(p[0], p[1]) for p in ring] for ring in poly] for poly in r["polygons"]]
            xs = [p[0] for poly in polys for p in poly[0]]
            ys = [p[1] for poly in polys for p in poly[0]]
            self.names.append(r["name"])
            self._shapes.append(((min(xs), min(ys), max(xs), max(ys)), polys))
        self._cache: dict[tuple[int, int], str] = {}

    @classmethod
    def load(cls, path: pathlib.Path | None = None) -> Regions:
        return cls(orjson.loads((path or DATA_DIR / "regions.json").read_bytes()))

    def locate(self, lat: float, lon: float) -> str:
        key = (math.floor(lon / self.cell), math.floor(lat / self.cell))
        name = self._cache.get(key)
        if name is None:
            if len(self._cache) > 200_000:  # a fleet touring a continent: start over rather than grow
                self._cache.clear()
            name = self._cache[key] = self.locate_exact(
                (key[1] + 0.5) * self.cell, (key[0] + 0.5) * self.cell
            )
        return name

    def locate_exact(self, lat: float, lon: float) -> str:
        near = self.near
        best, best_d = ELSEWHERE, near
        kx = math.cos(math.radians(lat))  # degrees of longitude shrink towards the poles
        for name, ((x0, y0, x1, y1), polys) in zip(self.names, self._shapes):
            if not (x0 - near <= lon <= x1 + near and y0 - near <= lat <= y1 + near):
                continue
            inside_box = x0 <= lon <= x1 and y0 <= lat <= y1
            for poly in polys:
                if (
                    inside_box
                    and _inside(poly[0], lon, lat)
                    and not any(_inside(h, lon, lat) for h in poly[1:])
                ):
                    return name
                for ring in poly:  # holes too: a point in a lake is near its shore
                    d = _distance(ring, lon, lat, kx, best_d)
                    if d < best_d:
                        best, best_d = name, d
        return best


def _inside(ring: Sequence[tuple[float, float]], x: float, y: float) -> bool:
    """Even-odd ray casting: count the edges a ray to +x crosses."""
    inside = False
    px, py = ring[-1]
    for qx, qy in ring:
        if (qy > y) != (py > y) and x < (px - qx) * (y - qy) / (py - qy) + qx:
            inside = not inside
        px, py = qx, qy
    return inside


def _distance(ring: Sequence[tuple[float, float]], x: float, y: float, kx: float, limit: float) -> float:
    """Distance in degrees of latitude from (x, y) to the ring's border (``limit`` if not closer)."""
    best = limit * limit
    px, py = ring[-1]
    for qx, qy in ring:
        # edge and point in a local frame where one unit is one degree of latitude
        ax, ay = (px - x) * kx, py - y
        bx, by = (qx - x) * kx, qy - y
        dx, dy = bx - ax, by - ay
        seg = dx * dx + dy * dy
        t = 0.0 if seg == 0 else max(0.0, min(1.0, -(ax * dx + ay * dy) / seg))
        cx, cy = ax + t * dx, ay + t * dy
        d = cx * cx + cy * cy
        if d < best:
            best = d
        px, py = qx, qy
    return math.sqrt(best)


# -- rolling counts ------------------------------------------------------------------------------


class Rolling:
    """How often each key occurred in the last ``span`` seconds.

    ``add`` may be given slightly out-of-order times (the backfill from the store,
    commit times of concurrent sessions); those are inserted in place, so expiry
    stays exact while the common case stays an append.
    """

    def __init__(self, span: float = HOUR) -> None:
        self.span = span
        self._keys: collections.deque[str] = collections.deque()
        self._order: collections.deque[float] = collections.deque()
        self.counts: collections.Counter[str] = collections.Counter()

    def add(self, t: float, key: str) -> None:
        order, keys = self._order, self._keys
        if not order or t >= order[-1]:
            order.append(t)
            keys.append(key)
        else:
            i = bisect.bisect_right(order, t)
            order.insert(i, t)
            keys.insert(i, key)
        self.counts[key] += 1

    def expire(self, now: float) -> None:
        cutoff = now - self.span
        order, keys, counts = self._order, self._keys, self.counts
        while order and order[0] < cutoff:
            order.popleft()
            key = keys.popleft()
            counts[key] -= 1
            if counts[key] <= 0:
                del counts[key]

    def top(self, n: int = 8) -> list[list[Any]]:
        return [[k, c] for k, c in sorted(self.counts.items(), key=lambda kc: (-kc[1], kc[0]))[:n]]

    def __len__(self) -> int:
        return len(self._order)


# -- fleet sample --------------------------------------------------------------------------------


class FleetSample:
    """An evenly strided sample of at most ``cap``..``2·cap`` vehicles, kept up to date cheaply.

    Scanning 100,000 vehicles each second would stall the event loop for tens of
    milliseconds (every object is touched, and they are spread over memory). The
    registry only ever grows and a dict keeps insertion order, so the sample takes
    every ``stride``-th vehicle in insertion order and, on each call, only looks at
    the vehicles added since (read from the dict's end). When the sample passes
    twice the cap the stride doubles and every other member is dropped. A full
    rescan happens only if the registry shrank, or every ``rescan_s`` as hygiene.
    """

    def __init__(self, cap: int = MAX_VEHICLES, rescan_s: float = 600.0) -> None:
        self.cap = cap
        self.rescan_s = rescan_s
        self.stride = 1
        self.members: list[Any] = []
        self.seen = 0  # vehicles of the registry considered so far (a prefix in insertion order)
        self._scanned = time.monotonic()

    def update(self, vehicles: dict[str, Any]) -> list[Any]:
        n = len(vehicles)
        if n < self.seen or time.monotonic() - self._scanned > self.rescan_s:
            self.stride, self.members, self.seen = 1, [], 0
            self._scanned = time.monotonic()
        if n > self.seen:
            added = list(itertools.islice(reversed(vehicles.values()), n - self.seen))
            added.reverse()
            first = (-self.seen) % self.stride  # keep the stride across the seam
            self.members.extend(added[first :: self.stride])
            self.seen = n
            while len(self.members) > 2 * self.cap:
                self.members = self.members[::2]
                self.stride *= 2
        return self.members


# -- queues --------------------------------------------------------------------------------------


def aggregate_queues(
    specs: Iterable[QueueSpec], stats: dict[str, dict[str, Any]], sl_targets: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """One row per configured queue from the engine's per-engine-queue statistics.

    Counts add up; longest waits take the maximum; service levels are recomputed
    from the summed answered/abandoned counts (not averaged). The prediction is
    Erlang C for the queue as one M/M/N system: λ the summed arrival rate of the
    window, AHT the handle-time mean weighted by tasks handled, N the agents
    staffing it (the most any one tenant line has: agents of every tenant staff
    them all; shared escalation pools are left out, every agent is in those).

    Per class, the engine's priority classes share those N agents, so the mean
    wait of each class is Cobham's M/M/N non-preemptive priority formula
    (``erlang.priority_waits``, classes in configured order, highest first), and
    its service level is estimated as 1 − C·exp(−t·C/W): the conditional wait
    taken as exponential with the class's mean, which is exactly Erlang C's
    formula when there is a single class.
    """
    by_queue: dict[str, list[tuple[str, dict[str, Any]]]] = collections.defaultdict(list)
    for engine_name, st in stats.items():
        by_queue[gateway_queue(engine_name)].append((engine_name, st))
    rows = []
    for spec in specs:
        parts = by_queue.get(spec.name, [])
        lines = [st for name, st in parts if "~" not in name]
        win = _sum_windows([st["window"] for _, st in parts])
        staffed = max((st.get("staffed", 0) for st in lines), default=0)
        classes = []
        for c in spec.classes:
            cells = [st["classes"][c.name] for _, st in parts if c.name in st.get("classes", {})]
            cw = _sum_windows([x["window"] for x in cells])
            classes.append(
                {
                    "name": c.name,
                    "priority": c.priority,
                    "target_s": c.target_s,
                    "depth": sum(x["depth"] for x in cells),
                    "longest_wait_s": max((x["longest_wait_s"] for x in cells), default=0.0),
                    "window": cw,
                }
            )
        target = (sl_targets or {}).get(spec.name, 0.8)
        predicted = _predict(win, staffed, spec.sl_threshold_s, target, classes)
        rows.append(
            {
                "name": spec.name,
                "tenant": spec.tenant,
                "engine_queues": sorted(name for name, _ in parts),
                "depth": sum(st["depth"] for _, st in parts),
                "longest_wait_s": max((st["longest_wait_s"] for _, st in parts), default=0.0),
                "staffed": staffed,
                "sl_threshold_s": spec.sl_threshold_s,
                "sl_target": target,
                "window": win,
                "predicted": predicted,
                "classes": classes,
            }
        )
    return rows


def _sum_windows(wins: Sequence[dict[str, Any]]) -> dict[str, Any]:
    keys = ("offered", "answered", "abandoned", "handled")
    out: dict[str, Any] = {k: sum(w.get(k, 0) for w in wins) for k in keys}
    resolved = out["answered"] + out["abandoned"]
    met = sum((w.get("service_level") or 0.0) * (w.get("answered", 0) + w.get("abandoned", 0)) for w in wins)
    out["service_level"] = met / resolved if resolved else None
    waited = sum((w.get("asa_s") or 0.0) * w.get("answered", 0) for w in wins)
    out["asa_s"] = waited / out["answered"] if out["answered"] else None
    handle = sum((w.get("aht_s") or 0.0) * w.get("handled", 0) for w in wins)
    out["aht_s"] = handle / out["handled"] if out["handled"] else None
    out["arrival_rate"] = sum(w.get("arrival_rate", 0.0) for w in wins)
    out["span_s"] = max((w.get("span_s", 0.0) for w in wins), default=0.0)
    return out


def _predict(
    win: dict[str, Any], staffed: int, threshold: float, target: float, classes: list[dict[str, Any]]
) -> dict[str, Any]:
    lam, aht = win["arrival_rate"], win["aht_s"]
    if not aht or lam <= 0:
        for c in classes:
            c["predicted"] = {"service_level": None, "asa_s": None}
        return {
            "load_erlangs": 0.0,
            "p_wait": None,
            "service_level": None,
            "asa_s": None,
            "agents_needed": None,
        }
    a = lam * aht
    c_wait = erlang.erlang_c(staffed, a)
    waits = erlang.priority_waits(staffed, [c["window"]["arrival_rate"] for c in classes], aht)
    for c, w in zip(classes, waits):
        c["predicted"] = {"service_level": _class_sl(c_wait, w, c["target_s"]), "asa_s": _finite(w)}
    return {
        "load_erlangs": a,
        "p_wait": c_wait,
        "service_level": erlang.service_level(staffed, a, aht, threshold),
        "asa_s": _finite(erlang.asa(staffed, a, aht)),
        "agents_needed": erlang.agents_needed(a, aht, threshold, target),
    }


def _class_sl(c_wait: float, mean_wait: float, t: float) -> float:
    if not math.isfinite(mean_wait) or c_wait >= 1.0:
        return 0.0
    if c_wait <= 0.0 or mean_wait <= 0.0:
        return 1.0
    return 1.0 - c_wait * math.exp(-t * c_wait / mean_wait)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


# -- the dashboard -------------------------------------------------------------------------------


class LiveClient:
    """One WebSocket viewer: holds only the newest snapshot, sent when the socket is ready."""

    def __init__(self, ws: web.WebSocketResponse, token: str) -> None:
        self.ws = ws
        self.token = token
        self.latest: str | None = None
        self.wake = asyncio.Event()

    def offer(self, text: str) -> None:
        self.latest = text
        self.wake.set()

    async def pump(self) -> None:
        while not self.ws.closed:
            await self.wake.wait()
            self.wake.clear()
            text, self.latest = self.latest, None
            if text is not None:
                await self.ws.send_str(text)


class Dashboard:
    def __init__(self, gw: Gateway, regions: Regions | None = None) -> None:
        self.gw = gw
        self.regions = regions or Regions.load()
        self.kinds = Rolling()
        self.dispositions = Rolling()
        self.requests = Rolling()
        self.by_region = Rolling()
        self.fleet = FleetSample()
        self._inbox: collections.deque[EventRow] = collections.deque(maxlen=100_000)
        self._backfilled: set[str] = set()  # sessions whose creation the backfill counted
        self._backfilled_closed: set[str] = set()  # ... and whose end it counted
        self._backfill_until = 0.0
        self._seeded = False  # the inbox waits until the backfill is in, or it would count twice
        self.clients: set[LiveClient] = set()
        self.spark: collections.deque[list[Any]] = collections.deque(maxlen=SPARK_POINTS)
        self._last_reports = (time.monotonic(), gw.metrics.gps_reports)
        self.reports_per_s = 0.0
        self.ticks = 0
        self._task: asyncio.Task | None = None
        gw.feed.listeners.append(self._on_event)

    # -- inputs ------------------------------------------------------------------------------

    def _on_event(self, row: EventRow) -> None:
        """Feed listener: called inside the commit callback, so it only queues."""
        if row.event in ("created", "completed", "abandoned"):
            self._inbox.append(row)

    def drain(self) -> None:
        """Count what arrived since the last tick."""
        if not self._seeded:
            return
        inbox = self._inbox
        while inbox:
            row = inbox.popleft()
            d = row.data or {}
            if row.event == "created":
                if row.session not in self._backfilled:
                    self._count_created(row.at, row.kind, d.get("position"), d.get("request"))
            elif row.session in self._backfilled_closed:
                continue
            elif row.event == "completed":
                self.dispositions.add(row.at, str(d.get("disposition") or "(none)"))
            else:
                reason = d.get("reason")
                self.dispositions.add(row.at, "abandoned" if reason in (None, "abandoned") else "cancelled")

    def _count_created(self, t: float, kind: str, position: Any, request: Any) -> None:
        self.kinds.add(t, kind)
        region = NOWHERE
        if isinstance(position, dict) and position.get("lat") is not None:
            region = self.regions.locate(float(position["lat"]), float(position["lon"]))
        self.by_region.add(t, region)
        if isinstance(request, str) and request:
            self.requests.add(t, request[:60])

    async def backfill(self) -> None:
        """Seed the last hour from the store, so a restart does not blank the board.

        Sessions created in the last hour are counted, and the end (disposition) of those
        that ended in it. Events committed while the query runs may reach the inbox too:
        the sessions counted here are remembered for a minute so none is counted twice.
        """
        now = time.time()
        try:
            rows = await self.gw.store.list_sessions(since=now - HOUR, limit=BACKFILL_LIMIT)
        except Exception as e:  # the board still works, from now on
            log.warning("dashboard: last hour not read from the store: %r", e)
            self._seeded = True
            return
        for r in sorted(rows, key=lambda r: r.created_at):
            self._backfilled.add(r.id)
            self._count_created(r.created_at, r.kind, r.data.get("position"), r.data.get("request"))
        for r in sorted(rows, key=lambda r: r.closed_at or 0.0):
            if r.closed_at is not None and r.closed_at >= now - HOUR:
                self._backfilled_closed.add(r.id)
                if r.state == "completed":
                    self.dispositions.add(r.closed_at, r.disposition or "(none)")
                elif r.state in ("abandoned", "cancelled"):
                    self.dispositions.add(r.closed_at, "abandoned" if r.state == "abandoned" else "cancelled")
        # events of these sessions committed before the query may still be on their way to the inbox
        self._backfill_until = time.monotonic() + 60.0
        self._seeded = True

    def sample(self) -> None:
        """Once a tick: reports/s and the crash→offer percentiles for the sparkline."""
        m = self.gw.metrics
        t, n = time.monotonic(), m.gps_reports
        t0, n0 = self._last_reports
        if t > t0:
            self.reports_per_s = (n - n0) / (t - t0)
        self._last_reports = (t, n)
        p = m.crash_to_offer.percentiles((0.5, 0.99), window_s=LATENCY_WINDOW_S)
        self.spark.append(
            [
                round(time.time(), 1),
                _ms(p[0.5]),
                _ms(p[0.99]),
                round(self.reports_per_s, 1),
            ]
        )

    # -- the snapshot --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        gw = self.gw
        now_wall = time.time()
        for r in (self.kinds, self.dispositions, self.requests, self.by_region):
            r.expire(now_wall)
        mono = gw.routing.now()
        router = gw.routing.router
        targets = {}
        for name, qc in gw.routing.queue_configs.items():
            targets.setdefault(gateway_queue(name), qc.sl_target)
        sessions = self.sessions()
        m = gw.metrics
        return {
            "type": "snapshot",
            "name": gw.cfg.gateway["name"],
            "now": now_wall,
            "uptime_s": round(now_wall - gw.started, 1),
            "queues": aggregate_queues(gw.cfg.queues, router.stats(mono), targets),
            "agents": self.agents(mono),
            "sessions": sessions,
            "map": self.map_layer(),
            "regions": self.by_region.top(12),
            "topics": {
                "kinds": self.kinds.top(8),
                "dispositions": self.dispositions.top(8),
                "requests": self.requests.top(6),
                "sessions_last_hour": len(self.kinds),
            },
            "ingest": {
                "reports_per_s": round(self.reports_per_s, 1),
                "connections_open": m.connections_open,
                "gps_reports": m.gps_reports,
                "gps_shed": m.gps_shed,
                "sessions_created": sum(m.sessions_created.values()),
                "crash_to_offer_ms": self.spark[-1][1:3] if self.spark else [None, None],
                "spark": list(self.spark),
            },
        }

    def agents(self, mono: float) -> list[dict[str, Any]]:
        gw = self.gw
        order = {s: i for i, s in enumerate(AGENT_STATES)}
        out = []
        for a in gw.routing.router.agents(mono):
            spec = gw.agent_specs.get(a["id"])
            out.append(
                {
                    "id": a["id"],
                    "name": (spec.name if spec is not None else "") or a["id"],
                    "state": a["state"],
                    "reason": a["reason"],
                    "time_in_state_s": round(a["time_in_state"], 1),
                    "sessions": [str(t) for t in a["tasks"]],
                    "handled": a["handled"],
                    "offered": a["offered"],
                    "answered": a["answered"],
                    "connected": a["id"] in gw.agents.channels,
                }
            )
        out.sort(key=lambda a: (order.get(a["state"], len(order)), -a["time_in_state_s"], a["id"]))
        return out

    def sessions(self) -> list[dict[str, Any]]:
        order = {s: i for i, s in enumerate(SESSION_STATES)}
        # the floor's reading order: still waiting for an agent first, the most urgent class first, then age
        rows = sorted(
            self.gw.sessions.open.values(),
            key=lambda s: (order.get(s.state, 9) > 1, -s.priority, s.arrival),
        )
        out = []
        for s in rows[:MAX_SESSIONS]:
            d = s.data
            pos = d.get("position")
            located = isinstance(pos, dict) and pos.get("lat") is not None
            request = d.get("request")
            # one row a second per open session per viewer: only what the list and the map show
            out.append(
                {
                    "id": s.id,
                    "kind": s.kind,
                    "state": s.state,
                    "queue": gateway_queue(s.waiting_in) if s.waiting_in else s.queue,
                    "tenant": s.tenant,
                    "class": s.klass,
                    "arrival": round(s.arrival, 3),
                    "agent": s.agent,
                    "phone": s.phone,
                    "plate": (d.get("vehicle") or {}).get("plate"),
                    "lat": round(pos["lat"], 5) if located else None,
                    "lon": round(pos["lon"], 5) if located else None,
                    "alarms": d.get("alarms") or [],
                    "alerts": d.get("alerts", 1),
                    "request": request[:80] if isinstance(request, str) else None,
                }
            )
        return out

    def map_layer(self) -> dict[str, Any]:
        """Vehicle dots ``[lat, lon, flags]`` (flags: 1 online, 2 has an open session).

        Past :data:`MAX_VEHICLES` the fleet is sampled (:class:`FleetSample`), so a tick
        touches a few thousand vehicles whatever the fleet size; vehicles with open
        sessions are always drawn (found from the sessions, not by scanning the fleet).
        """
        gw = self.gw
        vehicles = gw.terminals.vehicles
        dots = []
        for v in self.fleet.update(vehicles):
            loc = v.last_loc
            if loc is not None and not v.sessions:
                dots.append([round(loc.lat, 5), round(loc.lon, 5), 1 if v.conn is not None else 0])
        seen = set()
        for s in gw.sessions.open.values():
            if s.phone in seen or not s.phone:
                continue
            seen.add(s.phone)
            v = vehicles.get(s.phone)
            if v is not None and v.last_loc is not None:
                loc = v.last_loc
                dots.append([round(loc.lat, 5), round(loc.lon, 5), 3 if v.conn is not None else 2])
        return {"vehicles": dots, "known": len(vehicles), "online": gw.metrics.connections_open,
                "sampled": self.fleet.stride > 1}  # fmt: skip

    # -- the tick --------------------------------------------------------------------------------

    async def run(self) -> None:
        await self.backfill()
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.tick()
            except Exception:  # the board must keep running whatever one tick hits
                log.exception("dashboard tick failed")

    def tick(self) -> None:
        self.ticks += 1
        if self._backfilled and time.monotonic() > self._backfill_until:
            self._backfilled.clear()
            self._backfilled_closed.clear()
        self.drain()
        self.sample()
        if not self.clients:
            return
        for c in list(self.clients):
            if self.gw.admins.get(c.token) is None:  # token removed by a reload: stop showing the floor
                self.gw.spawn(c.ws.close(code=4001, message=b"token revoked"), "close dashboard viewer")
                self.clients.discard(c)
        text = orjson.dumps(self.snapshot()).decode()
        for c in self.clients:
            c.offer(text)

    # -- HTTP ------------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        resp = web.FileResponse(STATIC_DIR / "index.html")
        resp.headers["Cache-Control"] = "no-cache"
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    async def map_data(self, request: web.Request) -> web.StreamResponse:
        resp = web.Response(body=(DATA_DIR / "regions.json").read_bytes(), content_type="application/json")
        resp.headers["Cache-Control"] = "public, max-age=3600"
        resp.enable_compression()
        return resp

    async def snapshot_http(self, request: web.Request) -> web.StreamResponse:
        who = admin(self.gw, request)
        self.drain()
        body = self.snapshot()
        body["viewer"] = {"id": who.id, "role": who.role}
        return _json(body)

    async def session_detail(self, request: web.Request) -> web.StreamResponse:
        admin(self.gw, request)
        gw = self.gw
        sid = request.match_info["sid"]
        s = gw.sessions.open.get(sid)
        row = s.row() if s is not None else await gw.store.get_session(sid)
        if row is None:
            raise json_error(404, "not_found", f"no session {sid}")
        now = time.time()
        events = await gw.store.session_events(sid)
        out: dict[str, Any] = {
            "now": now,
            "session": {
                "id": row.id,
                "kind": row.kind,
                "channel": row.channel,
                "state": row.state,
                "tenant": row.tenant,
                "queue": row.queue,
                "class": row.klass,
                "priority": row.priority,
                "created_at": row.created_at,
                "arrival": row.arrival,
                "closed_at": row.closed_at,
                "agent": row.agent,
                "disposition": row.disposition,
                "phone": row.phone,
                "open": s is not None,
            },
            "data": {k: v for k, v in row.data.items() if k not in ("trail", "skills")},
            "events": [
                {"seq": e.seq, "event": e.event, "at": e.at, "data": _event_brief(e.data)}
                for e in events[-60:]
            ],
            "vehicle": None,
            "trail": [],
        }
        if row.phone:
            out["vehicle"] = self.vehicle_json(row.phone, row.data.get("vehicle") or {})
            minutes = max(gw.cfg.sessions["trail_minutes"], 10.0)
            until = row.closed_at or now
            trail = await gw.store.trail(row.phone, row.created_at - minutes * 60, until, limit=20000)
            step = max(1, math.ceil(len(trail) / TRAIL_POINTS))
            picked = trail[::step]
            if trail and picked[-1] is not trail[-1]:
                picked.append(trail[-1])
            out["trail"] = [[r[1], round(r[3], 6), round(r[4], 6), r[6]] for r in picked]
        return _json(out)

    def vehicle_json(self, phone: str, stored: dict[str, Any]) -> dict[str, Any]:
        gw = self.gw
        v = gw.terminals.vehicles.get(phone)
        out: dict[str, Any] = {"phone": phone, **{k: val for k, val in stored.items() if k != "phone"}}
        if v is None:
            return out
        out["tenant"] = v.tenant
        out["online"] = v.online
        out["protocol"] = v.version
        if v.info:
            for key in ("plate", "plate_color", "maker", "model", "terminal_id", "province", "city"):
                if v.info.get(key) not in (None, ""):
                    out[key] = v.info[key]
        if v.last_loc is not None:
            out["position"] = gw.position_json(v.last_loc, v.last_recv)
            out["last_seen"] = v.last_recv
        out["open_sessions"] = sorted(v.sessions or ())
        return out

    async def live(self, request: web.Request) -> web.StreamResponse:
        who = admin(self.gw, request, allow_query=True)
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4096)
        await ws.prepare(request)
        client = LiveClient(ws, request.query.get("token", "") or _bearer(request))
        self.drain()
        first = self.snapshot()
        first["viewer"] = {"id": who.id, "role": who.role}
        client.offer(orjson.dumps(first).decode())
        self.clients.add(client)
        pump = asyncio.get_running_loop().create_task(client.pump())
        try:
            async for msg in ws:  # the page sends nothing; reading notices a close
                if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            self.clients.discard(client)
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
                await pump
            await ws.close()
        return ws

    # -- lifecycle -------------------------------------------------------------------------------

    async def on_startup(self, app: web.Application) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="dashboard")

    async def on_shutdown(self, app: web.Application) -> None:
        for c in list(self.clients):
            await c.ws.close(code=1001, message=b"gateway stopping")

    async def on_cleanup(self, app: web.Application) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(ValueError):
            self.gw.feed.listeners.remove(self._on_event)


# the page loads only its own scripts, styles and data: no CDN, nothing inline
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else ""


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 2)


def _event_brief(data: dict[str, Any]) -> dict[str, Any]:
    """Event data without the bulky parts (trails, whole vehicle records) for the timeline."""
    return {k: v for k, v in data.items() if k not in ("trail", "vehicle", "position", "customer", "data")}


def _json(body: Any) -> web.Response:
    resp = web.Response(body=orjson.dumps(body), content_type="application/json")
    resp.headers["Cache-Control"] = "no-store"
    return resp


def setup(app: web.Application, gw: Gateway) -> Dashboard:
    """Register the page, its assets and data endpoints on the gateway's HTTP app."""
    dash = Dashboard(gw)
    app[DASHBOARD] = dash
    app.router.add_get("/", dash.page)
    app.router.add_get("/api/dashboard", dash.snapshot_http)
    app.router.add_get("/api/dashboard/live", dash.live)
    app.router.add_get("/api/dashboard/map", dash.map_data)
    app.router.add_get("/api/dashboard/sessions/{sid}", dash.session_detail)
    app.router.add_static("/dashboard/", STATIC_DIR, append_version=False)
    app.on_startup.append(dash.on_startup)
    app.on_shutdown.append(dash.on_shutdown)
    app.on_cleanup.append(dash.on_cleanup)
    return dash
