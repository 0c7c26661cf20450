"""``telacd simulate``: the ACD engine in virtual time against Erlang C.

Example (occupancy 0.8 with 10 agents)::

    telacd simulate --agents 10 --arrival-rate 0.08 --handle-time 100 --calls 1000000
    telacd simulate --agents 10 --arrival-rate 0.08 --handle-time 100 \\
        --classes crash:0.3,normal:0.7 --json
"""

from __future__ import annotations

import argparse
import json
import sys

from acd_core.config import STRATEGIES
from acd_core.sim import SimConfig, cobham, parse_classes, simulate, stderr_progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agents", type=int, default=10, help="agents (default 10)")
    parser.add_argument("--arrival-rate", type=float, default=0.08, help="calls per second (default 0.08)")
    parser.add_argument("--handle-time", type=float, default=100.0, help="mean handle time, s (default 100)")
    parser.add_argument("--calls", type=int, default=100_000, help="calls to simulate (default 100000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--sl-threshold", type=float, default=20.0, help="T of service level, s (default 20)")
    parser.add_argument("--strategy", default="longest-idle", choices=STRATEGIES, help="agent selection")
    parser.add_argument(
        "--classes",
        type=parse_classes,
        default=[("default", 1.0)],
        help="name:share,... strict priority in the order given (default one class)",
    )
    parser.add_argument("--patience", type=float, default=None, help="mean patience, s (default: none)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def main(args: argparse.Namespace) -> int:
    try:
        cfg = SimConfig(
            agents=args.agents,
            arrival_rate=args.arrival_rate,
            handle_time=args.handle_time,
            calls=args.calls,
            seed=args.seed,
            sl_threshold=args.sl_threshold,
            strategy=args.strategy,
            classes=tuple(args.classes),
            patience=args.patience,
        )
    except ValueError as exc:
        print(f"telacd simulate: {exc}", file=sys.stderr)
        return 2
    show = not args.quiet and cfg.calls >= 20_000
    report = simulate(cfg, progress=stderr_progress() if show else None)
    if args.json:
        print(json.dumps(report))
    else:
        print(render(cfg, report))
    return 0


def render(cfg: SimConfig, r: dict) -> str:
    a = cfg.arrival_rate * cfg.handle_time
    ec = r["erlang_c"]
    lines = [
        f"{cfg.agents} agents, λ={cfg.arrival_rate:g}/s, AHT={cfg.handle_time:g} s, "
        f"load A={a:.2f} Erl (ρ={a / cfg.agents:.3f}), {cfg.calls:,} calls, seed {cfg.seed}, "
        f"strategy {cfg.strategy}" + (f", patience {cfg.patience:g} s" if cfg.patience else ""),
        "",
        f"{'':22}{'measured':>12}{'Erlang C':>12}",
        f"{'P(wait)':22}{r['p_wait']:>12.4f}{ec['p_wait']:>12.4f}",
        f"{'ASA (s)':22}{r['asa_s']:>12.3f}{ec['asa_s']:>12.3f}",
        f"{f'SL({cfg.sl_threshold:g} s)':22}{r['service_level']:>12.4f}{ec['service_level']:>12.4f}",
        f"{'occupancy':22}{r['occupancy']:>12.4f}{a / cfg.agents:>12.4f}",
        f"{'offered':22}{r['offered']:>12,}",
        f"{'answered':22}{r['answered']:>12,}",
        f"{'abandoned':22}{r['abandoned']:>12,}",
    ]
    if len(cfg.classes) > 1:
        theory = cobham(cfg)
        lines += [
            "",
            f"{'class':14}{'offered':>10}{'answered':>10}{'P(wait)':>10}{'ASA (s)':>10}{'Cobham':>10}",
        ]
        for name, c in r["classes"].items():
            lines.append(
                f"{name:14}{c['offered']:>10,}{c['answered']:>10,}{c['p_wait']:>10.4f}"
                f"{c['asa_s']:>10.3f}{theory[name]:>10.3f}"
            )
        lines.append("(Cobham: M/M/N non-preemptive priority mean wait; no abandonment)")
    if cfg.patience:
        lines.append("(Erlang C ignores abandonment: expect measured waits below it)")
    return "\n".join(lines)
