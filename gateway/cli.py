"""The ``telacd`` command.

Each subcommand lives in its own module, imported only when it is used, so
``telacd decode`` does not pay for aiohttp and ``telacd simulate`` does not
pay for uvloop. A subcommand module provides::

    def add_arguments(parser: argparse.ArgumentParser) -> None
    def main(args: argparse.Namespace) -> int   # the process exit status

and is listed in ``COMMANDS`` below with a one-line summary.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "decode": ("gateway.cmd_decode", "decode JT/T 808 frames (hex or a raw capture) to JSON"),
    "simulate": ("acd_core.cmd_simulate", "discrete-event simulation of the ACD against Erlang C"),
    "serve": ("gateway.cmd_serve", "run the gateway"),
    "demo": ("gateway.cmd_demo", "run the gateway with a simulated fleet and simulated agents"),
    "bench": ("bench.cmd_bench", "benchmarks (codec, acd, gateway, ceiling, netem, store)"),
    "cert": ("gateway.cmd_cert", "write a self-signed certificate and key for QUIC development"),
}


def _available() -> dict[str, tuple[str, str]]:
    found = {}
    for name, (module, summary) in COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            found[name] = (module, summary)
    return found


def _usage(commands: dict[str, tuple[str, str]]) -> str:
    width = max(len(n) for n in commands) if commands else 0
    lines = ["usage: telacd COMMAND [options]", "", "commands:"]
    lines += [f"  {n.ljust(width)}  {s}" for n, (_, s) in commands.items()]
    lines += ["", "telacd COMMAND --help shows the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = _available()
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(commands))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in commands:
        print(f"telacd: unknown command {name!r}\n\n{_usage(commands)}", file=sys.stderr)
        return 2
    module = importlib.import_module(commands[name][0])
    parser = argparse.ArgumentParser(prog=f"telacd {name}", description=commands[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `telacd decode ... | head` closes stdout early; that is not an error
        return 0


if __name__ == "__main__":
    sys.exit(main())
