"""Stateful test of the routing engine: random operations, both implementations.

One hypothesis state machine drives the compiled engine (``_engine.so`` on
``_queue.so``) and the reference (``_engine.py`` on the heapq ``queue.py``) in
lockstep with the same operations, and requires identical event streams. It
also keeps its own model of the world, built only from the events and the
configuration (not from the engine's internals), and checks the invariants of
issue 3 item 6 against it, under each of the nine strategies:

* a task is never offered to two agents at once, except under ring-all /
  ring-progressively, or after its target widened while it was on offer (an
  escalation step or the end of a sticky wait keeps the pending offer);
* no agent ever holds more tasks + pending offers on a channel than its capacity;
* an agent is always offered the highest-priority, then oldest, eligible task
  (eligible: its tenant, queues, skills, a free slot on the task's channel, and
  not a task it already declined); an agent taken out of wrap-up, the best
  waiting task of a pre-empting class;
* work conservation: no task waits while an agent that may take it has a free
  slot (unless that agent declined it), the other half of "highest first";
  no task of a pre-empting class waits while an agent in wrap-up could take it;
  under ring-all, no task rings without an agent that could take it;
* no task is lost: every task ever queued is ended (completed, abandoned,
  cancelled) or still known to the engine in the state the events say;
* no task is stuck: a waiting task that nothing will move by itself (no
  escalation step, sticky wait, retry or ring pending) is open to every agent
  its configuration allows at its step (no sticky agent, no decliners), so it
  goes to the first of them that is free;
* agents in wrap-up, on break, disconnected or logged out get no offers.

With escalation steps, a shared pool, aging and EDF (``FEATURES``) the model
follows each task's step and ranks by effective priority and deadline; a task
that may be waiting for its sticky agent (its queue has a sticky wait and it
has a vehicle or incident key, until the wait is over or it was answered) is
left out of the ordering and work-conservation checks, since which agent it
waits for depends on history the model does not replay.
"""

from __future__ import annotations

import math

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from acd_core.config import AgentConfig, EscalationStep, PriorityClass, QueueConfig
from tests.acd_core.conftest import load_engine

OFFERABLE = {"available", "offered", "busy"}
RING = {"ring-all", "ring-progressively"}
NEVER = -math.inf

AGENTS = [
    AgentConfig("a0", tenants=("t1",), skills={"tech": 5}, capacity={"voice": 1}),
    AgentConfig("a1", tenants=("t1",), skills={"tech": 2}, capacity={"voice": 1, "chat": 2}),
    AgentConfig("a2", tenants=("t1",), skills={}, capacity={"voice": 1}, queues=("sales",)),
    AgentConfig("a3", tenants=("t2",), skills={"tech": 1}, capacity={"voice": 1, "chat": 1}),
    AgentConfig("a4", tenants=("t1", "t2"), skills={"tech": 4}, capacity={"voice": 1, "chat": 1}),
]
SKILL_SETS = [None, None, {"tech": 1}, {"tech": 3}, {"tech": 5}, {"lang:de": 1}]


def common(strategy):
    return {
        "strategy": strategy,
        "offer_timeout": 5.0,
        "max_no_answer": 2,
        "retry_delay": 3.0,
        "agent_order": ("a4", "a1"),  # top-down: these first, then registration order
    }


def make_queues(strategy):
    return [
        QueueConfig(
            "sales",
            tenant="t1",
            classes=(PriorityClass("hi", 5, 10.0, preempt_wrapup=True), PriorityClass("lo", 0)),
            default_class="lo",
            wrapup=2.0,
            ring_step=2.0,
            **common(strategy),
        ),
        QueueConfig("tech", tenant="t1", skills={"tech": 3}, ring_step=2.0, **common(strategy)),
        QueueConfig(
            "other", tenant="t2", classes=(PriorityClass("n", 1),), ring_step=2.0, **common(strategy)
        ),
    ]


