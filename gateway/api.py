"""The admin REST API under ``/api/`` (docs/admin-api.md; the contract is gateway/openapi.py).

Who may call what: ``GET /api/health`` and ``GET /api/ready`` are open (load
balancers and orchestrators probe them without secrets); everything else
needs ``Authorization: Bearer TOKEN`` from ``[[admins]]``, and only role
``admin`` may change anything (a ``viewer`` gets 403). Every failure is a
JSON body ``{"error": code, "message": ...}`` with a 4xx/5xx status, including
unknown routes and methods under ``/api/`` (a middleware turns aiohttp's
plain-text 404/405 into JSON there, and leaves the rest of the site alone).

Inputs are validated before anything happens: unknown query parameters and
unknown body keys are refused (a misspelt filter that silently matched
everything would be worse than an error), times are ISO 8601 with a zone or
epoch seconds, and each 400 names the offending parameter.

Where the answers come from:

* queues and agents: the ACD engine's live statistics (``router.stats`` /
  ``router.agents``). The engine keeps a waiting line per tenant
  (``name@tenant``, see gateway/routing.py); the API adds them back up per
  configured queue and shows the per-tenant breakdown beside the sum.
* sessions: open ones from memory (the freshest state: the store trails it
  by one commit), closed ones from the store.
* terminals: memory for vehicles seen since start (connected or not), the
  store's last saved row for the rest.

Output times are UNIX epoch seconds (floats); positions are the same objects
agents receive (with ISO 8601 strings inside).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from acd_core import erlang

from . import config as config_mod
from .auth import admin, json_error
from .config import CHANNELS, ConfigError
from .routing import gateway_queue, known_tenants
from .sessions import Session
from .store import CLOSED_STATES, OPEN_STATES, StoreError

if TYPE_CHECKING:
    from .app import Gateway

log = logging.getLogger("telacd.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PHONE = re.compile(r"\d{1,20}")
KIND = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
MAX_SESSIONS = 1000
MAX_TERMINALS = 100_000
MAX_TRAIL = 100_000
# engine agent states in which an agent counts as staffing its queues (acd_core: presence ready or wrap-up)
STAFFED_STATES = ("available", "offered", "busy", "wrapup")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # OPT_NON_STR_KEYS: engine dicts may be keyed by ints (offer ids); floats inf/nan become null
    body = orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


def _plain_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON error as a response (for statuses ``json_error`` has no exception class for, e.g. 405, 413)."""
    return json_response({"error": code, "message": message}, status, headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Under /api/: aiohttp's own errors as JSON, store outages as 503, bugs as a JSON 500."""
    path = request.path
    if not (path == "/api" or path.startswith("/api/")):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.content_type == "application/json":
            raise
        if e.status == 404:
            raise json_error(404, "not_found", f"no such endpoint: {request.method} {path}") from None
        if e.status == 405:
            allow = e.headers.get("Allow", "")
            return _plain_error(405, "method_not_allowed", f"{request.method} is not allowed on {path} (allowed: {allow})",
                                {"Allow": allow})  # fmt: skip
        if e.status == 413:
            return _plain_error(413, "too_large", "request body too large (1 MiB at most)")
        if e.status < 400:
            raise
        return _plain_error(e.status, (e.reason or "error").lower().replace(" ", "_"), e.text or e.reason)
    except StoreError as e:
        raise json_error(503, "store_unavailable", f"the store cannot answer now: {e}") from None
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, path)
        raise json_error(500, "internal", "internal error (logged by the gateway)") from None


# -- input validation -------------------------------------------------------------------------


def bad(message: str, code: str = "bad_request") -> web.HTTPException:
    return json_error(400, code, message)


