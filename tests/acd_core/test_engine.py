"""Behaviour of the routing engine, feature by feature, on both implementations.

Each test builds a small centre, drives it with explicit times and checks the
events (the engine's only output) and its introspection.
"""

from __future__ import annotations

import math

import pytest

from acd_core import impl as _impl
from acd_core.config import AgentConfig, EscalationStep, PriorityClass, QueueConfig

CLASSES = (PriorityClass("crash", 10, 15.0, preempt_wrapup=True), PriorityClass("normal", 0, 60.0))


def kinds(events):
    return [type(e).__name__ for e in events]


def of(events, kind):
    return [e for e in events if type(e).__name__ == kind]


def offer_of(events, task_id=None, agent_id=None):
    for e in of(events, "OfferCreated"):
        if (task_id is None or e.task_id == task_id) and (agent_id is None or e.agent_id == agent_id):
            return e
    raise AssertionError(f"no offer for {task_id}/{agent_id} in {events}")


def centre(impl, agents=("a1",), **queue):
    r = impl.Router()
    queue.setdefault("classes", CLASSES)
    queue.setdefault("default_class", "normal")
    r.add_queue(QueueConfig("q", **queue))
    for a in agents:
        r.add_agent(a if isinstance(a, AgentConfig) else AgentConfig(a))
        r.login(a if isinstance(a, str) else a.id, 0.0)
    return r


def answer(r, impl, task_id, now, **kw):
    """Enqueue and have whoever is offered accept; return the agent id."""
    ev = r.enqueue(impl.Task(task_id, "q", **kw), now)
    offer = offer_of(ev, task_id)
    r.accept(offer.offer_id, now)
    return offer.agent_id


def test_compiled_engine_loaded():
    if _impl.PURE_PYTHON:
        pytest.skip("TELACD_PURE_PYTHON=1 forces the reference")
    mod = _impl.compiled_engine()
    assert _impl.is_compiled(mod) and _impl.is_compiled(__import__("acd_core._queue", fromlist=["x"]))
    from acd_core import routing

    assert routing.Router is mod.Router


def test_full_cycle_events(impl):
    r = centre(impl)
    ev = r.enqueue(impl.Task("t1", "q"), 1.0)
    assert kinds(ev) == ["TaskQueued", "OfferCreated", "AgentStateChanged"]
    assert ev[1].expires_at == 21.0 and ev[2].new == "offered"
    ev = r.accept(ev[1].offer_id, 3.0)
    assert kinds(ev) == ["TaskAssigned", "AgentStateChanged"] and ev[0].wait == 2.0
    ev = r.complete("t1", 10.0, disposition="resolved")
    assert kinds(ev) == ["TaskCompleted", "AgentStateChanged"]
    assert ev[0].handle_time == 7.0 and ev[0].disposition == "resolved" and ev[1].new == "available"
    assert not r.has_task("t1")
    assert r.next_deadline() is None


def test_events_are_records(impl):
    r = centre(impl)
    ev = r.enqueue(impl.Task("t1", "q"), 1.0)[1]
    d = ev.as_dict()
    assert d == {
        "kind": "OfferCreated",
        "at": 1.0,
        "offer_id": 1,
        "task_id": "t1",
        "agent_id": "a1",
        "expires_at": 21.0,
    }
    assert ev.kind == "OfferCreated"
    if _impl.is_compiled(impl):
        with pytest.raises(AttributeError):
            ev.agent_id = "x"


def test_priority_then_arrival(impl):
    r = centre(impl)
    answer(r, impl, "busy", 0.0)
    r.enqueue(impl.Task("n1", "q"), 1.0)
    r.enqueue(impl.Task("n2", "q"), 2.0)
    r.enqueue(impl.Task("c1", "q", "crash"), 3.0)
    assert r.waiting("q") == ["c1", "n1", "n2"]
    ev = r.complete("busy", 4.0)
    assert offer_of(ev).task_id == "c1"


def test_restored_task_keeps_its_place(impl):
    r = centre(impl)
    answer(r, impl, "busy", 0.0)
    r.enqueue(impl.Task("new", "q"), 5.0)
    r.enqueue(impl.Task("old", "q", arrival=1.0), 6.0)  # e.g. restored after a gateway restart
    assert r.waiting("q") == ["old", "new"]


