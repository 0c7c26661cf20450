"""The gateway's side of the ACD: configuration mapping, the one timer, event dispatch.

The engine (acd_core) is sans-IO and strict about tenants: a queue belongs to
exactly one tenant and a task only reaches agents of its tenant, except in a
*shared* pool, which agents must be listed in. The configuration speaks more
loosely, so this module maps one onto the other:

* a configured queue with ``tenant = "*"`` becomes one engine queue per known
  tenant, named ``queue@tenant`` (each tenant keeps its own waiting line and
  statistics; an OEM's crash never waits behind another OEM's);
* a queue with a specific tenant maps to one engine queue of the same name;
* an escalation step with ``shared = true`` becomes a shared pool queue
  ``queue~poolN`` that every agent is a member of (the engine still requires
  the step's skills), which is how the emergency overflow pool of an
  outsourced centre is expressed;
* escalation ``after_s`` (time since arrival) becomes per-step timeouts;
* an agent with ``tenants = ["*"]`` is given every known tenant.

Known tenants: ``[terminals] default_tenant``, the values of ``[tenants]``,
and every tenant named by a queue or an agent.

Time: the engine runs on the event loop's monotonic clock. Sessions carry
wall-clock arrival times (they survive restarts); :meth:`Routing.mono`
converts.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from acd_core import impl as acd_impl
from acd_core.config import AgentConfig, EscalationStep, PriorityClass, QueueConfig

from .config import Config, QueueSpec

if TYPE_CHECKING:
    from .app import Gateway

log = logging.getLogger("telacd.routing")


def known_tenants(cfg: Config) -> list[str]:
    found = {cfg.terminals["default_tenant"], *cfg.tenants.values()}
    found |= {q.tenant for q in cfg.queues if q.tenant != "*"}
    found |= {t for a in cfg.agents for t in a.tenants if t != "*"}
    return sorted(found)


def engine_queue(spec: QueueSpec, tenant: str) -> str:
    """The engine queue a session of ``tenant`` waits in for configured queue ``spec``."""
    return spec.name if spec.tenant != "*" else f"{spec.name}@{tenant}"


def pool_name(spec: QueueSpec, step: int) -> str:
    return f"{spec.name}~pool{step}"


def gateway_queue(engine_name: str) -> str:
    """The configured queue an engine queue belongs to."""
    return engine_name.split("@", 1)[0].split("~", 1)[0]


def build(cfg: Config) -> tuple[list[QueueConfig], list[AgentConfig]]:
    """Engine queue and agent configurations for a gateway configuration."""
    tenants = known_tenants(cfg)
    queues: list[QueueConfig] = []
    for spec in cfg.queues:
        classes = tuple(
            PriorityClass(c.name, float(c.priority), c.target_s, preempt_wrapup=spec.preempt_wrapup)
            for c in spec.classes
        )
        common = dict(
            strategy=spec.strategy,
            classes=classes,
            default_class=spec.classes[-1].name,
            aging=spec.aging_per_s,
            edf=spec.order == "edf",
            offer_timeout=spec.offer_timeout_s,
            wrapup=spec.wrapup_s,
            max_no_answer=spec.max_no_answer,
            sticky_wait=spec.sticky_s,
            ring_step=spec.progressive_step_s,
            agent_order=spec.agents,
            sl_threshold=spec.sl_threshold_s,
        )
        for i, step in enumerate(spec.escalation):
            if step.shared:
                queues.append(
                    QueueConfig(
                        name=pool_name(spec, i),
                        tenant="*",
                        shared=True,
                        skills=dict(step.skills if step.skills is not None else spec.skills),
                        **common,
                    )
                )
        for tenant in [spec.tenant] if spec.tenant != "*" else tenants:
            steps = _steps(cfg, spec, tenant)
            queues.append(
                QueueConfig(
                    name=engine_queue(spec, tenant),
                    tenant=tenant,
                    skills=dict(spec.skills),
                    steps=steps,
                    **common,
                )
            )
    agents = []
    for a in cfg.agents:
        agent_tenants = tuple(tenants) if "*" in a.tenants else tuple(a.tenants)
        members = tuple(q.name for q in queues if q.shared or q.tenant in agent_tenants)
        agents.append(
            AgentConfig(
                id=a.id,
                tenants=agent_tenants,
                skills=dict(a.skills),
                capacity=dict(a.capacity),
                queues=members,
                wrapup=a.wrapup_s,
            )
        )
    return queues, agents


def _steps(cfg: Config, spec: QueueSpec, tenant: str) -> tuple[EscalationStep, ...]:
    if not spec.escalation:
        return ()
    steps = [EscalationStep(timeout=spec.escalation[0].after_s)]
    for i, step in enumerate(spec.escalation):
        nxt = spec.escalation[i + 1].after_s if i + 1 < len(spec.escalation) else None
        timeout = None if nxt is None else nxt - step.after_s
        if step.shared:
            target = pool_name(spec, i)
        elif step.queue:
            other = cfg.queue(step.queue)
            target = (
                engine_queue(other, tenant) if other.tenant == "*" or other.tenant == tenant else other.name
            )
        else:
            target = None
        steps.append(
            EscalationStep(
                timeout=timeout,
                queue=target,
                skills=dict(step.skills) if step.skills is not None else None,
                agents=tuple(step.agents) or None,
            )
        )
    return tuple(steps)


class Routing:
    """Owns the engine (ARCHITECTURE.md rule 4: one writer per queue), its timer and its events."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.engine_module = acd_impl.engine()
        self.compiled = acd_impl.is_compiled(self.engine_module)
        self.loop = gw.loop
        # wall = mono + offset, fixed at start
        self.offset = time.time() - self.loop.time()
        self.router = self.engine_module.Router(window=900.0, slots=15, start=self.loop.time())
        self.Task = self.engine_module.Task
        self._timer: Any = None
        self._timer_at = float("inf")
        self._stopped = False
        self.queue_configs: dict[str, QueueConfig] = {}
        self.agent_configs: dict[str, AgentConfig] = {}
        self.tenants: list[str] = []

    # -- clock -------------------------------------------------------------------------------

    def now(self) -> float:
        return self.loop.time()

    def mono(self, wall: float) -> float:
        return wall - self.offset

    def wall(self, mono: float) -> float:
        return mono + self.offset

    # -- configuration -------------------------------------------------------------------------

    def apply(self, cfg: Config) -> None:
        """Install or reload queues and agents; agents keep their state and tasks in hand."""
        queues, agents = build(cfg)
        now = self.now()
        r = self.router
        events: list[Any] = []
        # new queues go in without escalation steps first, so a step may target any queue
        for q in queues:
            if q.name not in self.queue_configs:
                r.add_queue(dataclasses.replace(q, steps=()))
        for q in queues:
            old = self.queue_configs.get(q.name)
            if old != q and (old is not None or q.steps):
                events += r.update_queue(q, now) or []
            self.queue_configs[q.name] = q
        for a in agents:
            if a.id in self.agent_configs:
                if self.agent_configs[a.id] != a:
                    events += r.update_agent(a, now) or []
            else:
                r.add_agent(a, now)
            self.agent_configs[a.id] = a
        wanted_agents = {a.id for a in agents}
        for aid in list(self.agent_configs):
            if aid not in wanted_agents:
                events += r.remove_agent(aid, now) or []
                del self.agent_configs[aid]
        wanted_queues = {q.name for q in queues}
        for name in list(self.queue_configs):
            if name not in wanted_queues:
                try:
                    events += r.remove_queue(name) or []
                    del self.queue_configs[name]
                except (ValueError, KeyError) as e:  # tasks still wait there: keep it until they are gone
                    log.warning("queue %s kept after reload: %s", name, e)
        self.tenants = known_tenants(cfg)
        self.dispatch(events)

    # -- calls -------------------------------------------------------------------------------------

    def dispatch(self, events: list[Any]) -> None:
        if events:
            self.gw.sessions.on_routing(events)
        self.arm()

    def stop(self) -> None:
        """The gateway is stopping: no routing timer fires from now on (its store is about to close)."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = float("inf")

    def arm(self) -> None:
        if self._stopped:
            return
        deadline = self.router.next_deadline()
        if deadline is None or deadline == float("inf"):
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
                self._timer_at = float("inf")
            return
        if self._timer is not None:
            if self._timer_at == deadline:
                return
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        self.dispatch(self.router.handle_timer(self.now()))

    # Every mutating call dispatches the events it caused and re-arms the timer.

    def _do(self, events: list[Any]) -> list[Any]:
        self.dispatch(events)
        return events

    def accept(self, offer_id: str) -> list[Any]:
        return self._do(self.router.accept(offer_id, self.now()))

    def reject(self, offer_id: str) -> list[Any]:
        return self._do(self.router.reject(offer_id, self.now()))

    def complete(self, task_id: str, disposition: str) -> list[Any]:
        return self._do(self.router.complete(task_id, self.now(), disposition))

    def cancel(self, task_id: str, reason: str) -> list[Any]:
        return self._do(self.router.cancel(task_id, self.now(), reason))

    def reprioritise(self, task_id: str, priority: float | None = None, cls: str | None = None) -> list[Any]:
        return self._do(self.router.reprioritise(task_id, self.now(), priority, cls))

    def login(self, agent_id: str, state: str = "available", reason: str = "") -> list[Any]:
        return self._do(self.router.login(agent_id, self.now(), state, reason))

    def set_state(self, agent_id: str, state: str, reason: str = "") -> list[Any]:
        return self._do(self.router.set_state(agent_id, state, self.now(), reason))

    def logout(self, agent_id: str, reason: str = "logout") -> list[Any]:
        return self._do(self.router.logout(agent_id, self.now(), reason))

    def disconnect(self, agent_id: str, grace: float) -> list[Any]:
        return self._do(self.router.disconnect(agent_id, self.now(), grace))

    def task(self, session: Any) -> Any:
        spec = self.gw.cfg.queue(session.queue)
        tenant = session.tenant
        if spec is None:
            raise KeyError(f"no queue named {session.queue!r}")
        if spec.tenant != "*" and spec.tenant != tenant:
            log.warning(
                "session %s of tenant %s routed to queue %s of tenant %s",
                session.id,
                tenant,
                spec.name,
                spec.tenant,
            )
            tenant = spec.tenant
        return self.Task(
            session.id,
            engine_queue(spec, tenant),
            cls=session.klass or None,
            priority=session.priority,
            skills=session.skills or None,
            channel=session.channel,
            tenant=tenant,
            arrival=self.mono(session.arrival),
            vehicle=session.phone,
            incident_key=session.incident,
            attributes=None,
        )

    def enqueue(self, session: Any) -> list[Any]:
        events = self.router.enqueue(self.task(session), self.now())
        self.dispatch(events)
        return events

    def restore_assigned(self, session: Any, agent_id: str, grace: float) -> list[Any]:
        events = self.router.restore_assigned(self.task(session), agent_id, self.now(), grace)
        self.dispatch(events)
        return events