def make_feature_queues(strategy):
    """Escalation (to supervisors, then a shared pool), sticky routing, aging, EDF."""
    return [
        QueueConfig("pool", tenant="outsourcer", shared=True, **common(strategy)),
        QueueConfig(
            "sales",
            tenant="t1",
            classes=(PriorityClass("hi", 5, 10.0, preempt_wrapup=True), PriorityClass("lo", 0, 30.0)),
            default_class="lo",
            wrapup=2.0,
            sticky_wait=3.0,
            steps=(
                EscalationStep(4.0),
                EscalationStep(6.0, skills={}, agents=("a0", "a2")),
                EscalationStep(None, queue="pool"),
            ),
            **common(strategy),
        ),
        QueueConfig("tech", tenant="t1", skills={"tech": 3}, aging=0.5, edf=True, **common(strategy)),
        QueueConfig(
            "other", tenant="t2", classes=(PriorityClass("n", 1),), sticky_wait=2.0, **common(strategy)
        ),
    ]


FEATURE_AGENTS = [*AGENTS, AgentConfig("a5", tenants=("outsourcer",), queues=("pool",))]


def target(c):
    return math.inf if c.target is None else c.target


class Model:
    """What the events say the world is."""

    def __init__(self, queues, agents):
        self.queues = {q.name: q for q in queues}
        self.agents = {a.id: a for a in agents}
        self.state = {a.id: "logged_out" for a in agents}
        self.load = {a.id: {} for a in agents}
        self.tasks = {}  # id -> dict(state, queue, cls, priority, arrival, deadline, channel, req, ...)
        self.ended = set()
        self.ever = set()
        self.offers = {}  # offer id -> (task id, agent id)
        # task id -> agents that declined it: a superset of the engine's (which
        # also forgets them on a retry, which makes no event)
        self.declined = {}
        self.preempted = set()  # agents just taken out of wrap-up by an emergency
        self.pending = {}  # task id -> the enqueue arguments (queue, cls, arrival, skills, channel, keys)
        self.ended_channel = {}

    # -- eligibility, from the configuration and the task's step -------------

    def serves(self, cfg, qname):
        q = self.queues[qname]
        if cfg.queues is None:
            return not q.shared and q.tenant in cfg.tenants
        return qname in cfg.queues

    def where(self, t):
        """(queue it waits in, required skills, allowed agents or None) at its step."""
        q = self.queues[t["queue"]]
        loc, req, agents = q, t["req"], None
        if q.steps:
            step = q.steps[t["step"]]
            if step.queue is not None:
                loc = self.queues[step.queue]
            if step.skills is not None:
                req = dict(step.skills)
            agents = step.agents
        return loc, req, agents

    def eligible(self, aid, tid):
        cfg = self.agents[aid]
        t = self.tasks[tid]
        loc, req, agents = self.where(t)
        if agents is not None:
            if aid not in agents:
                return False
        elif not self.serves(cfg, loc.name):
            return False
        if not loc.shared and loc.tenant not in cfg.tenants:
            return False
        if cfg.capacity.get(t["channel"], 0) <= 0:
            return False
        return all(cfg.skills.get(s, 0) >= lvl for s, lvl in req.items())

    def exact(self, tid, at, strict=True):
        """Whether the task's eligibility is known: it cannot be waiting for a
        sticky agent (at its sticky deadline the timer may not have run yet
        while other timers of that instant do; between calls it has)."""
        until = self.tasks[tid]["sticky_until"]
        return at > until if strict else at >= until

    def preempts(self, tid):
        """Whether the task may take an agent out of wrap-up where it waits."""
        t = self.tasks[tid]
        loc, _, _ = self.where(t)
        own = self.queues[t["queue"]].class_named(t["cls"]).preempt_wrapup
        return own and any(c.preempt_wrapup for c in loc.classes)

    def rank(self, tid, at):
        """The engine's service order: effective priority, then arrival (or
        deadline under EDF), computed as the engine does (same rounding)."""
        t = self.tasks[tid]
        loc, _, _ = self.where(t)
        k1 = loc.aging * t["arrival"] - t["priority"]
        return (k1 - loc.aging * at, t["deadline"] if loc.edf else t["arrival"])

    def spare(self, aid, channel):
        return self.load[aid].get(channel, 0) < self.agents[aid].capacity.get(channel, 0)

    def can_take(self, aid, tid):
        return (
            self.state[aid] in OFFERABLE
            and self.eligible(aid, tid)
            and self.spare(aid, self.tasks[tid]["channel"])
            and aid not in self.declined.get(tid, ())
        )

    # -- events --------------------------------------------------------------

    def apply(self, ev, strategy):
        kind = type(ev).__name__
        handler = getattr(self, "on_" + kind, None)
        assert handler is not None, f"unexpected event {ev!r}"
        handler(ev, strategy)

    def on_TaskQueued(self, ev, strategy):
        assert ev.task_id not in self.tasks and ev.task_id not in self.ended
        p = self.pending[ev.task_id]
        q = self.queues[ev.queue]
        req = dict(q.skills)
        for s, lvl in (p["skills"] or {}).items():
            req[s] = max(req.get(s, 0), lvl)
        sticky = q.sticky_wait > 0 and (p["vehicle"] is not None or p["incident"] is not None)
        self.tasks[ev.task_id] = {
            "state": "queued",
            "queue": ev.queue,
            "cls": ev.cls,
            "priority": ev.priority,
            "arrival": ev.arrival,
            "channel": p["channel"],
            "deadline": ev.arrival + target(q.class_named(ev.cls)),
            "req": req,
            "offers": set(),
            "agent": None,
            "step": 0,
            "sticky_until": ev.at + q.sticky_wait if sticky else NEVER,
            "widened": False,  # its target widened while on offer: a second offer is allowed
        }
        self.ever.add(ev.task_id)

    def on_OfferCreated(self, ev, strategy):
        t = self.tasks[ev.task_id]
        aid = ev.agent_id
        # no offers in wrap-up / break / logged out / disconnected
        assert self.state[aid] in OFFERABLE, (ev, self.state[aid])
        assert t["state"] in ("queued", "offered"), (ev, t["state"])
        if self.exact(ev.task_id, ev.at):
            assert self.eligible(aid, ev.task_id), ev
        # highest priority, then oldest, of what this agent may take now (of
        # the tasks whose eligibility the model knows). An agent just taken
        # out of wrap-up gets the best waiting task of a pre-empting class it
        # may take (a task it was not taken out for may outrank that, e.g.
        # one re-prioritised above the emergency).
        emergency = aid in self.preempted
        self.preempted.discard(aid)
        if emergency:
            assert self.preempts(ev.task_id), ev
        rank = self.rank(ev.task_id, ev.at)
        for other, o in self.tasks.items():
            if other == ev.task_id or o["state"] != "queued" or not self.exact(other, ev.at):
                continue
            if not self.can_take(aid, other) or (emergency and not self.preempts(other)):
                continue
            assert rank <= self.rank(other, ev.at), (ev, other, o, t)
        if t["offers"]:
            assert strategy in RING or t["widened"], f"{ev.task_id} offered to two agents under {strategy}"
            assert aid not in {self.offers[x][1] for x in t["offers"]}
        # offered to an agent that declined it: the engine retried (and forgot) it
        self.declined.get(ev.task_id, set()).discard(aid)
        t["offers"].add(ev.offer_id)
        t["state"] = "offered"
        self.offers[ev.offer_id] = (ev.task_id, aid)
        ch = t["channel"]
        self.load[aid][ch] = self.load[aid].get(ch, 0) + 1
        assert self.load[aid][ch] <= self.agents[aid].capacity.get(ch, 0), ev

    def on_OfferWithdrawn(self, ev, strategy):
        tid, aid = self.offers.pop(ev.offer_id)
        assert (tid, aid) == (ev.task_id, ev.agent_id)
        t = self.tasks.get(tid)
        ch = (t or self.ended_channel.get(tid))["channel"]
        self.load[aid][ch] -= 1
        if ev.reason in ("rejected", "timeout"):
            self.declined.setdefault(tid, set()).add(aid)
        if t is not None:
            t["offers"].discard(ev.offer_id)
            if t["state"] == "offered" and not t["offers"]:
                t["state"] = "queued"
                t["widened"] = False

    def on_TaskAssigned(self, ev, strategy):
        t = self.tasks[ev.task_id]
        assert t["state"] == "offered" and ev.offer_id in t["offers"]
        del self.offers[ev.offer_id]
        t["offers"].discard(ev.offer_id)
        t["state"] = "assigned"
        t["agent"] = ev.agent_id
        t["widened"] = False
        t["sticky_until"] = NEVER  # answered: the sticky preference is over
        assert self.offers_of(ev.task_id) == t["offers"]

    def offers_of(self, tid):
        return {oid for oid, (t, _) in self.offers.items() if t == tid}

    def _end(self, tid):
        t = self.tasks.pop(tid)
        self.ended.add(tid)
        self.ended_channel[tid] = t
        if t["state"] == "assigned":
            self.load[t["agent"]][t["channel"]] -= 1
        return t

    def on_TaskCompleted(self, ev, strategy):
        assert self.tasks[ev.task_id]["state"] == "assigned"
        self._end(ev.task_id)

    def on_TaskAbandoned(self, ev, strategy):
        assert self.tasks[ev.task_id]["state"] in ("queued", "offered")
        self._end(ev.task_id)

    def on_TaskCancelled(self, ev, strategy):
        self._end(ev.task_id)

    def on_TaskRequeued(self, ev, strategy):
        t = self.tasks[ev.task_id]
        assert t["state"] == "assigned" and t["agent"] == ev.agent_id
        self.load[ev.agent_id][t["channel"]] -= 1
        t["state"] = "queued"
        t["agent"] = None
        t["step"] = 0  # starts the escalation again, with no sticky agent and no decliners
        t["sticky_until"] = NEVER
        self.declined.pop(ev.task_id, None)

    def on_TaskReprioritised(self, ev, strategy):
        t = self.tasks[ev.task_id]
        t["priority"] = ev.priority
        t["cls"] = ev.cls

    def on_TaskMerged(self, ev, strategy):
        # the task takes the alert's class if higher (by priority, then the
        # shorter target; by name in its own queue), priority, earlier deadline
        t = self.tasks[ev.into]
        assert ev.priority >= t["priority"]
        t["priority"] = ev.priority
        p = self.pending[ev.task_id]
        c = self.queues[p["queue"]].class_named(p["cls"])
        own = {k.name: k for k in self.queues[t["queue"]].classes}.get(c.name)
        e = self.queues[t["queue"]].class_named(t["cls"])
        if own is not None and (own.priority, -target(own)) > (e.priority, -target(e)):
            t["cls"] = own.name
        t["deadline"] = min(t["deadline"], p["arrival"] + target(c))

    def on_AgentStateChanged(self, ev, strategy):
        assert self.state[ev.agent_id] == ev.old, (ev, self.state[ev.agent_id])
        self.state[ev.agent_id] = ev.new

    def on_TaskEscalated(self, ev, strategy):
        t = self.tasks[ev.task_id]
        assert t["state"] in ("queued", "offered")
        if t["state"] == "offered":
            t["widened"] = True
        if ev.reason == "timeout":
            assert ev.step == t["step"] + 1
            t["step"] = ev.step
            self.declined.pop(ev.task_id, None)  # a new step: nobody has declined it there
        else:
            assert ev.reason == "sticky_expired" and ev.step == t["step"]
            t["sticky_until"] = NEVER
        assert self.where(t)[0].name == ev.queue

    def on_TaskRestored(self, ev, strategy):
        raise AssertionError("not used here")

    def on_WrapupEnded(self, ev, strategy):
        assert self.state[ev.agent_id] == "wrapup"
        if ev.reason == "preempted":
            self.preempted.add(ev.agent_id)


