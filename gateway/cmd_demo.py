"""``telacd demo``: the gateway on its embedded defaults, a simulated fleet, simulated agents.

Everything runs in this one process on real sockets: a few hundred vehicles
drive around Shenzhen and report over JT/T 808, now and then one crashes, rolls
over, presses SOS or makes a one-key service call; a team of agents answers
offers after a human-like pause, texts the vehicle and completes the session a
little later. A status line shows the whole path working. Connect your own
agent or subscriber while it runs: the addresses and demo tokens are printed
at start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from typing import Any

from . import config as config_mod
from .cmd_serve import setup_logging

DEMO_STORE = "sqlite:///./telacd-data/demo.db"
DEMO_AGENTS = [
    ("demo-ann", {"emergency": 9, "service": 4}),
    ("demo-bo", {"emergency": 7, "service": 6}),
    ("demo-chen", {"emergency": 5, "service": 8}),
    ("demo-dai", {"emergency": 8}),
    ("demo-eli", {"service": 9}),
    ("demo-fang", {"emergency": 6, "service": 7}),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", metavar="FILE", help="base configuration (default: embedded defaults)"
    )
    parser.add_argument("--vehicles", type=int, default=300)
    parser.add_argument(
        "--agents", type=int, default=len(DEMO_AGENTS), help=f"simulated agents (up to {len(DEMO_AGENTS)})"
    )
    parser.add_argument(
        "--report-interval", type=float, default=5.0, help="seconds between a vehicle's reports"
    )
    parser.add_argument(
        "--alarm-rate", type=float, default=0.12, help="crash/SOS/rollover alarms per second, fleet-wide"
    )
    parser.add_argument(
        "--service-rate", type=float, default=0.05, help="one-key service calls per second, fleet-wide"
    )
    parser.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many seconds (0: until Ctrl-C)"
    )
    parser.add_argument(
        "--store",
        default=None,
        help=f"store URL for the demo (default: [store] url of --config or $TELACD_STORE_URL, else {DEMO_STORE})",
    )
    parser.add_argument(
        "--transport",
        choices=("tcp", "quic"),
        default="tcp",
        help="how the simulated vehicles connect (quic: a listener with a throwaway self-signed certificate)",
    )
    parser.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))


def demo_config(args: argparse.Namespace) -> config_mod.Config:
    base = config_mod.load(args.config)
    store = args.store
    if store is None:  # a store named by the file or the environment wins over the demo's own file
        store = base.store["url"] if base.store["url"] != config_mod.SCALARS["store"]["url"] else DEMO_STORE
    raw: dict[str, Any] = {
        "gateway": dict(base.gateway),
        "store": {**base.store, "url": store},
        "terminals": dict(base.terminals),
        "sessions": dict(base.sessions),
        "tenants": dict(base.tenants),
        "agents": [
            {"id": aid, "token": "demo", "skills": skills, "phone": "4008001234"}
            for aid, skills in DEMO_AGENTS[: max(0, args.agents)]
        ]
        + [{"id": "you", "token": "demo", "skills": {"emergency": 10, "service": 10}, "phone": "4008001234"}],
        "subscribers": [{"id": "you", "token": "demo"}],
        "admins": [
            {"id": "admin", "token": "demo", "role": "admin"},
            {"id": "wallboard", "token": "wallboard", "role": "viewer"},
        ],
    }
    if getattr(args, "transport", "tcp") == "quic":
        _with_quic(raw["gateway"])
    return config_mod.build(raw, "<demo>", {})


def _with_quic(g: dict[str, Any]) -> None:
    """Turn the QUIC listener on; without a configured pair, a self-signed one in a temporary directory."""
    import atexit
    import shutil
    import tempfile

    from .cmd_cert import write_pair

    g["quic"] = g["quic"] or "127.0.0.1:6809"
    if not (g["quic_cert"] and g["quic_key"]):
        d = tempfile.mkdtemp(prefix="telacd-demo-quic-")
        atexit.register(shutil.rmtree, d, True)
        cert, key = write_pair(d)
        g["quic_cert"], g["quic_key"] = str(cert), str(key)


def main(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    try:
        cfg = demo_config(args)
    except config_mod.ConfigError as e:
        print(f"telacd: configuration error: {e}", file=sys.stderr)
        return 2
    import uvloop

    uvloop.install()
    return asyncio.run(run(cfg, args))


class StatusLine:
    """One line, rewritten in place on a terminal; a line every 5 s otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self._last_print = 0.0

    def show(self, text: str) -> None:
        if self.tty:
            sys.stdout.write("\r\x1b[2K" + text)
            sys.stdout.flush()
        elif time.monotonic() - self._last_print >= 5.0:
            self._last_print = time.monotonic()
            print(text, flush=True)

    def end(self) -> None:
        if self.tty:
            sys.stdout.write("\n")


