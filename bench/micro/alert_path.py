"""Where an idle crash alert's time goes, from the vehicle's write to the agent's offer.

Run: ``.venv/bin/python -m bench.micro.alert_path [--alerts 60] [--json]``

One process, one uvloop loop: a gateway on embedded defaults (SQLite in a
temporary directory, real sockets on loopback), one terminal that raises SOS
and clears it, and one agent on the msgpack endpoint that accepts and
completes each offer. Timestamps (``time.perf_counter``) are taken at the
steps of the path by wrapping the gateway's own methods, and each is printed
as milliseconds after the terminal began writing the frame (median and max
over the alerts after the first five):

* ``sent``: the terminal's write returned;
* ``data_received``: the gateway's TCU protocol got the bytes;
* ``alarm_nowait``: the alarm edge was detected and the session is being built;
* ``commit_submit`` / ``commit_done``: the session's events went to the store /
  the commit was done (at once when the writer thread was idle and the loop
  ran it, else when the thread's answer came back to the loop);
* ``enqueue`` / ``enqueue_done``: the ACD took the task / the offer was made
  and pushed to the agent's channel;
* ``offer``: the agent client read the offer.

Because the terminal and the agent share the gateway's loop, their own work
is included; ``telacd bench gateway`` measures the same path across
processes. ``sqlite_txn_ms`` is the writer thread's time per transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import statistics
import tempfile
import time
from typing import Any

from bench.ceiling import free_port
from bench.clients import TcpConnection, agent_login
from bench.terminal import TerminalClient
from gateway import config
from gateway.app import Gateway

STEPS = (
    "sent",
    "data_received",
    "alarm_nowait",
    "commit_submit",
    "commit_done",
    "enqueue",
    "enqueue_done",
    "offer",
)


def _config(tmp: str) -> config.Config:
    p = [free_port() for _ in range(4)]
    raw = {
        "gateway": {
            "tcp": f"127.0.0.1:{p[0]}",
            "http": f"127.0.0.1:{p[1]}",
            "agent_tcp": f"127.0.0.1:{p[2]}",
            "feed_tcp": f"127.0.0.1:{p[3]}",
        },
        "store": {"url": f"sqlite:///{tmp}/alert-path.db"},
        "agents": [{"id": "a", "token": "t", "skills": {"emergency": 8, "service": 5}, "wrapup_s": 0.0}],
    }
    return config.build(raw, "<bench.micro.alert_path>", {})


def _instrument(gw: Gateway, marks: dict[str, float]) -> None:
    """Wrap the gateway's steps (on this instance and its TCU protocol class) to stamp ``marks``."""
    from gateway import tcu

    def stamp(key: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            marks.setdefault(key, time.perf_counter())
            return fn(*a, **k)

        return wrapper

    received = tcu.TcuProtocol.data_received

    def data_received(self: Any, data: bytes) -> None:
        marks.setdefault("data_received", time.perf_counter())
        received(self, data)

    tcu.TcuProtocol.data_received = data_received  # type: ignore[method-assign]
    gw.sessions.alarm_nowait = stamp("alarm_nowait", gw.sessions.alarm_nowait)
    commit = gw.store.commit_nowait

    def commit_nowait(*a: Any, **k: Any) -> asyncio.Future:
        marks.setdefault("commit_submit", time.perf_counter())
        fut = commit(*a, **k)
        if fut.done():  # committed inline (the writer thread was idle): done as it returns
            marks.setdefault("commit_done", time.perf_counter())
        else:
            fut.add_done_callback(lambda _f: marks.setdefault("commit_done", time.perf_counter()))
        return fut

    gw.store.commit_nowait = commit_nowait
    enqueue = gw.routing.enqueue

    def routed(session: Any) -> Any:
        marks.setdefault("enqueue", time.perf_counter())
        out = enqueue(session)
        marks.setdefault("enqueue_done", time.perf_counter())
        return out

    gw.routing.enqueue = routed


async def measure(alerts: int) -> dict[str, Any]:
    from gateway import tcu

    original = tcu.TcuProtocol.data_received
    with tempfile.TemporaryDirectory(prefix="telacd-alert-path-") as tmp:
        gw = Gateway(_config(tmp))
        await gw.start()
        marks: dict[str, float] = {}
        try:
            _instrument(gw, marks)
            host, port = gw.cfg.gateway["tcp"].rsplit(":", 1)
            term = TerminalClient("013800000001")
            await term.connect(host, int(port))
            await term.login()
            h, p = gw.cfg.gateway["agent_tcp"].rsplit(":", 1)
            agent = await TcpConnection.open(h, int(p))
            await agent_login(agent, "a", "t")
            await agent.send({"type": "state", "state": "available"})
            rows = []
            for _ in range(alerts):
                marks.clear()
                t0 = time.perf_counter()
                await term.report(alarm=1, wait=False)  # SOS rises
                marks["sent"] = time.perf_counter()
                offer = await agent.expect("offer")
                marks["offer"] = time.perf_counter()
                rows.append({k: (v - t0) * 1000 for k, v in marks.items()})
                await agent.send({"type": "accept", "offer": offer["offer"]})
                await agent.expect("assigned")
                await agent.send({"type": "complete", "session": offer["session"]["id"], "disposition": "x"})
                await term.report(alarm=0)  # cleared, so the next report is a new edge
                await asyncio.sleep(0.05)
            await agent.close()
            await term.close()
            st = gw.store.stats
            txn_ms = st.commit_seconds / max(1, st.commit_batches) * 1000
        finally:
            tcu.TcuProtocol.data_received = original  # type: ignore[method-assign]
            await gw.stop()
    kept = rows[5:] if len(rows) > 10 else rows
    out: dict[str, Any] = {"alerts": len(kept), "sqlite_txn_ms": round(txn_ms, 3), "steps_ms": {}}
    for step in STEPS:
        values = sorted(r[step] for r in kept if step in r)
        if values:
            out["steps_ms"][step] = {"p50": round(statistics.median(values), 3), "max": round(values[-1], 3)}
    return out


SERVE_STEPS = ("read", "alarm", "owner", "built", "committed", "offer", "arrived", "acked")


async def measure_serve(alerts: int, workers: int, gap_s: float = 0.05) -> dict[str, Any]:
    """The same path through ``telacd serve --workers N`` (N = 1: one process), traced in its processes.

    The gateway runs as a child with ``TELACD_TRACE_ALERTS`` (:mod:`gateway.alerttrace`);
    one terminal and one agent (msgpack over TCP) run here. Each step is reported
    in milliseconds after the terminal wrote the alarm's frame; ``arrived`` is when
    the offer's bytes reached this process.
    """
    from bench.gateway import GatewayUnderTest, add_arguments
    from bench.terminal import device_now

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--workers", str(workers), "--agents", "1"])
    phone = "013800000001"
    with tempfile.TemporaryDirectory(prefix="telacd-alert-path-") as tmp:
        trace = os.path.join(tmp, "alerts.trace")
        before = os.environ.get("TELACD_TRACE_ALERTS")
        os.environ["TELACD_TRACE_ALERTS"] = trace
        gut = GatewayUnderTest(args)
        try:
            await gut.start()
        finally:
            if before is None:
                del os.environ["TELACD_TRACE_ALERTS"]
            else:
                os.environ["TELACD_TRACE_ALERTS"] = before
        written: list[tuple[float, float, float]] = []
        try:
            host, port = gut.tcp.rsplit(":", 1)
            term = TerminalClient(phone)
            await term.connect(host, int(port))
            await term.login()
            h, p = gut.agent_tcp.rsplit(":", 1)
            agent = await TcpConnection.open(h, int(p))
            await agent_login(agent, "bench-0", "bench")
            await agent.send({"type": "state", "state": "available"})
            for _ in range(alerts):
                _, frame = term.conn.report_location(
                    lat=22.543096, lon=114.057865, device_time=device_now(), alarm=1
                )
                t0 = time.monotonic()
                term.writer.write(frame)
                offer = await agent.expect("offer")
                written.append((t0, agent.last_arrival or time.monotonic(), time.monotonic()))
                await agent.send({"type": "accept", "offer": offer["offer"]})
                await agent.expect("assigned")
                await agent.send({"type": "complete", "session": offer["session"]["id"], "disposition": "x"})
                await term.report(alarm=0)  # cleared, so the next report is a new edge
                await asyncio.sleep(gap_s)
            await agent.close()
            await term.close()
            await asyncio.sleep(0.2)  # the last acknowledgements' lines
        finally:
            await gut.stop()
        marks: dict[str, list[float]] = {}
        with open(trace) as f:
            for line in f:
                step, who, at, _pid = line.split()
                if who == phone:
                    marks.setdefault(step, []).append(float(at))
    for v in marks.values():
        v.sort()
    rows = []
    for t0, arrived, done in written:
        row = {"arrived": (arrived - t0) * 1000}
        for step, times in marks.items():
            i = bisect.bisect_left(times, t0)
            if i < len(times) and times[i] <= done + 0.05:
                row[step] = (times[i] - t0) * 1000
        rows.append(row)
    kept = rows[5:] if len(rows) > 10 else rows
    out: dict[str, Any] = {"alerts": len(kept), "workers": workers, "steps_ms": {}}
    for step in SERVE_STEPS:
        values = sorted(r[step] for r in kept if step in r)
        if values:
            out["steps_ms"][step] = {
                "p50": round(statistics.median(values), 3),
                "p90": round(values[int(0.9 * (len(values) - 1))], 3),
                "p99": round(values[int(0.99 * (len(values) - 1))], 3),
                "max": round(values[-1], 3),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=60)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="0: the gateway in this process, instrumented (default); N: `telacd serve --workers N` as a "
        "child, traced in its processes (1: a single process)",
    )
    args = parser.parse_args(argv)
    import uvloop

    if args.workers > 0:
        out = uvloop.run(measure_serve(args.alerts, args.workers))
    else:
        out = uvloop.run(measure(args.alerts))
    if args.json:
        print(json.dumps(out))
    elif args.workers > 0:
        print(
            f"{out['alerts']} alerts through `telacd serve --workers {args.workers}` (ms after the frame was written)"
        )
        prev = 0.0
        for step, v in out["steps_ms"].items():
            print(
                f"  {step:10s} p50 {v['p50']:7.3f} (+{v['p50'] - prev:6.3f})   p90 {v['p90']:7.3f}"
                f"   p99 {v['p99']:7.3f}   max {v['max']:7.3f}"
            )
            prev = v["p50"]
    else:
        print(f"{out['alerts']} alerts; SQLite transaction {out['sqlite_txn_ms']} ms")
        for step, v in out["steps_ms"].items():
            print(f"  {step:14s} p50 {v['p50']:7.3f} ms   max {v['max']:7.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
