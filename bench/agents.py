"""Simulated call-centre agents over the agent protocol (WebSocket JSON or TCP msgpack).

Each agent logs in, accepts offers after a delay (``accept_delay``: zero for
load tests, a few seconds with some jitter for the demo), keeps the session
for a handle time, optionally sends the vehicle a text on the way, and
completes it with a disposition.

What they observe is the load generator's ground truth about offers: when each
offer arrived (to pair with the fleet's alarm send times: crash-ingress →
offer-delivered), and whether any session was ever offered to two agents at
once or assigned twice (``duplicate_offers``, which must stay 0).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

from .clients import Connection, agent_login, connect


@dataclass
class AgentOptions:
    http: str = "127.0.0.1:8080"
    tcp: str = "127.0.0.1:6810"
    transport: str = "ws"  # ws | tcp
    agents: list[tuple[str, str]] | None = None  # (id, token)
    accept_delay: tuple[float, float] = (0.0, 0.0)  # uniform range, seconds
    handle_time: tuple[float, float] = (0.0, 0.0)
    send_text: bool = False
    seed: int = 7


class Observations:
    def __init__(self) -> None:
        self.offers = 0
        self.assignments = 0
        self.completed = 0
        self.withdrawals = 0
        self.errors = 0
        self.failures: list[str] = []  # unexpected exceptions in an agent's loop (it reconnects)
        self.duplicate_offers = 0
        self.offer_log: list[tuple[str, str, str, float]] = []  # (session, phone, kind, received at)
        self._holder: dict[str, tuple[str, str]] = {}  # session -> (agent, offer) of the outstanding offer
        self._assigned: set[str] = set()
        self.commands_ok = 0

    def offer(self, agent: str, msg: dict[str, Any], now: float) -> None:
        self.offers += 1
        s = msg["session"]
        sid = s["id"]
        held = self._holder.get(sid)
        if (held is not None and held[0] != agent) or sid in self._assigned:
            self.duplicate_offers += 1
        self._holder[sid] = (agent, msg["offer"])
        phone = (s.get("vehicle") or {}).get("phone", "")
        self.offer_log.append((sid, phone, s.get("kind", ""), now))

    def withdrawn(self, msg: dict[str, Any]) -> None:
        self.withdrawals += 1
        sid = msg.get("session")
        held = self._holder.get(sid)
        if held is not None and str(held[1]) == str(msg.get("offer")):
            del self._holder[sid]

    def assigned(self, sid: str) -> None:
        self.assignments += 1
        if sid in self._assigned:
            self.duplicate_offers += 1
        self._assigned.add(sid)
        self._holder.pop(sid, None)


class AgentPool:
    def __init__(self, opts: AgentOptions) -> None:
        self.opts = opts
        self.obs = Observations()
        self.rng = random.Random(opts.seed)
        self._tasks: list[asyncio.Task] = []
        self.connected = 0
        self._stopping = False

    async def start(self) -> None:
        for agent_id, token in self.opts.agents or []:
            self._tasks.append(asyncio.get_running_loop().create_task(self._run(agent_id, token)))

    async def stop(self) -> None:
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, agent_id: str, token: str) -> None:
        while not self._stopping:
            try:
                conn = await connect(self.opts.transport, http=self.opts.http, tcp=self.opts.tcp)
            except OSError:
                await asyncio.sleep(0.5)
                continue
            try:
                await agent_login(conn, agent_id, token)
                self.connected += 1
                await self._serve(agent_id, conn)
            except (ConnectionError, OSError, PermissionError, TimeoutError):
                pass
            except Exception as e:  # a bug here must not silently take an agent away from the run
                self.obs.errors += 1
                self.obs.failures.append(repr(e))
            finally:
                self.connected = max(0, self.connected - 1)
                await conn.close()
            await asyncio.sleep(0.5)

    async def _serve(self, agent_id: str, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        work: set[asyncio.Task] = set()
        while True:
            msg = await conn.recv()
            if msg is None:
                return
            mtype = msg.get("type")
            if mtype == "offer":
                # delivered when its bytes reached this process (TCP), else when it was read (WebSocket)
                self.obs.offer(agent_id, msg, getattr(conn, "last_arrival", None) or time.monotonic())
                t = loop.create_task(self._take(conn, msg))
                work.add(t)
                t.add_done_callback(work.discard)
            elif mtype == "assigned":
                self.obs.assigned(msg["session"])
                t = loop.create_task(self._work(conn, msg["session"]))
                work.add(t)
                t.add_done_callback(work.discard)
            elif mtype == "offer_withdrawn":
                self.obs.withdrawn(msg)
            elif mtype == "completed":
                self.obs.completed += 1
            elif mtype == "command_result" and msg.get("ok"):
                self.obs.commands_ok += 1
            elif mtype == "error":
                self.obs.errors += 1

    async def _take(self, conn: Connection, offer: dict[str, Any]) -> None:
        lo, hi = self.opts.accept_delay
        if hi > 0:
            await asyncio.sleep(self.rng.uniform(lo, hi))
        await conn.send({"type": "accept", "offer": offer["offer"]})

    async def _work(self, conn: Connection, sid: str) -> None:
        lo, hi = self.opts.handle_time
        if self.opts.send_text:
            await conn.send(
                {
                    "type": "command",
                    "session": sid,
                    "command": "text",
                    "text": "Help is on the way / 救援已出发",
                }
            )
        if hi > 0:
            await asyncio.sleep(self.rng.uniform(lo, hi))
        disposition = self.rng.choice(
            ["resolved", "ambulance_dispatched", "false_alarm", "callback_scheduled"]
        )
        await conn.send({"type": "complete", "session": sid, "disposition": disposition})
