"""Regression tests for defects found by an outside audit of the engine, on both
implementations (the ``impl`` fixture: compiled and reference).

Each test is the smallest centre that showed the defect; the comment above it
says what used to happen.
"""

from __future__ import annotations

import pytest

from acd_core.config import AgentConfig, EscalationStep, PriorityClass, QueueConfig

from .test_engine import of, offer_of


def sticky_centre(impl):
    """a1 handled vehicle V; t2 for V is sticky to a1, a1 accepts it."""
    r = impl.Router()
    steps = (EscalationStep(30.0), EscalationStep(None, skills={}))
    r.add_queue(QueueConfig("q", sticky_wait=10.0, steps=steps))
    for a in ("a1", "a2"):
        r.add_agent(AgentConfig(a))
        r.login(a, 0.0)
    ev = r.enqueue(impl.Task("t1", "q", vehicle="V"), 0.0)
    r.accept(offer_of(ev, agent_id="a1").offer_id, 0.0)
    r.complete("t1", 1.0)
    r.set_state("a2", "break", 1.5)
    ev = r.enqueue(impl.Task("t2", "q", vehicle="V"), 2.0)
    assert r.task_info("t2")["sticky_agent"] == "a1"
    r.accept(offer_of(ev, "t2", "a1").offer_id, 2.0)
    r.set_state("a2", "available", 2.5)
    return r


# A re-queued task stayed pinned to its (gone) sticky agent forever: accept
# disarmed the sticky timer but left the preference set, so every step (the
# shared last one too) targeted only that agent.
def test_sticky_task_requeued_after_logout_is_open_to_all(impl):
    r = sticky_centre(impl)
    assert r.task_info("t2")["sticky_agent"] is None  # answered: the preference is over
    ev = r.logout("a1", 3.0)
    assert of(ev, "TaskRequeued")[0].task_id == "t2"
    assert offer_of(ev, "t2").agent_id == "a2"  # at once, not after a sticky wait


def test_sticky_task_requeued_after_disconnect_grace_is_open_to_all(impl):
    r = sticky_centre(impl)
    r.disconnect("a1", 3.0, grace=5.0)
    assert r.next_deadline() == 8.0
    ev = r.handle_timer(8.0)
    assert of(ev, "TaskRequeued")[0].reason == "agent_lost"
    assert offer_of(ev, "t2").agent_id == "a2"
    assert r.task_info("t2")["sticky_agent"] is None


def two_chat_offers(impl, first, second, **queue):
    """X (chat 2) holds offers for ``first`` then ``second``; Y (chat 1) is free."""
    r = impl.Router()
    classes = (PriorityClass("lo", 0), PriorityClass("hi", 5))
    r.add_queue(QueueConfig("q", classes=classes, retry_delay=30.0, **queue))
    r.add_agent(AgentConfig("X", capacity={"chat": 2}))
    r.add_agent(AgentConfig("Y", capacity={"chat": 1}))
    r.login("X", 0.0)
    offers = {}
    for i, (tid, cls) in enumerate((first, second)):
        offers[tid] = offer_of(r.enqueue(impl.Task(tid, "q", cls, channel="chat"), 1.0 + i), tid, "X")
    r.login("Y", 2.5)
    return r, offers


# A no-answer break withdrew the agent's other offers and re-offered them
# before the rejected task was back in its bucket: the free agent got the
# low-priority task and the high one waited.
def test_no_answer_break_offers_the_best_task_first(impl):
    r, offers = two_chat_offers(impl, ("H", "hi"), ("L", "lo"), max_no_answer=1)
    ev = r.reject(offers["H"].offer_id, 3.0)
    assert any(e.new == "break" and e.reason == "no_answer" for e in of(ev, "AgentStateChanged"))
    assert [(o.task_id, o.agent_id) for o in of(ev, "OfferCreated")] == [("H", "Y")]
    assert r.waiting("q") == ["L"]


def test_break_with_several_offers_re_offers_best_first(impl):
    r, _ = two_chat_offers(impl, ("L", "lo"), ("H", "hi"))  # L was offered first
    ev = r.set_state("X", "break", 3.0)
    assert [(o.task_id, o.agent_id) for o in of(ev, "OfferCreated")] == [("H", "Y")]
    assert r.waiting("q") == ["L"]


