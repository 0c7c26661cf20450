"""The OpenAPI 3.1 document of the admin REST API (served at ``GET /api/openapi.json``).

Written by hand next to gateway/api.py rather than generated: the handlers
validate their inputs themselves and the descriptions here are for
operators. It is kept true by tests (tests/gateway/test_api.py): every
``/api`` route of the running application and every method on it is in
``paths`` and every documented operation exists; the document validates as
OpenAPI 3.1; and the REST round-trip tests check real answers against the
response schemas below. A new route without an entry here fails the suite.

Schemas are JSON Schema 2020-12 (what OpenAPI 3.1 uses): a value that may be
absent is ``"type": [..., "null"]``.
"""

from __future__ import annotations

import copy
import importlib.util
from typing import Any

_STR = {"type": "string"}
_NUM = {"type": "number"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_OBJ = {"type": "object"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    out = dict(schema)
    t = out.get("type")
    if t is not None:
        out["type"] = [*(t if isinstance(t, list) else [t]), "null"]
    else:
        out = {"anyOf": [schema, {"type": "null"}]}
    return out


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str], props: dict[str, Any], extra: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "required": required, "properties": props}
    if not extra:
        out["additionalProperties"] = False
    return out


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    names = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
             413: "TooLarge", 503: "Unavailable"}  # fmt: skip
    return {str(s): {"$ref": f"#/components/responses/{names[s]}"} for s in statuses}


def _param(name: str, where: str, description: str, schema: dict[str, Any], required: bool = False) -> dict:
    return {"name": name, "in": where, "description": description, "required": required, "schema": schema}


_TIME_PARAM_SCHEMA = {"type": "string", "examples": ["2025-03-01T08:00:00+08:00", "1740787200"]}


def _time_param(name: str, what: str) -> dict[str, Any]:
    return _param(name, "query", f"{what}: ISO 8601 with a zone (Z or +hh:mm) or UNIX epoch seconds",
                  _TIME_PARAM_SCHEMA)  # fmt: skip


SUMMARY = _obj(
    ["offered", "answered", "abandoned", "handled", "arrival_rate"],
    {
        "offered": _INT, "answered": _INT, "abandoned": _INT, "cancelled": _INT, "merged": _INT, "handled": _INT,
        "service_level": {**_nullable(_NUM), "description": "answered within the threshold / (answered + abandoned)"},
        "service_level_2": {**_nullable(_NUM), "description": "as service_level, abandons within T count as met"},
        "asa_s": {**_nullable(_NUM), "description": "average speed of answer"},
        "p_wait": {**_nullable(_NUM), "description": "share of answered sessions that waited at all"},
        "aht_s": {**_nullable(_NUM), "description": "average handle time"},
        "abandon_rate": _nullable(_NUM),
        "arrival_rate": {**_NUM, "description": "sessions per second"},
        "occupancy": _nullable(_NUM),
        "span_s": _NUM,
    },
)  # fmt: skip

PREDICTION = _obj(
    ["load_erlangs", "agents"],
    {
        "load_erlangs": {**_NUM, "description": "arrival rate × handle time of the window"},
        "agents": {**_INT, "description": "agents staffing the queue now"},
        "p_wait": {**_nullable(_NUM), "description": "Erlang C probability of waiting"},
        "asa_s": {**_nullable(_NUM), "description": "predicted mean wait (null when unstable)"},
        "service_level": {**_nullable(_NUM), "description": "predicted share answered within the threshold"},
        "agents_needed": {**_nullable(_INT), "description": "agents needed for the service-level target"},
    },
)

QUEUE_PART = _obj(
    ["depth", "longest_wait_s", "staffed", "window", "since_start", "erlang_c", "engine_queue"],
    {
        "engine_queue": {**_STR, "description": "the ACD engine's queue (name@tenant, or name~poolN)"},
        "depth": _INT, "longest_wait_s": _NUM, "staffed": _INT,
        "window": _ref("Summary"), "since_start": _ref("Summary"), "erlang_c": _ref("Prediction"),
        "classes": {"type": "object", "additionalProperties": _OBJ},
    },
)  # fmt: skip

