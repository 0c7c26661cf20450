"""Running gateways for tests: in this process, or as a ``telacd serve`` child to SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import aiohttp

from gateway import config
from gateway.app import Gateway

AGENTS = [
    {"id": "alice", "token": "alice-token", "skills": {"emergency": 8, "service": 5}, "phone": "13800000000"},
    {"id": "bob", "token": "bob-token", "skills": {"emergency": 5, "service": 8}},
]
SUBSCRIBERS = [{"id": "crm", "token": "crm-token"}]
ADMINS = [
    {"id": "ops", "token": "ops-token", "role": "admin"},
    {"id": "wall", "token": "wall-token", "role": "viewer"},
]


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def make_config(tmp_path, **overrides: Any) -> dict[str, Any]:
    tcp, http, agent_tcp, feed_tcp = free_ports(4)
    raw: dict[str, Any] = {
        "gateway": {
            "tcp": f"127.0.0.1:{tcp}",
            "http": f"127.0.0.1:{http}",
            "agent_tcp": f"127.0.0.1:{agent_tcp}",
            "feed_tcp": f"127.0.0.1:{feed_tcp}",
        },
        "store": {"url": f"sqlite:///{tmp_path}/telacd.db", "location_flush_ms": 50},
        "sessions": {"agent_grace_s": 1.0, "command_timeout_s": 1.0, "command_retries": 1},
        "agents": AGENTS,
        "subscribers": SUBSCRIBERS,
        "admins": ADMINS,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


def to_toml(raw: dict[str, Any]) -> str:
    """Just enough TOML for test configurations."""

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f'"{k}" = {val(x)}' for k, x in v.items()) + " }"
        raise TypeError(v)

    out = []
    for key, value in raw.items():
        if isinstance(value, dict):
            out.append(f"[{key}]")
            out += [f'"{k}" = {val(v)}' for k, v in value.items()]
        else:
            for entry in value:
                out.append(f"[[{key}]]")
                out += [f'"{k}" = {val(v)}' for k, v in entry.items()]
        out.append("")
    return "\n".join(out)


class Endpoints:
    def __init__(self, cfg: config.Config) -> None:
        g = cfg.gateway
        self.tcp = g["tcp"]
        self.http = g["http"]
        self.agent_tcp = g["agent_tcp"]
        self.feed_tcp = g["feed_tcp"]

    @property
    def tcu(self) -> tuple[str, int]:
        host, port = self.tcp.rsplit(":", 1)
        return host, int(port)


@contextlib.asynccontextmanager
async def running_gateway(tmp_path, **overrides: Any):
    """A gateway in this process (real sockets, real store); yields (gateway, endpoints)."""
    for attempt in range(5):
        cfg = config.build(make_config(tmp_path, **overrides), "<test>", {})
        gw = Gateway(cfg)
        try:
            await gw.start()
            break
        except OSError:  # a free port was taken between choosing and binding it: choose again
            await gw.stop()
            if attempt == 4:
                raise
    try:
        yield gw, Endpoints(cfg)
    finally:
        await gw.stop()


class ChildGateway:
    """``telacd serve`` in a child process, for crash tests."""

    def __init__(self, tmp_path, **overrides: Any) -> None:
        self.raw = make_config(tmp_path, **overrides)
        self.path = tmp_path / "telacd.toml"
        self.path.write_text(to_toml(self.raw))
        self.cfg = config.load(str(self.path), env={})
        self.ep = Endpoints(self.cfg)
        self.log = tmp_path / "serve.log"
        self.proc: subprocess.Popen | None = None

    async def start(self, timeout: float = 20.0) -> None:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("TELACD_") or k == "TELACD_PURE_PYTHON"
        }
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.path)],
                stdout=log,
                stderr=log,
                env=env,
            )
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"gateway exited: {self.log.read_text()[-2000:]}")
                try:
                    async with http.get(f"http://{self.ep.http}/metrics") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError(f"gateway did not start: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


async def metric(http_addr: str, name: str, labels: str = "") -> float:
    """One sample of /metrics (0 when absent)."""
    async with aiohttp.ClientSession() as s, s.get(f"http://{http_addr}/metrics") as r:
        text = await r.text()
    want = f"{name}{{{labels}}}" if labels else name
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == want:
            total += float(value)
    return total
