"""``telacd bench quic``: JT/T 808 ingest over QUIC against a bare aioquic echo of the same frames.

aioquic is the expensive part of a QUIC terminal connection (tens of
microseconds of Python per packet, against a few per frame in the codec), so
the fair question about the gateway's QUIC path is how much of what aioquic
alone can carry the gateway still carries once it decodes, stores and answers
every frame. Two servers, one at a time, each in a child process of its own:

* ``echo``: aioquic's own asyncio server (``aioquic.asyncio.serve``) whose
  protocol sends every stream chunk straight back, the way aioquic's examples
  use it: nothing decoded, nothing stored, a transmit per datagram.
* ``gateway``: a telacd gateway (SQLite store, open auth) with its QUIC
  listener: every 0x0200 split, decoded, queued for the location writer and
  answered with a 0x8001.

The client (this process) opens ``--connections`` QUIC connections with one
stream each, authenticates, then keeps a closed loop per stream: write
``--batch`` pre-encoded 0x0200 frames in one write, wait until ``--batch``
frames came back (the echoed reports, or the 0x8001s: counted by their 0x7e
delimiters, the same cheap count for both), write the next batch. The rate is
frames answered per second over ``--seconds``, after a warm-up. Rounds
alternate which server goes first; ``ratio`` (gateway/echo) is the median of
the per-round ratios. ``server_cpu_us_per_frame`` is the child's CPU time
(user+system, from /proc, the SQLite writer thread included) per frame, and
``client_cpu_share`` the fraction of one core this process used: near 1.0 the
client, not the server, set the pace.

    telacd bench quic --json
    telacd bench quic --connections 64 --batch 16 --seconds 5 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from protocols.jt808.connection import Connection, Role
from protocols.jt808.messages import make_location

SERVERS = ("echo", "gateway")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--connections", type=int, default=32, help="QUIC connections (one stream each)")
    parser.add_argument("--batch", type=int, default=16, help="0x0200 frames per write (closed loop)")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per server per round")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--rounds", type=int, default=3, help="rounds in this run; medians are reported")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="event loop")


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def frames_for(phone: str, n: int) -> tuple[bytes, list[bytes]]:
    """(0x0102 authentication, ``n`` 0x0200 reports) of one terminal, encoded by the codec's terminal role."""
    conn = Connection(Role.TERMINAL, phone=phone)
    auth = conn.authenticate(phone)[1]
    reports = []
    for i in range(n):
        loc = make_location(
            22.543096 + i * 1e-5,
            114.057865 - i * 1e-5,
            device_time=1_717_200_000 + i,
            speed_kmh=float(i % 120),
            direction=i % 360,
            altitude=20,
            items=((0x01, 123456 + i), (0x30, 25), (0x31, 12)),
        )
        reports.append(conn.report_location(loc)[1])
    return auth, reports


# -- the client -----------------------------------------------------------------------------------


class _Driver(asyncio.Protocol):
    """One stream's closed loop: a batch out, wait for as many frames back, repeat."""

    def __init__(self, bench: _Client, auth: bytes, batches: list[bytes], batch: int) -> None:
        self.bench = bench
        self.auth = auth
        self.batches = batches
        self.batch = batch
        self.i = 0
        self.flags = 0  # 0x7e bytes seen, two per frame
        self.want = 2  # the authentication's answer first
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.auth)

    def data_received(self, data: bytes) -> None:
        self.flags += data.count(b"\x7e")
        while self.flags >= self.want:
            self.flags -= self.want
            if self.want == 2 * self.batch:
                self.bench.frames += self.batch
            self.want = 2 * self.batch
            if self.bench.running:
                self.transport.write(self.batches[self.i])
                self.i = (self.i + 1) % len(self.batches)
            else:
                self.bench.idle += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.bench.lost += 1


class _Client:
    def __init__(self) -> None:
        self.frames = 0
        self.running = True
        self.idle = 0
        self.lost = 0


