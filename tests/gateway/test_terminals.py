"""Terminal-side behaviour of the gateway: auth policies, limits, timeouts, commands, trails."""

from __future__ import annotations

import asyncio

import pytest

from bench.clients import agent_login, connect
from bench.terminal import TerminalClient
from protocols.jt808 import events as ev

from .harness import running_gateway


async def assigned_session(ep, t: TerminalClient, agent_id: str = "alice"):
    agent = await connect("tcp", tcp=ep.agent_tcp)
    await agent_login(agent, agent_id, f"{agent_id}-token")
    assert await t.report(alarm=1) == 0
    offer = await agent.expect("offer")
    await agent.send({"type": "accept", "offer": offer["offer"]})
    await agent.expect("assigned")
    return agent, offer["session"]["id"]


async def test_registered_policy_requires_the_code_the_terminal_was_given(tmp_path):
    async with running_gateway(tmp_path, terminals={"auth": "registered"}) as (gw, ep):
        # data before authentication is refused (0x8001 result 1) and counted
        stranger = await TerminalClient("013811110000").connect(*ep.tcu)
        assert await stranger.report() == 1
        assert gw.metrics.unauthenticated == 1
        # a made-up code is refused
        assert await stranger.login(auth_code="guess") == 1
        await stranger.close()

        t = await TerminalClient("013811110001").connect(*ep.tcu)
        reply = await t.register(plate="京A00001")
        assert reply.result == 0 and reply.auth_code
        serial, data = t.conn.authenticate()
        await t.send(data)
        assert (await t.ack_of(serial)).result == 0
        assert await t.report() == 0
        await t.close()
        # the code survives in the store (written in the background: wait for it), and a new
        # connection authenticates with it directly
        row = None
        for _ in range(100):
            row = await gw.store.get_terminal("013811110001")
            if row is not None and row.auth_code:
                break
            await asyncio.sleep(0.02)
        assert row.auth_code == reply.auth_code and row.info["plate"] == "京A00001"
        again = await TerminalClient("013811110001").connect(*ep.tcu)
        assert await again.login(auth_code=reply.auth_code) == 0
        await again.close()


async def test_fixed_policy(tmp_path):
    async with running_gateway(tmp_path, terminals={"auth": "fixed", "fixed_code": "letmein"}) as (_gw, ep):
        t = await TerminalClient("013811110002").connect(*ep.tcu)
        reply = await t.register()
        assert reply.auth_code == "letmein"
        assert await t.login(auth_code="nope") == 1
        assert await t.login(auth_code="letmein") == 0
        await t.close()


async def test_open_policy_accepts_devices_that_never_register(tmp_path):
    async with running_gateway(tmp_path) as (gw, ep):
        t = await TerminalClient("013811110003").connect(*ep.tcu)
        assert await t.report(speed_kmh=33.3) == 0  # no registration, no authentication
        assert gw.terminals.vehicles["013811110003"].online
        await t.close()


async def test_idle_terminals_are_closed(tmp_path):
    async with running_gateway(tmp_path, terminals={"heartbeat_timeout_s": 0.3}) as (gw, ep):
        t = await TerminalClient("013811110004").connect(*ep.tcu)
        assert await t.login() == 0
        assert await t.next_event(timeout=3) is None  # closed by the gateway
        assert gw.metrics.connections_closed_idle == 1
        # a terminal that keeps talking stays
        t2 = await TerminalClient("013811110005").connect(*ep.tcu)
        assert await t2.login() == 0
        for _ in range(5):
            await asyncio.sleep(0.15)
            await t2.send(t2.conn.heartbeat()[1])
        assert t2.conn.state.value == "online" and not t2.reader.at_eof()
        await t2.close()


