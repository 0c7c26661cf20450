"""The TCU listener: one asyncio Protocol per vehicle connection, over the sans-IO codec.

A Protocol here does four things (STYLE.md §5): feed bytes to the
:class:`~protocols.jt808.connection.Connection`, act on its events, write the
bytes it returns, and keep one timer. The work per event is in the
:class:`~gateway.app.Gateway`'s components; this module is the translation.

The hot path is a batch of plain location reports: the codec hands them over
already wrapped as ``LocationReported``; each becomes one row for the batched
location writer and one 0x8001, and all the acknowledgements of one read go
out in a single ``transport.write``. A report whose alarm bits *rise* on a
trigger bit (crash, SOS, rollover...) leaves the hot path: its session is
committed to the store first, and only then is the frame acknowledged
(persist, then acknowledge). If the commit fails the frame is not
acknowledged; the vehicle re-sends it and the edge is seen again.

Limits per connection (``[terminals]``): an incomplete frame larger than
``max_buffer`` closes the connection (the codec never holds more), so does
the ``max_malformed``-th malformed frame; a budget of ``max_frames_per_s``
frames per one-second window: the frames of a read beyond what is left of it
are held (in order) and reading is paused until the window is over, when the
next window's budget takes the held frames first (TCP pushes back on the
vehicle; nothing is dropped, the rate holds); a write backlog above
``send_buffer_high`` pauses reading until the kernel has taken it; the
kernel's receive buffer is ``rcvbuf`` bytes, so what a vehicle can have queued
ahead of its own alert is bounded too.

Overload (:class:`OverloadPolicy`, docs/performance.md): when the event loop
runs late or the location backlog grows, the gateway stops storing every GPS
report — each connection stores one position per ``overload_keep_s`` and the
rest are acknowledged and counted as shed — while alerts keep the whole path:
an alarm edge submits its session commit in the same turn of the loop that
read it, ahead of the GPS rows of that read.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import socket
import time
from typing import TYPE_CHECKING, Any

from protocols.jt808 import events as ev
from protocols.jt808 import ids
from protocols.jt808.connection import Connection, Role
from protocols.jt808.errors import Jt808ProtocolError

from . import alerttrace

if TYPE_CHECKING:
    from .app import Gateway
    from .terminals import Vehicle

log = logging.getLogger("telacd.tcu")

_LOCATION_REPORTED = ev.LocationReported
_RESULT_NOT_SUPPORTED = int(ids.Result.NOT_SUPPORTED)
_RESULT_FAILURE = int(ids.Result.FAILURE)
# ids that are answers or reports the gateway knows but does not act on: acknowledged with 0
_KNOWN_QUIET = {
    0x0104,
    0x0107,
    0x0108,
    0x0301,
    0x0302,
    0x0303,
    0x0500,
    0x0700,
    0x0701,
    0x0702,
    0x0805,
    0x0901,
    0x0A00,
}


class OverloadPolicy:
    """Decides how much GPS to store so that alerts stay fast.

    The signal is the one that hurts alerts: how late the event loop runs.
    The gateway's loop-lag monitor wakes every 50 ms and feeds :meth:`update`
    with how late it woke; the location backlog (rows accepted but not yet
    written, plus, in a worker process, rows not yet shipped to the owner) is
    read at the same time.

    A third signal is the store as alerts see it: a session commit (what an
    alert's acknowledgement and its offer wait for) slower than
    ``overload_commit_ms``, finished since the last sample (each slow commit
    is one signal, :meth:`commits_slow`). GPS rows share the store
    with alerts: on PostgreSQL a commit waits for the write-ahead log to reach
    the disk, and the location batches are most of that log. The owner of a
    multi-process gateway runs this policy on its own lag, backlog and commits
    (with SQLite it writes every worker's GPS) and passes its pressure to the
    workers, which decide what GPS is stored (:meth:`press`).

    The answer is ``store_fraction``, the share of plain position reports that
    are stored, adjusted like TCP's congestion window (AIMD): two of the last
    three samples over ``overload_lag_ms`` (a single late wakeup is a
    neighbour's burst or a GC pass, already over, and shedding would not have
    helped), a backlog over a quarter of ``location_queue_max``, or slow
    commits halve it; a sample under half of the lag and backlog thresholds,
    after three on time and with commits fast again, adds ``STEP`` back, up
    to 1. Halving reacts within a sample or two to a flood; the slow climb
    finds again the most the gateway can store without running late, instead
    of switching everything back on at the first quiet sample and falling
    straight back into overload, which is when alerts would wait.

    While the fraction is below 1 (``shedding``), each connection stores that
    share of its plain reports, spread evenly (a credit per connection), and at
    least one position every ``overload_keep_s`` seconds so every vehicle keeps
    a coarse trail; every report is still acknowledged, and the ones not
    stored are counted in ``metrics.gps_shed``. Building a row (time
    conversion, the items as JSON) and writing it are most of what a GPS
    report costs, so thinning frees the loop for what cannot wait. Alerts are
    never thinned.
    """

    STEP = 0.02  # per 50 ms calm sample: from nothing stored back to everything in 2.5 s
    # after a slow commit the share holds this long before it climbs: a store that is slow now and
    # then (overloaded) keeps it down; a single slow flush costs one halving and a short pause
    SLOW_HOLD_S = 0.5

    def __init__(self, gw: Any) -> None:
        self.gw = gw
        self.store_fraction = 1.0
        self.shedding = False
        self.keep_s = 10.0
        self.backlog: Any = None  # a callable returning the location backlog; default: the store's
        self._recent = 0  # the last three samples, a bit each: 1 = over the lag threshold
        self._pressed = False  # the owner asked for less GPS since the last sample (workers)
        self._commits_checked = time.monotonic()  # commits finished after this are the next sample's
        self._slow_until = 0.0  # no climb before this (time.monotonic()): a slow commit was recent
        self.pressure = False  # the last sample asked for less GPS (the owner passes this on to workers)
        self.configure()

    def configure(self) -> None:
        t = self.gw.cfg.terminals
        self.lag_on = t["overload_lag_ms"] / 1000.0
        self.keep_s = t["overload_keep_s"]
        self.commit_on = t["overload_commit_ms"] / 1000.0
        self.backlog_on = max(1, self.gw.cfg.store["location_queue_max"] // 4)

    def current_backlog(self) -> int:
        return self.backlog() if self.backlog is not None else self.gw.store.stats.pending

    def commits_slow(self) -> bool:
        """A session commit that finished since the last sample took longer than ``overload_commit_ms``.

        Each slow commit is one signal, as a loss is to TCP: one halving. Counting
        every sample for half a second after it (as this did) made one slow commit
        ten halvings, and a single slow flush of the store emptied GPS storage for
        seconds: the overload bench's ramp saw GPS thinned at 3,700 reports/s on
        PostgreSQL, a fifth of what the gateway stores. A store that stays slow
        keeps finishing slow commits, and each sample halves again.
        """
        now = time.monotonic()
        window, self._commits_checked = now - self._commits_checked, now
        return self.commit_on > 0 and self.gw.metrics.commit_latency.recent_max(window) >= self.commit_on

    def press(self) -> None:
        """Outside pressure (a worker hears the owner is overloaded): one slow-commit signal, at the next sample."""
        self._pressed = True

    def update(self, lag: float) -> float:
        """One sample of loop lag (seconds); returns the share of plain reports to store now."""
        backlog = self.current_backlog()
        f = self.store_fraction
        self._recent = (self._recent << 1 | (lag >= self.lag_on)) & 0b111
        late = self._recent in (0b011, 0b101, 0b110, 0b111)  # two of the last three samples
        slow = self.commits_slow() or self._pressed
        self._pressed = False
        now = time.monotonic()
        if slow:
            self._slow_until = now + self.SLOW_HOLD_S
        self.pressure = late or backlog >= self.backlog_on or slow
        if self.pressure:
            f = f * 0.5 if f > 0.01 else 0.0
        elif (
            f < 1.0
            and not self._recent
            and lag < self.lag_on / 2
            and backlog < self.backlog_on / 2
            and now >= self._slow_until
        ):
            f = min(1.0, f + self.STEP)
        self.store_fraction = f
        m = self.gw.metrics
        if f < 1.0 and not self.shedding:
            self.shedding = True
            m.overload = 1
            m.overload_episodes += 1
            log.warning(
                "overload: loop lag %.0f ms, location backlog %d: thinning GPS storage", lag * 1000, backlog
            )
        elif f >= 1.0 and self.shedding:
            self.shedding = False
            m.overload = 0
            log.warning("overload over: storing every position again")
        return f


class TcuProtocol(asyncio.Protocol):
    """One terminal connection. Also driven by the QUIC listener through a stream adapter."""

    __slots__ = (
        "_credit",
        "_frames",
        "_held",
        "_kept",
        "_paused",
        "_released_at",
        "_timer",
        "_window_end",
        "closed",
        "conn",
        "gw",
        "ingress",
        "malformed",
        "peer",
        "transport",
        "vehicle",
    )

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        t = gw.cfg.terminals
        self.conn = Connection(
            Role.PLATFORM,
            auth_policy=gw.terminals,
            profile=gw.profile,
            lenient_checksum=t["lenient_checksum"],
            max_buffer=t["max_buffer"],
            idle_timeout=t["heartbeat_timeout_s"],
        )
        self.transport: Any = None
        self.vehicle: Vehicle | None = None
        self.malformed = 0
        self.peer = "?"
        self.closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._window_end = 0.0  # loop time the current one-second frame window ends (inf: holding)
        self._frames = 0  # frames read in it
        self._held: list = []  # decoded frames over the budget, handled in later windows
        self._released_at = -math.inf  # loop time held frames were last handled
        self._paused = 0  # bit 1: flooding, bit 2: write backlog
        self._kept = -1e9  # loop time a position of this connection was last stored while shedding
        self._credit = 0.0  # while shedding: the store fraction accumulated per report; a row costs 1

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        sock = transport.get_extra_info("socket")
        if sock is not None and self.gw.tcu_rcvbuf:
            try:
                # a bounded kernel receive buffer: a flooding vehicle is pushed back by TCP
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.gw.tcu_rcvbuf)
            except OSError:
                pass
        if hasattr(transport, "set_write_buffer_limits"):
            high = self.gw.cfg.terminals["send_buffer_high"]
            transport.set_write_buffer_limits(high=high, low=high // 4)
        m = self.gw.metrics
        m.connections_total += 1
        m.connections_open += 1
        self._arm(self.conn.get_timer())

    def data_received(self, data: bytes) -> None:
        loop_now = self.gw.loop.time()
        if alerttrace.ON and self.vehicle is not None:
            alerttrace.mark("read", self.vehicle.phone)
        try:
            events = self.conn.receive_data(data, loop_now)
        except Jt808ProtocolError as e:  # defensive: the codec reports errors as events
            self._malformed(ev.FrameRejected(e, None))
            return
        if self._timer is None:
            self._arm(self.conn.get_timer())  # the idle deadline exists once data has arrived
        if not events:
            return
        gw = self.gw
        n = len(events)
        gw.metrics.frames_total += n
        # flood control: a budget of frames per one-second window
        if loop_now >= self._window_end:
            self._window_end = loop_now + 1.0
            self._frames = n
        else:
            self._frames += n
        if self._frames > gw.max_frames_per_s:
            events = self._over_budget(events, loop_now)
            if not events:
                return
        self._handle(events, loop_now)

    def _handle(self, events: list, loop_now: float) -> None:
        """Handle decoded frames: those of a read, or held ones when their window comes."""
        if (
            self.vehicle is not None
            and type(events[0]) is _LOCATION_REPORTED
            and type(events[-1]) is _LOCATION_REPORTED
        ):
            # the common case: a read of nothing but location reports
            self._locations(events, loop_now)
        else:
            self._mixed(events, loop_now)

    def _mixed(self, events: list, loop_now: float) -> None:
        gw = self.gw
        acks: list[bytes] = []
        rows: list[tuple] = []
        for e in events:
            t = type(e)
            if t is _LOCATION_REPORTED and self.vehicle is not None:
                gw.metrics.frames[0x0200] += 1
                self._location(e, loop_now, acks, rows)
            else:
                self._event(e, loop_now, acks, rows)
                if self.closed:
                    break
        if rows:
            gw.store_locations(rows)
        if acks:
            self._write(b"".join(acks))

    def _over_budget(self, events: list, loop_now: float) -> list:
        """This read passed the window's budget: hold what exceeds it and pause reading.

        Returns the events to handle now; the rest wait, in order, for the next
        windows' budgets (:meth:`_release`), and reading resumes once they are handled.
        """
        if self._held:  # a read that raced the pause: after what is already held
            self._held += events
            return []
        limit = self.gw.max_frames_per_s
        room = max(0, limit - (self._frames - len(events)))
        self._held = events[room:]
        self.gw.loop.call_at(self._window_end, self._release)
        self._window_end = math.inf  # no new window until the held frames had theirs
        self._frames = limit
        self._pause(1)
        return events[:room]

    def _release(self) -> None:
        """A new window: handle held frames up to its budget; read again once none are left."""
        if self.closed:
            self._held = []
            return
        limit = self.gw.max_frames_per_s
        now = self.gw.loop.time()
        batch = self._held[:limit]
        del self._held[:limit]
        if self._held:
            self.gw.loop.call_at(now + 1.0, self._release)
            self._frames = limit
        else:
            self._window_end = now + 1.0
            self._frames = len(batch)
        self._released_at = now
        if batch:
            self._handle(batch, now)
        if not self._held:
            self._resume(1)

    def eof_received(self) -> bool:
        for e in self.conn.receive_data(b"", self.gw.loop.time()):
            if type(e) is ev.FrameRejected:
                self.gw.metrics.malformed[e.kind] += 1
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed and self.transport is None:
            return
        self.closed = True
        self.gw.metrics.connections_open -= 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.vehicle is not None:
            self.gw.terminals.unbind(self.vehicle, self)
        self.transport = None

    def pause_writing(self) -> None:
        self._pause(2)

    def resume_writing(self) -> None:
        self._resume(2)

    # -- helpers ---------------------------------------------------------------------------

    def _pause(self, why: int) -> None:
        if not self._paused and self.transport is not None:
            self.transport.pause_reading()
            self.gw.metrics.reads_paused += 1
        self._paused |= why

    def _resume(self, why: int) -> None:
        if not self._paused & why:
            return
        self._paused &= ~why
        if not self._paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def write(self, data: bytes) -> None:
        """Send bytes to the vehicle (downlink commands)."""
        self._write(data)

    def close(self, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        if reason:
            log.info("closing terminal %s (%s): %s", self.conn.phone or "?", self.peer, reason)
        if self.transport is not None:
            self.transport.close()
        # connection_lost does the rest (it still runs: closed is only a guard for writes)
        self.closed = True

    def _arm(self, deadline: float | None) -> None:
        """Keep one timer; it fires at the connection's deadline and re-arms lazily.

        The idle deadline moves on every read; rather than re-arm on every read,
        the timer fires at the deadline it was armed for and asks the
        connection whether anything is actually due yet.
        """
        if deadline is None or self.closed:
            return
        if self._timer is not None:
            if self._timer.when() <= deadline:
                return
            self._timer.cancel()
        self._timer = self.gw.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = self.gw.loop.time()
        due = self.conn.get_timer()
        if due is not None and due > now:
            self._arm(due)
            return
        if self._held or now < self._released_at + (self.conn.idle_timeout or 0.0):
            # frames held by the flood budget are activity too: idle counts from the last handled
            self._arm(now + 1.0 if self._held else self._released_at + self.conn.idle_timeout)
            return
        for e in self.conn.handle_timer(now):
            t = type(e)
            if t is ev.IdleTimeout:
                self.gw.metrics.connections_closed_idle += 1
                self.close(f"idle for {e.idle_s:.0f} s")
                return
            if t is ev.PacketsMissing:
                self._write(e.reply)
            elif t is ev.ReassemblyExpired:
                self.gw.metrics.malformed["reassembly_expired"] += 1
        self._arm(self.conn.get_timer())

    # -- locations (the hot path) -----------------------------------------------------------

    def _locations(self, events: list, loop_now: float) -> None:
        gw = self.gw
        vehicle = self.vehicle
        mask = gw.trigger_mask
        ack = self.conn.ack
        gw.metrics.frames[0x0200] += len(events)
        acks = []
        rows = []
        recv = time.time()
        phone = vehicle.phone
        ov = gw.overload
        if ov.shedding:
            # overload: acknowledge everything; store the policy's share, and one position per keep_s
            f = ov.store_fraction
            credit = self._credit
            shed = 0
            for e in events:
                loc = e[0].body
                if (loc.alarm ^ vehicle.alarm) & mask:
                    self._alarm_edge(e, loc, loop_now, rows, acks)
                    continue
                acks.append(ack(e))
                credit += f
                if credit >= 1.0 or loop_now - self._kept >= ov.keep_s:
                    credit = max(0.0, credit - 1.0)
                    self._kept = loop_now
                    rows.append(gw.location_row(phone, loc, recv))
                else:
                    shed += 1
            self._credit = credit
            gw.metrics.gps_shed += shed
        else:
            row = gw.location_row
            for e in events:
                loc = e[0].body
                if (loc.alarm ^ vehicle.alarm) & mask:
                    self._alarm_edge(e, loc, loop_now, rows, acks)
                    continue
                rows.append(row(phone, loc, recv))
                acks.append(ack(e))
        vehicle.last_loc = loc
        vehicle.last_recv = recv
        if rows:  # handed to the batched writer first, then acknowledged
            gw.store_locations(rows)
        if acks:
            gw.metrics.acks += len(acks)
            self._write(b"".join(acks))
        if vehicle.watchers:
            gw.sessions.position_update(vehicle, loc, recv)

    def _location(self, e: Any, loop_now: float, acks: list, rows: list) -> None:
        vehicle = self.vehicle
        loc = e[0].body
        recv = time.time()
        if (loc.alarm ^ vehicle.alarm) & self.gw.trigger_mask:
            self._alarm_edge(e, loc, loop_now, rows, acks)
        else:
            rows.append(self.gw.location_row(vehicle.phone, loc, recv))
            acks.append(self.conn.ack(e))
            self.gw.metrics.acks += 1
        vehicle.last_loc = loc
        vehicle.last_recv = recv
        if vehicle.watchers:
            self.gw.sessions.position_update(vehicle, loc, recv)

    def _alarm_edge(self, e: Any, loc: Any, loop_now: float, rows: list, acks: list) -> None:
        """Trigger bits changed. Rising bits open (or merge into) sessions before the ack."""
        gw = self.gw
        vehicle = self.vehicle
        recv = time.time()
        rows.append(gw.location_row(vehicle.phone, loc, recv))
        old = vehicle.alarm
        rising = loc.alarm & ~old & gw.trigger_mask
        vehicle.set_alarm(loc.alarm & gw.trigger_mask | old & ~gw.trigger_mask)
        if not rising:
            acks.append(self.conn.ack(e))  # only falling bits: nothing to open
            gw.metrics.acks += 1
            return
        # ingress in time.monotonic(): the loop's clock (libuv's) counts whole milliseconds, too coarse
        # for a path of one or two; the same clock in every process, so a worker's stamp is the owner's
        self._open_sessions(e, loc, rising, e[0].version, time.monotonic(), recv)

    def _open_sessions(
        self, e: Any, loc: Any, rising: int, version: int, ingress: float, recv: float
    ) -> None:
        """Submit the alert's session commit now (not on a later turn of the loop); ack once stored."""
        vehicle = self.vehicle
        if alerttrace.ON:
            alerttrace.mark("alarm", vehicle.phone)
        try:
            fut = self.gw.sessions.alarm_nowait(vehicle, loc, rising, version, ingress, recv)
        except Exception as exc:
            self._alert_failed(vehicle, rising, exc)
            return
        fut.add_done_callback(functools.partial(self._alert_stored, e, vehicle, rising))

    def _alert_stored(self, e: Any, vehicle: Vehicle, rising: int, fut: asyncio.Future) -> None:
        exc = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
        if exc is not None:
            self._alert_failed(vehicle, rising, exc)
            return
        if not self.closed:
            self._write(self.conn.ack(e))
            if alerttrace.ON:
                alerttrace.mark("acked", vehicle.phone)
            gw = self.gw
            gw.metrics.acks += 1
            gw.metrics.acks_deferred += 1

    def _alert_failed(self, vehicle: Vehicle, rising: int, exc: BaseException) -> None:
        # not stored: no acknowledgement, and forget the edge so the re-sent frame raises it again
        vehicle.set_alarm(vehicle.alarm & ~rising)
        self.gw.metrics.unacked_alerts += 1
        log.warning("alert from %s not stored, not acknowledged: %r", vehicle.phone, exc)

    # -- everything else --------------------------------------------------------------------

    def _malformed(self, e: Any) -> None:
        gw = self.gw
        gw.metrics.malformed[e.kind] += 1
        self.malformed += 1
        if e.reply:
            self._write(e.reply)
        if e.kind == "too_large":
            gw.metrics.connections_closed_malformed += 1
            self.close("frame larger than max_buffer")
        elif self.malformed >= gw.cfg.terminals["max_malformed"]:
            gw.metrics.connections_closed_malformed += 1
            self.close(f"{self.malformed} malformed frames")

    def _bind(self) -> None:
        """The terminal proved who it is (or the open policy accepted it): attach its vehicle state."""
        if self.vehicle is None and self.conn.phone is not None:
            self.vehicle = self.gw.terminals.bind(self.conn.phone, self)

    def _event(self, e: Any, loop_now: float, acks: list, rows: list) -> None:
        gw = self.gw
        t = type(e)
        if t is ev.FrameRejected:
            self._malformed(e)
            return
        if t is ev.PacketsMissing or t is ev.ReassemblyExpired:  # no message of their own
            if t is ev.PacketsMissing:
                acks.append(e.reply)
            else:
                gw.metrics.malformed["reassembly_expired"] += 1
            return
        gw.metrics.frames[e.message.msg_id] += 1
        if t is ev.HeartbeatReceived:
            acks.append(e.reply)
        elif t is ev.Authenticated:
            acks.append(e.reply)
            self._bind()
        elif t is ev.Registered:
            acks.append(e.reply)
            gw.terminals.registered(e, self)
        elif t is ev.AuthenticationFailed:
            acks.append(e.reply)
            gw.metrics.auth_failures += 1
        elif t is ev.LoggedOut:
            acks.append(e.reply)
            self._write(b"".join(acks))
            acks.clear()
            self.close("logged out")
        elif t is ev.DataBeforeAuth:
            if gw.terminals.open_policy:
                self.conn.authorize()
                self._bind()
                inner = e.event
                if type(inner) is _LOCATION_REPORTED:
                    self._location(inner, loop_now, acks, rows)
                else:
                    self._event(inner, loop_now, acks, rows)
            else:
                gw.metrics.unauthenticated += 1
                acks.append(self.conn.ack(e.message, _RESULT_FAILURE))
        elif t is _LOCATION_REPORTED:  # not bound yet (cannot happen online, kept for safety)
            self._bind()
            self._location(e, loop_now, acks, rows)
        elif t is ev.LocationBatchReported:
            self._batch(e, loop_now, acks, rows)
        elif t is ev.CommandAnswered:
            gw.downlink.answered(self.vehicle, e.reply_serial, e.reply_id, e.result)
        elif t is ev.LocationReplied:
            loc = e.location
            if self.vehicle is not None:
                rows.append(gw.location_row(self.vehicle.phone, loc, time.time()))
                gw.downlink.located(self.vehicle, e.reply_serial, loc, e.message.version)
        elif t is ev.PassthroughReceived:
            self._passthrough(e, loop_now, acks)
        elif t is ev.PacketReceived or t is ev.PacketsMissing:
            acks.append(e.reply)
        elif t is ev.MediaEventReported:
            acks.append(self.conn.ack(e))
        elif t is ev.MediaReceived:
            acks.append(self.conn.ack(e))
            body = e.message.body
            acks.append(self.conn.media_ack(body.media_id)[1])
            if self.vehicle is not None:
                gw.sessions.media(self.vehicle, body)
        elif t is ev.MessageReceived:
            msg = e.message
            result = 0 if msg.msg_id in _KNOWN_QUIET else _RESULT_NOT_SUPPORTED
            acks.append(self.conn.ack(e, result))
        elif t is ev.ReassemblyExpired:
            gw.metrics.malformed["reassembly_expired"] += 1

    def _batch(self, e: Any, loop_now: float, acks: list, rows: list) -> None:
        """0x0704: every position stored; a rising trigger bit in any of them opens its session first."""
        gw = self.gw
        vehicle = self.vehicle
        if vehicle is None:
            return
        batch = e.batch
        recv = time.time()
        mask = gw.trigger_mask
        rising = 0
        last = None
        for loc in batch.positions:
            rows.append(gw.location_row(vehicle.phone, loc, recv))
            old = vehicle.alarm
            rising |= loc.alarm & ~old & mask
            vehicle.set_alarm(loc.alarm & mask | old & ~mask)
            if last is None or (loc.device_time or 0) >= (last.device_time or 0):
                last = loc
        if not rising:
            acks.append(self.conn.ack(e))
            gw.metrics.acks += 1
            if batch.batch_type == 0 and last is not None:
                vehicle.last_loc = last
                vehicle.last_recv = recv
            return
        # the alarm's own position: the last one carrying a rising bit
        alarm_loc = [loc for loc in batch.positions if loc.alarm & rising][-1]
        self._open_sessions(e, alarm_loc, rising, e.message.version, loop_now, recv)

    def _passthrough(self, e: Any, loop_now: float, acks: list) -> None:
        gw = self.gw
        body = e.message.body
        trigger = gw.passthrough_triggers.get(body.ptype)
        if trigger is None or self.vehicle is None:
            acks.append(self.conn.ack(e))
            return
        gw.loop.create_task(self._open_request(e, trigger, body.data, loop_now))

    async def _open_request(self, e: Any, trigger: Any, data: bytes, ingress: float) -> None:
        gw = self.gw
        try:
            await gw.sessions.service_call(self.vehicle, trigger, data, ingress)
        except Exception as exc:
            gw.metrics.unacked_alerts += 1
            log.warning("service call from %s not stored, not acknowledged: %s", self.vehicle.phone, exc)
            return
        if not self.closed:
            self._write(self.conn.ack(e))
            gw.metrics.acks += 1
            gw.metrics.acks_deferred += 1
