"""acd_core: the automatic call distributor (no asyncio, no clock: ``now`` is an argument).

The public API (``Router``, ``Task``, the configuration records and the event
classes) is re-exported from :mod:`acd_core.routing` on first use, so that
importing a submodule (``acd_core.erlang``, ``acd_core.config``) does not
load the engine.
"""

from __future__ import annotations

import importlib
from typing import Any

# The public names, defined once: acd_core.routing exports exactly these.
PUBLIC: tuple[str, ...] = tuple(
    [
        "COMPILED",
        "STATE_NAMES",
        "STRATEGIES",
        "AgentConfig",
        "AgentStateChanged",
        "EscalationStep",
        "Event",
        "OfferCreated",
        "OfferWithdrawn",
        "PriorityClass",
        "QueueConfig",
        "Router",
        "Task",
        "TaskAbandoned",
        "TaskAssigned",
        "TaskCancelled",
        "TaskCompleted",
        "TaskEscalated",
        "TaskMerged",
        "TaskQueued",
        "TaskReprioritised",
        "TaskRequeued",
        "TaskRestored",
        "WrapupEnded",
    ]
)


def __getattr__(name: str) -> Any:
    if name in PUBLIC:
        return getattr(importlib.import_module("acd_core.routing"), name)
    raise AttributeError(f"module 'acd_core' has no attribute {name!r}")
