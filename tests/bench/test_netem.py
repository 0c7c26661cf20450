"""``telacd bench netem``: the hand-over profile end to end, in real network namespaces.

Needs root (network namespaces); skipped with the reason otherwise. The run is
short (three vehicles per transport, a 2 s blackout) but complete: namespaces,
the emulated link, a gateway and a fleet in child processes, the address change,
and the clean-up, checked against the host's own interfaces.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import subprocess
import sys
import textwrap

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
    # which link ran, and why, in the JSON and on stderr
    assert out["link"] in ("netem", "tun") and out["link_why"].startswith("--link auto")
    assert f"link: {out['link']}: " in stderr and out["link_why"] in stderr
    r = out["profiles"]["handover"]
    # the blackout lasts what the profile says: the netlink worker was started before it
    assert r["blackout_actual_s"] == pytest.approx(2.0, abs=0.05)
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


# -- failures while making the link ------------------------------------------------------------------

# Run the CLI in a child with one part of the host made to fail (the patch runs first).
_FAIL = {
    "no /dev/net/tun": "from bench import netem\nnetem.TUN_PATH = '/nonexistent/net/tun'\n",
    "no veth": textwrap.dedent("""\
        from pyroute2.iproute.linux import NetNS
        from pyroute2.netlink.exceptions import NetlinkError

        def link(self, *argv, **kwarg):
            if kwarg.get("kind") == "veth":
                raise NetlinkError(95, "Operation not supported")
            return self.__getattr__("link")(*argv, **kwarg)

        NetNS.link = link
        """),
}


@pytest.mark.netns
@pytest.mark.parametrize(
    ("link", "fail", "expect"),
    [
        ("tun", ["no /dev/net/tun"], "cannot open /nonexistent/net/tun in telacd-fl-"),
        ("netem", ["no veth"], "no veth+netem link: cannot create a veth pair in telacd-fl-"),
        ("auto", ["no veth", "no /dev/net/tun"], "and no veth+netem link either: cannot create a veth pair"),
    ],
)
def test_a_link_that_cannot_be_made_is_one_line_and_no_namespace_left(link, fail, expect):
    reason = namespaces_available()
    if reason:
        pytest.skip(reason)
    before = host_view()
    code = "".join(_FAIL[f] for f in fail) + (
        "import sys\nfrom gateway.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "bench", "netem", "--link", link, "--profiles", "good4g"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    made, *lines = proc.stderr.splitlines()
    assert made.startswith("creating namespaces telacd-gw-")  # they were made, then removed
    assert len(lines) == 1 and lines[0].startswith("telacd bench netem: "), proc.stderr
    assert expect in lines[0]
    from pyroute2 import netns

    assert not set(made.split()) & set(netns.listnetns())
    assert host_view() == before


# -- the veth+netem link, as far as it goes without sch_netem -----------------------------------------


class FakeNS:
    """Stands for a pyroute2 NetNS: records the calls; ``fail`` maps a call to the NetlinkError it raises."""

    def __init__(self, fail: dict | None = None) -> None:
        self.calls: list[tuple] = []
        self.fail = fail or {}
        self.links = {"lo": 1}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def close(self):
        pass

    def link_lookup(self, ifname):
        return [self.links[ifname]] if ifname in self.links else []

    def link(self, command, **kwarg):
        self.calls.append(("link", command, kwarg))
        if (command, kwarg.get("kind")) in self.fail:
            raise self.fail[command, kwarg.get("kind")]
        if command == "add":
            self.links[kwarg["ifname"]] = len(self.links) + 1
            self.links[kwarg["peer"]] = len(self.links) + 1

    def tc(self, command, kind, index, **kwarg):
        self.calls.append(("tc", command, kind, index, kwarg))
        if (command, kind) in self.fail:
            raise self.fail[command, kind]


def _netlink_error(code: int):
    from pyroute2.netlink.exceptions import NetlinkError

    return NetlinkError(code, os.strerror(code))


def test_veth_link_is_made_with_netem_on_both_ends():
    lab = netem.Lab("t", "auto")
    g, f = FakeNS(), FakeNS()
    g.links["tqg0"] = 9  # the peer, once moved
    lab._make_link(g, f)
    assert (lab.kind, lab.why) == ("netem", "--link auto; this kernel has sch_netem")
    assert ("link", "add", {"ifname": "tqf0", "kind": "veth", "peer": "tqg0"}) in f.calls
    assert ("link", "set", {"index": f.links["tqg0"], "net_ns_fd": "telacd-gw-t"}) in f.calls
    assert [c[:4] for c in f.calls + g.calls if c[0] == "tc"] == [
        ("tc", "add", "netem", f.links["tqf0"]),
        ("tc", "add", "netem", 9),
    ]
    assert lab.fds == []  # no TUN


@pytest.mark.parametrize(
    ("fail", "why"),
    [
        ({("add", "netem"): errno.ENOENT}, "this kernel has no netem qdisc (sch_netem)"),
        (
            {("add", "veth"): errno.EOPNOTSUPP},
            "cannot create a veth pair in telacd-fl-t: Operation not supported",
        ),
    ],
)
def test_veth_link_without_netem_or_veth_says_why(monkeypatch, tmp_path, fail, why):
    fail = {k: _netlink_error(v) for k, v in fail.items()}
    # --link netem: refused, one line
    lab = netem.Lab("t", "netem")
    f = FakeNS(fail)
    with pytest.raises(netem.LabError) as e:
        lab._make_link(FakeNS(), f)
    assert str(e.value) == f"no veth+netem link: {why}; use --link tun"
    if ("add", "netem") in fail:  # the half-made pair is taken away
        assert f.calls[-1] == ("link", "del", {"index": f.links["tqf0"]})
    # --link auto: the TUN link instead, saying why; here with no TUN either
    monkeypatch.setattr(netem, "_in_netns", lambda name: __import__("contextlib").nullcontext())
    monkeypatch.setattr(netem, "TUN_PATH", str(tmp_path / "tun"))
    lab = netem.Lab("t", "auto")
    with pytest.raises(netem.LabError) as e:
        lab._make_link(FakeNS(), FakeNS(fail))
    assert str(e.value) == (
        f"cannot open {tmp_path / 'tun'} in telacd-fl-t: No such file or directory (no TUN driver on this "
        f"machine?); and no veth+netem link either: {why}"
    )


def _compile(call: tuple) -> dict:
    """The netlink message pyroute2 would send for a recorded tc() call, decoded (nothing is sent)."""
    from pyroute2 import IPBatch
    from pyroute2.netlink.rtnl.tcmsg import tcmsg

    _, command, kind, index, kwarg = call
    with IPBatch() as batch:
        batch.tc(command, kind, index, **kwarg)
        msg = tcmsg(bytes(batch.batch))
    msg.decode()
    return msg


@pytest.mark.parametrize("name", sorted(netem.PROFILES))
def test_netem_parameters_from_a_profile(monkeypatch, name):
    """What the netlink worker asks of netem for a profile, down to the netlink message pyroute2 builds."""
    from pyroute2.netlink.rtnl import TC_H_ROOT
    from pyroute2.netlink.rtnl.tcmsg.common import tick_in_usec

    profile = netem.PROFILES[name]
    lab = netem.Lab("t")
    lab.fleet_if, lab.gw_if = "tqf0", "tqg0"
    f, g = FakeNS(), FakeNS()
    f.links["tqf0"], g.links["tqg0"] = 5, 6
    monkeypatch.setattr("pyroute2.NetNS", lambda name, **kwarg: {lab.fleet_ns: f, lab.gw_ns: g}[name])
    for dark in (False, True):
        f.calls.clear()
        g.calls.clear()
        lab.set_netem_now(profile, dark)
        # the same on both ends (each delays its own egress): one direction each
        assert [c[:4] for c in f.calls + g.calls] == [
            ("tc", "change", "netem", 5),
            ("tc", "change", "netem", 6),
        ]
        kwarg = f.calls[0][4]
        assert kwarg == g.calls[0][4] == netem.netem_options(profile, dark)
        # pyroute2's units: microseconds, percent
        assert kwarg["delay"] == profile.delay_ms * 1000 and kwarg["jitter"] == profile.jitter_ms * 1000
        assert kwarg["loss"] == (100.0 if dark else 100 * profile.loss)
        msg = _compile(f.calls[0])
        assert msg["index"] == 5 and msg["parent"] == TC_H_ROOT
        assert msg.get_attr("TCA_KIND") == "netem"
        opts = msg.get_attr("TCA_OPTIONS")
        # the kernel's units: scheduler ticks, and loss as a fraction of 2**32 - 1
        assert opts["delay"] / tick_in_usec / 1000 == pytest.approx(profile.delay_ms, abs=1e-3)
        assert opts["jitter"] / tick_in_usec / 1000 == pytest.approx(profile.jitter_ms, abs=1e-3)
        if dark:
            assert opts["loss"] == 2**32 - 1  # every packet
        else:
            assert opts["loss"] / (2**32 - 1) == pytest.approx(profile.loss, rel=1e-6)
        # no distribution table (the kernel's jitter is then uniform, as the relay's), no added reordering,
        # duplication or rate; netem's default queue of 1000 packets
        assert opts["attrs"] == [] and opts["gap"] == 0 and opts["duplicate"] == 0
        assert opts["limit"] == 1000


def test_relay_draws_each_packet_delay_on_its_own():
    """Like netem with jitter, the relay lets a packet overtake one sent before it."""
    import asyncio

    async def run() -> list[int]:
        a, b = os.pipe(), os.pipe()  # the "fleet" TUN is read from a[0], the "gateway" TUN written to b[1]
        for fd in (a[0], b[0]):
            os.set_blocking(fd, False)
        relay = netem.Relay(a[0], b[1], netem.Profile(50.0, 40.0, 0.0), seed=1)
        try:
            for i in range(50):
                os.write(a[1], bytes([i]))
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.2)
            return list(os.read(b[0], 100))
        finally:
            relay.close()
            for fd in (*a, *b):
                os.close(fd)

    got = asyncio.run(run())
    assert sorted(got) == list(range(50))  # no loss
    assert got != sorted(got)  # reordered
