"""``telacd bench gateway``: a fleet of simulated TCUs and a pool of simulated agents against a gateway.

It starts a gateway (``telacd serve --workers N`` on a generated configuration
and a fresh store) or targets a running one (``--target``), connects a fleet
of TCUs (:mod:`bench.fleet`, split over processes so that 100k sockets fit
under the 20,000-descriptor limit per process), agents that accept every
offer at once and complete at once (:mod:`bench.agents`), and a feed
subscriber that sees every session event. Then it measures a window:

* frames sent and acknowledged per second, and every acknowledgement's round
  trip (HDR histogram);
* every alarm from the moment the vehicle wrote its frame to the moment the
  offer for its session reached an agent's process (``crash_to_offer_ms``;
  with ``--agent-transport ws``, when the agent had read it): the fleet and
  the agents read the same monotonic clock, so the figure includes everything
  between the two sockets, both kernels' hand-overs and the gateway's
  persist-then-route included;
* sessions created, offered and assigned, seen on the feed;
* **lost sessions**: alarms acknowledged to a vehicle (0x8001 received) for
  which the feed never showed a session of that vehicle and kind being created
  or merged into (``updated``, reason ``repeat_alert``); must be 0;
* **duplicate offers**: a session offered to a second agent while the first
  offer was outstanding, or assigned twice (:class:`bench.agents.Observations`);
  must be 0;
* GPS reports the gateway shed (its ``telacd_gps_shed`` counter), and the
  gateway's CPU (cores busy on average) and memory (RSS summed over its
  processes; PSS too, from /proc/PID/smaps_rollup, which splits the pages the
  worker processes share).

Load modes: open loop at ``--rate`` frames/s (default: vehicles / report
interval), or ``--rate max``: closed loop, every vehicle keeping ``--window``
reports in flight, which is the most the gateway answers. ``--overload F``
first runs the closed loop to find the rate the gateway sustains (frames
acknowledged *and* stored per second), then offers F times that rate open
loop while alarms keep coming, and reports the overloaded window.
``--vs-ceiling`` first measures ``telacd bench ceiling`` with the same fleet
in the same run and adds ``ceiling_ratio`` (gateway acknowledged frames/s in
closed loop over the ceiling's).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from . import report
from .agents import AgentOptions, AgentPool
from .ceiling import CeilingServers, free_port, measure_closed_loop
from .clients import connect, subscribe
from .fleet import FleetOptions, make_fleet

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
ALARM_KINDS = ("crash", "sos", "rollover")
SUBSCRIBER = ("bench", "bench")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--vehicles", type=int, default=2000, help="simulated TCUs")
    a("--report-interval", type=float, default=1.0, help="seconds between a vehicle's reports (open loop)")
    a(
        "--rate",
        default="",
        help="offered frames/s open loop, or 'max' for the closed loop (default: vehicles / report interval)",
    )
    a(
        "--window",
        type=int,
        default=8,
        help="reports a vehicle keeps in flight (closed loop) or at most unanswered (open loop)",
    )
    a("--alarm-rate", type=float, default=2.0, help="crash/SOS/rollover alarms per second, fleet-wide")
    a("--service-rate", type=float, default=0.0, help="one-key service calls per second, fleet-wide")
    a("--ramp-up", type=float, default=None, help="seconds to connect the fleet (default: 1 s per 5000)")
    a("--warmup", type=float, default=2.0, help="seconds of load before each measured window")
    a("--duration", type=float, default=10.0, help="seconds measured")
    a(
        "--probe",
        type=float,
        default=6.0,
        help="--overload: seconds of closed loop to find the sustained rate",
    )
    a("--overload", type=float, default=0.0, metavar="F", help="offer F times the sustained rate")
    a("--vs-ceiling", action="store_true", help="also measure the bare ceiling server; add ceiling_ratio")
    a("--agents", type=int, default=20, help="simulated agents")
    a("--agent-transport", choices=("ws", "tcp"), default="tcp", help="agents over WebSocket or msgpack")
    a(
        "--transport",
        choices=("tcp", "quic"),
        default="tcp",
        help="TCU transport; quic: the gateway started here gets a QUIC listener with a throwaway certificate",
    )
    a("--workers", type=int, default=2, help="TCU acceptor processes of the gateway started here")
    a(
        "--store",
        default="sqlite",
        help=f"sqlite (a fresh file), pg (a fresh schema in {PG_DEFAULT}; pg?name=value adds a server "
        "setting, e.g. pg?synchronous_commit=off) or a store URL",
    )
    a(
        "--fleet-procs",
        type=int,
        default=None,
        help="fleet processes (0: this process; default: one per 15,000 vehicles, at least 1)",
    )
    a(
        "--fleet-nice",
        type=int,
        default=10,
        help="niceness of the fleet processes: the generator yields the CPU to the gateway (0: as the bench)",
    )
    a("--target", default="", metavar="HOST:PORT", help="TCU address of a running gateway (not started here)")
    a(
        "--http",
        default="",
        metavar="HOST:PORT",
        help="with --target: its HTTP address (agents, feed, metrics)",
    )
    a("--target-pid", type=int, default=0, help="with --target: its process id, for CPU and memory")
    a(
        "--agent-tcp",
        default="",
        metavar="HOST:PORT",
        help="with --target: its msgpack agent port (else WebSocket)",
    )
    a("--print-config", action="store_true", help="print the agents/subscriber a --target needs, and exit")
    a(
        "--gateway-option",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="extra configuration for the gateway started here (TOML value), repeatable",
    )
    a("--plot", default="", metavar="FILE.png", help="latency over time and its distribution")
    a("--timeline", action="store_true", help="include the per-second samples in the JSON")
    a("--json", action="store_true", help="print one JSON object")
    a("--quiet", action="store_true", help="no progress line")


# -- the gateway under test ------------------------------------------------------------------------


def agent_ids(n: int) -> list[tuple[str, str]]:
    return [(f"bench-{i}", "bench") for i in range(n)]


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


def config_toml(sections: dict[str, dict[str, Any]], agents: list[tuple[str, str]]) -> str:
    out = []
    for name, values in sections.items():
        out.append(f"[{name}]")
        out += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        out.append("")
    for aid, token in agents:
        out += [
            "[[agents]]",
            f"id = {_toml_value(aid)}",
            f"token = {_toml_value(token)}",
            'tenants = ["*"]',
            "skills = { emergency = 5, service = 5 }",
            "wrapup_s = 0.0",
            "",
        ]
    out += [
        "[[subscribers]]",
        f"id = {_toml_value(SUBSCRIBER[0])}",
        f"token = {_toml_value(SUBSCRIBER[1])}",
        "",
    ]
    return "\n".join(out)


def parse_options(items: list[str]) -> dict[str, dict[str, Any]]:
    import tomllib

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, _, value = item.partition("=")
        section, _, name = key.strip().partition(".")
        if not name:
            raise SystemExit(f"--gateway-option {item!r}: expected SECTION.KEY=VALUE")
        out.setdefault(section, {})[name] = tomllib.loads(f"v = {value.strip()}")["v"]
    return out


class GatewayUnderTest:
    """A ``telacd serve`` child on a generated configuration, or a running gateway (``--target``)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="telacd-bench-")
        self.proc: subprocess.Popen | None = None
        self.pg_url: str | None = None
        self.store_url = ""
        if args.target:
            self.tcp = args.target
            self.http = args.http or ""
            if not self.http:
                raise SystemExit("--target needs --http HOST:PORT (agents, feed and metrics)")
            self.agent_tcp = args.agent_tcp
            if args.agent_transport == "tcp" and not self.agent_tcp:
                args.agent_transport = "ws"  # the target's msgpack agent port was not given
        else:
            p = [free_port() for _ in range(4)]
            self.tcp, self.http = f"127.0.0.1:{p[0]}", f"127.0.0.1:{p[1]}"
            self.agent_tcp, self.feed_tcp = f"127.0.0.1:{p[2]}", f"127.0.0.1:{p[3]}"
            # QUIC is UDP: a free TCP port number is free enough for the listener's own check at start
            self.quic = f"127.0.0.1:{free_port()}" if args.transport == "quic" else ""

    @property
    def tcu(self) -> tuple[str, int]:
        """Where the fleet connects: the TCP listener, or the QUIC one with ``--transport quic``."""
        host, port = (self.quic or self.tcp).rsplit(":", 1)
        return host, int(port)

    async def start(self) -> None:
        if self.args.target:
            return
        a = self.args
        if a.store == "sqlite":
            self.store_url = f"sqlite:///{self.tmp}/bench.db"
        elif a.store.split("?", 1)[0] in ("pg", "postgresql"):
            from gateway.store.postgres import fresh_schema_url

            self.store_url = self.pg_url = await fresh_schema_url(PG_DEFAULT, prefix="telacd_bench")
            if "?" in a.store:  # e.g. pg?synchronous_commit=off: server settings for the store's connections
                self.store_url += "&" + a.store.split("?", 1)[1]
        else:
            self.store_url = a.store
        sections: dict[str, dict[str, Any]] = {
            "gateway": {
                "tcp": self.tcp,
                "http": self.http,
                "agent_tcp": self.agent_tcp,
                "feed_tcp": self.feed_tcp,
                "workers": a.workers,
            },
            "store": {"url": self.store_url},
            # the closed loop sends up to window x (acks/s per vehicle): do not let flood control measure itself
            "terminals": {"auth": "open", "max_frames_per_s": 5000},
        }
        if self.quic:
            from gateway.cmd_cert import write_pair

            cert, key = write_pair(os.path.join(self.tmp, "quic"), names=["localhost"], ips=["127.0.0.1"])
            sections["gateway"].update(quic=self.quic, quic_cert=str(cert), quic_key=str(key))
        for section, values in parse_options(a.gateway_option).items():
            sections.setdefault(section, {}).update(values)
        path = os.path.join(self.tmp, "telacd.toml")
        with open(path, "w") as f:
            f.write(config_toml(sections, agent_ids(a.agents)))
        self.log = open(os.path.join(self.tmp, "serve.log"), "ab")  # noqa: SIM115 - closed in stop()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("TELACD_") or k in ("TELACD_PURE_PYTHON", "TELACD_TRACE_ALERTS")
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", path, "--log-level", "warning"],
            stdout=self.log,
            stderr=self.log,
            env=env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited: {self.tail()}")
            with contextlib.suppress(OSError, aiohttp.ClientError):
                m = await self.metrics()
                host, port = self.tcp.rsplit(":", 1)
                if m and await _tcp_open(host, int(port)):
                    return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"the gateway did not start: {self.tail()}")

    def tail(self) -> str:
        try:
            with open(os.path.join(self.tmp, "serve.log"), "rb") as f:
                return f.read()[-3000:].decode(errors="replace")
        except OSError:
            return ""

    @property
    def pids(self) -> list[int]:
        if self.proc is not None:
            return report.process_tree(self.proc.pid)
        if self.args.target_pid:
            return report.process_tree(self.args.target_pid)
        return []

    async def metrics(self) -> dict[str, float]:
        """Every sample of /metrics, summed over labels, by name."""
        out: dict[str, float] = collections.defaultdict(float)
        async with aiohttp.ClientSession() as s, s.get(f"http://{self.http}/metrics") as r:
            text = await r.text()
        for line in text.splitlines():
            if not line or line[0] == "#":
                continue
            key, _, value = line.rpartition(" ")
            name = key.split("{", 1)[0]
            out[name] += float(value)
            if name.endswith("_bucket") and 'le="' in key:  # histograms: each bucket too
                le = key.split('le="', 1)[1].split('"', 1)[0]
                out[name + "|" + le] += float(value)
        return out

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.proc.wait, 30)
            except subprocess.TimeoutExpired:
                for pid in reversed(report.process_tree(self.proc.pid)):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None:
            self.log.close()
        if self.pg_url:
            from gateway.store.postgres import drop_schema_url

            with contextlib.suppress(Exception):
                await drop_schema_url(self.pg_url)
        shutil.rmtree(self.tmp, ignore_errors=True)