def test_aging_lets_an_old_task_overtake(impl):
    r = centre(impl, aging=1.0)  # one priority point per second waited
    answer(r, impl, "busy", 0.0)
    r.enqueue(impl.Task("old", "q"), 0.0)  # normal, priority 0
    r.enqueue(impl.Task("crash", "q", "crash"), 5.0)  # priority 10, 5 s later
    assert r.waiting("q") == ["crash", "old"]  # at any time: 10 + a(t-5) > 0 + a t  iff 10 > 5
    r2 = centre(impl, aging=1.0)
    answer(r2, impl, "busy", 0.0)
    r2.enqueue(impl.Task("old", "q"), 0.0)
    r2.enqueue(impl.Task("crash", "q", "crash"), 20.0)  # 20 s of aging beats 10 points
    ev = r2.complete("busy", 21.0)
    assert offer_of(ev).task_id == "old"


def test_edf_orders_equal_priorities_by_deadline(impl):
    classes = (PriorityClass("sos", 10, 20.0), PriorityClass("crash", 10, 5.0))
    r = centre(impl, classes=classes, default_class="sos", edf=True)
    answer(r, impl, "busy", 0.0)
    r.enqueue(impl.Task("sos", "q", "sos"), 1.0)  # deadline 21
    r.enqueue(impl.Task("crash", "q", "crash"), 2.0)  # deadline 7
    assert r.waiting("q") == ["crash", "sos"]
    assert r.task_info("crash")["deadline"] == 7.0


def test_reprioritise_takes_effect_at_once(impl):
    r = centre(impl)
    answer(r, impl, "busy", 0.0)
    r.enqueue(impl.Task("a", "q"), 1.0)
    r.enqueue(impl.Task("b", "q"), 2.0)
    ev = r.reprioritise("b", 3.0, cls="crash")
    assert kinds(ev) == ["TaskReprioritised"] and ev[0].priority == 10.0
    assert r.waiting("q") == ["b", "a"]
    r.reprioritise("b", 4.0, priority=-5.0)
    assert r.waiting("q") == ["a", "b"]


def test_skills_and_levels(impl):
    agents = [AgentConfig("junior", skills={"de": 2}), AgentConfig("senior", skills={"de": 8})]
    r = centre(impl, agents=agents)
    ev = r.enqueue(impl.Task("t", "q", skills={"de": 5}), 1.0)
    assert offer_of(ev).agent_id == "senior"
    ev = r.enqueue(impl.Task("t2", "q", skills={"fr": 1}), 1.0)
    assert not of(ev, "OfferCreated")  # nobody speaks French: it waits


def test_tenants_and_shared_overflow_pool(impl):
    r = impl.Router()
    r.add_queue(QueueConfig("pool", tenant="outsourcer", shared=True))
    r.add_queue(
        QueueConfig("oem_a", tenant="a", steps=(EscalationStep(30.0), EscalationStep(None, queue="pool")))
    )
    r.add_agent(AgentConfig("agent_b", tenants=("b",)))
    r.add_agent(AgentConfig("pool_agent", tenants=("outsourcer",), queues=("pool",)))
    r.login("agent_b", 0.0)
    r.login("pool_agent", 0.0)
    ev = r.enqueue(impl.Task("t", "oem_a"), 0.0)
    assert not of(ev, "OfferCreated")  # tenant b's agent never sees tenant a's task
    assert r.next_deadline() == 30.0
    ev = r.handle_timer(30.0)
    assert kinds(ev)[:2] == ["TaskEscalated", "OfferCreated"]
    assert ev[0].step == 1 and ev[0].queue == "pool" and ev[1].agent_id == "pool_agent"
    assert r.task_info("t")["arrival"] == 0.0
    with pytest.raises(ValueError):  # a non-shared queue of another tenant is no escalation target
        r.add_queue(
            QueueConfig("oem_c", tenant="c", steps=(EscalationStep(5.0), EscalationStep(None, "oem_a")))
        )


def test_escalation_to_supervisors(impl):
    steps = (EscalationStep(10.0), EscalationStep(None, agents=("sup",), skills={}))
    agents = [AgentConfig("a1", skills={"x": 1}), AgentConfig("sup", queues=())]
    r = centre(impl, agents=agents, steps=steps, skills={"x": 1})
    answer(r, impl, "busy", 0.0)  # a1 is busy
    ev = r.enqueue(impl.Task("t", "q"), 1.0)
    assert not of(ev, "OfferCreated")  # sup lacks skill x and is not a queue member
    ev = r.handle_timer(11.0)
    assert ev[0].reason == "timeout" and offer_of(ev).agent_id == "sup"