async def drive(
    port: int, connections: int, batch: int, warmup: float, seconds: float, server_cpu: Any = None
) -> dict[str, Any]:
    """Run the closed loop against 127.0.0.1:``port``; frames answered per second, client and server CPU.

    ``server_cpu()`` (CPU seconds of the server process) is sampled at the
    edges of the measured window.
    """
    server_cpu = server_cpu or (lambda: 0.0)
    from bench.quic_client import create_connection

    bench = _Client()
    transports = []
    for c in range(connections):
        phone = f"0139{c:08d}"
        auth, reports = frames_for(phone, batch * 8)
        batches = [b"".join(reports[k : k + batch]) for k in range(0, len(reports), batch)]
        t, _ = await create_connection(
            lambda a=auth, b=batches: _Driver(bench, a, b, batch), "127.0.0.1", port
        )
        transports.append(t)
    await asyncio.sleep(warmup)
    f0, c0, s0, t0 = bench.frames, time.process_time(), server_cpu(), time.perf_counter()
    await asyncio.sleep(seconds)
    f1, c1, s1, t1 = bench.frames, time.process_time(), server_cpu(), time.perf_counter()
    bench.running = False
    for t in transports:
        t.close()
    await asyncio.sleep(0.2)
    wall = t1 - t0
    return {
        "frames": f1 - f0,
        "rate": (f1 - f0) / wall,
        "wall": wall,
        "client_cpu": (c1 - c0) / wall,
        "server_cpu": s1 - s0,
        "lost": bench.lost,
    }


# -- the servers (child processes) ------------------------------------------------------------------


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _serve_echo(port: int, cert: str, key: str) -> None:
    from aioquic.asyncio import QuicConnectionProtocol, serve
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import StreamDataReceived

    from gateway.quic import ALPN

    class Echo(QuicConnectionProtocol):
        def quic_event_received(self, event: Any) -> None:
            if isinstance(event, StreamDataReceived) and event.data:
                self._quic.send_stream_data(event.stream_id, event.data)

    configuration = QuicConfiguration(is_client=False, alpn_protocols=[ALPN], idle_timeout=60.0)
    configuration.load_cert_chain(cert, key)
    server = await serve("127.0.0.1", port, configuration=configuration, create_protocol=Echo)
    print("ready", flush=True)
    await _until_stdin_closes()
    server.close()


async def _serve_gateway(port: int, cert: str, key: str, workdir: str) -> None:
    from gateway import config
    from gateway.app import Gateway

    raw = {
        "gateway": {
            "tcp": "",
            "http": f"127.0.0.1:{free_tcp_port()}",
            "agent_tcp": "",
            "feed_tcp": "",
            "quic": f"127.0.0.1:{port}",
            "quic_cert": cert,
            "quic_key": key,
        },
        "store": {"url": f"sqlite:///{workdir}/bench.db"},
        # the closed loop runs far above a real vehicle's rate: no flood pausing here
        "terminals": {"max_frames_per_s": 10_000_000},
    }
    if "overload_lag_ms" in config.SCALARS["terminals"]:
        # ingest means every report stored: never thin GPS storage under load
        raw["terminals"]["overload_lag_ms"] = 1_000_000
        gw = Gateway(config.build(raw, "<bench>", {}))
    await gw.start()
    print("ready", flush=True)
    await _until_stdin_closes()
    await gw.stop()
    m = gw.metrics
    print(
        json.dumps(
            {"gps_reports": m.gps_reports, "gps_shed": m.gps_shed, "rows": gw.store.stats.location_rows}
        )
    )


async def _until_stdin_closes() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()


