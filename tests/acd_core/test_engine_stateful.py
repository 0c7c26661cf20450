"""Stateful test of the routing engine: random operations, both implementations.

One hypothesis state machine drives the compiled engine (``_engine.so`` on
``_queue.so``) and the reference (``_engine.py`` on the heapq ``queue.py``) in
lockstep with the same operations, and requires identical event streams. It
also keeps its own model of the world, built only from the events and the
configuration (not from the engine's internals), and checks the invariants of
issue 3 item 6 against it:

* a task is never offered to two agents at once, except under ring-all /
  ring-progressively;
* no agent ever holds more tasks + pending offers on a channel than its capacity;
* an agent is always offered the highest-priority, then oldest, eligible task
  (eligible: its tenant, queues, skills, a free slot on the task's channel, and
  not a task it already declined);
* work conservation: no task waits while an agent that may take it has a free
  slot (unless that agent declined it), the other half of "highest first";
* no task is lost: every task ever queued is ended (completed, abandoned,
  cancelled) or still known to the engine in the state the events say;
* agents in wrap-up, on break, disconnected or logged out get no offers.
"""

from __future__ import annotations

import math

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from acd_core.config import AgentConfig, EscalationStep, PriorityClass, QueueConfig
from tests.acd_core.conftest import load_engine

OFFERABLE = {"available", "offered", "busy"}
RING = {"ring-all", "ring-progressively"}

AGENTS = [
    AgentConfig("a0", tenants=("t1",), skills={"tech": 5}, capacity={"voice": 1}),
    AgentConfig("a1", tenants=("t1",), skills={"tech": 2}, capacity={"voice": 1, "chat": 2}),
    AgentConfig("a2", tenants=("t1",), skills={}, capacity={"voice": 1}, queues=("sales",)),
    AgentConfig("a3", tenants=("t2",), skills={"tech": 1}, capacity={"voice": 1, "chat": 1}),
    AgentConfig("a4", tenants=("t1", "t2"), skills={"tech": 4}, capacity={"voice": 1, "chat": 1}),
]
SKILL_SETS = [None, None, {"tech": 1}, {"tech": 3}, {"tech": 5}, {"lang:de": 1}]


def make_queues(strategy):
    common = {"strategy": strategy, "offer_timeout": 5.0, "max_no_answer": 2, "retry_delay": 3.0}
    return [
        QueueConfig(
            "sales",
            tenant="t1",
            classes=(PriorityClass("hi", 5, 10.0, preempt_wrapup=True), PriorityClass("lo", 0)),
            default_class="lo",
            wrapup=2.0,
            ring_step=2.0,
            **common,
        ),
        QueueConfig("tech", tenant="t1", skills={"tech": 3}, ring_step=2.0, **common),
        QueueConfig("other", tenant="t2", classes=(PriorityClass("n", 1),), ring_step=2.0, **common),
    ]


def make_feature_queues(strategy):
    """Escalation (to supervisors, then a shared pool), sticky routing, aging, EDF."""
    common = {"strategy": strategy, "offer_timeout": 5.0, "max_no_answer": 2, "retry_delay": 3.0}
    return [
        QueueConfig("pool", tenant="outsourcer", shared=True, **common),
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
            **common,
        ),
        QueueConfig("tech", tenant="t1", skills={"tech": 3}, aging=0.5, edf=True, **common),
        QueueConfig("other", tenant="t2", classes=(PriorityClass("n", 1),), sticky_wait=2.0, **common),
    ]


FEATURE_AGENTS = [*AGENTS, AgentConfig("a5", tenants=("outsourcer",), queues=("pool",))]


def target(c):
    return math.inf if c.target is None else c.target