def test_offer_timeout_tries_next_and_no_answer_break(impl):
    r = centre(impl, agents=("a1", "a2"), max_no_answer=1, offer_timeout=5.0)
    ev = r.enqueue(impl.Task("t", "q"), 0.0)
    first = offer_of(ev).agent_id
    ev = r.handle_timer(5.0)
    withdrawn = of(ev, "OfferWithdrawn")[0]
    assert withdrawn.reason == "timeout" and withdrawn.agent_id == first
    assert any(e.new == "break" and e.reason == "no_answer" for e in of(ev, "AgentStateChanged"))
    assert offer_of(ev).agent_id != first


def test_reject_moves_on_and_retries_later(impl):
    r = centre(impl, agents=("a1",), retry_delay=3.0)
    ev = r.enqueue(impl.Task("t", "q"), 0.0)
    ev = r.reject(offer_of(ev).offer_id, 1.0)
    assert of(ev, "OfferWithdrawn")[0].reason == "rejected"
    assert not of(ev, "OfferCreated")  # the only agent declined: not at once
    ev = r.handle_timer(4.0)
    assert offer_of(ev).agent_id == "a1"  # retried after retry_delay
    assert r.agent_info("a1", 4.0)["consecutive_no_answers"] == 1


def test_ring_all_first_accept_wins(impl):
    r = centre(impl, agents=("a1", "a2", "a3"), strategy="ring-all")
    ev = r.enqueue(impl.Task("t", "q"), 0.0)
    offers = of(ev, "OfferCreated")
    assert sorted(o.agent_id for o in offers) == ["a1", "a2", "a3"]
    ev = r.accept(offers[1].offer_id, 1.0)
    assert of(ev, "TaskAssigned")[0].agent_id == offers[1].agent_id
    gone = of(ev, "OfferWithdrawn")
    assert sorted(g.agent_id for g in gone) == sorted({"a1", "a2", "a3"} - {offers[1].agent_id})
    assert {g.reason for g in gone} == {"accepted_elsewhere"}
    with pytest.raises(KeyError):
        r.accept(offers[0].offer_id, 1.0)


def test_ring_progressively_adds_agents(impl):
    r = centre(impl, agents=("a1", "a2", "a3"), strategy="ring-progressively", ring_step=4.0)
    ev = r.enqueue(impl.Task("t", "q"), 0.0)
    assert len(of(ev, "OfferCreated")) == 1
    ev = r.handle_timer(4.0)
    assert len(of(ev, "OfferCreated")) == 1
    assert len(r.task_info("t")["offers"]) == 2


@pytest.mark.parametrize(
    "strategy, expect",
    [
        ("longest-idle", "a1"),  # logged in first, idle longest
        ("top-down", "a3"),  # first of agent_order
        ("most-skilled", "a2"),  # highest level on the required skill
        ("fewest-answered", "a3"),
    ],
)
def test_strategies(impl, strategy, expect):
    r = impl.Router()
    r.add_queue(QueueConfig("q", strategy=strategy, skills={"x": 1}, agent_order=("a3", "a1")))
    levels = {"a1": 2, "a2": 9, "a3": 5}
    for i, a in enumerate(("a1", "a2", "a3")):
        r.add_agent(AgentConfig(a, skills={"x": levels[a]}))
        r.login(a, float(i))
    # give a1 and a2 one answered call each so that fewest-answered has something to go by
    for tid, agent in (("w1", "a1"), ("w2", "a2")):
        if strategy == "fewest-answered":
            ev = r.set_state("a3", "break", 3.0)
            for other in ("a1", "a2"):
                if other != agent:
                    r.set_state(other, "break", 3.0)
            ev = r.enqueue(impl.Task(tid, "q"), 3.0)
            r.accept(offer_of(ev).offer_id, 3.0)
            r.complete(tid, 3.0)
            for other in ("a1", "a2", "a3"):
                r.set_state(other, "available", 3.0)
    ev = r.enqueue(impl.Task("t", "q"), 10.0)
    assert offer_of(ev).agent_id == expect


def test_round_robin_rotates(impl):
    r = centre(impl, agents=("a1", "a2", "a3"), strategy="round-robin")
    got = []
    for i in range(6):
        got.append(answer(r, impl, f"t{i}", float(i)))
        r.complete(f"t{i}", float(i))
    assert got == ["a1", "a2", "a3", "a1", "a2", "a3"]


