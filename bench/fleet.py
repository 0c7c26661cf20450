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
processes (see bench/gateway.py).

Measurements (``Fleet.stats``): frames sent and acknowledged, the round trip
of every acknowledgement, and every alarm: when it was sent and when its
0x8001 came back, so the load generator can match alarms to sessions.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

from protocols.jt808 import events as ev
from protocols.jt808.connection import Connection, Role
from protocols.jt808.messages import make_location

ALARM_BITS = {"crash": 29, "sos": 0, "rollover": 30}
TICK = 0.1  # seconds per wheel slot


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


class Stats:
    def __init__(self) -> None:
        self.connected = 0
        self.online = 0
        self.connect_errors = 0
        self.disconnects = 0
        self.sent = 0
        self.acked = 0
        self.rtts: list[float] = []  # seconds, every acknowledged frame (reset by take_rtts)
        self.alarms_sent = 0
        self.alarms_acked = 0
        self.alarm_log: list[tuple[str, str, float, float | None]] = []  # (phone, kind, sent, acked)
        self.service_sent = 0
        self.commands_answered = 0

    def take_rtts(self) -> list[float]:
        out, self.rtts = self.rtts, []
        return out


class SimTerminal(asyncio.Protocol):
    __slots__ = (
        "alarm_pending",
        "conn",
        "fleet",
        "heading",
        "last_sent",
        "lat",
        "lon",
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
        stats = self.fleet.stats
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
        """Move and report (the wheel calls this every report interval)."""
        if not self.online or self.transport is None:
            return
        rng = self.fleet.rng
        self.heading = (self.heading + rng.gauss(0, 20)) % 360
        self.speed = min(120.0, max(0.0, self.speed + rng.gauss(0, 5)))
        km = self.speed * dt / 3600
        self.lat += km / 111.0 * math.cos(math.radians(self.heading))
        self.lon += km / (111.0 * math.cos(math.radians(self.lat))) * math.sin(math.radians(self.heading))
        kind = self.alarm_pending
        self.alarm_pending = None
        if kind is not None:
            stats = self.fleet.stats
            stats.alarm_log.append((self.phone, kind, time.monotonic(), None))
            stats.alarms_sent += 1
            self._send(
                self.conn.report_location(self._location(1 << ALARM_BITS[kind])), len(stats.alarm_log) - 1
            )
        else:
            self._send(self.conn.report_location(self._location(0)))

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

    def phone(self, i: int) -> str:
        return f"{self.opts.phone_base + self.opts.first_index + i:012d}"

    async def start(self) -> None:
        """Connect every vehicle over ``ramp_up`` seconds, then report, alarm and heartbeat."""
        self._tasks.append(asyncio.get_running_loop().create_task(self._connect_all()))
        self._tasks.append(asyncio.get_running_loop().create_task(self._run_wheel()))
        self._tasks.append(asyncio.get_running_loop().create_task(self._events()))

    async def _connect_all(self) -> None:
        loop = asyncio.get_running_loop()
        opts = self.opts
        ips = itertools.cycle(opts.source_ips or [None])
        n = opts.vehicles
        start = loop.time()
        lat0, lon0 = opts.center
        sem = asyncio.Semaphore(256)

        async def one(i: int) -> None:
            r = opts.spread_km / 111.0
            term = SimTerminal(
                self, self.phone(i), lat0 + self.rng.uniform(-r, r), lon0 + self.rng.uniform(-r, r)
            )
            ip = next(ips)
            async with sem:
                try:
                    await loop.create_connection(
                        lambda: term, opts.host, opts.port, local_addr=(ip, 0) if ip else None
                    )
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

    async def _run_wheel(self) -> None:
        loop = asyncio.get_running_loop()
        slot = 0
        next_tick = loop.time()
        hb_slot = 0
        while not self._stopping:
            next_tick += TICK / self.rate_scale
            delay = next_tick - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_tick = loop.time()  # we fell behind: do not try to catch up in a burst
            dt = self.opts.report_interval / self.rate_scale
            for term in self._wheel[slot]:
                term.tick(dt)
            slot = (slot + 1) % self._slots
            if self.opts.heartbeat_interval < self.opts.report_interval:
                now = time.monotonic()
                for term in self._wheel[hb_slot]:
                    term.heartbeat_if_quiet(now)
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
            if not self.terminals:
                continue
            term = self.rng.choice(self.terminals)
            if not term.online:
                continue
            if self.rng.random() < opts.alarm_rate / rate:
                term.raise_alarm(self.rng.choices(kinds, weights)[0])
            else:
                term.service_call(self.rng.choice(SERVICE_REQUESTS))

    async def stop(self) -> None:
        self._stopping = True
        for t in self._tasks:
            t.cancel()
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