async def _tcp_open(host: str, port: int) -> bool:
    try:
        _, w = await asyncio.open_connection(host, port)
    except OSError:
        return False
    w.close()
    return True


# -- the feed: what sessions the gateway made ------------------------------------------------------


class FeedWatch:
    """Every session event on the feed, reduced to what the bench checks."""

    def __init__(self) -> None:
        self.created: dict[str, tuple[str, str]] = {}  # session -> (phone, kind)
        self.merged: list[str] = []  # sessions an alert was merged into (one entry per merge)
        self.offered: set[str] = set()
        self.assigned: set[str] = set()
        self.events = 0
        self.last_seq = 0
        self.task: asyncio.Task | None = None
        self.conn: Any = None

    async def start(self, http: str, after: int | None) -> None:
        self.conn = await connect("ws", http=http, path="/feed")
        await subscribe(self.conn, *SUBSCRIBER, after=after)
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            msg = await self.conn.recv()
            if msg is None:
                return
            if msg.get("type") != "event":
                continue
            self.events += 1
            self.last_seq = msg["seq"]
            sid, event, data = msg["session"], msg["event"], msg.get("data") or {}
            if event == "created":
                phone = (data.get("vehicle") or {}).get("phone", "")
                self.created[sid] = (phone, msg.get("kind", ""))
            elif event == "updated" and data.get("reason") == "repeat_alert":
                self.merged.append(sid)
            elif event == "offered":
                self.offered.add(sid)
            elif event == "assigned":
                self.assigned.add(sid)

    def seen(self) -> collections.Counter:
        """(phone, kind) -> alerts the gateway turned into a session or merged into one."""
        out: collections.Counter = collections.Counter(self.created.values())
        for sid in self.merged:
            key = self.created.get(sid)
            if key is not None:
                out[key] += 1
        return out

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.conn is not None:
            await self.conn.close()