async def test_a_flooding_terminal_is_paused_not_dropped(tmp_path):
    limit = 20
    async with running_gateway(tmp_path, terminals={"max_frames_per_s": limit}) as (gw, ep):
        t = await TerminalClient("013811110006").connect(*ep.tcu)
        assert await t.login() == 0
        loop = asyncio.get_running_loop()
        answered: dict[int, float] = {}  # serial -> when its 0x8001 arrived

        async def read_acks() -> None:
            while True:
                e = await t.next_event(ev.Acknowledged, timeout=30)
                answered[e.message.body.reply_serial] = loop.time()

        reader = asyncio.create_task(read_acks())
        # 60 reports in half a second (120 frames/s) against a budget of 20 per second: once the
        # budget is spent, reads pause, and the frames TCP piled up meanwhile arrive in one big read
        t0 = loop.time()
        serials = []
        for _ in range(10):
            serials += [await t.report(wait=False) for _ in range(6)]
            await asyncio.sleep(0.05)
        # the rate holds, whatever the reads looked like: at most one budget per started second
        for seconds in (1.0, 1.5, 2.0, 2.5):
            await asyncio.sleep(max(0.0, t0 + seconds - loop.time()))
            in_time = sum(1 for when in answered.values() if when - t0 <= seconds)
            assert in_time <= limit * (seconds + 1), (seconds, in_time)
        assert gw.metrics.reads_paused >= 1
        # nothing was dropped: every frame is answered, in the order sent
        while len(answered) < len(serials):
            assert not reader.done(), reader
            await asyncio.sleep(0.1)
        reader.cancel()
        assert sorted(answered, key=answered.__getitem__) == serials
        assert gw.metrics.frames_total >= len(serials)
        await t.close()


async def test_frames_held_by_the_budget_keep_the_terminal_from_idling_out(tmp_path):
    """One read holding 3 s of frames, with a 1 s heartbeat timeout: all answered, nothing closed."""
    terminals = {"max_frames_per_s": 20, "heartbeat_timeout_s": 1.0}
    async with running_gateway(tmp_path, terminals=terminals) as (gw, ep):
        t = await TerminalClient("013811110016").connect(*ep.tcu)
        assert await t.login() == 0
        beats = [t.conn.heartbeat() for _ in range(60)]
        await t.send(b"".join(data for _, data in beats))
        answered = set()
        while len(answered) < len(beats):
            e = await t.next_event(ev.Acknowledged, timeout=5)
            assert e is not None, f"closed after {len(answered)} answers"
            answered.add(e.message.body.reply_serial)
        assert answered == {serial for serial, _ in beats}
        serial, data = t.conn.heartbeat()
        await t.send(data)
        assert (await t.ack_of(serial)).result == 0  # still open
        assert gw.metrics.connections_closed_idle == 0
        await t.close()


async def test_commands_are_retried_then_reported_failed(tmp_path):
    async with running_gateway(tmp_path, sessions={"command_timeout_s": 0.2, "command_retries": 1}) as (
        gw,
        ep,
    ):
        t = await TerminalClient("013811110007").connect(*ep.tcu)
        assert await t.login() == 0
        agent, sid = await assigned_session(ep, t)
        await agent.send(
            {"type": "command", "session": sid, "command": "track", "interval_s": 5, "duration_s": 60}
        )
        first = await t.next_event(ev.CommandReceived)
        again = await t.next_event(ev.CommandReceived)  # no answer: the same frame again
        assert first.message.msg_id == again.message.msg_id == 0x8202
        assert first.message.serial == again.message.serial
        assert first.message.body.interval_s == 5 and first.message.body.validity_s == 60
        result = await agent.expect("command_result", timeout=5)
        assert result["status"] == "failed" and result["ok"] is False
        assert gw.metrics.commands["failed"] == 1
        await agent.close()
        await t.close()


