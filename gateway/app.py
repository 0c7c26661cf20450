"""The gateway: components wired together, listeners started, background duties kept.

``Gateway(cfg)`` builds every component; ``await gw.start()`` opens the store,
recovers open sessions and starts listening; ``await gw.stop()`` closes the
listeners, flushes queued locations and closes the store. Components reach
each other through this object (``gw.store``, ``gw.sessions``, ``gw.routing``,
``gw.agents``, ``gw.feed``, ``gw.terminals``, ``gw.downlink``, ``gw.metrics``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from aiohttp import web

from protocols.jt808.bits import get_profile
from protocols.jt808.messages import ITEM_NAMES, Location

from . import config as config_mod
from .agents import AgentHub
from .config import Config
from .downlink import Downlink
from .feed import FeedHub
from .http import build_app, start_tcp_channels
from .metrics import Collector, Metrics
from .routing import Routing
from .sessions import SessionManager
from .store import make_store
from .tcu import OverloadPolicy, TcuProtocol
from .terminals import Terminals

log = logging.getLogger("telacd")


def zone_offset(text: str) -> int:
    sign = -1 if text[0] == "-" else 1
    return sign * (int(text[1:3]) * 3600 + int(text[4:6]) * 60)


class Gateway:
    def __init__(self, cfg: Config, *, config_path: str | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.loop = asyncio.get_running_loop()
        self.started = time.time()
        self.metrics = Metrics()
        s = cfg.store
        self.store = make_store(
            s["url"],
            sync=s["sync"],
            location_batch=s["location_batch"],
            location_flush_ms=s["location_flush_ms"],
            location_queue_max=s["location_queue_max"],
            pool_size=s["pool_size"],
            commit_timeout_s=s["commit_timeout_s"],
        )
        self.feed = FeedHub(self.store)
        self.tcu_rcvbuf = cfg.terminals["rcvbuf"]
        self.configure(cfg)
        self.overload = OverloadPolicy(self)
        self.terminals = Terminals(self)
        self.downlink = Downlink(self)
        self.sessions = SessionManager(self)
        self.agents = AgentHub(self)
        self.routing = Routing(self)
        self._servers: list[Any] = []
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task] = set()
        self._duties: list[asyncio.Task] = []
        # called with the configuration running after each reload (the owner of workers passes it on)
        self.reload_hooks: list[Callable[[Config], None]] = []
        self.ready = False
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(Collector(self.metrics, self._extra_metrics))

    def configure(self, cfg: Config) -> None:
        """(Re)derive what the hot path reads from the configuration."""
        self.cfg = cfg
        t = cfg.terminals
        base = get_profile(t["model"]) if t["model"] else get_profile("default")
        self.profile = base.with_options(zone_offset_s=zone_offset(t["device_zone"]))
        self.zone = dt.timezone(dt.timedelta(seconds=self.profile.zone_offset_s))
        self.max_frames_per_s = t["max_frames_per_s"]
        self.alarm_triggers = sorted(
            ((tr.alarm_bit, tr) for tr in cfg.triggers if tr.alarm_bit is not None), key=lambda x: x[0]
        )
        self.trigger_mask = 0
        for bit, _ in self.alarm_triggers:
            self.trigger_mask |= 1 << bit
        self.passthrough_triggers = {
            tr.passthrough_type: tr for tr in cfg.triggers if tr.passthrough_type is not None
        }
        self.agent_specs = {a.id: a for a in cfg.agents}
        self.subscribers = {s.id: s for s in cfg.subscribers}
        self.admins = {a.token: a for a in cfg.admins}

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.cfg
        await self.store.open()
        await self.feed.start()
        await self.terminals.load()
        await self.downlink.load()
        self.routing.apply(cfg)
        counts = await self.sessions.recover()
        if counts["requeued"] or counts["restored"]:
            log.info("recovered %d waiting and %d assigned sessions", counts["requeued"], counts["restored"])
        await self._listen()
        self._duties = [
            self.loop.create_task(self._every(1.0, self.terminals.flush), name="terminal-flush"),
            self.loop.create_task(self._every(5.0, self.downlink.expire), name="command-expiry"),
            self.loop.create_task(self.sessions.watch_unresolved(), name="unresolved-sessions"),
            self.loop.create_task(self._lag_monitor(), name="loop-lag"),
        ]
        self.ready = True

    async def _listen(self) -> None:
        cfg = self.cfg
        addr = cfg.address("tcp")
        if addr is not None:
            self._servers.append(await self.start_tcu_server(addr.host, addr.port))
        app = build_app(self)
        # a short shutdown: open WebSockets (agents, subscribers) are closed by stop() first
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        http = cfg.address("http")
        site = web.TCPSite(self._runner, http.host, http.port, reuse_address=True)
        await site.start()
        a = cfg.address("agent_tcp")
        if a is not None:
            self._servers.append(await start_tcp_channels(self, a.host, a.port, self._agent_channel))
        f = cfg.address("feed_tcp")
        if f is not None:
            self._servers.append(await start_tcp_channels(self, f.host, f.port, self._feed_channel))
        q = cfg.address("quic")
        if q is not None:
            from .quic import start_quic_server

            self._servers.append(await start_quic_server(self, q.host, q.port))

    async def start_tcu_server(self, host: str, port: int, *, reuse_port: bool = False) -> Any:
        return await self.loop.create_server(
            lambda: TcuProtocol(self),
            host,
            port,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=4096,
        )

    async def _agent_channel(self, channel: Any) -> None:
        await self.agents.serve(channel)

    async def _feed_channel(self, channel: Any) -> None:
        self.metrics.feed_connections += 1
        try:
            await self.feed.serve(channel, self.subscribers)
        finally:
            self.metrics.feed_connections -= 1

    async def stop(self) -> None:
        self.ready = False
        self.routing.stop()  # no offer or escalation timer may fire into a closing store
        for t in self._duties:
            t.cancel()
        for s in self._servers:
            s.close()
        for v in list(self.terminals.vehicles.values()):
            if v.conn is not None:
                v.conn.close()
        for ch in list(self.agents.channels.values()):
            ch.close()
        self.feed.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
        for t in list(self._tasks):
            t.cancel()
        await self.terminals.flush()
        await self.store.close()

    # -- helpers used across components -----------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task:
        """A background task whose failure is logged, not lost."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, what))
        return task

    def _done(self, task: asyncio.Task, what: str) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed: %r", what, task.exception())

    async def _every(self, period: float, fn: Any) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await fn()
            except Exception as e:  # a duty must keep running
                log.warning("%s: %r", getattr(fn, "__name__", fn), e)

    async def _lag_monitor(self) -> None:
        period = 0.05
        while True:
            t0 = self.loop.time()
            await asyncio.sleep(period)
            lag = max(0.0, self.loop.time() - t0 - period)
            self.metrics.loop_lag.observe(lag)
            self.overload.update(lag)

    def location_row(self, phone: str, loc: Location, recv: float) -> tuple:
        t = loc.device_time
        t = recv if t is None else t - self.profile.zone_offset_s
        extra = None
        if loc.item_ids:
            extra = _items_json(loc)
        return (
            phone,
            float(t),
            recv,
            loc.lat,
            loc.lon,
            loc.altitude,
            loc.speed_kmh,
            loc.direction,
            loc.alarm,
            loc.status,
            extra,
        )

    def store_locations(self, rows: list[tuple]) -> None:
        n = len(rows)
        accepted = self.store.add_locations(rows)
        self.metrics.gps_reports += accepted
        if accepted < n:
            self.metrics.gps_shed += n - accepted

    def position_json(self, loc: Location, recv: float, version: int = 2013) -> dict[str, Any]:
        t = loc.device_time
        out: dict[str, Any] = {
            "lat": round(loc.lat, 6),
            "lon": round(loc.lon, 6),
            "speed_kmh": loc.speed_kmh,
            "direction": loc.direction,
            "altitude_m": loc.altitude,
            "time": _iso(t, self.zone) if t is not None else None,
            "received": _iso_utc(recv),
            "positioned": bool(loc.status & 2),
        }
        return out

    def _extra_metrics(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        st = self.store.stats
        yield CounterMetricFamily("telacd_store_commits", "session commits", value=st.commits)
        yield CounterMetricFamily(
            "telacd_store_commit_batches", "commit transactions (group commit)", value=st.commit_batches
        )
        yield CounterMetricFamily(
            "telacd_store_commit_seconds", "time in commit transactions", value=st.commit_seconds
        )
        yield CounterMetricFamily(
            "telacd_store_location_rows", "location rows written", value=st.location_rows
        )
        yield CounterMetricFamily(
            "telacd_store_location_seconds", "time writing locations", value=st.location_seconds
        )
        yield CounterMetricFamily(
            "telacd_store_location_batches", "location batches written", value=st.location_batches
        )
        yield CounterMetricFamily("telacd_store_shed", "location rows shed by the store queue", value=st.shed)
        yield CounterMetricFamily("telacd_store_errors", "failed store writes (retried)", value=st.errors)
        yield GaugeMetricFamily(
            "telacd_store_pending", "location rows waiting for the writer", value=st.pending
        )
        sizes = list(st.location_batch_sizes)
        from .metrics import BATCH_BUCKETS

        buckets, acc = [], 0
        for b in BATCH_BUCKETS:
            acc = sum(1 for x in sizes if x <= b)
            buckets.append((str(b), acc))
        buckets.append(("+Inf", len(sizes)))
        yield HistogramMetricFamily(
            "telacd_store_location_batch_rows",
            "rows per location batch (recent batches)",
            buckets=buckets,
            sum_value=sum(sizes),
        )
        states: dict[tuple[str, str], int] = {}
        for s in self.sessions.open.values():
            states[(s.state, s.kind)] = states.get((s.state, s.kind), 0) + 1
        g = GaugeMetricFamily(
            "telacd_sessions_open", "open sessions by state and kind", labels=["state", "kind"]
        )
        for (state, kind), n in sorted(states.items()):
            g.add_metric([state, kind], n)
        yield g
        depth = GaugeMetricFamily("telacd_queue_depth", "tasks waiting, by engine queue", labels=["queue"])
        wait = GaugeMetricFamily(
            "telacd_queue_longest_wait_seconds", "longest current wait", labels=["queue"]
        )
        for name, q in self.routing.router.stats(self.routing.now()).items():
            depth.add_metric([name], q.get("depth", 0))
            wait.add_metric([name], q.get("longest_wait_s", 0.0) or 0.0)
        yield depth
        yield wait
        agents = GaugeMetricFamily("telacd_agents", "agents by state", labels=["state"])
        counts: dict[str, int] = {}
        for a in self.routing.router.agents(self.routing.now()):
            counts[a["state"]] = counts.get(a["state"], 0) + 1
        for state, n in sorted(counts.items()):
            agents.add_metric([state], n)
        yield agents

    async def reload(self, cfg: Config) -> dict[str, Any]:
        """Apply a new configuration, except what needs a restart (``config.RESTART_ONLY``).

        Queues, agents, triggers, subscribers, admins, [sessions], [tenants] and [terminals] (but rcvbuf)
        are taken from ``cfg``; [gateway] (listeners) and [store] keep their running values, and every
        such key that differs is named in ``restart_needed_for`` (compared with what runs, so a second
        reload still reports it). No connection is dropped; agents no longer configured are logged out
        (their sessions re-queued). ``reload_hooks`` are then called with the configuration now running.
        """
        restart = config_mod.restart_needed(self.cfg, cfg)
        cfg = config_mod.keep_running(self.cfg, cfg)
        self.configure(cfg)
        self.terminals.configure()
        self.overload.configure()
        self.routing.apply(cfg)
        for aid in list(self.agents.channels):
            if aid not in self.agent_specs:
                ch = self.agents.channels.get(aid)
                if ch is not None:
                    ch.send(
                        {
                            "type": "error",
                            "code": "removed",
                            "message": "agent removed by a configuration reload",
                        }
                    )
                    ch.close()
        for hook in self.reload_hooks:
            hook(cfg)
        if restart:
            log.warning("reload: not applied until a restart: %s", ", ".join(restart))
        return {
            "queues": [q.name for q in cfg.queues],
            "agents": [a.id for a in cfg.agents],
            "triggers": [t.kind for t in cfg.triggers],
            "restart_needed_for": restart,
        }


def _iso(device_time: int, zone: dt.timezone) -> str:
    naive = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=device_time)
    return naive.replace(tzinfo=zone).isoformat()


def _iso_utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# item id -> the key it is stored under: the standard name, else the hex id
_ITEM_KEYS = tuple(ITEM_NAMES.get(i) or f"0x{i:02x}" for i in range(256))


def _hex(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    raise TypeError(f"{type(value).__name__} is not an item value")


def _items_json(loc: Location, keys: tuple = _ITEM_KEYS, dumps: Any = orjson.dumps) -> str:
    """The additional items of a report, JSON, standard ones by name (numbers as sent, raw bytes as hex).

    Once per stored report, so it leaves the loop to orjson: tuples are arrays
    there, and only raw values come back to ``_hex``.
    """
    return dumps(dict(zip([keys[i] for i in loc.item_ids], loc.item_values)), default=_hex).decode()
