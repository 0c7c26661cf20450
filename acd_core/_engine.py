"""The ACD routing engine (Cython pure-Python mode: this file is both the
reference and, compiled with ``_engine.pxd``, the fast path).

How a decision is made, and why it never scans
==============================================

Everything waits in *buckets*. A bucket belongs to one queue and is keyed by a
*signature*: the channel, the required skills with minimum levels, and an
optional list of allowed agents (escalation steps that target supervisors,
sticky routing). All tasks in a bucket are interchangeable for eligibility:
an agent that may take one may take any. So each bucket holds

* ``tasks``: an indexed heap of its waiting tasks in service order, keyed
  ``(aging·arrival − priority, arrival or deadline)``. With the same aging for
  the whole queue the effective priority at time t is
  ``priority + aging·(t − arrival)``, so that key never has to change while t
  advances, and cross-queue comparison subtracts ``aging·now`` from k1;
* ``avail``: an indexed heap of the eligible agents that can take one more
  task on the bucket's channel now, keyed by the queue's strategy;
* ``wrap``: the eligible agents in wrap-up, by wrap-up end (for emergency
  pre-emption), kept only in queues that have a pre-empting class;
* ``pre``: the waiting tasks of pre-empting classes (same keys as ``tasks``),
  so that an agent entering wrap-up finds the best emergency it may take
  without looking at the others;
* ``ringing``: ring-all tasks on offer, which an agent freeing up joins.

An agent belongs to (has a ``_Member`` in) every bucket it is eligible for.
A task arriving looks at the head of one agent heap: O(log n). An agent
freeing up looks at the heads of the task heaps of its own buckets and takes
the best: O(buckets of that agent), independent of how many tasks wait. The
invariant that makes this correct: *a task never waits in a bucket whose
``avail`` heap is non-empty* (except for agents that declined that task), so
the head of each bucket is the best task there and nothing else needs a look.

Time is an argument. Operations return lists of events; the caller arms one
timer for ``next_deadline()`` and calls ``handle_timer(now)``. Timers are
processed at their own deadlines, in deadline order, so results do not
depend on how late the caller's timer fired.

Task states: queued (in a bucket) → offered (one offer, or several under
ring-all/ring-progressively or after its target widened while on offer; out
of the bucket) → assigned (in an agent's
hands) → ended (completed, abandoned, cancelled: forgotten by the engine).
A failed offer puts the task back in its bucket with its old key.

Agent presence: logged_out, ready, wrapup, break, disconnected. The public
state reports ready as available / offered / busy from what the agent holds.
"""

import math
import random

import cython

from acd_core import erlang
from acd_core.config import STRATEGIES, AgentConfig, QueueConfig

if not cython.compiled:
    from acd_core.queue import IndexedHeap

INF = math.inf
NAN = math.nan

# agent presence; also the index of the public state name
P_LOGGED_OUT = 0
P_READY = 1  # public: available / offered / busy
P_OFFERED = 2
P_BUSY = 3
P_WRAPUP = 4
P_BREAK = 5
P_DISCONNECTED = 6
STATE_NAMES = ("logged_out", "available", "offered", "busy", "wrapup", "break", "disconnected")

T_NEW = 0
T_QUEUED = 1
T_OFFERED = 2
T_ASSIGNED = 3
T_ENDED = 4
TASK_STATE_NAMES = ("new", "queued", "offered", "assigned", "ended")

S_LONGEST_IDLE = 0
S_FEWEST_ANSWERED = 1
S_LEAST_TALK = 2
S_ROUND_ROBIN = 3
S_TOP_DOWN = 4
S_MOST_SKILLED = 5
S_RANDOM = 6
S_RING_ALL = 7
S_RING_PROGRESSIVE = 8

K_OFFER = 0
K_STEP = 1
K_STICKY = 2
K_RING = 3
K_WRAPUP = 4
K_GRACE = 5
K_RETRY = 6

# which tasks of a bucket an agent is given (Router._best_task)
W_WAITING = 0  # waiting tasks
W_PRE = 1  # waiting tasks of pre-empting classes (an agent in wrap-up)
W_RINGING = 2  # ring-all tasks on offer to others, which a freed agent may join

# statistics counters (per queue × class cell, since start and per window slot)
C_OFFERED = 0
C_ANSWERED = 1
C_ANSWERED_SL = 2  # answered within the class target (or the queue's sl_threshold)
C_ABANDONED = 3
C_ABANDONED_SL = 4  # abandoned within the same threshold (for the SL2 variant)
C_WAIT_SUM = 5  # total wait of answered tasks
C_WAITED = 6  # answered tasks that waited at all
C_HANDLED = 7  # completed
C_HANDLE_SUM = 8  # talk + wrap-up of completed tasks
C_CANCELLED = 9
C_MERGED = 10
C_ABANDON_WAIT_SUM = 11
C_STAFFED_S = 12  # queue cell only: agent-seconds staffed (ready or wrap-up)
NCOUNT = 13

MAX_CHANNELS = 16
MAX_SLOTS = 60  # resolution limit of the statistics window


# ---------------------------------------------------------------------------
# events: small immutable records (read-only attributes when compiled)
# ---------------------------------------------------------------------------


class Event:
    """Base of all events; ``at`` is the engine time the change happened."""

    _fields = ("at",)

    def __init__(self, at):
        self.at = at

    @property
    def kind(self):
        return type(self).__name__

    def as_dict(self):
        """``{"kind": ClassName, field: value, ...}`` for persistence and feeds."""
        d = {"kind": type(self).__name__}
        for name in self._fields:
            d[name] = getattr(self, name)
        return d

    def __eq__(self, other):
        return type(self) is type(other) and self.as_dict() == other.as_dict()

    def __hash__(self):
        return hash(tuple(self.as_dict().items()))

    def __repr__(self):
        args = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{type(self).__name__}({args})"


class TaskQueued(Event):
    """A task entered the engine (enqueue, or merged alerts excepted) and waits."""

    _fields = ("at", "task_id", "queue", "cls", "priority", "arrival")

    def __init__(self, at, task_id, queue, cls, priority, arrival):
        self.at = at
        self.task_id = task_id
        self.queue = queue
        self.cls = cls
        self.priority = priority
        self.arrival = arrival


class OfferCreated(Event):
    """The engine offers a task to an agent until ``expires_at``."""

    _fields = ("at", "offer_id", "task_id", "agent_id", "expires_at")

    def __init__(self, at, offer_id, task_id, agent_id, expires_at):
        self.at = at
        self.offer_id = offer_id
        self.task_id = task_id
        self.agent_id = agent_id
        self.expires_at = expires_at


class OfferWithdrawn(Event):
    """An offer ended without being accepted.

    ``reason``: accepted_elsewhere, timeout, rejected, cancelled (the task
    ended), agent_gone (break, logout, disconnect, removal).
    """

    _fields = ("at", "offer_id", "task_id", "agent_id", "reason")

    def __init__(self, at, offer_id, task_id, agent_id, reason):
        self.at = at
        self.offer_id = offer_id
        self.task_id = task_id
        self.agent_id = agent_id
        self.reason = reason


class TaskAssigned(Event):
    """An agent accepted an offer; ``wait`` is from the original arrival."""

    _fields = ("at", "task_id", "agent_id", "offer_id", "wait")

    def __init__(self, at, task_id, agent_id, offer_id, wait):
        self.at = at
        self.task_id = task_id
        self.agent_id = agent_id
        self.offer_id = offer_id
        self.wait = wait


class TaskRestored(Event):
    """``restore_assigned`` put a task back into an agent's hands."""

    _fields = ("at", "task_id", "agent_id")

    def __init__(self, at, task_id, agent_id):
        self.at = at
        self.task_id = task_id
        self.agent_id = agent_id


class TaskEscalated(Event):
    """The task moved to another routing target.

    ``reason``: timeout (escalation step ``step`` begins; ``queue`` is where it
    now waits) or sticky_expired (its preferred agent did not take it in time).
    """

    _fields = ("at", "task_id", "step", "queue", "reason")

    def __init__(self, at, task_id, step, queue, reason):
        self.at = at
        self.task_id = task_id
        self.step = step
        self.queue = queue
        self.reason = reason


class TaskMerged(Event):
    """Alert ``task_id`` carried the incident key of active task ``into``,
    which took its data and (if higher) its priority; ``task_id`` is not kept."""

    _fields = ("at", "task_id", "into", "incident_key", "priority")

    def __init__(self, at, task_id, into, incident_key, priority):
        self.at = at
        self.task_id = task_id
        self.into = into
        self.incident_key = incident_key
        self.priority = priority


class TaskReprioritised(Event):
    _fields = ("at", "task_id", "cls", "priority")

    def __init__(self, at, task_id, cls, priority):
        self.at = at
        self.task_id = task_id
        self.cls = cls
        self.priority = priority


class TaskAbandoned(Event):
    _fields = ("at", "task_id", "wait")

    def __init__(self, at, task_id, wait):
        self.at = at
        self.task_id = task_id
        self.wait = wait


class TaskCancelled(Event):
    _fields = ("at", "task_id", "reason")

    def __init__(self, at, task_id, reason):
        self.at = at
        self.task_id = task_id
        self.reason = reason


class TaskCompleted(Event):
    """``handle_time`` is the talk time (assignment to completion)."""

    _fields = ("at", "task_id", "agent_id", "disposition", "handle_time")

    def __init__(self, at, task_id, agent_id, disposition, handle_time):
        self.at = at
        self.task_id = task_id
        self.agent_id = agent_id
        self.disposition = disposition
        self.handle_time = handle_time


class TaskRequeued(Event):
    """A task in an agent's hands went back to waiting, keeping its arrival.

    ``reason``: agent_logout, agent_lost (disconnect grace expired), agent_removed.
    """

    _fields = ("at", "task_id", "agent_id", "reason")

    def __init__(self, at, task_id, agent_id, reason):
        self.at = at
        self.task_id = task_id
        self.agent_id = agent_id
        self.reason = reason


class AgentStateChanged(Event):
    """Public state ``old`` → ``new`` (names in ``STATE_NAMES``)."""

    _fields = ("at", "agent_id", "old", "new", "reason")

    def __init__(self, at, agent_id, old, new, reason):
        self.at = at
        self.agent_id = agent_id
        self.old = old
        self.new = new
        self.reason = reason