class _Child:
    def __init__(self, kind: str, port: int, cert: str, key: str, workdir: str, loop: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.quic", "--serve", kind, "--port", str(port), "--cert", cert,
             "--key", key, "--workdir", workdir, "--loop", loop],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.stop()
            raise RuntimeError(f"the {kind} server did not start")

    def cpu(self) -> float:
        return _cpu_seconds(self.proc.pid)

    def stop(self) -> dict[str, Any]:
        """Stop the server; what it printed on the way out (the gateway's counters), if anything."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                out = self.proc.stdout.read()
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return {}
            lines = [line for line in out.splitlines() if line.startswith("{")]
            return json.loads(lines[-1]) if lines else {}
        return {}


async def measure(kind: str, args: argparse.Namespace, cert: str, key: str, workdir: str) -> dict[str, Any]:
    port = free_udp_port()
    child = _Child(kind, port, cert, key, workdir, args.loop)
    try:
        out = await drive(port, args.connections, args.batch, args.warmup, args.seconds, child.cpu)
    finally:
        counters = child.stop()
    frames = max(1, out["frames"])
    extra = {"gps_shed": counters.get("gps_shed", 0)} if kind == "gateway" else {}
    return {
        **extra,
        "frames_per_s": round(out["rate"]),
        "server_cpu_us_per_frame": round(1e6 * out["server_cpu"] / frames, 2),
        "server_cpu_share": round(out["server_cpu"] / out["wall"], 2),
        "client_cpu_share": round(out["client_cpu"], 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from gateway.cmd_cert import write_pair

    with tempfile.TemporaryDirectory(prefix="telacd-bench-quic-") as workdir:
        cert, key = (str(p) for p in write_pair(Path(workdir) / "cert"))
        rounds = []
        for r in range(args.rounds):
            order = SERVERS if r % 2 == 0 else SERVERS[::-1]
            result: dict[str, Any] = {}
            for kind in order:
                _progress(f"round {r + 1}/{args.rounds}: {kind} ...")
                result[kind] = await measure(kind, args, cert, key, workdir)
                _progress(f"  {kind}: {result[kind]}")
            result["ratio"] = round(
                result["gateway"]["frames_per_s"] / max(1, result["echo"]["frames_per_s"]), 3
            )
            rounds.append(result)
    med = {
        kind: {k: statistics.median(r[kind][k] for r in rounds) for k in rounds[0][kind]} for kind in SERVERS
    }
    return {
        "echo_frames_per_s": round(med["echo"]["frames_per_s"]),
        "gateway_frames_per_s": round(med["gateway"]["frames_per_s"]),
        "ratio": statistics.median(r["ratio"] for r in rounds),
        "ratios_per_round": [r["ratio"] for r in rounds],
        "cpu_ratio": round(
            med["echo"]["server_cpu_us_per_frame"] / max(1e-9, med["gateway"]["server_cpu_us_per_frame"]), 3
        ),
        "server_cpu_us_per_frame": {k: med[k]["server_cpu_us_per_frame"] for k in SERVERS},
        "server_cpu_share": {k: med[k]["server_cpu_share"] for k in SERVERS},
        "client_cpu_share": {k: med[k]["client_cpu_share"] for k in SERVERS},
        "connections": args.connections,
        "batch": args.batch,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "loop": args.loop,
    }


def main(args: argparse.Namespace) -> int:
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    out = asyncio.run(run(args))
    if args.json:
        print(json.dumps(out, separators=(",", ":")))
    else:
        print(
            f"QUIC ingest {out['gateway_frames_per_s']} frames/s, bare aioquic echo {out['echo_frames_per_s']} "
            f"frames/s: ratio {out['ratio']} (per round {out['ratios_per_round']}); server CPU per frame "
            f"gateway {out['server_cpu_us_per_frame']['gateway']} µs, echo {out['server_cpu_us_per_frame']['echo']} µs"
        )
    return 0


def _child_main() -> None:
    parser = argparse.ArgumentParser(description="a server for telacd bench quic")
    parser.add_argument("--serve", choices=SERVERS, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    a = parser.parse_args()
    if a.loop == "uvloop":
        import uvloop

        uvloop.install()
    if a.serve == "echo":
        asyncio.run(_serve_echo(a.port, a.cert, a.key))
    else:
        asyncio.run(_serve_gateway(a.port, a.cert, a.key, a.workdir))


if __name__ == "__main__":
    _child_main()