def test_logout_re_offers_offers_and_tasks_in_hand_best_first(impl):
    r, offers = two_chat_offers(impl, ("H", "hi"), ("L", "lo"))
    r.accept(offers["H"].offer_id, 2.0)  # H in X's hands, L still on offer to X
    ev = r.logout("X", 3.0)
    assert [(o.task_id, o.agent_id) for o in of(ev, "OfferCreated")] == [("H", "Y")]
    assert r.waiting("q") == ["L"]


def wrapup_centre(impl):
    r = impl.Router()
    classes = (PriorityClass("normal", 0), PriorityClass("crash", 10, 10.0, preempt_wrapup=True))
    r.add_queue(QueueConfig("q", wrapup=60.0, classes=classes))
    r.add_agent(AgentConfig("a1"))
    r.login("a1", 0.0)
    r.accept(offer_of(r.enqueue(impl.Task("t1", "q"), 0.0)).offer_id, 0.0)
    return r


# A crash that waited while the agent was busy never pre-empted its wrap-up,
# and a newer crash then pre-empted it and was served first.
def test_waiting_emergency_pre_empts_wrapup_when_it_begins(impl):
    r = wrapup_centre(impl)
    r.enqueue(impl.Task("c_old", "q", "crash"), 1.0)
    ev = r.complete("t1", 2.0)
    assert [type(e).__name__ for e in ev][:3] == ["TaskCompleted", "AgentStateChanged", "WrapupEnded"]
    assert of(ev, "AgentStateChanged")[0].new == "wrapup" and of(ev, "WrapupEnded")[0].reason == "preempted"
    assert offer_of(ev).task_id == "c_old"
    ev = r.enqueue(impl.Task("c_new", "q", "crash"), 3.0)
    assert not of(ev, "OfferCreated") and r.waiting("q") == ["c_new"]


def test_reprioritised_into_a_pre_empting_class_pre_empts_at_once(impl):
    r = wrapup_centre(impl)
    r.complete("t1", 1.0)
    r.enqueue(impl.Task("t2", "q"), 2.0)  # normal: waits for the wrap-up to end
    ev = r.reprioritise("t2", 3.0, cls="crash")
    assert of(ev, "WrapupEnded")[0].reason == "preempted" and offer_of(ev).task_id == "t2"
    ev = r.enqueue(impl.Task("t3", "q", "crash"), 4.0)
    assert not of(ev, "OfferCreated")


def test_pre_emption_only_for_emergencies_and_not_of_a_decliner(impl):
    r = impl.Router()
    classes = (PriorityClass("normal", 0), PriorityClass("crash", 10, 10.0, preempt_wrapup=True))
    r.add_queue(QueueConfig("q", wrapup=60.0, classes=classes, retry_delay=100.0))
    for a in ("a1", "a2"):
        r.add_agent(AgentConfig(a))
        r.login(a, 0.0)
    for tid, agent in (("t1", "a1"), ("t2", "a2")):
        r.accept(offer_of(r.enqueue(impl.Task(tid, "q"), 0.0), tid, agent).offer_id, 0.0)
    r.enqueue(impl.Task("n", "q"), 1.0)  # both busy: these wait
    r.enqueue(impl.Task("c", "q", "crash"), 1.5)
    ev = r.complete("t1", 2.0)  # a1's wrap-up is pre-empted for the crash, not the normal task
    assert of(ev, "WrapupEnded")[0].reason == "preempted"
    assert [(o.task_id, o.agent_id) for o in of(ev, "OfferCreated")] == [("c", "a1")]
    ev = r.reject(offer_of(ev).offer_id, 3.0)  # a1 is free now: it gets the normal task
    assert [(o.task_id, o.agent_id) for o in of(ev, "OfferCreated")] == [("n", "a1")]
    ev = r.complete("t2", 4.0)  # a2 has not declined the crash: its wrap-up is pre-empted
    assert of(ev, "WrapupEnded")[0].reason == "preempted"
    assert [(o.task_id, o.agent_id) for o in of(ev, "OfferCreated")] == [("c", "a2")]


