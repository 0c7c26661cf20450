"""Sessions: what a crash, an SOS, a one-key call or an app request becomes.

A session lives in three places kept in step: this module's memory (the
:class:`Session` objects of open sessions), the store (its row and its
append-only numbered events), and the ACD engine (a task with the session's
id). The rules:

1. **Persist, then acknowledge, then route.** A vehicle's alert opens a
   session whose ``created`` and ``queued`` events are committed before the
   frame is acknowledged and before the task is given to the engine, so an
   offer never names a session a crash could take back, and a vehicle is
   never told "received" about an alert that is not stored.
2. **Every change is an event.** Engine events (offered, assigned, escalated,
   re-queued, completed...) become session events, numbered by the store and
   published to subscribers once committed. They are written in the order
   they happen, without blocking the routing decision: the offer reaches the
   agent while its "offered" event is being committed.
3. **One incident, one session.** Alerts carry an incident key (vehicle and
   kind). A second alert with the key of an open session updates it (latest
   position, alarm names, count) instead of opening another. Alarm *edges*
   are detected before this (gateway.tcu): a bit that stays set, or a
   re-sent frame, is not an alert at all.
4. **Recovery.** At start, sessions waiting or on offer are given back to the
   engine with their original arrival time (their place in line); sessions in
   an agent's hands wait ``agent_grace_s`` for that agent to come back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from . import alerttrace
from .store import NewEvent, SessionRow

if TYPE_CHECKING:
    from .app import Gateway
    from .terminals import Vehicle

log = logging.getLogger("telacd.sessions")

_ids = itertools.count(1)

# A new session's recent trail is read this long after it is stored and offered. The read (a thread)
# and the update it commits and pushes would otherwise run while the agent's process, the vehicle's
# acknowledgement and the feed are being woken on a 2-core machine; interleaved idle runs of
# `telacd bench gateway`: crash->offer p99 3.50/3.25/2.35 ms reading at once, 2.82/2.16/3.11 ms with it.
TRAIL_DELAY_S = 0.01
UNRESOLVED = "unresolved"  # kind of the supervisor session an unresolved session raises
UNRESOLVED_MARK = "unresolved_escalation"  # key in an escalated session's data: its supervisor session's id


def new_session_id(now: float) -> str:
    """Sortable and unique: milliseconds since the epoch, a per-process counter and the pid."""
    return f"S{int(now * 1000):012x}{next(_ids) & 0xFFFFF:05x}{os.getpid() & 0xFFF:03x}"


class Session:
    __slots__ = (
        "agent",
        "arrival",
        "channel",
        "closed_at",
        "created_at",
        "data",
        "disposition",
        "id",
        "idempotency_key",
        "incident",
        "ingress",
        "kind",
        "klass",
        "last_push",
        "offers",
        "phone",
        "priority",
        "queue",
        "skills",
        "state",
        "tenant",
        "updated_at",
        "waiting_in",
    )

    def __init__(self, **kw: Any) -> None:
        self.agent: str | None = None
        self.disposition: str | None = None
        self.idempotency_key: str | None = None
        self.incident: str | None = None
        self.closed_at: float | None = None
        self.phone: str | None = None
        self.skills: dict[str, int] = {}
        # loop time a vehicle's alarm arrived, for the crash->offer histogram until the first offer; None for
        # every other session (one-key service calls, channel requests, supervisor sessions): their wait for
        # an agent is not the alert path's latency (see _on_OfferCreated)
        self.ingress: float | None = None
        self.offers: dict[str, str] = {}  # offer id -> agent id
        self.last_push = 0.0
        self.waiting_in: str | None = None
        for k, v in kw.items():
            setattr(self, k, v)

    def row(self) -> SessionRow:
        return SessionRow(
            id=self.id,
            kind=self.kind,
            channel=self.channel,
            tenant=self.tenant,
            queue=self.queue,
            klass=self.klass,
            priority=self.priority,
            state=self.state,
            created_at=self.created_at,
            arrival=self.arrival,
            updated_at=self.updated_at,
            phone=self.phone,
            incident=self.incident,
            agent=self.agent,
            disposition=self.disposition,
            idempotency_key=self.idempotency_key,
            closed_at=self.closed_at,
            data={**self.data, "skills": self.skills} if self.skills else self.data,
        )

    @classmethod
    def from_row(cls, r: SessionRow) -> Session:
        data = dict(r.data)
        skills = data.pop("skills", {}) or {}
        return cls(
            id=r.id,
            kind=r.kind,
            channel=r.channel,
            tenant=r.tenant,
            queue=r.queue,
            klass=r.klass,
            priority=r.priority,
            state=r.state,
            created_at=r.created_at,
            arrival=r.arrival,
            updated_at=r.updated_at,
            phone=r.phone,
            incident=r.incident,
            agent=r.agent,
            disposition=r.disposition,
            idempotency_key=r.idempotency_key,
            closed_at=r.closed_at,
            data=data,
            skills=skills,
        )

    def summary(self) -> dict[str, Any]:
        """What agents see in an offer, and the API in a list."""
        d = self.data
        out = {
            "id": self.id,
            "kind": self.kind,
            "channel": self.channel,
            "queue": self.queue,
            "tenant": self.tenant,
            "class": self.klass,
            "priority": self.priority,
            "state": self.state,
            "created_at": self.created_at,
            "arrival": self.arrival,
            "agent": self.agent,
        }
        for key in (
            "vehicle",
            "position",
            "alarms",
            "alerts",
            "request",
            "customer",
            "data",
            "trail",
            "late",
        ):
            if key in d:
                out[key] = d[key]
        return out


class SessionManager:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.open: dict[str, Session] = {}
        self.incidents: dict[str, str] = {}
        self.by_key: dict[str, str] = {}  # idempotency key -> session id (open or recently created)
        self._pending_keys: dict[str, asyncio.Future] = {}
        self._escalating: set[str] = set()  # unresolved sessions being escalated now

    # -- persistence ---------------------------------------------------------------------------

    def record(
        self, s: Session, events: list[tuple[str, dict[str, Any]]], *, urgent: bool = False
    ) -> asyncio.Future:
        """Commit the session's row and these events (in call order); publish them once committed.

        ``urgent``: a vehicle's alert waits for this commit (see Store.commit_nowait).
        """
        now = time.time()
        s.updated_at = now
        rows = [NewEvent(s.id, name, now, data, s.tenant, s.queue, s.kind) for name, data in events]
        if urgent and alerttrace.ON:
            alerttrace.mark("built", s.phone or "")
        fut = self.gw.store.commit_nowait([s.row()], rows, urgent=urgent)
        submitted = self.gw.loop.time()
        fut.add_done_callback(lambda f: self._committed(f, submitted))
        return fut

    def _committed(self, fut: asyncio.Future, submitted: float) -> None:
        if fut.cancelled():
            return
        self.gw.metrics.commit_latency.observe(self.gw.loop.time() - submitted)
        exc = fut.exception()
        if exc is not None:
            self.gw.metrics.store_errors += 1
            log.error("session events not stored: %s", exc)
            return
        self.gw.feed.publish(fut.result())

    # -- opening -------------------------------------------------------------------------------

    def _vehicle_json(self, v: Vehicle) -> dict[str, Any]:
        out: dict[str, Any] = {"phone": v.phone, "tenant": v.tenant}
        if v.info:
            for key in ("plate", "plate_color", "maker", "model", "terminal_id"):
                if v.info.get(key) not in (None, ""):
                    out[key] = v.info[key]
        return out

    async def alarm(
        self, v: Vehicle, loc: Any, rising: int, version: int, ingress: float, recv: float
    ) -> list[Session]:
        """Rising trigger bits from a location report: open or merge one session per trigger.

        Returns when every session involved is committed (the caller then acknowledges).
        Raises if the store failed (the caller then does not acknowledge).
        """
        return await self.alarm_nowait(v, loc, rising, version, ingress, recv)

    def alarm_nowait(
        self, v: Vehicle, loc: Any, rising: int, version: int, ingress: float, recv: float
    ) -> asyncio.Future:
        """:meth:`alarm` started now: the commits are submitted before this returns.

        A coroutine given to ``create_task`` would only start on the next turn of
        the loop, after every other socket that turn reads (under a GPS flood,
        thousands); the alert would queue behind GPS. The future resolves to the
        sessions once they are committed and handed to the engine.
        """
        gw = self.gw
        names = gw.profile.alarm_names(loc.alarm, version)
        position = gw.position_json(loc, recv)
        futures = []
        sessions = []
        opened = []  # to route once committed; one merged into an open session is routed already
        for bit, trigger in gw.alarm_triggers:
            if not rising >> bit & 1:
                continue
            s, fut, is_new = self._open_or_merge(
                v,
                trigger,
                kind=trigger.kind,
                data={
                    "vehicle": self._vehicle_json(v),
                    "position": position,
                    "alarms": names,
                    "alarm": loc.alarm,
                },
                ingress=ingress,
            )
            sessions.append(s)
            futures.append(fut)
            if is_new:
                opened.append(s)
        done = gw.loop.create_future()

        def committed(f: asyncio.Future) -> None:
            if done.done():
                return
            if f.cancelled():
                done.cancel()
            elif f.exception() is not None:
                done.set_exception(f.exception())
            else:
                if alerttrace.ON:
                    alerttrace.mark("committed", v.phone)
                for s in opened:
                    self._route_new(s)
                done.set_result(sessions)

        if not futures:
            done.set_result(sessions)
            return done
        if all(f.done() for f in futures):
            # committed already (the store's urgent path): route now, not on the loop's next turn,
            # which under a GPS flood runs after every other ready callback
            first_error = next((f for f in futures if f.cancelled() or f.exception() is not None), None)
            committed(first_error or futures[0])
            return done
        # one trigger (the usual case) waits on its own commit: no gather, one loop turn fewer
        (futures[0] if len(futures) == 1 else asyncio.gather(*futures)).add_done_callback(committed)
        return done

    async def service_call(self, v: Vehicle, trigger: Any, payload: bytes, ingress: float) -> Session:
        """A one-key service call (0x0900 passthrough): a session on the trigger's queue."""
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            text = payload.decode("gbk", errors="replace")
        text = text.strip("\x00").strip()
        position = self.gw.position_json(v.last_loc, v.last_recv) if v.last_loc is not None else None
        data: dict[str, Any] = {"vehicle": self._vehicle_json(v), "request": text}
        if position is not None:
            data["position"] = position
        # not timed as crash->offer: a service request waits for a service agent by design
        s, fut, is_new = self._open_or_merge(v, trigger, kind=trigger.kind, data=data, ingress=None)
        await fut
        if is_new:
            self._route_new(s)
        return s

    def _open_or_merge(
        self, v: Vehicle, trigger: Any, kind: str, data: dict[str, Any], ingress: float | None
    ) -> tuple[Session, asyncio.Future, bool]:
        """The open session of this vehicle and kind, updated, or a new one; its commit; whether it is new."""
        gw = self.gw
        incident = f"{v.phone}:{kind}"
        sid = self.incidents.get(incident)
        existing = self.open.get(sid) if sid else None
        if existing is not None:
            d = existing.data
            d["alerts"] = d.get("alerts", 1) + 1
            update = {"alerts": d["alerts"]}
            for key in ("position", "alarms", "alarm", "request"):
                if key in data:
                    d[key] = data[key]
                    update[key] = data[key]
            gw.metrics.sessions_merged += 1
            fut = self.record(existing, [("updated", {"reason": "repeat_alert", **update})], urgent=True)
            self._push_update(existing, update)
            return existing, fut, False
        spec = gw.cfg.queue(trigger.queue)
        klass = spec.klass(trigger.klass) if trigger.klass else spec.classes[-1]
        now = time.time()
        s = Session(
            id=new_session_id(now),
            kind=kind,
            channel="voice",
            tenant=v.tenant,
            queue=spec.name,
            klass=klass.name,
            priority=klass.priority,
            state="waiting",
            created_at=now,
            arrival=now,
            updated_at=now,
            phone=v.phone,
            incident=incident,
            data=data,
            skills=dict(trigger.skills),
        )
        s.ingress = ingress
        self._adopt(s)
        gw.metrics.sessions_created[kind] += 1
        created = {
            "kind": kind,
            "queue": s.queue,
            "class": s.klass,
            "priority": s.priority,
            "channel": s.channel,
            **data,
        }
        fut = self.record(
            s, [("created", created), ("queued", {"queue": s.queue, "reason": "new"})], urgent=True
        )
        fut.add_done_callback(lambda f: self._drop_unstored(f, s))
        self._attach_trail(s, fut)
        return s, fut, True

    def _drop_unstored(self, fut: asyncio.Future, s: Session) -> None:
        """A new session whose first commit failed was never stored: forget it.

        The alert was not acknowledged, so the vehicle re-sends it; that must open the session anew
        (with its "created" event), not merge into one that exists only in this process's memory.
        """
        if (fut.cancelled() or fut.exception() is not None) and self.open.get(s.id) is s:
            self._forget(s)

    async def request(
        self,
        *,
        channel: str,
        queue: str,
        tenant: str,
        kind: str,
        klass: str | None,
        customer: dict[str, Any],
        skills: dict[str, int],
        data: dict[str, Any],
        idempotency_key: str | None,
        priority: int | None = None,
    ) -> tuple[Session, bool]:
        """A session from another channel (app, web, chat). Returns (session, created).

        An idempotency key already seen returns the first session instead of a new one;
        two concurrent requests with one key wait for the first.
        """
        # Look for the key until nothing happened with it while we looked: the store read yields, and a
        # duplicate arriving meanwhile may have started (or finished) creating the session. The waiter is
        # registered below with no await between the last look and it.
        while idempotency_key:
            sid = self.by_key.get(idempotency_key)
            if sid is not None:
                existing = self.open.get(sid) or await self.gw.store.get_session(sid)
                if existing is not None:
                    return (existing if isinstance(existing, Session) else Session.from_row(existing)), False
            pending = self._pending_keys.get(idempotency_key)
            if pending is not None:
                return await asyncio.shield(pending), False
            row = await self.gw.store.session_by_key(idempotency_key)
            if row is not None:
                self.by_key[idempotency_key] = row.id
                return self.open.get(row.id) or Session.from_row(row), False
            if idempotency_key not in self._pending_keys and self.by_key.get(idempotency_key) == sid:
                break
        spec = self.gw.cfg.queue(queue)
        cls = spec.klass(klass) if klass else spec.classes[-1]
        if customer.get("tier") in ("vip", "gold", "platinum") and not klass:
            cls = spec.classes[0]  # the queue's highest class for VIP customers unless a class is named
        now = time.time()
        s = Session(
            id=new_session_id(now),
            kind=kind,
            channel=channel,
            tenant=tenant,
            queue=spec.name,
            klass=cls.name,
            priority=cls.priority if priority is None else priority,
            state="waiting",
            created_at=now,
            arrival=now,
            updated_at=now,
            data={"customer": customer, "data": data},
            skills=dict(skills),
            idempotency_key=idempotency_key or None,
        )
        waiter: asyncio.Future | None = None
        if idempotency_key:
            waiter = self.gw.loop.create_future()
            self._pending_keys[idempotency_key] = waiter
        try:
            self._adopt(s)
            self.gw.metrics.sessions_created[kind] += 1
            created = {"kind": kind, "queue": s.queue, "class": s.klass, "priority": s.priority, "channel": channel,
                       "customer": customer, "data": data}  # fmt: skip
            try:
                await self.record(s, [("created", created), ("queued", {"queue": s.queue, "reason": "new"})])
            except Exception as e:
                self._forget(s)
                if waiter is not None:  # duplicates waiting for this one fail with it, not with a ghost
                    waiter.set_exception(e)
                    waiter.exception()  # retrieved: no "never retrieved" warning when nobody waited
                raise
            if idempotency_key:
                self.by_key[idempotency_key] = s.id
            self._route_new(s)
        finally:
            if waiter is not None:
                self._pending_keys.pop(idempotency_key, None)
                if not waiter.done():
                    waiter.set_result(s)
        return s, True

    def _adopt(self, s: Session) -> None:
        self.open[s.id] = s
        if s.incident:
            self.incidents[s.incident] = s.id
        if s.phone:
            v = self.gw.terminals.vehicle(s.phone)
            if v.sessions is None:
                v.sessions = set()
            v.sessions.add(s.id)

    def _forget(self, s: Session) -> None:
        self.open.pop(s.id, None)
        if s.incident and self.incidents.get(s.incident) == s.id:
            del self.incidents[s.incident]
        if s.phone:
            v = self.gw.terminals.vehicles.get(s.phone)
            if v is not None and v.sessions:
                v.sessions.discard(s.id)
                if s.agent is not None and v.watchers > 0:
                    v.watchers -= 1

    def _route_new(self, s: Session) -> None:
        try:
            self.gw.routing.enqueue(s)
        except (KeyError, ValueError) as e:
            # configuration does not allow routing it (e.g. its queue vanished in a reload): keep it
            # stored and visible; an operator can re-route it through the API
            log.error("session %s could not be routed: %s", s.id, e)
            self.record(s, [("updated", {"reason": "unroutable", "error": str(e)})])

    def _attach_trail(self, s: Session, created: asyncio.Future | None = None) -> None:
        minutes = self.gw.cfg.sessions["trail_minutes"]
        if not s.phone or minutes <= 0:
            return

        async def attach() -> None:
            if created is not None:
                # the trail is not urgent: its read waits until the session is stored and offered,
                # and a little longer (TRAIL_DELAY_S), instead of competing with the alert's path
                try:
                    await asyncio.shield(created)
                except Exception:
                    return
                await asyncio.sleep(TRAIL_DELAY_S)
            now = time.time()
            rows = await self.gw.store.trail(s.phone, now - minutes * 60, now, limit=2000)
            trail = [[r[1], round(r[3], 6), round(r[4], 6), r[6]] for r in rows]
            if s.id not in self.open or not trail:
                return
            s.data["trail"] = trail
            self.record(s, [("updated", {"reason": "trail", "trail": trail})])
            self._push_update(s, {"trail": trail})

        self.gw.spawn(attach(), f"trail of {s.id}")

    # -- live data for the agent ---------------------------------------------------------------

    def _push_update(self, s: Session, update: dict[str, Any]) -> None:
        agents = set(s.offers.values())
        if s.agent:
            agents.add(s.agent)
        for a in agents:
            self.gw.agents.push(a, {"type": "session_update", "session": s.id, **update})

    def position_update(self, v: Vehicle, loc: Any, recv: float) -> None:
        """A position of a vehicle with an assigned session: keep it, and push it to the agent (rate-limited)."""
        if not v.sessions:
            return
        now = self.gw.loop.time()
        interval = self.gw.cfg.sessions["position_push_ms"] / 1000.0
        position = None
        for sid in v.sessions:
            s = self.open.get(sid)
            if s is None or s.agent is None or s.state != "assigned":
                continue
            if now - s.last_push < interval:
                continue
            if position is None:
                position = self.gw.position_json(loc, recv)
            s.last_push = now
            s.data["position"] = position
            self.gw.agents.push(s.agent, {"type": "position", "session": s.id, "position": position})

    def media(self, v: Vehicle, body: Any) -> None:
        """A photo or recording arrived: note it on the vehicle's open sessions."""
        if not v.sessions:
            return
        info = {"media_id": body.media_id, "media_type": body.media_type, "format": body.media_format,
                "event": body.event_code, "bytes": len(body.data)}  # fmt: skip
        for sid in list(v.sessions):
            s = self.open.get(sid)
            if s is not None:
                s.data.setdefault("media", []).append(info)
                self.record(s, [("updated", {"reason": "media", "media": info})])

    # -- engine events -----------------------------------------------------------------------------

    def on_routing(self, events: list[Any]) -> None:
        gw = self.gw
        for e in events:
            kind = type(e).__name__
            handler = getattr(self, "_on_" + kind, None)
            if handler is not None:
                handler(e)
            elif kind == "AgentStateChanged":
                gw.agents.state_changed(e)
            elif kind == "WrapupEnded":
                gw.agents.wrapup_ended(e)

    def _s(self, task_id: str) -> Session | None:
        return self.open.get(task_id)

    def _on_TaskQueued(self, e: Any) -> None:
        s = self._s(e.task_id)
        if s is not None:
            s.waiting_in = e.queue

    def _on_OfferCreated(self, e: Any) -> None:
        s = self._s(e.task_id)
        if s is None:
            return
        gw = self.gw
        offer = str(e.offer_id)
        s.offers[offer] = e.agent_id
        expires_ms = max(0, int((e.expires_at - gw.routing.now()) * 1000))
        if alerttrace.ON and s.ingress is not None:
            alerttrace.mark("offer", s.phone or "")  # as it is handed over (the write is immediate)
        delivered = gw.agents.push(
            e.agent_id,
            {"type": "offer", "offer": offer, "session": s.summary(), "expires_in_ms": expires_ms},
        )
        gw.metrics.offers += 1
        if delivered and s.ingress is not None:  # a vehicle's alarm (only those carry ingress)
            gw.metrics.crash_to_offer.observe(time.monotonic() - s.ingress)  # ingress: time.monotonic()
            s.ingress = None  # the first offer is the one the latency is about
        first = s.state == "waiting"
        s.state = "offered"
        self.record(s, [("offered", {"agent": e.agent_id, "offer": offer, "expires_in_ms": expires_ms,
                                     "first": first})])  # fmt: skip

    def _on_OfferWithdrawn(self, e: Any) -> None:
        gw = self.gw
        s = self._s(e.task_id)
        if e.reason == "timeout":
            gw.metrics.offer_timeouts += 1
        elif e.reason == "rejected":
            gw.metrics.rejects += 1
        offer = str(e.offer_id)
        gw.agents.push(
            e.agent_id, {"type": "offer_withdrawn", "offer": offer, "session": e.task_id, "reason": e.reason}
        )
        if s is None:
            return
        s.offers.pop(offer, None)
        if e.reason in ("timeout", "rejected", "agent_gone") and not s.offers and s.state == "offered":
            s.state = "waiting"
            self.record(s, [("queued", {"reason": e.reason, "agent": e.agent_id, "offer": offer})])

    def _on_TaskAssigned(self, e: Any) -> None:
        gw = self.gw
        gw.metrics.accepts += 1
        s = self._s(e.task_id)
        if s is None:
            return
        s.offers.clear()
        s.state = "assigned"
        s.agent = e.agent_id
        self._watch(s, +1)
        offer = str(e.offer_id)
        gw.agents.push(
            e.agent_id, {"type": "assigned", "session": s.id, "offer": offer, "details": s.summary()}
        )
        self.record(s, [("assigned", {"agent": e.agent_id, "offer": offer, "wait_s": round(e.wait, 3)})])

    def _on_TaskRestored(self, e: Any) -> None:
        s = self._s(e.task_id)
        if s is not None:
            s.state = "assigned"
            s.agent = e.agent_id
            self._watch(s, +1)

    def _on_TaskEscalated(self, e: Any) -> None:
        from .routing import gateway_queue

        self.gw.metrics.escalations += 1
        s = self._s(e.task_id)
        if s is None:
            return
        s.waiting_in = e.queue
        self.record(s, [("escalated", {"step": e.step, "to": gateway_queue(e.queue), "engine_queue": e.queue,
                                       "reason": e.reason})])  # fmt: skip

    def _on_TaskRequeued(self, e: Any) -> None:
        s = self._s(e.task_id)
        if s is None:
            return
        if s.agent is not None:
            self._watch(s, -1)
        s.agent = None
        s.state = "waiting"
        self.record(s, [("queued", {"reason": e.reason, "agent": e.agent_id})])

    def _on_TaskReprioritised(self, e: Any) -> None:
        s = self._s(e.task_id)
        if s is None:
            return
        s.klass, s.priority = e.cls, int(e.priority)
        self.record(s, [("updated", {"reason": "reprioritised", "class": e.cls, "priority": s.priority})])

    def _on_TaskMerged(self, e: Any) -> None:  # the gateway merges before the engine sees a repeat
        log.warning("engine merged task %s into %s", e.task_id, e.into)

    def _on_TaskCompleted(self, e: Any) -> None:
        self._close(e.task_id, "completed", {"agent": e.agent_id, "disposition": e.disposition,
                                             "handle_s": round(e.handle_time, 3)}, disposition=e.disposition)  # fmt: skip

    def _on_TaskAbandoned(self, e: Any) -> None:
        self._close(e.task_id, "abandoned", {"wait_s": round(e.wait, 3), "reason": "abandoned"})

    def _on_TaskCancelled(self, e: Any) -> None:
        self._close(e.task_id, "cancelled", {"reason": e.reason}, event="abandoned")

    def _close(
        self, sid: str, state: str, data: dict[str, Any], *, event: str | None = None, disposition: Any = None
    ) -> None:
        s = self._s(sid)
        if s is None:
            return
        if s.agent is not None and s.state == "assigned":
            self._watch(s, -1)
        s.state = state
        s.closed_at = time.time()
        self.gw.metrics.sessions_closed[state] += 1
        if disposition is not None:
            s.disposition = disposition if isinstance(disposition, str) else str(disposition)
        self.record(s, [(event or state, data)])
        self._forget(s)

    def _watch(self, s: Session, delta: int) -> None:
        if not s.phone:
            return
        v = self.gw.terminals.vehicles.get(s.phone)
        if v is not None:
            v.watchers = max(0, v.watchers + delta)

    # -- agent actions ---------------------------------------------------------------------------

    def complete(self, sid: str, agent_id: str, disposition: Any) -> None:
        s = self._s(sid)
        if s is None:
            raise LookupError(f"no open session {sid!r}")
        if s.agent != agent_id:
            raise PermissionError(f"session {sid} is not assigned to {agent_id}")
        if disposition is None:
            disposition = ""
        elif not isinstance(disposition, str):
            s.data["disposition_detail"] = disposition
            disposition = (
                str(disposition.get("code", "")) if isinstance(disposition, dict) else str(disposition)
            )
        self.gw.routing.complete(sid, disposition)

    # -- unresolved sessions ------------------------------------------------------------------------
    #
    # A session still open [sessions] unresolved_after_s after it was created (a complaint nobody closed
    # in 24 h) is sent up: an "escalated" event (reason "unresolved") on the session, so the feed tells
    # downstream systems, and a new session of kind "unresolved" in unresolved_queue, so a supervisor gets
    # an offer. The original stays where it is (with its agent, or waiting). Once per session, also across
    # restarts: the supervisor session is created with the idempotency key "unresolved:<id>" (a second
    # attempt finds it), and the original's data keeps its id under UNRESOLVED_MARK.

    def unresolved_period(self) -> float:
        """How often to look: a tenth of the limit, within 0.05-5 s (so a 24 h limit is checked every 5 s)."""
        after = self.gw.cfg.sessions["unresolved_after_s"]
        return 5.0 if after <= 0 else min(5.0, max(0.05, after / 10.0))

    async def watch_unresolved(self) -> None:
        """The periodic duty (Gateway.start). The period is re-read every round: a reload may change it."""
        while True:
            await asyncio.sleep(self.unresolved_period())
            try:
                await self.check_unresolved()
            except Exception as e:  # the duty must keep running
                log.warning("unresolved-session check failed: %r", e)

    async def check_unresolved(self, now: float | None = None) -> list[str]:
        """Escalate each open session past ``unresolved_after_s`` (once); return the ids escalated now."""
        gw = self.gw
        after = gw.cfg.sessions["unresolved_after_s"]
        target = gw.cfg.sessions["unresolved_queue"]
        if after <= 0 or not target or gw.cfg.queue(target) is None:
            return []
        now = time.time() if now is None else now
        due = [
            s
            for s in self.open.values()
            if now - s.created_at >= after
            and s.kind != UNRESOLVED
            and s.queue != target  # already in front of the supervisors
            and UNRESOLVED_MARK not in s.data
            and s.id not in self._escalating
        ]
        done = []
        for s in due:
            self._escalating.add(s.id)
            try:
                await self._escalate_unresolved(s, target, now - s.created_at)
                done.append(s.id)
            except Exception as e:  # not stored: the next round tries again
                log.warning("unresolved session %s not escalated yet: %r", s.id, e)
            finally:
                self._escalating.discard(s.id)
        return done

    async def _escalate_unresolved(self, s: Session, target: str, age: float) -> None:
        detail = {"session": s.id, "kind": s.kind, "queue": s.queue, "state": s.state, "agent": s.agent,
                  "phone": s.phone, "created_at": s.created_at, "open_s": round(age, 3)}  # fmt: skip
        sup, _ = await self.request(
            channel="data",
            queue=target,
            tenant=s.tenant,
            kind=UNRESOLVED,
            klass=None,
            customer=dict(s.data.get("customer") or {}),
            skills={},
            data=detail,
            idempotency_key=f"unresolved:{s.id}",
        )
        if s.id not in self.open:
            return  # closed while the supervisor session was stored: nothing left to mark
        s.data[UNRESOLVED_MARK] = sup.id
        self.gw.metrics.unresolved_escalations += 1
        self.record(s, [("escalated", {"reason": "unresolved", "to": target, "supervisor_session": sup.id,
                                       "open_s": round(age, 3)})])  # fmt: skip

    # -- recovery ---------------------------------------------------------------------------------

    async def recover(self) -> dict[str, int]:
        """Give open sessions back to the engine after a restart (see the module docstring)."""
        gw = self.gw
        counts = {"requeued": 0, "restored": 0}
        grace = gw.cfg.sessions["agent_grace_s"]
        for row in await gw.store.open_sessions():
            s = Session.from_row(row)
            if gw.cfg.queue(s.queue) is None:
                log.error("session %s waits in queue %s, which no longer exists", s.id, s.queue)
                continue
            self._adopt(s)
            if s.idempotency_key:
                self.by_key[s.idempotency_key] = s.id
            if s.state in ("assigned", "wrapup") and s.agent and s.agent in gw.routing.agent_configs:
                gw.routing.restore_assigned(s, s.agent, grace)
                counts["restored"] += 1
                continue
            s.state = "waiting"
            s.agent = None
            s.offers.clear()
            self.record(s, [("queued", {"reason": "recovered", "queue": s.queue})])
            gw.routing.enqueue(s)
            counts["requeued"] += 1
        return counts