def test_wrapup_then_available_and_emergency_preemption(impl):
    r = centre(impl, wrapup=30.0)
    answer(r, impl, "t1", 0.0)
    ev = r.complete("t1", 10.0)
    assert of(ev, "AgentStateChanged")[-1].new == "wrapup"
    ev = r.enqueue(impl.Task("n", "q"), 11.0)
    assert not of(ev, "OfferCreated")  # no offers in wrap-up
    ev = r.enqueue(impl.Task("c", "q", "crash"), 12.0)  # crash may pre-empt wrap-up
    assert kinds(ev)[1:3] == ["WrapupEnded", "AgentStateChanged"] and ev[1].reason == "preempted"
    assert offer_of(ev).task_id == "c"


def test_wrapup_timer_ends(impl):
    r = centre(impl, wrapup=30.0)
    answer(r, impl, "t1", 0.0)
    r.complete("t1", 10.0)
    r.enqueue(impl.Task("n", "q"), 11.0)
    assert r.next_deadline() == 40.0
    ev = r.handle_timer(40.0)
    assert kinds(ev)[:2] == ["WrapupEnded", "AgentStateChanged"] and ev[0].reason == "timeout"
    assert offer_of(ev).task_id == "n"


def test_break_and_available(impl):
    r = centre(impl)
    ev = r.set_state("a1", "break", 1.0, reason="lunch")
    assert ev[0].new == "break" and ev[0].reason == "lunch"
    assert r.agent_info("a1", 2.0)["reason"] == "lunch"
    assert not of(r.enqueue(impl.Task("t", "q"), 2.0), "OfferCreated")
    ev = r.set_state("a1", "available", 3.0)
    assert offer_of(ev).task_id == "t"


def test_sticky_routing_prefers_last_agent_for_a_while(impl):
    r = centre(impl, agents=("a1", "a2"), sticky_wait=20.0)
    agent = answer(r, impl, "t1", 0.0, vehicle="VIN1")
    other = "a2" if agent == "a1" else "a1"
    r.complete("t1", 5.0)
    r.set_state(agent, "break", 6.0)  # still logged in, so worth waiting for
    ev = r.enqueue(impl.Task("t2", "q", vehicle="VIN1"), 8.0)
    assert r.task_info("t2")["sticky_agent"] == agent
    assert not of(ev, "OfferCreated")  # the free agent is not offered it
    ev = r.handle_timer(28.0)  # the sticky wait is over
    assert ev[0].reason == "sticky_expired" and offer_of(ev).agent_id == other
    # and while the sticky agent is free it gets it at once
    r.set_state(agent, "available", 29.0)
    r.cancel("t2", 29.0)
    ev = r.enqueue(impl.Task("t3", "q", vehicle="VIN1"), 30.0)
    assert offer_of(ev).agent_id == agent


def test_incident_merge(impl):
    r = centre(impl)
    answer(r, impl, "busy", 0.0)
    r.enqueue(impl.Task("crash-auto", "q", incident_key="VIN9:123", attributes={"delta_v": 30}), 1.0)
    ev = r.enqueue(impl.Task("sos", "q", "crash", incident_key="VIN9:123", attributes={"button": "sos"}), 2.0)
    assert kinds(ev) == ["TaskMerged"]
    assert ev[0].into == "crash-auto" and ev[0].priority == 10.0
    info = r.task_info("crash-auto")
    assert info["attributes"] == {"delta_v": 30, "button": "sos"} and info["cls"] == "crash"
    assert not r.has_task("sos")


def test_logout_requeues_with_original_arrival(impl):
    r = centre(impl, agents=("a1", "a2"))
    agent = answer(r, impl, "t1", 1.0)
    other = "a2" if agent == "a1" else "a1"
    answer(r, impl, "t2", 2.0)
    r.enqueue(impl.Task("t3", "q"), 3.0)
    ev = r.logout(agent, 4.0)
    assert of(ev, "TaskRequeued")[0].reason == "agent_logout"
    assert r.waiting("q") == ["t1", "t3"]  # t1 is older than t3
    ev = r.complete("t2", 5.0)
    assert offer_of(ev, agent_id=other).task_id == "t1"


def test_disconnect_grace_keeps_tasks_on_reconnect(impl):
    r = centre(impl)
    answer(r, impl, "t1", 0.0)
    ev = r.disconnect("a1", 1.0, grace=30.0)
    assert ev[-1].new == "disconnected"
    assert r.next_deadline() == 31.0
    ev = r.login("a1", 10.0)
    assert ev[0].new == "busy" and r.task_info("t1")["agent"] == "a1"
    assert r.next_deadline() is None