# Merging a crash alert into a waiting SOS left it SOS with the SOS deadline.
def test_merge_takes_the_higher_class_and_earlier_deadline_at_once(impl):
    r = impl.Router()
    classes = (PriorityClass("sos", 10, 60.0), PriorityClass("crash", 10, 10.0))
    r.add_queue(QueueConfig("q", edf=True, classes=classes))
    r.add_agent(AgentConfig("a1"))
    r.login("a1", 0.0)
    r.accept(offer_of(r.enqueue(impl.Task("busy", "q"), 0.0)).offer_id, 0.0)
    r.enqueue(impl.Task("sos1", "q", "sos", incident_key="I"), 1.0)  # deadline 61
    r.enqueue(impl.Task("crash2", "q", "crash"), 5.0)  # deadline 15
    assert r.waiting("q") == ["crash2", "sos1"]
    ev = r.enqueue(impl.Task("m", "q", "crash", incident_key="I"), 4.0)  # deadline 14
    assert [type(e).__name__ for e in ev] == ["TaskMerged"] and ev[0].into == "sos1"
    info = r.task_info("sos1")
    assert (info["cls"], info["priority"], info["deadline"]) == ("crash", 10.0, 14.0)
    assert r.waiting("q") == ["sos1", "crash2"]  # re-keyed at once
    assert offer_of(r.complete("busy", 6.0)).task_id == "sos1"


def test_merge_never_lowers_class_priority_or_deadline(impl):
    r = impl.Router()
    classes = (PriorityClass("crash", 10, 10.0), PriorityClass("normal", 0, 60.0))
    r.add_queue(QueueConfig("q", classes=classes))
    r.enqueue(impl.Task("c", "q", "crash", incident_key="I"), 0.0)
    r.enqueue(impl.Task("n", "q", "normal", incident_key="I", attributes={"x": 1}), 1.0)
    info = r.task_info("c")
    assert (info["cls"], info["priority"], info["deadline"], info["attributes"]) == (
        "crash",
        10.0,
        10.0,
        {"x": 1},
    )


def test_merging_into_a_pre_empting_class_pre_empts_wrapup(impl):
    r = wrapup_centre(impl)
    r.complete("t1", 1.0)
    r.enqueue(impl.Task("n", "q", incident_key="I"), 2.0)
    ev = r.enqueue(impl.Task("c", "q", "crash", incident_key="I"), 3.0)
    assert of(ev, "TaskMerged")[0].into == "n" and of(ev, "WrapupEnded")[0].reason == "preempted"
    assert offer_of(ev).task_id == "n"


# An alert of tenant B merged into tenant A's task with the same incident key
# (and took B's data there); an alert naming an unknown queue merged silently.
def test_incident_keys_are_scoped_by_tenant(impl):
    r = impl.Router()
    r.add_queue(QueueConfig("qa", tenant="A"))
    r.add_queue(QueueConfig("qb", tenant="B"))
    r.enqueue(impl.Task("ta", "qa", incident_key="K", attributes={"a": 1}), 0.0)
    ev = r.enqueue(impl.Task("tb", "qb", incident_key="K", attributes={"secret": "B"}), 1.0)
    assert [type(e).__name__ for e in ev] == ["TaskQueued"]
    assert r.task_info("ta")["attributes"] == {"a": 1} and r.has_task("tb")
    ev = r.enqueue(impl.Task("tb2", "qb", incident_key="K"), 2.0)  # same tenant: merges
    assert [type(e).__name__ for e in ev] == ["TaskMerged"] and ev[0].into == "tb"
    r.cancel("tb", 3.0)
    ev = r.enqueue(impl.Task("tb3", "qb", incident_key="K"), 4.0)  # B's incident ended; A's still open
    assert [type(e).__name__ for e in ev] == ["TaskQueued"]


def test_an_alert_that_would_merge_is_still_validated(impl):
    r = impl.Router()
    r.add_queue(QueueConfig("qa", tenant="A"))
    r.enqueue(impl.Task("ta", "qa", incident_key="K"), 0.0)
    with pytest.raises(KeyError):
        r.enqueue(impl.Task("x", "nope", incident_key="K"), 1.0)
    with pytest.raises(KeyError):
        r.enqueue(impl.Task("x", "qa", "nope", incident_key="K"), 1.0)
    with pytest.raises(ValueError):
        r.enqueue(impl.Task("x", "qa", tenant="B", incident_key="K"), 1.0)
    assert r.task_ids() == ["ta"] and r.task_info("ta")["attributes"] is None


def supervisor_centre(impl, **queue):
    steps = (EscalationStep(10.0), EscalationStep(None, agents=("sup",), skills={}))
    r = impl.Router()
    r.add_queue(QueueConfig("q", offer_timeout=20.0, steps=steps, **queue))
    r.add_agent(AgentConfig("a1"))
    r.add_agent(AgentConfig("sup", queues=()))
    r.login("a1", 0.0)
    r.login("sup", 0.0)
    first = offer_of(r.enqueue(impl.Task("t", "q"), 0.0), "t", "a1")
    return r, first


