"""A fleet of simulated vehicle terminals (TCUs) on the codec's terminal role.

Each terminal is an asyncio Protocol holding a terminal-role
:class:`~protocols.jt808.connection.Connection`: it registers, authenticates,
reports its position every ``report_interval`` seconds (driving a random walk),
sends heartbeats when it has nothing else to say, raises alarms (crash, SOS,
rollover) and one-key service calls at fleet-wide rates, and answers every
platform command (0x0001, or 0x0201 for a locate).

Scale: reports are scheduled on a timing wheel of 100 ms slots, not one timer
per vehicle, and per-terminal state is a handful of slots, so one process
drives tens of thousands of terminals. Client sockets are spread over source
addresses in 127.0.0.0/8 (``source_ips``) so that more connections than one
address has ephemeral ports fit. A process may hold at most RLIMIT_NOFILE
sockets (20,000 on the reference machine): larger fleets run as several
processes, :class:`ShardedFleet`, each one a :class:`Fleet` in
``python -m bench.fleet --shard`` driven over its stdin/stdout.

Two ways to offer load:

* **open loop** (the default): every vehicle reports on its interval, scaled by
  ``rate_scale``. With ``window`` > 0 a vehicle that already has ``window``
  reports unanswered skips the next one and counts it in ``deferred``, as a
  real TCU keeps unacknowledged positions for a later blind-area upload
  (0x0704) instead of piling them onto a stalled link; alarms are never
  skipped.
* **closed loop** (``saturate``): every vehicle keeps ``window`` reports in
  flight and sends the next one as soon as one is acknowledged. This finds
  the highest rate a server answers, whatever it is: the bench's ``ceiling``
  and the gateway's throughput are both measured this way.

Measurements (``Fleet.stats``): frames sent and acknowledged, the round trip
of every acknowledgement (microseconds, into an HDR histogram by
:meth:`Fleet.snapshot`), and every alarm: when it was sent and when its 0x8001
came back (``alarm_log``), so the load generator can match alarms to sessions.
Times are ``time.monotonic()``, one clock for every process on the machine.

The connect step is pluggable: ``FleetOptions.transport`` names an entry of
``CONNECTORS`` (``"tcp"`` here), a coroutine that connects one terminal.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import itertools
import math
import os
import random
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import msgpack

from protocols.jt808 import events as ev
from protocols.jt808.connection import Connection, Role
from protocols.jt808.impl import encode_location
from protocols.jt808.messages import make_location

ALARM_BITS = {"crash": 29, "sos": 0, "rollover": 30}
TICK = 0.1  # seconds per wheel slot
REENCODE_S = 5.0  # a plain report re-uses its body until the vehicle has driven this long (see tick)
RTT_HIGHEST_US = 600_000_000  # ten minutes: anything later is clipped into the top bucket


@dataclass
class FleetOptions:
    host: str = "127.0.0.1"
    port: int = 6808
    vehicles: int = 100
    report_interval: float = 5.0
    heartbeat_interval: float = 60.0
    alarm_rate: float = 0.1  # alarms per second across the fleet
    alarm_mix: dict[str, float] = field(default_factory=lambda: {"crash": 0.4, "sos": 0.4, "rollover": 0.2})
    service_rate: float = 0.0  # one-key service calls per second across the fleet
    ramp_up: float = 5.0  # seconds to connect every vehicle
    phone_base: int = 13900000000
    first_index: int = 0  # this shard's first vehicle number
    source_ips: list[str] = field(default_factory=list)  # e.g. ["127.0.1.1", "127.0.1.2"]
    version: int = 2013
    center: tuple[float, float] = (22.543096, 114.057865)  # Shenzhen
    spread_km: float = 30.0
    seed: int = 1
    register: bool = True  # False: authenticate with the phone as code (devices that never register)
    transport: str = "tcp"  # a key of CONNECTORS
    window: int = 0  # unanswered reports a vehicle allows itself (0: no limit); see the module docstring
    saturate: bool = False  # closed loop: keep ``window`` reports in flight per vehicle
    connect_concurrency: int = 256


class Stats:
    def __init__(self) -> None:
        self.connected = 0
        self.online = 0
        self.connect_errors = 0
        self.disconnects = 0
        self.sent = 0
        self.acked = 0
        self.deferred = 0  # open-loop reports skipped because the vehicle's window was full
        self.rtts = array.array("d")  # seconds, every acknowledged frame since the last take_rtts()
        self.alarms_sent = 0
        self.alarms_acked = 0
        self.alarm_log: list[tuple[str, str, float, float | None]] = []  # (phone, kind, sent, acked)
        self.service_sent = 0
        self.commands_answered = 0

    def take_rtts(self) -> array.array:
        out, self.rtts = self.rtts, array.array("d")
        return out

    COUNTERS = (
        "connected",
        "online",
        "connect_errors",
        "disconnects",
        "sent",
        "acked",
        "deferred",
        "alarms_sent",
        "alarms_acked",
        "service_sent",
        "commands_answered",
    )

    def counters(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.COUNTERS}


def rtt_histogram(rtts: array.array) -> Any:
    """An HDR histogram (microseconds, 3 significant digits) of round trips in seconds.

    Recording value by value costs ~2 us each in Python; values are rounded to
    whole microseconds and recorded once per distinct value with its count.
    """
    import numpy as np
    from hdrh.histogram import HdrHistogram

    h = HdrHistogram(1, RTT_HIGHEST_US, 3)
    if len(rtts):
        us = np.clip(np.rint(np.frombuffer(rtts, dtype=np.float64) * 1e6), 1, RTT_HIGHEST_US).astype(np.int64)
        values, counts = np.unique(us, return_counts=True)
        for v, c in zip(values.tolist(), counts.tolist()):
            h.record_value(v, c)
    return h


class SimTerminal(asyncio.Protocol):
    __slots__ = (
        "alarm_bits",
        "alarm_pending",
        "body",
        "conn",
        "fleet",
        "heading",
        "last_loc",
        "last_sent",
        "lat",
        "lon",
        "moved",
        "online",
        "outstanding",
        "phone",
        "speed",
        "transport",
    )

    def __init__(self, fleet: Fleet, phone: str, lat: float, lon: float) -> None:
        self.fleet = fleet
        self.phone = phone
        self.conn = Connection(Role.TERMINAL, phone=phone, version=fleet.opts.version)
        self.transport: Any = None
        self.online = False
        self.lat, self.lon = lat, lon
        self.heading = fleet.rng.uniform(0, 360)
        self.speed = fleet.rng.uniform(0, 80)
        self.last_sent = 0.0
        self.outstanding: dict[int, tuple[float, int]] = {}  # serial -> (sent at, alarm log index or -1)
        self.alarm_pending: str | None = None
        self.alarm_bits = 0  # alarm bits of the last report sent
        self.last_loc: Any = None
        self.body: bytes | None = None  # the encoded 0x0200 body of the last plain report
        self.moved = 0.0  # seconds driven since the body was encoded

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.fleet.stats.connected += 1
        if self.fleet.opts.register:
            self._send(
                self.conn.register(
                    maker="TELAC", model="SIM-1", terminal_id=self.phone[-7:], plate=f"SIM{self.phone[-5:]}"
                )
            )
        else:
            self._send(self.conn.authenticate(self.phone))

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        fleet = self.fleet
        stats = fleet.stats
        for e in self.conn.receive_data(data, now):
            t = type(e)
            if t is ev.Acknowledged:
                body = e.message.body
                sent = self.outstanding.pop(body.reply_serial, None)
                if sent is not None:
                    stats.acked += 1
                    stats.rtts.append(now - sent[0])
                    if sent[1] >= 0:
                        phone, kind, t0, _ = stats.alarm_log[sent[1]]
                        stats.alarm_log[sent[1]] = (phone, kind, t0, now)
                        stats.alarms_acked += 1
                if body.reply_id == 0x0102 and body.result == 0 and not self.online:
                    self.online = True
                    stats.online += 1
            elif t is ev.RegisterAnswered:
                if e.message.body.result == 0:
                    self._send(self.conn.authenticate())
            elif t is ev.CommandReceived:
                if e.message.msg_id == 0x8201:
                    loc = self._location(0)
                    self.transport.write(self.conn.reply_location(e, loc))
                else:
                    self.transport.write(self.conn.ack(e))
                stats.commands_answered += 1
        if fleet.saturate and self.online:
            self._refill()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.online:
            self.fleet.stats.online -= 1
        self.online = False
        self.fleet.stats.connected -= 1
        self.fleet.stats.disconnects += 1
        self.transport = None

    # -- sending -------------------------------------------------------------------------------

    def _send(self, serial_data: tuple[int, bytes], alarm_index: int = -1) -> None:
        serial, data = serial_data
        if self.transport is None:
            return
        now = time.monotonic()
        self.outstanding[serial] = (now, alarm_index)
        if len(self.outstanding) > 64:  # unanswered frames are not kept forever
            self.outstanding.pop(next(iter(self.outstanding)))
        self.last_sent = now
        self.fleet.stats.sent += 1
        self.transport.write(data)

    def _refill(self) -> None:
        """Closed loop: top the reports in flight up to the window, in one write."""
        missing = self.fleet.window - len(self.outstanding)
        if missing <= 0 or self.transport is None:
            return
        loc = self.last_loc
        if loc is None:
            loc = self.last_loc = self._location(0)
        now = time.monotonic()
        report = self.conn.report_location
        out = []
        outstanding = self.outstanding
        for _ in range(missing):
            serial, data = report(loc)
            outstanding[serial] = (now, -1)
            out.append(data)
        self.last_sent = now
        self.fleet.stats.sent += missing
        self.transport.write(b"".join(out))

    def _location(self, alarm: int) -> Any:
        return make_location(
            round(self.lat, 6),
            round(self.lon, 6),
            device_time=int(time.time()) + 8 * 3600,
            alarm=alarm,
            speed_kmh=round(self.speed, 1),
            direction=int(self.heading) % 360,
            altitude=20,
            items=((0x01, 123456), (0x30, 25), (0x31, 12)),
        )

    def tick(self, dt: float) -> None:
        """Report (the wheel calls this every report interval).

        A plain report re-sends the last encoded body (new serial, new frame)
        until the vehicle has driven ``REENCODE_S`` seconds since it was
        encoded; then it moves and encodes again. At tens of thousands of
        reports a second the random walk and the body encoding were a third of
        the fleet's Python time, and the load it can offer on a shared 2-core
        machine is what limits the overload benchmark. Alarm reports are
        always fresh.
        """
        if not self.online or self.transport is None:
            return
        kind = self.alarm_pending
        fleet = self.fleet
        if kind is None and fleet.window and len(self.outstanding) >= fleet.window:
            fleet.stats.deferred += 1
            return
        self.alarm_pending = None
        self.moved += dt
        if kind is not None:
            self._move()
            stats = fleet.stats
            bit = 1 << ALARM_BITS[kind]
            if self.alarm_bits & bit:
                # the previous report still had this bit set: clear it first, or there is no edge
                self._send(self.conn.report_location(self._location(0)))
            frame = self.conn.report_location(self._location(bit))
            # stamped once built, as it is written: the simulator's own encoding is not the gateway's time
            stats.alarm_log.append((self.phone, kind, time.monotonic(), None))
            stats.alarms_sent += 1
            self.alarm_bits = bit
            self._send(frame, len(stats.alarm_log) - 1)
            return
        if self.alarm_bits or self.body is None or self.moved >= REENCODE_S:
            self._move()
            self.alarm_bits = 0
            self.last_loc = loc = self._location(0)
            self.body = encode_location(loc)
        self._send(self.conn.send(0x0200, self.body))

    def _move(self) -> None:
        """The random walk over the time driven since the last move."""
        rng = self.fleet.rng
        dt, self.moved = self.moved, 0.0
        self.heading = (self.heading + rng.gauss(0, 20)) % 360
        self.speed = min(120.0, max(0.0, self.speed + rng.gauss(0, 5)))
        km = self.speed * dt / 3600
        self.lat += km / 111.0 * math.cos(math.radians(self.heading))
        self.lon += km / (111.0 * math.cos(math.radians(self.lat))) * math.sin(math.radians(self.heading))

    def raise_alarm(self, kind: str) -> None:
        """Report at once with the alarm bit set; the next report clears it (an edge per alarm)."""
        if not self.online or self.transport is None:
            return
        self.alarm_pending = kind
        self.tick(0.0)

    def service_call(self, text: str) -> None:
        if self.online and self.transport is not None:
            self.fleet.stats.service_sent += 1
            self._send(self.conn.service_call(text))

    def heartbeat_if_quiet(self, now: float) -> None:
        if (
            self.online
            and self.transport is not None
            and now - self.last_sent >= self.fleet.opts.heartbeat_interval
        ):
            self._send(self.conn.heartbeat())


# -- connecting ---------------------------------------------------------------------------------

Connector = Callable[["Fleet", SimTerminal, "str | None"], Awaitable[None]]


async def connect_tcp(fleet: Fleet, term: SimTerminal, source_ip: str | None) -> None:
    """One terminal over TCP from ``source_ip`` (any port); raises OSError on failure."""
    loop = asyncio.get_running_loop()
    opts = fleet.opts
    await loop.create_connection(
        lambda: term, opts.host, opts.port, local_addr=(source_ip, 0) if source_ip else None
    )


# transport name -> connector; other transports (QUIC) register themselves here
CONNECTORS: dict[str, Connector] = {"tcp": connect_tcp}


class Fleet:
    def __init__(self, opts: FleetOptions) -> None:
        self.opts = opts
        self.rng = random.Random(opts.seed + opts.first_index)
        self.stats = Stats()
        self.terminals: list[SimTerminal] = []
        self._slots = max(1, round(opts.report_interval / TICK))
        self._wheel: list[list[SimTerminal]] = [[] for _ in range(self._slots)]
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self.rate_scale = 1.0  # multiplies report frequency (overload phases)
        self.saturate = opts.saturate
        self.window = opts.window
        self.paused = False  # no reports, alarms or calls (connections kept, heartbeats go on)
        self.connected_all = asyncio.Event()

    def phone(self, i: int) -> str:
        return f"{self.opts.phone_base + self.opts.first_index + i:012d}"

    @property
    def offered_per_s(self) -> float:
        """Open-loop report rate the fleet is set to (reports/s), once every vehicle is online."""
        return len(self.terminals) / self.opts.report_interval * self.rate_scale

    async def start(self) -> None:
        """Connect every vehicle over ``ramp_up`` seconds, then report, alarm and heartbeat."""
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._connect_all()))
        self._tasks.append(loop.create_task(self._run_wheel()))
        self._tasks.append(loop.create_task(self._events()))

    def set_load(
        self,
        *,
        rate_scale: float | None = None,
        saturate: bool | None = None,
        window: int | None = None,
        paused: bool | None = None,
    ) -> None:
        """Change the offered load while running (the bench's phases)."""
        if rate_scale is not None:
            self.rate_scale = max(1e-6, rate_scale)
        if window is not None:
            self.window = window
        if paused is not None:
            self.paused = paused
        if saturate is not None:
            self.saturate = saturate
            if saturate and not self.paused:
                for term in self.terminals:
                    if term.online:
                        term._refill()

    async def _connect_all(self) -> None:
        loop = asyncio.get_running_loop()
        opts = self.opts
        ips = itertools.cycle(opts.source_ips or [None])
        n = opts.vehicles
        start = loop.time()
        lat0, lon0 = opts.center
        sem = asyncio.Semaphore(opts.connect_concurrency)
        if opts.transport == "quic" and "quic" not in CONNECTORS:  # also in a shard (__main__)
            from bench.quic_client import connect_fleet_terminal

            CONNECTORS["quic"] = connect_fleet_terminal
        connector = CONNECTORS[opts.transport]

        async def one(i: int) -> None:
            r = opts.spread_km / 111.0
            term = SimTerminal(
                self, self.phone(i), lat0 + self.rng.uniform(-r, r), lon0 + self.rng.uniform(-r, r)
            )
            ip = next(ips)
            async with sem:
                try:
                    await connector(self, term, ip)
                except OSError:
                    self.stats.connect_errors += 1
                    return
            self.terminals.append(term)
            self._wheel[i % self._slots].append(term)

        pending = []
        for i in range(n):
            if self._stopping:
                break
            due = start + opts.ramp_up * i / max(1, n)
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(loop.create_task(one(i)))
            if len(pending) >= 1024:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        self.connected_all.set()

    async def _run_wheel(self) -> None:
        """Turn the wheel at ``rate_scale`` times its natural speed, catching up after a late wakeup.

        The slots due are computed from the time elapsed, so a loop busy with
        acknowledgements does not silently lower the offered rate; a stall is
        made up at most one revolution at a time (no vehicle reports twice in
        one burst).
        """
        loop = asyncio.get_running_loop()
        slot = hb_slot = 0
        due = 0.0
        last = loop.time()
        while not self._stopping:
            await asyncio.sleep(max(0.001, TICK / self.rate_scale))
            now = loop.time()
            due += (now - last) * self.rate_scale / TICK
            last = now
            n = min(int(due), self._slots)
            due = min(due - n, float(self._slots))
            n_reports = 0 if self.saturate or self.paused else n
            dt = self.opts.report_interval / self.rate_scale
            wheel = self._wheel
            for _ in range(n_reports):
                for term in wheel[slot]:
                    term.tick(dt)
                slot = (slot + 1) % self._slots
            if self.opts.heartbeat_interval < self.opts.report_interval or self.saturate or self.paused:
                mono = time.monotonic()
                for _ in range(n):
                    for term in wheel[hb_slot]:
                        term.heartbeat_if_quiet(mono)
                    hb_slot = (hb_slot + 1) % self._slots

    async def _events(self) -> None:
        """Alarms and service calls as Poisson processes over the whole fleet."""
        opts = self.opts
        kinds = list(opts.alarm_mix)
        weights = [opts.alarm_mix[k] for k in kinds]
        rate = opts.alarm_rate + opts.service_rate
        if rate <= 0:
            return
        while not self._stopping:
            await asyncio.sleep(self.rng.expovariate(rate))
            if not self.terminals or self.paused:
                continue
            term = self.rng.choice(self.terminals)
            if not term.online:
                continue
            if self.rng.random() < opts.alarm_rate / rate:
                term.raise_alarm(self.rng.choices(kinds, weights)[0])
            else:
                term.service_call(self.rng.choice(SERVICE_REQUESTS))

    def snapshot(self) -> dict[str, Any]:
        """Counters now, and an HDR histogram of the round trips since the last snapshot."""
        out: dict[str, Any] = self.stats.counters()
        out["rtt"] = rtt_histogram(self.stats.take_rtts())
        out["at"] = time.monotonic()
        return out

    async def stop(self) -> None:
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for term in self.terminals:
            if term.transport is not None:
                term.transport.close()
        await asyncio.sleep(0)


SERVICE_REQUESTS = [
    "请帮我预约保养",
    "Please book a service appointment",
    "导航到最近的充电站",
    "Flat tyre, need roadside assistance",
    "车辆故障灯亮了",
]


# -- several processes ----------------------------------------------------------------------------
#
# A shard is ``python -m bench.fleet --shard``: it reads length-prefixed msgpack
# commands on stdin and answers on stdout (the same framing as the agent
# protocol's TCP encoding). Commands: {"op": "start", "options": {...}},
# {"op": "load", ...set_load keywords}, {"op": "snapshot"}, {"op": "alarms"},
# {"op": "stop"}. Every command is answered with one map.

_LEN = struct.Struct(">I")


def _frame(msg: dict[str, Any]) -> bytes:
    body = msgpack.packb(msg, use_bin_type=True)
    return _LEN.pack(len(body)) + body


class _Shard:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lock = asyncio.Lock()

    async def call(self, msg: dict[str, Any]) -> dict[str, Any]:
        async with self.lock:
            self.proc.stdin.write(_frame(msg))
            await self.proc.stdin.drain()
            head = await self.proc.stdout.readexactly(4)
            body = await self.proc.stdout.readexactly(_LEN.unpack(head)[0])
            return msgpack.unpackb(body, raw=False, strict_map_key=False)


class ShardedFleet:
    """A fleet split over ``shards`` processes, driven like a :class:`Fleet`.

    Vehicles are dealt out in contiguous blocks (phones stay unique); each
    shard gets its own source addresses (``127.0.<10 + shard>.1-8``) unless
    ``source_ips`` is given, in which case the list is dealt round-robin.
    ``nice`` lowers the shards' scheduling priority: a load generator sharing
    the machine with the server under test should not take the CPU the server
    needs, or the server's latency measures the generator.
    """

    def __init__(self, opts: FleetOptions, shards: int, nice: int = 0) -> None:
        self.opts = opts
        self.n = max(1, shards)
        self.nice = nice
        self._shards: list[_Shard] = []
        self.rate_scale = 1.0
        self.stats_counters: dict[str, int] = {k: 0 for k in Stats.COUNTERS}

    def shard_options(self) -> list[FleetOptions]:
        out = []
        per, extra = divmod(self.opts.vehicles, self.n)
        first = self.opts.first_index
        for k in range(self.n):
            count = per + (1 if k < extra else 0)
            if self.opts.source_ips:
                ips = self.opts.source_ips[k :: self.n] or self.opts.source_ips
            else:
                ips = [f"127.0.{10 + k}.{j}" for j in range(1, 9)]
            o = FleetOptions(
                **{
                    **asdict(self.opts),
                    "vehicles": count,
                    "first_index": first,
                    "source_ips": ips,
                    "seed": self.opts.seed + k,
                }
            )
            # alarms and calls are fleet-wide rates: each shard raises its share
            share = count / max(1, self.opts.vehicles)
            o.alarm_rate = self.opts.alarm_rate * share
            o.service_rate = self.opts.service_rate * share
            first += count
            out.append(o)
        return out

    async def start(self) -> None:
        env = dict(os.environ)
        for o in self.shard_options():
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.fleet",
                "--shard",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
                preexec_fn=(lambda: os.nice(self.nice)) if self.nice else None,
            )
            shard = _Shard(proc)
            self._shards.append(shard)
            await shard.call({"op": "start", "options": asdict(o)})

    @property
    def pids(self) -> list[int]:
        return [s.proc.pid for s in self._shards]

    async def set_load(self, **kw: Any) -> None:
        if kw.get("rate_scale") is not None:
            self.rate_scale = kw["rate_scale"]
        await asyncio.gather(*(s.call({"op": "load", **kw}) for s in self._shards))

    async def snapshot(self) -> dict[str, Any]:
        from hdrh.histogram import HdrHistogram

        parts = await asyncio.gather(*(s.call({"op": "snapshot"}) for s in self._shards))
        out: dict[str, Any] = {k: sum(p[k] for p in parts) for k in Stats.COUNTERS}
        h = HdrHistogram(1, RTT_HIGHEST_US, 3)
        for p in parts:
            h.add(HdrHistogram.decode(p["rtt"]))
        out["rtt"] = h
        out["at"] = time.monotonic()
        return out

    async def alarm_log(self) -> list[tuple[str, str, float, float | None]]:
        parts = await asyncio.gather(*(s.call({"op": "alarms"}) for s in self._shards))
        return [tuple(a) for p in parts for a in p["alarms"]]

    async def stop(self) -> None:
        for s in self._shards:
            try:
                await asyncio.wait_for(s.call({"op": "stop"}), 10)
            except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
                pass
            if s.proc.returncode is None:
                try:
                    s.proc.stdin.close()
                    await asyncio.wait_for(s.proc.wait(), 10)
                except TimeoutError:
                    s.proc.kill()
                    await s.proc.wait()


