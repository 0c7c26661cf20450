"""The public API of the routing engine: the compiled build when available.

Import from here (or from ``acd_core``), not from ``_engine``: this module
picks the compiled engine, or the reference under ``TELACD_PURE_PYTHON=1``
or when the extension was not built. See docs/acd.md for a walk-through.
"""

from __future__ import annotations

from acd_core import PUBLIC
from acd_core import impl as _impl
from acd_core.config import STRATEGIES as STRATEGIES  # re-exported (the names are acd_core.PUBLIC)
from acd_core.config import AgentConfig as AgentConfig
from acd_core.config import EscalationStep as EscalationStep
from acd_core.config import PriorityClass as PriorityClass
from acd_core.config import QueueConfig as QueueConfig

_engine = _impl.engine()
COMPILED: bool = _impl.is_compiled(_engine)

Router = _engine.Router
Task = _engine.Task
Event = _engine.Event
TaskQueued = _engine.TaskQueued
OfferCreated = _engine.OfferCreated
OfferWithdrawn = _engine.OfferWithdrawn
TaskAssigned = _engine.TaskAssigned
TaskRestored = _engine.TaskRestored
TaskEscalated = _engine.TaskEscalated
TaskMerged = _engine.TaskMerged
TaskReprioritised = _engine.TaskReprioritised
TaskAbandoned = _engine.TaskAbandoned
TaskCancelled = _engine.TaskCancelled
TaskCompleted = _engine.TaskCompleted
TaskRequeued = _engine.TaskRequeued
AgentStateChanged = _engine.AgentStateChanged
WrapupEnded = _engine.WrapupEnded
STATE_NAMES: tuple[str, ...] = _engine.STATE_NAMES

__all__ = list(PUBLIC)
