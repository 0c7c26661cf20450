"""Latency reporting for the load generator: HDR histograms, percentile summaries, the plot.

Latencies are recorded in whole microseconds into HdrHistogram (``hdrh``:
3 significant digits, one microsecond to ten minutes), which keeps every
sample's contribution at a fixed cost in memory, so a percentile of a million
acknowledgements is exact to 0.1% and the histograms of several fleet
processes can be added. Summaries are in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

HIGHEST_US = 600_000_000


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, HIGHEST_US, 3)


def histogram_of(seconds: Iterable[float]) -> HdrHistogram:
    h = new_histogram()
    for s in seconds:
        h.record_value(min(HIGHEST_US, max(1, round(s * 1e6))))
    return h


def summary_ms(h: HdrHistogram) -> dict[str, float | None]:
    """``{"p50", "p99", "p999", "max"}`` in milliseconds (None for an empty histogram)."""
    if h.get_total_count() == 0:
        return {"p50": None, "p99": None, "p999": None, "max": None}
    return {
        "p50": round(h.get_value_at_percentile(50) / 1000, 3),
        "p99": round(h.get_value_at_percentile(99) / 1000, 3),
        "p999": round(h.get_value_at_percentile(99.9) / 1000, 3),
        "max": round(h.get_max_value() / 1000, 3),
    }


def distribution(h: HdrHistogram, points: int = 60) -> tuple[list[float], list[float]]:
    """(percentile, value in ms) pairs from p0 towards p99.999, evenly spaced in log(1/(1-p))."""
    if h.get_total_count() == 0:
        return [], []
    ps, vs = [], []
    for i in range(points + 1):
        # 1/(1-p) from 1 to 10^5 evenly on a log scale
        p = 100.0 * (1.0 - 10 ** (-5.0 * i / points))
        ps.append(p)
        vs.append(h.get_value_at_percentile(p) / 1000)
    return ps, vs


@dataclass
class Timeline:
    """Per-interval samples for the plot (and for the JSON's ``timeline`` when asked)."""

    t: list[float] = field(default_factory=list)  # seconds since the start of the run
    phase: list[str] = field(default_factory=list)
    sent_per_s: list[float] = field(default_factory=list)
    acked_per_s: list[float] = field(default_factory=list)
    rtt_p50: list[float | None] = field(default_factory=list)
    rtt_p99: list[float | None] = field(default_factory=list)
    rtt_max: list[float | None] = field(default_factory=list)
    shed_per_s: list[float] = field(default_factory=list)
    # (seconds since start at send, ms to the offer, kind)
    offers: list[tuple[float, float, str]] = field(default_factory=list)

    def add(self, t: float, phase: str, sent: float, acked: float, rtt: HdrHistogram, shed: float) -> None:
        s = summary_ms(rtt)
        self.t.append(round(t, 2))
        self.phase.append(phase)
        self.sent_per_s.append(round(sent))
        self.acked_per_s.append(round(acked))
        self.rtt_p50.append(s["p50"])
        self.rtt_p99.append(s["p99"])
        self.rtt_max.append(s["max"])
        self.shed_per_s.append(round(shed))


def plot(
    path: str, title: str, timeline: Timeline, ack_rtt: HdrHistogram, crash_to_offer: HdrHistogram
) -> None:
    """Latency over time (top) and the latency distributions (bottom), to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 9), constrained_layout=True)
    fig.suptitle(title, fontsize=10)

    def clean(values: list[float | None]) -> list[float]:
        return [float("nan") if v is None else v for v in values]

    tl = timeline
    top.plot(tl.t, clean(tl.rtt_p50), label="ack RTT p50", color="tab:blue", linewidth=1)
    top.plot(tl.t, clean(tl.rtt_p99), label="ack RTT p99", color="tab:orange", linewidth=1)
    top.plot(tl.t, clean(tl.rtt_max), label="ack RTT max", color="tab:red", linewidth=0.6, alpha=0.6)
    if tl.offers:
        top.scatter(
            [o[0] for o in tl.offers],
            [o[1] for o in tl.offers],
            s=10,
            color="black",
            label="crash→offer (per alert)",
            zorder=3,
        )
    top.set_yscale("log")
    top.set_xlabel("seconds")
    top.set_ylabel("latency, ms (log)")
    top.axhline(50, color="grey", linestyle=":", linewidth=0.8)
    # shade the measured phases; name each kind of phase once (a ramp has many short steps)
    start = 0
    named: set[str] = set()
    for i in range(1, len(tl.t) + 1):
        if i == len(tl.t) or tl.phase[i] != tl.phase[start]:
            kind = tl.phase[start].split("-")[0]
            if not tl.phase[start].endswith(("warmup", "settle", "drain")):
                top.axvspan(tl.t[start], tl.t[i - 1], color="khaki", alpha=0.25)
            if kind not in named:
                named.add(kind)
                top.text(tl.t[start], top.get_ylim()[1], kind, fontsize=7, va="top")
            start = i
    rate = top.twinx()
    rate.plot(tl.t, tl.sent_per_s, color="tab:green", linestyle="--", linewidth=0.8, label="sent/s")
    rate.plot(tl.t, tl.acked_per_s, color="tab:olive", linestyle="-.", linewidth=0.8, label="acked/s")
    rate.set_ylabel("frames/s")
    lines = top.get_legend_handles_labels()
    more = rate.get_legend_handles_labels()
    top.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper left")

    for h, label, colour in ((ack_rtt, "ack RTT", "tab:blue"), (crash_to_offer, "crash→offer", "black")):
        ps, vs = distribution(h)
        if ps:
            bottom.plot(
                [1 / (1 - p / 100) for p in ps], vs, label=f"{label} (n={h.get_total_count()})", color=colour
            )
    bottom.set_xscale("log")
    bottom.set_yscale("log")
    ticks = [1, 2, 10, 100, 1000, 10000, 100000]
    bottom.set_xticks(ticks)
    bottom.set_xticklabels(["0%", "50%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
    bottom.set_xlabel("percentile")
    bottom.set_ylabel("latency, ms (log)")
    bottom.axhline(50, color="grey", linestyle=":", linewidth=0.8)
    bottom.legend(fontsize=8)
    bottom.grid(True, which="both", alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge(histograms: Iterable[HdrHistogram]) -> HdrHistogram:
    out = new_histogram()
    for h in histograms:
        out.add(h)
    return out


def proc_stat(pid: int) -> tuple[float, int] | None:
    """(CPU seconds user+system, RSS bytes) of a process from /proc, None if it is gone."""
    import os

    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    # fields after the command: state(0) ppid(1) ... utime(11) stime(12) ... rss(21)
    return (int(fields[11]) + int(fields[12])) / tick, int(fields[21]) * page


def pss_bytes(pid: int) -> int | None:
    """Proportional set size (shared pages split between sharers) from smaps_rollup."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/*/stat parent ids)."""
    import os

    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def usage(pids: list[int]) -> dict[str, Any]:
    """CPU seconds, RSS and PSS summed over ``pids``."""
    cpu = rss = pss = 0
    alive = 0
    for pid in pids:
        st = proc_stat(pid)
        if st is None:
            continue
        alive += 1
        cpu += st[0]
        rss += st[1]
        pss += pss_bytes(pid) or 0
    return {"cpu_s": cpu, "rss": rss, "pss": pss, "processes": alive}