async def run(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from bench.agents import AgentOptions, AgentPool
    from bench.fleet import Fleet, FleetOptions

    from .app import Gateway
    from .store import StoreError

    gw = Gateway(cfg)
    try:
        await gw.start()
    except (OSError, StoreError) as e:
        print(f"telacd demo: cannot start the gateway: {e}", file=sys.stderr)
        print(
            "  (is another telacd already using these ports? stop it or pass --config with other addresses)",
            file=sys.stderr,
        )
        await gw.stop()
        return 1
    g = cfg.gateway
    tcp_host, tcp_port = g["tcp"].rsplit(":", 1)
    print(
        f"""telacd demo — gateway running on embedded defaults, store {cfg.store["url"]}
  vehicles (JT/T 808)   tcp://{g["tcp"]}
  dashboard             http://{g["http"]}/            (token: demo, or wallboard for read-only)
  admin API             http://{g["http"]}/api/queues  (Authorization: Bearer demo)
  metrics               http://{g["http"]}/metrics
  your agent            ws://{g["http"]}/agent  or msgpack tcp://{g["agent_tcp"]}
                        {{"type":"login","agent":"you","token":"demo"}}
  your subscriber       ws://{g["http"]}/feed   or msgpack tcp://{g["feed_tcp"]}
                        {{"type":"subscribe","subscriber":"you","token":"demo","after":0}}
  {args.vehicles} simulated vehicles, {min(args.agents, len(DEMO_AGENTS))} simulated agents; Ctrl-C stops.
""",
        flush=True,
    )
    transport = getattr(args, "transport", "tcp")
    if transport == "quic":
        tcp_host, tcp_port = g["quic"].rsplit(":", 1)
        print(f"  vehicles connect over QUIC: quic://{g['quic']} (ALPN jt808)", flush=True)
    fleet = Fleet(
        FleetOptions(
            host=tcp_host,
            port=int(tcp_port),
            **({"transport": transport} if transport != "tcp" else {}),
            vehicles=args.vehicles,
            report_interval=args.report_interval,
            alarm_rate=args.alarm_rate,
            service_rate=args.service_rate,
            ramp_up=min(5.0, args.vehicles / 100),
        )
    )
    pool = AgentPool(
        AgentOptions(
            http=g["http"],
            tcp=g["agent_tcp"],
            transport="ws",
            agents=[(aid, "demo") for aid, _ in DEMO_AGENTS[: max(0, args.agents)]],
            accept_delay=(1.0, 4.0),
            handle_time=(8.0, 25.0),
            send_text=True,
        )
    )
    await pool.start()
    await fleet.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.duration > 0:
        loop.call_later(args.duration, stop.set)
    status = StatusLine()
    last_reports, last_t = gw.metrics.gps_reports, time.monotonic()
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass
            now = time.monotonic()
            reports = gw.metrics.gps_reports
            rate = (reports - last_reports) / max(1e-6, now - last_t)
            last_reports, last_t = reports, now
            status.show(status_text(gw, fleet, rate))
    finally:
        status.end()
        await fleet.stop()
        await pool.stop()
        await gw.stop()
    print(
        f"demo stopped: {sum(gw.metrics.sessions_created.values())} sessions, {pool.obs.completed} completed by agents"
    )
    return 0


def status_text(gw: Any, fleet: Any, reports_per_s: float) -> str:
    waiting = sum(1 for s in gw.sessions.open.values() if s.state in ("waiting", "offered"))
    active = sum(1 for s in gw.sessions.open.values() if s.state == "assigned")
    stats = gw.routing.router.stats(gw.routing.now())
    answered = met = 0
    for q in stats.values():
        w = q["window"]
        if w["service_level"] is not None:
            resolved = w["answered"] + w["abandoned"]
            answered += resolved
            met += w["service_level"] * resolved
    sl = f"{100 * met / answered:.0f}%" if answered else "–"
    p = gw.metrics.crash_to_offer.percentiles((0.5, 0.99), window_s=300)
    lat = "–" if p[0.5] is None else f"p50 {p[0.5] * 1000:.1f} ms p99 {p[0.99] * 1000:.1f} ms"
    return (
        f"vehicles {gw.metrics.connections_open}/{fleet.opts.vehicles} | reports/s {reports_per_s:.0f} | "
        f"sessions waiting {waiting} active {active} | SL {sl} | crash→offer {lat}"
    )


log = logging.getLogger("telacd.demo")
