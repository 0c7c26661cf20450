"""Escalation of unresolved sessions: open past [sessions] unresolved_after_s → the feed and a supervisor.

The limit is made short (a fraction of a second) so the periodic check runs
every few tens of milliseconds; in production it is hours (86400 for complaints).
"""

from __future__ import annotations

import asyncio
import time

from bench.clients import agent_login, connect, subscribe

from .test_api import api_gateway, until

SUPERVISORS = {"name": "supervisors", "skills": {"supervision": 1}, "strategy": "longest-idle"}
AGENTS = [
    {"id": "bob", "token": "bob-token", "skills": {"service": 8}, "wrapup_s": 0.0},
    {"id": "sue", "token": "sue-token", "skills": {"supervision": 5}},
]


def settings(after: float = 0.4) -> dict:
    return dict(
        sessions={"unresolved_after_s": after, "unresolved_queue": "supervisors"},
        queues=[SUPERVISORS],
        agents=AGENTS,
    )


async def test_an_unresolved_session_goes_to_the_feed_and_a_supervisor_once(tmp_path):
    # a limit long enough for bob to complete the quick session well inside it
    async with api_gateway(tmp_path, **settings(after=1.5)) as (gw, ep, api):
        feed = await connect("ws", http=ep.http, path="/feed")
        await subscribe(feed, "crm", "crm-token", after=0, filter={"events": ["escalated"]})
        sue = await connect("tcp", tcp=ep.agent_tcp)
        await agent_login(sue, "sue", "sue-token")
        bob = await connect("ws", http=ep.http, path="/agent")
        await agent_login(bob, "bob", "bob-token")
        complaint = await api.post("/api/sessions", {"channel": "chat", "queue": "service", "kind": "complaint",
                                                     "customer": {"id": "C-9", "tier": "gold"}}, expect=201)  # fmt: skip
        quick = await api.post("/api/sessions", {"channel": "chat", "queue": "service"}, expect=201)
        # bob takes both; he completes one in time, the complaint stays open with him
        for offer in [await bob.expect("offer"), await bob.expect("offer")]:  # both chats offered at once
            await bob.send({"type": "accept", "offer": offer["offer"]})
        assert {(await bob.expect("assigned"))["session"] for _ in range(2)} == {complaint["id"], quick["id"]}
        await bob.send({"type": "complete", "session": quick["id"]})
        await bob.expect("completed")

        escalated = await feed.expect("event")
        assert escalated["session"] == complaint["id"] and escalated["event"] == "escalated"
        data = escalated["data"]
        assert data["reason"] == "unresolved" and data["to"] == "supervisors" and data["open_s"] >= 1.5

        # the supervisor gets a session of kind "unresolved" naming the original
        offer = await sue.expect("offer")
        sup = offer["session"]
        assert sup["id"] == data["supervisor_session"] and sup["kind"] == "unresolved"
        assert sup["queue"] == "supervisors" and sup["tenant"] == "default"
        assert sup["data"]["session"] == complaint["id"] and sup["data"]["kind"] == "complaint"
        assert sup["data"]["agent"] == "bob" and sup["customer"]["id"] == "C-9"

        # the original is still bob's; it is marked, and its events show the escalation
        detail = await api.get(f"/api/sessions/{complaint['id']}")
        assert detail["state"] == "assigned" and detail["agent"] == "bob"
        assert detail["data"]["unresolved_escalation"] == sup["id"]
        assert "escalated" in [e["event"] for e in detail["events"]]

        # once: several more periods pass, nothing more is raised (not for the supervisor session either)
        await asyncio.sleep(1.0)
        with_kind = await api.get("/api/sessions", params={"kind": "unresolved"})
        assert [s["id"] for s in with_kind["sessions"]] == [sup["id"]]
        assert gw.metrics.unresolved_escalations == 1
        assert await gw.sessions.check_unresolved(now=time.time() + 3600) == []
        try:
            extra = await feed.expect("event", timeout=0.2)
        except TimeoutError:
            extra = None
        assert extra is None, extra
        for c in (feed, sue, bob):
            await c.close()


async def test_escalation_survives_a_restart_without_repeating(tmp_path):
    async with api_gateway(tmp_path, **settings()) as (gw, _ep, api):
        waiting = await api.post("/api/sessions", {"channel": "voice", "queue": "service"}, expect=201)

        async def escalated() -> bool:
            return gw.metrics.unresolved_escalations == 1

        await until(escalated)
        sup_id = gw.sessions.open[waiting["id"]].data["unresolved_escalation"]

        async def committed() -> bool:
            events = (await api.get(f"/api/sessions/{waiting['id']}"))["events"]
            return "escalated" in [e["event"] for e in events]

        await until(committed)
    # the same store, a new gateway: both sessions are recovered; neither is escalated again
    async with api_gateway(tmp_path, **settings()) as (gw, _ep, api):
        assert set(gw.sessions.open) == {waiting["id"], sup_id}
        await asyncio.sleep(0.6)  # several check periods
        assert gw.metrics.unresolved_escalations == 0
        assert await gw.sessions.check_unresolved(now=time.time() + 3600) == []
        # had the mark been lost (a crash between the two commits), the key finds the supervisor session
        del gw.sessions.open[waiting["id"]].data["unresolved_escalation"]
        assert await gw.sessions.check_unresolved() == [waiting["id"]]
        assert gw.sessions.open[waiting["id"]].data["unresolved_escalation"] == sup_id
        kinds = [s["kind"] for s in (await api.get("/api/sessions", params={"state": "open"}))["sessions"]]
        assert sorted(kinds) == ["unresolved", "voice"]


async def test_off_by_default_and_after_a_reload_to_zero(tmp_path):
    async with api_gateway(tmp_path) as (gw, _ep, api):
        await api.post("/api/sessions", {"channel": "chat", "queue": "service"}, expect=201)
        assert gw.cfg.sessions["unresolved_after_s"] == 0.0
        assert await gw.sessions.check_unresolved(now=time.time() + 86400 * 365) == []
        assert gw.metrics.unresolved_escalations == 0


async def test_the_period_follows_the_limit():
    class Cfg:
        sessions = {"unresolved_after_s": 0.0}

    class Gw:
        cfg = Cfg()

    from gateway.sessions import SessionManager

    m = SessionManager.__new__(SessionManager)
    m.gw = Gw()
    for after, period in [(0.0, 5.0), (0.2, 0.05), (1.0, 0.1), (30.0, 3.0), (86400.0, 5.0)]:
        Cfg.sessions["unresolved_after_s"] = after
        assert m.unresolved_period() == period