class WrapupEnded(Event):
    """``reason``: timeout, agent (it said it was ready, or accepted an offer made
    before its wrap-up began), preempted (an emergency took it)."""

    _fields = ("at", "agent_id", "reason")

    def __init__(self, at, agent_id, reason):
        self.at = at
        self.agent_id = agent_id
        self.reason = reason


# Factories for the events made on every cycle: ``Cls.__new__`` skips the
# argument parsing of ``__init__`` (compiled, a direct tp_new and C stores).


def _ev_queued(at, task_id, queue, cls, priority, arrival):
    ev = TaskQueued.__new__(TaskQueued)
    ev.at = at
    ev.task_id = task_id
    ev.queue = queue
    ev.cls = cls
    ev.priority = priority
    ev.arrival = arrival
    return ev


def _ev_offer(at, offer_id, task_id, agent_id, expires_at):
    ev = OfferCreated.__new__(OfferCreated)
    ev.at = at
    ev.offer_id = offer_id
    ev.task_id = task_id
    ev.agent_id = agent_id
    ev.expires_at = expires_at
    return ev


def _ev_withdrawn(at, offer_id, task_id, agent_id, reason):
    ev = OfferWithdrawn.__new__(OfferWithdrawn)
    ev.at = at
    ev.offer_id = offer_id
    ev.task_id = task_id
    ev.agent_id = agent_id
    ev.reason = reason
    return ev


def _ev_assigned(at, task_id, agent_id, offer_id, wait):
    ev = TaskAssigned.__new__(TaskAssigned)
    ev.at = at
    ev.task_id = task_id
    ev.agent_id = agent_id
    ev.offer_id = offer_id
    ev.wait = wait
    return ev


def _ev_completed(at, task_id, agent_id, disposition, handle_time):
    ev = TaskCompleted.__new__(TaskCompleted)
    ev.at = at
    ev.task_id = task_id
    ev.agent_id = agent_id
    ev.disposition = disposition
    ev.handle_time = handle_time
    return ev


def _ev_state(at, agent_id, old, new, reason):
    ev = AgentStateChanged.__new__(AgentStateChanged)
    ev.at = at
    ev.agent_id = agent_id
    ev.old = old
    ev.new = new
    ev.reason = reason
    return ev


# ---------------------------------------------------------------------------
# the task (public: the caller builds it; the engine fills the rest)
# ---------------------------------------------------------------------------


class Task:
    """A unit of work: a crash alert, an SOS, a service call.

    The caller sets ``id`` (any hashable, e.g. the gateway's session id),
    ``queue`` and optionally ``cls`` (priority class name; default: the queue's
    default class), ``priority`` (default: the class's), ``skills`` required on
    top of the queue's (``{name: min level}``, e.g. a language),
    ``channel``, ``tenant`` (default: the queue's), ``arrival`` (default: the
    enqueue time; a restored task passes its original one and keeps its place),
    ``deadline`` (default: arrival + the class target), ``vehicle`` and
    ``incident_key`` (sticky routing and merging), ``attributes`` (opaque data,
    merged when alerts merge).

    After ``enqueue`` the engine owns the object; read its state through
    ``Router.task_info``.
    """

    def __init__(
        self,
        id,
        queue,
        cls=None,
        priority=None,
        skills=None,
        channel="voice",
        tenant=None,
        arrival=None,
        deadline=None,
        vehicle=None,
        incident_key=None,
        attributes=None,
    ):
        self.id = id
        self.queue = queue
        self.cls = cls
        self.priority = NAN if priority is None else float(priority)
        self.skills = skills
        self.channel = channel
        self.tenant = tenant
        self.arrival = NAN if arrival is None else float(arrival)
        self.deadline = NAN if deadline is None else float(deadline)
        self.vehicle = vehicle
        self.incident_key = incident_key
        self.attributes = attributes
        self.state = T_NEW
        self._q = None
        self._c = None
        self._cell = None
        self._loc = None
        self._bucket = None
        self._handle = -1
        self._pre_handle = -1
        self._ring_handle = -1
        self._wait_handle = -1
        self._step = 0
        self._step_timer = None
        self._sticky_timer = None
        self._ring_timer = None
        self._sticky = None
        self._offers = None
        self._agent = None
        self._declined = None
        self._req = ()
        self._ch = 0
        self._seq = 0
        self._k1 = 0.0
        self._k2 = 0.0
        self._assigned_at = 0.0
        self._answered = False

    def __repr__(self):
        return f"Task({self.id!r}, queue={self.queue!r}, state={TASK_STATE_NAMES[self.state]})"


# ---------------------------------------------------------------------------
# internal records
# ---------------------------------------------------------------------------


class _Timer:
    def __init__(self, kind, obj, deadline):
        self.kind = kind
        self.obj = obj
        self.deadline = deadline
        self.handle = -1


class _Offer:
    def __init__(self, offer_id, task, agent, expires_at):
        self.id = offer_id
        self.task = task
        self.agent = agent
        self.expires_at = expires_at
        self.timer = None


class _Class:
    def __init__(self, index, name, priority, target, preempt, threshold):
        self.index = index
        self.name = name
        self.priority = priority
        self.target = target  # seconds; INF when none
        self.preempt = preempt
        self.threshold = threshold  # T of "answered within T"


class _Cell:
    """Counters since start plus a ring of window slots; also the waiting set
    (by arrival) that gives depth and longest current wait."""

    def __init__(self, slot_len, nslots):
        if not cython.compiled:  # compiled, these are zero-filled C arrays
            self.totals = [0.0] * NCOUNT
            self.ring = [0.0] * (NCOUNT * MAX_SLOTS)
        self.slot_len = slot_len
        self.nslots = nslots
        self.slot = -(2**62)
        self.waiting = IndexedHeap()

    def base(self, now):
        """Offset in ``ring`` of the slot for time ``now`` (advancing the ring)."""
        s = int(now / self.slot_len) if now >= 0 else math.floor(now / self.slot_len)
        if s > self.slot:
            self._advance(s)
        elif self.slot - s >= self.nslots:
            s = self.slot  # older than the window: count it in the current slot
        return (s % self.nslots) * NCOUNT

    def add(self, now, idx, value):
        base = self.base(now)
        self.totals[idx] += value
        self.ring[base + idx] += value

    def answered(self, now, wait, within):
        base = self.base(now)
        self.totals[C_ANSWERED] += 1.0
        self.ring[base + C_ANSWERED] += 1.0
        self.totals[C_WAIT_SUM] += wait
        self.ring[base + C_WAIT_SUM] += wait
        if wait > 0.0:
            self.totals[C_WAITED] += 1.0
            self.ring[base + C_WAITED] += 1.0
        if within:
            self.totals[C_ANSWERED_SL] += 1.0
            self.ring[base + C_ANSWERED_SL] += 1.0

    def handled(self, now, handle):
        base = self.base(now)
        self.totals[C_HANDLED] += 1.0
        self.ring[base + C_HANDLED] += 1.0
        self.totals[C_HANDLE_SUM] += handle
        self.ring[base + C_HANDLE_SUM] += handle

    def since_start(self):
        return [self.totals[i] for i in range(NCOUNT)]

    def _advance(self, s):
        n = self.nslots
        if s - self.slot >= n:
            for i in range(n * NCOUNT):
                self.ring[i] = 0.0
        else:
            for k in range(self.slot + 1, s + 1):
                base = (k % n) * NCOUNT
                for i in range(NCOUNT):
                    self.ring[base + i] = 0.0
        self.slot = s

    def window(self, now):
        s = math.floor(now / self.slot_len)
        if s > self.slot:
            self._advance(s)
        out = [0.0] * NCOUNT
        for k in range(self.nslots):
            base = k * NCOUNT
            for i in range(NCOUNT):
                out[i] += self.ring[base + i]
        return out


class _Queue:
    def __init__(self, config, index, slot_len, nslots):
        self.index = index
        self.buckets = {}
        self.members = {}  # agent -> None: a set that iterates in join order (determinism)
        self.staffed = 0
        self.staffed_t = 0.0
        self.qcell = _Cell(slot_len, nslots)
        self.cells = []
        self.classes = {}
        self.class_list = []
        self.apply(config, slot_len, nslots)

    def apply(self, config, slot_len, nslots):
        self.config = config
        self.name = config.name
        self.tenant = config.tenant
        self.shared = config.shared
        self.strategy = STRATEGIES.index(config.strategy)
        self.aging = config.aging
        self.edf = config.edf
        self.steps = config.steps
        self.offer_timeout = config.offer_timeout
        self.wrapup = config.wrapup
        self.max_no_answer = config.max_no_answer
        self.sticky_wait = config.sticky_wait
        self.sticky_window = config.sticky_window
        self.ring_step = config.ring_step
        self.retry_delay = config.retry_delay
        self.agent_order = {a: i for i, a in enumerate(config.agent_order)}
        self.preempt = any(c.preempt_wrapup for c in config.classes)
        old = self.classes
        self.classes = {}
        self.class_list = []
        for c in config.classes:
            prev = old.get(c.name)
            index = prev.index if prev is not None else len(self.cells)
            if prev is None:
                self.cells.append(_Cell(slot_len, nslots))
            k = _Class(
                index,
                c.name,
                float(c.priority),
                INF if c.target is None else float(c.target),
                c.preempt_wrapup,
                config.sl_threshold if c.target is None else c.target,
            )
            self.classes[c.name] = k
            self.class_list.append(k)
        self.default = self.classes[config.default_class or config.classes[0].name]
        self.req = ()  # set by the router, which owns the skill ids


class _Bucket:
    def __init__(self, q, ch, req, agents):
        self.q = q
        self.ch = ch
        self.req = req  # ((skill id, min level), ...)
        self.agents = agents  # frozenset of agent ids, or None
        self.tasks = IndexedHeap()
        self.pre = IndexedHeap()  # the waiting tasks of pre-empting classes, same keys
        self.ringing = IndexedHeap()  # ring-all: its tasks on offer (a freed agent may join)
        self.avail = IndexedHeap()
        self.wrap = IndexedHeap()
        self.members = []


class _Member:
    def __init__(self, agent, bucket, order, score):
        self.agent = agent
        self.bucket = bucket
        self.avail = -1
        self.wrap = -1
        self.k1 = 0.0  # the agent's key here now
        self.k2 = 0.0
        self.s1 = 0.0  # the key its ``avail`` entry has in the heap (<= k1, k2)
        self.s2 = 0.0
        self.order = order
        self.score = score