QUEUE = _obj(
    ["name", "tenant", "strategy", "depth", "longest_wait_s", "staffed", "window", "since_start", "erlang_c",
     "classes", "tenants", "pools"],
    {
        "name": _STR,
        "tenant": {**_STR, "description": "'*' when the queue serves every tenant"},
        "strategy": _STR, "order": {"enum": ["priority", "edf"]},
        "skills": {"type": "object", "additionalProperties": _INT},
        "sl_threshold_s": _NUM,
        "depth": {**_INT, "description": "sessions waiting, all tenants (including those escalated to a pool)"},
        "longest_wait_s": _NUM,
        "staffed": {**_INT, "description": "distinct agents available, busy or in wrap-up for this queue"},
        "window": {**_ref("Summary"), "description": "the last 15 minutes, all tenants added up"},
        "since_start": _ref("Summary"),
        "erlang_c": {**_ref("Prediction"), "description": "Erlang C from the window's arrival rate and handle time"},
        "classes": {"type": "object", "additionalProperties": _obj(
            ["priority", "depth", "longest_wait_s", "window"],
            {"priority": _INT, "target_s": _NUM, "depth": _INT, "longest_wait_s": _NUM, "window": _ref("Summary")},
        )},
        "tenants": {"type": "object", "description": "per-tenant waiting lines (the engine's own statistics)",
                    "additionalProperties": _ref("QueuePart")},
        "pools": {"type": "object", "description": "shared escalation pools of this queue",
                  "additionalProperties": _ref("QueuePart")},
    },
)  # fmt: skip

AGENT = _obj(
    ["id", "state", "connected", "tasks", "offers", "load", "capacity", "queues"],
    {
        "id": _STR, "name": _STR,
        "state": {"enum": ["logged_out", "available", "offered", "busy", "wrapup", "break", "disconnected"]},
        "reason": _STR, "since": _nullable(_NUM), "time_in_state": _NUM,
        "connected": {**_BOOL, "description": "an agent connection is open now"},
        "tasks": {"type": "array", "items": _STR, "description": "session ids in the agent's hands"},
        "offers": {"type": "array", "items": _STR},
        "load": {"type": "object", "additionalProperties": _INT, "description": "sessions per channel now"},
        "capacity": {"type": "object", "additionalProperties": _INT},
        "queues": {"type": "array", "items": _STR},
        "tenants": {"type": "array", "items": _STR},
        "skills": {"type": "object", "additionalProperties": _INT},
        "offered": _INT, "answered": _INT, "handled": _INT, "consecutive_no_answers": _INT,
        "talk_time": _NUM, "idle_since": _nullable(_NUM), "occupancy": _NUM,
        "time_in": {"type": "object", "additionalProperties": _NUM},
    },
)  # fmt: skip

SESSION = _obj(
    ["id", "kind", "channel", "queue", "tenant", "class", "priority", "state", "created_at", "arrival"],
    {
        "id": _STR, "kind": {**_STR, "description": "crash, sos, rollover, service, chat, unresolved, …"},
        "channel": {"enum": ["voice", "data", "chat"]}, "queue": _STR, "tenant": _STR, "class": _STR,
        "priority": _NUM,
        "state": {"enum": ["waiting", "offered", "assigned", "wrapup", "completed", "abandoned", "cancelled",
                           "merged"]},
        "created_at": _NUM, "arrival": {**_NUM, "description": "ACD arrival (kept across restarts)"},
        "updated_at": _NUM, "closed_at": _nullable(_NUM), "agent": _nullable(_STR), "phone": _nullable(_STR),
        "disposition": _nullable(_STR), "idempotency_key": _nullable(_STR),
        "vehicle": _OBJ, "position": _OBJ, "alarms": {"type": "array", "items": _STR}, "alerts": _INT,
        "request": _STR, "customer": _OBJ, "data": _OBJ, "late": _BOOL,
    },
)  # fmt: skip

EVENT = _obj(
    ["seq", "event", "at", "data"],
    {"seq": {**_INT, "description": "gateway-wide, gap-free (the feed's sequence number)"},
     "event": {"enum": ["created", "updated", "queued", "offered", "assigned", "command", "completed",
                        "abandoned", "escalated"]},
     "at": _NUM, "data": _OBJ},
)  # fmt: skip

