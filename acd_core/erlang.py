"""Erlang C (M/M/N) and the M/M/N non-preemptive priority waits (Cobham).

Used by the statistics (predictions from the measured arrival rate and handle
time) and by the simulator's report and tests. Formulas as in
../shared/ACD_ANCHORS.md §4: C(N, A) through the Erlang B recursion, which
stays finite for hundreds of agents where A**N / N! would overflow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def erlang_b(n: int, a: float) -> float:
    """Blocking probability B(N, A) by the recursion B_k = A·B_{k-1} / (k + A·B_{k-1})."""
    b = 1.0
    for k in range(1, n + 1):
        b = a * b / (k + a * b)
    return b


def erlang_c(n: int, a: float) -> float:
    """P(wait) for N agents and A Erlangs offered; 1.0 when A >= N (unstable)."""
    if n <= 0 or a >= n:
        return 1.0
    if a <= 0:
        return 0.0
    b = erlang_b(n, a)
    return n * b / (n - a * (1.0 - b))


def asa(n: int, a: float, aht: float) -> float:
    """Mean wait over all calls, C·AHT/(N−A); inf when unstable."""
    if a >= n:
        return math.inf
    return erlang_c(n, a) * aht / (n - a)


def service_level(n: int, a: float, aht: float, t: float) -> float:
    """P(W <= t) = 1 − C·exp(−(N−A)·t/AHT); 0.0 when unstable."""
    if a >= n:
        return 0.0
    if aht <= 0:
        return 1.0
    return 1.0 - erlang_c(n, a) * math.exp(-(n - a) * t / aht)


def agents_needed(a: float, aht: float, t: float, target: float, max_agents: int = 100_000) -> int:
    """Smallest N with SL(t) >= target (0 when nothing is offered)."""
    if a <= 0:
        return 0
    n = max(1, math.floor(a) + 1)
    while n <= max_agents:
        if service_level(n, a, aht, t) >= target:
            return n
        n += 1
    return max_agents


def priority_waits(n: int, rates: Sequence[float], aht: float) -> list[float]:
    """Mean wait per class, M/M/N non-preemptive priority, equal service rates.

    Cobham (1954): W_k = W0 / ((1 − σ_{k−1})(1 − σ_k)), with classes in
    priority order (highest first), σ_k = Σ_{i≤k} λ_i·AHT/N and
    W0 = C(N, A)·AHT/N, A = Σ λ_i·AHT. With one class this is Erlang C's ASA.
    """
    a = sum(rates) * aht
    if a >= n:
        return [math.inf] * len(rates)
    w0 = erlang_c(n, a) * aht / n
    waits = []
    sigma_prev = 0.0
    for lam in rates:
        sigma = sigma_prev + lam * aht / n
        waits.append(w0 / ((1.0 - sigma_prev) * (1.0 - sigma)))
        sigma_prev = sigma
    return waits