def _query(request: web.Request, allowed: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in request.query:
        if key not in allowed:
            known = ", ".join(allowed) if allowed else "none"
            raise bad(f"unknown query parameter {key!r} (known: {known})")
        values = request.query.getall(key)
        if len(values) > 1:
            raise bad(f"query parameter {key!r} given more than once")
        out[key] = values[0]
    return out


def parse_time(text: str, name: str) -> float:
    """ISO 8601 with a zone (``2025-03-01T08:00:00+08:00``, ``…Z``) or UNIX epoch seconds."""
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise bad(f"{name!r} must be a finite number of epoch seconds")
        return value
    # an unencoded '+' of a zone offset arrives as a space in a query string
    fixed = re.sub(r" (\d\d:?\d\d)$", r"+\1", text.strip())
    try:
        d = dt.datetime.fromisoformat(fixed)
    except ValueError:
        raise bad(f"{name!r} is neither ISO 8601 nor epoch seconds: {text!r}") from None
    if d.tzinfo is None:
        raise bad(f"{name!r} needs a zone (Z or an offset such as +08:00): {text!r}")
    return d.timestamp()


def _time_range(q: dict[str, str], default_span: float | None = None) -> tuple[float | None, float | None]:
    since = parse_time(q["from"], "from") if "from" in q else None
    until = parse_time(q["to"], "to") if "to" in q else None
    if default_span is not None:
        until = time.time() if until is None else until
        since = until - default_span if since is None else since
    if since is not None and until is not None and since > until:
        raise bad("'from' is after 'to'")
    return since, until


def _int_param(q: dict[str, str], name: str, lo: int, hi: int, default: int) -> int:
    if name not in q:
        return default
    try:
        value = int(q[name])
    except ValueError:
        raise bad(f"{name!r} must be an integer {lo}-{hi}") from None
    if not lo <= value <= hi:
        raise bad(f"{name!r} must be an integer {lo}-{hi}")
    return value


def _bool_param(q: dict[str, str], name: str) -> bool | None:
    if name not in q:
        return None
    text = q[name].lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise bad(f"{name!r} must be true or false")


def _phone(request: web.Request) -> str:
    phone = request.match_info["phone"]
    if not PHONE.fullmatch(phone):
        raise bad(f"a terminal phone is 1-20 digits, got {phone!r}")
    return phone


async def _json_body(request: web.Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        raise bad("send a JSON object as the request body")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise bad(f"the body is not valid JSON: {e}", "bad_json") from None
    if not isinstance(body, dict):
        raise bad("the body must be a JSON object")
    for key in body:
        if key not in allowed:
            raise bad(f"unknown field {key!r} (known: {', '.join(allowed)})")
    return body


def _opt_str(body: dict[str, Any], key: str, max_len: int = 200) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise bad(f"{key!r} must be a non-empty string of at most {max_len} characters")
    return value


def _opt_object(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad(f"{key!r} must be a JSON object")
    return value


# -- JSON views --------------------------------------------------------------------------------


def session_json(s: Session, *, full: bool = False) -> dict[str, Any]:
    """A session for the API: the offer summary plus the bookkeeping fields; ``full`` adds data and skills."""
    out = s.summary()
    out.update(
        phone=s.phone,
        updated_at=s.updated_at,
        closed_at=s.closed_at,
        disposition=s.disposition,
        idempotency_key=s.idempotency_key,
    )
    if full:
        out["skills"] = dict(s.skills)
        out["data"] = s.data
    else:
        out.pop("trail", None)  # up to thousands of points: the detail has it
    return out


def _finite(x: Any) -> Any:
    return x if not isinstance(x, float) or math.isfinite(x) else None


def _combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Add per-tenant window summaries back up (rates re-derived from the underlying sums)."""

    def total(key: str) -> float:
        return sum(p[key] for p in parts)

    def weighted(key: str, weight: Callable[[dict[str, Any]], float]) -> float:
        return sum((p[key] or 0.0) * weight(p) for p in parts)

    answered, abandoned, handled = total("answered"), total("abandoned"), total("handled")
    resolved = answered + abandoned
    answered_sl = weighted("service_level", lambda p: p["answered"] + p["abandoned"])
    answered_sl2 = weighted("service_level_2", lambda p: p["answered"] + p["abandoned"])
    wait_sum = weighted("asa_s", lambda p: p["answered"])
    waited = weighted("p_wait", lambda p: p["answered"])
    handle_sum = weighted("aht_s", lambda p: p["handled"])
    return {
        "offered": int(total("offered")),
        "answered": int(answered),
        "abandoned": int(abandoned),
        "cancelled": int(total("cancelled")),
        "merged": int(total("merged")),
        "handled": int(handled),
        "service_level": answered_sl / resolved if resolved else None,
        "service_level_2": answered_sl2 / resolved if resolved else None,
        "asa_s": wait_sum / answered if answered else None,
        "p_wait": waited / answered if answered else None,
        "aht_s": handle_sum / handled if handled else None,
        "abandon_rate": abandoned / resolved if resolved else None,
        "arrival_rate": total("arrival_rate"),
        "span_s": max((p["span_s"] for p in parts), default=0.0),
    }


def predict(window: dict[str, Any], staffed: int, threshold: float, target: float) -> dict[str, Any]:
    """Erlang C (M/M/N) from a window's arrival rate and handle time, as the engine does per queue."""
    lam, aht = window["arrival_rate"], window["aht_s"]
    if aht is None or lam <= 0:
        return {"load_erlangs": 0.0, "agents": staffed, "p_wait": None, "asa_s": None,
                "service_level": None, "agents_needed": None}  # fmt: skip
    a = lam * aht
    return {
        "load_erlangs": a,
        "agents": staffed,
        "p_wait": erlang.erlang_c(staffed, a),
        "asa_s": _finite(erlang.asa(staffed, a, aht)),
        "service_level": erlang.service_level(staffed, a, aht, threshold),
        "agents_needed": erlang.agents_needed(a, aht, threshold, target),
    }


def queues_json(gw: Gateway) -> list[dict[str, Any]]:
    routing = gw.routing
    now = routing.now()
    stats = routing.router.stats(now)
    agents = routing.router.agents(now)
    out = []
    for spec in gw.cfg.queues:
        tenants: dict[str, dict[str, Any]] = {}
        pools: dict[str, dict[str, Any]] = {}
        for name, st in stats.items():
            if gateway_queue(name) != spec.name:
                continue
            entry = {k: st[k] for k in ("depth", "longest_wait_s", "staffed", "window", "since_start",
                                        "erlang_c", "classes")}  # fmt: skip
            entry["engine_queue"] = name
            if "~" in name:
                pools[name] = entry
            else:
                tenants[name.split("@", 1)[1] if "@" in name else spec.tenant] = entry
        engine_names = {t["engine_queue"] for t in tenants.values()}
        # an agent in several tenants' lines of this queue is still one agent
        staffed = sum(1 for a in agents if a["state"] in STAFFED_STATES and engine_names & set(a["queues"]))
        parts = list(tenants.values())
        window = _combine([t["window"] for t in parts])
        qcfg = routing.queue_configs.get(next(iter(engine_names), ""), None)
        target = qcfg.sl_target if qcfg is not None else 0.8
        classes: dict[str, dict[str, Any]] = {}
        for c in spec.classes:
            cparts = [t["classes"][c.name] for t in parts if c.name in t["classes"]]
            classes[c.name] = {
                "priority": c.priority,
                "target_s": c.target_s,
                "depth": sum(p["depth"] for p in cparts),
                "longest_wait_s": max((p["longest_wait_s"] for p in cparts), default=0.0),
                "window": _combine([p["window"] for p in cparts]),
            }
        out.append(
            {
                "name": spec.name,
                "tenant": spec.tenant,
                "strategy": spec.strategy,
                "order": spec.order,
                "skills": dict(spec.skills),
                "sl_threshold_s": spec.sl_threshold_s,
                "depth": sum(t["depth"] for t in parts),
                "longest_wait_s": max((t["longest_wait_s"] for t in parts), default=0.0),
                "staffed": staffed,
                "window": window,
                "since_start": _combine([t["since_start"] for t in parts]),
                "erlang_c": predict(window, staffed, spec.sl_threshold_s, target),
                "classes": classes,
                "tenants": tenants,
                "pools": pools,
            }
        )
    return out


def agents_json(gw: Gateway) -> list[dict[str, Any]]:
    routing = gw.routing
    out = []
    for info in routing.router.agents(routing.now()):
        spec = gw.agent_specs.get(info["id"])
        ch = gw.agents.channels.get(info["id"])
        a = dict(info)
        # engine times are the loop's monotonic clock; the API speaks wall-clock epoch seconds
        for key in ("since", "idle_since"):
            if isinstance(a.get(key), int | float) and math.isfinite(a[key]):
                a[key] = routing.wall(a[key])
            else:
                a[key] = None
        a["offers"] = [str(o) for o in a.get("offers", ())]
        a["connected"] = ch is not None and not ch.closed
        if spec is not None:
            a.update(name=spec.name, tenants=list(spec.tenants), skills=dict(spec.skills))
        out.append(a)
    return out


def _terminal_json(gw: Gateway, row: Any, v: Any) -> dict[str, Any]:
    """One terminal: the in-memory vehicle where it has news, else the stored row."""
    out: dict[str, Any] = {
        "phone": row.phone if row is not None else v.phone,
        "tenant": (v.tenant if v is not None else row.tenant) or "",
        "online": bool(v is not None and v.online),
        "last_seen": row.last_seen if row is not None else None,
        "last_position": row.last_position if row is not None else None,
        "registered_at": row.registered_at if row is not None else None,
        "info": (row.info if row is not None else None) or {},
    }
    if v is not None:
        if v.last_loc is not None:
            out["last_seen"] = v.last_recv
            out["last_position"] = gw.position_json(v.last_loc, v.last_recv)
        if v.registered_at is not None:
            out["registered_at"] = v.registered_at
        if v.info:
            out["info"] = v.info
        out["open_sessions"] = sorted(v.sessions) if v.sessions else []
    else:
        out["open_sessions"] = []
    return out


# -- handlers ------------------------------------------------------------------------------------


class Api:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def health(self, request: web.Request) -> web.Response:
        _query(request, ())
        gw = self.gw
        return json_response(
            {
                "status": "ok",
                "name": gw.cfg.gateway["name"],
                "started": gw.started,
                "uptime_s": round(time.time() - gw.started, 3),
                "ready": gw.ready,
            }
        )

    async def ready(self, request: web.Request) -> web.Response:
        """200 when the gateway has started and its store answers; 503 (JSON) otherwise."""
        _query(request, ())
        gw = self.gw
        try:
            store_ok = await asyncio.wait_for(gw.store.ping(), 2.0)
        except (TimeoutError, StoreError, OSError):
            store_ok = False
        if not gw.ready or not store_ok:
            why = "the gateway is starting or stopping" if not gw.ready else "the store does not answer"
            raise json_error(503, "not_ready", why, ready=False, started=gw.ready, store=store_ok)
        return json_response({"ready": True, "started": True, "store": True})

    async def openapi(self, request: web.Request) -> web.Response:
        admin(self.gw, request)
        _query(request, ())
        from .openapi import document

        return json_response(document())

    async def queues(self, request: web.Request) -> web.Response:
        admin(self.gw, request)
        _query(request, ())
        return json_response({"queues": queues_json(self.gw)})

    async def agents(self, request: web.Request) -> web.Response:
        admin(self.gw, request)
        _query(request, ())
        return json_response({"agents": agents_json(self.gw)})

    async def sessions(self, request: web.Request) -> web.Response:
        gw = self.gw
        admin(gw, request)
        q = _query(request, ("state", "queue", "tenant", "kind", "from", "to", "limit"))
        state = q.get("state")
        known_states = (*OPEN_STATES, *CLOSED_STATES, "open", "closed")
        if state is not None and state not in known_states:
            raise bad(f"unknown state {state!r} (known: {', '.join(known_states)})")
        limit = _int_param(q, "limit", 1, MAX_SESSIONS, 100)
        since, until = _time_range(q)
        queue, tenant, kind = q.get("queue"), q.get("tenant"), q.get("kind")
        found: dict[str, dict[str, Any]] = {}
        if state is None or state == "open" or state in OPEN_STATES:
            for s in gw.sessions.open.values():
                if ((state in (None, "open") or s.state == state) and (queue is None or s.queue == queue)
                        and (tenant is None or s.tenant == tenant) and (kind is None or s.kind == kind)
                        and (since is None or s.created_at >= since)
                        and (until is None or s.created_at <= until)):  # fmt: skip
                    found[s.id] = session_json(s)
        if state is None or state == "closed" or state in CLOSED_STATES:
            # one query per closed state: the store's rows of open sessions trail memory, so they are not used
            for st in CLOSED_STATES if state in (None, "closed") else (state,):
                rows = await gw.store.list_sessions(state=st, queue=queue, tenant=tenant, kind=kind,
                                                    since=since, until=until, limit=limit)  # fmt: skip
                for row in rows:
                    if row.id not in gw.sessions.open:
                        found[row.id] = session_json(Session.from_row(row))
        listed = sorted(found.values(), key=lambda s: (s["created_at"], s["id"]), reverse=True)[:limit]
        return json_response({"sessions": listed, "count": len(listed), "limit": limit})

    async def session(self, request: web.Request) -> web.Response:
        gw = self.gw
        admin(gw, request)
        _query(request, ())
        sid = request.match_info["id"]
        s = gw.sessions.open.get(sid)
        if s is None:
            row = await gw.store.get_session(sid)
            if row is None:
                raise json_error(404, "unknown_session", f"no session {sid!r}")
            s = Session.from_row(row)
        out = session_json(s, full=True)
        out["open"] = sid in gw.sessions.open
        routing = None
        if gw.routing.router.has_task(sid):
            info = gw.routing.router.task_info(sid)
            routing = {
                "state": info["state"],
                "waiting_in": info["waiting_in"],
                "step": info["step"],
                "deadline": _finite(gw.routing.wall(info["deadline"]))
                if info["deadline"] is not None
                else None,
                "offers": [
                    {
                        "offer": str(o["offer_id"]),
                        "agent": o["agent"],
                        "expires_at": gw.routing.wall(o["expires_at"]),
                    }
                    for o in info["offers"]
                ],
            }
        out["routing"] = routing
        out["events"] = [
            {"seq": e.seq, "event": e.event, "at": e.at, "data": e.data}
            for e in await gw.store.session_events(sid)
        ]
        return json_response(out)

    async def create_session(self, request: web.Request) -> web.Response:
        """A session from another channel (app, web, chat): routed, offered, fed and stored like an alert."""
        gw = self.gw
        admin(gw, request, write=True)
        body = await _json_body(request, ("channel", "queue", "tenant", "customer", "skills", "data",
                                          "idempotency_key", "class", "kind", "priority"))  # fmt: skip
        cfg = gw.cfg
        channel = body.get("channel")
        if channel not in CHANNELS:
            raise bad(f"'channel' must be one of {', '.join(CHANNELS)}")
        qname = body.get("queue")
        if not isinstance(qname, str) or not qname:
            raise bad("'queue' is required (a configured queue name)")
        spec = cfg.queue(qname)
        if spec is None:
            raise bad(
                f"no queue named {qname!r} (known: {', '.join(q.name for q in cfg.queues)})", "unknown_queue"
            )
        tenant = _opt_str(body, "tenant", 100)
        if tenant is None:
            tenant = spec.tenant if spec.tenant != "*" else cfg.terminals["default_tenant"]
        else:
            tenants = known_tenants(cfg)
            if tenant not in tenants:
                raise bad(f"unknown tenant {tenant!r} (known: {', '.join(tenants)})", "unknown_tenant")
            if spec.tenant not in ("*", tenant):
                raise bad(f"queue {qname!r} serves tenant {spec.tenant!r} only", "unknown_tenant")
        customer = _opt_object(body, "customer")
        tier = customer.get("tier")
        if tier is not None and (not isinstance(tier, str) or not tier):
            raise bad("'customer.tier' must be a non-empty string")
        skills_raw = _opt_object(body, "skills")
        skills: dict[str, int] = {}
        for name, level in skills_raw.items():
            if not name.strip() or len(name) > 100:
                raise bad(f"'skills': a skill name must be 1-100 characters, not blank, got {name!r}")
            if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 10:
                raise bad(f"'skills.{name}': the level must be an integer 1-10, got {level!r}")
            skills[name] = level
        data = _opt_object(body, "data")
        key = _opt_str(body, "idempotency_key")
        header_key = request.headers.get("Idempotency-Key")
        if header_key is not None:
            if not header_key or len(header_key) > 200:
                raise bad("the Idempotency-Key header must be 1-200 characters")
            if key is not None and key != header_key:
                raise bad("'idempotency_key' and the Idempotency-Key header differ")
            key = header_key
        klass = _opt_str(body, "class", 100)
        if klass is not None and klass not in {c.name for c in spec.classes}:
            raise bad(
                f"queue {qname!r} has no class {klass!r} (known: {', '.join(c.name for c in spec.classes)})"
            )
        kind = body.get("kind", channel)
        if not isinstance(kind, str) or not KIND.fullmatch(kind):
            raise bad("'kind' must match [a-z0-9][a-z0-9_.-]{0,63}")
        priority = body.get("priority")
        if priority is not None and (
            isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 1_000_000
        ):
            raise bad("'priority' must be an integer 0-1000000")
        s, created = await gw.sessions.request(
            channel=channel, queue=spec.name, tenant=tenant, kind=kind, klass=klass, customer=customer,
            skills=skills, data=data, idempotency_key=key, priority=priority,
        )  # fmt: skip
        if not created and (s.channel, s.queue, s.tenant, s.kind) != (channel, spec.name, tenant, kind):
            raise json_error(409, "idempotency_conflict",
                             f"idempotency key {key!r} was used for another request (session {s.id})",
                             session=s.id)  # fmt: skip
        out = {"id": s.id, "created": created, **session_json(s)}
        return json_response(out, 201 if created else 200, {"Location": f"/api/sessions/{s.id}"})

    async def terminals(self, request: web.Request) -> web.Response:
        gw = self.gw
        admin(gw, request)
        q = _query(request, ("online", "tenant", "limit"))
        online = _bool_param(q, "online")
        tenant = q.get("tenant")
        limit = _int_param(q, "limit", 1, MAX_TERMINALS, 1000)
        vehicles = gw.terminals.vehicles
        rows = {} if online else {r.phone: r for r in await gw.store.list_terminals(limit=MAX_TERMINALS)}
        out = []
        for phone in sorted(set(rows) | set(vehicles)):
            t = _terminal_json(gw, rows.get(phone), vehicles.get(phone))
            if online is not None and t["online"] != online:
                continue
            if tenant is not None and t["tenant"] != tenant:
                continue
            out.append(t)
            if len(out) >= limit:
                break
        return json_response({"terminals": out, "count": len(out), "limit": limit})

    async def _known_terminal(self, phone: str) -> None:
        if phone in self.gw.terminals.vehicles:
            return
        if await self.gw.store.get_terminal(phone) is None:
            raise json_error(404, "unknown_terminal", f"no terminal {phone!r} has been seen")

    async def trail(self, request: web.Request) -> web.Response:
        gw = self.gw
        admin(gw, request)
        phone = _phone(request)
        q = _query(request, ("from", "to", "limit"))
        since, until = _time_range(q, default_span=3600.0)
        limit = _int_param(q, "limit", 1, MAX_TRAIL, 10_000)
        await self._known_terminal(phone)
        rows = await gw.store.trail(phone, since, until, limit=limit + 1)
        points = []
        for r in rows[:limit]:
            extra = r[10]
            points.append(
                {
                    "t": r[1],
                    "recv": r[2],
                    "lat": r[3],
                    "lon": r[4],
                    "altitude_m": r[5],
                    "speed_kmh": r[6],
                    "direction": r[7],
                    "alarm": r[8],
                    "status": r[9],
                    "extra": orjson.loads(extra) if extra else None,
                }
            )
        return json_response({"phone": phone, "from": since, "to": until, "count": len(points),
                              "truncated": len(rows) > limit, "points": points})  # fmt: skip

    async def command(self, request: web.Request) -> web.Response:
        """A downlink command from a supervisor: the agents' command set and checks (gateway/downlink.py)."""
        gw = self.gw
        who = admin(gw, request, write=True)
        phone = _phone(request)
        body = await _json_body(request, ("command", "params", "session"))
        command = body.get("command")
        if not isinstance(command, str) or not command:
            raise bad("'command' is required")
        params = _opt_object(body, "params")
        try:
            gw.downlink.check(command, params)
        except ValueError as e:
            raise bad(str(e), "bad_command") from None
        session = None
        sid = _opt_str(body, "session")
        if sid is not None:
            session = gw.sessions.open.get(sid)
            if session is None:
                raise bad(f"no open session {sid!r}", "unknown_session")
            if session.phone != phone:
                raise bad(f"session {sid} is not about terminal {phone}", "unknown_session")
        await self._known_terminal(phone)
        outcome = await gw.downlink.request(phone, command, params, session=session, agent=None)
        log.info("command %s to %s by admin %s: %s", command, phone, who.id, outcome.get("status"))
        return json_response({"command": command, "phone": phone, **outcome},
                             202 if outcome.get("status") == "queued" else 200)  # fmt: skip

    async def reload(self, request: web.Request) -> web.Response:
        """Re-read the configuration file and apply queues, agents, triggers, subscribers, admins."""
        gw = self.gw
        who = admin(gw, request, write=True)
        _query(request, ())
        if not gw.config_path:
            raise json_error(
                409, "no_config_file", "the gateway runs on defaults (no --config): nothing to re-read"
            )
        try:
            cfg = config_mod.load(gw.config_path)
        except ConfigError as e:
            raise json_error(400, "config_error", str(e), file=e.source, key=e.key, reason=e.reason) from None
        summary = await gw.reload(cfg)
        log.info("configuration reloaded by admin %s", who.id)
        return json_response({"reloaded": True, **summary})


# The routes; gateway/openapi.py documents each (a test keeps the two in step).
ROUTES: tuple[tuple[str, str, str], ...] = (
    ("GET", "/api/health", "health"),
    ("GET", "/api/ready", "ready"),
    ("GET", "/api/openapi.json", "openapi"),
    ("GET", "/api/queues", "queues"),
    ("GET", "/api/agents", "agents"),
    ("GET", "/api/sessions", "sessions"),
    ("POST", "/api/sessions", "create_session"),
    ("GET", "/api/sessions/{id}", "session"),
    ("GET", "/api/terminals", "terminals"),
    ("GET", "/api/terminals/{phone}/trail", "trail"),
    ("POST", "/api/terminals/{phone}/commands", "command"),
    ("POST", "/api/reload", "reload"),
)


def setup(app: web.Application, gw: Gateway) -> None:
    """Add the /api/ routes and the JSON-error middleware to the gateway's HTTP application."""
    api = Api(gw)
    for method, path, name in ROUTES:
        app.router.add_route(method, path, getattr(api, name))
    app.middlewares.append(json_errors)