SESSION_DETAIL = {
    "allOf": [
        _ref("Session"),
        _obj(
            ["open", "events", "skills", "routing"],
            {
                "open": _BOOL,
                "skills": {"type": "object", "additionalProperties": _INT},
                "trail": {"type": "array", "items": {"type": "array"},
                          "description": "[t, lat, lon, speed_kmh] before the alert"},
                "routing": _nullable(_obj(["state", "waiting_in", "offers"], {
                    "state": _STR, "waiting_in": _STR, "step": _INT, "deadline": _nullable(_NUM),
                    "offers": {"type": "array", "items": _obj(["offer", "agent"], {
                        "offer": _STR, "agent": _STR, "expires_at": _NUM})},
                })),
                "events": {"type": "array", "items": _ref("Event")},
            },
        ),
    ]
}  # fmt: skip

NEW_SESSION = _obj(
    ["channel", "queue"],
    {
        "channel": {"enum": ["voice", "chat", "data"], "description": "which of the agent's capacities it takes"},
        "queue": {**_STR, "description": "a configured queue"},
        "tenant": {**_STR, "description": "a known tenant; default: the queue's, else [terminals] default_tenant"},
        "customer": _obj([], {"tier": {**_STR, "description": "vip, gold or platinum take the queue's first class"}}),
        "skills": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1, "maximum": 10},
                   "propertyNames": {"minLength": 1, "maxLength": 100, "pattern": "\\S"},
                   "description": "skill name (not blank) = the level an agent needs, 1-10"},
        "data": {**_OBJ, "description": "free-form, shown to the agent and stored"},
        "idempotency_key": {**_STR, "maxLength": 200,
                            "description": "a retried POST with the same key returns the first session (200)"},
        "class": {**_STR, "description": "a class of the queue; default: its last (lowest)"},
        "kind": {**_STR, "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$", "description": "default: the channel"},
        "priority": {"type": "integer", "minimum": 0, "maximum": 1000000,
                     "description": "overrides the class's priority"},
    },
    extra=False,
)  # fmt: skip

CREATED = {"allOf": [_ref("Session"), _obj(["id", "created"], {"created": _BOOL})]}

POSITION = _obj(
    ["lat", "lon"],
    {"lat": _NUM, "lon": _NUM, "speed_kmh": _NUM, "direction": _INT, "altitude_m": _INT,
     "time": _nullable(_STR), "received": _STR, "positioned": _BOOL},
)  # fmt: skip

TERMINAL = _obj(
    ["phone", "tenant", "online", "last_seen", "last_position"],
    {
        "phone": _STR, "tenant": _STR, "online": _BOOL,
        "last_seen": {**_nullable(_NUM), "description": "arrival time of the last position"},
        "last_position": _nullable(_ref("Position")),
        "registered_at": _nullable(_NUM), "info": _OBJ,
        "open_sessions": {"type": "array", "items": _STR},
    },
)  # fmt: skip

TRAIL = _obj(
    ["phone", "from", "to", "count", "truncated", "points"],
    {
        "phone": _STR, "from": _NUM, "to": _NUM, "count": _INT,
        "truncated": {**_BOOL, "description": "more points than limit in the range"},
        "points": {"type": "array", "items": _obj(
            ["t", "recv", "lat", "lon"],
            {"t": {**_NUM, "description": "device time (UTC epoch)"}, "recv": _NUM, "lat": _NUM, "lon": _NUM,
             "altitude_m": _INT, "speed_kmh": _NUM, "direction": _INT, "alarm": _INT, "status": _INT,
             "extra": _nullable(_OBJ)},
        )},
    },
)  # fmt: skip

COMMAND = _obj(
    ["command"],
    {
        "command": {"enum": ["text", "callback", "locate", "track", "confirm_alarm"]},
        "params": {**_OBJ, "description": "text: text, flag, text_type; callback: phone, monitor; "
                   "track: interval_s, duration_s; confirm_alarm: alarm_serial, alarm_type; any: expires_in_s"},
        "session": {**_STR, "description": "an open session of this vehicle to record the command on"},
    },
    extra=False,
)  # fmt: skip

