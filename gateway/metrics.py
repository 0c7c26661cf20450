"""Counters the gateway keeps, and their Prometheus exposition.

The hot path (one frame from a vehicle) only increments plain integers on
this object: a ``prometheus_client`` Counter with labels costs a dict lookup
and a lock per increment, which at a hundred thousand frames a second is
real time. The Prometheus view is built at scrape time by :class:`Collector`,
which reads these fields (and the store's and the ACD's statistics) and
yields metric families.
"""

from __future__ import annotations

import bisect
import collections
import time
from collections.abc import Callable, Iterable
from typing import Any

# crash-ingress -> offer-delivered latency buckets, seconds
LATENCY_BUCKETS = (
    0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04,
    0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 10, 50, 100, 500, 1000, 2000, 5000, 10000)


class Histogram:
    """Cumulative buckets (for Prometheus) plus a window of recent samples (for percentiles)."""

    __slots__ = ("_recent", "buckets", "count", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...], recent: int = 4096) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.count = 0
        self.sum = 0.0
        self._recent: collections.deque[tuple[float, float]] = collections.deque(maxlen=recent)

    def observe(self, value: float, now: float | None = None) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.count += 1
        self.sum += value
        self._recent.append((time.monotonic() if now is None else now, value))

    def recent_max(self, window_s: float) -> float:
        """The largest sample of the last ``window_s`` seconds (0.0 if none)."""
        cutoff = time.monotonic() - window_s
        best = 0.0
        for t, v in reversed(self._recent):
            if t < cutoff:
                break
            if v > best:
                best = v
        return best

    def percentiles(self, qs: Iterable[float], window_s: float | None = None) -> dict[float, float | None]:
        """Percentiles of the recent samples (optionally only the last ``window_s`` seconds)."""
        if window_s is None:
            values = sorted(v for _, v in self._recent)
        else:
            cutoff = time.monotonic() - window_s
            values = sorted(v for t, v in self._recent if t >= cutoff)
        out: dict[float, float | None] = {}
        for q in qs:
            if not values:
                out[q] = None
            else:
                out[q] = values[min(len(values) - 1, int(q * len(values)))]
        return out


class Metrics:
    def __init__(self) -> None:
        self.started = time.time()
        # terminals
        self.connections_total = 0
        self.connections_open = 0
        self.connections_closed_malformed = 0
        self.connections_closed_idle = 0
        self.connections_closed_duplicate = 0
        self.frames_total = 0
        self.frames: collections.Counter[int] = (
            collections.Counter()
        )  # by message id (0x0200 counted per read)
        self.auth_failures = 0
        self.unauthenticated = 0  # data refused before authentication
        self.unacked_alerts = 0  # alerts not acknowledged because their session could not be stored
        self.store_errors = 0
        self.malformed: collections.Counter[str] = collections.Counter()  # by error kind
        self.acks = 0
        self.acks_deferred = 0  # acks that waited for a session commit
        self.reads_paused = 0  # times a connection's reads were paused (flooding or write backlog)
        self.overload = 0  # 1 while the overload policy thins GPS storage (gateway.tcu.OverloadPolicy)
        self.overload_episodes = 0  # times the gateway entered overload
        self.gps_reports = 0
        self.gps_shed = 0
        self.duplicates = 0  # re-sent frames recognised and not re-processed
        # sessions and routing
        self.sessions_created: collections.Counter[str] = collections.Counter()  # by kind
        self.sessions_merged = 0
        self.sessions_closed: collections.Counter[str] = collections.Counter()  # by final state
        self.unresolved_escalations = 0  # sessions sent to the supervisor queue (unresolved_after_s)
        self.offers = 0
        self.accepts = 0
        self.rejects = 0
        self.offer_timeouts = 0
        self.escalations = 0
        self.commands: collections.Counter[str] = collections.Counter()  # by outcome
        # vehicle alarms only (alarm-bit triggers): channel sessions, one-key service calls and supervisor
        # sessions wait for an agent by design, and would bury the alert path's latency under queue time
        self.crash_to_offer = Histogram(LATENCY_BUCKETS)
        self.commit_latency = Histogram(LATENCY_BUCKETS)  # session commit submitted -> stored
        # event loop
        self.loop_lag = Histogram(LATENCY_BUCKETS)
        # agents and subscribers
        self.agent_connections = 0
        self.feed_connections = 0

    def snapshot(self) -> dict[str, Any]:
        p = self.crash_to_offer.percentiles((0.5, 0.99))
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "connections_open": self.connections_open,
            "connections_total": self.connections_total,
            "frames": sum(self.frames.values()),
            "malformed": sum(self.malformed.values()),
            "acks": self.acks,
            "gps_reports": self.gps_reports,
            "gps_shed": self.gps_shed,
            "sessions_created": dict(self.sessions_created),
            "offers": self.offers,
            "accepts": self.accepts,
            "offer_timeouts": self.offer_timeouts,
            "crash_to_offer_ms": {
                k: (None if v is None else round(v * 1000, 3)) for k, v in (("p50", p[0.5]), ("p99", p[0.99]))
            },
        }


