"""Discrete-event simulation of a call centre on the real routing engine.

The simulator owns virtual time and three kinds of events (an arrival, the end
of a call, a caller's patience running out); everything about routing is the
engine's: tasks are enqueued, offered and assigned by the same ``Router`` the
gateway uses, and the simulated agents accept every offer at once. So when the
measured waits agree with Erlang C (and, with priority classes, with Cobham's
M/M/N non-preemptive priority result) the engine is shown to be work-conserving
and to serve in the order it claims; tests/acd_core/test_sim.py holds it to
that over a million calls.

Model: Poisson arrivals (rate ``arrival_rate``), exponential handle times
(mean ``handle_time``), ``agents`` identical agents, one queue whose classes
are served in strict priority in the order given (FIFO within a class), and
optionally exponential patience (mean ``patience``): a caller still waiting
when it runs out abandons. The measures are taken by the simulator from the
events, independently of the engine's own statistics.
"""

from __future__ import annotations

import heapq
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from acd_core import erlang
from acd_core.config import AgentConfig, PriorityClass, QueueConfig

_ARRIVAL, _END, _ABANDON = 0, 1, 2


@dataclass(frozen=True)
class SimConfig:
    agents: int
    arrival_rate: float  # calls per second
    handle_time: float  # mean seconds
    calls: int
    seed: int = 1
    sl_threshold: float = 20.0
    strategy: str = "longest-idle"
    classes: Sequence[tuple[str, float]] = (("default", 1.0),)  # (name, share), highest priority first
    patience: float | None = None  # mean seconds; None: nobody abandons

    def __post_init__(self) -> None:
        if self.agents < 1 or self.calls < 1:
            raise ValueError("agents and calls must be >= 1")
        if not (self.arrival_rate > 0 and self.handle_time > 0):
            raise ValueError("arrival rate and handle time must be > 0")
        if not self.classes or any(s <= 0 for _, s in self.classes):
            raise ValueError("classes need positive shares")
        if self.patience is not None and not self.patience > 0:
            raise ValueError("patience must be > 0")


@dataclass
class _Tally:
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    waited: int = 0
    wait_sum: float = 0.0
    within: int = 0
    waits: list[float] = field(default_factory=list)


def parse_classes(text: str) -> list[tuple[str, float]]:
    """``"crash:0.2,normal:0.8"`` -> ``[("crash", 0.2), ("normal", 0.8)]``."""
    out = []
    for part in text.split(","):
        name, _, share = part.strip().partition(":")
        if not name or not share:
            raise ValueError(f"class {part!r}: expected name:share")
        out.append((name, float(share)))
    return out