class LocalFleet:
    """A :class:`Fleet` in this process behind the :class:`ShardedFleet` interface."""

    def __init__(self, opts: FleetOptions) -> None:
        self.fleet = Fleet(opts)
        self.opts = opts

    @property
    def pids(self) -> list[int]:
        return [os.getpid()]

    @property
    def rate_scale(self) -> float:
        return self.fleet.rate_scale

    async def start(self) -> None:
        await self.fleet.start()

    async def set_load(self, **kw: Any) -> None:
        self.fleet.set_load(**kw)

    async def snapshot(self) -> dict[str, Any]:
        return self.fleet.snapshot()

    async def alarm_log(self) -> list[tuple[str, str, float, float | None]]:
        return list(self.fleet.stats.alarm_log)

    async def stop(self) -> None:
        await self.fleet.stop()


def make_fleet(opts: FleetOptions, shards: int, nice: int = 0) -> LocalFleet | ShardedFleet:
    """In this process for ``shards`` <= 0, else over that many processes (at ``nice``, if given)."""
    return LocalFleet(opts) if shards <= 0 else ShardedFleet(opts, shards, nice)


async def _shard_main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    out = sys.stdout.buffer
    fleet: Fleet | None = None

    def reply(msg: dict[str, Any]) -> None:
        out.write(_frame(msg))
        out.flush()

    while True:
        try:
            head = await reader.readexactly(4)
            msg = msgpack.unpackb(await reader.readexactly(_LEN.unpack(head)[0]), raw=False)
        except (asyncio.IncompleteReadError, ConnectionError):
            break
        op = msg.pop("op")
        if op == "start":
            o = msg["options"]
            o["center"] = tuple(o["center"])
            fleet = Fleet(FleetOptions(**o))
            await fleet.start()
            reply({"ok": True})
        elif op == "load":
            fleet.set_load(**msg)
            reply({"ok": True})
        elif op == "snapshot":
            snap = fleet.snapshot()
            snap["rtt"] = snap["rtt"].encode()
            reply(snap)
        elif op == "alarms":
            reply({"alarms": fleet.stats.alarm_log})
        elif op == "stop":
            await fleet.stop()
            reply({"ok": True})
            break
    if fleet is not None and not fleet._stopping:
        await fleet.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="a fleet shard (driven by bench.fleet.ShardedFleet)")
    parser.add_argument("--shard", action="store_true", required=True)
    parser.parse_args()
    import uvloop

    uvloop.run(_shard_main())


if __name__ == "__main__":
    main()
