"""The HTTP listener: agent and feed WebSockets, /metrics, the admin API and the dashboard.

One aiohttp application on ``[gateway] http``. The admin REST API lives in
gateway/api.py and the dashboard's static files in gateway/static/; this
module only assembles the routes and adapts WebSocket connections to the
transport-neutral :class:`~gateway.channels.Channel` the agent hub and the
feed are written against.
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import TYPE_CHECKING

from aiohttp import web

from .channels import TcpChannel, WebSocketChannel

if TYPE_CHECKING:
    from .app import Gateway


GATEWAY: web.AppKey = web.AppKey("gateway")


def _peer(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return f"{peer[0]}:{peer[1]}" if peer else "?"


def build_app(gw: Gateway) -> web.Application:
    app = web.Application(client_max_size=1 << 20)
    app[GATEWAY] = gw

    async def agent_ws(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=1 << 20)
        await ws.prepare(request)
        channel = WebSocketChannel(ws, _peer(request))
        await gw.agents.serve(channel)
        await ws.close()
        return ws

    async def feed_ws(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=1 << 20)
        await ws.prepare(request)
        channel = WebSocketChannel(ws, _peer(request))
        gw.metrics.feed_connections += 1
        try:
            await gw.feed.serve(channel, gw.subscribers)
        finally:
            gw.metrics.feed_connections -= 1
        await ws.close()
        return ws

    async def metrics(request: web.Request) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest(gw.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/agent", agent_ws)
    app.router.add_get("/feed", feed_ws)
    app.router.add_get("/metrics", metrics)
    if importlib.util.find_spec("gateway.api") is not None:
        from . import api

        api.setup(app, gw)
    if importlib.util.find_spec("gateway.dashboard") is not None:
        from . import dashboard

        dashboard.setup(app, gw)
    return app


async def start_tcp_channels(gw: Gateway, host: str, port: int, handler) -> asyncio.AbstractServer:
    """A TCP listener whose connections are length-prefixed msgpack channels served by ``handler``."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: TcpChannel(handler), host, port, reuse_address=True)
