"""``telacd serve --workers 2``: terminals on two worker processes, the ACD and everything else in the owner.

The owner runs in the test's event loop (so the test can see which worker holds
which vehicle); the workers are real processes sharing the TCU port through
SO_REUSEPORT. Nothing is mocked: terminals speak JT/T 808 over TCP, agents and
subscribers the documented protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import pytest

from bench.terminal import TerminalClient
from gateway import config
from gateway.workers import Owner, RemoteTerminal

from .harness import ChildGateway, Endpoints, make_config, metric
from .test_e2e import CRASH, SOS, feed_events, online_terminal, open_agent, open_feed


@contextlib.asynccontextmanager
async def running_workers(tmp_path, workers: int = 2, **overrides):
    raw = make_config(tmp_path, **overrides)
    raw["gateway"]["workers"] = workers
    cfg = config.build(raw, "<test>", {})
    owner = Owner(cfg)
    try:
        await owner.start()
        yield owner, Endpoints(cfg)
    finally:
        await owner.stop()


def worker_of(owner: Owner, phone: str) -> int | None:
    v = owner.gw.terminals.vehicles.get(phone)
    c = v.conn if v is not None else None
    return c.link.index if isinstance(c, RemoteTerminal) and not c.closed else None


async def until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_alert_through_a_worker_is_stored_offered_commanded_and_completed(tmp_path):
    async with running_workers(tmp_path) as (owner, ep):
        assert len(owner.links) == 2
        feed, _ = await open_feed(ep, "tcp")
        agent = await open_agent(ep, "tcp")
        t = await online_terminal(ep)
        await until(lambda: worker_of(owner, t.phone) is not None)

        assert await t.report(alarm=SOS) == 0  # acknowledged by the worker after the owner committed
        offer = await agent.expect("offer")
        session = offer["session"]
        assert session["kind"] == "sos" and session["vehicle"]["plate"] == "粤B12345"
        assert session["position"]["lat"] == pytest.approx(22.543096)
        await agent.send({"type": "accept", "offer": offer["offer"]})
        await agent.expect("assigned")

        # a downlink command crosses owner -> worker -> vehicle, and the answer comes back
        await agent.send(
            {"type": "command", "session": session["id"], "command": "text", "text": "救援已出发", "id": "c1"}
        )
        cmd = await t.answer_commands()
        assert cmd.message.msg_id == 0x8300 and cmd.message.body.text == "救援已出发"
        result = await agent.expect("command_result")
        assert result["ok"] is True and result["status"] == "answered"

        # an assigned session makes the worker send the vehicle's positions to the agent
        await until(lambda: t.phone in owner._watched)
        await asyncio.sleep(0.1)  # the watch message reaches the worker
        await t.report(lat=22.6, lon=114.1)
        pos = await agent.expect("position")
        assert pos["position"]["lat"] == pytest.approx(22.6)

        await agent.send({"type": "complete", "session": session["id"], "disposition": "ok"})
        await agent.expect("completed")
        events = await feed_events(feed, 6)
        assert [e["event"] for e in events] == [
            "created",
            "queued",
            "offered",
            "assigned",
            "command",
            "completed",
        ]
        assert [e["seq"] for e in events] == list(range(1, 7))

        # locations reported through the worker are in the owner's store; counters come from the workers
        await asyncio.sleep(1.5)  # a metrics report and a location batch
        await owner.gw.store.flush_locations()
        trail = await owner.gw.store.trail(t.phone, 0, 2e9)
        assert len(trail) >= 3 and trail[-1][3] == pytest.approx(22.6)
        assert await metric(ep.http, "telacd_connections_open") == 1
        assert await metric(ep.http, "telacd_gps_reports_total") >= 3
        for c in (agent, feed):
            await c.close()
        await t.close()


async def test_a_second_login_on_another_worker_closes_the_first(tmp_path):
    async with running_workers(tmp_path) as (owner, ep):
        phone = "013800138077"
        # SO_REUSEPORT hashes each connection to a worker: log in again until one lands on the other worker
        first = await online_terminal(ep, phone)
        await until(lambda: worker_of(owner, phone) is not None)
        first_worker = worker_of(owner, phone)
        closed = 0
        for _ in range(30):
            nxt = await online_terminal(ep, phone)
            assert await first.next_event(timeout=5) is None  # the older connection is closed by its worker
            closed += 1
            await until(lambda: worker_of(owner, phone) is not None)
            first = nxt
            if worker_of(owner, phone) != first_worker:
                break
        else:
            pytest.fail("30 connections all landed on one worker")
        assert await first.report() == 0  # the newest connection works
        assert await first.report(alarm=CRASH) == 0
        assert owner.gw.metrics.connections_closed_duplicate == closed
        await until(lambda: owner.gw.metrics.connections_open == 1, timeout=3)
        await first.close()


async def test_registration_on_one_worker_authenticates_on_the_other(tmp_path):
    async with running_workers(tmp_path, terminals={"auth": "registered"}) as (owner, ep):
        phone = "013800138055"
        t = await TerminalClient(phone).connect(*ep.tcu)
        reply = await t.register(plate="粤B99999")
        assert reply.result == 0
        code = reply.auth_code
        await t.close()
        await until(
            lambda: (
                owner.gw.terminals.vehicles.get(phone) is not None
                and owner.gw.terminals.vehicles[phone].auth_code == code
            )
        )
        await asyncio.sleep(0.2)  # the owner passes the code to the other worker
        workers_seen = set()
        for _ in range(12):  # land on both workers at least once
            t = await TerminalClient(phone).connect(*ep.tcu)
            assert await t.login(auth_code=code) == 0
            assert await t.report() == 0
            await until(lambda: worker_of(owner, phone) is not None)
            workers_seen.add(worker_of(owner, phone))
            t2 = await TerminalClient(phone).connect(*ep.tcu)
            assert await t2.login(auth_code="wrong") != 0
            await t2.close()
            await t.close()
            await until(lambda: worker_of(owner, phone) is None)
            if len(workers_seen) == 2:
                break
        assert workers_seen == {0, 1}


async def test_a_reload_through_the_owners_gateway_reaches_the_workers(tmp_path):
    # the API calls the owner's Gateway.reload (not Owner.reload): the workers must hear of it all the same
    async with running_workers(tmp_path) as (owner, ep):
        running_store = dict(owner.cfg.store)
        raw = make_config(tmp_path)
        raw["gateway"] = {**dict(owner.cfg.gateway)}
        raw["store"] = {**running_store, "pool_size": 7}
        raw["triggers"] = [{"kind": "fatigue", "alarm_bit": 2, "queue": "emergency", "class": "rollover"}]
        result = await owner.gw.reload(config.build(raw, "<test>", {}))
        assert result["restart_needed_for"] == ["store.pool_size"]
        assert owner.cfg.store == running_store  # what the workers were sent: the running store
        await asyncio.sleep(0.2)  # the configuration reaches the workers
        agent = await open_agent(ep, "tcp")
        t = await online_terminal(ep)
        await until(lambda: worker_of(owner, t.phone) is not None)
        assert await t.report(alarm=1 << 2) == 0  # a trigger only the new configuration has
        assert (await agent.expect("offer"))["session"]["kind"] == "fatigue"
        await agent.close()
        await t.close()


async def test_owner_killed_workers_exit_and_a_restart_recovers_the_alert(tmp_path):
    child = ChildGateway(tmp_path, gateway={"workers": 2})
    await child.start()
    try:
        await _tcu_ready(child.ep)
        pids = _children(child.proc.pid)
        assert len(pids) == 2
        t = await online_terminal(child.ep)
        assert await t.report(alarm=CRASH) == 0
        await t.close()
        child.kill()
        # orphaned workers notice the owner is gone and exit
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids):
            assert time.monotonic() < deadline, "workers outlived their owner"
            await asyncio.sleep(0.1)
        await child.start()
        await _tcu_ready(child.ep)
        agent = await open_agent(child.ep, "tcp")
        offer = await agent.expect("offer")
        assert offer["session"]["kind"] == "crash" and offer["session"]["vehicle"]["phone"] == "013800138000"
        t = await online_terminal(child.ep)  # the vehicle reconnects to a new worker
        assert await t.report(alarm=CRASH) == 0  # still crashed: merged into its session or no new edge
        await agent.close()
        await t.close()
    finally:
        child.stop()


async def _tcu_ready(ep, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, w = await asyncio.open_connection(*ep.tcu)
            w.close()
            return
        except OSError:
            assert time.monotonic() < deadline, "the TCU port never opened"
            await asyncio.sleep(0.1)


def _children(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(name))
            except (OSError, ValueError, IndexError):
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