# -- measuring ---------------------------------------------------------------------------------------


@dataclass
class Window:
    phase: str
    start: float = 0.0  # monotonic
    end: float = 0.0
    sent: int = 0
    acked: int = 0
    deferred: int = 0
    rtt: Any = field(default_factory=report.new_histogram)
    gps_shed: float = 0.0
    gps_reports: float = 0.0
    stored: float = 0.0
    connections: float = 0.0
    cpu_s: float = 0.0
    fleet_cpu_s: float = 0.0
    rss: int = 0
    pss: int = 0
    processes: int = 0
    loop_lag_p99_ms: float | None = None  # bucket bound, over every gateway process
    loop_lag_p95_ms: float | None = None
    commit_p99_ms: float | None = None  # session commits (bucket bound)
    inside_p99_ms: float | None = None  # the gateway's own alert-read -> offer-written (bucket bound)

    @property
    def seconds(self) -> float:
        return max(1e-9, self.end - self.start)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.monotonic()
        self.timeline = report.Timeline()
        self.tty = sys.stderr.isatty() and not args.quiet and not args.json
        self.quiet = args.quiet
        self._last_line = 0.0
        self.gut: GatewayUnderTest | None = None
        self.fleet: Any = None

    # progress -------------------------------------------------------------------------------

    def show(self, text: str, force: bool = False) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + text)
            sys.stderr.flush()
        elif force or now - self._last_line >= 5.0:
            self._last_line = now
            print(text, file=sys.stderr, flush=True)

    def end_line(self) -> None:
        if self.tty:
            sys.stderr.write("\n")

    # fleet ------------------------------------------------------------------------------------

    def fleet_options(self, host: str, port: int, *, alarms: bool) -> FleetOptions:
        a = self.args
        return FleetOptions(
            host=host,
            port=port,
            vehicles=a.vehicles,
            report_interval=a.report_interval,
            heartbeat_interval=max(30.0, a.report_interval * 2),
            alarm_rate=a.alarm_rate if alarms else 0.0,
            service_rate=a.service_rate if alarms else 0.0,
            ramp_up=a.ramp_up if a.ramp_up is not None else max(1.0, a.vehicles / 5000),
            register=False,
            transport=a.transport,
            window=a.window,
        )

    def fleet_procs(self) -> int:
        if self.args.fleet_procs is not None:
            return self.args.fleet_procs
        return max(1, math.ceil(self.args.vehicles / 15000))

    async def wait_online(self, fleet: Any, what: str, timeout: float) -> int:
        want = self.args.vehicles
        deadline = time.monotonic() + timeout
        while True:
            snap = await fleet.snapshot()
            self.show(f"{what}: {snap['online']:,}/{want:,} vehicles online, {snap['connect_errors']} errors")
            if snap["online"] >= want or time.monotonic() > deadline:
                return snap["online"]
            await asyncio.sleep(0.5)

    async def window(self, phase: str, seconds: float, *, record: bool = True) -> Window:
        """Measure ``seconds`` of whatever load is set; one sample per second for the timeline."""
        fleet, gut = self.fleet, self.gut
        w = Window(phase)
        a = await fleet.snapshot()
        m0 = await gut.metrics()
        u0 = report.usage(gut.pids)
        f0 = report.usage(fleet.pids)
        w.start = a["at"]
        prev, prev_m = a, m0
        end = w.start + seconds
        while True:
            await asyncio.sleep(max(0.0, min(1.0, end - time.monotonic())))
            snap = await fleet.snapshot()
            m = await gut.metrics()
            dt = max(1e-9, snap["at"] - prev["at"])
            w.rtt.add(snap["rtt"])
            shed = m.get("telacd_gps_shed_total", 0.0) - prev_m.get("telacd_gps_shed_total", 0.0)
            if record:
                self.timeline.add(
                    snap["at"] - self.t0,
                    phase,
                    (snap["sent"] - prev["sent"]) / dt,
                    (snap["acked"] - prev["acked"]) / dt,
                    snap["rtt"],
                    shed / dt,
                )
            s = report.summary_ms(snap["rtt"])
            self.show(
                f"{phase} {snap['at'] - w.start:4.0f}/{seconds:.0f}s | conn {m.get('telacd_connections_open', 0):,.0f}"
                f" | sent/s {(snap['sent'] - prev['sent']) / dt:,.0f} acked/s {(snap['acked'] - prev['acked']) / dt:,.0f}"
                f" | rtt p99 {s['p99'] if s['p99'] is not None else '-'} ms | alarms {snap['alarms_acked']}/"
                f"{snap['alarms_sent']} | shed/s {shed / dt:,.0f}"
            )
            prev, prev_m = snap, m
            if snap["at"] >= end:
                break
        u1 = report.usage(gut.pids)
        f1 = report.usage(fleet.pids)
        w.end = prev["at"]
        w.sent = prev["sent"] - a["sent"]
        w.acked = prev["acked"] - a["acked"]
        w.deferred = prev["deferred"] - a["deferred"]
        w.gps_shed = prev_m.get("telacd_gps_shed_total", 0.0) - m0.get("telacd_gps_shed_total", 0.0)
        w.gps_reports = prev_m.get("telacd_gps_reports_total", 0.0) - m0.get("telacd_gps_reports_total", 0.0)
        w.stored = prev_m.get("telacd_store_location_rows_total", 0.0) - m0.get(
            "telacd_store_location_rows_total", 0.0
        )
        w.connections = prev_m.get("telacd_connections_open", 0.0)
        w.cpu_s = u1["cpu_s"] - u0["cpu_s"]
        w.fleet_cpu_s = f1["cpu_s"] - f0["cpu_s"]
        w.rss, w.pss, w.processes = u1["rss"], u1["pss"], u1["processes"]
        lag = bucket_quantile(prev_m, m0, "telacd_loop_lag_seconds", 0.99)
        w.loop_lag_p99_ms = None if lag is None else round(lag * 1000, 1)
        lag = bucket_quantile(prev_m, m0, "telacd_loop_lag_seconds", 0.95)
        w.loop_lag_p95_ms = None if lag is None else round(lag * 1000, 1)
        commit = bucket_quantile(prev_m, m0, "telacd_session_commit_seconds", 0.99)
        w.commit_p99_ms = None if commit is None else round(commit * 1000, 1)
        inside = bucket_quantile(prev_m, m0, "telacd_crash_to_offer_seconds", 0.99)
        w.inside_p99_ms = None if inside is None else round(inside * 1000, 1)
        return w

    # the run -------------------------------------------------------------------------------------

    async def ceiling(self) -> dict[str, Any]:
        a = self.args
        port = free_port()
        servers = CeilingServers("127.0.0.1", port, a.workers)
        await servers.start()
        fleet = make_fleet(
            self.fleet_options("127.0.0.1", port, alarms=False), self.fleet_procs(), a.fleet_nice
        )
        try:
            await fleet.start()
            await self.wait_online(fleet, "ceiling", 60.0)

            def progress(snap: dict[str, Any], first: dict[str, Any]) -> None:
                rate = (snap["acked"] - first["acked"]) / max(1e-9, snap["at"] - first["at"])
                self.show(f"ceiling | acked/s {rate:,.0f}")

            await fleet.set_load(saturate=True)
            await asyncio.sleep(a.warmup)
            u0 = report.usage(servers.pids)
            result = await measure_closed_loop(fleet, 0.0, a.duration, progress)
            u1 = report.usage(servers.pids)
            frames = result["frames_per_s"] * result["seconds"]
            result["cpu_us_per_frame"] = round((u1["cpu_s"] - u0["cpu_s"]) / max(1, frames) * 1e6, 2)
        finally:
            await fleet.stop()
            servers.stop()
        return result

    async def run(self) -> dict[str, Any]:
        a = self.args
        out: dict[str, Any] = {}
        if a.vs_ceiling:
            c = await self.ceiling()
            out["ceiling_frames_per_s"] = c["frames_per_s"]
            out["ceiling_cpu_us_per_frame"] = c["cpu_us_per_frame"]
        self.gut = gut = GatewayUnderTest(a)
        pool = feed = fleet = None
        try:
            self.show("starting the gateway")
            await gut.start()
            pool = AgentPool(
                AgentOptions(
                    http=gut.http,
                    tcp=gut.agent_tcp or "",
                    transport=a.agent_transport,
                    agents=agent_ids(a.agents),
                )
            )
            await pool.start()
            feed = FeedWatch()
            await feed.start(gut.http, after=None if a.target else 0)
            host, port = gut.tcu
            self.fleet = fleet = make_fleet(
                self.fleet_options(host, port, alarms=True), self.fleet_procs(), a.fleet_nice
            )
            await fleet.start()
            await self.wait_online(fleet, "connecting", 120.0 + a.vehicles / 1000)
            deadline = time.monotonic() + 10
            while pool.connected < a.agents and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            probe = None
            if a.overload > 0 or a.vs_ceiling:
                # the most it acknowledges (closed loop), then the most it ingests in full (the ramp)
                await fleet.set_load(saturate=True)
                await self.window("probe-warmup", a.warmup)
                probe = await self.window("probe", a.probe)
                # let the closed loop's backlog drain and the gateway leave overload before the ramp
                await fleet.set_load(saturate=False, paused=True)
                await self.window("probe-drain", 3.0)
                self.sustained = await self.ramp(probe.acked / probe.seconds)
            if a.overload > 0:
                await self._open_loop(a.overload * self.sustained)
                await self.window("overload-warmup", a.warmup)
                main = await self.window("overload", a.duration)
            elif a.rate == "max":
                await fleet.set_load(saturate=True)
                await self.window("warmup", a.warmup)
                main = await self.window("max", a.duration)
            elif a.vs_ceiling and not a.rate:
                await self._open_loop(self.sustained)
                await self.window("warmup", a.warmup)
                main = await self.window("sustained", a.duration)
            else:
                await self._open_loop(float(a.rate) if a.rate else None)
                await self.window("warmup", a.warmup)
                main = await self.window("measure", a.duration)
            await fleet.set_load(saturate=False, paused=True)
            await self.settle(fleet, feed, pool)
            alarm_log = await fleet.alarm_log()
            out.update(self.result(main, probe, alarm_log, feed, pool))
            if a.vs_ceiling:
                ceiling = max(1, out["ceiling_frames_per_s"])
                # the target's measure: every report acknowledged AND stored, over the bare split-and-ack server
                out["ceiling_ratio"] = round(self.sustained / ceiling, 3)
                # with the overload policy thinning storage, the most it acknowledges
                out["ceiling_ratio_acked"] = round(probe.acked / probe.seconds / ceiling, 3)
            out["store"] = _redact(gut.store_url) if gut.store_url else None
            if a.plot:
                report.plot(a.plot, self.title(out), self.timeline, main.rtt, self._c2o_hist)
        finally:
            self.end_line()
            for part in (fleet, feed, pool):
                if part is not None:
                    with contextlib.suppress(Exception):
                        await part.stop()
            await gut.stop()
        return out

    async def ramp(self, top: float) -> float:
        """The highest open-loop rate the gateway takes in full: every report acknowledged and stored.

        The closed loop finds the most the gateway *acknowledges*, but under
        that pressure it thins what it stores (its overload policy), so that
        rate is not what it can ingest. From a twelfth of it, the offered rate
        rises by a fifth every 3 s (1 s to settle, 2 s measured) until a step
        sheds more than 2% of the GPS, defers more than 1% of the reports
        (vehicles waiting on acknowledgements), acknowledges less than 97% of
        what was sent, or runs the gateway's event loops late (lag p95 over
        20 ms: it is queueing, not keeping up); what the last step before that
        stored per second is the sustained rate.
        """
        rate = max(100.0, top / 12)
        best = 0.0
        self.ramp_steps: list[dict[str, Any]] = []
        for _ in range(20):
            await self._open_loop(rate)
            await self.window("ramp-settle", 1.0)
            w = await self.window("ramp", 2.0)
            sent, acked = w.sent / w.seconds, w.acked / w.seconds
            step = {
                "offered_per_s": round(rate),
                "sent_per_s": round(sent),
                "acked_per_s": round(acked),
                "gps_shed_per_s": round(w.gps_shed / w.seconds),
                "deferred_per_s": round(w.deferred / w.seconds),
                "loop_lag_p95_ms": w.loop_lag_p95_ms,
            }
            self.ramp_steps.append(step)
            # a lag spike from a neighbour on a shared machine costs a few rows: 2% shed is tolerated;
            # a gateway whose loops run late is queueing, not keeping up (p95 of the 50 ms lag samples
            # of all its processes, bucket bound: 20 ms passes)
            ok = (
                w.gps_shed <= 0.02 * w.sent
                and w.deferred <= 0.01 * w.sent
                and acked >= 0.97 * sent
                and (w.loop_lag_p95_ms or 0.0) <= 20.0
            )
            if ok:
                best = max(best, acked - w.gps_shed / w.seconds)  # a fleet-limited step may store less
                if sent < 0.9 * rate:
                    step["fleet_limited"] = (
                        True  # the fleet could not offer more: the gateway was not the limit
                    )
                    break
                rate *= 1.2
            elif best or rate < 200:
                break
            else:
                rate /= 1.5  # even the first step was too much: come down until one passes
        return best or rate

    async def _open_loop(self, rate: float | None) -> None:
        """Open loop at ``rate`` frames/s over the vehicles online (None: their natural rate)."""
        snap = await self.fleet.snapshot()
        natural = max(1, snap["online"]) / self.args.report_interval
        scale = 1.0 if rate is None else rate / natural
        await self.fleet.set_load(rate_scale=scale, saturate=False, paused=False)
        self.offered = natural * scale

    async def settle(self, fleet: Any, feed: FeedWatch, pool: AgentPool, timeout: float = 15.0) -> None:
        """Load stopped: wait for alarms in flight to be acknowledged, offered and seen on the feed."""
        deadline = time.monotonic() + timeout
        last = None
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            snap = await fleet.snapshot()
            state = (snap["alarms_acked"], len(feed.created), len(feed.merged), pool.obs.offers, feed.events)
            self.show(
                f"settling | alarms acked {snap['alarms_acked']}/{snap['alarms_sent']} | sessions "
                f"{len(feed.created)} | offers {pool.obs.offers}"
            )
            if state != last:
                last, stable_since = state, time.monotonic()
            else:
                quiet = time.monotonic() - stable_since
                if quiet >= 5.0 or (quiet >= 1.0 and snap["alarms_acked"] >= snap["alarms_sent"]):
                    return
            await asyncio.sleep(0.25)

    def result(
        self, w: Window, probe: Window | None, alarm_log: list, feed: FeedWatch, pool: AgentPool
    ) -> dict[str, Any]:
        a = self.args
        lost = lost_sessions(alarm_log, feed.seen())
        pairs = crash_to_offer(alarm_log, pool.obs.offer_log)
        c2o = []
        for sent, at, kind in pairs:
            if w.start <= sent <= w.end:
                c2o.append(at - sent)
                self.timeline.offers.append((sent - self.t0, (at - sent) * 1000, kind))
        self._c2o_hist = report.histogram_of(c2o)
        in_window = [x for x in alarm_log if w.start <= x[2] <= w.end]
        out: dict[str, Any] = {
            "connections": int(w.connections),
            "frames_per_s": round(w.sent / w.seconds),
            "acked_per_s": round(w.acked / w.seconds),
            "ack_rtt_ms": report.summary_ms(w.rtt),
            "crash_to_offer_ms": report.summary_ms(self._c2o_hist),
            "sessions": {
                "created": len(feed.created),
                "offered": len(feed.offered),
                "assigned": len(feed.assigned),
            },
            "lost_sessions": lost,
            "duplicate_offers": pool.obs.duplicate_offers,
            "gps_shed": int(w.gps_shed),
            "rss_mib": round(w.rss / 2**20, 1) if w.processes else None,
            "cpu": round(w.cpu_s / w.seconds, 2) if w.processes else None,
            # context
            "pss_mib": round(w.pss / 2**20, 1) if w.processes else None,
            "gateway_processes": w.processes or None,
            "phase": w.phase,
            "seconds": round(w.seconds, 2),
            "vehicles": a.vehicles,
            "workers": None if a.target else a.workers,
            "window": a.window,
            "gps_stored_per_s": round(w.stored / w.seconds),
            "deferred_per_s": round(w.deferred / w.seconds),
            "alarms": {
                "sent": len(in_window),
                "acked": sum(1 for x in in_window if x[3] is not None),
                "measured": len(c2o),
                "merged": len(feed.merged),
            },
            "loop_lag_p99_ms": w.loop_lag_p99_ms,
            "commit_p99_ms": w.commit_p99_ms,
            "gateway_crash_to_offer_p99_ms": w.inside_p99_ms,
            "fleet_cpu": round(w.fleet_cpu_s / w.seconds, 2),
            # the gateway's processes' CPU (PostgreSQL's server not included) per acknowledged frame
            "cpu_us_per_frame": round(w.cpu_s / max(1, w.acked) * 1e6, 2) if w.processes else None,
            "agent_transport": a.agent_transport,
            "transport": a.transport,
        }
        if w.phase in ("measure", "overload", "sustained"):
            out["offered_per_s"] = round(getattr(self, "offered", 0.0))
        if probe is not None:
            if a.overload:
                out["overload"] = a.overload
                # what the fleet managed to send over the sustained rate (the fleet shares the machine)
                out["overload_achieved"] = round(w.sent / w.seconds / max(1.0, self.sustained), 2)
            out["probe"] = {
                "closed_loop_acked_per_s": round(probe.acked / probe.seconds),
                "closed_loop_gps_shed_per_s": round(probe.gps_shed / probe.seconds),
                "closed_loop_cpu_us_per_frame": round(probe.cpu_s / max(1, probe.acked) * 1e6, 2),
                "sustained_per_s": round(self.sustained),
                "ramp": self.ramp_steps,
            }
        if a.timeline:
            out["timeline"] = self.timeline.__dict__
        return out

    def title(self, out: dict[str, Any]) -> str:
        a = self.args
        mode = f"overload x{a.overload}" if a.overload else (out.get("phase") or "")
        return (
            f"telacd bench gateway: {a.vehicles:,} vehicles, {mode}, workers {a.workers}, store {a.store} | "
            f"acked/s {out['acked_per_s']:,} | crash→offer p99 {out['crash_to_offer_ms']['p99']} ms | "
            f"lost {out['lost_sessions']} dup {out['duplicate_offers']}"
        )


