"""``telacd serve --workers N``: N processes accept terminals on one port, one process owns the rest.

Why processes: one Python process runs on one core, and a gateway holding
100,000 vehicles needs more sockets than one process may open (RLIMIT_NOFILE).
Why one owner: the ACD's state for a queue has one writer (ARCHITECTURE.md
rule 4), and so do the event numbering, the feed and the agents' connections.

The split
=========

* **Workers** (``python -m gateway.workers``) each listen on the TCU port with
  SO_REUSEPORT, so the kernel spreads connections over them. A worker runs the
  same :class:`~gateway.tcu.TcuProtocol` as a single-process gateway, on a
  :class:`WorkerGateway` whose session manager, downlink and terminal store
  are proxies to the owner. It decodes, detects alarm edges, acknowledges
  locations, thins GPS storage under overload (its own
  :class:`~gateway.tcu.OverloadPolicy`) and keeps its vehicles' state.
* **The owner** (this process, :class:`Owner`) is a full
  :class:`~gateway.app.Gateway` without a TCP TCU listener: store, sessions,
  ACD, agents, feed, HTTP. It sees each vehicle held by a worker through a
  :class:`RemoteTerminal` in ``Vehicle.conn``, so duplicate logins, downlink
  commands and the offline command queue work unchanged.

The channel: one Unix socket per worker, length-prefixed msgpack maps (the
agent protocol's TCP framing, :mod:`protocols.agentwire`), key ``t`` naming
the message. Worker to owner: ``hello``, ``ready`` (it listens), ``alarm`` and ``service`` (answered
by ``done``), ``online``/``offline`` (a vehicle bound to or gone from a
connection), ``terminals`` (registrations and alarm state to store),
``answered``/``located`` (downlink answers), ``pos`` (live positions of
watched vehicles), ``media``, ``locs`` (location rows, SQLite only; answered
by ``locs_ok``) and ``metrics`` (counters every second). Owner to worker:
``welcome`` (configuration and every known terminal), ``done``, ``write`` and
``close`` (a connection's bytes or end), ``terminals`` (another worker's
registrations and alarm state), ``watch`` (vehicles whose sessions an agent
holds), ``pressure`` (the owner is late, behind with GPS or its commits are
slow: store less GPS)
and ``config`` (after a reload).

Persist, then acknowledge, across processes: a worker acknowledges an alert
only when the owner's ``done`` says its session is committed; a worker whose
channel breaks fails its waiting alerts (no acknowledgement: the vehicle
re-sends) and exits.

Locations: with SQLite only the owner writes, so workers ship rows to it in
batches, bounded by rows in flight (past ``location_queue_max`` a worker
sheds and counts, and the backlog feeds its overload policy). With
PostgreSQL each worker COPYs its own batches.

Known limit: a worker learns of registrations and alarm state made on other
workers through the owner, asynchronously. A vehicle that registers on one
worker and authenticates on another within that instant (``auth =
"registered"``) is refused once and retries.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import copy
import itertools
import logging
import os
import pickle
import secrets
import signal
import socket
import subprocess
import sys
from typing import Any

from protocols.agentwire import FrameDecoder, encode_frame
from protocols.jt808.connection import Connection, Role
from protocols.jt808.messages import Location

from . import alerttrace
from .app import Gateway
from .config import Config
from .metrics import Histogram, Metrics
from .store import StoreStats, TerminalRow, make_store
from .terminals import Terminals, Vehicle

log = logging.getLogger("telacd.workers")

MAX_FRAME = 1 << 28  # the welcome carries every known terminal
METRICS_PERIOD = 1.0
WATCH_PERIOD = 0.25


# -- the channel ----------------------------------------------------------------------------------


class Link(asyncio.Protocol):
    """One end of the owner-worker channel: ``send(msg)``, and ``on_message(msg)`` for each one received."""

    def __init__(self, on_message: Any, on_lost: Any = None) -> None:
        self.on_message = on_message
        self.on_lost = on_lost
        self.transport: Any = None
        self.decoder = FrameDecoder(MAX_FRAME)
        self.closed = False
        self.index = -1  # the worker's number (owner side)
        self.pid = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.decoder.receive_data(data)
        except Exception as e:  # a broken stream between our own processes: a bug; drop the link
            log.error("worker channel: %r", e)
            self.transport.close()
            return
        for msg in messages:
            if isinstance(msg, dict):
                try:
                    self.on_message(self, msg)
                except Exception:
                    log.exception("worker channel: handling %s", msg.get("t"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.on_lost is not None:
            self.on_lost(self)

    def send(self, msg: dict[str, Any]) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(encode_frame(msg))

    @property
    def backlog(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0


def _loc(loc: Any) -> list:
    return list(loc)


def _unloc(fields: list | None) -> Location | None:
    if fields is None:
        return None
    f = list(fields)
    f[9] = tuple(f[9])  # item values (msgpack turns tuples into lists)
    return Location(*f)


def _terminal_row(r: TerminalRow) -> list:
    return [
        r.phone,
        r.tenant,
        r.auth_code,
        r.registered_at,
        r.info,
        r.last_seen,
        r.last_position,
        r.last_alarm,
    ]


# -- metrics across processes ------------------------------------------------------------------------

GAUGES = frozenset({"connections_open", "overload", "agent_connections", "feed_connections"})
STORE_COUNTERS = ("location_rows", "location_batches", "location_seconds", "shed", "errors")


def metrics_snapshot(m: Metrics) -> dict[str, Any]:
    """A worker's counters, as plain data (``Counter`` keys stay ints or strings)."""
    out: dict[str, Any] = {}
    for k, v in vars(m).items():
        if k == "started" or isinstance(v, bool):
            continue
        if isinstance(v, int | float):
            out[k] = v
        elif isinstance(v, collections.Counter):
            out[k] = dict(v)
        elif isinstance(v, Histogram):
            out[k] = [list(v.counts), v.count, v.sum]
    return out


