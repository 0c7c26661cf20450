"""`telacd demo` (what `make run` starts) works on a fresh store: vehicles connect, alerts become sessions."""

from __future__ import annotations

import re
import subprocess
import sys

from .harness import make_config, to_toml


def test_demo_runs_the_whole_path(tmp_path):
    raw = make_config(tmp_path)
    for key in ("agents", "subscribers", "admins"):
        raw.pop(key)
    cfg = tmp_path / "demo.toml"
    cfg.write_text(to_toml(raw))
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--config", str(cfg), "--store", f"sqlite:///{tmp_path}/demo.db",
         "--vehicles", "40", "--alarm-rate", "2", "--duration", "8"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert '{"type":"login","agent":"you","token":"demo"}' in text  # how to connect your own agent
    status = [line for line in text.splitlines() if line.startswith("vehicles ")]
    assert status, text
    assert re.search(r"vehicles 40/40", text), status
    sessions = int(re.search(r"demo stopped: (\d+) sessions", text).group(1))
    assert sessions >= 3