def lost_sessions(alarm_log: list, seen: collections.Counter) -> int:
    """Alarms acknowledged to a vehicle that no created or merged session of its vehicle and kind accounts for.

    Every acknowledged alarm edge must have become a session ("created") or an
    alert merged into the open session of that incident ("updated", reason
    repeat_alert): one feed event per acknowledged alarm, counted per (phone,
    kind). An alarm that was sent but never acknowledged is not lost: the
    vehicle still has it and re-sends it.
    """
    acked = collections.Counter((p, k) for p, k, _, ack in alarm_log if ack is not None)
    return sum(max(0, n - seen.get(key, 0)) for key, n in acked.items())


def crash_to_offer(alarm_log: list, offer_log: list) -> list[tuple[float, float, str]]:
    """(alarm sent, first offer received, kind) for each session that was offered.

    A session's first offer is paired with the latest alarm of its vehicle and
    kind sent before that offer and not paired already (an alarm merged into an
    open session makes no offer of its own). Both times are time.monotonic() in
    processes of this machine, so the difference is the whole path.
    """
    alarms: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for p, k, sent, _ in alarm_log:
        alarms[(p, k)].append(sent)
    for v in alarms.values():
        v.sort()
    first: dict[str, tuple[str, str, float]] = {}
    for sid, phone, kind, at in offer_log:
        if sid not in first:
            first[sid] = (phone, kind, at)
    used: set[tuple[str, str, float]] = set()
    out = []
    for phone, kind, at in sorted(first.values(), key=lambda x: x[2]):
        sends = alarms.get((phone, kind), [])
        i = bisect.bisect_right(sends, at) - 1
        while i >= 0 and (phone, kind, sends[i]) in used:
            i -= 1
        if i < 0:
            continue
        used.add((phone, kind, sends[i]))
        out.append((sends[i], at, kind))
    return out


