"""``telacd bench SUITE``: dispatch to one benchmark module.

Each suite is a module in ``bench/`` with ``add_arguments(parser)`` and
``main(args) -> int``, listed in ``SUITES``. Benchmarks print a readable
summary, or one JSON object with ``--json``; figures worth keeping go in
bench/RESULTS.md together with the command that produced them.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util

SUITES: dict[str, tuple[str, str]] = {
    "codec": ("bench.codec", "JT/T 808 split+unescape+checksum+decode, compiled vs reference"),
    "acd": ("bench.acd", "ACD full cycles/s and decision latency, compiled vs reference"),
    "gateway": ("bench.gateway", "fleet of simulated TCUs and agents against a gateway"),
    "ceiling": ("bench.ceiling", "bare uvloop split-and-ack server, the gateway's ceiling"),
    "netem": ("bench.netem", "TCP vs QUIC over emulated cellular links (network namespaces)"),
    "quic": ("bench.quic", "JT/T 808 ingest over QUIC vs a bare aioquic echo of the same frames"),
    "store": ("bench.store", "location writes to PostgreSQL vs a bare COPY loop"),
    "dashboard": ("bench.dashboard", "the live dashboard's once-a-second cost on the event loop"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="suite", metavar="SUITE", required=True)
    for name, (module, summary) in SUITES.items():
        if importlib.util.find_spec(module) is None:
            continue
        p = sub.add_parser(name, help=summary, description=summary)
        importlib.import_module(module).add_arguments(p)


def main(args: argparse.Namespace) -> int:
    return int(importlib.import_module(SUITES[args.suite][0]).main(args) or 0)