def test_disconnect_grace_expires(impl):
    r = centre(impl)
    answer(r, impl, "t1", 0.0)
    r.disconnect("a1", 1.0, grace=30.0)
    ev = r.handle_timer(31.0)
    assert of(ev, "TaskRequeued")[0].reason == "agent_lost"
    assert r.task_info("t1")["state"] == "queued" and r.task_info("t1")["arrival"] == 0.0
    assert r.agent_info("a1", 31.0)["state"] == "logged_out"


def test_restore_assigned_after_restart(impl):
    r = impl.Router()
    r.add_queue(QueueConfig("q"))
    r.add_agent(AgentConfig("a1"))
    ev = r.restore_assigned(impl.Task("t1", "q", arrival=-50.0), "a1", 0.0, grace=60.0)
    assert kinds(ev) == ["TaskRestored", "AgentStateChanged"] and ev[1].new == "disconnected"
    ev = r.login("a1", 5.0)
    assert ev[0].new == "busy"
    assert r.complete("t1", 9.0)[0].handle_time == 9.0
    # and without a reconnect the task goes back to waiting with its old arrival
    r.restore_assigned(impl.Task("t2", "q", arrival=-50.0), "a1", 10.0, grace=60.0)
    r2 = impl.Router()
    r2.add_queue(QueueConfig("q"))
    r2.add_agent(AgentConfig("a1"))
    r2.restore_assigned(impl.Task("t2", "q", arrival=-50.0), "a1", 0.0, grace=60.0)
    ev = r2.handle_timer(60.0)
    assert of(ev, "TaskRequeued")[0].reason == "agent_lost" and r2.task_info("t2")["arrival"] == -50.0


def test_capacity_per_channel(impl):
    r = centre(impl, agents=(AgentConfig("a1", capacity={"voice": 1, "chat": 3}),))
    for i in range(4):
        r.enqueue(impl.Task(f"c{i}", "q", channel="chat"), float(i))
    ev = r.enqueue(impl.Task("v", "q", channel="voice"), 5.0)
    info = r.agent_info("a1", 5.0)
    assert info["load"] == {"chat": 3, "voice": 1}
    assert r.task_info("c3")["state"] == "queued"
    assert offer_of(ev).task_id == "v"


def test_update_agent_keeps_state_and_tasks(impl):
    r = centre(impl, agents=(AgentConfig("a1", skills={"x": 1}),))
    answer(r, impl, "t1", 0.0)
    ev = r.update_agent(AgentConfig("a1", skills={"x": 9, "y": 3}), 1.0)
    assert ev == []
    info = r.agent_info("a1", 1.0)
    assert info["state"] == "busy" and info["tasks"] == ["t1"]
    r.enqueue(impl.Task("t2", "q", skills={"y": 2}), 2.0)
    ev = r.complete("t1", 3.0)
    assert offer_of(ev).task_id == "t2"


def test_update_queue_keeps_waiting_tasks(impl):
    r = centre(impl)
    answer(r, impl, "busy", 0.0)
    r.enqueue(impl.Task("a", "q"), 1.0)
    r.enqueue(impl.Task("b", "q", "crash"), 2.0)
    r.update_queue(QueueConfig("q", classes=(PriorityClass("normal", 50),), strategy="random"), 3.0)
    assert r.waiting("q") == ["a", "b"]  # crash class gone: b falls back to normal, a is older
    assert r.task_info("b")["cls"] == "normal"


def test_abandon_and_cancel(impl):
    r = centre(impl)
    ev = r.enqueue(impl.Task("t1", "q"), 0.0)
    ev = r.abandon("t1", 4.0)
    assert kinds(ev)[:2] == ["TaskAbandoned", "OfferWithdrawn"] and ev[0].wait == 4.0
    assert ev[1].reason == "cancelled"
    answer(r, impl, "t2", 5.0)
    with pytest.raises(ValueError):
        r.abandon("t2", 6.0)
    ev = r.cancel("t2", 6.0, reason="duplicate")
    assert ev[0].reason == "duplicate" and ev[-1].new == "available"
    with pytest.raises(KeyError):
        r.complete("t2", 7.0)