# Escalating a task on offer moved its target but nobody new was offered it
# until the first offer timed out (TaskEscalated at 10 s, supervisor at 20 s).
def test_escalation_of_a_task_on_offer_widens_at_once_and_keeps_the_offer(impl):
    r, first = supervisor_centre(impl)
    assert r.next_deadline() == 10.0
    ev = r.handle_timer(10.0)
    assert [type(e).__name__ for e in ev][:2] == ["TaskEscalated", "OfferCreated"]
    assert offer_of(ev).agent_id == "sup" and not of(ev, "OfferWithdrawn")
    assert sorted(o["agent"] for o in r.task_info("t")["offers"]) == ["a1", "sup"]
    ev = r.accept(first.offer_id, 12.0)  # the first agent answered after all: it wins
    assert of(ev, "TaskAssigned")[0].agent_id == "a1"
    assert [(w.agent_id, w.reason) for w in of(ev, "OfferWithdrawn")] == [("sup", "accepted_elsewhere")]


def test_escalated_offer_times_out_while_the_new_one_rings(impl):
    r, _ = supervisor_centre(impl)
    r.handle_timer(10.0)
    ev = r.handle_timer(20.0)
    assert [(w.agent_id, w.reason) for w in of(ev, "OfferWithdrawn")] == [("a1", "timeout")]
    assert r.task_info("t")["state"] == "offered" and r.next_deadline() == 30.0


def test_sticky_wait_ending_on_offer_widens_at_once(impl):
    r = impl.Router()
    r.add_queue(QueueConfig("q", sticky_wait=10.0, offer_timeout=20.0))
    for a in ("a1", "a2"):
        r.add_agent(AgentConfig(a))
        r.login(a, 0.0)
    r.accept(offer_of(r.enqueue(impl.Task("t1", "q", vehicle="V"), 0.0), agent_id="a1").offer_id, 0.0)
    r.complete("t1", 1.0)
    r.set_state("a1", "break", 1.0)
    r.set_state("a1", "available", 2.0)  # idle less long than a2, but t2 is sticky to a1
    offer_of(r.enqueue(impl.Task("t2", "q", vehicle="V"), 3.0), "t2", "a1")
    ev = r.handle_timer(13.0)
    assert ev[0].reason == "sticky_expired" and offer_of(ev).agent_id == "a2"
    assert len(r.task_info("t2")["offers"]) == 2


def test_ring_all_escalation_offers_every_new_agent(impl):
    steps = (EscalationStep(10.0), EscalationStep(None, agents=("s1", "s2"), skills={}))
    r = impl.Router()
    r.add_queue(QueueConfig("q", strategy="ring-all", offer_timeout=20.0, steps=steps))
    for a in ("a1", "s1", "s2"):
        r.add_agent(AgentConfig(a, queues=("q",) if a == "a1" else ()))
        r.login(a, 0.0)
    r.enqueue(impl.Task("t", "q"), 0.0)
    ev = r.handle_timer(10.0)
    assert sorted(o.agent_id for o in of(ev, "OfferCreated")) == ["s1", "s2"]


# A configuration reload while a ring-progressively offer was open kept the old
# target: the next ring reached an agent without the newly required skill.
def test_ring_progressively_after_update_queue_rings_only_eligible_agents(impl):
    r = impl.Router()
    base = {"strategy": "ring-progressively", "ring_step": 2.0, "offer_timeout": 100.0}
    r.add_queue(QueueConfig("q", **base))
    r.add_agent(AgentConfig("a1", skills={"x": 1}))
    r.add_agent(AgentConfig("a2"))
    r.add_agent(AgentConfig("a3", skills={"x": 1}))
    for i, a in enumerate(("a1", "a2", "a3")):
        r.login(a, 0.1 * i)
    assert offer_of(r.enqueue(impl.Task("t", "q"), 1.0)).agent_id == "a1"
    r.update_queue(QueueConfig("q", skills={"x": 1}, **base), 1.5)
    ev = r.handle_timer(3.0)
    assert [o.agent_id for o in of(ev, "OfferCreated")] == ["a3"]  # a2 lacks x now
    ev = r.handle_timer(5.0)
    assert not of(ev, "OfferCreated")