OUTCOME = _obj(
    ["command", "phone", "status", "ok"],
    {
        "command": _STR, "phone": _STR,
        "status": {"enum": ["answered", "failed", "queued"]},
        "ok": _BOOL, "result": _INT, "result_name": _STR, "attempts": _INT, "error": _STR,
        "position": _ref("Position"), "command_id": _INT, "expires_at": _NUM,
        "replaced": {"type": "array", "items": _STR,
                     "description": "characters of the text that GBK lacks, sent as '?'"},
        "note": {**_STR, "description": "what was changed on the way to the vehicle"},
    },
)  # fmt: skip

ERROR = _obj(
    ["error", "message"], {"error": {**_STR, "description": "machine-readable code"}, "message": _STR}
)

RELOAD = _obj(
    ["reloaded", "queues", "agents", "triggers", "restart_needed_for"],
    {"reloaded": _BOOL, "queues": {"type": "array", "items": _STR}, "agents": {"type": "array", "items": _STR},
     "triggers": {"type": "array", "items": _STR},
     "restart_needed_for": {"type": "array", "items": _STR,
                            "description": "keys (section.key, e.g. store.pool_size) whose value in the file "
                                           "differs from the running one and applies only after a restart"}},
)  # fmt: skip

CONFIG_ERROR = {
    "allOf": [_ref("Error"), _obj(["file", "key", "reason"], {"file": _STR, "key": _STR, "reason": _STR})]
}


def _list(key: str, item: str) -> dict[str, Any]:
    return _obj([key], {key: {"type": "array", "items": _ref(item)}, "count": _INT, "limit": _INT})


