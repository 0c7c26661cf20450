"""End to end with real sockets: vehicle → session → agent → vehicle, the feed, restarts, bad input.

Nothing of the gateway is mocked: terminals speak JT/T 808 over TCP through the
codec's terminal role, agents and subscribers speak the documented protocol over
WebSocket (JSON) or TCP (length-prefixed msgpack).
"""

from __future__ import annotations

import asyncio
import struct

import aiohttp
import pytest

from bench.clients import agent_login, connect, subscribe
from bench.terminal import TerminalClient, device_now
from protocols.jt808 import events as ev

from .harness import ChildGateway, metric, running_gateway

SOS = 1 << 0
CRASH = 1 << 29
ROLLOVER = 1 << 30


async def open_agent(ep, kind: str, agent: str = "alice", token: str | None = None):
    conn = await (
        connect("ws", http=ep.http, path="/agent") if kind == "ws" else connect("tcp", tcp=ep.agent_tcp)
    )
    await agent_login(conn, agent, token or f"{agent}-token")
    return conn


async def open_feed(ep, kind: str, after: int | None = 0, **extra):
    conn = await (
        connect("ws", http=ep.http, path="/feed") if kind == "ws" else connect("tcp", tcp=ep.feed_tcp)
    )
    last = await subscribe(conn, "crm", "crm-token", after=after, **extra)
    return conn, last


async def online_terminal(ep, phone: str = "013800138000") -> TerminalClient:
    t = await TerminalClient(phone).connect(*ep.tcu)
    assert await t.login(plate="粤B12345", model="TX-1") == 0
    assert await t.report(speed_kmh=42.0) == 0
    return t


async def session_detail(ep, sid: str) -> dict:
    """GET /api/sessions/{sid}, as an operator would."""
    url, headers = f"http://{ep.http}/api/sessions/{sid}", {"Authorization": "Bearer ops-token"}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def feed_events(feed, n: int, timeout: float = 5.0) -> list[dict]:
    out = []
    while len(out) < n:
        msg = await feed.recv(timeout=timeout)
        assert msg is not None, f"feed closed after {out}"
        if msg.get("type") == "event":
            out.append(msg)
    return out


@pytest.mark.parametrize("transport", ["ws", "tcp"])
async def test_sos_reaches_an_agent_who_commands_the_vehicle_and_completes(tmp_path, transport):
    async with running_gateway(tmp_path) as (_gw, ep):
        feed, last = await open_feed(ep, transport)
        assert last == 0
        agent = await open_agent(ep, transport)
        t = await online_terminal(ep)

        # SOS: the frame is acknowledged only after the session is stored, then offered
        assert await t.report(alarm=SOS) == 0
        offer = await agent.expect("offer")
        session = offer["session"]
        assert session["kind"] == "sos" and session["queue"] == "emergency"
        assert session["vehicle"]["phone"] == "013800138000" and session["vehicle"]["plate"] == "粤B12345"
        assert session["position"]["lat"] == pytest.approx(22.543096) and "emergency" in session["alarms"]
        assert 0 < offer["expires_in_ms"] <= 15000

        await agent.send({"type": "accept", "offer": offer["offer"]})
        assigned = await agent.expect("assigned")
        assert assigned["session"] == session["id"]

        # the agent sends a text; the vehicle receives 0x8300 and answers; the agent sees the result
        await agent.send(
            {"type": "command", "session": session["id"], "command": "text", "text": "救援已出发", "id": "c1"}
        )
        cmd = await t.answer_commands()
        assert cmd.message.msg_id == 0x8300 and cmd.message.body.text == "救援已出发"
        result = await agent.expect("command_result")
        assert result["id"] == "c1" and result["ok"] is True and result["status"] == "answered"

        # live position while the session is active
        await t.report(lat=22.6, lon=114.1, speed_kmh=12.0)
        pos = await agent.expect("position")
        assert pos["session"] == session["id"] and pos["position"]["lat"] == pytest.approx(22.6)

        await agent.send({"type": "complete", "session": session["id"], "disposition": "ambulance_sent"})
        assert (await agent.expect("completed"))["session"] == session["id"]

        events = await feed_events(feed, 6)
        assert [e["seq"] for e in events] == list(range(1, 7))
        assert [e["event"] for e in events] == [
            "created",
            "queued",
            "offered",
            "assigned",
            "command",
            "completed",
        ]
        assert {e["session"] for e in events} == {session["id"]}
        assert events[-1]["data"]["disposition"] == "ambulance_sent"
        for c in (agent, feed):
            await c.close()
        await t.close()