def bucket_quantile(m: dict[str, float], prev: dict[str, float], name: str, q: float) -> float | None:
    """The upper bound of the Prometheus bucket holding quantile ``q`` of the samples between two scrapes."""
    prefix = f"{name}_bucket|"
    bounds = sorted((float(k[len(prefix) :]), m[k] - prev.get(k, 0.0)) for k in m if k.startswith(prefix))
    if not bounds or bounds[-1][1] <= 0:
        return None
    want = q * bounds[-1][1]
    for bound, cumulative in bounds:
        if cumulative >= want:
            return bound
    return None


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return url


def print_config(args: argparse.Namespace) -> None:
    print("# add to the target gateway's configuration for telacd bench gateway --target")
    print(config_toml({}, agent_ids(args.agents)))


def main(args: argparse.Namespace) -> int:
    if args.print_config:
        print_config(args)
        return 0
    if args.rate not in ("", "max"):
        try:
            float(args.rate)
        except ValueError:
            print("telacd bench gateway: --rate takes frames/s or 'max'", file=sys.stderr)
            return 2
    import uvloop

    bench = Bench(args)
    out = uvloop.run(bench.run())
    if args.json:
        print(json.dumps(out))
    else:
        print(human(out))
    return 0


def human(out: dict[str, Any]) -> str:
    def p(d: dict[str, Any]) -> str:
        return " / ".join("-" if d[k] is None else f"{d[k]}" for k in ("p50", "p99", "p999", "max"))

    lines = [
        f"connections held        {out['connections']:,}",
        f"frames/s sent / acked   {out['frames_per_s']:,} / {out['acked_per_s']:,}",
        f"ack RTT ms              {p(out['ack_rtt_ms'])}   (p50 / p99 / p99.9 / max)",
        f"crash→offer ms          {p(out['crash_to_offer_ms'])}   ({out['alarms']['measured']} alerts)",
        f"sessions                created {out['sessions']['created']}, offered {out['sessions']['offered']}, "
        f"assigned {out['sessions']['assigned']}",
        f"lost sessions           {out['lost_sessions']}",
        f"duplicate offers        {out['duplicate_offers']}",
        f"GPS shed                {out['gps_shed']:,}",
        f"gateway RSS / PSS MiB   {out['rss_mib']} / {out['pss_mib']}   CPU {out['cpu']} cores",
    ]
    if "ceiling_ratio" in out:
        lines.append(
            f"ceiling                 {out['ceiling_frames_per_s']:,} frames/s, ratio {out['ceiling_ratio']}"
        )
    if "probe" in out:
        lines.append(
            f"sustained (ramp)        {out['probe']['sustained_per_s']:,} frames/s acknowledged and stored"
            + (f"; overloaded x{out['overload']}" if "overload" in out else "")
        )
    return "\n".join(lines)
