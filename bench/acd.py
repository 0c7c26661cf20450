"""``telacd bench acd``: ACD engine throughput and decision latency, compiled vs reference.

The centre: 1,000 agents, 50 queues, 20 skills. Queue i requires skill
``s{i % 20}`` at level ``1 + i // 20`` (1..3) and has two classes (crash,
priority 10, and normal); each agent has 4 of the 20 skills at levels 1..10
(seeded) and serves every queue it is skilled for, which makes about 8 queues
per agent. Voice only, no wrap-up, offers never time out.

* cycles/s: one full cycle is ``enqueue`` (the engine picks an agent and makes
  the offer) → ``accept`` → ``complete``, with every agent free; tasks go to
  the 50 queues in turn, driver loop included (building the Task, reading
  the offer id). The loop runs in 5 chunks; the best chunk's rate is
  reported (the mean goes to stderr).
* decision latency at N waiting: N tasks wait (10 % crash) while every agent
  is busy; then, repeatedly, one agent completes its task and the engine picks
  that agent's next task (highest priority, then oldest, across the buckets it
  is eligible for) and makes the offer. The timed call is that ``complete``;
  after it the offer is accepted and one new task is queued (both untimed),
  so the depth stays at N. Percentiles of the per-call time.

``--json`` prints ``{"compiled": {"cycles_per_s", "decision_p99_us": {"1000",
"100000", "1000000"}}, "reference": {...}}``; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from typing import Any

from acd_core import impl as _impl
from acd_core.config import AgentConfig, PriorityClass, QueueConfig

N_AGENTS = 50 * 20
N_QUEUES = 50
N_SKILLS = 20
DEPTHS = (1_000, 100_000, 1_000_000)
# cycles are timed in chunks and the best chunk is reported (timeit's rule: on a
# shared machine the slow chunks measure the neighbours, not the engine); the
# mean over all chunks is printed too
CHUNKS = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--cycles", type=int, default=300_000, help="full cycles, compiled (default 300000)")
    parser.add_argument(
        "--ref-cycles", type=int, default=20_000, help="full cycles, reference (default 20000)"
    )
    parser.add_argument("--decisions", type=int, default=20_000, help="timed decisions per depth, compiled")
    parser.add_argument(
        "--ref-decisions", type=int, default=3_000, help="timed decisions per depth, reference"
    )
    parser.add_argument(
        "--depths",
        default=",".join(str(d) for d in DEPTHS),
        help="waiting-task depths to measure (default 1000,100000,1000000)",
    )
    parser.add_argument("--only", choices=("compiled", "reference"), help="measure one implementation")
    parser.add_argument("--seed", type=int, default=7)


def _log(msg: str) -> None:
    print(f"bench acd: {msg}", file=sys.stderr, flush=True)


def build(mod: Any, seed: int) -> tuple[Any, list[str], float]:
    """The centre above; returns (router, agent ids, mean queues per agent)."""
    rng = random.Random(seed)
    r = mod.Router(seed=seed)
    classes = (PriorityClass("crash", 10.0, 15.0), PriorityClass("normal", 0.0, 60.0))
    for i in range(N_QUEUES):
        r.add_queue(
            QueueConfig(
                f"q{i}",
                skills={f"s{i % N_SKILLS}": 1 + i // N_SKILLS},
                classes=classes,
                default_class="normal",
                offer_timeout=1e9,
            )
        )
    agents = []
    served = 0
    for i in range(N_AGENTS):
        skills = {f"s{k}": rng.randint(1, 10) for k in rng.sample(range(N_SKILLS), 4)}
        served += sum(1 for q in range(N_QUEUES) if skills.get(f"s{q % N_SKILLS}", 0) >= 1 + q // N_SKILLS)
        aid = f"a{i}"
        r.add_agent(AgentConfig(aid, skills=skills))
        agents.append(aid)
    return r, agents, served / N_AGENTS


def cycles_per_s(mod: Any, cycles: int, seed: int) -> float:
    r, agents, _ = build(mod, seed)
    for aid in agents:
        r.login(aid, 0.0)
    Task = mod.Task
    OfferCreated = mod.OfferCreated
    queues = [f"q{i}" for i in range(N_QUEUES)]
    enqueue, accept, complete = r.enqueue, r.accept, r.complete
    gc.collect()
    now = 1.0
    rates = []
    chunk = max(1, cycles // CHUNKS)
    i = 0
    for _ in range(CHUNKS):
        start = time.perf_counter()
        for _ in range(chunk):
            ev = enqueue(Task(i, queues[i % N_QUEUES]), now)
            offer = ev[1]
            assert type(offer) is OfferCreated
            accept(offer.offer_id, now)
            complete(i, now)
            now += 1e-3
            i += 1
        rates.append(chunk / (time.perf_counter() - start))
    rates.sort()
    return rates[-1], sum(rates) / len(rates)


def decision_latency(mod: Any, depth: int, decisions: int, seed: int, label: str) -> dict[str, float]:
    rng = random.Random(seed + depth)
    r, agents, _ = build(mod, seed)
    Task = mod.Task
    OfferCreated = mod.OfferCreated
    # everyone on break while the backlog builds (no decisions yet)
    for aid in agents:
        r.login(aid, 0.0, state="break", reason="bench")
    queues = [f"q{i}" for i in range(N_QUEUES)]
    total = depth + N_AGENTS + decisions
    t0 = time.perf_counter()
    now = 0.0
    next_id = 0

    def new_task() -> Any:
        nonlocal next_id, now
        next_id += 1
        now += 1e-4
        cls = "crash" if rng.random() < 0.1 else "normal"
        return Task(next_id, queues[rng.randrange(N_QUEUES)], cls)

    fill = depth + N_AGENTS  # the agents take N_AGENTS of them when they come back
    step = max(1, fill // 10)
    for i in range(fill):
        r.enqueue(new_task(), now)
        if (i + 1) % step == 0 and fill >= 200_000:
            _log(f"{label}: queued {i + 1:,}/{fill:,} ({time.perf_counter() - t0:.0f} s)")
    holding: dict[str, Any] = {}  # agent -> task id in hand
    for aid in agents:
        for ev in r.set_state(aid, "available", now):
            if type(ev) is OfferCreated:
                r.accept(ev.offer_id, now)
                holding[ev.agent_id] = ev.task_id
    gc.collect()
    gc.disable()
    samples = []
    perf = time.perf_counter_ns
    try:
        for _ in range(decisions):
            aid = agents[rng.randrange(len(agents))]
            tid = holding.get(aid)
            if tid is None:
                continue
            t_start = perf()
            ev = r.complete(tid, now)
            samples.append(perf() - t_start)
            del holding[aid]
            for e in ev:
                if type(e) is OfferCreated:
                    r.accept(e.offer_id, now)
                    holding[e.agent_id] = e.task_id
            r.enqueue(new_task(), now)  # keep the depth
    finally:
        gc.enable()
    waiting = sum(len(r.waiting(q)) for q in queues) if depth <= 100_000 else None
    if waiting is not None:
        assert abs(waiting - depth) <= N_AGENTS, (waiting, depth)
    samples.sort()
    n = len(samples)

    def pct(p: float) -> float:
        return samples[min(n - 1, int(p * n))] / 1000.0

    _log(
        f"{label}: depth {depth:,}: {n:,} decisions, p50 {pct(0.5):.2f} µs, p99 {pct(0.99):.2f} µs "
        f"({time.perf_counter() - t0:.0f} s incl. setup; {total:,} tasks)"
    )
    return {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": samples[-1] / 1000.0, "n": n}


def run(args: argparse.Namespace) -> dict[str, Any]:
    depths = [int(d) for d in args.depths.split(",") if d]
    impls = {}
    if args.only != "reference":
        try:
            impls["compiled"] = (_impl.compiled_engine(), args.cycles, args.decisions)
        except ImportError as exc:
            _log(f"compiled engine unavailable: {exc}")
    if args.only != "compiled":
        impls["reference"] = (_impl.reference_engine(), args.ref_cycles, args.ref_decisions)
    _, _, per_agent = build(_impl.reference_engine(), args.seed)
    _log(f"{N_AGENTS} agents, {N_QUEUES} queues, {N_SKILLS} skills; {per_agent:.1f} queues per agent")
    out: dict[str, Any] = {}
    detail: dict[str, Any] = {}
    for name, (mod, cycles, decisions) in impls.items():
        _log(f"{name}: {cycles:,} full cycles")
        cps, mean = cycles_per_s(mod, cycles, args.seed)
        _log(f"{name}: {cps:,.0f} cycles/s (best of {CHUNKS} chunks; mean {mean:,.0f})")
        lat = {}
        for depth in depths:
            lat[str(depth)] = decision_latency(mod, depth, decisions, args.seed, name)
        out[name] = {
            "cycles_per_s": round(cps, 1),
            "decision_p99_us": {d: round(v["p99"], 3) for d, v in lat.items()},
        }
        detail[name] = lat
    return {"result": out, "detail": detail, "queues_per_agent": per_agent}


def main(args: argparse.Namespace) -> int:
    res = run(args)
    out = res["result"]
    if args.json:
        print(json.dumps(out))
        return 0
    print(
        f"{N_AGENTS} agents, {N_QUEUES} queues, {N_SKILLS} skills ({res['queues_per_agent']:.1f} queues/agent)"
    )
    for name, r in out.items():
        print(f"\n{name}: {r['cycles_per_s']:,.0f} full cycles/s (enqueue → offer → accept → complete)")
        print(f"  {'waiting':>10} {'p50 µs':>9} {'p90 µs':>9} {'p99 µs':>9} {'max µs':>9}")
        for depth, v in res["detail"][name].items():
            print(f"  {int(depth):>10,} {v['p50']:>9.2f} {v['p90']:>9.2f} {v['p99']:>9.2f} {v['max']:>9.1f}")
    if "compiled" in out and "reference" in out:
        ratio = out["compiled"]["cycles_per_s"] / out["reference"]["cycles_per_s"]
        print(f"\ncompiled/reference cycles: {ratio:.1f}x")
    return 0
