"""Clients of the agent and subscriber protocols, over WebSocket (JSON) or TCP (msgpack).

Used by the demo's simulated agents, by the load generator and by the
end-to-end tests. They speak the protocol exactly as an outside client would:
real sockets, the documented messages, no access to gateway internals.
"""

from __future__ import annotations

import asyncio
import collections
import struct
import time
from typing import Any

import aiohttp
import msgpack
import orjson

from protocols.agentwire import FrameDecoder


class Connection:
    """A message connection: ``send(dict)``, ``await recv() -> dict | None`` (None: closed)."""

    async def send(self, msg: dict[str, Any]) -> None:
        raise NotImplementedError

    async def recv(self, timeout: float | None = None) -> dict[str, Any] | None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def expect(self, mtype: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next message of type ``mtype``, skipping others (positions, pongs...)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no {mtype!r} within {timeout} s")
            msg = await self.recv(timeout=left)
            if msg is None:
                raise ConnectionError(f"closed while waiting for {mtype!r}")
            if msg.get("type") == mtype:
                return msg


class WsConnection(Connection):
    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._session = session
        self.ws = ws

    @classmethod
    async def open(cls, url: str) -> WsConnection:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(url, heartbeat=30.0, max_msg_size=1 << 22)
        except Exception:
            await session.close()
            raise
        return cls(session, ws)

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send_str(orjson.dumps(msg).decode())

    async def send_raw(self, text: str) -> None:
        await self.ws.send_str(text)

    async def recv(self, timeout: float | None = None) -> dict[str, Any] | None:
        try:
            msg = await self.ws.receive(timeout=timeout)
        except TimeoutError:
            raise TimeoutError("no message") from None
        if msg.type == aiohttp.WSMsgType.TEXT:
            return orjson.loads(msg.data)
        if msg.type == aiohttp.WSMsgType.BINARY:
            return msgpack.unpackb(msg.data, raw=False)
        return None

    async def close(self) -> None:
        await self.ws.close()
        await self._session.close()


class _ArrivalReader(asyncio.StreamReader):
    """A StreamReader that notes when the first bytes not yet read arrived (time.monotonic())."""

    arrived: float | None = None

    def feed_data(self, data: bytes) -> None:
        if self.arrived is None:
            self.arrived = time.monotonic()
        super().feed_data(data)


class TcpConnection(Connection):
    """``last_arrival``: when the bytes of the message ``recv`` last returned reached this process
    (before the reader's task woke and decoded them), for latency measured at delivery."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._decoder = FrameDecoder()
        self._ready: collections.deque[tuple[dict[str, Any], float | None]] = collections.deque()
        self.last_arrival: float | None = None

    @classmethod
    async def open(cls, host: str, port: int, local_addr: tuple[str, int] | None = None) -> TcpConnection:
        loop = asyncio.get_running_loop()
        reader = _ArrivalReader(limit=2**16, loop=loop)
        transport, protocol = await loop.create_connection(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop), host, port, local_addr=local_addr
        )
        return cls(reader, asyncio.StreamWriter(transport, protocol, reader, loop))

    async def send(self, msg: dict[str, Any]) -> None:
        body = msgpack.packb(msg, use_bin_type=True)
        self.writer.write(struct.pack(">I", len(body)) + body)
        await self.writer.drain()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self, timeout: float | None = None) -> dict[str, Any] | None:
        while not self._ready:
            try:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
            except TimeoutError:
                raise TimeoutError("no message") from None
            if not data:
                return None
            arrived = getattr(self.reader, "arrived", None)
            if arrived is not None:
                self.reader.arrived = None
            self._ready.extend((m, arrived) for m in self._decoder.receive_data(data) if isinstance(m, dict))
        msg, self.last_arrival = self._ready.popleft()
        return msg

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def connect(
    kind: str, *, http: str | None = None, tcp: str | None = None, path: str = "/agent"
) -> Connection:
    """Open a connection: ``kind`` "ws" uses ``http`` (host:port) + ``path``, "tcp" uses ``tcp`` (host:port)."""
    if kind == "ws":
        return await WsConnection.open(f"ws://{http}{path}")
    host, port = tcp.rsplit(":", 1)
    return await TcpConnection.open(host, int(port))


async def agent_login(conn: Connection, agent: str, token: str, **extra: Any) -> dict[str, Any]:
    await conn.send({"type": "login", "agent": agent, "token": token, **extra})
    reply = await conn.recv(timeout=5.0)
    if reply is None or reply.get("type") != "login_ok":
        raise PermissionError(f"login refused: {reply}")
    return reply


async def subscribe(
    conn: Connection, subscriber: str, token: str, after: int | None = None, **extra: Any
) -> int:
    msg: dict[str, Any] = {"type": "subscribe", "subscriber": subscriber, "token": token, **extra}
    if after is not None:
        msg["after"] = after
    await conn.send(msg)
    reply = await conn.recv(timeout=5.0)
    if reply is None or reply.get("type") != "subscribed":
        raise PermissionError(f"subscribe refused: {reply}")
    return reply["seq"]