@pytest.mark.parametrize(
    "command, msg_id, check",
    [
        ({"command": "callback"}, 0x8400, lambda b: b.flag == 0 and b.phone == "13800000000"),
        (
            {"command": "callback", "phone": "110", "monitor": True},
            0x8400,
            lambda b: b.flag == 1 and b.phone == "110",
        ),
        ({"command": "confirm_alarm"}, 0x8203, lambda b: b.alarm_serial == 0 and b.alarm_type == 1),
        (
            {"command": "text", "text": "hello", "flag": 0x09},
            0x8300,
            lambda b: b.flag == 0x09 and b.text == "hello",
        ),
    ],
)
async def test_each_command_reaches_the_vehicle_as_the_standard_says(tmp_path, command, msg_id, check):
    async with running_gateway(tmp_path) as (_gw, ep):
        t = await TerminalClient("013811110008").connect(*ep.tcu)
        assert await t.login() == 0
        agent, sid = await assigned_session(ep, t)
        await agent.send({"type": "command", "session": sid, **command})
        cmd = await t.answer_commands()
        assert cmd.message.msg_id == msg_id and check(cmd.message.body)
        assert (await agent.expect("command_result"))["ok"] is True
        await agent.close()
        await t.close()


async def test_bad_commands_are_refused_with_a_reason(tmp_path):
    async with running_gateway(tmp_path) as (_gw, ep):
        t = await TerminalClient("013811110009").connect(*ep.tcu)
        assert await t.login() == 0
        agent, sid = await assigned_session(ep, t)
        for msg, code in [
            ({"command": "text"}, "bad_command"),
            ({"command": "track", "interval_s": -1}, "bad_command"),
            ({"command": "selfdestruct"}, "bad_command"),
        ]:
            await agent.send({"type": "command", "session": sid, **msg})
            assert (await agent.expect("error"))["code"] == code
        await agent.send({"type": "command", "session": "S-nope", "command": "locate"})
        assert (await agent.expect("error"))["code"] == "unknown_session"
        bob = await connect("ws", http=ep.http, path="/agent")
        await agent_login(bob, "bob", "bob-token")
        await bob.send({"type": "command", "session": sid, "command": "locate"})
        assert (await bob.expect("error"))["code"] == "not_yours"
        await bob.send({"type": "complete", "session": sid})
        assert (await bob.expect("error"))["code"] == "not_yours"
        for c in (agent, bob):
            await c.close()
        await t.close()


async def test_the_session_carries_the_recent_trail(tmp_path):
    async with running_gateway(tmp_path) as (gw, ep):
        t = await TerminalClient("013811110010").connect(*ep.tcu)
        assert await t.login() == 0
        for i in range(5):
            assert await t.report(lat=22.5 + i / 1000, lon=114.0) == 0
        await gw.store.flush_locations()
        agent = await connect("ws", http=ep.http, path="/agent")
        await agent_login(agent, "alice", "alice-token")
        assert await t.report(alarm=1 << 29) == 0
        offer = await agent.expect("offer")
        update = await agent.expect("session_update")
        assert update["session"] == offer["session"]["id"]
        lats = [p[1] for p in update["trail"]]
        assert lats[:5] == [22.5, 22.501, 22.502, 22.503, 22.504]
        s = gw.sessions.open[offer["session"]["id"]]
        assert s.data["trail"] == update["trail"]
        await agent.close()
        await t.close()


def test_stored_items_json_names_standard_items_and_keeps_the_rest_as_sent():
    import orjson

    from gateway.app import _items_json
    from protocols.jt808.messages import Location

    loc = Location(
        alarm=0, status=3, lat=31.2, lon=121.4, altitude=10, speed_kmh=40.0, direction=90,
        device_time=None, item_ids=bytes([0x01, 0x30, 0xE5, 0x31]),
        item_values=(12345, 25, b"\x01\x02\xff", 12), items_ok=True,
    )  # fmt: skip
    assert orjson.loads(_items_json(loc)) == {
        "mileage_km": 12345,
        "rssi": 25,
        "0xe5": "0102ff",
        "satellites": 12,
    }