def test_errors(impl):
    r = centre(impl)
    with pytest.raises(KeyError):
        r.enqueue(impl.Task("t", "nope"), 0.0)
    with pytest.raises(KeyError):
        r.enqueue(impl.Task("t", "q", "nope"), 0.0)
    r.enqueue(impl.Task("t", "q"), 0.0)
    with pytest.raises(ValueError):
        r.enqueue(impl.Task("t", "q"), 0.0)
    with pytest.raises(ValueError):
        r.enqueue(impl.Task("u", "q", tenant="other"), 0.0)
    with pytest.raises(ValueError):
        r.add_queue(QueueConfig("q"))


def test_statistics_and_erlang_predictions(impl):
    r = impl.Router(window=100.0, slots=10)
    r.add_queue(QueueConfig("q", classes=CLASSES, default_class="normal", sl_threshold=20.0))
    r.add_agent(AgentConfig("a1"))
    r.add_agent(AgentConfig("a2"))
    r.login("a1", 0.0)
    r.login("a2", 0.0)
    for i in range(2):
        answer(r, impl, f"c{i}", float(i), cls="crash")
    r.enqueue(impl.Task("w", "q"), 2.0)
    r.enqueue(impl.Task("gone", "q"), 3.0)
    r.abandon("gone", 50.0)
    r.complete("c0", 12.0)  # w is offered to the freed agent at 12 and answered at 40 (> 20 s)
    r.accept(r.task_info("w")["offers"][0]["offer_id"], 40.0)
    s = r.stats(60.0)["q"]
    tot = s["since_start"]
    assert (tot["offered"], tot["answered"], tot["abandoned"]) == (4, 3, 1)
    assert tot["asa_s"] == pytest.approx((0 + 0 + 38) / 3)
    # answered within T / (answered + abandoned); T is the class target (normal: 60 s, so w counts)
    assert tot["service_level"] == pytest.approx(3 / 4)
    assert s["classes"]["normal"]["since_start"]["service_level"] == pytest.approx(1 / 2)
    assert tot["aht_s"] == pytest.approx(12.0)
    assert s["classes"]["crash"]["since_start"]["answered"] == 2
    assert s["staffed"] == 2 and s["depth"] == 0
    assert s["window"]["offered"] == 4
    later = r.stats(500.0)["q"]
    assert later["window"]["offered"] == 0 and later["since_start"]["offered"] == 4
    ec = s["erlang_c"]
    assert ec["agents"] == 2 and ec["load_erlangs"] == pytest.approx(4 / 60 * 12.0)
    assert 0 < ec["p_wait"] < 1 and ec["agents_needed"] >= 1
    # a waiting task shows as depth and longest wait
    r.enqueue(impl.Task("x", "q"), 60.0)
    r.enqueue(impl.Task("y", "q"), 61.0)
    s = r.stats(70.0)["q"]
    assert s["depth"] == 2 and s["longest_wait_s"] == pytest.approx(10.0)  # both agents busy


def test_agent_introspection(impl):
    r = centre(impl)
    answer(r, impl, "t1", 2.0)
    info = r.agent_info("a1", 5.0)
    assert info["state"] == "busy" and info["time_in_state"] == 3.0 and info["answered"] == 1
    assert info["time_in"]["available"] == 2.0 and info["queues"] == ["q"]
    assert [a["id"] for a in r.agents(5.0)] == ["a1"]
    assert math.isclose(r.agent_info("a1", 5.0)["occupancy"], 3.0 / 5.0)


def test_remove_agent_and_queue(impl):
    r = centre(impl, agents=("a1", "a2"))
    agent = answer(r, impl, "t1", 0.0)
    r.set_state("a2" if agent == "a1" else "a1", "break", 0.5)
    ev = r.remove_agent(agent, 1.0)
    assert of(ev, "TaskRequeued")[0].reason == "agent_removed"
    assert r.task_info("t1")["state"] == "queued"
    with pytest.raises(KeyError):
        r.agent_info(agent, 1.0)
    with pytest.raises(ValueError):  # still has a task
        r.remove_queue("q")
    r.cancel("t1", 2.0)
    r.remove_queue("q")
    assert r.queue_names() == []


def test_end_wrapup_early(impl):
    r = centre(impl, wrapup=30.0)
    answer(r, impl, "t1", 0.0)
    r.complete("t1", 1.0)
    r.enqueue(impl.Task("t2", "q"), 2.0)
    ev = r.end_wrapup("a1", 3.0)
    assert ev[0].reason == "agent" and offer_of(ev).task_id == "t2"
    assert r.next_deadline() == 23.0  # only the new offer's timeout is left