class _Agent:
    def __init__(self, config, index, now):
        self.index = index
        self.presence = P_LOGGED_OUT
        self.pstate = P_LOGGED_OUT
        self.reason = ""
        self.state_since = now
        if not cython.compiled:  # compiled: a zero-filled C array
            self.time_in = [0.0] * len(STATE_NAMES)
        self.members = []
        self.queues = set()
        self.tasks = {}
        self.offers = {}
        # literal lists: compiled, these are C arrays of MAX_CHANNELS ints
        self.load = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        self.cap = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        self.total_load = 0
        self.offered = 0
        self.answered = 0
        self.no_answer = 0
        self.handled = 0
        self.talk_time = 0.0
        self.idle_since = now
        self.last_offer = 0
        self.wrap_until = 0.0
        self.wrap_timer = None
        self.grace_timer = None
        self.config = config
        self.id = config.id
        self.wrapup = -1.0
        self.nch = 0  # channel ids below this may have capacity
        self.wrap_entries = 0  # entries in wrap heaps (kept exact, unlike avail entries)
        self.answer_keyed = False  # member of a fewest-answered queue (accept must re-key)
        self.skills = {}
        self.tenants = frozenset()


# ---------------------------------------------------------------------------
# the router
# ---------------------------------------------------------------------------