class Model:
    """What the events say the world is."""

    check_order = True  # eligibility from queue config alone (no escalation, no sticky)

    def __init__(self, queues, agents):
        self.queues = {q.name: q for q in queues}
        self.agents = {a.id: a for a in agents}
        self.state = {a.id: "logged_out" for a in agents}
        self.load = {a.id: {} for a in agents}
        self.tasks = {}  # id -> dict(state, queue, cls, priority, arrival, channel, req, offers, agent)
        self.ended = set()
        self.ever = set()
        self.offers = {}  # offer id -> (task id, agent id)
        self.declined = {}  # task id -> set of agent ids
        self.preempted = set()  # agents just taken out of wrap-up by an emergency

    def serves(self, cfg, qname):
        q = self.queues[qname]
        if cfg.queues is None:
            return q.tenant in cfg.tenants
        return qname in cfg.queues

    def eligible(self, aid, tid):
        cfg = self.agents[aid]
        t = self.tasks[tid]
        if not self.serves(cfg, t["queue"]) or self.queues[t["queue"]].tenant not in cfg.tenants:
            return False
        if cfg.capacity.get(t["channel"], 0) <= 0:
            return False
        return all(cfg.skills.get(s, 0) >= lvl for s, lvl in t["req"].items())

    def preempts(self, tid):
        """Whether the task's class may take an agent out of wrap-up."""
        t = self.tasks[tid]
        q = self.queues[t["queue"]]
        return q.class_named(t["cls"]).preempt_wrapup

    def spare(self, aid, channel):
        return self.load[aid].get(channel, 0) < self.agents[aid].capacity.get(channel, 0)

    def can_take(self, aid, tid):
        return (
            self.state[aid] in OFFERABLE
            and self.eligible(aid, tid)
            and self.spare(aid, self.tasks[tid]["channel"])
            and aid not in self.declined.get(tid, ())
        )

    def apply(self, ev, strategy):
        kind = type(ev).__name__
        handler = getattr(self, "on_" + kind, None)
        assert handler is not None, f"unexpected event {ev!r}"
        handler(ev, strategy)

    def on_TaskQueued(self, ev, strategy):
        assert ev.task_id not in self.tasks and ev.task_id not in self.ended
        q = self.queues[ev.queue]
        req = dict(q.skills)
        for s, lvl in (self.pending_skills.get(ev.task_id) or {}).items():
            req[s] = max(req.get(s, 0), lvl)
        self.tasks[ev.task_id] = {
            "state": "queued",
            "queue": ev.queue,
            "cls": ev.cls,
            "priority": ev.priority,
            "arrival": ev.arrival,
            "channel": self.pending_channel[ev.task_id],
            "deadline": ev.arrival + target(q.class_named(ev.cls)),
            "req": req,
            "offers": set(),
            "agent": None,
            "widened": False,  # its target widened while on offer: a second offer is allowed
        }
        self.ever.add(ev.task_id)

    def on_OfferCreated(self, ev, strategy):
        t = self.tasks[ev.task_id]
        aid = ev.agent_id
        # no offers in wrap-up / break / logged out / disconnected
        assert self.state[aid] in OFFERABLE, (ev, self.state[aid])
        assert t["state"] in ("queued", "offered"), (ev, t["state"])
        if self.check_order:
            assert self.eligible(aid, ev.task_id), ev
        # highest priority, then oldest, of what this agent may take now; an
        # agent just taken out of wrap-up gets the best waiting task of a
        # pre-empting class it may take (a task it was not taken out for
        # may outrank it, e.g. re-prioritised above the emergency)
        emergency = aid in self.preempted
        self.preempted.discard(aid)
        if emergency:
            assert self.preempts(ev.task_id), ev
        if self.check_order:
            rank = (-t["priority"], t["arrival"])
            for other, o in self.tasks.items():
                if other == ev.task_id or o["state"] != "queued" or not self.can_take(aid, other):
                    continue
                if emergency and not self.preempts(other):
                    continue
                assert rank <= (-o["priority"], o["arrival"]), (ev, other, o, t)
        if t["offers"]:
            assert strategy in RING or t["widened"], f"{ev.task_id} offered to two agents under {strategy}"
            assert aid not in {self.offers[x][1] for x in t["offers"]}
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
        ch = (t or self.ended_channel[tid])["channel"]
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
        queue, cls, arrival = self.pending_task[ev.task_id]
        c = self.queues[queue].class_named(cls)
        own = {k.name: k for k in self.queues[t["queue"]].classes}.get(c.name)
        e = self.queues[t["queue"]].class_named(t["cls"])
        if own is not None and (own.priority, -target(own)) > (e.priority, -target(e)):
            t["cls"] = own.name
        t["deadline"] = min(t["deadline"], arrival + target(c))

    def on_AgentStateChanged(self, ev, strategy):
        assert self.state[ev.agent_id] == ev.old, (ev, self.state[ev.agent_id])
        self.state[ev.agent_id] = ev.new

    def on_TaskEscalated(self, ev, strategy):
        t = self.tasks[ev.task_id]
        assert t["state"] in ("queued", "offered")
        if t["state"] == "offered":
            t["widened"] = True

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
        self.model.check_order = not self.FEATURES
        self.model.pending_skills = {}
        self.model.pending_channel = {}
        self.model.pending_task = {}
        self.model.ended_channel = {}
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

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 2.5, 6.0]))
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
        self.model.pending_skills[tid] = skills
        self.model.pending_channel[tid] = channel
        arrival = self.now - back  # a restored task keeps an older arrival
        self.model.pending_task[tid] = (queue, cls, arrival)

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
    @rule(data=st.data())
    def reject(self, data):
        oid = self._pick(data, self.model.offers)
        self.run("reject", lambda m: (oid, self.now))

    @precondition(lambda self: any(t["state"] == "assigned" for t in self.model.tasks.values()))
    @rule(data=st.data())
    def complete(self, data):
        tid = self._pick(data, [k for k, t in self.model.tasks.items() if t["state"] == "assigned"])
        self.run("complete", lambda m: (tid, self.now), disposition="done")

    @precondition(lambda self: any(t["state"] != "assigned" for t in self.model.tasks.values()))
    @rule(data=st.data())
    def abandon(self, data):
        tid = self._pick(data, [k for k, t in self.model.tasks.items() if t["state"] != "assigned"])
        self.run("abandon", lambda m: (tid, self.now))

    @precondition(lambda self: self.model.tasks)
    @rule(data=st.data())
    def cancel(self, data):
        tid = self._pick(data, self.model.tasks)
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
        if not self.model.check_order:
            return
        for tid, t in self.model.tasks.items():
            if t["state"] != "queued":
                continue
            for aid in self.model.agents:
                assert not self.model.can_take(aid, tid), (
                    f"{tid} waits while {aid} ({self.model.state[aid]}) could take it"
                )

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
            for aid, state in self.model.state.items():
                assert r.agent_info(aid, self.now)["state"] == state
        # no task lost
        assert self.model.ever == self.model.ended | set(self.model.tasks)
        assert not (self.model.ended & set(self.model.tasks))

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


class RingAllMachine(EngineMachine):
    STRATEGY = "ring-all"


class MostSkilledMachine(EngineMachine):
    STRATEGY = "most-skilled"


class RingProgressiveMachine(EngineMachine):
    STRATEGY = "ring-progressively"


class FeatureMachine(EngineMachine):
    """Escalation steps, a shared pool, sticky routing, aging and EDF: the two
    engines must still agree event for event, and the safety invariants hold."""

    FEATURES = True


TestLongestIdle = EngineMachine.TestCase
TestFeatures = FeatureMachine.TestCase
TestRingAll = RingAllMachine.TestCase
TestMostSkilled = MostSkilledMachine.TestCase
TestRingProgressively = RingProgressiveMachine.TestCase