async def test_alarm_edges_merges_and_priorities(tmp_path):
    async with running_gateway(tmp_path) as (gw, ep):
        feed, _ = await open_feed(ep, "ws")
        t = await online_terminal(ep)
        assert await t.report(alarm=CRASH) == 0
        assert await t.report(alarm=CRASH) == 0  # still set: no new alert
        await t.send(
            t.conn.report_location(lat=22.5, lon=114.0, device_time=device_now(), alarm=CRASH)[1]
        )  # still set
        assert await t.report(alarm=0) == 0  # cleared
        assert (
            await t.report(alarm=CRASH | ROLLOVER) == 0
        )  # crash again while its session is open: merge; rollover: new
        events = await feed_events(feed, 5)
        created = [e for e in events if e["event"] == "created"]
        assert sorted(e["data"]["kind"] for e in created) == ["crash", "rollover"]
        updated = [e for e in events if e["event"] == "updated"]
        assert (
            updated and updated[0]["data"]["alerts"] == 2 and updated[0]["data"]["reason"] == "repeat_alert"
        )
        crash = next(s for s in gw.sessions.open.values() if s.kind == "crash")
        rollover = next(s for s in gw.sessions.open.values() if s.kind == "rollover")
        assert crash.priority > rollover.priority
        assert len(gw.sessions.open) == 2
        # the merge updated the waiting session; it was not handed to the engine a second time
        await asyncio.sleep(0.2)
        reasons = [
            e.data.get("reason") for e in await gw.store.session_events(crash.id) if e.event == "updated"
        ]
        assert reasons == ["repeat_alert"]
        assert gw.routing.router.task_info(crash.id)["state"] == "queued"

        # a crash outranks an SOS that arrived earlier from another vehicle
        t2 = await online_terminal(ep, "013800138001")
        assert await t2.report(alarm=SOS) == 0
        agent = await open_agent(ep, "tcp")
        first = await agent.expect("offer")
        assert first["session"]["kind"] == "crash"
        await feed.close()
        await agent.close()
        await t.close()
        await t2.close()


async def test_one_key_service_call_opens_a_service_session(tmp_path):
    async with running_gateway(tmp_path) as (_gw, ep):
        agent = await open_agent(ep, "ws", "bob")
        t = await online_terminal(ep, "013800000777")
        assert await t.service_call("请帮我预约保养") == 0
        offer = await agent.expect("offer")
        assert offer["session"]["kind"] == "service" and offer["session"]["queue"] == "service"
        assert offer["session"]["request"] == "请帮我预约保养"
        await agent.close()
        await t.close()


# -- SIGKILL and restart, on every store backend ------------------------------------------------------------


async def test_gateway_killed_and_restarted_loses_nothing(tmp_path, backend_url):
    child = ChildGateway(tmp_path, store={"url": backend_url})
    await child.start()
    try:
        ep = child.ep
        feed, _ = await open_feed(ep, "tcp")
        t = await online_terminal(ep)
        assert await t.report(alarm=CRASH) == 0  # acknowledged: stored
        events = await feed_events(feed, 2)
        assert [e["event"] for e in events] == ["created", "queued"]
        sid = events[0]["session"]
        last = events[-1]["seq"]
        await feed.close()
        await t.close()
        before = await session_detail(ep, sid)  # its arrival, as the gateway shows it before the kill
        assert before["state"] == "waiting" and before["arrival"] > 0

        await asyncio.sleep(0.3)  # a restart that reset the arrival would show a later one
        child.kill()  # SIGKILL: no shutdown code runs
        await child.start()

        # the subscriber resumes after its last sequence number: no gap, no duplicate
        feed, now_last = await open_feed(ep, "ws", after=last)
        assert now_last >= last
        agent = await open_agent(ep, "ws")
        offer = await agent.expect("offer")
        assert offer["session"]["id"] == sid
        # the same place in line: the arrival before the kill, not the time of the restart
        assert offer["session"]["arrival"] == pytest.approx(before["arrival"], abs=1e-3)
        assert (await session_detail(ep, sid))["arrival"] == pytest.approx(before["arrival"], abs=1e-3)
        resumed = await feed_events(feed, 2)
        assert [e["seq"] for e in resumed] == [last + 1, last + 2]
        assert [e["event"] for e in resumed] == ["queued", "offered"]
        assert resumed[0]["data"]["reason"] == "recovered"
        await agent.close()
        await feed.close()
    finally:
        child.stop()


async def test_waiting_session_keeps_its_arrival_time_across_a_restart(tmp_path, backend_url):
    child = ChildGateway(tmp_path, store={"url": backend_url})
    await child.start()
    try:
        t = await online_terminal(child.ep)
        assert await t.report(alarm=SOS) == 0
        await t.close()
        t2 = await online_terminal(child.ep, "013800138002")
        await asyncio.sleep(0.2)
        assert await t2.report(alarm=CRASH) == 0
        await t2.close()
        child.kill()
        await child.start()
        agent = await open_agent(child.ep, "tcp")
        first = await agent.expect("offer")
        arrival_crash = first["session"]["arrival"]
        await agent.send({"type": "accept", "offer": first["offer"]})
        await agent.expect("assigned")
        agent2 = await open_agent(child.ep, "tcp", "bob")
        second = await agent2.expect("offer")
        assert first["session"]["kind"] == "crash" and second["session"]["kind"] == "sos"  # priority kept
        assert second["session"]["arrival"] < arrival_crash  # SOS arrived first, and still says so
        await agent.close()
        await agent2.close()
    finally:
        child.stop()