class Router:
    """The automatic call distributor: queues, agents, tasks, offers, timers.

    Not thread-safe and never blocking: one owner calls it (ARCHITECTURE.md
    rule 4). Every mutating method takes ``now`` (seconds, any monotonic
    origin) and returns the list of events it caused, in order. After any call,
    re-arm your single timer for :meth:`next_deadline` and call
    :meth:`handle_timer` when it fires.

    ``window``/``slots``: the statistics' sliding window (seconds) and its
    resolution; ``seed``: for the random strategy; ``start``: time zero of the
    since-start statistics.
    """

    def __init__(self, window=900.0, slots=15, seed=0, start=0.0):
        if not window > 0 or not 1 <= slots <= MAX_SLOTS:
            raise ValueError(f"window must be > 0 and slots in 1..{MAX_SLOTS}")
        self._queues = {}
        self._agents = {}
        self._tasks = {}
        self._offers = {}
        self._incidents = {}
        self._sticky = {}
        self._listed = {}
        self._timers = IndexedHeap()
        self._skills = {}
        self._channels = {}
        self._channel_names = []
        self._next_offer = 1
        self._seq = 0
        self._agent_seq = 0
        self._rng = random.Random(seed)
        self._window = window
        self._slots = slots
        self._slot_len = window / slots
        self._start = start
        self._sticky_max = 0.0
        self._sticky_on = False
        self._npre = 0  # waiting tasks of pre-empting classes (in some bucket's ``pre``)
        self._nringing = 0  # ring-all tasks on offer (in some bucket's ``ringing``)

    # -- registries ---------------------------------------------------------

    def _skill_id(self, name):
        sid = self._skills.get(name)
        if sid is None:
            sid = len(self._skills)
            self._skills[name] = sid
        return sid

    def _channel_id(self, name):
        ch = self._channels.get(name)
        if ch is None:
            if len(self._channel_names) >= MAX_CHANNELS:
                raise ValueError(f"at most {MAX_CHANNELS} channels")
            ch = len(self._channel_names)
            self._channels[name] = ch
            self._channel_names.append(name)
        return ch

    def _req_of(self, skills):
        return tuple(sorted((self._skill_id(n), lvl) for n, lvl in skills.items()))

    # -- queues -------------------------------------------------------------

    def add_queue(self, config: QueueConfig):
        """Register a queue. Escalation targets must already exist."""
        if config.name in self._queues:
            raise ValueError(f"queue {config.name!r} exists (use update_queue)")
        self._check_steps(config)
        q = _Queue(config, len(self._queues), self._slot_len, self._slots)
        q.req = self._req_of(config.skills)
        self._queues[config.name] = q
        self._note_sticky(q)
        for agent in self._agents.values():
            if self._serves(agent, q):
                self._join(agent, q, self._start)
        return []

    def _check_steps(self, config):
        for step in config.steps:
            if step.queue is None or step.queue == config.name:
                continue
            target = self._queues.get(step.queue)
            if target is None:
                raise KeyError(f"queue {config.name!r}: escalation target {step.queue!r} is unknown")
            if not target.shared and target.tenant != config.tenant:
                raise ValueError(
                    f"queue {config.name!r}: escalation target {step.queue!r} belongs to another "
                    "tenant and is not a shared pool"
                )

    def _note_sticky(self, q):
        if q.sticky_wait > 0:
            self._sticky_on = True
            self._sticky_max = max(self._sticky_max, q.sticky_window)

    def update_queue(self, config: QueueConfig, now):
        """Apply a new configuration to a queue at once, keeping its tasks.

        Waiting tasks are re-filed under the new rules with their arrival (so
        their place); tasks on offer or in an agent's hands are not disturbed.
        A task whose class disappeared falls back to the default class.
        """
        q = self._queues[config.name]
        self._check_steps(config)
        events = []
        moved = [t for t in self._tasks.values() if t.state == T_QUEUED and (t._q is q or t._loc is q)]
        offered = [t for t in self._tasks.values() if t.state == T_OFFERED and (t._q is q or t._loc is q)]
        for t in moved:
            self._unfile(t)
        for t in offered:
            self._unring(t)
        for b in list(q.buckets.values()):
            self._drop_bucket(b)
        old_members = list(q.members)
        for agent in old_members:
            self._leave(agent, q, now)
        q.apply(config, self._slot_len, self._slots)
        q.req = self._req_of(config.skills)
        self._note_sticky(q)
        for t in self._tasks.values():
            if t._q is q:
                # the class's priority moved (or the class fell back to the
                # default): the task moves with it, keeping any explicit offset
                c = q.classes.get(t._c.name)
                if c is None:
                    c = q.default
                t.priority += c.priority - t._c.priority
                if t.deadline == t.arrival + t._c.target:
                    t.deadline = t.arrival + c.target
                t._c = c
                t.cls = c.name
                t._req = self._base_req(q, t)
                if t._step >= len(q.steps):
                    t._step = max(0, len(q.steps) - 1)
        for agent in self._agents.values():
            if self._serves(agent, q):
                self._join(agent, q, now)
        for t in offered:
            # its offers stand; the next ring (ring-progressively) or a join
            # (ring-all) goes by the new rules
            t._bucket = self._target(t)
            self._keys(t)
            if t._bucket.q.strategy == S_RING_ALL:
                self._ring_add(t)
        for t in moved:
            self._file(t, now)
        for t in moved:
            if t.state == T_QUEUED:
                self._dispatch_task(t, now, events)
        return events

    def remove_queue(self, name):
        """Forget a queue that no task and no escalation step refers to."""
        q = self._queues[name]
        for t in self._tasks.values():
            if t._q is q or t._loc is q:
                raise ValueError(f"queue {name!r} still has tasks")
        for other in self._queues.values():
            if other is not q and any(s.queue == name for s in other.steps):
                raise ValueError(f"queue {name!r} is an escalation target of {other.name!r}")
        for b in list(q.buckets.values()):
            self._drop_bucket(b)
        for agent in list(q.members):
            self._leave(agent, q, self._start)
        del self._queues[name]
        return []

    def _drop_bucket(self, b):
        for m in b.members:
            m.agent.members.remove(m)
            if m.wrap >= 0:
                m.wrap = -1
                m.agent.wrap_entries -= 1
        b.members = []
        if b.agents is not None:
            for aid in b.agents:
                lst = self._listed.get(aid)
                if lst is not None and b in lst:
                    lst.remove(b)
        del b.q.buckets[(b.ch, b.req, b.agents)]

    # -- agents: configuration ----------------------------------------------

    def add_agent(self, config: AgentConfig, now=0.0):
        """Register an agent (logged out)."""
        if config.id in self._agents:
            raise ValueError(f"agent {config.id!r} exists (use update_agent)")
        agent = _Agent(config, self._agent_seq, now)
        self._agent_seq += 1
        self._agents[config.id] = agent
        self._apply_agent(agent, config, now)
        return []

    def update_agent(self, config: AgentConfig, now):
        """New skills/tenants/capacity/queues for an agent, keeping its state
        and the tasks in its hands (a capacity cut takes effect as tasks end)."""
        agent = self._agents[config.id]
        events = []
        for m in list(agent.members):
            self._remove_member(m)
        for q in list(agent.queues):
            self._leave(agent, q, now)
        self._apply_agent(agent, config, now)
        self._touch(agent, now, "config", events)
        self._dispatch_agent(agent, now, events)
        return events

    def remove_agent(self, agent_id, now):
        """Log the agent out (re-queuing its tasks) and forget it."""
        agent = self._agents[agent_id]
        events = []
        if agent.presence != P_LOGGED_OUT:
            self._logout(agent, now, "removed", "agent_removed", events)
        for m in list(agent.members):
            self._remove_member(m)
        for q in list(agent.queues):
            self._leave(agent, q, now)
        self._listed.pop(agent_id, None)
        del self._agents[agent_id]
        return events

    def _apply_agent(self, agent, config, now):
        agent.config = config
        agent.wrapup = -1.0 if config.wrapup is None else config.wrapup
        agent.skills = {self._skill_id(n): lvl for n, lvl in config.skills.items()}
        agent.tenants = frozenset(config.tenants)
        for i in range(MAX_CHANNELS):
            agent.cap[i] = 0
        agent.nch = 0
        for name, n in config.capacity.items():
            ch = self._channel_id(name)
            agent.cap[ch] = n
            if n > 0 and ch + 1 > agent.nch:
                agent.nch = ch + 1
        for q in self._queues.values():
            if self._serves(agent, q):
                self._join(agent, q, now)
        for b in self._listed.get(agent.id, ()):
            self._add_member(agent, b)

    def _serves(self, agent, q):
        cfg = agent.config
        if cfg.queues is None:
            return not q.shared and q.tenant in agent.tenants
        return q.name in cfg.queues

    def _join(self, agent, q, now):
        agent.queues.add(q)
        q.members[agent] = None
        if agent.presence == P_READY or agent.presence == P_WRAPUP:
            self._staff(q, now, 1)
        for b in q.buckets.values():
            if b.agents is None and self._eligible(agent, b):
                self._add_member(agent, b)

    def _leave(self, agent, q, now):
        if agent.presence == P_READY or agent.presence == P_WRAPUP:
            self._staff(q, now, -1)
        agent.queues.discard(q)
        q.members.pop(agent, None)

    def _staff(self, q, now, delta):
        if now > q.staffed_t:
            q.qcell.add(now, C_STAFFED_S, q.staffed * (now - q.staffed_t))
            q.staffed_t = now
        q.staffed += delta

    def _eligible(self, agent, b):
        q = b.q
        if b.agents is not None:
            if agent.id not in b.agents:
                return False
        elif q not in agent.queues:
            return False
        if not q.shared and q.tenant not in agent.tenants:
            return False
        if agent.cap[b.ch] <= 0:
            return False
        for sid, lvl in b.req:  # noqa: SIM110 (all() over a generator is a closure, slow compiled)
            if agent.skills.get(sid, 0) < lvl:
                return False
        return True

    def _add_member(self, agent, b):
        if not self._eligible(agent, b):
            return
        q = b.q
        order = q.agent_order.get(agent.id, len(q.agent_order) + agent.index)
        score = 0.0
        for sid, _lvl in b.req:
            score += agent.skills.get(sid, 0)
        m = _Member(agent, b, order, score)
        if q.strategy == S_FEWEST_ANSWERED:
            agent.answer_keyed = True
        agent.members.append(m)
        b.members.append(m)
        self._place(m)

    def _remove_member(self, m):
        b = m.bucket
        if m.avail >= 0:
            b.avail.remove(m.avail)
            m.avail = -1
        if m.wrap >= 0:
            b.wrap.remove(m.wrap)
            m.wrap = -1
            m.agent.wrap_entries -= 1
        m.agent.members.remove(m)
        b.members.remove(m)

    # -- buckets ------------------------------------------------------------

    def _bucket(self, q, ch, req, agents):
        sig = (ch, req, agents)
        b = q.buckets.get(sig)
        if b is None:
            b = _Bucket(q, ch, req, agents)
            q.buckets[sig] = b
            if agents is None:
                for agent in q.members:
                    self._add_member(agent, b)
            else:
                for aid in agents:
                    self._listed.setdefault(aid, []).append(b)
                    agent = self._agents.get(aid)
                    if agent is not None:
                        self._add_member(agent, b)
        return b

    def _base_req(self, q, t):
        skills = dict(q.config.skills)
        if t.skills:
            for n, lvl in t.skills.items():
                if lvl > skills.get(n, 0):
                    skills[n] = lvl
        return self._req_of(skills)

    def _target(self, t):
        """The bucket a task belongs in now: its step's target, narrowed to its
        sticky agent while the sticky wait lasts."""
        q = t._q
        loc = q
        req = t._req
        agents = None
        if q.steps:
            step = q.steps[t._step]
            if step.queue is not None:
                loc = self._queues[step.queue]
            if step.skills is not None:
                req = self._req_of(step.skills)
            if step.agents is not None:
                agents = frozenset(step.agents)
        if t._sticky is not None:
            agents = frozenset((t._sticky.id,))
        t._loc = loc
        return self._bucket(loc, t._ch, req, agents)

    def _keys(self, t):
        loc = t._loc
        t._k1 = loc.aging * t.arrival - t.priority
        t._k2 = t.deadline if loc.edf else t.arrival

    def _file(self, t, now):
        """Put a task (no longer on offer, not assigned) into its target bucket."""
        if t._ring_handle >= 0:
            self._unring(t)
        b = self._target(t)
        t._bucket = b
        self._keys(t)
        t._handle = b.tasks.push(t._k1, t._k2, t)
        if t._c.preempt:
            self._pre_sync(t)
        t.state = T_QUEUED

    def _pre_sync(self, t):
        """Keep a waiting task's entry in its bucket's ``pre`` heap in step
        with its class and key: there iff its class may pre-empt wrap-up (and
        the queue it waits in has such a class, so keeps wrap-up heaps)."""
        b = t._bucket
        if t._c.preempt and b.q.preempt:
            if t._pre_handle >= 0:
                b.pre.update(t._pre_handle, t._k1, t._k2)
            else:
                t._pre_handle = b.pre.push(t._k1, t._k2, t)
                self._npre += 1
        elif t._pre_handle >= 0:
            b.pre.remove(t._pre_handle)
            t._pre_handle = -1
            self._npre -= 1

    def _unfile(self, t):
        if t._handle >= 0:
            t._bucket.tasks.remove(t._handle)
            t._handle = -1
        if t._pre_handle >= 0:
            t._bucket.pre.remove(t._pre_handle)
            t._pre_handle = -1
            self._npre -= 1

    # -- agent heaps ---------------------------------------------------------

    def _agent_key(self, m):
        agent = m.agent
        s = m.bucket.q.strategy
        if s in (S_LONGEST_IDLE, S_RING_ALL, S_RING_PROGRESSIVE):
            m.k1 = agent.total_load
            m.k2 = agent.idle_since
        elif s == S_FEWEST_ANSWERED:
            m.k1 = agent.answered
            m.k2 = agent.idle_since
        elif s == S_LEAST_TALK:
            m.k1 = agent.talk_time
            m.k2 = agent.idle_since
        elif s == S_ROUND_ROBIN:
            m.k1 = agent.last_offer
            m.k2 = agent.index
        elif s == S_TOP_DOWN:
            m.k1 = m.order
            m.k2 = 0.0
        elif s == S_MOST_SKILLED:
            m.k1 = -m.score
            m.k2 = agent.idle_since
        elif m.avail < 0:  # random: a fresh draw each time the agent becomes available
            m.k1 = self._rng.random()
            m.k2 = agent.index

    def _place(self, m):
        """Bring a membership's entries in its bucket's agent heaps up to date.

        An agent that can take one more task on the bucket's channel is put in
        ``avail`` (or re-keyed). One that cannot is left where it is: removal
        is lazy (``_valid`` is checked when an entry surfaces at the top), so an
        agent taking a call costs no heap operation in the dozen buckets it
        belongs to, only in those actually consulted before it is free again.
        """
        agent = m.agent
        b = m.bucket
        spare = agent.load[b.ch] < agent.cap[b.ch]
        if spare and agent.presence == P_READY:
            self._agent_key(m)
            if m.avail < 0:
                m.avail = b.avail.push(m.k1, m.k2, m)
                m.s1 = m.k1
                m.s2 = m.k2
            elif m.k1 < m.s1 or (m.k1 == m.s1 and m.k2 < m.s2):
                # a key that falls must move now; one that rises (the usual
                # case: an agent that just finished is the least idle) is
                # fixed by _clean_top if and when the entry reaches the top
                b.avail.update(m.avail, m.k1, m.k2)
                m.s1 = m.k1
                m.s2 = m.k2
        if spare and agent.presence == P_WRAPUP and b.q.preempt:
            if m.wrap < 0:
                m.wrap = b.wrap.push(agent.wrap_until, agent.index, m)
                agent.wrap_entries += 1
            else:
                b.wrap.update(m.wrap, agent.wrap_until, agent.index)
        elif m.wrap >= 0:
            b.wrap.remove(m.wrap)
            m.wrap = -1
            agent.wrap_entries -= 1

    def _pstate(self, agent):
        p = agent.presence
        if p == P_READY:
            if agent.tasks:
                return P_BUSY
            if agent.offers:
                return P_OFFERED
        return p

    def _touch(self, agent, now, reason, events):
        """After any change to an agent: re-place it in its heaps, account the
        time in its previous state and report a change of public state
        (against ``agent.pstate``, the last state reported, so that nested
        changes report each transition once)."""
        if agent.presence == P_WRAPUP or agent.wrap_entries > 0 or self._has_room(agent):
            for m in agent.members:
                self._place(m)
        # else: no channel has room, so every entry is stale and removal is lazy
        self._report(agent, now, reason, events)

    def _has_room(self, agent):
        if agent.presence != P_READY:
            return False
        for ch in range(agent.nch):  # noqa: SIM110 (a loop over a C array, not a generator)
            if agent.load[ch] < agent.cap[ch]:
                return True
        return False

    def _report(self, agent, now, reason, events):
        """Report a change of public state (without re-placing the agent)."""
        old = agent.pstate
        new = self._pstate(agent)
        if new != old:
            if now > agent.state_since:
                agent.time_in[old] += now - agent.state_since
            agent.state_since = now
            agent.pstate = new
            events.append(_ev_state(now, agent.id, STATE_NAMES[old], STATE_NAMES[new], reason))

    def _set_presence(self, agent, presence, now):
        staffed_before = agent.presence == P_READY or agent.presence == P_WRAPUP
        agent.presence = presence
        staffed_after = presence in (P_READY, P_WRAPUP)
        if staffed_before != staffed_after:
            delta = 1 if staffed_after else -1
            for q in agent.queues:
                self._staff(q, now, delta)

    # -- timers ---------------------------------------------------------------

    def _arm(self, kind, obj, deadline):
        timer = _Timer.__new__(_Timer)  # no __init__ argument parsing
        timer.kind = kind
        timer.obj = obj
        timer.deadline = deadline
        timer.handle = self._timers.push(deadline, 0.0, timer)
        return timer

    def _disarm(self, timer):
        if timer is not None and timer.handle >= 0:
            self._timers.remove(timer.handle)
            timer.handle = -1

    def next_deadline(self):
        """When ``handle_timer`` next has work, or None. Re-read after every call."""
        if len(self._timers) == 0:
            return None
        return self._timers.peek_k1()

    def handle_timer(self, now):
        """Run every timer due at or before ``now`` (each at its own deadline):
        offer timeouts, escalation steps, sticky waits, ring-progressively
        steps, wrap-up ends and disconnect grace periods."""
        events = []
        while len(self._timers) > 0 and self._timers.peek_k1() <= now:
            timer = self._timers.pop()
            timer.handle = -1
            t = timer.deadline
            kind = timer.kind
            if kind == K_OFFER:
                self._offer_failed(timer.obj, t, "timeout", events)
            elif kind == K_STEP:
                self._step_timeout(timer.obj, t, events)
            elif kind == K_STICKY:
                self._sticky_timeout(timer.obj, t, events)
            elif kind == K_RING:
                self._ring_next(timer.obj, t, events)
            elif kind == K_RETRY:
                self._retry(timer.obj, t, events)
            elif kind == K_WRAPUP:
                agent = timer.obj
                agent.wrap_timer = None
                self._end_wrapup(agent, t, "timeout", events)
                self._dispatch_agent(agent, t, events)
            else:
                agent = timer.obj
                agent.grace_timer = None
                self._logout(agent, t, "disconnect_grace", "agent_lost", events)
        return events

    # -- tasks: entering -----------------------------------------------------

    def _prepare(self, task, now):
        """Resolve a new task's queue, class, priority, times and requirements."""
        if task.state != T_NEW:
            raise ValueError(f"task {task.id!r} was already given to a router")
        if task.id in self._tasks:
            raise ValueError(f"task {task.id!r} is already active")
        q = self._queues.get(task.queue)
        if q is None:
            raise KeyError(f"unknown queue {task.queue!r}")
        if task.cls is None:
            c = q.default
        else:
            c = q.classes.get(task.cls)
            if c is None:
                raise KeyError(f"queue {q.name!r} has no class {task.cls!r}")
        task.cls = c.name
        if task.tenant is None:
            task.tenant = q.tenant
        elif not q.shared and task.tenant != q.tenant:
            raise ValueError(f"task {task.id!r} of tenant {task.tenant!r} in queue of {q.tenant!r}")
        if task.priority != task.priority:  # NaN: not given (a C test, unlike math.isnan)
            task.priority = c.priority
        if task.arrival != task.arrival:
            task.arrival = now
        if task.deadline != task.deadline:
            task.deadline = task.arrival + c.target
        task._q = q
        task._c = c
        task._ch = self._channel_id(task.channel)
        task._req = self._base_req(q, task) if task.skills else q.req
        task._offers = []
        self._seq += 1
        task._seq = self._seq
        return q

    def enqueue(self, task, now):
        """Give a new task to the engine; it is offered at once if an agent can take it.

        Returns ``[TaskQueued, OfferCreated..., AgentStateChanged...]``, or
        ``[TaskMerged, ...]`` when an active task of the same tenant has the
        same ``incident_key`` (then ``task`` is dropped and the existing task
        carries on). Raises KeyError (unknown queue/class) or ValueError
        (duplicate id, tenant mismatch), for an alert that would merge too.
        """
        events = []
        q = self._prepare(task, now)
        if task.incident_key is not None:
            key = (task.tenant, task.incident_key)
            existing = self._incidents.get(key)
            if existing is not None:
                self._merge(existing, task, now, events)
                return events
            self._incidents[key] = task
        self._tasks[task.id] = task
        # statistics stay with the class the task arrived in, whatever
        # reprioritising or merging does to it later
        cell = q.cells[task._c.index]
        task._cell = cell
        cell.add(now, C_OFFERED, 1.0)
        task._wait_handle = cell.waiting.push(task.arrival, 0.0, task)
        events.append(_ev_queued(now, task.id, q.name, task.cls, task.priority, task.arrival))
        if self._sticky_on and q.sticky_wait > 0:
            self._find_sticky(task, q, now)
        self._start_step(task, 0, now)
        self._file(task, now)
        self._dispatch_task(task, now, events)
        return events

    def restore_assigned(self, task, agent_id, now, grace):
        """After a gateway restart: put a task that was in ``agent_id``'s hands
        back there. If the agent is not logged in it becomes *disconnected* for
        ``grace`` seconds: logging in keeps the task, otherwise the task is
        re-queued with its original arrival (``task.arrival`` must be set)."""
        agent = self._agents[agent_id]
        q = self._prepare(task, now)
        events = []
        self._tasks[task.id] = task
        if task.incident_key is not None:
            self._incidents[(task.tenant, task.incident_key)] = task
        task._answered = True
        task._cell = q.cells[task._c.index]
        task._loc = q
        self._hand_to(task, agent, now)
        events.append(TaskRestored(now, task.id, agent.id))
        if agent.presence == P_LOGGED_OUT:
            self._set_presence(agent, P_DISCONNECTED, now)
            agent.reason = "restored"
            agent.grace_timer = self._arm(K_GRACE, agent, now + max(grace, 0.0))
        self._touch(agent, now, "restored", events)
        return events

    def _hand_to(self, task, agent, now):
        task.state = T_ASSIGNED
        task._agent = agent
        task._assigned_at = now
        agent.tasks[task.id] = task
        agent.load[task._ch] += 1
        agent.total_load += 1

    def _merge(self, existing, task, now, events):
        """Alert ``task`` (resolved by ``_prepare``) joins ``existing``: the
        higher class (if the existing task's queue has a class of that name;
        by priority, then the shorter target) and priority, the earlier
        deadline, the attributes; a waiting task moves at once."""
        c = task._c
        if task._q is not existing._q:
            c = existing._q.classes.get(c.name)
        e = existing._c
        # the higher class: by priority, then the shorter target (the more urgent)
        if c is not None and (c.priority > e.priority or (c.priority == e.priority and c.target < e.target)):
            existing._c = c
            existing.cls = c.name
        if task.priority > existing.priority:
            existing.priority = task.priority
        if task.deadline < existing.deadline:
            existing.deadline = task.deadline
        if task.attributes:
            if existing.attributes is None:
                existing.attributes = dict(task.attributes)
            else:
                existing.attributes.update(task.attributes)
        cell = existing._cell
        cell.add(now, C_MERGED, 1.0)
        events.append(TaskMerged(now, task.id, existing.id, task.incident_key, existing.priority))
        self._rekey(existing, now, events)

    def _find_sticky(self, task, q, now):
        for key in (("i", task.tenant, task.incident_key), ("v", task.tenant, task.vehicle)):
            if key[2] is None:
                continue
            rec = self._sticky.get(key)
            if rec is None or now - rec[1] > q.sticky_window:
                continue
            agent = self._agents.get(rec[0])
            if agent is None or agent.presence == P_LOGGED_OUT:
                continue
            task._sticky = agent
            b = self._target(task)
            if not b.members:  # not eligible for this task: no point waiting for it
                task._sticky = None
                continue
            task._sticky_timer = self._arm(K_STICKY, task, now + q.sticky_wait)
            return

    def _remember(self, task, agent, now):
        sticky = self._sticky
        for key in (("i", task.tenant, task.incident_key), ("v", task.tenant, task.vehicle)):
            if key[2] is not None:
                sticky.pop(key, None)
                sticky[key] = (agent.id, now)
        if len(sticky) > 4096 and len(sticky) % 1024 == 0:
            horizon = now - self._sticky_max
            stale = [k for k, rec in sticky.items() if rec[1] < horizon]
            for k in stale:
                del sticky[k]

    def _start_step(self, task, i, now):
        task._step = i
        self._disarm(task._step_timer)
        task._step_timer = None
        steps = task._q.steps
        if steps:
            timeout = steps[i].timeout
            if timeout is not None:
                task._step_timer = self._arm(K_STEP, task, now + timeout)

    def _step_timeout(self, task, now, events):
        task._step_timer = None
        if task.state != T_QUEUED and task.state != T_OFFERED:
            return
        if task._step + 1 >= len(task._q.steps):
            return  # a last step with a timeout simply stays
        queued = task.state == T_QUEUED
        if queued:
            self._unfile(task)
        self._start_step(task, task._step + 1, now)
        task._declined = None
        self._unring(task)
        b = self._target(task)
        task._bucket = b
        events.append(TaskEscalated(now, task.id, task._step, task._loc.name, "timeout"))
        if queued:
            self._file(task, now)
            self._dispatch_task(task, now, events)
        else:
            self._widen(task, now, events)

    def _sticky_timeout(self, task, now, events):
        task._sticky_timer = None
        task._sticky = None
        if task.state == T_QUEUED:
            self._unfile(task)
            self._file(task, now)
            events.append(TaskEscalated(now, task.id, task._step, task._loc.name, "sticky_expired"))
            self._dispatch_task(task, now, events)
        elif task.state == T_OFFERED:
            self._unring(task)
            task._bucket = self._target(task)
            events.append(TaskEscalated(now, task.id, task._step, task._loc.name, "sticky_expired"))
            self._widen(task, now, events)

    def _widen(self, task, now, events):
        """The target of a task on offer changed (an escalation step, the end
        of a sticky wait). Its pending offers stand (the agent may be about to
        accept), and the new target is eligible at once: its best available
        agent gets an offer too (under ring-all, each of them); the first
        accept wins."""
        b = task._bucket
        self._keys(task)
        if b.q.strategy == S_RING_ALL:
            for m in b.avail.ordered():
                if self._valid(m) and self._may_join(task, m.agent):
                    self._offer(task, m.agent, now, events)
            if task._ring_handle < 0:
                self._ring_add(task)
        else:
            m = self._next_candidate(b, task)
            if m is not None:
                self._offer(task, m.agent, now, events)

    def _ring_add(self, task):
        """A ring-all task is on offer: agents freeing up meanwhile may join."""
        task._ring_handle = task._bucket.ringing.push(task._k1, task._k2, task)
        self._nringing += 1

    def _unring(self, task):
        if task._ring_handle >= 0:
            task._bucket.ringing.remove(task._ring_handle)
            task._ring_handle = -1
            self._nringing -= 1

    def _may_join(self, task, agent):
        """Whether a task on offer may also be offered to ``agent``: not
        declined by it at this step, not already on offer to it."""
        if task._declined is not None and agent in task._declined:
            return False
        for o in task._offers:  # noqa: SIM110 (typed loop, no generator when compiled)
            if o.agent is agent:
                return False
        return True

    # -- matching -----------------------------------------------------------

    def _valid(self, m):
        agent = m.agent
        return agent.presence == P_READY and agent.load[m.bucket.ch] < agent.cap[m.bucket.ch]

    def _clean_top(self, b):
        """Drop stale entries (agents that can no longer take a task here) from
        the top of ``b.avail`` and re-key entries whose key rose; return the
        first valid member (the best available agent) or None.

        Every entry's stored key is <= its true key, so once the top's stored
        key is its true key, no other entry can be better."""
        while len(b.avail) > 0:
            m = b.avail.peek()
            if not self._valid(m):
                b.avail.pop()
                m.avail = -1
            elif m.s1 != m.k1 or m.s2 != m.k2:
                b.avail.update(m.avail, m.k1, m.k2)
                m.s1 = m.k1
                m.s2 = m.k2
            else:
                return m
        return None

    def _best_agent(self, b, task):
        """The best available member of bucket ``b`` that has not declined ``task``."""
        m = self._clean_top(b)
        if m is None:
            return None
        declined = task._declined
        if declined is None or m.agent not in declined:
            return m
        # pop the decliners off the top, take the next, put them back
        popped = []
        found = None
        while True:
            m = self._clean_top(b)
            if m is None:
                break
            b.avail.pop()
            m.avail = -1
            popped.append(m)
            if m.agent not in declined:
                found = m
                break
        for m in popped:
            m.avail = b.avail.push(m.k1, m.k2, m)
            m.s1 = m.k1
            m.s2 = m.k2
        return found

    def _dispatch_task(self, task, now, events):
        """A task just entered its bucket: offer it if some agent can take it."""
        b = task._bucket
        q = b.q
        if q.strategy == S_RING_ALL:
            declined = task._declined
            for m in b.avail.ordered():
                if self._valid(m) and (declined is None or m.agent not in declined):
                    self._offer(task, m.agent, now, events)
            if task.state == T_OFFERED:
                return
        else:
            m = self._best_agent(b, task)
            if m is not None:
                self._offer(task, m.agent, now, events)
                return
        if task._pre_handle >= 0 and len(b.wrap) > 0:
            self._preempt_for(task, b, now, events)

    def _preempt_for(self, task, b, now, events):
        """A waiting emergency found no available agent: take the eligible agent
        whose wrap-up ends first (and that has not declined it) out of wrap-up.
        That agent gets the best waiting emergency it may take: this one,
        unless a higher or older one waits for it too (then the next agent in
        wrap-up is tried for this one)."""
        popped = []
        while task.state == T_QUEUED and len(b.wrap) > 0:
            m = b.wrap.peek()
            agent = m.agent
            if agent.presence != P_WRAPUP:
                break
            if task._declined is not None and agent in task._declined:
                b.wrap.pop()
                m.wrap = -1
                popped.append(m)
                continue
            if not self._preempt(agent, now, events):
                break
        for m in popped:  # untouched meanwhile: only the pre-empted agents changed
            m.wrap = b.wrap.push(m.agent.wrap_until, m.agent.index, m)

    def _preempt(self, agent, now, events):
        """Take an agent in wrap-up out of it for the best waiting task of a
        pre-empting class that it may take; False if there is none."""
        t = self._best_task(agent, now, W_PRE)
        if t is None:
            return False
        self._end_wrapup(agent, now, "preempted", events)
        self._offer(t, agent, now, events)
        self._dispatch_agent(agent, now, events)  # its other channels
        return True

    def _first_undeclined(self, b, agent, pre):
        heap = b.pre if pre else b.tasks
        popped = []
        found = None
        while len(heap) > 0:
            t = heap.pop()
            if pre:
                t._pre_handle = -1
            else:
                t._handle = -1
            popped.append(t)
            if t._declined is None or agent not in t._declined:
                found = t
                break
        for t in popped:
            if pre:
                t._pre_handle = heap.push(t._k1, t._k2, t)
            else:
                t._handle = heap.push(t._k1, t._k2, t)
        return found

    def _best_task(self, agent, now, which):
        """The best task of kind ``which`` this agent may take now, across its buckets:
        W_WAITING, W_PRE (only tasks of pre-empting classes, for an agent in wrap-up)
        or W_RINGING (ring-all tasks on offer to others that it may join)."""
        best = None
        best_r1 = INF
        best_r2 = INF
        best_seq = 0
        for m in agent.members:
            b = m.bucket
            heap = b.tasks if which == W_WAITING else (b.pre if which == W_PRE else b.ringing)
            if len(heap) == 0:
                continue
            if agent.load[b.ch] >= agent.cap[b.ch]:
                continue
            t = heap.peek()
            if which == W_RINGING:
                if not self._may_join(t, agent):
                    t = self._first_joinable(b, agent)
            elif t._declined is not None and agent in t._declined:
                t = self._first_undeclined(b, agent, which == W_PRE)
            if t is None:
                continue
            r1 = t._k1 - b.q.aging * now
            r2 = t._k2
            if (
                best is None
                or r1 < best_r1
                or (r1 == best_r1 and (r2 < best_r2 or (r2 == best_r2 and t._seq < best_seq)))
            ):
                best = t
                best_r1 = r1
                best_r2 = r2
                best_seq = t._seq
        return best

    def _dispatch_agent(self, agent, now, events):
        """The agent may take more: give it the best waiting tasks it can hold.
        An agent in wrap-up takes only a waiting task of a pre-empting class
        (which ends its wrap-up)."""
        if agent.presence == P_WRAPUP:
            if self._npre > 0 and agent.wrap_entries > 0:
                self._preempt(agent, now, events)
            return
        while agent.presence == P_READY:
            t = self._best_task(agent, now, W_WAITING)
            if t is None:
                break
            self._offer(t, agent, now, events)
        if self._nringing > 0:
            # nothing waits for it: it joins ring-all tasks still ringing
            while agent.presence == P_READY:
                t = self._best_task(agent, now, W_RINGING)
                if t is None:
                    return
                self._offer(t, agent, now, events)

    def _first_joinable(self, b, agent):
        heap = b.ringing
        popped = []
        found = None
        while len(heap) > 0:
            t = heap.pop()
            t._ring_handle = -1
            popped.append(t)
            if self._may_join(t, agent):
                found = t
                break
        for t in popped:
            t._ring_handle = heap.push(t._k1, t._k2, t)
        return found

    def _offer(self, task, agent, now, events):
        q = task._bucket.q
        oid = self._next_offer
        self._next_offer += 1
        offer = _Offer.__new__(_Offer)
        offer.id = oid
        offer.task = task
        offer.agent = agent
        offer.expires_at = now + q.offer_timeout
        offer.timer = self._arm(K_OFFER, offer, offer.expires_at)
        self._unfile(task)
        if task._ring_timer is not None and task._ring_timer.kind == K_RETRY:
            self._disarm(task._ring_timer)
            task._ring_timer = None
        task.state = T_OFFERED
        if q.strategy == S_RING_ALL and task._ring_handle < 0:
            self._ring_add(task)
        task._offers.append(offer)
        self._offers[oid] = offer
        agent.offers[oid] = offer
        agent.load[task._ch] += 1
        agent.total_load += 1
        agent.offered += 1
        agent.last_offer = oid
        events.append(_ev_offer(now, oid, task.id, agent.id, offer.expires_at))
        self._touch(agent, now, "offer", events)
        if q.strategy == S_RING_PROGRESSIVE and task._ring_timer is None:
            task._ring_timer = self._arm(K_RING, task, now + q.ring_step)

    def _next_candidate(self, b, task):
        """The best available member of ``b`` that may also be offered
        ``task`` (already on offer to others), or None."""
        popped = []
        found = None
        while True:
            m = self._clean_top(b)
            if m is None:
                break
            b.avail.pop()
            m.avail = -1
            popped.append(m)
            if self._may_join(task, m.agent):
                found = m
                break
        for m in popped:
            m.avail = b.avail.push(m.k1, m.k2, m)
            m.s1 = m.k1
            m.s2 = m.k2
        return found

    def _ring_next(self, task, now, events):
        task._ring_timer = None
        if task.state != T_OFFERED:
            return
        b = task._bucket  # current: update_queue re-targets tasks on offer
        # the next ring is armed first: _offer arms one when none is (a second
        # timer would ring twice as fast and outlive the reference to it)
        task._ring_timer = self._arm(K_RING, task, now + b.q.ring_step)
        found = self._next_candidate(b, task)
        if found is not None:
            self._offer(task, found.agent, now, events)

    # -- offers: outcomes ----------------------------------------------------

    def _drop_offer(self, offer, now, reason, events):
        """Take an offer out of every index; the agent's slot is free again."""
        del self._offers[offer.id]
        self._disarm(offer.timer)
        offer.timer = None
        task = offer.task
        agent = offer.agent
        task._offers.remove(offer)
        del agent.offers[offer.id]
        agent.load[task._ch] -= 1
        agent.total_load -= 1
        events.append(_ev_withdrawn(now, offer.id, task.id, agent.id, reason))
        self._touch(agent, now, reason, events)

    def _refile(self, task, now):
        """A task whose offers all failed waits again, with its old key (the
        caller offers it, see ``_redispatch``)."""
        self._disarm(task._ring_timer)
        task._ring_timer = None
        self._file(task, now)

    def _redispatch(self, tasks, now, events):
        """Offer tasks that just went back to waiting, best first, so that a
        free agent that can take only one of them gets the best one.

        If every agent that could take a task now has declined it, those
        agents get it again after the queue's ``retry_delay`` (Asterisk's
        ``retry``): a crash alert must not sit out an escalation step because
        the only agent on shift missed one ring."""
        if len(tasks) > 1:
            tasks.sort(key=lambda t: (t._k1 - t._loc.aging * now, t._k2, t._seq))
        for t in tasks:
            if t.state != T_QUEUED:
                continue
            self._dispatch_task(t, now, events)
            if t.state == T_QUEUED and t._declined and t._ring_timer is None:
                # _ring_timer is free while the task waits: it holds the retry
                t._ring_timer = self._arm(K_RETRY, t, now + t._loc.retry_delay)

    def _retry(self, task, now, events):
        task._ring_timer = None
        if task.state == T_QUEUED:
            task._declined = None
            self._dispatch_task(task, now, events)

    def accept(self, offer_id, now):
        """The agent takes the task: it is assigned, other offers are withdrawn.

        KeyError if the offer is no longer pending (it timed out, was
        withdrawn or already answered): tell the agent the offer is gone.
        """
        offer = self._offers.pop(offer_id)
        events = []
        self._disarm(offer.timer)
        offer.timer = None
        task = offer.task
        agent = offer.agent
        task._offers.remove(offer)
        del agent.offers[offer_id]
        task.state = T_ASSIGNED
        if task._ring_handle >= 0:
            self._unring(task)
        task._agent = agent
        task._assigned_at = now
        agent.tasks[task.id] = task
        agent.answered += 1
        agent.no_answer = 0
        self._disarm(task._step_timer)
        task._step_timer = None
        # the sticky preference ends once the task is answered (by anyone): a
        # task that later goes back to waiting is open to all at once
        self._disarm(task._sticky_timer)
        task._sticky_timer = None
        task._sticky = None
        self._disarm(task._ring_timer)
        task._ring_timer = None
        wait = now - task.arrival
        cell = task._cell
        if task._wait_handle >= 0:
            cell.waiting.remove(task._wait_handle)
            task._wait_handle = -1
        if not task._answered:
            task._answered = True
            cell.answered(now, wait, wait <= task._c.threshold)
        events.append(_ev_assigned(now, task.id, agent.id, offer_id, wait))
        if agent.presence == P_WRAPUP:
            # the offer was made before its wrap-up began (another channel's
            # task ended meanwhile): taking it ends the wrap-up, so the agent
            # shows busy, and its other channels may take work again
            self._end_wrapup(agent, now, "agent", events)
            self._dispatch_agent(agent, now, events)
        elif agent.answer_keyed:  # its key moved in some fewest-answered queue
            self._touch(agent, now, "accepted", events)
        else:  # load and presence unchanged: nothing to re-place
            self._report(agent, now, "accepted", events)
        while task._offers:
            other = task._offers[-1]
            self._drop_offer(other, now, "accepted_elsewhere", events)
            self._dispatch_agent(other.agent, now, events)
        return events

    def reject(self, offer_id, now):
        """The agent declines: the next candidate is tried; the agent's
        consecutive no-answer count rises (break ``no_answer`` at the queue's
        ``max_no_answer``) and it is not offered this task again at this step."""
        offer = self._offers[offer_id]
        events = []
        self._offer_failed(offer, now, "rejected", events)
        return events

    def _offer_failed(self, offer, now, reason, events):
        task = offer.task
        agent = offer.agent
        q = task._bucket.q
        self._drop_offer(offer, now, reason, events)
        if task._declined is None:
            task._declined = set()
        task._declined.add(agent)
        agent.no_answer += 1
        back = []
        if not task._offers:
            self._refile(task, now)
            back.append(task)
        if agent.no_answer >= q.max_no_answer and agent.presence == P_READY:
            # the break withdraws the agent's other offers: those tasks and this
            # one are offered again together, best first (this one is back in
            # its bucket before any of them is re-offered)
            self._go_break(agent, now, "no_answer", events, back)
        else:
            self._redispatch(back, now, events)
        self._dispatch_agent(agent, now, events)

    # -- tasks: leaving ------------------------------------------------------

    def complete(self, task_id, now, disposition=""):
        """The agent finished the task: it ends; the agent goes to wrap-up
        (queue's or agent's ``wrapup`` seconds) or straight to its next task.
        ValueError if the task is not assigned."""
        task = self._tasks[task_id]
        if task.state != T_ASSIGNED:
            raise ValueError(f"task {task_id!r} is not assigned")
        events = []
        agent = task._agent
        talk = now - task._assigned_at
        self._release(task, agent)
        agent.talk_time += talk
        agent.handled += 1
        agent.idle_since = now
        wrap = agent.wrapup
        if wrap < 0:
            wrap = task._loc.wrapup
        if self._sticky_on:
            self._remember(task, agent, now)
        self._end(task)
        cell = task._cell
        cell.handled(now, talk + wrap)
        events.append(_ev_completed(now, task_id, agent.id, disposition, talk))
        if wrap > 0 and agent.presence == P_READY:
            self._set_presence(agent, P_WRAPUP, now)
            agent.wrap_until = now + wrap
            agent.wrap_timer = self._arm(K_WRAPUP, agent, agent.wrap_until)
            self._touch(agent, now, "wrapup", events)
            self._dispatch_agent(agent, now, events)  # a waiting emergency pre-empts at once
        else:
            self._touch(agent, now, "completed", events)
            self._dispatch_agent(agent, now, events)
        return events

    def _release(self, task, agent):
        del agent.tasks[task.id]
        agent.load[task._ch] -= 1
        agent.total_load -= 1
        task._agent = None

    def _end(self, task):
        task.state = T_ENDED
        if task._ring_handle >= 0:
            self._unring(task)
        del self._tasks[task.id]
        if task.incident_key is not None:
            key = (task.tenant, task.incident_key)
            if self._incidents.get(key) is task:
                del self._incidents[key]
        for timer in (task._step_timer, task._sticky_timer, task._ring_timer):
            self._disarm(timer)
        task._step_timer = None
        task._sticky_timer = None
        task._ring_timer = None
        if task._wait_handle >= 0:
            task._cell.waiting.remove(task._wait_handle)
            task._wait_handle = -1

    def _withdraw_all(self, task, now, reason, events):
        while task._offers:
            offer = task._offers[-1]
            self._drop_offer(offer, now, reason, events)
            self._dispatch_agent(offer.agent, now, events)

    def abandon(self, task_id, now):
        """The customer gave up while waiting (counted as abandoned).
        ValueError if the task is already assigned (complete or cancel it)."""
        task = self._tasks[task_id]
        if task.state == T_ASSIGNED:
            raise ValueError(f"task {task_id!r} is assigned; complete or cancel it")
        events = []
        wait = now - task.arrival
        cell = task._cell
        cell.add(now, C_ABANDONED, 1.0)
        cell.add(now, C_ABANDON_WAIT_SUM, wait)
        if wait <= task._c.threshold:
            cell.add(now, C_ABANDONED_SL, 1.0)
        self._unfile(task)
        self._end(task)
        events.append(TaskAbandoned(now, task_id, wait))
        self._withdraw_all(task, now, "cancelled", events)
        return events

    def cancel(self, task_id, now, reason="cancelled"):
        """Withdraw a task in any state (not counted as abandoned)."""
        task = self._tasks[task_id]
        events = []
        cell = task._cell
        cell.add(now, C_CANCELLED, 1.0)
        agent = task._agent
        self._unfile(task)
        self._end(task)
        events.append(TaskCancelled(now, task_id, reason))
        self._withdraw_all(task, now, "cancelled", events)
        if agent is not None:
            self._release(task, agent)
            agent.idle_since = now
            self._touch(agent, now, "task_cancelled", events)
            self._dispatch_agent(agent, now, events)
        return events

    def reprioritise(self, task_id, now, priority=None, cls=None):
        """Change a task's class and/or priority; a waiting task moves at once.

        A new class sets the priority to the class's unless ``priority`` is
        given, and the deadline to arrival + the class target.
        """
        task = self._tasks[task_id]
        events = []
        if cls is not None:
            c = task._q.classes.get(cls)
            if c is None:
                raise KeyError(f"queue {task._q.name!r} has no class {cls!r}")
            task._c = c
            task.cls = c.name
            task.deadline = task.arrival + c.target
            if priority is None:
                priority = c.priority
        if priority is not None:
            task.priority = priority
        events.append(TaskReprioritised(now, task_id, task.cls, task.priority))
        self._rekey(task, now, events)
        return events

    def _rekey(self, task, now, events):
        """A task's priority, class or deadline changed: a waiting one moves at
        once (and, now of a pre-empting class, may pre-empt wrap-up), a
        ringing one (ring-all) moves among those a freed agent may join."""
        b = task._bucket
        if task.state == T_QUEUED:
            self._keys(task)
            b.tasks.update(task._handle, task._k1, task._k2)
            self._pre_sync(task)
            if task._pre_handle >= 0 and len(b.wrap) > 0:
                self._preempt_for(task, b, now, events)
        elif task._ring_handle >= 0:
            self._keys(task)
            b.ringing.update(task._ring_handle, task._k1, task._k2)

    def _requeue(self, task, agent, now, reason, events):
        self._release(task, agent)
        task._declined = None
        task._offers = []
        # no stickiness on re-queue: the agent it would wait for just left
        self._disarm(task._sticky_timer)
        task._sticky_timer = None
        task._sticky = None
        events.append(TaskRequeued(now, task.id, agent.id, reason))
        cell = task._cell
        if task._wait_handle < 0:
            task._wait_handle = cell.waiting.push(task.arrival, 0.0, task)
        self._start_step(task, 0, now)
        self._file(task, now)

    # -- agents: presence ----------------------------------------------------

    def login(self, agent_id, now, state="available", reason=""):
        """An agent logs in (or reconnects within its grace period, keeping its
        tasks). ``state``: "available" or "break" (with ``reason``)."""
        agent = self._agents[agent_id]
        if agent.presence == P_READY or agent.presence == P_BREAK or agent.presence == P_WRAPUP:
            return self.set_state(agent_id, state, now, reason)
        events = []
        if agent.presence == P_DISCONNECTED:
            self._disarm(agent.grace_timer)
            agent.grace_timer = None
            self._set_presence(agent, P_READY, now)
            agent.reason = ""
            self._touch(agent, now, "reconnected", events)
        elif agent.presence == P_LOGGED_OUT:
            agent.idle_since = now
            agent.no_answer = 0
            self._set_presence(agent, P_READY, now)
            agent.reason = ""
            self._touch(agent, now, "login", events)
        if state == "break":
            self._go_break(agent, now, reason or "break", events, [])
        elif state != "available":
            raise ValueError(f"login state must be 'available' or 'break', not {state!r}")
        self._dispatch_agent(agent, now, events)
        return events

    def set_state(self, agent_id, state, now, reason=""):
        """``"available"`` (ends a break or wrap-up) or ``"break"`` (with a
        reason; pending offers are withdrawn, tasks in hand stay)."""
        agent = self._agents[agent_id]
        if agent.presence == P_LOGGED_OUT or agent.presence == P_DISCONNECTED:
            raise ValueError(f"agent {agent_id!r} is not logged in")
        events = []
        if state == "break":
            if agent.presence == P_WRAPUP:
                self._end_wrapup(agent, now, "agent", events)
            self._go_break(agent, now, reason or "break", events, [])
        elif state == "available":
            if agent.presence == P_WRAPUP:
                self._end_wrapup(agent, now, "agent", events)
            elif agent.presence == P_BREAK:
                self._set_presence(agent, P_READY, now)
                agent.reason = ""
                agent.no_answer = 0
                if agent.total_load == 0:
                    agent.idle_since = now
                self._touch(agent, now, reason or "available", events)
            self._dispatch_agent(agent, now, events)
        else:
            raise ValueError(f"state must be 'available' or 'break', not {state!r}")
        return events

    def _go_break(self, agent, now, reason, events, back):
        """The agent goes on break; its pending offers are withdrawn. ``back``:
        tasks already waiting again that still need an offer (a no-answer
        break: the task the agent failed to answer); they are offered together
        with the withdrawn ones, best first."""
        self._set_presence(agent, P_BREAK, now)
        agent.reason = reason
        self._touch(agent, now, reason, events)
        self._withdraw_agent_offers(agent, now, events, back)

    def _drop_agent_offers(self, agent, now, events, back):
        """Withdraw the agent's pending offers; a task left with none waits
        again and is appended to ``back`` for the caller to offer."""
        for offer in list(agent.offers.values()):
            task = offer.task
            self._drop_offer(offer, now, "agent_gone", events)
            if not task._offers:
                self._refile(task, now)
                back.append(task)

    def _withdraw_agent_offers(self, agent, now, events, back):
        self._drop_agent_offers(agent, now, events, back)
        self._redispatch(back, now, events)

    def _end_wrapup(self, agent, now, reason, events):
        if agent.presence != P_WRAPUP:
            return
        self._disarm(agent.wrap_timer)
        agent.wrap_timer = None
        self._set_presence(agent, P_READY, now)
        agent.idle_since = now
        events.append(WrapupEnded(now, agent.id, reason))
        self._touch(agent, now, "wrapup_ended", events)

    def end_wrapup(self, agent_id, now):
        """The agent is done with after-call work before its wrap-up timer."""
        return self.set_state(agent_id, "available", now)

    def logout(self, agent_id, now, reason="logout"):
        """The agent leaves: offers withdrawn, tasks in hand re-queued with
        their original arrival (so at their old place)."""
        agent = self._agents[agent_id]
        events = []
        self._logout(agent, now, reason, "agent_logout", events)
        return events

    def _logout(self, agent, now, reason, requeue_reason, events):
        if agent.presence == P_LOGGED_OUT:
            return
        self._disarm(agent.wrap_timer)
        agent.wrap_timer = None
        self._disarm(agent.grace_timer)
        agent.grace_timer = None
        self._set_presence(agent, P_LOGGED_OUT, now)
        agent.reason = reason
        # the tasks it was offered and those in its hands go back together and
        # are offered best first: none of them can take a free agent from a better one
        back = []
        self._drop_agent_offers(agent, now, events, back)
        for t in list(agent.tasks.values()):
            self._requeue(t, agent, now, requeue_reason, events)
            back.append(t)
        self._touch(agent, now, reason, events)
        self._redispatch(back, now, events)

    def disconnect(self, agent_id, now, grace):
        """The agent's connection dropped. Offers are withdrawn at once; its
        tasks stay in its hands for ``grace`` seconds: ``login`` within that
        keeps them, otherwise they are re-queued (reason ``agent_lost``)."""
        agent = self._agents[agent_id]
        events = []
        if agent.presence == P_LOGGED_OUT or agent.presence == P_DISCONNECTED:
            return events
        if not agent.tasks:
            self._logout(agent, now, "disconnected", "agent_lost", events)
            return events
        self._disarm(agent.wrap_timer)
        agent.wrap_timer = None
        self._set_presence(agent, P_DISCONNECTED, now)
        agent.reason = "disconnected"
        self._withdraw_agent_offers(agent, now, events, [])
        self._touch(agent, now, "disconnected", events)
        agent.grace_timer = self._arm(K_GRACE, agent, now + max(grace, 0.0))
        return events

    # -- introspection -------------------------------------------------------

    def task_info(self, task_id):
        """A dict describing an active task (KeyError once it has ended)."""
        t = self._tasks[task_id]
        return {
            "id": t.id,
            "state": TASK_STATE_NAMES[t.state],
            "queue": t._q.name,
            "waiting_in": t._loc.name if t._loc is not None else t._q.name,
            "cls": t.cls,
            "priority": t.priority,
            "arrival": t.arrival,
            "deadline": t.deadline,
            "step": t._step,
            "channel": t.channel,
            "tenant": t.tenant,
            "agent": t._agent.id if t._agent is not None else None,
            "offers": [
                {"offer_id": o.id, "agent": o.agent.id, "expires_at": o.expires_at} for o in t._offers
            ],
            "sticky_agent": t._sticky.id if t._sticky is not None else None,
            # declined at this step (not offered again before a retry or the next step)
            "declined": sorted(a.id for a in t._declined) if t._declined else [],
            # when its routing next changes by itself (escalation step, end of a
            # sticky wait, retry of decliners, next ring), or None
            "timer_at": self._task_timer_at(t),
            "vehicle": t.vehicle,
            "incident_key": t.incident_key,
            "attributes": t.attributes,
        }

    def _task_timer_at(self, t):
        at = None
        for timer in (t._step_timer, t._sticky_timer, t._ring_timer):
            if timer is not None and timer.handle >= 0 and (at is None or timer.deadline < at):
                at = timer.deadline
        return at

    def has_task(self, task_id):
        return task_id in self._tasks

    def task_ids(self):
        return list(self._tasks)

    def _time_in(self, a):
        return [a.time_in[i] for i in range(len(STATE_NAMES))]

    def _loads(self, a):
        loads = {}
        for i in range(len(self._channel_names)):
            if a.load[i]:
                loads[self._channel_names[i]] = a.load[i]
        return loads

    def agent_info(self, agent_id, now):
        a = self._agents[agent_id]
        time_in = self._time_in(a)
        time_in[a.pstate] += max(0.0, now - a.state_since)
        staffed = time_in[P_READY] + time_in[P_OFFERED] + time_in[P_BUSY] + time_in[P_WRAPUP]
        return {
            "id": a.id,
            "state": STATE_NAMES[a.pstate],
            "reason": a.reason,
            "since": a.state_since,
            "time_in_state": max(0.0, now - a.state_since),
            "tasks": sorted(a.tasks, key=repr),
            "offers": sorted(a.offers),
            "load": self._loads(a),
            "capacity": dict(a.config.capacity),
            "queues": sorted(q.name for q in a.queues),
            "offered": a.offered,
            "answered": a.answered,
            "consecutive_no_answers": a.no_answer,
            "handled": a.handled,
            "talk_time": a.talk_time,
            "idle_since": a.idle_since,
            "time_in": {STATE_NAMES[i]: time_in[i] for i in range(len(STATE_NAMES))},
            "occupancy": (time_in[P_BUSY] + time_in[P_WRAPUP]) / staffed if staffed > 0 else 0.0,
        }

    def agents(self, now):
        return [self.agent_info(aid, now) for aid in self._agents]

    def queue_names(self):
        return list(self._queues)

    def waiting(self, queue):
        """Ids of the tasks waiting in ``queue`` (where they wait now), in the
        order an agent eligible for all of them would get them."""
        q = self._queues[queue]
        ranked = []
        for b in q.buckets.values():
            for t in b.tasks.items():
                ranked.append((t._k1, t._k2, t._seq, t.id))
        ranked.sort()
        return [r[3] for r in ranked]

    def stats(self, now):
        """Per queue and per class: counters over the sliding window and
        since start, depth, longest current wait, occupancy, and Erlang C
        predictions from the window's arrival rate and handle time."""
        out = {}
        span_all = max(now - self._start, 1e-9)
        # the time the window's slots cover: the current (partial) slot and the
        # slots - 1 before it, so between window - window/slots and window
        first = (math.floor(now / self._slot_len) - self._slots + 1) * self._slot_len
        span_win = max(min(now - max(self._start, first), span_all), 1e-9)
        for q in self._queues.values():
            self._staff(q, now, 0)
            qwin = q.qcell.window(now)
            qtot = q.qcell.since_start()
            classes = {}
            sums_w = [0.0] * NCOUNT
            sums_t = [0.0] * NCOUNT
            depth = 0
            oldest = INF
            for c in q.class_list:
                cell = q.cells[c.index]
                w = cell.window(now)
                tot = cell.since_start()
                for i in range(NCOUNT):
                    sums_w[i] += w[i]
                    sums_t[i] += tot[i]
                cdepth = len(cell.waiting)
                depth += cdepth
                cold = cell.waiting.peek_k1() if cdepth else INF
                oldest = min(oldest, cold)
                classes[c.name] = {
                    "window": _summary(w, span_win, 0.0),
                    "since_start": _summary(tot, span_all, 0.0),
                    "depth": cdepth,
                    "longest_wait_s": (now - cold) if cdepth else 0.0,
                    "sl_threshold_s": c.threshold,
                }
            win = _summary(sums_w, span_win, qwin[C_STAFFED_S])
            tot = _summary(sums_t, span_all, qtot[C_STAFFED_S])
            out[q.name] = {
                "window": win,
                "since_start": tot,
                "depth": depth,
                "longest_wait_s": (now - oldest) if depth else 0.0,
                "staffed": q.staffed,
                "classes": classes,
                "erlang_c": _predict(win, q.staffed, q.config.sl_threshold, q.config.sl_target),
            }
        return out