class EngineMachine(RuleBasedStateMachine):
    STRATEGY = "longest-idle"
    FEATURES = False

    def __init__(self):
        super().__init__()
        self.mods = [load_engine("compiled"), load_engine("reference")]
        self.routers = [m.Router(seed=3) for m in self.mods]
        queues = (make_feature_queues if self.FEATURES else make_queues)(self.STRATEGY)
        agents = FEATURE_AGENTS if self.FEATURES else AGENTS
        for r in self.routers:
            for q in queues:
                r.add_queue(q)
            for a in agents:
                r.add_agent(a)
        self.model = Model(queues, agents)
        self.now = 0.0
        self.next_id = 0
        self.incidents = {}

    def run(self, op, make_args, **kwargs):
        """Apply one operation to both engines; they must agree exactly."""
        outs = []
        for mod, r in zip(self.mods, self.routers):
            try:
                outs.append(("ok", [e.as_dict() for e in getattr(r, op)(*make_args(mod), **kwargs)]))
            except (KeyError, ValueError) as exc:
                outs.append(("error", type(exc).__name__))
        assert outs[0] == outs[1], (op, outs)
        if outs[0][0] == "ok":
            for d in outs[0][1]:
                self.model.apply(_typed(d), self.STRATEGY)
        if op != "handle_timer":
            # like the gateway's timer: whatever fell due by now runs before the next call
            self.timers()
        return outs[0]

    def timers(self):
        self.run("handle_timer", lambda m: (self.now,))

    @initialize(logins=st.lists(st.sampled_from([a.id for a in FEATURE_AGENTS]), unique=True, min_size=1))
    def start(self, logins):
        for aid in logins:
            self.run("login", lambda m, aid=aid: (aid, self.now))

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 2.5, 6.0, 10.0]))
    def tick(self, dt):
        self.now += dt
        self.timers()

    @rule(
        queue=st.sampled_from(["sales", "sales", "tech", "other"]),
        cls=st.sampled_from([None, "hi"]),
        channel=st.sampled_from(["voice", "voice", "chat"]),
        skills=st.sampled_from(SKILL_SETS),
        incident=st.sampled_from([None, None, None, "inc1", "inc2"]),
        back=st.sampled_from([0.0, 0.0, 3.0]),
        vehicle=st.sampled_from([None, "v1", "v2"]),
    )
    def enqueue(self, queue, cls, channel, skills, incident, back, vehicle):
        tid = f"t{self.next_id}"
        self.next_id += 1
        if queue != "sales":
            cls = None
        arrival = self.now - back  # a restored task keeps an older arrival
        self.model.pending[tid] = {
            "queue": queue,
            "cls": cls,
            "arrival": arrival,
            "skills": skills,
            "channel": channel,
            "vehicle": vehicle,
            "incident": incident,
        }

        def args(mod):
            return (
                mod.Task(
                    tid,
                    queue,
                    cls,
                    skills=skills,
                    channel=channel,
                    arrival=arrival,
                    incident_key=incident,
                    vehicle=vehicle,
                ),
                self.now,
            )

        self.run("enqueue", args)

    def _pick(self, data, pool):
        return data.draw(st.sampled_from(sorted(pool)))

    @precondition(lambda self: self.model.offers)
    @rule(data=st.data())
    def accept(self, data):
        oid = self._pick(data, self.model.offers)
        self.run("accept", lambda m: (oid, self.now))

    @precondition(lambda self: self.model.offers)
    @rule()
    def answer(self):
        # the oldest pending offer is accepted: answered tasks (wrap-up,
        # re-queues, sticky agents) matter more than the random pick above
        # makes them occur
        oid = min(self.model.offers)
        self.run("accept", lambda m: (oid, self.now))

    @precondition(lambda self: self.model.offers)
    @rule(data=st.data())
    def reject(self, data):
        oid = self._pick(data, self.model.offers)
        self.run("reject", lambda m: (oid, self.now))

    @precondition(lambda self: any(t["state"] == "assigned" for t in self.model.tasks.values()))
    @rule(data=st.data())
    def complete(self, data):
        tid = self._pick(data, [k for k, t in self.model.tasks.items() if t["state"] == "assigned"])
        self.run("complete", lambda m: (tid, self.now), disposition="done")

    @precondition(lambda self: any(t["state"] == "assigned" for t in self.model.tasks.values()))
    @rule()
    def finish(self):
        # the longest-held task is completed (as often as one is answered)
        tid = min(
            (k for k, t in self.model.tasks.items() if t["state"] == "assigned"),
            key=lambda k: int(k[1:]),
        )
        self.run("complete", lambda m: (tid, self.now), disposition="done")

    @precondition(lambda self: self.model.tasks)
    @rule(data=st.data())
    def abandon_or_cancel(self, data):
        # one rule (not two) so that tasks live long enough to be answered
        tid = self._pick(data, self.model.tasks)
        if self.model.tasks[tid]["state"] != "assigned" and data.draw(st.booleans()):
            self.run("abandon", lambda m: (tid, self.now))
        else:
            self.run("cancel", lambda m: (tid, self.now))

    @precondition(lambda self: self.model.tasks)
    @rule(data=st.data(), priority=st.sampled_from([-1.0, 0.0, 3.0, 9.0]))
    def reprioritise(self, data, priority):
        tid = self._pick(data, self.model.tasks)
        self.run("reprioritise", lambda m: (tid, self.now), priority=priority)

    @rule(aid=st.sampled_from([a.id for a in FEATURE_AGENTS]))
    def login(self, aid):
        self.run("login", lambda m: (aid, self.now))

    @rule(aid=st.sampled_from([a.id for a in FEATURE_AGENTS]), state=st.sampled_from(["available", "break"]))
    def set_state(self, aid, state):
        self.run("set_state", lambda m: (aid, state, self.now), reason="lunch" if state == "break" else "")

    @rule(aid=st.sampled_from([a.id for a in FEATURE_AGENTS]))
    def logout(self, aid):
        self.run("logout", lambda m: (aid, self.now))

    @rule(aid=st.sampled_from([a.id for a in FEATURE_AGENTS]), grace=st.sampled_from([0.0, 4.0]))
    def disconnect(self, aid, grace):
        self.run("disconnect", lambda m: (aid, self.now, grace))

    @rule(aid=st.sampled_from(["a0", "a1", "a4"]), level=st.integers(1, 5))
    def change_skills(self, aid, level):
        # configuration reload: the agent keeps its state and its tasks
        cfg = self.model.agents[aid]
        new = AgentConfig(cfg.id, tenants=cfg.tenants, skills={"tech": level}, capacity=cfg.capacity)
        self.model.agents[aid] = new
        self.run("update_agent", lambda m: (new, self.now))

    @invariant()
    def work_conserving(self):
        model = self.model
        for tid, t in model.tasks.items():
            if t["state"] == "assigned" or not model.exact(tid, self.now, strict=False):
                continue
            if t["state"] == "offered":
                # ring-all: every agent that could take it has been offered it
                if model.where(t)[0].strategy != "ring-all":
                    continue
                offered = {model.offers[o][1] for o in t["offers"]}
                for aid in model.agents:
                    assert aid in offered or not model.can_take(aid, tid), (
                        f"{tid} rings without {aid} ({model.state[aid]}), who could take it"
                    )
                continue
            for aid in model.agents:
                assert not model.can_take(aid, tid), (
                    f"{tid} waits while {aid} ({model.state[aid]}) could take it"
                )
            if model.preempts(tid):
                # an emergency does not wait while an agent in wrap-up could take it
                for aid, state in model.state.items():
                    assert not (
                        state == "wrapup"
                        and model.eligible(aid, tid)
                        and model.spare(aid, t["channel"])
                        and aid not in model.declined.get(tid, ())
                    ), f"{tid} waits while {aid} in wrap-up could be pre-empted for it"

    @invariant()
    def engine_agrees_with_events(self):
        for r in self.routers:
            assert set(r.task_ids()) == set(self.model.tasks)
            for tid, t in self.model.tasks.items():
                info = r.task_info(tid)
                assert info["state"] == t["state"], (tid, info, t)
                assert (info["cls"], info["priority"], info["deadline"]) == (
                    t["cls"],
                    t["priority"],
                    t["deadline"],
                ), (tid, info, t)
                assert info["agent"] == t["agent"]
                assert {o["offer_id"] for o in info["offers"]} == t["offers"]
                if t["state"] != "assigned":
                    assert (info["step"], info["waiting_in"]) == (t["step"], self.model.where(t)[0].name)
                    assert set(info["declined"]) <= self.model.declined.get(tid, set())
            for aid, state in self.model.state.items():
                assert r.agent_info(aid, self.now)["state"] == state
        # no task lost
        assert self.model.ever == self.model.ended | set(self.model.tasks)
        assert not (self.model.ended & set(self.model.tasks))

    @invariant()
    def no_task_stuck(self):
        # A waiting task either has a timer of its own that will move it
        # (escalation, sticky wait, retry of its decliners), or is open to
        # every agent its configuration allows at its step: then work
        # conservation gives it to the first of them that is free, and a
        # task pinned to an agent that left, or shunned by its decliners,
        # with nothing pending, fails here.
        for r in self.routers:
            for tid, t in self.model.tasks.items():
                if t["state"] != "queued":
                    continue
                info = r.task_info(tid)
                if info["timer_at"] is not None:
                    assert info["timer_at"] > self.now, (tid, info)
                    continue
                assert info["sticky_agent"] is None, (
                    f"{tid} waits for {info['sticky_agent']} with no deadline"
                )
                assert not info["declined"], f"{tid} is shunned by {info['declined']} with no retry"

    @invariant()
    def capacity(self):
        for aid, loads in self.model.load.items():
            for ch, n in loads.items():
                assert 0 <= n <= self.model.agents[aid].capacity.get(ch, 0)


