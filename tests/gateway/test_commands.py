"""Downlink commands that cannot go out as asked are answered, never dropped. Real sockets.

Bad input is refused when the command arrives (``bad_command`` to an agent, 400
from the admin API); text characters GBK lacks are sent as ``?`` with a note;
anything that fails after validation comes back as a ``command_result`` with
``ok: false``.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from bench.terminal import TerminalClient
from gateway.store import CommandRow

from .harness import running_gateway
from .test_api import api_gateway
from .test_e2e import SOS, feed_events, online_terminal, open_agent, open_feed

PHONE = "013800138000"


async def assigned_session(ep, transport: str):
    """A terminal that pressed SOS and an agent who accepted it: (terminal, agent, session id)."""
    agent = await open_agent(ep, transport)
    t = await online_terminal(ep, PHONE)
    assert await t.report(alarm=SOS) == 0
    offer = await agent.expect("offer")
    await agent.send({"type": "accept", "offer": offer["offer"]})
    await agent.expect("assigned")
    return t, agent, offer["session"]["id"]


@pytest.mark.parametrize("transport", ["ws", "tcp"])
async def test_text_with_characters_gbk_lacks_goes_out_with_replacements_and_a_note(tmp_path, transport):
    async with running_gateway(tmp_path) as (_gw, ep):
        feed, _ = await open_feed(ep, "ws")
        t, agent, sid = await assigned_session(ep, transport)
        await agent.send(
            {"type": "command", "session": sid, "command": "text", "text": "救援😀出发🚑😀", "id": "c1"}
        )
        cmd = await t.answer_commands()
        assert cmd.message.msg_id == 0x8300 and cmd.message.body.text == "救援?出发??"
        result = await agent.expect("command_result")
        assert result["id"] == "c1" and result["ok"] is True and result["status"] == "answered"
        assert result["replaced"] == ["😀", "🚑"] and "'?'" in result["note"]
        events = await feed_events(feed, 5)
        assert events[-1]["event"] == "command" and events[-1]["data"]["replaced"] == ["😀", "🚑"]

        # plain GBK text carries no note
        await agent.send({"type": "command", "session": sid, "command": "text", "text": "收到", "id": "c2"})
        assert (await t.answer_commands()).message.body.text == "收到"
        result = await agent.expect("command_result")
        assert result["ok"] is True and "replaced" not in result and "note" not in result
        await agent.close()
        await feed.close()
        await t.close()


@pytest.mark.parametrize("transport", ["ws", "tcp"])
async def test_commands_that_cannot_be_encoded_are_refused_when_they_arrive(tmp_path, transport):
    async with running_gateway(tmp_path) as (_gw, ep):
        t, agent, sid = await assigned_session(ep, transport)
        for extra, fragment in [
            ({"command": "text", "text": "长" * 513}, "longer than 1024 bytes"),
            ({"command": "text", "text": "😀" * 1025}, "longer than 1024 bytes"),  # as sent: 1025 '?'
            ({"command": "callback", "phone": "☎13800000000"}, "GBK cannot encode"),
            ({"command": "callback", "phone": "一二三四五六七八九十一"}, "longer than 20 bytes"),
            ({"command": "callback", "phone": "13800000000", "flag": 7}, "'flag' must be an integer 0-1"),
            ({"command": "locate", "expires_in_s": float("nan")}, "expires_in_s"),
            ({"command": "locate", "expires_in_s": float("inf")}, "expires_in_s"),
        ]:
            if transport == "ws" and isinstance(extra.get("expires_in_s"), float):
                continue  # JSON has no NaN or infinity; msgpack does
            await agent.send({"type": "command", "session": sid, "id": "x", **extra})
            err = await agent.expect("error")
            assert err["code"] == "bad_command" and fragment in err["message"], (extra, err)
        # the vehicle received nothing, and the connection is still usable
        await agent.send({"type": "ping", "id": 9})
        assert (await agent.expect("pong"))["id"] == 9
        await agent.send({"type": "command", "session": sid, "command": "text", "text": "好", "id": "ok"})
        assert (await t.answer_commands()).message.body.text == "好"
        assert (await agent.expect("command_result"))["id"] == "ok"
        await agent.close()
        await t.close()


async def test_a_queued_command_that_cannot_be_encoded_fails_to_the_agent(tmp_path):
    """A command stored before a validation rule existed is reported failed, not dropped, on delivery."""
    async with running_gateway(tmp_path) as (gw, ep):
        t, agent, sid = await assigned_session(ep, "tcp")
        await t.close()

        async def offline() -> None:
            while gw.terminals.vehicles[PHONE].online:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(offline(), 5)
        now = time.time()
        row = CommandRow(None, PHONE, "text", {"text": "😀"}, now, now + 60, "queued", session=sid,
                         agent="alice", updated_at=now)  # fmt: skip
        await gw.store.save_command(row)
        gw.downlink.queued = None  # look the vehicle up on reconnect (as after a restart)

        t = await TerminalClient(PHONE).connect(*ep.tcu)
        assert await t.login() == 0
        result = await agent.expect("command_result")
        assert result["ok"] is False and result["status"] == "failed" and result["command"] == "text"
        assert "GBK" in result["error"] and result["delivered_late"] is True
        await agent.close()
        await t.close()


async def test_the_admin_api_answers_unencodable_commands(tmp_path):
    async with api_gateway(tmp_path) as (_gw, ep, api):
        t = await online_terminal(ep, PHONE)
        path = f"/api/terminals/{PHONE}/commands"
        answering = asyncio.create_task(t.answer_commands())
        out = await api.post(path, {"command": "text", "params": {"text": "请靠边😀"}})
        assert (await answering).message.body.text == "请靠边?"
        assert out["status"] == "answered" and out["ok"] is True and out["replaced"] == ["😀"]
        for params, fragment in [
            ({"phone": "☎1380000"}, "GBK cannot encode"),
            ({"phone": "一二三四五六七八九十一"}, "longer than 20 bytes"),
        ]:
            err = await api.post(path, {"command": "callback", "params": params}, expect=400)
            assert err["error"] == "bad_command" and fragment in err["message"]
        err = await api.post(path, {"command": "text", "params": {"text": "长" * 513}}, expect=400)
        assert "longer than 1024 bytes" in err["message"]
        await t.close()