async def test_assigned_sessions_wait_for_their_agents_across_a_restart(tmp_path, backend_url):
    # alice and bob each have an SOS in hand when the gateway is killed; after the restart alice comes back
    # within agent_grace_s and finds hers still assigned to her; bob does not, and his goes back in line
    child = ChildGateway(tmp_path, store={"url": backend_url}, sessions={"agent_grace_s": 3.0})
    await child.start()
    try:
        ep = child.ep
        bob = await open_agent(ep, "tcp", "bob")
        t1 = await online_terminal(ep, "013800138001")
        assert await t1.report(alarm=SOS) == 0
        offer = await bob.expect("offer")
        await bob.send({"type": "accept", "offer": offer["offer"]})
        bobs = (await bob.expect("assigned"))["session"]
        alice = await open_agent(ep, "ws")
        t2 = await online_terminal(ep, "013800138002")
        assert await t2.report(alarm=SOS) == 0
        offer = await alice.expect("offer")
        await alice.send({"type": "accept", "offer": offer["offer"]})
        alices = (await alice.expect("assigned"))["session"]
        await asyncio.sleep(0.2)  # the "assigned" events are committed
        for c in (alice, bob, t1, t2):
            await c.close()

        child.kill()  # SIGKILL: no shutdown code runs
        await child.start()

        feed, _ = await open_feed(ep, "ws")
        alice = await connect("ws", http=ep.http, path="/agent")
        ok = await agent_login(alice, "alice", "alice-token")
        assert [s["id"] for s in ok["sessions"]] == [alices]  # restored for her, not offered anew
        with pytest.raises(TimeoutError):
            await alice.expect("offer", timeout=0.3)
        await alice.send({"type": "complete", "session": alices, "disposition": "ok"})
        await alice.expect("completed")

        # bob's stays his until the grace period ends, then it is queued and offered to alice
        offer = await alice.expect("offer", timeout=5.0)
        assert offer["session"]["id"] == bobs
        history: list[tuple[str, str | None]] = []  # bob's session on the feed, from its creation
        while ("queued", "agent_lost") not in history or history[-1] != ("offered", None):
            e = (await feed_events(feed, 1))[0]
            if e["session"] == bobs:
                history.append((e["event"], e["data"].get("reason")))
        assert history == [("created", None), ("queued", "new"), ("offered", None), ("assigned", None),
                           ("queued", "agent_lost"), ("offered", None)]  # fmt: skip
        await alice.close()
        await feed.close()
    finally:
        child.stop()


async def test_garbage_is_counted_and_closed_without_disturbing_others(tmp_path):
    async with running_gateway(tmp_path, terminals={"max_malformed": 3}) as (gw, ep):
        good = await online_terminal(ep)
        r, w = await asyncio.open_connection(*ep.tcu)
        # frames with bad checksums (readable headers), then pure noise
        bad = bytearray(good.conn.heartbeat()[1])
        bad[-2] ^= 0x55
        w.write(bytes(bad) * 3)
        await w.drain()
        replies = await asyncio.wait_for(r.read(), 5)  # read to EOF: the gateway closed us
        assert replies.count(b"\x7e") >= 2  # the 0x8001 "message error" answers came first
        assert gw.metrics.malformed["checksum"] == 3
        assert await metric(ep.http, "telacd_connections_closed_total", 'reason="malformed"') == 1
        # a connection that sends an endless frame is closed at the buffer bound
        r2, w2 = await asyncio.open_connection(*ep.tcu)
        w2.write(b"\x7e" + b"\x01" * 5000)
        await w2.drain()
        assert await asyncio.wait_for(r2.read(), 5) == b""
        # the good terminal is undisturbed
        assert await good.report() == 0
        await good.close()


