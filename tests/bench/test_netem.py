"""``telacd bench netem``: the hand-over profile end to end, in real network namespaces.

Needs root (network namespaces); skipped with the reason otherwise. The run is
short (three vehicles per transport, a 2 s blackout) but complete: namespaces,
the emulated link, a gateway and a fleet in child processes, the address change,
and the clean-up, checked against the host's own interfaces.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from bench import netem

VEHICLES = 3


def namespaces_available() -> str | None:
    """None if this process can create a network namespace, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    try:
        from pyroute2 import netns
    except ImportError as e:  # pragma: no cover - pyroute2 is a dependency
        return f"pyroute2 missing: {e}"
    name = f"telacd-probe-{os.getpid()}"
    try:
        netns.create(name)
    except OSError as e:
        return f"cannot create a network namespace: {e}"
    netns.remove(name)
    return None


def host_view() -> tuple[list, list]:
    """The host namespace's interfaces and addresses (what the bench must never change)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = sorted((x.get_attr("IFLA_IFNAME"), x["flags"] & 1) for x in ipr.get_links())
        addrs = sorted((x.get_attr("IFA_ADDRESS"), x["prefixlen"], x["index"]) for x in ipr.get_addr())
    return links, addrs


def our_namespaces(pid: int) -> list[str]:
    from pyroute2 import netns

    return [n for n in netns.listnetns() if n.endswith(f"-{pid}")]


@pytest.mark.netns
def test_handover_quic_keeps_its_sessions_and_tcp_reconnects():
    reason = namespaces_available()
    if reason:
        pytest.skip(reason)
    before = host_view()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "bench", "netem", "--json", "--profiles", "handover",
         "--vehicles", str(VEHICLES), "--before", "1.5", "--after", "3", "--drain", "15",
         "--alarm-rate", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.terminate()  # the bench removes its namespaces on SIGTERM
            proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr[-3000:]
    assert "link dark" in stderr and "link back, fleet moved" in stderr  # progress shown
    out = json.loads(stdout)
    r = out["profiles"]["handover"]
    quic, tcp = r["transports"]["quic"], r["transports"]["tcp"]

    # every vehicle had an alert in flight during the blackout, on both transports
    assert quic["blackout_alert_latency_ms"]["n"] == VEHICLES == tcp["blackout_alert_latency_ms"]["n"]
    # QUIC: every alert delivered, no re-authentication, no reconnection; each connection migrated
    assert quic["lost"] == 0 and quic["delivered"] == quic["raised"]
    assert quic["reauths"] == 0 and quic["reconnects"] == 0
    assert r["gateway"]["quic_migrations"] == VEHICLES
    assert quic["recovered"] == VEHICLES
    # TCP: each vehicle had to reconnect and authenticate again; its careful resend delivers the alerts
    assert tcp["reauths"] == VEHICLES and tcp["reconnects"] == VEHICLES
    assert tcp["lost"] == 0 and tcp["recovered"] == VEHICLES
    # the gateway saw the same: one registration per vehicle, extra authentications only over TCP
    assert r["gateway"]["registrations"] == 2 * VEHICLES
    assert r["gateway"]["authentications"] == 2 * VEHICLES + tcp["reauths"]

    # nothing of the bench is left, and the host's interfaces and addresses are as they were
    assert our_namespaces(proc.pid) == []
    assert host_view() == before


def test_without_namespaces_it_says_so_and_fails(monkeypatch, capsys):
    monkeypatch.setattr(netem.os, "geteuid", lambda: 1000)
    parser = argparse.ArgumentParser()
    netem.add_arguments(parser)
    assert netem.main(parser.parse_args(["--profiles", "handover"])) == 1
    assert "need root" in capsys.readouterr().err
    assert netem._LIVE_LABS == set()


def test_unknown_profiles_are_refused(capsys):
    parser = argparse.ArgumentParser()
    netem.add_arguments(parser)
    assert netem.main(parser.parse_args(["--profiles", "good4g,lunar"])) == 2
    assert "lunar" in capsys.readouterr().err