class _Ev:
    """An event's dict seen as an object again (the model reads attributes)."""

    def __init__(self, d):
        self.__dict__.update(d)

    def __repr__(self):
        return repr(self.__dict__)


_EV_TYPES: dict[str, type] = {}


def _typed(d):
    cls = _EV_TYPES.get(d["kind"])
    if cls is None:
        cls = _EV_TYPES[d["kind"]] = type(d["kind"], (_Ev,), {})
    return cls(d)


def machine(strategy, features=False):
    name = "".join(w.capitalize() for w in strategy.split("-")) + ("Features" if features else "") + "Machine"
    return type(name, (EngineMachine,), {"STRATEGY": strategy, "FEATURES": features})


# every strategy on the basic centre; escalation/sticky/aging/EDF under the
# default strategy and the two that offer a task to several agents
TestLongestIdle = EngineMachine.TestCase
TestFewestAnswered = machine("fewest-answered").TestCase
TestLeastTalkTime = machine("least-talk-time").TestCase
TestRoundRobin = machine("round-robin").TestCase
TestTopDown = machine("top-down").TestCase
TestMostSkilled = machine("most-skilled").TestCase
TestRandom = machine("random").TestCase
TestRingAll = machine("ring-all").TestCase
TestRingProgressively = machine("ring-progressively").TestCase
TestFeatures = machine("longest-idle", features=True).TestCase
TestFeaturesRingAll = machine("ring-all", features=True).TestCase
TestFeaturesRingProgressively = machine("ring-progressively", features=True).TestCase