def _summary(c, span, staffed_s):
    answered = c[C_ANSWERED]
    resolved = answered + c[C_ABANDONED]
    handled = c[C_HANDLED]
    return {
        "offered": int(c[C_OFFERED]),
        "answered": int(answered),
        "abandoned": int(c[C_ABANDONED]),
        "cancelled": int(c[C_CANCELLED]),
        "merged": int(c[C_MERGED]),
        "handled": int(handled),
        # SL = answered within T / (answered + abandoned); SL2 counts abandons within T as met
        "service_level": c[C_ANSWERED_SL] / resolved if resolved else None,
        "service_level_2": (c[C_ANSWERED_SL] + c[C_ABANDONED_SL]) / resolved if resolved else None,
        "asa_s": c[C_WAIT_SUM] / answered if answered else None,
        "p_wait": c[C_WAITED] / answered if answered else None,
        "aht_s": c[C_HANDLE_SUM] / handled if handled else None,
        "abandon_rate": c[C_ABANDONED] / resolved if resolved else None,
        "arrival_rate": c[C_OFFERED] / span if span > 0 else 0.0,
        "occupancy": c[C_HANDLE_SUM] / staffed_s if staffed_s > 0 else None,
        "span_s": span,
    }


def _predict(win, staffed, threshold, target):
    lam = win["arrival_rate"]
    aht = win["aht_s"]
    if aht is None or lam <= 0:
        return {
            "load_erlangs": 0.0,
            "agents": staffed,
            "p_wait": None,
            "asa_s": None,
            "service_level": None,
            "agents_needed": None,
        }
    a = lam * aht
    return {
        "load_erlangs": a,
        "agents": staffed,
        "p_wait": erlang.erlang_c(staffed, a),
        "asa_s": erlang.asa(staffed, a, aht),
        "service_level": erlang.service_level(staffed, a, aht, threshold),
        "agents_needed": erlang.agents_needed(a, aht, threshold, target),
    }
