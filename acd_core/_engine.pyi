# Types of the routing engine (compiled from _engine.py with _engine.pxd); see docs/acd.md.
from collections.abc import Hashable, Mapping
from typing import Any

from acd_core.config import AgentConfig, QueueConfig

STATE_NAMES: tuple[str, ...]
TASK_STATE_NAMES: tuple[str, ...]

class Event:
    at: float
    _fields: tuple[str, ...]
    @property
    def kind(self) -> str: ...
    def as_dict(self) -> dict[str, Any]: ...

class TaskQueued(Event):
    task_id: Hashable
    queue: str
    cls: str
    priority: float
    arrival: float

class OfferCreated(Event):
    offer_id: int
    task_id: Hashable
    agent_id: str
    expires_at: float

class OfferWithdrawn(Event):
    offer_id: int
    task_id: Hashable
    agent_id: str
    reason: str

class TaskAssigned(Event):
    task_id: Hashable
    agent_id: str
    offer_id: int
    wait: float

class TaskRestored(Event):
    task_id: Hashable
    agent_id: str

class TaskEscalated(Event):
    task_id: Hashable
    step: int
    queue: str
    reason: str

class TaskMerged(Event):
    task_id: Hashable
    into: Hashable
    incident_key: Hashable
    priority: float

class TaskReprioritised(Event):
    task_id: Hashable
    cls: str
    priority: float

class TaskAbandoned(Event):
    task_id: Hashable
    wait: float

class TaskCancelled(Event):
    task_id: Hashable
    reason: str

class TaskCompleted(Event):
    task_id: Hashable
    agent_id: str
    disposition: str
    handle_time: float

class TaskRequeued(Event):
    task_id: Hashable
    agent_id: str
    reason: str

class AgentStateChanged(Event):
    agent_id: str
    old: str
    new: str
    reason: str

class WrapupEnded(Event):
    agent_id: str
    reason: str

class Task:
    id: Hashable
    queue: str
    cls: str | None
    priority: float
    skills: Mapping[str, int] | None
    channel: str
    tenant: str | None
    arrival: float
    deadline: float
    vehicle: Hashable | None
    incident_key: Hashable | None
    attributes: dict[str, Any] | None
    state: int
    def __init__(
        self,
        id: Hashable,
        queue: str,
        cls: str | None = ...,
        priority: float | None = ...,
        skills: Mapping[str, int] | None = ...,
        channel: str = ...,
        tenant: str | None = ...,
        arrival: float | None = ...,
        deadline: float | None = ...,
        vehicle: Hashable | None = ...,
        incident_key: Hashable | None = ...,
        attributes: dict[str, Any] | None = ...,
    ) -> None: ...

class Router:
    def __init__(self, window: float = ..., slots: int = ..., seed: int = ..., start: float = ...) -> None: ...
    def add_queue(self, config: QueueConfig) -> list[Event]: ...
    def update_queue(self, config: QueueConfig, now: float) -> list[Event]: ...
    def remove_queue(self, name: str) -> list[Event]: ...
    def add_agent(self, config: AgentConfig, now: float = ...) -> list[Event]: ...
    def update_agent(self, config: AgentConfig, now: float) -> list[Event]: ...
    def remove_agent(self, agent_id: str, now: float) -> list[Event]: ...
    def enqueue(self, task: Task, now: float) -> list[Event]: ...
    def restore_assigned(self, task: Task, agent_id: str, now: float, grace: float) -> list[Event]: ...
    def accept(self, offer_id: int, now: float) -> list[Event]: ...
    def reject(self, offer_id: int, now: float) -> list[Event]: ...
    def complete(self, task_id: Hashable, now: float, disposition: str = ...) -> list[Event]: ...
    def abandon(self, task_id: Hashable, now: float) -> list[Event]: ...
    def cancel(self, task_id: Hashable, now: float, reason: str = ...) -> list[Event]: ...
    def reprioritise(
        self, task_id: Hashable, now: float, priority: float | None = ..., cls: str | None = ...
    ) -> list[Event]: ...
    def login(self, agent_id: str, now: float, state: str = ..., reason: str = ...) -> list[Event]: ...
    def set_state(self, agent_id: str, state: str, now: float, reason: str = ...) -> list[Event]: ...
    def end_wrapup(self, agent_id: str, now: float) -> list[Event]: ...
    def logout(self, agent_id: str, now: float, reason: str = ...) -> list[Event]: ...
    def disconnect(self, agent_id: str, now: float, grace: float) -> list[Event]: ...
    def next_deadline(self) -> float | None: ...
    def handle_timer(self, now: float) -> list[Event]: ...
    def task_info(self, task_id: Hashable) -> dict[str, Any]: ...
    def has_task(self, task_id: Hashable) -> bool: ...
    def task_ids(self) -> list[Hashable]: ...
    def agent_info(self, agent_id: str, now: float) -> dict[str, Any]: ...
    def agents(self, now: float) -> list[dict[str, Any]]: ...
    def queue_names(self) -> list[str]: ...
    def waiting(self, queue: str) -> list[Hashable]: ...
    def stats(self, now: float) -> dict[str, Any]: ...