class Collector:
    """A prometheus_client collector over a :class:`Metrics` and callables for live gauges."""

    def __init__(self, metrics: Metrics, extra: Callable[[], Iterable[Any]] | None = None) -> None:
        self.m = metrics
        self.extra = extra

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        m = self.m
        yield _counter(
            CounterMetricFamily, "telacd_connections", "TCU connections accepted", m.connections_total
        )
        yield GaugeMetricFamily(
            "telacd_connections_open", "TCU connections open now", value=m.connections_open
        )
        c = CounterMetricFamily(
            "telacd_connections_closed", "TCU connections closed by the gateway", labels=["reason"]
        )
        c.add_metric(["malformed"], m.connections_closed_malformed)
        c.add_metric(["idle"], m.connections_closed_idle)
        c.add_metric(["duplicate_login"], m.connections_closed_duplicate)
        yield c
        f = CounterMetricFamily("telacd_frames", "JT/T 808 frames received, by message id", labels=["msg_id"])
        for msg_id, n in sorted(m.frames.items()):
            f.add_metric([f"0x{msg_id:04X}"], n)
        yield f
        bad = CounterMetricFamily(
            "telacd_malformed_frames", "frames rejected as malformed, by kind", labels=["kind"]
        )
        for kind, n in sorted(m.malformed.items()):
            bad.add_metric([kind], n)
        yield bad
        yield _counter(CounterMetricFamily, "telacd_frames_all", "JT/T 808 frames received", m.frames_total)
        yield _counter(CounterMetricFamily, "telacd_acks", "0x8001 acknowledgements sent", m.acks)
        yield _counter(
            CounterMetricFamily, "telacd_acks_deferred", "acks sent after a session commit", m.acks_deferred
        )
        yield _counter(CounterMetricFamily, "telacd_auth_failures", "0x0102 refused", m.auth_failures)
        yield _counter(
            CounterMetricFamily,
            "telacd_unauthenticated",
            "data refused before authentication",
            m.unauthenticated,
        )
        yield _counter(
            CounterMetricFamily,
            "telacd_unacked_alerts",
            "alerts left unacknowledged: session not stored",
            m.unacked_alerts,
        )
        yield _counter(
            CounterMetricFamily, "telacd_session_store_errors", "session commits that failed", m.store_errors
        )
        yield _counter(CounterMetricFamily, "telacd_gps_reports", "location reports accepted", m.gps_reports)
        yield _counter(
            CounterMetricFamily,
            "telacd_gps_shed",
            "location reports shed under pressure (not stored)",
            m.gps_shed,
        )
        yield _counter(
            CounterMetricFamily, "telacd_duplicate_frames", "re-sent frames recognised", m.duplicates
        )
        yield _counter(
            CounterMetricFamily, "telacd_reads_paused", "times TCU reads were paused", m.reads_paused
        )
        yield GaugeMetricFamily(
            "telacd_overload", "1 while GPS storage is thinned to keep alerts fast", value=m.overload
        )
        yield _counter(
            CounterMetricFamily,
            "telacd_overload_episodes",
            "times the gateway entered overload",
            m.overload_episodes,
        )
        s = CounterMetricFamily("telacd_sessions_created", "sessions created, by kind", labels=["kind"])
        for kind, n in sorted(m.sessions_created.items()):
            s.add_metric([kind], n)
        yield s
        yield _counter(
            CounterMetricFamily,
            "telacd_sessions_merged",
            "alerts merged into an open session",
            m.sessions_merged,
        )
        closed = CounterMetricFamily(
            "telacd_sessions_closed", "sessions closed, by final state", labels=["state"]
        )
        for state, n in sorted(m.sessions_closed.items()):
            closed.add_metric([state], n)
        yield closed
        yield _counter(
            CounterMetricFamily,
            "telacd_unresolved_escalations",
            "sessions open past [sessions] unresolved_after_s, sent to the supervisor queue",
            m.unresolved_escalations,
        )
        o = CounterMetricFamily("telacd_offers", "offers to agents, by outcome", labels=["outcome"])
        o.add_metric(["offered"], m.offers)
        o.add_metric(["accepted"], m.accepts)
        o.add_metric(["rejected"], m.rejects)
        o.add_metric(["timeout"], m.offer_timeouts)
        yield o
        yield _counter(CounterMetricFamily, "telacd_escalations", "escalation steps taken", m.escalations)
        cmd = CounterMetricFamily("telacd_commands", "downlink commands, by outcome", labels=["outcome"])
        for outcome, n in sorted(m.commands.items()):
            cmd.add_metric([outcome], n)
        yield cmd
        yield _histogram(
            HistogramMetricFamily,
            "telacd_crash_to_offer_seconds",
            "vehicle alarm (crash, SOS, rollover...) ingress to its first offer delivered",
            m.crash_to_offer,
        )
        yield _histogram(
            HistogramMetricFamily,
            "telacd_session_commit_seconds",
            "session commit submitted to stored (an alert is acknowledged after it)",
            m.commit_latency,
        )
        yield _histogram(HistogramMetricFamily, "telacd_loop_lag_seconds", "event-loop lag", m.loop_lag)
        yield GaugeMetricFamily(
            "telacd_agent_connections", "agent connections open", value=m.agent_connections
        )
        yield GaugeMetricFamily(
            "telacd_feed_connections", "subscriber connections open", value=m.feed_connections
        )
        if self.extra is not None:
            yield from self.extra()


def _counter(cls: Any, name: str, doc: str, value: float) -> Any:
    return cls(name, doc, value=value)


def _histogram(cls: Any, name: str, doc: str, h: Histogram) -> Any:
    buckets = []
    acc = 0
    for bound, n in zip(h.buckets, h.counts):
        acc += n
        buckets.append((repr(bound), acc))
    buckets.append(("+Inf", h.count))
    return cls(name, doc, buckets=buckets, sum_value=h.sum)