_PATHS: dict[str, Any] = {
    "/api/health": {"get": {
        "summary": "Liveness", "operationId": "health", "security": [], "tags": ["status"],
        "responses": {"200": _json(_obj(["status", "name", "uptime_s", "ready"], {
            "status": {"const": "ok"}, "name": _STR, "started": _NUM, "uptime_s": _NUM, "ready": _BOOL}),
            "the process is up")},
    }},
    "/api/ready": {"get": {
        "summary": "Readiness: started, and the store answers", "operationId": "ready", "security": [],
        "tags": ["status"],
        "responses": {"200": _json(_obj(["ready", "store"], {"ready": {"const": True}, "started": _BOOL,
                                                              "store": _BOOL}), "ready"),
                      "503": _json(_ref("Error"), "not ready: starting, stopping, or the store does not answer")},
    }},
    "/api/openapi.json": {"get": {
        "summary": "This document", "operationId": "openapi", "tags": ["status"],
        "responses": {"200": _json(_OBJ, "OpenAPI 3.1"), **_errors(401)},
    }},
    "/api/queues": {"get": {
        "summary": "Queues with live statistics and Erlang C predictions", "operationId": "listQueues",
        "tags": ["acd"],
        "description": "Per configured queue: the per-tenant waiting lines added up, with the breakdown "
                       "beside them. Counters are over the last 15 minutes (`window`) and since start.",
        "responses": {"200": _json(_list("queues", "Queue"), "queues"), **_errors(400, 401)},
    }},
    "/api/agents": {"get": {
        "summary": "Agents with state, load and counters", "operationId": "listAgents", "tags": ["acd"],
        "responses": {"200": _json(_list("agents", "Agent"), "agents"), **_errors(400, 401)},
    }},
    "/api/sessions": {
        "get": {
            "summary": "Sessions, newest first", "operationId": "listSessions", "tags": ["sessions"],
            "description": "Open sessions come from memory, closed ones from the store.",
            "parameters": [
                _param("state", "query", "a state, or 'open' / 'closed'", {"enum": [
                    "waiting", "offered", "assigned", "wrapup", "completed", "abandoned", "cancelled", "merged",
                    "open", "closed"]}),
                _param("queue", "query", "configured queue name", _STR),
                _param("tenant", "query", "tenant", _STR),
                _param("kind", "query", "session kind", _STR),
                _time_param("from", "created at or after"),
                _time_param("to", "created at or before"),
                _param("limit", "query", "at most this many (default 100)",
                       {"type": "integer", "minimum": 1, "maximum": 1000}),
            ],
            "responses": {"200": _json(_list("sessions", "Session"), "sessions"), **_errors(400, 401, 503)},
        },
        "post": {
            "summary": "Create a session from another channel (app, web, chat)", "operationId": "createSession",
            "tags": ["sessions"],
            "description": "Routed, offered, fed to subscribers and stored like a vehicle's session; the "
                           "agent's capacity for the channel applies. An idempotency key (field or "
                           "`Idempotency-Key` header) makes a retried POST return the first session with 200.",
            "parameters": [_param("Idempotency-Key", "header", "alternative to the idempotency_key field",
                                  {"type": "string", "maxLength": 200})],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("NewSession")}}},
            "responses": {
                "201": _json(_ref("Created"), "created"),
                "200": _json(_ref("Created"), "the session an earlier request with this key created"),
                **_errors(400, 401, 403, 409, 413, 503),
            },
        },
    },
    "/api/sessions/{id}": {"get": {
        "summary": "One session with its events", "operationId": "getSession", "tags": ["sessions"],
        "parameters": [_param("id", "path", "session id", _STR, True)],
        "responses": {"200": _json(_ref("SessionDetail"), "the session"), **_errors(401, 404, 503)},
    }},
    "/api/terminals": {"get": {
        "summary": "Terminals: online, last position, last seen", "operationId": "listTerminals",
        "tags": ["terminals"],
        "parameters": [
            _param("online", "query", "only online (true) or offline (false) terminals", {"type": "boolean"}),
            _param("tenant", "query", "tenant", _STR),
            _param("limit", "query", "at most this many (default 1000), by phone",
                   {"type": "integer", "minimum": 1, "maximum": 100000}),
        ],
        "responses": {"200": _json(_list("terminals", "Terminal"), "terminals"), **_errors(400, 401, 503)},
    }},
    "/api/terminals/{phone}/trail": {"get": {
        "summary": "A vehicle's positions over a time range", "operationId": "getTrail", "tags": ["terminals"],
        "description": "Default: the last hour. Positions reach the store in batches ([store] "
                       "location_flush_ms), so the newest may be missing for that long.",
        "parameters": [
            _param("phone", "path", "terminal phone (digits)", {"type": "string", "pattern": "^[0-9]{1,20}$"}, True),
            _time_param("from", "device time at or after (default: to − 1 h)"),
            _time_param("to", "device time at or before (default: now)"),
            _param("limit", "query", "at most this many points (default 10000)",
                   {"type": "integer", "minimum": 1, "maximum": 100000}),
        ],
        "responses": {"200": _json(_ref("Trail"), "positions, oldest first"), **_errors(400, 401, 404, 503)},
    }},
    "/api/terminals/{phone}/commands": {"post": {
        "summary": "Send a downlink command to a vehicle", "operationId": "sendCommand", "tags": ["terminals"],
        "description": "The agents' command set. Answers with the first outcome: `answered` (200), `failed` "
                       "(200, no answer after the retries or the vehicle went away) or `queued` (202, the "
                       "vehicle is offline: sent when it comes back, unless it expires first). Waits for the "
                       "vehicle's answer: up to command_timeout_s × (2^(command_retries+1) − 1).",
        "parameters": [_param("phone", "path", "terminal phone (digits)",
                              {"type": "string", "pattern": "^[0-9]{1,20}$"}, True)],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Command")}}},
        "responses": {"200": _json(_ref("Outcome"), "answered or failed"),
                      "202": _json(_ref("Outcome"), "queued for an offline vehicle"),
                      **_errors(400, 401, 403, 404, 413, 503)},
    }},
    "/api/reload": {"post": {
        "summary": "Re-read the configuration file", "operationId": "reload", "tags": ["admin"],
        "description": "Applies queues, agents, triggers, subscribers, admins, [sessions], [tenants] and "
                       "[terminals] settings without dropping a connection. [gateway], [store] and "
                       "[terminals] rcvbuf need a restart: their running values stay, and each differing key "
                       "is named in restart_needed_for. Agents removed from the file are logged out.",
        "responses": {
            "200": _json(_ref("ReloadResult"), "applied"),
            "400": _json(_ref("ConfigError"), "the file has an error; the running configuration is kept"),
            **_errors(401, 403, 409, 413),
        },
    }},
}  # fmt: skip

