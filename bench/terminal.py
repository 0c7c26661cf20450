"""One simulated vehicle terminal over TCP, on the codec's terminal role.

For tests and demos that drive a handful of vehicles step by step; the load
generator (bench/fleet.py) runs many thousands on asyncio Protocols instead.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from protocols.jt808 import events as ev
from protocols.jt808.connection import Connection, Role


def device_now(zone_s: int = 8 * 3600) -> int:
    """The current time on a device clock ``zone_s`` ahead of UTC (GMT+8 by the standard)."""
    return int(time.time()) + zone_s


class TerminalClient:
    def __init__(self, phone: str, version: int = 2013) -> None:
        self.conn = Connection(Role.TERMINAL, phone=phone, version=version)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.events: list[Any] = []

    @property
    def phone(self) -> str:
        return self.conn.phone

    async def connect(self, host: str, port: int) -> TerminalClient:
        self.reader, self.writer = await asyncio.open_connection(host, port)
        return self

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def next_event(self, kind: type | tuple[type, ...] | None = None, timeout: float = 5.0) -> Any:
        """The next event (of ``kind``), reading from the socket as needed; None if the platform closed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, e in enumerate(self.events):
                if kind is None or isinstance(e, kind):
                    return self.events.pop(i)
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no {kind} within {timeout} s")
            data = await asyncio.wait_for(self.reader.read(65536), left)
            if not data:
                return None
            self.events += self.conn.receive_data(data, loop.time())

    async def ack_of(self, serial: int, timeout: float = 5.0) -> Any:
        """Wait for the platform's 0x8001 to our frame ``serial``."""
        while True:
            e = await self.next_event(ev.Acknowledged, timeout)
            if e is None:
                raise ConnectionError("closed before the acknowledgement")
            if e.message.body.reply_serial == serial:
                return e.message.body

    async def register(self, **fields: Any) -> Any:
        await self.send(self.conn.register(**fields)[1])
        return (await self.next_event(ev.RegisterAnswered)).message.body

    async def login(self, auth_code: str | None = None, **register: Any) -> int:
        """Register (unless a code is given), authenticate; returns the auth result."""
        if auth_code is None:
            reply = await self.register(**register)
            if reply.result != 0:
                return -1
        serial, data = self.conn.authenticate(auth_code)
        await self.send(data)
        return (await self.ack_of(serial)).result

    async def report(
        self, lat: float = 22.543096, lon: float = 114.057865, *, wait: bool = True, **fields: Any
    ) -> int:
        """Send a 0x0200; with ``wait`` return the platform's result code."""
        fields.setdefault("device_time", device_now())
        serial, data = self.conn.report_location(lat=lat, lon=lon, **fields)
        await self.send(data)
        if not wait:
            return serial
        return (await self.ack_of(serial)).result

    async def service_call(self, text: str) -> int:
        serial, data = self.conn.service_call(text)
        await self.send(data)
        return (await self.ack_of(serial)).result

    async def answer_commands(self, location: Any = None, timeout: float = 5.0) -> Any:
        """Answer the next platform command (0x0001, or 0x0201 for a locate); return it."""
        cmd = await self.next_event(ev.CommandReceived, timeout)
        if cmd is None:
            raise ConnectionError("closed")
        if cmd.message.msg_id == 0x8201 and location is not None:
            await self.send(self.conn.reply_location(cmd, location))
        else:
            await self.send(self.conn.ack(cmd))
        return cmd

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass
