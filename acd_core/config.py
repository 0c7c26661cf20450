"""Configuration records for queues and agents (plain frozen dataclasses).

These are what the gateway loads from its configuration and hands to
``Router.add_queue`` / ``update_queue`` / ``add_agent`` / ``update_agent``.
The engine copies what it needs into its own typed records, so a reload is
"build a new config, call update_*": the agent keeps its state and the tasks
in its hands, waiting tasks keep their place.

Validation happens here, once, so the hot path never checks configuration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

STRATEGIES = (
    "longest-idle",  # least loaded, then longest since its last task ended (FS default, TaskRouter default)
    "fewest-answered",  # fewest tasks answered since login (Asterisk fewestcalls)
    "least-talk-time",  # least talk time since login (FS agent-with-least-talk-time)
    "round-robin",  # least recently offered
    "top-down",  # QueueConfig.agent_order first, in that order; then registration order
    "most-skilled",  # highest sum of levels on the required skills (specialists first)
    "random",  # uniformly random among eligible agents (seeded: reproducible)
    "ring-all",  # offer to every eligible agent; first accept wins, the rest are withdrawn
    "ring-progressively",  # offer to the best agent, add the next best every ring_step seconds
)

MAX_SKILL_LEVEL = 10


@dataclass(frozen=True)
class PriorityClass:
    """A priority class of a queue (e.g. crash, sos, service).

    ``priority``: larger is served first (strict, before arrival order).
    ``target``: service-level target in seconds. It sets the task's deadline
    (arrival + target, used by EDF order) and the threshold T of this class's
    service level; ``None`` uses the queue's ``sl_threshold`` and no deadline.
    ``preempt_wrapup``: a task of this class that finds no available agent may
    take one out of wrap-up (the one whose wrap-up would end first).
    """

    name: str
    priority: float = 0.0
    target: float | None = None
    preempt_wrapup: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a priority class needs a name")
        if not math.isfinite(self.priority):
            raise ValueError(f"class {self.name!r}: priority must be finite")
        if self.target is not None and not self.target > 0:
            raise ValueError(f"class {self.name!r}: target must be > 0 seconds")


@dataclass(frozen=True)
class EscalationStep:
    """One step of a queue's escalation ladder.

    A task starts at step 0 and stays ``timeout`` seconds at each step (``None``:
    the last step, no timeout). A step's target replaces, for the task, where
    it waits and who may take it; ``None`` fields inherit the queue's own:

    ``queue``: wait in this queue instead (same tenant, or a ``shared`` pool: the
    emergency overflow pool of an outsourced centre); ``skills``: required
    skills ``{name: min level}`` instead of the queue's plus the task's;
    ``agents``: only these agent ids (e.g. supervisors).

    Moving to the next step keeps the task's arrival time, hence its place.
    """

    timeout: float | None
    queue: str | None = None
    skills: Mapping[str, int] | None = None
    agents: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError("an escalation step's timeout must be > 0 seconds (or None)")
        if self.skills is not None:
            _check_levels(self.skills, "escalation step")
        if self.agents is not None:
            object.__setattr__(self, "agents", tuple(self.agents))


@dataclass(frozen=True)
class QueueConfig:
    """A queue: who may take its tasks, in which order, and what happens when nobody does.

    Tasks are ordered by effective priority (``priority + aging × seconds
    waited``), then by arrival (or, with ``edf``, by deadline = arrival + the
    class target), then by the order they were queued.
    """

    name: str
    tenant: str = "default"
    shared: bool = False  # an overflow pool: tasks of any tenant; members must list it in AgentConfig.queues
    strategy: str = "longest-idle"
    skills: Mapping[str, int] = field(default_factory=dict)  # required of every task of the queue
    classes: tuple[PriorityClass, ...] = (PriorityClass("normal"),)
    default_class: str | None = None  # None: the first of ``classes``
    aging: float = 0.0  # priority points gained per second of waiting
    edf: bool = False  # among equal effective priority, earliest deadline first
    steps: tuple[EscalationStep, ...] = ()
    offer_timeout: float = 20.0  # seconds an agent has to accept an offer
    wrapup: float = 0.0  # after-call work, seconds (AgentConfig.wrapup overrides)
    max_no_answer: int = 3  # consecutive rejects/timeouts before the agent goes on break ("no_answer")
    sticky_wait: float = 0.0  # seconds a task waits for the agent that last handled its vehicle/incident
    sticky_window: float = 3600.0  # how recent "last handled" must be
    ring_step: float = 5.0  # ring-progressively: seconds between adding agents
    retry_delay: float = 5.0  # a task every available agent declined is re-offered to them after this
    agent_order: tuple[str, ...] = ()  # top-down order
    sl_threshold: float = 20.0  # T of "answered within T" for classes without a target
    sl_target: float = 0.8  # the X of X/T, for the "agents needed" prediction

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a queue needs a name")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"queue {self.name!r}: unknown strategy {self.strategy!r} (one of {STRATEGIES})")
        _check_levels(self.skills, f"queue {self.name!r}")
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "agent_order", tuple(self.agent_order))
        if not self.classes:
            raise ValueError(f"queue {self.name!r}: needs at least one priority class")
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"queue {self.name!r}: duplicate class names")
        if self.default_class is not None and self.default_class not in names:
            raise ValueError(f"queue {self.name!r}: default_class {self.default_class!r} is not a class")
        for value, what in (
            (self.offer_timeout, "offer_timeout"),
            (self.ring_step, "ring_step"),
            (self.retry_delay, "retry_delay"),
            (self.sl_threshold, "sl_threshold"),
        ):
            if not value > 0:
                raise ValueError(f"queue {self.name!r}: {what} must be > 0")
        for value, what in (
            (self.wrapup, "wrapup"),
            (self.sticky_wait, "sticky_wait"),
            (self.sticky_window, "sticky_window"),
            (self.aging, "aging"),
        ):
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"queue {self.name!r}: {what} must be >= 0")
        if self.max_no_answer < 1:
            raise ValueError(f"queue {self.name!r}: max_no_answer must be >= 1")
        if not 0 < self.sl_target < 1:
            raise ValueError(f"queue {self.name!r}: sl_target must be in (0, 1)")
        for i, step in enumerate(self.steps):
            if step.timeout is None and i != len(self.steps) - 1:
                raise ValueError(f"queue {self.name!r}: only the last escalation step may have no timeout")

    def class_named(self, name: str | None) -> PriorityClass:
        if name is None:
            name = self.default_class or self.classes[0].name
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(f"queue {self.name!r} has no class {name!r}")


@dataclass(frozen=True)
class AgentConfig:
    """An agent (a person at a desk): what it may take and how much at once.

    ``queues``: the queues it serves; ``None`` means every non-shared queue of
    its tenants (a shared overflow pool is only ever served when listed).
    ``capacity``: tasks at once per channel (e.g. voice 1, chat 3); a channel
    not listed is one the agent does not take.
    """

    id: str
    tenants: tuple[str, ...] = ("default",)
    skills: Mapping[str, int] = field(default_factory=dict)
    capacity: Mapping[str, int] = field(default_factory=lambda: {"voice": 1})
    queues: tuple[str, ...] | None = None
    wrapup: float | None = None

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("an agent needs an id")
        object.__setattr__(self, "tenants", tuple(self.tenants))
        if self.queues is not None:
            object.__setattr__(self, "queues", tuple(self.queues))
        _check_levels(self.skills, f"agent {self.id!r}")
        for channel, n in self.capacity.items():
            if not isinstance(n, int) or n < 0:
                raise ValueError(f"agent {self.id!r}: capacity of {channel!r} must be an int >= 0")
        if self.wrapup is not None and not self.wrapup >= 0:
            raise ValueError(f"agent {self.id!r}: wrapup must be >= 0")


def _check_levels(skills: Mapping[str, int], where: str) -> None:
    for name, level in skills.items():
        if not isinstance(level, int) or not 1 <= level <= MAX_SKILL_LEVEL:
            raise ValueError(f"{where}: skill {name!r} level must be an int in 1..{MAX_SKILL_LEVEL}")