def simulate(
    cfg: SimConfig,
    engine: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the simulation; return the report (the ``telacd simulate --json`` object).

    ``engine``: the engine module (default: the compiled one when built).
    ``progress(done, total)`` is called about every 2% of arrivals.
    """
    if engine is None:
        from acd_core import impl

        engine = impl.engine()
    rng = random.Random(cfg.seed)
    router = engine.Router(seed=cfg.seed, start=0.0)
    names = [name for name, _ in cfg.classes]
    total_share = sum(share for _, share in cfg.classes)
    cumulative = []
    acc = 0.0
    for _, share in cfg.classes:
        acc += share / total_share
        cumulative.append(acc)
    cumulative[-1] = 1.0
    n_cls = len(names)
    router.add_queue(
        QueueConfig(
            "sim",
            strategy=cfg.strategy,
            # strict priority in the order given: the first class gets the highest number
            classes=tuple(PriorityClass(name, float(n_cls - i)) for i, name in enumerate(names)),
            offer_timeout=1e12,  # simulated agents answer at once; no offer ever times out
            sl_threshold=cfg.sl_threshold,
        )
    )
    for i in range(cfg.agents):
        router.add_agent(AgentConfig(f"a{i}"))
        router.login(f"a{i}", 0.0)

    Task = engine.Task
    OfferCreated = engine.OfferCreated
    TaskAssigned = engine.TaskAssigned
    expo = rng.expovariate
    rnd = rng.random
    lam = cfg.arrival_rate
    mu = 1.0 / cfg.handle_time
    theta = None if cfg.patience is None else 1.0 / cfg.patience
    threshold = cfg.sl_threshold

    tallies = [_Tally() for _ in names]
    cls_of: dict[int, int] = {}
    waiting: set[int] = set()
    busy_time = 0.0
    heap: list[tuple[float, int, int, int]] = []  # (time, seq, kind, task id)
    seq = 0
    heapq.heappush(heap, (expo(lam), 0, _ARRIVAL, 0))
    arrived = 0
    step = max(1, cfg.calls // 50)
    now = 0.0
    accept = router.accept

    def route(events: list[Any], t: float) -> None:
        # the simulated agents take every offer the moment it is made; what an
        # accept returns (under ring-all: withdrawals, and new offers to the
        # agents thus freed) is routed the same way
        nonlocal seq, busy_time
        pending = list(events)
        i = 0
        while i < len(pending):
            ev = pending[i]
            i += 1
            kind = type(ev)
            if kind is OfferCreated:
                if ev.task_id not in waiting:
                    continue  # ring-all: another agent already took it
                waiting.discard(ev.task_id)
                pending.extend(accept(ev.offer_id, t))
            elif kind is TaskAssigned:
                tid = ev.task_id
                tally = tallies[cls_of[tid]]
                wait = ev.wait
                tally.answered += 1
                tally.wait_sum += wait
                if wait > 0.0:
                    tally.waited += 1
                if wait <= threshold:
                    tally.within += 1
                service = expo(mu)
                busy_time += service
                seq += 1
                heapq.heappush(heap, (t + service, seq, _END, tid))

    while heap:
        now, _, kind, tid = heapq.heappop(heap)
        deadline = router.next_deadline()
        if deadline is not None and deadline <= now:
            route(router.handle_timer(now), now)
        if kind == _ARRIVAL:
            u = rnd()
            k = 0
            while u > cumulative[k]:
                k += 1
            cls_of[tid] = k
            tallies[k].offered += 1
            waiting.add(tid)
            if theta is not None:
                seq += 1
                heapq.heappush(heap, (now + expo(theta), seq, _ABANDON, tid))
            route(router.enqueue(Task(tid, "sim", names[k]), now), now)
            arrived += 1
            if arrived < cfg.calls:
                seq += 1
                heapq.heappush(heap, (now + expo(lam), seq, _ARRIVAL, arrived))
            if progress is not None and arrived % step == 0:
                progress(arrived, cfg.calls)
        elif kind == _END:
            route(router.complete(tid, now), now)
            del cls_of[tid]
        elif tid in waiting:  # patience ran out before an agent took the call
            waiting.discard(tid)
            router.abandon(tid, now)
            tallies[cls_of.pop(tid)].abandoned += 1

    return _report(cfg, tallies, names, busy_time, now)


def _report(cfg: SimConfig, tallies: list[_Tally], names: list[str], busy: float, end: float) -> dict:
    offered = sum(t.offered for t in tallies)
    answered = sum(t.answered for t in tallies)
    abandoned = sum(t.abandoned for t in tallies)
    waited = sum(t.waited for t in tallies)
    wait_sum = sum(t.wait_sum for t in tallies)
    within = sum(t.within for t in tallies)
    a = cfg.arrival_rate * cfg.handle_time
    n = cfg.agents
    return {
        "offered": offered,
        "answered": answered,
        "abandoned": abandoned,
        "asa_s": wait_sum / answered if answered else 0.0,
        "p_wait": waited / answered if answered else 0.0,
        # answered within T over answered + abandoned (ACD_ANCHORS.md §4)
        "service_level": within / (answered + abandoned) if answered + abandoned else 0.0,
        "occupancy": busy / (n * end) if end > 0 else 0.0,
        "classes": {
            name: {
                "offered": t.offered,
                "answered": t.answered,
                "asa_s": t.wait_sum / t.answered if t.answered else 0.0,
                "p_wait": t.waited / t.answered if t.answered else 0.0,
            }
            for name, t in zip(names, tallies)
        },
        "erlang_c": {
            "p_wait": erlang.erlang_c(n, a),
            "asa_s": erlang.asa(n, a, cfg.handle_time),
            "service_level": erlang.service_level(n, a, cfg.handle_time, cfg.sl_threshold),
        },
    }


def cobham(cfg: SimConfig) -> dict[str, float]:
    """Per-class mean wait predicted by M/M/N non-preemptive priority."""
    total = sum(s for _, s in cfg.classes)
    rates = [cfg.arrival_rate * s / total for _, s in cfg.classes]
    waits = erlang.priority_waits(cfg.agents, rates, cfg.handle_time)
    return {name: w for (name, _), w in zip(cfg.classes, waits)}


def stderr_progress(label: str = "simulate") -> Callable[[int, int], None]:
    """A progress callback printing ``done/total, rate`` on one stderr line."""
    start = time.perf_counter()
    tty = sys.stderr.isatty()
    last = [0]

    def report(done: int, total: int) -> None:
        # on a terminal one line redrawn; in a log one line per 10%
        if not tty and done < total and (done - last[0]) * 10 < total:
            return
        last[0] = done
        elapsed = time.perf_counter() - start
        rate = done / elapsed if elapsed > 0 else math.inf
        text = f"{label}: {done:,}/{total:,} calls ({rate:,.0f}/s)"
        if tty:
            print("\r" + text, end="\n" if done >= total else "", file=sys.stderr, flush=True)
        else:
            print(text, file=sys.stderr, flush=True)

    return report