# Under ring-all an agent that became free while a task rang was not added.
def test_ring_all_agent_freed_while_a_task_rings_joins(impl):
    r = impl.Router()
    r.add_queue(QueueConfig("q", strategy="ring-all", retry_delay=100.0))
    for a in ("a1", "a2", "a3", "a4"):
        r.add_agent(AgentConfig(a))
        r.login(a, 0.0)
    r.set_state("a3", "break", 0.0)
    r.set_state("a4", "break", 0.0)
    ev = r.enqueue(impl.Task("t", "q"), 1.0)
    assert sorted(o.agent_id for o in of(ev, "OfferCreated")) == ["a1", "a2"]
    ev = r.set_state("a3", "available", 2.0)
    assert [(o.task_id, o.agent_id) for o in of(ev, "OfferCreated")] == [("t", "a3")]
    ev = r.reject(offer_of(ev).offer_id, 3.0)
    assert not of(ev, "OfferCreated")  # a3 declined t: it does not join again
    r.set_state("a3", "break", 3.5)
    r.enqueue(impl.Task("w", "q"), 5.0)  # a1 and a2 hold t's offers: w waits
    ev = r.set_state("a4", "available", 6.0)  # a waiting task comes before joining a ring
    assert [(o.task_id, o.agent_id) for o in of(ev, "OfferCreated")] == [("w", "a4")]
    ev = r.accept(r.task_info("t")["offers"][0]["offer_id"], 7.0)
    assert [w.reason for w in of(ev, "OfferWithdrawn")] == ["accepted_elsewhere"]


# A pending offer survived into wrap-up; once accepted the agent showed
# "wrapup" while holding the task.
def test_accepting_an_offer_made_before_wrapup_ends_the_wrapup(impl):
    r = impl.Router()
    r.add_queue(QueueConfig("q", wrapup=30.0))
    r.add_agent(AgentConfig("X", capacity={"chat": 2}))
    r.login("X", 0.0)
    r.accept(offer_of(r.enqueue(impl.Task("A", "q", channel="chat"), 0.0)).offer_id, 0.0)
    b = offer_of(r.enqueue(impl.Task("B", "q", channel="chat"), 1.0))
    r.complete("A", 2.0)
    assert r.agent_info("X", 2.0)["state"] == "wrapup"
    ev = r.accept(b.offer_id, 3.0)
    assert of(ev, "WrapupEnded")[0].reason == "agent"
    assert of(ev, "AgentStateChanged")[-1].new == "busy"
    info = r.agent_info("X", 3.0)
    assert (info["state"], info["tasks"]) == ("busy", ["B"])
    assert r.next_deadline() is None  # no wrap-up timer left behind
    ev = r.enqueue(impl.Task("C", "q", channel="chat"), 4.0)  # its free slot takes work again
    assert offer_of(ev).agent_id == "X"


# The window's arrival rate divided by the whole window although its slots
# cover only window - window/slots plus the current partial slot.
def test_window_arrival_rate_divides_by_the_time_covered(impl):
    r = impl.Router(window=100.0, slots=10)
    r.add_queue(QueueConfig("q"))
    for i in range(1005):
        r.enqueue(impl.Task(i, "q"), i + 0.5)
        r.cancel(i, i + 0.5)
    w = r.stats(1005.0)["q"]["window"]
    assert (w["offered"], w["span_s"]) == (95, 95.0)  # arrivals at 910.5 … 1004.5
    assert w["arrival_rate"] == 1.0  # was 0.95
    assert r.stats(1005.0)["q"]["since_start"]["arrival_rate"] == 1005 / 1005.0


# Each ring armed a second timer (the offer armed one, then the ring another),
# so from the second step on ring-progressively added two agents per step, and
# the stray timer later dropped the task's reference to its retry timer.
def test_ring_progressively_adds_one_agent_per_step(impl):
    r = impl.Router()
    r.add_queue(QueueConfig("q", strategy="ring-progressively", ring_step=4.0, offer_timeout=100.0))
    for a in ("a1", "a2", "a3", "a4", "a5"):
        r.add_agent(AgentConfig(a))
        r.login(a, 0.0)
    r.enqueue(impl.Task("t", "q"), 0.0)
    for now, n in ((4.0, 2), (8.0, 3), (12.0, 4)):
        r.handle_timer(now)
        assert len(r.task_info("t")["offers"]) == n, now
        assert r.next_deadline() == now + 4.0
