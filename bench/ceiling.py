"""``telacd bench ceiling``: the fastest a JT/T 808 server can answer here, the gateway's yardstick.

A bare uvloop server that does the least a server must do to answer every
frame: split the stream on 0x7E (the codec's compiled ``Splitter``), read the
message id, phone and serial from the header (unescaping only the frames that
contain a 0x7D), and write one 0x8001 per frame, all the answers of one read
in one ``transport.write``. No body decode, no storage, no sessions; the
only check is the one the splitter makes to find where frames start after
junk (escapes, length and checksum of each candidate: about 20 ns a frame,
under 1% of what this server spends per frame). It runs as ``--workers`` processes on one port (SO_REUSEPORT), like
the gateway, and is driven by the same closed-loop fleet
(:mod:`bench.fleet`, ``saturate``), so ``telacd bench gateway --vs-ceiling``
can quote the gateway's ingest rate as a fraction of this one measured in the
same run.

``--json`` prints ``{"frames_per_s": ...}`` plus the run's parameters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from protocols.jt808.impl import Splitter, encode_general_response, unescape


class CeilingProtocol(asyncio.Protocol):
    __slots__ = ("serial", "splitter", "transport")

    def __init__(self) -> None:
        self.splitter = Splitter(4096)
        self.serial = 0
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        out = []
        for frame in self.splitter.feed(data):
            if type(frame) is not bytes or len(frame) < 15:
                continue  # FrameTooLargeError, or too short for a header
            if 0x7D in frame:
                frame = unescape(frame[1:-1])
                off = 0
            else:
                off = 1
            msg_id = frame[off] << 8 | frame[off + 1]
            # JT/T 808-2019 §4.4.3: attribute bit 14 marks the 2019 header (version byte, 10-byte phone)
            if frame[off + 2] & 0x40:
                version, proto, phone, s = 2019, frame[off + 4], frame[off + 5 : off + 15], off + 15
            else:
                version, proto, phone, s = 2013, 1, frame[off + 4 : off + 10], off + 10
            serial = self.serial
            self.serial = (serial + 1) & 0xFFFF
            out.append(
                encode_general_response(
                    phone.hex(), version, proto, serial, frame[s] << 8 | frame[s + 1], msg_id, 0
                )
            )
        if out:
            self.transport.write(b"".join(out))


async def serve(host: str, port: int, ready: Any = None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(CeilingProtocol, host, port, reuse_port=True, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready()
    await stop.wait()
    server.close()


class CeilingServers:
    """``workers`` ceiling processes on one port; ``start()`` returns once all listen."""

    def __init__(self, host: str, port: int, workers: int = 1) -> None:
        self.host, self.port, self.workers = host, port, max(1, workers)
        self.procs: list[subprocess.Popen] = []

    async def start(self, timeout: float = 20.0) -> None:
        for _ in range(self.workers):
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "bench.ceiling", "--serve", f"{self.host}:{self.port}"],
                    stdout=subprocess.PIPE,
                )
            )
        loop = asyncio.get_running_loop()
        for p in self.procs:  # each prints one line when it listens
            line = await asyncio.wait_for(loop.run_in_executor(None, p.stdout.readline), timeout)
            if not line:
                raise RuntimeError("a ceiling server did not start")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]


def free_port(host: str = "127.0.0.1") -> int:
    s = socket.socket()
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vehicles", type=int, default=2000, help="connections of the closed-loop fleet")
    parser.add_argument("--window", type=int, default=8, help="reports in flight per vehicle")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds run before measuring")
    parser.add_argument("--workers", type=int, default=2, help="server processes (SO_REUSEPORT)")
    parser.add_argument("--fleet-procs", type=int, default=1, help="fleet processes (0: in this process)")
    parser.add_argument("--fleet-nice", type=int, default=10, help="niceness of the fleet processes (0: off)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


async def measure_closed_loop(
    fleet: Any, warmup: float, duration: float, progress: Any = None
) -> dict[str, Any]:
    """Saturate (every vehicle keeps its window in flight) and measure acknowledged frames/s."""
    await fleet.set_load(saturate=True)
    await asyncio.sleep(warmup)
    a = await fleet.snapshot()
    t_end = time.monotonic() + duration
    while time.monotonic() < t_end:
        await asyncio.sleep(min(1.0, max(0.0, t_end - time.monotonic())))
        if progress is not None:
            progress(await fleet.snapshot(), a)
    b = await fleet.snapshot()
    await fleet.set_load(saturate=False, paused=True)
    dt = b["at"] - a["at"]
    return {
        "frames_per_s": round((b["acked"] - a["acked"]) / dt),
        "sent_per_s": round((b["sent"] - a["sent"]) / dt),
        "seconds": round(dt, 2),
        "connections": b["online"],
    }


async def run_ceiling(args: argparse.Namespace) -> dict[str, Any]:
    from .fleet import FleetOptions, make_fleet

    port = free_port()
    servers = CeilingServers("127.0.0.1", port, args.workers)
    await servers.start()
    fleet = make_fleet(
        FleetOptions(
            port=port,
            vehicles=args.vehicles,
            report_interval=3600.0,
            heartbeat_interval=3600.0,
            alarm_rate=0.0,
            ramp_up=min(3.0, args.vehicles / 2000),
            register=False,
            window=args.window,
        ),
        args.fleet_procs,
        args.fleet_nice,
    )
    try:
        await fleet.start()
        await _wait_online(fleet, args.vehicles, 30.0)
        result = await measure_closed_loop(fleet, args.warmup, args.duration)
    finally:
        await fleet.stop()
        servers.stop()
    return {
        **result,
        "vehicles": args.vehicles,
        "window": args.window,
        "workers": args.workers,
        "fleet_procs": args.fleet_procs,
    }


async def _wait_online(fleet: Any, n: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        snap = await fleet.snapshot()
        if snap["online"] >= n or time.monotonic() > deadline:
            return snap["online"]
        await asyncio.sleep(0.2)


def main(args: argparse.Namespace) -> int:
    import uvloop

    result = uvloop.run(run_ceiling(args))
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"ceiling: {result['frames_per_s']:,} frames/s acknowledged ({result['workers']} server processes, "
            f"{result['connections']} connections, window {result['window']}, {result['seconds']} s)"
        )
    return 0


def _serve_main() -> None:
    parser = argparse.ArgumentParser(description="one ceiling server process")
    parser.add_argument("--serve", required=True, metavar="HOST:PORT")
    a = parser.parse_args()
    host, port = a.serve.rsplit(":", 1)
    import uvloop

    def ready() -> None:
        print(f"listening {os.getpid()}", flush=True)

    uvloop.run(serve(host, int(port), ready))


if __name__ == "__main__":
    _serve_main()