# The dashboard's own data endpoints (gateway/dashboard.py, issue 8) share the /api/ prefix. They feed the page
# and are not a stable interface; they are listed so that the document covers every /api route there is.
_DASHBOARD_PATHS: dict[str, Any] = {
    "/api/dashboard": {"get": {
        "summary": "Dashboard snapshot (the page's data; not a stable interface)", "operationId": "dashboard",
        "tags": ["dashboard"], "responses": {"200": _json(_OBJ, "snapshot"), **_errors(401)},
    }},
    "/api/dashboard/live": {"get": {
        "summary": "Dashboard updates over a WebSocket, about once a second", "operationId": "dashboardLive",
        "tags": ["dashboard"],
        "description": "Browsers cannot set headers on a WebSocket: the token may be given as ?token=.",
        "parameters": [_param("token", "query", "an [[admins]] token (instead of the header)", _STR)],
        "responses": {"101": {"description": "switching to the WebSocket protocol"}, **_errors(401)},
    }},
    "/api/dashboard/map": {"get": {
        "summary": "Map outline and regions for the dashboard (shipped data)", "operationId": "dashboardMap",
        "tags": ["dashboard"], "security": [], "responses": {"200": _json(_OBJ, "regions")},
    }},
    "/api/dashboard/sessions/{sid}": {"get": {
        "summary": "A session as the dashboard shows it", "operationId": "dashboardSession", "tags": ["dashboard"],
        "parameters": [_param("sid", "path", "session id", _STR, True)],
        "responses": {"200": _json(_OBJ, "the session"), **_errors(401, 404)},
    }},
}  # fmt: skip

_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "telacd admin API",
        "version": "1",
        "description": "Queues, agents, sessions and terminals of a telacd gateway. Authenticate with "
        "`Authorization: Bearer TOKEN` from an [[admins]] entry; role `viewer` may only read. Errors are JSON "
        "`{error, message}`. Times in answers are UNIX epoch seconds. Reference: docs/admin-api.md.",
    },
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}],
    "tags": [{"name": n} for n in ("status", "acd", "sessions", "terminals", "admin")],
    "paths": _PATHS,
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                       "description": "a token of an [[admins]] entry"}},
        "schemas": {
            "Error": ERROR, "ConfigError": CONFIG_ERROR, "Summary": SUMMARY, "Prediction": PREDICTION,
            "QueuePart": QUEUE_PART, "Queue": QUEUE, "Agent": AGENT, "Session": SESSION, "Event": EVENT,
            "SessionDetail": SESSION_DETAIL, "NewSession": NEW_SESSION, "Created": CREATED, "Position": POSITION,
            "Terminal": TERMINAL, "Trail": TRAIL, "Command": COMMAND, "Outcome": OUTCOME, "ReloadResult": RELOAD,
        },
        "responses": {
            "BadRequest": _json(_ref("Error"), "invalid input; the message names the parameter"),
            "Unauthorized": _json(_ref("Error"), "no or unknown bearer token"),
            "Forbidden": _json(_ref("Error"), "a viewer asked to change something"),
            "NotFound": _json(_ref("Error"), "no such session, terminal or endpoint"),
            "Conflict": _json(_ref("Error"), "conflicts with an earlier request"),
            "TooLarge": _json(_ref("Error"), "the request body is larger than 1 MiB"),
            "Unavailable": _json(_ref("Error"), "the store does not answer now"),
        },
    },
}  # fmt: skip


def document() -> dict[str, Any]:
    """The OpenAPI document (a copy: callers may change it).

    The dashboard's paths are in it when its module is installed, as gateway/http.py decides whether to
    mount it.
    """
    doc = copy.deepcopy(_DOCUMENT)
    if importlib.util.find_spec("gateway.dashboard") is not None:
        doc["paths"].update(copy.deepcopy(_DASHBOARD_PATHS))
        doc["tags"].append({"name": "dashboard"})
    return doc