async def test_agent_refusals_and_bad_messages(tmp_path):
    async with running_gateway(tmp_path) as (_gw, ep):
        conn = await connect("ws", http=ep.http, path="/agent")
        await conn.send({"type": "login", "agent": "alice", "token": "wrong"})
        reply = await conn.recv(timeout=5)
        assert reply == {"type": "error", "code": "auth", "message": "unknown agent or wrong token"}
        assert await conn.recv(timeout=5) is None
        await conn.close()

        agent = await open_agent(ep, "tcp")
        await agent.send_raw(struct.pack(">I", 2) + b"\xc1\xc1")  # not msgpack
        assert (await agent.expect("error"))["code"] == "bad_msgpack"
        await agent.send({"type": "accept"})
        assert (await agent.expect("error"))["code"] == "bad_message"
        await agent.send({"type": "accept", "offer": "999"})
        assert (await agent.expect("error"))["code"] == "unknown_offer"
        await agent.send({"type": "teleport"})
        assert (await agent.expect("error"))["code"] == "unknown_type"
        await agent.send({"type": "ping", "id": 5})
        assert await agent.expect("pong") == {"type": "pong", "id": 5}  # still usable
        await agent.close()

        ws = await connect("ws", http=ep.http, path="/agent")
        await agent_login(ws, "bob", "bob-token")
        await ws.send_raw("{not json")
        assert (await ws.expect("error"))["code"] == "bad_json"
        await ws.send({"type": "ping"})
        assert (await ws.expect("pong"))["type"] == "pong"
        await ws.close()


async def test_agent_reconnect_within_grace_keeps_sessions_and_after_it_they_are_requeued(tmp_path):
    async with running_gateway(tmp_path, sessions={"agent_grace_s": 0.6}) as (_gw, ep):
        feed, _ = await open_feed(ep, "ws")
        t = await online_terminal(ep)
        agent = await open_agent(ep, "ws")
        assert await t.report(alarm=SOS) == 0
        offer = await agent.expect("offer")
        await agent.send({"type": "accept", "offer": offer["offer"]})
        await agent.expect("assigned")
        await agent.close()
        again = await connect("ws", http=ep.http, path="/agent")
        ok = await agent_login(again, "alice", "alice-token")
        assert [s["id"] for s in ok["sessions"]] == [offer["session"]["id"]]
        await again.close()
        await asyncio.sleep(1.2)  # past the grace period
        events = await feed_events(feed, 5)
        assert events[-1]["event"] == "queued" and events[-1]["data"]["reason"] == "agent_lost"
        bob = await open_agent(ep, "tcp", "bob")
        assert (await bob.expect("offer"))["session"]["id"] == offer["session"]["id"]
        await bob.close()
        await feed.close()
        await t.close()


async def test_duplicate_login_closes_the_older_connection(tmp_path):
    async with running_gateway(tmp_path) as (gw, ep):
        first = await online_terminal(ep)
        second = await online_terminal(ep)  # same phone
        assert await first.next_event(timeout=5) is None  # the gateway closed the older one
        assert await second.report() == 0
        assert gw.metrics.connections_closed_duplicate == 1
        await second.close()


async def test_commands_for_offline_vehicles_wait_and_expire(tmp_path):
    async with running_gateway(tmp_path) as (gw, ep):
        t = await online_terminal(ep)
        agent = await open_agent(ep, "tcp")
        assert await t.report(alarm=SOS) == 0
        offer = await agent.expect("offer")
        await agent.send({"type": "accept", "offer": offer["offer"]})
        await agent.expect("assigned")
        await t.close()
        await asyncio.sleep(0.2)
        sid = offer["session"]["id"]
        await agent.send({"type": "command", "session": sid, "command": "locate", "id": 1})
        queued = await agent.expect("command_result")
        assert queued["status"] == "queued" and queued["ok"] is False
        await agent.send(
            {
                "type": "command",
                "session": sid,
                "command": "text",
                "text": "late",
                "expires_in_s": 0.2,
                "id": 2,
            }
        )
        assert (await agent.expect("command_result"))["status"] == "queued"
        await asyncio.sleep(0.4)
        await gw.downlink.expire()
        expired = await agent.expect("command_result")
        assert expired["status"] == "expired" and expired["command"] == "text"

        t = await TerminalClient("013800138000").connect(*ep.tcu)
        assert await t.login() == 0
        from protocols.jt808.messages import make_location

        cmd = await t.answer_commands(location=make_location(22.5, 114.0, device_time=device_now()))
        assert cmd.message.msg_id == 0x8201  # the locate, delivered on reconnect; the expired text never is
        delivered = await agent.expect("command_result")
        assert delivered["status"] == "answered" and delivered["position"]["lat"] == pytest.approx(22.5)
        with pytest.raises(TimeoutError):
            await t.next_event(ev.CommandReceived, timeout=0.5)
        await agent.close()
        await t.close()


async def test_no_routing_timer_outlives_the_gateway(tmp_path):
    async with running_gateway(tmp_path) as (gw, ep):
        t = await online_terminal(ep)
        assert await t.report(alarm=SOS) == 0  # waits with no agent: its escalation timer is armed
        assert gw.routing._timer is not None
        await t.close()
    # stopped (the store is closed): the timer is gone and nothing re-arms it
    assert gw.routing._timer is None
    gw.routing.arm()
    assert gw.routing._timer is None