class MetricsMerger:
    """Adds what each worker reports since its previous report into the owner's counters.

    Gauges (connections open, overload) are added too, and taken back out when
    a worker's channel closes, so ``/metrics`` on the owner describes the
    whole gateway.
    """

    def __init__(self, metrics: Metrics, store_stats: StoreStats) -> None:
        self.m = metrics
        self.store_stats = store_stats
        self.last: dict[int, dict[str, Any]] = {}
        self.last_store: dict[int, dict[str, Any]] = {}

    def apply(self, worker: int, snap: dict[str, Any], store: dict[str, Any]) -> None:
        prev = self.last.get(worker, {})
        m = self.m
        for k, v in snap.items():
            cur = getattr(m, k, None)
            old = prev.get(k)
            if isinstance(cur, collections.Counter):
                for key, n in v.items():
                    d = n - (old or {}).get(key, 0)
                    if d:
                        cur[key] += d
            elif isinstance(cur, Histogram):
                ocounts, ocount, osum = old if old is not None else ([0] * len(v[0]), 0, 0.0)
                for i, (a, b) in enumerate(zip(v[0], ocounts)):
                    cur.counts[i] += a - b
                cur.count += v[1] - ocount
                cur.sum += v[2] - osum
            elif isinstance(cur, int | float) and not isinstance(cur, bool):
                setattr(m, k, cur + v - (old or 0))
        self.last[worker] = snap
        prev_store = self.last_store.get(worker, {})
        for k in STORE_COUNTERS:
            if k in store:
                setattr(self.store_stats, k, getattr(self.store_stats, k) + store[k] - prev_store.get(k, 0))
        self.last_store[worker] = store

    def forget(self, worker: int) -> None:
        """A worker is gone: its gauges no longer hold (its counters stay counted)."""
        prev = self.last.pop(worker, {})
        for k in GAUGES:
            if k in prev:
                setattr(self.m, k, getattr(self.m, k) - prev[k])
        self.last_store.pop(worker, None)


# -- the owner ---------------------------------------------------------------------------------------


