"""Fixtures for the dashboard tests: Chromium (installed when missing), a ``telacd demo`` child."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import time

import aiohttp
import pytest

from tests.conftest import require_service
from tests.gateway.harness import free_ports

from .cdp import Page, ensure_chromium

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, apt-get installed on first use (CI runs as root); skipped only if that fails."""
    why_not = ensure_chromium()
    if why_not is not None:
        require_service("Chromium", why_not)
    return "/usr/bin/chromium"


class Demo:
    """``telacd demo`` as a child process on free ports, with a busier alarm rate than the default."""

    def __init__(self, tmp_path: pathlib.Path, *, vehicles: int = 80, alarm_rate: float = 0.5,
                 service_rate: float = 0.25, report_interval: float = 2.0) -> None:  # fmt: skip
        tcp, http, agent_tcp, feed_tcp = free_ports(4)
        self.http = f"127.0.0.1:{http}"
        self.config = tmp_path / "demo.toml"
        self.config.write_text(
            "[gateway]\n"
            f'tcp = "127.0.0.1:{tcp}"\nhttp = "{self.http}"\n'
            f'agent_tcp = "127.0.0.1:{agent_tcp}"\nfeed_tcp = "127.0.0.1:{feed_tcp}"\n'
            'name = "demo floor"\n'
        )
        self.log = tmp_path / "demo.log"
        self.args = [
            sys.executable, "-m", "gateway.cli", "demo", "--config", str(self.config),
            "--store", f"sqlite:///{tmp_path}/demo.db", "--vehicles", str(vehicles),
            "--report-interval", str(report_interval), "--alarm-rate", str(alarm_rate), "--service-rate", str(service_rate),
        ]  # fmt: skip
        self.proc: subprocess.Popen | None = None

    async def start(self, timeout: float = 30.0) -> Demo:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("TELACD_") or k == "TELACD_PURE_PYTHON"
        }
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=log, env=env, cwd=ROOT)
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"telacd demo exited: {self.log.read_text()[-2000:]}")
                try:
                    async with http.get(f"http://{self.http}/api/dashboard/map") as r:
                        if r.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError(f"telacd demo did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # the demo stops its fleet, agents and gateway on SIGTERM
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
async def demo(tmp_path):
    d = Demo(tmp_path)
    await d.start()
    yield d
    d.stop()


@pytest.fixture
async def page(chromium, tmp_path):
    p = Page(tmp_path / "chromium-profile")
    await p.start()
    yield p
    await p.close()
