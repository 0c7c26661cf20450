"""Downlink commands: platform → vehicle, correlated, retried, queued while offline.

The commands an agent (or a supervisor, through the admin API) can send:

=================  ========  ==========================================  ==========
command            message   parameters                                  answer
=================  ========  ==========================================  ==========
``text``           0x8300    ``text``, ``flag`` (default 0x0C: display    0x0001
                             + TTS), ``text_type`` (2019: 1 notice,
                             2 service)
``callback``       0x8400    ``phone`` (default: the agent's), ``monitor``  0x0001
                             (true: one-way listening to the cabin)
``locate``         0x8201    —                                           0x0201
``track``          0x8202    ``interval_s`` (0 stops), ``duration_s``     0x0001
``confirm_alarm``  0x8203    ``alarm_serial`` (0 = all), ``alarm_type``   0x0001
                             (default: the session's confirmable bits)
=================  ========  ==========================================  ==========

Bad parameters are refused before anything is sent (:meth:`Downlink.check`:
the agent gets ``bad_command``, the admin API a 400). Text goes out in GBK, as
the standard requires; characters GBK lacks (an emoji typed by an agent) are
sent as ``?`` rather than refused, and the first outcome says so (``replaced``
lists them, ``note`` explains). A command that still cannot be encoded or
stored after validation is reported ``failed`` with the reason, never dropped.

A command to an online vehicle is written at once and matched to its answer
by the platform serial it carried. Without an answer it is re-sent with the
same serial after ``command_timeout_s``, then twice that, and so on
(``command_retries`` times), then reported failed. A command to an offline
vehicle is stored with an expiry and sent when the vehicle authenticates
again — never after it expires. Every outcome is reported to the requester
(``progress``) and recorded as a ``command`` event on the session.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from protocols.jt808.bits import ALARM_CONFIRMABLE
from protocols.jt808.errors import Jt808LocalError

from .store import CommandRow

if TYPE_CHECKING:
    from .app import Gateway
    from .sessions import Session
    from .terminals import Vehicle

log = logging.getLogger("telacd.downlink")

RESULT_NAMES = {0: "success", 1: "failure", 2: "message_error", 3: "not_supported", 4: "alarm_confirmed"}
COMMANDS = ("text", "callback", "locate", "track", "confirm_alarm")
# the parameters each command takes (others are ignored)
PARAMS = {
    "text": ("text", "flag", "text_type"),
    "callback": ("phone", "monitor", "flag"),
    "locate": (),
    "track": ("interval_s", "duration_s"),
    "confirm_alarm": ("alarm_serial", "alarm_type"),
}

Progress = Callable[[dict[str, Any]], None]


class _Pending:
    __slots__ = ("future", "phone", "serial")

    def __init__(self, phone: str, serial: int, future: asyncio.Future) -> None:
        self.phone = phone
        self.serial = serial
        self.future = future


class Downlink:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.pending: dict[tuple[str, int], _Pending] = {}
        self._waiting: dict[
            int, tuple[Progress | None, Session | None]
        ] = {}  # queued command id -> requester
        # phones that may have queued commands (None: unknown, look every vehicle up); see load()
        self.queued: set[str] | None = None

    async def load(self) -> None:
        """At start: which vehicles have commands waiting, so that reconnects of the others cost nothing."""
        self.queued = await self.gw.store.queued_phones(time.time())

    # -- validation ----------------------------------------------------------------------------

    @staticmethod
    def check(command: str, params: dict[str, Any]) -> None:
        """Raise ValueError naming the problem with a command's parameters."""
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r} (known: {', '.join(COMMANDS)})")
        if command == "text":
            text = params.get("text")
            if not isinstance(text, str) or not text:
                raise ValueError("text needs a non-empty 'text'")
            # as sent: characters GBK lacks become one '?' byte each (see gbk_text)
            if len(text.encode("gbk", errors="replace")) > 1024:
                raise ValueError("text is longer than 1024 bytes in GBK")
            _int_range(params, "flag", 0, 255)
            _int_range(params, "text_type", 1, 255)
        elif command == "callback":
            phone = params.get("phone")
            if not isinstance(phone, str) or not phone:
                raise ValueError("callback needs 'phone' (at most 20 characters)")
            try:
                size = len(phone.encode("gbk"))
            except UnicodeEncodeError:
                raise ValueError(f"callback 'phone' {phone!r} has characters GBK cannot encode") from None
            if size > 20:
                raise ValueError("callback 'phone' is longer than 20 bytes in GBK")
            _int_range(params, "flag", 0, 1)
        elif command == "track":
            _int_range(params, "interval_s", 0, 0xFFFF)
            _int_range(params, "duration_s", 0, 0xFFFFFFFF)
        elif command == "confirm_alarm":
            _int_range(params, "alarm_serial", 0, 0xFFFF)
            _int_range(params, "alarm_type", 0, 0xFFFFFFFF)
        expires = params.get("expires_in_s")
        if expires is not None and (
            isinstance(expires, bool)
            or not isinstance(expires, int | float)
            or not 0 < expires < math.inf  # NaN fails too
        ):
            raise ValueError("expires_in_s must be a positive number of seconds")

    @staticmethod
    def gbk_text(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """A text command as it will be sent, and the note for the requester when that differs.

        Characters GBK cannot encode are sent as ``?``: the message gets through
        and the requester is told which characters were replaced.
        """
        text = params["text"]
        try:
            text.encode("gbk")
            return params, {}
        except UnicodeEncodeError:
            pass
        lacking: list[str] = []
        for ch in text:
            try:
                ch.encode("gbk")
            except UnicodeEncodeError:
                if ch not in lacking:
                    lacking.append(ch)
        sent = text.encode("gbk", errors="replace").decode("gbk")
        note = {
            "replaced": lacking,
            "note": f"{len(lacking)} character(s) GBK cannot encode were sent as '?'",
        }
        return {**params, "text": sent}, note

    # -- requests --------------------------------------------------------------------------------

    async def request(
        self,
        phone: str,
        command: str,
        params: dict[str, Any],
        *,
        session: Session | None = None,
        agent: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Send a command to a vehicle; returns the first outcome (answered, failed or queued)."""
        self.check(command, params)
        gw = self.gw
        note: dict[str, Any] = {}
        if command == "text":
            params, note = self.gbk_text(params)
        vehicle = gw.terminals.vehicles.get(phone)
        if session is not None and command == "confirm_alarm" and "alarm_type" not in params:
            params = {**params, "alarm_type": int(session.data.get("alarm", 0)) & ALARM_CONFIRMABLE}
        if vehicle is None or not vehicle.online:
            now = time.time()
            ttl = params.get("expires_in_s") or gw.cfg.sessions["offline_command_ttl_s"]
            row = CommandRow(None, phone, command, params, now, now + ttl, "queued",
                             session=session.id if session else None, agent=agent, updated_at=now)  # fmt: skip
            row.id = await gw.store.save_command(row)
            self._waiting[row.id] = (progress, session)
            if self.queued is not None:
                self.queued.add(phone)
            outcome = {"ok": False, "status": "queued", "command_id": row.id, "expires_at": row.expires_at,
                       **note}  # fmt: skip
            gw.metrics.commands["queued"] += 1
            self._report(session, command, outcome, progress)
            return outcome
        outcome = {**await self._send(vehicle, command, params), **note}
        self._report(session, command, outcome, progress)
        return outcome

    def _report(
        self, session: Session | None, command: str, outcome: dict[str, Any], progress: Progress | None
    ) -> None:
        if progress is not None:
            progress(outcome)
        if session is not None and session.id in self.gw.sessions.open:
            self.gw.sessions.record(session, [("command", {"command": command, **outcome})])

    async def _send(self, vehicle: Vehicle, command: str, params: dict[str, Any]) -> dict[str, Any]:
        gw = self.gw
        proto = vehicle.conn
        conn = proto.conn
        try:
            if command == "text":
                serial, data = conn.send_text(
                    params["text"], params.get("flag", 0x0C), params.get("text_type", 1)
                )
            elif command == "callback":
                monitor = bool(params.get("monitor")) or params.get("flag") == 1
                serial, data = conn.call_back(params["phone"], monitor)
            elif command == "locate":
                serial, data = conn.locate()
            elif command == "track":
                serial, data = conn.track(params.get("interval_s", 10), params.get("duration_s", 300))
            else:  # confirm_alarm
                serial, data = conn.confirm_alarm(
                    params.get("alarm_serial", 0), params.get("alarm_type", ALARM_CONFIRMABLE)
                )
        except (Jt808LocalError, ValueError, TypeError, KeyError, OverflowError) as e:
            # validation let through something the codec cannot encode (e.g. a command queued
            # before a rule existed): the requester hears about it
            log.warning("command %s to %s cannot be encoded: %s", command, vehicle.phone, e)
            gw.metrics.commands["failed"] += 1
            return {"ok": False, "status": "failed", "error": f"cannot be encoded: {e}"}
        key = (vehicle.phone, serial)
        fut = gw.loop.create_future()
        self.pending[key] = _Pending(vehicle.phone, serial, fut)
        timeout = gw.cfg.sessions["command_timeout_s"]
        retries = gw.cfg.sessions["command_retries"]
        try:
            for attempt in range(retries + 1):
                if proto.closed:
                    break
                proto.write(data)
                try:
                    answer = await asyncio.wait_for(asyncio.shield(fut), timeout * (2**attempt))
                except TimeoutError:
                    gw.metrics.commands["retransmitted"] += 1
                    continue
                gw.metrics.commands["answered"] += 1
                return {"status": "answered", "attempts": attempt + 1, **answer}
        finally:
            self.pending.pop(key, None)
        gw.metrics.commands["failed"] += 1
        reason = "vehicle disconnected" if proto.closed else f"no answer after {retries + 1} attempts"
        return {"ok": False, "status": "failed", "error": reason}

    # -- answers from the vehicle ---------------------------------------------------------------------

    def answered(self, vehicle: Vehicle | None, reply_serial: int, reply_id: int, result: int) -> None:
        if vehicle is None:
            return
        p = self.pending.get((vehicle.phone, reply_serial))
        if p is not None and not p.future.done():
            p.future.set_result({"ok": result == 0, "result": result, "result_name": RESULT_NAMES.get(result, str(result)),
                                 "reply_id": reply_id})  # fmt: skip

    def located(self, vehicle: Vehicle, reply_serial: int, loc: Any, version: int) -> None:
        p = self.pending.get((vehicle.phone, reply_serial))
        if p is not None and not p.future.done():
            p.future.set_result(
                {"ok": True, "result": 0, "position": self.gw.position_json(loc, time.time(), version)}
            )

    # -- offline queue -----------------------------------------------------------------------------------

    def online(self, vehicle: Vehicle) -> None:
        """The vehicle authenticated: deliver what waited for it."""
        if self.queued is not None and vehicle.phone not in self.queued:
            return
        self.gw.spawn(self._deliver(vehicle), f"queued commands for {vehicle.phone}")

    async def _deliver(self, vehicle: Vehicle) -> None:
        gw = self.gw
        rows = await gw.store.pending_commands(vehicle.phone, time.time())
        if not rows and self.queued is not None:
            self.queued.discard(vehicle.phone)
        for row in rows:
            if not vehicle.online:
                return
            if row.expires_at <= time.time():
                continue
            row.status, row.updated_at = "sent", time.time()
            await gw.store.save_command(row)
            outcome = await self._send(vehicle, row.command, row.params)
            row.status = "answered" if outcome["status"] == "answered" else "failed"
            row.result, row.updated_at = outcome, time.time()
            await gw.store.save_command(row)
            outcome = {**outcome, "command_id": row.id, "delivered_late": True}
            progress, session = self._waiting.pop(row.id, (None, None))
            if session is None and row.session:
                session = gw.sessions.open.get(row.session)
            if progress is None and row.agent:
                # the requester may have reconnected since: reach it by id
                def progress(update: dict[str, Any], agent: str = row.agent, r: CommandRow = row) -> None:
                    gw.agents.push(
                        agent,
                        {"type": "command_result", "session": r.session, "command": r.command, **update},
                    )

            self._report(session, row.command, outcome, progress)

    async def expire(self) -> int:
        """Mark queued commands past their expiry; tell whoever asked."""
        rows = await self.gw.store.expire_commands(time.time())
        for row in rows:
            self.gw.metrics.commands["expired"] += 1
            progress, session = self._waiting.pop(row.id, (None, None))
            if session is None and row.session:
                session = self.gw.sessions.open.get(row.session)
            outcome = {"ok": False, "status": "expired", "command_id": row.id}
            if progress is None and row.agent:
                self.gw.agents.push(
                    row.agent,
                    {"type": "command_result", "session": row.session, "command": row.command, **outcome},
                )
            self._report(session, row.command, outcome, progress)
        return len(rows)


def _int_range(params: dict[str, Any], key: str, lo: int, hi: int) -> None:
    value = params.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"'{key}' must be an integer {lo}-{hi}")
