"""Sessions from other channels (POST /api/sessions): routed, offered, fed and stored like a vehicle's.

Real agent and subscriber connections (bench/clients.py) against an in-process
gateway; the app, web or chat system is the test, calling the REST API.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench.clients import agent_login, connect, subscribe

from .test_api import api_gateway, until

SERVICE_AGENT = {"id": "sam", "token": "sam-token", "skills": {"service": 5, "billing": 4},
                 "capacity": {"voice": 1, "chat": 3}, "wrapup_s": 0.0}  # fmt: skip


async def offers(agent, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    return [await agent.expect("offer", timeout) for _ in range(n)]


async def no_offer(agent, wait: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await agent.expect("offer", wait)


async def test_app_session_is_routed_offered_fed_and_stored(tmp_path):
    async with api_gateway(tmp_path) as (gw, ep, api):
        feed = await connect("tcp", tcp=ep.feed_tcp)
        await subscribe(feed, "crm", "crm-token", after=0)
        bob = await connect("ws", http=ep.http, path="/agent")
        await agent_login(bob, "bob", "bob-token")
        request = {
            "channel": "chat", "queue": "service", "tenant": "default",
            "customer": {"id": "C-1001", "name": "王女士", "tier": "gold"},
            "skills": {"service": 3}, "data": {"app": "MyCar 5.2", "topic": "charging", "vin": "LSVNV2182E2100001"},
            "idempotency_key": "app-7f3a",
        }  # fmt: skip
        created = await api.post("/api/sessions", request, expect=201)
        sid = created["id"]
        assert created["created"] is True and api.last_headers["Location"] == f"/api/sessions/{sid}"
        assert created["channel"] == "chat" and created["kind"] == "chat"
        assert created["state"] in ("waiting", "offered")  # routed at once: bob is available
        assert (
            created["class"] == "vip" and created["priority"] == 20
        )  # a gold customer: the queue's first class
        assert created["customer"]["tier"] == "gold" and created["data"]["topic"] == "charging"

        offer = await bob.expect("offer")
        s = offer["session"]
        assert s["id"] == sid and s["channel"] == "chat" and s["queue"] == "service"
        assert s["customer"]["name"] == "王女士" and s["data"]["vin"] == "LSVNV2182E2100001"
        await bob.send({"type": "accept", "offer": offer["offer"]})
        assert (await bob.expect("assigned"))["details"]["id"] == sid
        await bob.send({"type": "complete", "session": sid, "disposition": "explained"})
        await bob.expect("completed")

        events = [await feed.expect("event") for _ in range(5)]
        assert [e["event"] for e in events] == ["created", "queued", "offered", "assigned", "completed"]
        assert {e["session"] for e in events} == {sid}
        assert (
            events[0]["kind"] == "chat"
            and events[0]["queue"] == "service"
            and events[0]["tenant"] == "default"
        )
        assert events[0]["data"]["customer"]["id"] == "C-1001" and events[0]["data"]["channel"] == "chat"

        async def stored() -> bool:
            return (await api.get(f"/api/sessions/{sid}"))["state"] == "completed"

        await until(stored)
        detail = await api.get(f"/api/sessions/{sid}")
        assert [e["seq"] for e in detail["events"]] == [e["seq"] for e in events]
        assert detail["skills"] == {"service": 3} and detail["idempotency_key"] == "app-7f3a"
        assert detail["agent"] == "bob" and detail["disposition"] == "explained"
        assert gw.metrics.sessions_created["chat"] == 1
        await bob.close()
        await feed.close()


async def test_a_retried_post_makes_one_session(tmp_path):
    async with api_gateway(tmp_path) as (gw, _ep, api):
        body = {"channel": "voice", "queue": "service", "idempotency_key": "call-42"}
        first = await api.post("/api/sessions", body, expect=201)
        again = await api.post("/api/sessions", body, expect=200)
        assert again["id"] == first["id"] and again["created"] is False
        # the header form of the key
        by_header = await api.post("/api/sessions", {"channel": "voice", "queue": "service"},
                                   headers={"Idempotency-Key": "call-42"}, expect=200)  # fmt: skip
        assert by_header["id"] == first["id"]

        # concurrent duplicates: the first creates, the others wait for it and get the same session
        body = {"channel": "chat", "queue": "service", "idempotency_key": "chat-9"}
        answers = await asyncio.gather(
            *(api.call("POST", "/api/sessions", json=body, expect=None) for _ in range(6))  # type: ignore[arg-type]
        )
        assert len({a["id"] for a in answers}) == 1
        assert sorted(a["created"] for a in answers) == [False] * 5 + [True]
        listed = await api.get("/api/sessions", params={"state": "open"})
        assert listed["count"] == 2
        assert gw.metrics.sessions_created == {"voice": 1, "chat": 1}

        # the key still answers after the session is closed and forgotten by memory
        gw.routing.cancel(first["id"], "test")

        async def closed() -> bool:
            return (await api.get(f"/api/sessions/{first['id']}"))["state"] == "cancelled"

        await until(closed)
        gw.sessions.by_key.clear()  # as after a restart: the store has the key
        late = await api.post(
            "/api/sessions", {"channel": "voice", "queue": "service", "idempotency_key": "call-42"}
        )
        assert late["id"] == first["id"] and late["state"] == "cancelled"

        # one key, another request: refused rather than answered with the wrong session
        other = await api.post("/api/sessions", {"channel": "chat", "queue": "emergency", "idempotency_key": "chat-9"},
                               expect=409)  # fmt: skip
        assert other["error"] == "idempotency_conflict" and other["session"] == answers[0]["id"]
        mixed = await api.post("/api/sessions", {**body, "idempotency_key": "a"}, headers={"Idempotency-Key": "b"},
                               expect=400)  # fmt: skip
        assert "differ" in mixed["message"]


async def test_agent_capacity_one_voice_and_three_chats_at_once(tmp_path):
    async with api_gateway(tmp_path, agents=[SERVICE_AGENT]) as (_gw, ep, api):
        sam = await connect("tcp", tcp=ep.agent_tcp)
        await agent_login(sam, "sam", "sam-token")
        ids = {}
        for i, channel in enumerate(["voice", "chat", "chat", "chat", "chat", "voice"]):
            created = await api.post("/api/sessions", {"channel": channel, "queue": "service"}, expect=201)
            ids[created["id"]] = (i, channel)
        held = []
        for offer in await offers(sam, 4):
            await sam.send({"type": "accept", "offer": offer["offer"]})
            held.append((await sam.expect("assigned"))["session"])
        assert sorted(ids[s][1] for s in held) == ["chat", "chat", "chat", "voice"]
        await no_offer(sam)  # the fourth chat and the second call wait: the agent is full on both channels
        agents = {a["id"]: a for a in (await api.get("/api/agents"))["agents"]}
        assert agents["sam"]["load"] == {"voice": 1, "chat": 3} and agents["sam"]["capacity"]["chat"] == 3
        waiting = (await api.get("/api/sessions", params={"state": "waiting"}))["sessions"]
        assert sorted(ids[s["id"]][1] for s in waiting) == ["chat", "voice"]

        # finishing a chat frees a chat place, not a voice one
        chat = next(s for s in held if ids[s][1] == "chat")
        await sam.send({"type": "complete", "session": chat})
        offer = await sam.expect("offer")
        assert offer["session"]["channel"] == "chat" and ids[offer["session"]["id"]][0] == 4
        await sam.send({"type": "accept", "offer": offer["offer"]})
        await sam.expect("assigned")
        await no_offer(sam)
        voice = next(s for s in held if ids[s][1] == "voice")
        await sam.send({"type": "complete", "session": voice})
        offer = await sam.expect("offer")
        assert offer["session"]["channel"] == "voice" and ids[offer["session"]["id"]][0] == 5
        await sam.close()


async def test_tenants_skills_and_classes(tmp_path):
    agents = [
        SERVICE_AGENT,
        {"id": "ada", "token": "ada-token", "tenants": ["oem-a"], "skills": {"service": 5}},
    ]
    async with api_gateway(tmp_path, tenants={"013800": "oem-a"}, agents=agents) as (gw, ep, api):
        # a tenant's session waits in that tenant's line and reaches only agents of the tenant
        created = await api.post("/api/sessions", {"channel": "chat", "queue": "service", "tenant": "oem-a"},
                                 expect=201)  # fmt: skip
        assert created["tenant"] == "oem-a"
        service = next(q for q in (await api.get("/api/queues"))["queues"] if q["name"] == "service")
        assert service["tenants"]["oem-a"]["depth"] == 1 and service["tenants"]["default"]["depth"] == 0
        ada = await connect("ws", http=ep.http, path="/agent")
        await agent_login(ada, "ada", "ada-token")
        assert (await ada.expect("offer"))["session"]["id"] == created["id"]

        # skills: a session needing billing 5 reaches nobody (sam has 4, ada none) and keeps waiting
        needs = await api.post("/api/sessions", {"channel": "chat", "queue": "service", "skills": {"billing": 5}},
                               expect=201)  # fmt: skip
        sam = await connect("ws", http=ep.http, path="/agent")
        await agent_login(sam, "sam", "sam-token")
        await no_offer(sam)
        fits = await api.post("/api/sessions", {"channel": "chat", "queue": "service", "skills": {"billing": 4}},
                              expect=201)  # fmt: skip
        assert (await sam.expect("offer"))["session"]["id"] == fits["id"]
        assert gw.sessions.open[needs["id"]].state == "waiting"

        # class and priority
        named = await api.post("/api/sessions", {"channel": "voice", "queue": "service", "class": "normal",
                                                 "customer": {"tier": "vip"}, "priority": 77}, expect=201)  # fmt: skip
        assert named["class"] == "normal" and named["priority"] == 77
        plain = await api.post("/api/sessions", {"channel": "data", "queue": "emergency", "kind": "ecall-app"},
                               expect=201)  # fmt: skip
        assert plain["class"] == "rollover" and plain["kind"] == "ecall-app" and plain["channel"] == "data"
        await ada.close()
        await sam.close()


@pytest.mark.parametrize(
    "body, code, fragment",
    [
        ({"queue": "service"}, "bad_request", "'channel' must be one of voice, data, chat"),
        ({"channel": "fax", "queue": "service"}, "bad_request", "'channel' must be one of"),
        ({"channel": "chat"}, "bad_request", "'queue' is required"),
        ({"channel": "chat", "queue": "sales"}, "unknown_queue", "no queue named 'sales'"),
        ({"channel": "chat", "queue": "service", "tenant": "oem-z"}, "unknown_tenant", "unknown tenant 'oem-z'"),
        ({"channel": "chat", "queue": "service", "tenant": ""}, "bad_request", "'tenant' must be a non-empty"),
        ({"channel": "chat", "queue": "service", "customer": "gold"}, "bad_request", "'customer' must be a JSON object"),
        ({"channel": "chat", "queue": "service", "customer": {"tier": 3}}, "bad_request", "'customer.tier'"),
        ({"channel": "chat", "queue": "service", "skills": {"service": 11}}, "bad_request", "'skills.service'"),
        ({"channel": "chat", "queue": "service", "skills": {"service": 0}}, "bad_request", "integer 1-10, got 0"),
        ({"channel": "chat", "queue": "service", "skills": {"service": -3}}, "bad_request", "integer 1-10"),
        ({"channel": "chat", "queue": "service", "skills": {"": 5}}, "bad_request", "'skills': a skill name"),
        ({"channel": "chat", "queue": "service", "skills": {"  ": 5}}, "bad_request", "'skills': a skill name"),
        ({"channel": "chat", "queue": "service", "skills": {"s" * 101: 5}}, "bad_request", "1-100 characters"),
        ({"channel": "chat", "queue": "service", "skills": {"service": True}}, "bad_request", "integer 1-10"),
        ({"channel": "chat", "queue": "service", "skills": ["service"]}, "bad_request", "'skills' must be a JSON"),
        ({"channel": "chat", "queue": "service", "data": [1]}, "bad_request", "'data' must be a JSON object"),
        ({"channel": "chat", "queue": "service", "class": "gold"}, "bad_request", "has no class 'gold'"),
        ({"channel": "chat", "queue": "service", "kind": "Big Kind"}, "bad_request", "'kind' must match"),
        ({"channel": "chat", "queue": "service", "priority": True}, "bad_request", "'priority' must be an integer"),
        ({"channel": "chat", "queue": "service", "priority": 1.5}, "bad_request", "'priority' must be an integer"),
        ({"channel": "chat", "queue": "service", "idempotency_key": "x" * 201}, "bad_request", "at most 200"),
        ({"channel": "chat", "queue": "service", "urgent": True}, "bad_request", "unknown field 'urgent'"),
        ([{"channel": "chat"}], "bad_request", "must be a JSON object"),
    ],
)  # fmt: skip
async def test_invalid_requests_are_refused_with_the_reason(tmp_path, body, code, fragment):
    async with api_gateway(tmp_path, tenants={"013800": "oem-a"}) as (gw, _ep, api):
        err = await api.post("/api/sessions", body, expect=400)
        assert err["error"] == code and fragment in err["message"], err
        assert gw.sessions.open == {}


@pytest.mark.parametrize(
    "skills, valid",
    [({"service": 3, "billing": 10}, True), ({"": 5}, False), ({"  ": 5}, False), ({"s" * 101: 5}, False),
     ({"service": 0}, False), ({"service": 11}, False)],
)  # fmt: skip
def test_the_openapi_document_states_the_skill_constraints(skills, valid):
    from jsonschema.exceptions import ValidationError
    from openapi_schema_validator import OAS31Validator

    from gateway.openapi import document

    doc = document()
    validator = OAS31Validator(
        {**doc["components"]["schemas"]["NewSession"], "components": doc["components"]}
    )
    body = {"channel": "chat", "queue": "service", "skills": skills}
    if valid:
        validator.validate(body)
    else:
        with pytest.raises(ValidationError):
            validator.validate(body)


async def test_a_queue_of_one_tenant_refuses_another(tmp_path):
    queues = [{"name": "oem-a-care", "tenant": "oem-a", "skills": {"service": 1}}]
    async with api_gateway(tmp_path, tenants={"013800": "oem-a", "013900": "oem-b"}, queues=queues) as (
        gw,
        _,
        api,
    ):
        err = await api.post("/api/sessions", {"channel": "chat", "queue": "oem-a-care", "tenant": "oem-b"},
                             expect=400)  # fmt: skip
        assert err["error"] == "unknown_tenant" and "serves tenant 'oem-a' only" in err["message"]
        # without a tenant the queue's own is taken
        ok = await api.post("/api/sessions", {"channel": "chat", "queue": "oem-a-care"}, expect=201)
        assert ok["tenant"] == "oem-a"
        assert (await api.call("POST", "/api/sessions", data=b"", expect=400))["message"].startswith(
            "send a JSON"
        )
        assert gw.sessions.open.keys() == {ok["id"]}
