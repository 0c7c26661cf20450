"""The admin REST API over real HTTP: auth, validation, round trips, the OpenAPI document, reload.

Every answer the tests receive is also checked against the response schema the
OpenAPI document gives for that path, method and status (``ApiClient.call``),
so the document cannot drift from what the gateway sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import time
from typing import Any

import aiohttp
import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec

from bench.clients import agent_login, connect, subscribe
from bench.terminal import TerminalClient
from gateway import config
from gateway.app import Gateway
from gateway.openapi import document

from .harness import Endpoints, make_config, running_gateway, to_toml

SOS = 1 << 0
DOC = document()
_TEMPLATES = [(re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", p) + "$"), p) for p in DOC["paths"]]


def template_of(path: str) -> str | None:
    for rx, template in _TEMPLATES:
        if rx.match(path):
            return template
    return None


def check_schema(path: str, method: str, status: int, body: Any) -> None:
    """The body matches the schema documented for this operation and status."""
    template = template_of(path)
    assert template is not None, f"{path} is not documented"
    op = DOC["paths"][template][method.lower()]
    response = op["responses"].get(str(status))
    assert response is not None, f"{method} {template} does not document status {status}"
    if "$ref" in response:
        response = DOC["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"]["application/json"]["schema"]
    OAS31Validator({**schema, "components": DOC["components"]}).validate(body)


class ApiClient:
    """Calls the API as an operator's script would, checking status and documented schema."""

    def __init__(self, http: str, token: str | None = "ops-token") -> None:
        self.base = f"http://{http}"
        self.token = token
        self.session = aiohttp.ClientSession()

    async def close(self) -> None:
        await self.session.close()

    async def call(
        self,
        method: str,
        path: str,
        *,
        expect: int | None = 200,
        token: str | None = ...,  # type: ignore[assignment]
        json: Any = ...,
        data: bytes | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        token = self.token if token is ... else token
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        kw: dict[str, Any] = {"headers": h, "params": params}
        if json is not ... and json is not None:
            kw["json"] = json
        if data is not None:
            kw["data"] = data
        async with self.session.request(method, self.base + path, **kw) as r:
            assert r.content_type == "application/json", f"{method} {path}: {r.content_type}"
            body = await r.json()
            assert expect is None or r.status == expect, f"{method} {path}: {r.status} {body}"
            if r.status >= 400:
                assert set(body) >= {"error", "message"} and body["message"], body
            documented = template_of(path) is not None and method.lower() in DOC["paths"][template_of(path)]
            if documented:
                check_schema(path, method, r.status, body)
            self.last_headers = r.headers
            return body

    async def get(self, path: str, **kw: Any) -> Any:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return await self.call("POST", path, json=json, **kw)


@contextlib.asynccontextmanager
async def api_gateway(tmp_path, **overrides: Any):
    """A gateway with an API client; yields (gateway, endpoints, client)."""
    async with running_gateway(tmp_path, **overrides) as (gw, ep):
        client = ApiClient(ep.http)
        try:
            yield gw, ep, client
        finally:
            await client.close()


async def online_terminal(ep, phone: str = "013800138000") -> TerminalClient:
    t = await TerminalClient(phone).connect(*ep.tcu)
    assert await t.login(plate="粤B12345") == 0
    assert await t.report(speed_kmh=42.0) == 0
    return t


async def until(predicate, timeout: float = 5.0) -> None:
    """Wait for a condition the gateway reaches on its own (a bound against hanging, not a speed check)."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


# -- the document ----------------------------------------------------------------------------------


async def test_openapi_is_valid_and_documents_exactly_the_routes(tmp_path):
    async with api_gateway(tmp_path) as (gw, _ep, api):
        served = await api.get("/api/openapi.json")
        assert served == DOC
        validate_spec(served)  # a valid OpenAPI 3.1 document
        assert served["openapi"].startswith("3.1")
        routes = set()
        for route in gw._runner.app.router.routes():
            path = route.resource.canonical if route.resource is not None else ""
            if path.startswith("/api") and route.method != "HEAD":
                routes.add((route.method.lower(), path))
        documented = {(m, p) for p, ops in served["paths"].items() for m in ops if m != "parameters"}
        assert routes - documented == set(), "routes missing from the OpenAPI document"
        assert documented - routes == set(), "documented operations the gateway does not serve"
        # every operation documents its success answer (2xx, or 101 for a WebSocket), and any behind a token its 401
        for method, path in documented:
            op = served["paths"][path][method]
            assert any(s[0] in "12" for s in op["responses"]), (method, path)
            if op.get("security") != []:
                assert "401" in op["responses"], (method, path)


# -- auth and errors ------------------------------------------------------------------------------


async def test_tokens_roles_and_json_errors(tmp_path):
    async with api_gateway(tmp_path) as (_gw, _ep, api):
        # probes are open
        health = await api.get("/api/health", token=None)
        assert health["status"] == "ok" and health["ready"] is True
        assert (await api.get("/api/ready", token=None))["ready"] is True
        # everything else needs a token
        err = await api.get("/api/queues", token=None, expect=401)
        assert err["error"] == "unauthorized"
        assert api.last_headers["WWW-Authenticate"].startswith("Bearer")
        assert (await api.get("/api/sessions", token="nope", expect=401))["message"] == "unknown token"
        assert (await api.get("/api/openapi.json", token=None, expect=401))["error"] == "unauthorized"
        # a viewer reads but changes nothing
        assert "queues" in await api.get("/api/queues", token="wall-token")
        body = {"channel": "chat", "queue": "service"}
        denied = await api.post("/api/sessions", body, token="wall-token", expect=403)
        assert denied["error"] == "forbidden" and "viewer" in denied["message"]
        await api.post("/api/reload", token="wall-token", expect=403)
        await api.post("/api/terminals/013800138000/commands", {"command": "locate"}, token="wall-token",
                       expect=403)  # fmt: skip
        # unknown routes and methods under /api/ answer in JSON
        nf = await api.get("/api/no/such/thing", expect=404)
        assert nf["error"] == "not_found" and "/api/no/such/thing" in nf["message"]
        na = await api.call("DELETE", "/api/sessions", expect=405)
        assert na["error"] == "method_not_allowed" and set(api.last_headers["Allow"].split(",")) == {
            "GET",
            "POST",
        }
        # a body too large is refused in JSON too
        big = await api.call("POST", "/api/sessions", data=b"x" * (2 << 20), expect=413)
        assert big["error"] == "too_large"


async def test_ready_is_503_while_not_started(tmp_path):
    async with api_gateway(tmp_path) as (gw, _ep, api):
        gw.ready = False  # what stop() sets first
        err = await api.get("/api/ready", token=None, expect=503)
        assert err["error"] == "not_ready" and err["started"] is False and err["store"] is True
        gw.ready = True
        assert (await api.get("/api/ready", token=None))["store"] is True


@pytest.mark.parametrize(
    "path, params, fragment",
    [
        ("/api/sessions", {"state": "lost"}, "unknown state 'lost'"),
        ("/api/sessions", {"limit": "0"}, "'limit' must be an integer 1-1000"),
        ("/api/sessions", {"limit": "ten"}, "'limit' must be an integer"),
        ("/api/sessions", {"from": "yesterday"}, "'from' is neither ISO 8601 nor epoch seconds"),
        ("/api/sessions", {"from": "2025-03-01T00:00:00"}, "'from' needs a zone"),
        ("/api/sessions", {"from": "nan"}, "finite"),
        ("/api/sessions", {"from": "200", "to": "100"}, "'from' is after 'to'"),
        ("/api/sessions", {"stat": "open"}, "unknown query parameter 'stat'"),
        ("/api/queues", {"tenant": "x"}, "unknown query parameter 'tenant' (known: none)"),
        ("/api/terminals", {"online": "maybe"}, "'online' must be true or false"),
        ("/api/terminals", {"limit": "100001"}, "'limit' must be an integer 1-100000"),
        ("/api/terminals/0138x/trail", {}, "1-20 digits"),
        ("/api/terminals/013800138000/trail", {"to": "1", "from": "2"}, "'from' is after 'to'"),
    ],
)
async def test_query_validation(tmp_path, path, params, fragment):
    async with api_gateway(tmp_path) as (_gw, _ep, api):
        err = await api.get(path, params=params, expect=400)
        assert err["error"] == "bad_request"
        assert fragment in err["message"]


# -- round trips ----------------------------------------------------------------------------------


async def test_round_trip_queues_agents_sessions_terminals_trail(tmp_path):
    # the trail counts every report: keep the overload policy (GPS thinning on loop lag) out of it on a busy machine
    no_thinning = {"overload_lag_ms": 60000}
    async with api_gateway(tmp_path, tenants={"013900": "oem-b"}, terminals=no_thinning) as (gw, ep, api):
        t = await online_terminal(ep)
        start = time.time()
        assert await t.report(alarm=SOS) == 0

        # waiting: queue depth in the aggregate and in the default tenant's line
        queues = {q["name"]: q for q in (await api.get("/api/queues"))["queues"]}
        emergency = queues["emergency"]
        assert emergency["depth"] == 1 and emergency["tenant"] == "*"
        assert set(emergency["tenants"]) == {"default", "oem-b"}
        assert emergency["tenants"]["default"]["depth"] == 1 and emergency["tenants"]["oem-b"]["depth"] == 0
        assert emergency["tenants"]["default"]["engine_queue"] == "emergency@default"
        assert emergency["classes"]["sos"]["depth"] == 1 and emergency["classes"]["crash"]["depth"] == 0
        assert emergency["window"]["offered"] == 1 and emergency["staffed"] == 0
        assert "emergency~pool1" in emergency["pools"]
        assert queues["service"]["depth"] == 0

        listed = (await api.get("/api/sessions", params={"state": "waiting"}))["sessions"]
        assert [s["kind"] for s in listed] == ["sos"]
        sid = listed[0]["id"]
        assert listed[0]["phone"] == "013800138000" and "trail" not in listed[0]

        # an agent takes it; agents and the session detail show it
        agent = await connect("ws", http=ep.http, path="/agent")
        await agent_login(agent, "alice", "alice-token")
        offer = await agent.expect("offer")
        detail = await api.get(f"/api/sessions/{sid}")
        assert detail["state"] == "offered" and detail["open"] is True
        assert detail["routing"]["offers"][0]["agent"] == "alice"
        assert detail["routing"]["offers"][0]["offer"] == offer["offer"]
        await agent.send({"type": "accept", "offer": offer["offer"]})
        await agent.expect("assigned")
        agents = {a["id"]: a for a in (await api.get("/api/agents"))["agents"]}
        assert agents["alice"]["connected"] is True and agents["alice"]["state"] == "busy"
        assert agents["alice"]["tasks"] == [sid] and agents["alice"]["load"] == {"voice": 1}
        assert agents["alice"]["since"] == pytest.approx(time.time(), abs=60)  # wall clock, not loop time
        assert agents["bob"]["connected"] is False and agents["bob"]["state"] == "logged_out"
        queues = {q["name"]: q for q in (await api.get("/api/queues"))["queues"]}
        assert queues["emergency"]["depth"] == 0 and queues["emergency"]["window"]["answered"] == 1
        assert queues["emergency"]["staffed"] == 1  # alice, counted once across the tenants' lines

        await agent.send({"type": "complete", "session": sid, "disposition": "resolved"})
        await agent.expect("completed")

        async def closed_in_store() -> bool:
            got = await api.get("/api/sessions", params={"state": "closed"})
            return [s["id"] for s in got["sessions"]] == [sid]

        await until(closed_in_store)
        detail = await api.get(f"/api/sessions/{sid}")
        assert detail["state"] == "completed" and detail["open"] is False and detail["routing"] is None
        assert detail["disposition"] == "resolved" and detail["closed_at"] >= start
        assert [e["event"] for e in detail["events"]] == [
            "created",
            "queued",
            "offered",
            "assigned",
            "completed",
        ]
        assert all(e["seq"] > 0 for e in detail["events"])
        assert detail["data"]["vehicle"]["plate"] == "粤B12345"

        # filters on closed sessions
        iso_start = dt.datetime.fromtimestamp(start - 1, dt.UTC).isoformat()
        for params, n in [
            ({"kind": "sos"}, 1), ({"kind": "crash"}, 0), ({"queue": "emergency"}, 1), ({"queue": "service"}, 0),
            ({"tenant": "default"}, 1), ({"tenant": "oem-b"}, 0), ({"from": iso_start}, 1),
            ({"to": str(start - 10)}, 0), ({"state": "completed"}, 1), ({"state": "abandoned"}, 0),
            ({"state": "open"}, 0),
        ]:  # fmt: skip
            got = await api.get("/api/sessions", params=params)
            assert got["count"] == n, params
        assert (await api.get("/api/sessions/S-nope", expect=404))["error"] == "unknown_session"

        # terminals: the online one from memory; one that left from memory too (it was seen since start)
        t2 = await online_terminal(ep, "013900000001")
        await t2.close()

        async def offline() -> bool:
            got = await api.get("/api/terminals", params={"online": "false"})
            return [x["phone"] for x in got["terminals"]] == ["013900000001"]

        await until(offline)
        terms = {x["phone"]: x for x in (await api.get("/api/terminals"))["terminals"]}
        assert terms["013800138000"]["online"] is True and terms["013800138000"]["tenant"] == "default"
        assert terms["013800138000"]["last_position"]["lat"] == pytest.approx(22.543096)
        assert terms["013800138000"]["last_seen"] >= start
        assert terms["013900000001"]["tenant"] == "oem-b" and terms["013900000001"]["last_seen"] is not None
        online = await api.get("/api/terminals", params={"online": "true", "tenant": "default"})
        assert [x["phone"] for x in online["terminals"]] == ["013800138000"]
        assert (await api.get("/api/terminals", params={"limit": "1"}))["count"] == 1

        # trail: device times; the default range is the last hour
        for i in range(3):
            assert await t.report(lat=22.6 + i / 100, lon=114.1, speed_kmh=30.0 + i) == 0
        await gw.store.flush_locations()
        trail = await api.get("/api/terminals/013800138000/trail")
        assert trail["count"] == 5 and trail["truncated"] is False  # login report, SOS, three more
        assert [p["lat"] for p in trail["points"][-3:]] == pytest.approx([22.6, 22.61, 22.62])
        assert trail["to"] - trail["from"] == pytest.approx(3600)
        part = await api.get("/api/terminals/013800138000/trail", params={"limit": "2"})
        assert part["count"] == 2 and part["truncated"] is True
        iso_from = dt.datetime.fromtimestamp(start - 5, dt.timezone(dt.timedelta(hours=8))).isoformat()
        ranged = await api.get("/api/terminals/013800138000/trail", params={"from": iso_from})
        assert ranged["from"] == pytest.approx(start - 5, abs=1) and ranged["count"] == 5
        old = await api.get("/api/terminals/013800138000/trail", params={"from": "0", "to": "1000"})
        assert old["count"] == 0 and old["points"] == []
        # an unencoded '+' of a zone offset arrives as a space and is still understood
        async with api.session.get(f"{api.base}/api/terminals/013800138000/trail?from={iso_from}",
                                   headers={"Authorization": "Bearer ops-token"}) as r:  # fmt: skip
            assert r.status == 200 and (await r.json())["count"] == 5
        nf = await api.get("/api/terminals/019999999999/trail", expect=404)
        assert nf["error"] == "unknown_terminal"
        await agent.close()
        await t.close()


async def test_commands_from_a_supervisor(tmp_path):
    async with api_gateway(tmp_path) as (gw, ep, api):
        t = await online_terminal(ep)
        path = "/api/terminals/013800138000/commands"

        async def vehicle_answers() -> Any:
            return await t.answer_commands()

        answering = asyncio.create_task(vehicle_answers())
        out = await api.post(path, {"command": "text", "params": {"text": "请靠边停车"}})
        cmd = await answering
        assert cmd.message.msg_id == 0x8300 and cmd.message.body.text == "请靠边停车"
        assert out["status"] == "answered" and out["ok"] is True and out["command"] == "text"

        # the same checks as for agents
        for body, fragment in [
            ({"command": "teleport"}, "unknown command 'teleport'"),
            ({"command": "text", "params": {"text": ""}}, "non-empty 'text'"),
            ({"command": "callback"}, "callback needs 'phone'"),
            ({"command": "track", "params": {"interval_s": -1}}, "'interval_s' must be an integer"),
            ({"command": "locate", "params": {"expires_in_s": 0}}, "expires_in_s"),
            ({"command": "locate", "extra": 1}, "unknown field 'extra'"),
            ({"params": {}}, "'command' is required"),
            ({"command": "locate", "session": "S-none"}, "no open session"),
        ]:
            err = await api.post(path, body, expect=400)
            assert fragment in err["message"], (body, err)
        assert (await api.call("POST", path, data=b"{nope", expect=400))["error"] == "bad_json"
        assert "JSON object" in (await api.post(path, [1, 2], expect=400))["message"]
        unknown = await api.post("/api/terminals/019999999999/commands", {"command": "locate"}, expect=404)
        assert unknown["error"] == "unknown_terminal"

        # on a session of this vehicle the command is recorded as a session event
        assert await t.report(alarm=SOS) == 0
        sid = next(iter(gw.sessions.open))
        answering = asyncio.create_task(vehicle_answers())
        out = await api.post(path, {"command": "confirm_alarm", "session": sid})
        await answering
        assert out["status"] == "answered"

        async def recorded() -> bool:
            events = (await api.get(f"/api/sessions/{sid}"))["events"]
            return any(e["event"] == "command" and e["data"]["command"] == "confirm_alarm" for e in events)

        await until(recorded)

        # an offline vehicle: queued (202), delivered when it is back
        await t.close()

        async def gone() -> bool:
            return not gw.terminals.vehicles["013800138000"].online

        await until(gone)
        queued = await api.post(path, {"command": "locate", "params": {"expires_in_s": 60}}, expect=202)
        assert queued["status"] == "queued" and queued["ok"] is False and queued["command_id"] > 0


# -- reload ---------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def gateway_with_file(tmp_path, raw: dict[str, Any]):
    path = tmp_path / "telacd.toml"
    path.write_text(to_toml(raw))
    cfg = config.load(str(path), env={})
    gw = Gateway(cfg, config_path=str(path))
    await gw.start()
    api = ApiClient(cfg.gateway["http"])
    try:
        yield gw, Endpoints(cfg), api, path
    finally:
        await api.close()
        await gw.stop()


async def test_reload_applies_queues_and_agents_without_dropping_connections(tmp_path):
    raw = make_config(tmp_path)
    async with gateway_with_file(tmp_path, raw) as (gw, ep, api, path):
        t = await online_terminal(ep)
        alice = await connect("tcp", tcp=ep.agent_tcp)
        await agent_login(alice, "alice", "alice-token")
        feed = await connect("ws", http=ep.http, path="/feed")
        await subscribe(feed, "crm", "crm-token", after=0)
        opened = gw.metrics.connections_total

        raw["agents"] = [*raw["agents"], {"id": "carol", "token": "carol-token", "skills": {"complaints": 5}}]
        raw["queues"] = [{"name": "complaints", "skills": {"complaints": 1}, "strategy": "longest-idle"}]
        path.write_text(to_toml(raw))
        summary = await api.post("/api/reload")
        assert summary["reloaded"] is True and summary["restart_needed_for"] == []
        assert "complaints" in summary["queues"] and "carol" in summary["agents"]
        assert "complaints" in {q["name"] for q in (await api.get("/api/queues"))["queues"]}

        # nothing was dropped: the vehicle, the agent and the subscriber carry on over the same connections
        assert await t.report() == 0
        await alice.send({"type": "ping", "id": 1})
        assert await alice.expect("pong") == {"type": "pong", "id": 1}
        assert gw.metrics.connections_total == opened and gw.metrics.connections_open == 1
        # the new queue and agent work at once, and the feed sees it
        carol = await connect("ws", http=ep.http, path="/agent")
        await agent_login(carol, "carol", "carol-token")
        created = await api.post("/api/sessions", {"channel": "chat", "queue": "complaints"}, expect=201)
        offer = await carol.expect("offer")
        assert offer["session"]["id"] == created["id"]
        first = await feed.expect("event")
        assert first["session"] == created["id"] and first["event"] == "created"

        # a broken file is refused, naming file, key and reason; the running configuration stays
        path.write_text(to_toml({**raw, "store": {**raw["store"], "pool_sise": 3}}))
        err = await api.post("/api/reload", expect=400)
        assert err["error"] == "config_error" and err["file"] == str(path)
        assert err["key"] == "store.pool_sise" and err["reason"].startswith("unknown key")
        path.write_text('[gateway]\nhttp = "nowhere"\n')
        err = await api.post("/api/reload", expect=400)
        assert err["key"] == "gateway.http" and "HOST:PORT" in err["reason"]
        assert "carol" in {a["id"] for a in (await api.get("/api/agents"))["agents"]}
        await carol.send({"type": "ping", "id": 2})
        assert (await carol.expect("pong"))["id"] == 2

        # a changed [gateway] key is reported as needing a restart
        raw["gateway"] = {**raw["gateway"], "name": "renamed"}
        path.write_text(to_toml(raw))
        assert (await api.post("/api/reload"))["restart_needed_for"] == ["gateway.name"]
        for c in (alice, carol, feed):
            await c.close()
        await t.close()


async def test_reload_keeps_and_reports_what_needs_a_restart_until_it_happens(tmp_path):
    raw = make_config(tmp_path, store={"location_queue_max": 1000})
    async with gateway_with_file(tmp_path, raw) as (gw, _ep, api, path):
        running = (dict(gw.cfg.gateway), dict(gw.cfg.store), gw.cfg.terminals["rcvbuf"])
        assert gw.overload.backlog_on == 250  # a quarter of location_queue_max

        # restart-only keys of [store], [gateway] and [terminals] rcvbuf, beside reloadable ones
        raw["store"] = {**raw["store"], "pool_size": 9, "location_flush_ms": 999, "location_queue_max": 8}
        raw["gateway"] = {**raw["gateway"], "name": "renamed"}
        raw["terminals"] = {"rcvbuf": 65536, "max_malformed": 4, "overload_lag_ms": 35}
        raw["sessions"] = {**raw["sessions"], "trail_minutes": 3.0}
        path.write_text(to_toml(raw))
        pending = ["gateway.name", "store.location_flush_ms", "store.location_queue_max", "store.pool_size",
                   "terminals.rcvbuf"]  # fmt: skip
        assert (await api.post("/api/reload"))["restart_needed_for"] == pending

        # the running values stay, in the configuration too (what the TCU and overload code read)
        assert (dict(gw.cfg.gateway), dict(gw.cfg.store), gw.cfg.terminals["rcvbuf"]) == running
        assert gw.store._max == 1000 and gw.store._flush_s == 0.05
        assert gw.overload.backlog_on == 250
        assert (await api.get("/api/health", token=None))["name"] == "telacd"
        # the reloadable parts are applied
        assert gw.cfg.terminals["max_malformed"] == 4 and gw.cfg.sessions["trail_minutes"] == 3.0
        assert gw.overload.lag_on == 0.035

        # a second reload compares with what runs, not with the last file: still pending
        assert (await api.post("/api/reload"))["restart_needed_for"] == pending
        # a file back at the running values needs nothing
        raw["store"] = {**raw["store"], "pool_size": 4, "location_flush_ms": 50, "location_queue_max": 1000}
        raw["gateway"] = {k: v for k, v in raw["gateway"].items() if k != "name"}
        raw["terminals"] = {"max_malformed": 4}
        path.write_text(to_toml(raw))
        assert (await api.post("/api/reload"))["restart_needed_for"] == []
        assert gw.cfg.terminals["overload_lag_ms"] == 20 and gw.overload.lag_on == 0.02


async def test_reload_without_a_file_is_a_conflict(tmp_path):
    async with api_gateway(tmp_path) as (_gw, _ep, api):
        err = await api.post("/api/reload", expect=409)
        assert err["error"] == "no_config_file"
