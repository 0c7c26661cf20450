"""Micro-benchmark of the indexed priority queue, compiled vs heapq reference.

    .venv/bin/python -m bench.micro.queue_bench [--n 200000]

Prints one JSON object: nanoseconds per operation for push, pop, remove (by
handle) and update (re-key by handle), on a heap of ``n`` entries with
random keys. The engine does one or two of these per routing decision.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from acd_core import impl


def measure(cls: type, n: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    keys = [(rng.random(), rng.random()) for _ in range(n)]
    h = cls()
    t = time.perf_counter()
    handles = [h.push(k1, k2, i) for i, (k1, k2) in enumerate(keys)]
    push = time.perf_counter() - t
    order = list(range(n))
    rng.shuffle(order)
    t = time.perf_counter()
    for i in order[: n // 2]:
        h.update(handles[i], keys[i][0] * 0.5, keys[i][1])
    update = time.perf_counter() - t
    t = time.perf_counter()
    for i in order[: n // 2]:
        h.remove(handles[i])
    remove = time.perf_counter() - t
    t = time.perf_counter()
    while h:
        h.pop()
    pop = time.perf_counter() - t
    half = n // 2
    return {
        "push_ns": push / n * 1e9,
        "update_ns": update / half * 1e9,
        "remove_ns": remove / half * 1e9,
        "pop_ns": pop / (n - half) * 1e9,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    out = {name: measure(cls, args.n, args.seed) for name, cls in impl.queue_classes().items()}
    print(json.dumps({k: {m: round(v, 1) for m, v in d.items()} for k, d in out.items()}))


if __name__ == "__main__":
    main()