class RemoteTerminal:
    """A vehicle's connection held by a worker, as the owner's ``Vehicle.conn``.

    It has what the owner's terminals and downlink use of a TcuProtocol:
    ``conn`` (an encoder for downlink commands), ``write``, ``close``,
    ``closed``, ``peer`` and ``vehicle``. Commands the owner encodes take
    serials from 0x8000 up, away from the worker's acknowledgements (from 0):
    the vehicle answers a command with its serial, and the worker passes the
    answer back here by phone and serial.
    """

    __slots__ = ("cid", "closed", "conn", "link", "peer", "phone", "vehicle")

    def __init__(self, link: Link, cid: int, phone: str, version: int, peer: str) -> None:
        self.link = link
        self.cid = cid
        self.phone = phone
        self.conn = _LazyEncoder(phone, version)
        self.closed = False
        self.peer = f"{peer} (worker {link.index})"
        self.vehicle: Any = None

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.link.send({"t": "write", "phone": self.phone, "cid": self.cid, "data": data})

    def close(self, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            self.link.send({"t": "close", "phone": self.phone, "cid": self.cid, "reason": reason})


class _LazyEncoder:
    """``RemoteTerminal.conn``: the version at once, a codec Connection only when a command is encoded.

    A hundred thousand vehicles rarely get a command each; a Connection apiece
    (with its frame decoder) would be most of the owner's memory for nothing.
    """

    __slots__ = ("_real", "phone", "version")

    def __init__(self, phone: str, version: int) -> None:
        self.phone = phone
        self.version = version
        self._real: Connection | None = None

    def __getattr__(self, name: str) -> Any:
        real = self._real
        if real is None:
            real = self._real = Connection(Role.PLATFORM, phone=self.phone, version=self.version)
            real._serial = 0x8000
        return getattr(real, name)


class Owner:
    """The owner process's side: a Gateway without a TCU listener, the channel, and the workers.

    ``await start()`` opens the store, recovers sessions, serves HTTP/agents/feed,
    then starts the workers and returns when each has said hello (so the TCU
    port accepts). ``await stop()`` stops the workers first (they flush their
    locations and terminal state through the channel), then the gateway.
    """

    def __init__(self, cfg: Config, config_path: str | None = None, *, uvloop: bool = True) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.n = cfg.gateway["workers"]
        self.uvloop = uvloop
        self.links: dict[int, Link] = {}
        self.procs: dict[int, subprocess.Popen] = {}
        self.gw: Any = None
        # an abstract Unix socket (Linux): nothing on disk for a killed owner to leave behind
        self.name = f"telacd-{os.getpid()}-{secrets.token_hex(4)}"
        self._server: Any = None
        self._hello: dict[int, asyncio.Future] = {}
        self._stopping = False
        self._tasks: list[asyncio.Task] = []
        self._watched: set[str] = set()
        self._ready = asyncio.Event()
        self.restarts = 0

    def owner_config(self) -> Config:
        cfg = copy.copy(self.cfg)
        cfg.gateway = {**self.cfg.gateway, "tcp": ""}  # the workers take the TCU port
        return cfg

    async def start(self, timeout: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        # the workers start first: their imports overlap with opening the store and recovering sessions;
        # each is welcomed once the gateway is ready (an alert needs the session manager)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind("\0" + self.name)
        listener.listen(64)
        self._server = await loop.create_unix_server(
            lambda: Link(self._on_message, self._on_lost), sock=listener
        )
        for i in range(self.n):
            self._spawn(i)
        self.gw = gw = Gateway(self.owner_config(), config_path=self.config_path)
        gw.reload_hooks.append(self._reloaded)  # POST /api/reload reaches the workers as SIGHUP does
        self.merger = MetricsMerger(gw.metrics, gw.store.stats)
        await gw.start()
        gw.cfg.gateway["tcp"] = self.cfg.gateway["tcp"]  # listened to by the workers; shown as configured
        self._ready.set()
        await asyncio.wait_for(asyncio.gather(*self._hello.values()), timeout)
        self._tasks = [
            loop.create_task(self._supervise(), name="worker-supervisor"),
            loop.create_task(self._watch_loop(), name="worker-watch"),
            loop.create_task(self._pressure_loop(), name="worker-pressure"),
        ]

    def _spawn(self, i: int) -> None:
        loop = asyncio.get_running_loop()
        self._hello[i] = loop.create_future()
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
        argv = [
            sys.executable,
            "-m",
            "gateway.workers",
            "--channel",
            self.name,
            "--owner-pid",
            str(os.getpid()),
            "--index",
            str(i),
            "--log-level",
            level if level in ("debug", "info", "warning", "error") else "warning",
        ]
        if not self.uvloop:
            argv.append("--no-uvloop")
        self.procs[i] = subprocess.Popen(argv, env=os.environ.copy())

    async def _supervise(self) -> None:
        """A worker that dies is started again (its vehicles reconnect to the others meanwhile)."""
        while not self._stopping:
            await asyncio.sleep(0.5)
            for i, p in list(self.procs.items()):
                if p.poll() is not None and not self._stopping:
                    log.error("worker %d exited with %s; starting it again", i, p.returncode)
                    self.restarts += 1
                    self._spawn(i)

    async def stop(self) -> None:
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15.0
        for p in self.procs.values():
            while p.poll() is None and loop.time() < deadline:
                await asyncio.sleep(0.05)  # keep serving their last messages (locations, terminal rows)
            if p.poll() is None:
                p.kill()
                p.wait()
        await asyncio.sleep(0)  # let the channels' last data be handled
        if self._server is not None:
            self._server.close()
        for link in list(self.links.values()):
            if link.transport is not None:
                link.transport.close()
        if self.gw is not None:
            await self.gw.stop()

    def broadcast(self, msg: dict[str, Any], but: Link | None = None) -> None:
        for link in self.links.values():
            if link is not but:
                link.send(msg)

    async def reload(self, cfg: Config) -> dict[str, Any]:
        return await self.gw.reload(cfg)

    def _reloaded(self, cfg: Config) -> None:
        """The owner's gateway applied a reload (SIGHUP or the API): the workers take what it now runs."""
        self.cfg = cfg
        self.broadcast({"t": "config", "config": pickle.dumps(cfg)})

    # messages from workers ---------------------------------------------------------------------

    def _on_lost(self, link: Link) -> None:
        if self.gw is None or link.index < 0:
            return
        if self.links.get(link.index) is link:
            del self.links[link.index]
        self.merger.forget(link.index)
        gw = self.gw
        # every vehicle this worker held is offline now
        for v in gw.terminals.vehicles.values():
            c = v.conn
            if type(c) is RemoteTerminal and c.link is link:
                c.closed = True
                v.conn = None

    def _on_message(self, link: Link, msg: dict[str, Any]) -> None:
        handler = getattr(self, "_m_" + msg["t"], None)
        if handler is None:
            log.warning("worker %d sent an unknown message %r", link.index, msg["t"])
            return
        handler(link, msg)

    def _m_hello(self, link: Link, msg: dict[str, Any]) -> None:
        if not self._ready.is_set():
            task = asyncio.get_running_loop().create_task(self._ready.wait())
            task.add_done_callback(lambda _: self._m_hello(link, msg))
            return
        link.index, link.pid = msg["index"], msg["pid"]
        old = self.links.get(link.index)
        if old is not None and old is not link:
            self._on_lost(old)
        self.links[link.index] = link
        terminals = [
            [v.phone, v.tenant, v.auth_code, v.registered_at, v.info, v.alarm]
            for v in self.gw.terminals.vehicles.values()
        ]
        link.send(
            {
                "t": "welcome",
                "config": pickle.dumps(self.cfg),
                "terminals": terminals,
                "watch": sorted(self._watched),
            }
        )

    def _m_ready(self, link: Link, msg: dict[str, Any]) -> None:
        """The worker listens on the TCU port."""
        fut = self._hello.get(link.index)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _m_alarm(self, link: Link, msg: dict[str, Any]) -> None:
        if alerttrace.ON:
            alerttrace.mark("owner", msg["phone"])
        gw = self.gw
        v = gw.terminals.vehicle(msg["phone"])
        rid = msg["id"]
        try:
            fut = gw.sessions.alarm_nowait(
                v, _unloc(msg["loc"]), msg["rising"], msg["version"], msg["ingress"], msg["recv"]
            )
        except Exception as e:
            link.send({"t": "done", "id": rid, "error": repr(e)})
            return
        fut.add_done_callback(lambda f: _reply(link, rid, f))

    def _m_service(self, link: Link, msg: dict[str, Any]) -> None:
        gw = self.gw
        v = gw.terminals.vehicle(msg["phone"])
        if msg.get("last") is not None:
            v.last_loc, v.last_recv = _unloc(msg["last"]), msg["last_recv"]
        trigger = next((t for t in gw.cfg.triggers if t.kind == msg["kind"]), None)
        rid = msg["id"]
        if trigger is None:
            link.send({"t": "done", "id": rid, "error": f"no trigger {msg['kind']!r}"})
            return
        task = gw.spawn(gw.sessions.service_call(v, trigger, msg["payload"], msg["ingress"]), "service call")
        task.add_done_callback(lambda f: _reply(link, rid, f))

    def _m_online(self, link: Link, msg: dict[str, Any]) -> None:
        proxy = RemoteTerminal(link, msg["cid"], msg["phone"], msg["version"], msg["peer"])
        v = self.gw.terminals.bind(msg["phone"], proxy)
        proxy.vehicle = v

    def _m_offline(self, link: Link, msg: dict[str, Any]) -> None:
        v = self.gw.terminals.vehicles.get(msg["phone"])
        if v is None:
            return
        c = v.conn
        if type(c) is RemoteTerminal and c.link is link and c.cid == msg["cid"]:
            c.closed = True
            v.conn = None  # the worker writes the terminal row; not marked dirty here

    def _m_terminals(self, link: Link, msg: dict[str, Any]) -> None:
        gw = self.gw
        rows = []
        for r in msg["rows"]:
            row = TerminalRow(*r)
            rows.append(row)
            v = gw.terminals.vehicle(row.phone)
            v.tenant = row.tenant or v.tenant
            v.auth_code = row.auth_code
            v.registered_at = row.registered_at
            v.info = row.info or None
            v.alarm = row.last_alarm
        self.broadcast({"t": "terminals", "rows": msg["rows"]}, but=link)
        gw.spawn(gw.store.save_terminals(rows), "save terminals (worker)")

    def _m_answered(self, link: Link, msg: dict[str, Any]) -> None:
        v = self.gw.terminals.vehicles.get(msg["phone"])
        self.gw.downlink.answered(v, msg["serial"], msg["reply_id"], msg["result"])

    def _m_located(self, link: Link, msg: dict[str, Any]) -> None:
        v = self.gw.terminals.vehicles.get(msg["phone"])
        if v is not None:
            self.gw.downlink.located(v, msg["serial"], _unloc(msg["loc"]), msg["version"])

    def _m_pos(self, link: Link, msg: dict[str, Any]) -> None:
        v = self.gw.terminals.vehicles.get(msg["phone"])
        if v is not None:
            v.last_loc, v.last_recv = _unloc(msg["loc"]), msg["recv"]
            self.gw.sessions.position_update(v, v.last_loc, v.last_recv)

    def _m_media(self, link: Link, msg: dict[str, Any]) -> None:
        v = self.gw.terminals.vehicles.get(msg["phone"])
        if v is not None:
            self.gw.sessions.media(v, _Media(msg))

    def _m_locs(self, link: Link, msg: dict[str, Any]) -> None:
        rows = [tuple(r) for r in msg["rows"]]
        n = len(rows)
        accepted = self.gw.store.add_locations(rows)
        if accepted < n:
            self.gw.metrics.gps_shed += n - accepted  # the worker counted them as reports already
        link.send({"t": "locs_ok", "n": n})

    def _m_metrics(self, link: Link, msg: dict[str, Any]) -> None:
        self.merger.apply(link.index, msg["m"], msg.get("store") or {})

    async def _pressure_loop(self) -> None:
        """The owner's own overload (late loop, GPS backlog, slow commits) is the workers' to relieve:
        they decide what GPS is stored, and with SQLite the owner writes all of it."""
        while True:
            await asyncio.sleep(0.05)
            if self.gw.overload.pressure:
                self.broadcast({"t": "pressure"})

    async def _watch_loop(self) -> None:
        """Tell workers which vehicles an agent is watching (they send those vehicles' positions)."""
        while True:
            await asyncio.sleep(WATCH_PERIOD)
            watched = {
                s.phone
                for s in self.gw.sessions.open.values()
                if s.phone and s.agent is not None and s.state == "assigned"
            }
            if watched != self._watched:
                self._watched = watched
                self.broadcast({"t": "watch", "phones": sorted(watched)})


class _Media:
    __slots__ = ("data", "event_code", "media_format", "media_id", "media_type")

    def __init__(self, msg: dict[str, Any]) -> None:
        self.media_id = msg["media_id"]
        self.media_type = msg["media_type"]
        self.media_format = msg["media_format"]
        self.event_code = msg["event_code"]
        self.data = msg["data"]


def _reply(link: Link, rid: int, fut: asyncio.Future) -> None:
    if fut.cancelled():
        link.send({"t": "done", "id": rid, "error": "cancelled"})
    elif fut.exception() is not None:
        link.send({"t": "done", "id": rid, "error": repr(fut.exception())})
    else:
        link.send({"t": "done", "id": rid})


def serve_with_workers(cfg: Config, config_path: str | None) -> int:
    """Run the owner and ``[gateway] workers`` worker processes until SIGTERM/SIGINT; SIGHUP reloads."""
    uvloop = asyncio.get_event_loop_policy().__class__.__module__.startswith("uvloop")
    return asyncio.run(_serve(cfg, config_path, uvloop))


async def _serve(cfg: Config, config_path: str | None, uvloop: bool) -> int:
    from .cmd_serve import describe, load_config
    from .store import StoreError

    owner = Owner(cfg, config_path, uvloop=uvloop)
    try:
        await owner.start()
    except (StoreError, OSError, TimeoutError) as e:
        print(f"telacd: cannot start: {e!r}", file=sys.stderr)
        await owner.stop()
        return 1
    for line in describe(cfg):
        log.info("%s", line)
    log.info(
        "workers    %d TCU acceptor processes (pids %s)",
        owner.n,
        ", ".join(str(p.pid) for p in owner.procs.values()),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def reload() -> None:
        new = load_config(config_path)
        if new is None:
            log.error("reload refused: the configuration has errors (still running the old one)")
            return
        new.gateway["workers"] = owner.n
        task = loop.create_task(owner.reload(new))
        task.add_done_callback(lambda t: log.info("reloaded: %s", t.result()) if not t.exception() else None)

    loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
    log.info("stopping")
    await owner.stop()
    return 0


# -- a worker -----------------------------------------------------------------------------------------


class _SessionsProxy:
    """What TcuProtocol asks of the session manager, forwarded to the owner."""

    def __init__(self, wg: WorkerGateway) -> None:
        self.wg = wg
        self._ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future] = {}

    def _request(self, msg: dict[str, Any]) -> asyncio.Future:
        link = self.wg.link
        if link.closed:
            raise ConnectionError("the owner process is gone")
        rid = next(self._ids)
        fut = self.wg.loop.create_future()
        self.pending[rid] = fut
        msg["id"] = rid
        link.send(msg)
        return fut

    def done(self, msg: dict[str, Any]) -> None:
        fut = self.pending.pop(msg["id"], None)
        if fut is None or fut.done():
            return
        if msg.get("error"):
            fut.set_exception(RuntimeError(f"owner: {msg['error']}"))
        else:
            fut.set_result(None)

    def fail_all(self) -> None:
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("the owner process is gone"))
        self.pending.clear()

    def alarm_nowait(self, v: Any, loc: Any, rising: int, version: int, ingress: float, recv: float) -> Any:
        return self._request(
            {
                "t": "alarm",
                "phone": v.phone,
                "loc": _loc(loc),
                "rising": rising,
                "version": version,
                "ingress": ingress,
                "recv": recv,
            }
        )

    async def alarm(self, v: Any, loc: Any, rising: int, version: int, ingress: float, recv: float) -> None:
        await self.alarm_nowait(v, loc, rising, version, ingress, recv)

    async def service_call(self, v: Any, trigger: Any, payload: bytes, ingress: float) -> None:
        last = _loc(v.last_loc) if v.last_loc is not None else None
        await self._request(
            {
                "t": "service",
                "phone": v.phone,
                "kind": trigger.kind,
                "payload": payload,
                "ingress": ingress,
                "last": last,
                "last_recv": v.last_recv,
            }
        )

    def position_update(self, v: Any, loc: Any, recv: float) -> None:
        self.wg.link.send({"t": "pos", "phone": v.phone, "loc": _loc(loc), "recv": recv})

    def media(self, v: Any, body: Any) -> None:
        self.wg.link.send(
            {
                "t": "media",
                "phone": v.phone,
                "media_id": body.media_id,
                "media_type": body.media_type,
                "media_format": body.media_format,
                "event_code": body.event_code,
                "data": bytes(body.data),
            }
        )


class _DownlinkProxy:
    """Answers to downlink commands go back to the owner, which sent the commands."""

    def __init__(self, wg: WorkerGateway) -> None:
        self.wg = wg

    def answered(self, vehicle: Any, reply_serial: int, reply_id: int, result: int) -> None:
        if vehicle is not None:
            self.wg.link.send(
                {
                    "t": "answered",
                    "phone": vehicle.phone,
                    "serial": reply_serial,
                    "reply_id": reply_id,
                    "result": result,
                }
            )

    def located(self, vehicle: Any, reply_serial: int, loc: Any, version: int) -> None:
        self.wg.link.send(
            {
                "t": "located",
                "phone": vehicle.phone,
                "serial": reply_serial,
                "loc": _loc(loc),
                "version": version,
            }
        )

    def online(self, vehicle: Any) -> None:
        """Queued commands are the owner's to deliver: it hears of the vehicle from WorkerTerminals.bind."""

    async def expire(self) -> int:
        return 0


class _Shipper:
    """SQLite: location rows go to the owner (the one writer) in batches, bounded by rows in flight."""

    def __init__(self, wg: WorkerGateway, batch: int, flush_ms: int, queue_max: int) -> None:
        self.wg = wg
        self.stats = StoreStats()
        self.batch = batch
        self.flush_s = flush_ms / 1000.0
        self.max = queue_max
        self.buf: list = []
        self.inflight = 0
        self._timer: Any = None

    def add_locations(self, rows: Any) -> int:
        n = len(rows)
        room = self.max - len(self.buf) - self.inflight
        if n > room:
            room = max(room, 0)
            self.stats.shed += n - room
            rows, n = rows[:room], room
            if not n:
                return 0
        self.buf.extend(rows)
        self.stats.pending = len(self.buf) + self.inflight
        if len(self.buf) >= self.batch:
            self.ship()
        elif self._timer is None:
            self._timer = self.wg.loop.call_later(self.flush_s, self.ship)
        return n

    def ship(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.buf or self.wg.link.closed:
            return
        rows, self.buf = self.buf, []
        self.inflight += len(rows)
        self.wg.link.send({"t": "locs", "rows": rows})

    def shipped(self, n: int) -> None:
        # the owner's store counts the rows it writes; here only what is still on its way
        self.inflight -= n
        self.stats.pending = len(self.buf) + self.inflight

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        self.ship()

    async def flush_locations(self) -> None:
        self.ship()


class WorkerStore:
    """The worker's ``gw.store``: locations to the shipper or its own PostgreSQL; terminal rows to the owner."""

    def __init__(self, wg: WorkerGateway, locations: Any) -> None:
        self.wg = wg
        self.locations = locations
        self.url = getattr(locations, "url", "owner")

    @property
    def stats(self) -> StoreStats:
        return self.locations.stats

    def add_locations(self, rows: Any) -> int:
        return self.locations.add_locations(rows)

    async def flush_locations(self) -> None:
        await self.locations.flush_locations()

    async def save_terminals(self, rows: Any) -> None:
        if rows:
            self.wg.link.send({"t": "terminals", "rows": [_terminal_row(r) for r in rows]})

    async def open(self) -> None:
        await self.locations.open()

    async def close(self) -> None:
        await self.locations.close()


class WorkerTerminals(Terminals):
    """Terminals that tell the owner when a vehicle binds to or leaves a connection here."""

    def bind(self, phone: str, proto: Any) -> Any:
        v = super().bind(phone, proto)
        self.gw.link.send(
            {"t": "online", "phone": phone, "cid": id(proto), "version": v.version, "peer": proto.peer}
        )
        return v

    def unbind(self, v: Any, proto: Any) -> None:
        if v.conn is proto:
            self.gw.link.send({"t": "offline", "phone": v.phone, "cid": id(proto)})
        super().unbind(v, proto)


class WorkerGateway(Gateway):
    """A Gateway that only holds TCU connections; the owner process does the rest."""

    def __init__(self, cfg: Config, link: Link, index: int) -> None:
        super().__init__(cfg)
        self.link = link
        self.index = index
        self.terminals = WorkerTerminals(self)
        self.sessions = _SessionsProxy(self)
        self.downlink = _DownlinkProxy(self)
        s = cfg.store
        if s["url"].startswith("sqlite:"):
            locations: Any = _Shipper(
                self, s["location_batch"], min(50, s["location_flush_ms"]), s["location_queue_max"]
            )
        else:
            locations = make_store(
                s["url"],
                location_batch=s["location_batch"],
                location_flush_ms=s["location_flush_ms"],
                location_queue_max=s["location_queue_max"],
                pool_size=3,
            )
        self.store = WorkerStore(self, locations)
        self.overload.backlog = lambda: self.store.stats.pending

    def apply_terminals(self, rows: list) -> None:
        vehicles = self.terminals.vehicles
        for phone, tenant, code, registered_at, info, alarm in rows:
            v = vehicles.get(phone)
            if v is None:
                v = vehicles[phone] = Vehicle(self.terminals, phone, tenant)
            v.auth_code, v.registered_at, v.info, v.alarm = code, registered_at, info, alarm

    def terminal_row(self, r: list) -> None:
        row = TerminalRow(*r)
        v = self.terminals.vehicle(row.phone)
        v.auth_code, v.registered_at, v.info = row.auth_code, row.registered_at, row.info or None
        if not v.online:  # a vehicle online here knows its alarm state better than another worker did
            v.alarm = row.last_alarm

    def watch(self, phones: list[str]) -> None:
        wanted = set(phones)
        for v in self.terminals.vehicles.values():
            if v.watchers and v.phone not in wanted:
                v.watchers = 0
        for p in wanted:
            self.terminals.vehicle(p).watchers = 1

    async def start(self) -> None:
        await self.store.open()
        addr = self.cfg.address("tcp")
        self._servers.append(await self.start_tcu_server(addr.host, addr.port, reuse_port=True))
        self._duties = [
            self.loop.create_task(self._every(1.0, self.terminals.flush), name="terminal-flush"),
            self.loop.create_task(self._lag_monitor(), name="loop-lag"),
            self.loop.create_task(self._report(), name="metrics-report"),
        ]
        self.ready = True

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(METRICS_PERIOD)
            self.send_metrics()

    def send_metrics(self) -> None:
        st = self.store.stats
        self.link.send(
            {
                "t": "metrics",
                "m": metrics_snapshot(self.metrics),
                "store": {k: getattr(st, k) for k in STORE_COUNTERS},
            }
        )

    async def stop(self) -> None:
        self.ready = False
        for t in self._duties:
            t.cancel()
        for s in self._servers:
            s.close()
        for v in list(self.terminals.vehicles.values()):
            if v.conn is not None:
                v.conn.close()
        await asyncio.sleep(0)  # connection_lost: offline messages, dirty terminals
        await self.terminals.flush()
        try:
            await asyncio.wait_for(self.store.close(), 10.0)
        except Exception as e:
            log.warning("worker %d: locations not all written at stop: %r", self.index, e)
        self.send_metrics()


async def worker_main(name: str, index: int) -> int:
    loop = asyncio.get_running_loop()
    welcome: asyncio.Future = loop.create_future()
    state: dict[str, Any] = {"gw": None}
    lost = asyncio.Event()

    def on_message(link: Link, msg: dict[str, Any]) -> None:
        t = msg["t"]
        gw = state["gw"]
        if t == "welcome":
            welcome.set_result(msg)
        elif t == "done":
            gw.sessions.done(msg)
        elif t == "locs_ok":
            gw.store.locations.shipped(msg["n"])
        elif t == "write" or t == "close":
            v = gw.terminals.vehicles.get(msg["phone"])
            proto = v.conn if v is not None else None
            if proto is None or id(proto) != msg["cid"]:
                return
            if t == "write":
                proto.write(msg["data"])
            else:  # the vehicle logged in again on another worker (the owner counted it)
                gw.terminals.unbind(v, proto)
                proto.vehicle = None
                proto.close(msg.get("reason", ""))
        elif t == "terminals":
            for row in msg["rows"]:
                gw.terminal_row(row)
        elif t == "watch":
            gw.watch(msg["phones"])
        elif t == "pressure":
            gw.overload.press()
        elif t == "config":
            cfg = pickle.loads(msg["config"])
            gw.configure(cfg)
            gw.terminals.configure()
            gw.overload.configure()

    def on_lost(link: Link) -> None:
        lost.set()
        if state["gw"] is not None:
            state["gw"].sessions.fail_all()

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect("\0" + name)
    _, link = await loop.create_unix_connection(lambda: Link(on_message, on_lost), sock=sock)
    link.send({"t": "hello", "index": index, "pid": os.getpid()})
    gone = loop.create_task(lost.wait())
    await asyncio.wait([welcome, gone], return_when=asyncio.FIRST_COMPLETED)
    gone.cancel()
    if not welcome.done():  # the owner died before it could welcome us
        log.error("worker %d: the owner process is gone; exiting", index)
        return 1
    msg = welcome.result()
    cfg = pickle.loads(msg["config"])
    gw = WorkerGateway(cfg, link, index)
    state["gw"] = gw
    gw.apply_terminals(msg["terminals"])
    gw.watch(msg.get("watch") or [])
    await gw.start()
    link.send({"t": "ready"})
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    waiters = [loop.create_task(stop.wait()), loop.create_task(lost.wait())]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for w in waiters:
        w.cancel()
    if lost.is_set():
        log.error("worker %d: the owner process is gone; exiting", index)
        for s in gw._servers:
            s.close()
        return 1
    await gw.stop()
    await asyncio.sleep(0.05)
    link.transport.close()
    return 0


def _die_with_parent(owner: int) -> None:
    """Linux: SIGTERM when the owner dies, whatever it was doing (prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # elsewhere the closed channel is the only signal (see worker_main)
    if owner and os.getppid() != owner:  # orphaned before the line above
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description="one TCU worker process of telacd serve --workers N")
    parser.add_argument("--channel", required=True, help="the owner's abstract Unix socket name")
    parser.add_argument("--owner-pid", type=int, default=0, help="the owner's pid (exit if it is gone)")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    args = parser.parse_args()
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format=f"%(asctime)s %(levelname)s %(name)s[worker {args.index}]: %(message)s",
    )
    if not args.no_uvloop:
        import uvloop

        uvloop.install()
    # the owner handles Ctrl-C for the whole gateway; a worker stops when told (SIGTERM) or orphaned
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(args.owner_pid)
    sys.exit(asyncio.run(worker_main(args.channel, args.index)))


if __name__ == "__main__":
    main()
