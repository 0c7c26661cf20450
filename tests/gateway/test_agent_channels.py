"""The last words before the gateway closes an agent connection reach the agent, on both transports.

When the gateway ends a connection (logout, a second login of the same agent,
an agent removed by a reload, a refused login) it first sends why; those
messages must not be lost behind the close. Real sockets, no mocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc

import pytest

from bench.clients import agent_login, connect
from gateway.channels import WebSocketChannel

from .harness import make_config, running_gateway, to_toml
from .test_api import gateway_with_file
from .test_e2e import open_agent


async def until_closed(conn, timeout: float = 5.0) -> list[dict]:
    """Every message up to the close (fails if the connection stays open)."""
    out = []
    while True:
        msg = await conn.recv(timeout=timeout)
        if msg is None:
            return out
        out.append(msg)


@pytest.mark.parametrize("transport", ["ws", "tcp"])
async def test_logout_is_answered_before_the_close(tmp_path, transport):
    async with running_gateway(tmp_path) as (_gw, ep):
        agent = await open_agent(ep, transport)
        await agent.send({"type": "state", "state": "logout"})
        last = await until_closed(agent)
        assert {"type": "logged_out"} in last
        states = [m["state"] for m in last if m["type"] == "state"]
        assert states[-1] == "logged_out"
        await agent.close()


@pytest.mark.parametrize("transport", ["ws", "tcp"])
async def test_a_second_login_tells_the_replaced_connection_why(tmp_path, transport):
    async with running_gateway(tmp_path) as (_gw, ep):
        old = await open_agent(ep, transport)
        new = await open_agent(ep, "tcp" if transport == "ws" else "ws")
        last = await until_closed(old)
        assert last[-1]["type"] == "error" and last[-1]["code"] == "replaced"
        await new.send({"type": "ping", "id": 1})
        assert await new.expect("pong") == {"type": "pong", "id": 1}
        await old.close()
        await new.close()


@pytest.mark.parametrize("transport", ["ws", "tcp"])
async def test_an_agent_removed_by_a_reload_is_told_why(tmp_path, transport):
    raw = make_config(tmp_path)
    async with gateway_with_file(tmp_path, raw) as (_gw, ep, api, path):
        bob = await open_agent(ep, transport, "bob")
        raw["agents"] = [a for a in raw["agents"] if a["id"] != "bob"]
        path.write_text(to_toml(raw))
        await api.post("/api/reload")
        last = await until_closed(bob)
        assert last[-1]["type"] == "error" and last[-1]["code"] == "removed"
        await bob.close()


@pytest.mark.parametrize("transport", ["ws", "tcp"])
async def test_a_wrong_token_is_refused(tmp_path, transport):
    async with running_gateway(tmp_path) as (_gw, ep):
        conn = await (
            connect("ws", http=ep.http, path="/agent")
            if transport == "ws"
            else connect("tcp", tcp=ep.agent_tcp)
        )
        await conn.send({"type": "login", "agent": "alice", "token": "wrong"})
        assert await until_closed(conn) == [
            {"type": "error", "code": "auth", "message": "unknown agent or wrong token"}
        ]
        await conn.close()
        with pytest.raises(PermissionError):
            conn = await (
                connect("ws", http=ep.http, path="/agent")
                if transport == "ws"
                else connect("tcp", tcp=ep.agent_tcp)
            )
            try:
                await agent_login(conn, "mallory", "alice-token")
            finally:
                await conn.close()


async def test_closing_a_websocket_channel_leaves_no_task_behind(tmp_path):
    """Whoever closes first (the peer or the gateway), the channel's sender task ends."""
    async with running_gateway(tmp_path) as (gw, ep):
        channels = []
        for _ in range(3):
            agent = await open_agent(ep, "ws")
            await asyncio.sleep(0.05)
            channels.append(gw.agents.channels["alice"])
            await agent.close()  # the peer closes first
        agent = await open_agent(ep, "ws")
        await asyncio.sleep(0.05)
        channels.append(gw.agents.channels["alice"])
        await agent.send({"type": "state", "state": "logout"})  # the gateway closes first
        await until_closed(agent)
        await agent.close()
        await asyncio.sleep(0.2)
        assert all(isinstance(ch, WebSocketChannel) and ch.closed for ch in channels)
        assert all(ch._sender.done() for ch in channels)
        assert not gw.agents.channels


async def test_a_peer_that_stops_reading_cannot_hold_the_close(tmp_path):
    """The flush before a close is bounded: a consumer that never reads is closed anyway."""
    async with running_gateway(tmp_path) as (gw, ep):
        agent = await open_agent(ep, "ws")
        await asyncio.sleep(0.1)
        ch = gw.agents.channels["alice"]
        assert isinstance(ch, WebSocketChannel)
        ch.FLUSH_TIMEOUT_S = 0.5
        # fill the socket buffers both ways: the client does not read
        blob = {"type": "session_update", "session": "S", "pad": "x" * 60000}
        for _ in range(400):
            ch.send(blob)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(ch.flush_and_close(), 5.0)
        assert loop.time() - started < 3.0
        assert ch.closed
        with contextlib.suppress(Exception):
            await agent.close()


def test_no_pending_task_is_destroyed(tmp_path):
    """The demo's stderr showed "Task was destroyed but it is pending! … _send_loop"."""

    async def scenario():
        async with running_gateway(tmp_path) as (_gw, ep):
            for _ in range(3):
                agent = await open_agent(ep, "ws")
                await agent.close()
            await asyncio.sleep(0.1)

    loop = asyncio.new_event_loop()
    destroyed: list[str] = []
    loop.set_exception_handler(lambda _loop, ctx: destroyed.append(ctx.get("message", "")))
    try:
        loop.run_until_complete(scenario())
        gc.collect()
    finally:
        loop.close()
    gc.collect()
    assert not [m for m in destroyed if "destroyed" in m]
