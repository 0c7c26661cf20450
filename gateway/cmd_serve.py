"""``telacd serve``: run the gateway until SIGTERM/SIGINT; SIGHUP reloads the configuration."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from . import config as config_mod
from .config import ConfigError

log = logging.getLogger("telacd")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", metavar="FILE", help="TOML configuration (default: embedded defaults)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="TCU acceptor processes (overrides [gateway] workers)"
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--no-uvloop", action="store_true", help="run on asyncio's default event loop")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def load_config(path: str | None) -> config_mod.Config | None:
    try:
        return config_mod.load(path)
    except ConfigError as e:
        print(f"telacd: configuration error: {e}", file=sys.stderr)
        return None


def describe(cfg: config_mod.Config) -> list[str]:
    g = cfg.gateway
    lines = [f"store      {cfg.store['url']}"]
    if g["tcp"]:
        lines.append(f"terminals  tcp://{g['tcp']}  (JT/T 808)")
    if g["quic"]:
        lines.append(f"terminals  quic://{g['quic']}  (JT/T 808, ALPN jt808)")
    lines.append(
        f"agents     ws://{g['http']}/agent"
        + (f"  tcp://{g['agent_tcp']} (msgpack)" if g["agent_tcp"] else "")
    )
    lines.append(
        f"feed       ws://{g['http']}/feed" + (f"  tcp://{g['feed_tcp']} (msgpack)" if g["feed_tcp"] else "")
    )
    lines.append(
        f"admin      http://{g['http']}/api/  metrics http://{g['http']}/metrics  dashboard http://{g['http']}/"
    )
    return lines


def main(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    cfg = load_config(args.config)
    if cfg is None:
        return 2
    if args.workers is not None:
        if args.workers < 1:
            print("telacd: --workers must be at least 1", file=sys.stderr)
            return 2
        cfg.gateway["workers"] = args.workers
    if not args.no_uvloop:
        import uvloop

        uvloop.install()
    if cfg.gateway["workers"] > 1:
        from .workers import serve_with_workers

        return serve_with_workers(cfg, args.config)
    return asyncio.run(serve(cfg, args.config))


async def serve(cfg: config_mod.Config, path: str | None) -> int:
    from .app import Gateway
    from .store import StoreError

    gw = Gateway(cfg, config_path=path)
    try:
        await gw.start()
    except (StoreError, OSError) as e:
        print(f"telacd: cannot start: {e}", file=sys.stderr)
        await gw.stop()
        return 1
    for line in describe(cfg):
        log.info("%s", line)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def reload() -> None:
        new = load_config(path)
        if new is None:
            log.error("reload refused: the configuration has errors (still running the old one)")
            return
        result = loop.create_task(gw.reload(new))
        result.add_done_callback(
            lambda t: log.info("reloaded: %s", t.result()) if not t.exception() else None
        )

    loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
    log.info("stopping")
    await gw.stop()
    return 0
