"""``telacd bench netem``: TCP against QUIC over emulated cellular links, in network namespaces.

Where the difference between the two transports shows is not a clean link but
a cellular one: delay, jitter, loss, and above all a hand-over, when the radio
goes dark for a moment and the vehicle comes back with another address. Over
TCP the connection is dead: the vehicle reconnects, authenticates again, and
re-sends the alert that was in flight. Over QUIC the connection carries on
from the new address (RFC 9000 §9) and its transport retransmits the alert.

The bench builds that, and only inside namespaces it makes (pyroute2):

* two network namespaces, ``telacd-gw-<pid>`` (a gateway: TCP and QUIC
  listeners on 10.200.7.1) and ``telacd-fl-<pid>`` (the fleet, 10.200.7.2),
  each with its loopback, joined by one link;
* the link is a veth pair with a netem qdisc on each end when the kernel has
  ``sch_netem``; otherwise (this reference machine's kernel has no netem) a TUN
  device in each namespace, joined by a relay in this process that applies
  the same model (``--link`` chooses; the output says which link ran and why):
  per direction, independent random loss, and a delay drawn for each packet
  on its own, uniform in ``delay ± jitter`` (netem's jitter without a
  distribution table, which is what pyroute2 sends). Drawn independently,
  the delays reorder packets sent closer together than the jitter's spread,
  on both links. A cellular link's RLC layer would deliver in order; netem
  does not, and the relay follows netem. One difference is left: when the
  link goes dark the relay also drops the packets it is still holding, while
  netem still delivers those queued before its loss went to 100 %;
* profiles (``PROFILES``): ``good4g`` 40 ms ± 10 each way, 0.1 % loss;
  ``poor3g`` 150 ms ± 50 each way, 2 % loss; ``handover``: good4g, then a 2 s
  blackout (every packet lost both ways) at the end of which the fleet's
  address changes from 10.200.7.2 to 10.200.7.3.

The fleet (a child process in the fleet namespace) runs the same number of
vehicles over each transport at once, through the same link: each reports
once a second and raises crash alerts (a 0x0200 with alarm bit 29) at the
same moments as its twin on the other transport; in the hand-over, every
vehicle raises one alert during the blackout. A vehicle behaves as a careful
TCU: an alert is kept until its 0x8001 arrives, and re-sent on a new
connection; a connection with a frame unanswered for ``--ack-timeout``
seconds is given up and replaced; when the modem reports a new address
(the fleet is told when the bench changes it) a TCP vehicle reconnects at
once, a QUIC vehicle sends a probe from the new address.

Measured per transport: alert delivery latency (raise to 0x8001, which the
gateway sends only once the session is stored), alerts lost (never
acknowledged by the end of the drain), re-authentications (0x0102 after the
first), reconnections, and in the hand-over the recovery time: from the link
coming back to the vehicle's first acknowledged 0x0200 after it, and how long
the link really dropped everything (``blackout_actual_s``: from the relay's
switch to dark to its switch back, or between netem's confirmed changes),
which includes the address change at its end.

It never touches the host's interfaces or addresses: every link and address
is created inside the two namespaces, which are deleted on exit (also on
Ctrl-C or SIGTERM). Creating namespaces needs root (CAP_SYS_ADMIN and
CAP_NET_ADMIN); without it the bench says so and exits with status 1.

    telacd bench netem
    telacd bench netem --profiles handover --vehicles 20 --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import json
import math
import os
import random
import signal
import statistics
import struct
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SUBNET = "10.200.7"
GW_ADDR = f"{SUBNET}.1"
FLEET_ADDR = f"{SUBNET}.2"
FLEET_ADDR_AFTER = f"{SUBNET}.3"  # the fleet's address after the hand-over
PREFIX = 24
TCP_PORT = 6808
QUIC_PORT = 6809
CRASH = 1 << 29  # JT/T 808-2019 table 24: bit 29, collision/rollover... crash alarm in telacd's triggers


@dataclass(frozen=True)
class Profile:
    delay_ms: float  # one way, each direction
    jitter_ms: float  # uniform ± around the delay
    loss: float  # probability a packet is lost, each direction
    blackout_s: float = 0.0  # hand-over: every packet lost for this long ...
    move: bool = False  # ... then the fleet's address changes


PROFILES = {
    "good4g": Profile(40.0, 10.0, 0.001),
    "poor3g": Profile(150.0, 50.0, 0.02),
    "handover": Profile(40.0, 10.0, 0.001, blackout_s=2.0, move=True),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--profiles", default="good4g,poor3g,handover", help="comma-separated, of: " + ", ".join(PROFILES)
    )
    parser.add_argument("--vehicles", type=int, default=20, help="vehicles per transport")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of steady traffic per profile")
    parser.add_argument(
        "--alarm-rate", type=float, default=0.1, help="crash alerts per vehicle per second (both transports)"
    )
    parser.add_argument(
        "--report-interval", type=float, default=1.0, help="seconds between a vehicle's reports"
    )
    parser.add_argument(
        "--ack-timeout",
        type=float,
        default=10.0,
        help="a vehicle gives up a connection whose frame waits this long",
    )
    parser.add_argument("--drain", type=float, default=20.0, help="at most this long for the last alerts")
    parser.add_argument(
        "--before", type=float, default=3.0, help="hand-over: seconds of traffic before the blackout"
    )
    parser.add_argument("--after", type=float, default=8.0, help="hand-over: seconds of traffic after it")
    parser.add_argument(
        "--link",
        choices=("auto", "netem", "tun"),
        default="auto",
        help="veth+netem, TUN relay, or netem if available",
    )
    parser.add_argument("--seed", type=int, default=7)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# =================================================================================================
# the namespaces and the link


class LabError(Exception):
    """The namespaces or the link could not be made."""


def _in_netns(name: str) -> contextlib.AbstractContextManager[None]:
    """Run a block with this thread inside namespace ``name`` (for opening TUN devices there)."""
    from pyroute2 import netns

    @contextlib.contextmanager
    def cm():
        saved = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            netns.setns(name, flags=0)  # flags=0: never create a namespace by accident
            yield
        finally:
            netns.setns(saved)
            os.close(saved)

    return cm()


TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
TUN_PATH = "/dev/net/tun"


def netem_options(profile: Profile, dark: bool = False) -> dict[str, Any]:
    """The options of pyroute2's ``tc(..., "netem", ...)`` for one end of the link (each end delays its egress).

    pyroute2 (``pyroute2.netlink.rtnl.tcmsg.sched_netem``) takes delay and jitter
    in microseconds and loss in percent; it sends no delay distribution table,
    so the kernel draws each packet's delay uniformly in ``delay ± jitter``.
    Dark: every packet lost.
    """
    return {
        "delay": round(profile.delay_ms * 1000),
        "jitter": round(profile.jitter_ms * 1000),
        "loss": 100.0 if dark else 100.0 * profile.loss,
    }


def _why(e: BaseException) -> str:
    """One line saying why an OSError or a pyroute2 NetlinkError happened."""
    code = getattr(e, "code", None)  # NetlinkError: the errno the kernel answered
    if isinstance(e, OSError) and e.strerror:
        text = e.strerror
    elif isinstance(code, int) and code > 0:
        text = os.strerror(code)
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())


LINKS = {  # what each kind of link is, for the output
    "netem": "netem: a veth pair with a netem qdisc on each end",
    "tun": "tun: a TUN device in each namespace, joined by this process's relay",
}

_LIVE_LABS: set[Lab] = set()  # destroyed again on the way out of main(), whatever interrupted a run


class Lab:
    """Two namespaces, one emulated link between them; everything removed by :meth:`destroy`."""

    def __init__(self, tag: str, link: str = "auto") -> None:
        self.gw_ns = f"telacd-gw-{tag}"
        self.fleet_ns = f"telacd-fl-{tag}"
        self.want = link
        self.kind = ""  # "netem" or "tun" once created
        self.why = ""  # why that kind, once created
        self.created: list[str] = []
        self.fds: list[int] = []
        self.fleet_if = ""
        self.gw_if = ""
        self.fleet_addr = FLEET_ADDR
        self.relay: Relay | None = None
        self.worker: Child | None = None
        self.blackouts: list[float] = []  # seconds each blackout lasted, as the link applied it
        self._dark_since: float | None = None
        self._sockets: dict[str, Any] = {}  # the netlink worker's open NetNS sockets, by namespace

    def create(self) -> None:
        from pyroute2 import NetNS, netns
        from pyroute2.netlink.exceptions import NetlinkError

        if os.geteuid() != 0:
            raise LabError("network namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN); run as root")
        _LIVE_LABS.add(self)
        for name in (self.gw_ns, self.fleet_ns):
            if name in netns.listnetns():
                raise LabError(f"namespace {name} already exists; not touching it")
            try:
                netns.create(name)
            except OSError as e:
                raise LabError(f"cannot create network namespace {name}: {e}") from e
            self.created.append(name)
        try:
            with NetNS(self.gw_ns, flags=0) as g, NetNS(self.fleet_ns, flags=0) as f:
                for ns in (g, f):
                    ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
                self._make_link(g, f)
                g.addr("add", index=g.link_lookup(ifname=self.gw_if)[0], address=GW_ADDR, prefixlen=PREFIX)
                idx = f.link_lookup(ifname=self.fleet_if)[0]
                f.addr("add", index=idx, address=FLEET_ADDR, prefixlen=PREFIX)
                g.link("set", index=g.link_lookup(ifname=self.gw_if)[0], state="up")
                f.link("set", index=f.link_lookup(ifname=self.fleet_if)[0], state="up")
        except (OSError, NetlinkError) as e:
            raise LabError(
                f"cannot set up the link between {self.gw_ns} and {self.fleet_ns}: {_why(e)}"
            ) from e

    def _make_link(self, g: Any, f: Any) -> None:
        """veth+netem or TUN, as ``--link`` asks; ``self.kind`` and ``self.why`` say which and why."""
        if self.want == "tun":
            self._make_tun()
            self.kind, self.why = "tun", "--link tun"
            return
        no_netem = self._make_veth(g, f)
        if no_netem is None:
            self.kind, self.why = "netem", f"--link {self.want}; this kernel has sch_netem"
        elif self.want == "netem":
            raise LabError(f"no veth+netem link: {no_netem}; use --link tun")
        else:
            try:
                self._make_tun()
            except LabError as e:
                raise LabError(f"{e}; and no veth+netem link either: {no_netem}") from e
            self.kind, self.why = "tun", f"--link auto; no veth+netem link: {no_netem}"

    def _make_veth(self, g: Any, f: Any) -> str | None:
        """A veth pair across the namespaces with netem on both ends; else why not (nothing left made)."""
        from pyroute2.netlink.exceptions import NetlinkError

        self.fleet_if, self.gw_if = "tqf0", "tqg0"
        try:
            f.link("add", ifname=self.fleet_if, kind="veth", peer=self.gw_if)
        except NetlinkError as e:
            return f"cannot create a veth pair in {self.fleet_ns}: {_why(e)}"
        try:
            f.link("set", index=f.link_lookup(ifname=self.gw_if)[0], net_ns_fd=self.gw_ns)
            f.tc("add", "netem", f.link_lookup(ifname=self.fleet_if)[0], delay=1000)
        except NetlinkError as e:
            f.link("del", index=f.link_lookup(ifname=self.fleet_if)[0])  # takes its peer with it
            if e.code == errno.ENOENT:
                return "this kernel has no netem qdisc (sch_netem)"
            return f"cannot add a netem qdisc to the veth pair: {_why(e)}"
        g.tc("add", "netem", g.link_lookup(ifname=self.gw_if)[0], delay=1000)
        return None

    def _make_tun(self) -> None:
        self.fleet_if, self.gw_if = "tqf0", "tqg0"
        for ns, ifname in ((self.fleet_ns, self.fleet_if), (self.gw_ns, self.gw_if)):
            with _in_netns(ns):  # (failing to enter it: an OSError, reported by create)
                try:
                    fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK)
                except OSError as e:
                    hint = " (no TUN driver on this machine?)" if isinstance(e, FileNotFoundError) else ""
                    raise LabError(f"cannot open {TUN_PATH} in {ns}: {_why(e)}{hint}") from e
                self.fds.append(fd)
                try:
                    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", ifname.encode(), IFF_TUN | IFF_NO_PI))
                except OSError as e:
                    raise LabError(f"cannot make TUN device {ifname} in {ns}: {_why(e)}") from e

    # -- changing the link -------------------------------------------------------------------------

    def start_relay(self, profile: Profile, seed: int) -> None:
        if self.kind == "tun":
            self.relay = Relay(self.fds[0], self.fds[1], profile, seed)

    # -- changing the link while the bench runs ----------------------------------------------------
    #
    # pyroute2 forks a helper to open a netlink socket inside a namespace. A fork
    # from a process with an event loop and threads can deadlock in the child, so
    # netlink work during the run is done by a small worker process of our own
    # (``--child netlink``), single-threaded, which calls the ``*_now`` methods below.
    # Starting it takes a Python start-up and pyroute2's import (about half a
    # second): :meth:`warm` does that, and opens its sockets, before a blackout,
    # so that the address change at the end of one costs a millisecond or so.

    async def set_profile(self, profile: Profile, dark: bool = False) -> None:
        if self.kind == "tun":
            assert self.relay is not None
            self.relay.profile = profile
            self.relay.dark = dark
        else:
            await self._call({"op": "netem", "profile": asdict(profile), "dark": dark})
        # when the link starts and stops dropping: the relay's switch, or netem's once the worker confirms
        now = time.monotonic()
        if dark and self._dark_since is None:
            self._dark_since = now
        elif not dark and self._dark_since is not None:
            self.blackouts.append(now - self._dark_since)
            self._dark_since = None

    async def move_fleet(self, new_addr: str) -> None:
        """The fleet's address changes (a new cell, a new carrier-grade NAT mapping)."""
        await self._call({"op": "move", "from": self.fleet_addr, "to": new_addr})
        self.fleet_addr = new_addr

    async def warm(self) -> None:
        """Have the netlink worker running, with its sockets open, before it is needed in a hurry."""
        await self._call({"op": "ping"})

    async def _call(self, msg: dict[str, Any]) -> None:
        if self.worker is None:
            self.worker = await Child.start(
                "netlink worker",
                ["--child", "netlink", "--netns", self.gw_ns, "--fleet-netns", self.fleet_ns,
                 "--fleet-if", self.fleet_if, "--gw-if", self.gw_if],
            )  # fmt: skip
        self.worker.send(msg)
        reply = await self.worker.recv(30)
        if not reply.get("ok"):
            raise LabError(f"netlink worker: {reply.get('error')}")

    def _socket(self, name: str) -> Any:
        """The worker's netlink socket in namespace ``name``, opened once (opening one forks)."""
        from pyroute2 import NetNS

        if name not in self._sockets:
            self._sockets[name] = NetNS(name, flags=0)  # flags=0: never create a namespace
        return self._sockets[name]

    def close_sockets(self) -> None:
        for ns in self._sockets.values():
            with contextlib.suppress(Exception):
                ns.close()
        self._sockets = {}

    def ping_now(self) -> None:
        self._socket(self.fleet_ns)
        self._socket(self.gw_ns)

    def set_netem_now(self, profile: Profile, dark: bool = False) -> None:
        for name, ifname in ((self.fleet_ns, self.fleet_if), (self.gw_ns, self.gw_if)):
            ns = self._socket(name)
            ns.tc("change", "netem", ns.link_lookup(ifname=ifname)[0], **netem_options(profile, dark))

    def move_fleet_now(self, old_addr: str, new_addr: str) -> None:
        f = self._socket(self.fleet_ns)
        idx = f.link_lookup(ifname=self.fleet_if)[0]
        f.addr("del", index=idx, address=old_addr, prefixlen=PREFIX)
        f.addr("add", index=idx, address=new_addr, prefixlen=PREFIX)

    def destroy(self) -> None:
        from pyroute2 import netns

        if self.relay is not None:
            self.relay.close()
            self.relay = None
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []
        for name in self.created:  # removing a namespace removes its links (both veth ends go)
            with contextlib.suppress(OSError):
                netns.remove(name)
        left = [name for name in self.created if name in netns.listnetns()]
        if left:
            _progress(f"warning: could not remove namespace(s) {', '.join(left)} (ip netns del NAME)")
        self.created = []
        _LIVE_LABS.discard(self)


class Relay:
    """The TUN link: packets read from one namespace's TUN, delayed or dropped, written to the other's.

    Each packet's delay is drawn on its own, as netem does: packets may overtake each other.
    """

    def __init__(self, fleet_fd: int, gw_fd: int, profile: Profile, seed: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.profile = profile
        self.dark = False
        self.rng = random.Random(seed)
        self.fds = (fleet_fd, gw_fd)
        self.packets = [0, 0]
        self.dropped = [0, 0]
        self.loop.add_reader(fleet_fd, self._read, 0)
        self.loop.add_reader(gw_fd, self._read, 1)

    def _read(self, direction: int) -> None:
        src = self.fds[direction]
        dst = self.fds[1 - direction]
        p = self.profile
        while True:
            try:
                packet = os.read(src, 65536)
            except (BlockingIOError, OSError):
                return
            self.packets[direction] += 1
            if self.dark or self.rng.random() < p.loss:
                self.dropped[direction] += 1
                continue
            delay = max(0.0, p.delay_ms + self.rng.uniform(-p.jitter_ms, p.jitter_ms)) / 1000.0
            self.loop.call_later(delay, self._deliver, dst, packet, direction)

    def _deliver(self, fd: int, packet: bytes, direction: int) -> None:
        if self.dark:  # in the air when the radio went: lost too
            self.dropped[direction] += 1
            return
        with contextlib.suppress(OSError):
            os.write(fd, packet)

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(fd)


# =================================================================================================
# the orchestrator (this process, in the host namespace, holding only the link)


class Child:
    """A child process in a namespace, speaking JSON lines on stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process, what: str) -> None:
        self.proc = proc
        self.what = what

    @classmethod
    async def start(cls, what: str, argv: list[str]) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.netem",
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(proc, what)

    def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())

    async def recv(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise LabError(f"the {self.what} exited (status {await self.proc.wait()})")
        return json.loads(line)

    async def expect(self, event: str, timeout: float, on_other: Any = None) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            msg = await self.recv(max(0.1, deadline - loop.time()))
            if msg.get("event") == event:
                return msg
            if on_other is not None:
                on_other(msg)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def _show_progress(name: str, t0: float) -> Any:
    def show(msg: dict[str, Any]) -> None:
        if msg.get("event") != "progress":
            return
        parts = []
        for kind in ("tcp", "quic"):
            s = msg[kind]
            parts.append(
                f"{kind} online {s['online']}/{s['vehicles']} alerts {s['delivered']}/{s['raised']} "
                f"reauth {s['reauths']}"
            )
        _progress(f"[{name}] t+{time.monotonic() - t0:5.1f}s  " + " | ".join(parts))

    return show


async def run_profile(name: str, args: argparse.Namespace, lab: Lab, workdir: Path) -> dict[str, Any]:
    """One profile on the lab: a fresh gateway and fleet, the schedule, the results."""
    from gateway.cmd_cert import write_pair

    profile = PROFILES[name]
    gateway = fleet = None
    try:
        if profile.move or lab.kind == "netem":
            await lab.warm()  # not in the blackout: the worker's start-up would lengthen it
        if lab.fleet_addr != FLEET_ADDR:
            await lab.move_fleet(FLEET_ADDR)
        if lab.relay is None:
            lab.start_relay(profile, args.seed)
        elif lab.relay is not None:
            lab.relay.packets, lab.relay.dropped = [0, 0], [0, 0]  # counted per profile
        lab.blackouts = []
        await lab.set_profile(profile)
        _progress(
            f"[{name}] {profile.delay_ms:g} ms ± {profile.jitter_ms:g} each way, "
            f"{100 * profile.loss:g}% loss"
            + (f", then a {profile.blackout_s:g} s blackout" if profile.blackout_s else "")
            + (" and an address change" if profile.move else "")
        )
        certdir = workdir / f"cert-{name}"
        if not (certdir / "cert.pem").exists():
            write_pair(certdir, ips=[GW_ADDR])
        common = [
            "--workdir",
            str(workdir / name),
            "--cert",
            str(certdir / "cert.pem"),
            "--key",
            str(certdir / "key.pem"),
        ]
        (workdir / name).mkdir(parents=True, exist_ok=True)
        gateway = await Child.start("gateway", ["--child", "gateway", "--netns", lab.gw_ns, *common])
        await gateway.expect("ready", 30)
        _progress(f"[{name}] gateway ready on {GW_ADDR} (tcp :{TCP_PORT}, quic :{QUIC_PORT})")
        fleet = await Child.start(
            "fleet",
            ["--child", "fleet", "--netns", lab.fleet_ns, *common, "--vehicles", str(args.vehicles),
             "--report-interval", str(args.report_interval), "--ack-timeout", str(args.ack_timeout),
             "--seed", str(args.seed)],
        )  # fmt: skip
        t0 = time.monotonic()
        show = _show_progress(name, t0)
        await fleet.expect("online", 60, show)
        _progress(f"[{name}] fleet online: {args.vehicles} vehicles over TCP, {args.vehicles} over QUIC")
        rng = random.Random(args.seed)
        timeline: dict[str, float] = {}

        async def alerts_for(seconds: float) -> None:
            """Poisson alerts, fleet-wide, each on a vehicle and its twin on the other transport."""
            end = time.monotonic() + seconds
            rate = args.alarm_rate * args.vehicles
            while True:
                gap = rng.expovariate(rate) if rate > 0 else seconds
                if time.monotonic() + gap >= end:
                    await asyncio.sleep(max(0.0, end - time.monotonic()))
                    return
                await asyncio.sleep(gap)
                fleet.send({"cmd": "alert", "vehicle": rng.randrange(args.vehicles)})

        async def pump() -> dict[str, Any]:
            # the one reader of the fleet's output until its result: cancelling a read that is
            # completing can lose the line it read (asyncio.wait_for on 3.11), so the result must
            # not race a cancellation
            while True:
                msg = await fleet.recv(3600)
                if msg.get("event") == "result":
                    return msg
                show(msg)

        pumping = asyncio.get_running_loop().create_task(pump())
        try:
            if profile.blackout_s:
                await alerts_for(args.before)
                await lab.set_profile(profile, True)
                timeline["dark"] = time.monotonic()
                fleet.send({"cmd": "dark", "t": timeline["dark"], "blackout": profile.blackout_s})
                _progress(f"[{name}] t+{timeline['dark'] - t0:5.1f}s  link dark")
                await asyncio.sleep(profile.blackout_s)
                if profile.move:
                    await lab.move_fleet(FLEET_ADDR_AFTER)
                await lab.set_profile(profile, False)
                timeline["light"] = time.monotonic()
                fleet.send({"cmd": "light", "t": timeline["light"], "addr": lab.fleet_addr})
                _progress(
                    f"[{name}] t+{timeline['light'] - t0:5.1f}s  link back"
                    + (f", fleet moved {FLEET_ADDR} -> {FLEET_ADDR_AFTER}" if profile.move else "")
                    + f" (dark for {lab.blackouts[-1]:.3f} s)"
                )
                await alerts_for(args.after)
            else:
                await alerts_for(args.duration)
            fleet.send({"cmd": "finish", "drain": args.drain})
            _progress(f"[{name}] draining the last alerts (at most {args.drain:g} s)")
            try:
                result = await asyncio.wait_for(asyncio.shield(pumping), args.drain + 30)
            except TimeoutError:
                raise LabError(f"the fleet sent no result within {args.drain + 30:g} s") from None
        finally:
            if not pumping.done():
                pumping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pumping
        await fleet.stop()
        fleet = None
        await gateway.stop()
        assert gateway.proc.stdout is not None
        tail = [
            json.loads(line)
            for line in (await gateway.proc.stdout.read()).splitlines()
            if line.startswith(b"{")
        ]
        gateway = None
        out = {"profile": asdict(profile), "link": lab.kind, "transports": result["transports"]}
        if lab.blackouts:  # how long the link really dropped everything (the profile says blackout_s)
            out["blackout_actual_s"] = round(lab.blackouts[-1], 3)
        if tail:
            out["gateway"] = tail[-1]
        if lab.relay is not None:
            out["relay"] = {"packets": list(lab.relay.packets), "dropped": list(lab.relay.dropped)}
        return out
    finally:
        for child in (fleet, gateway):
            if child is not None:
                with contextlib.suppress(Exception):
                    child.proc.kill()
                    await child.proc.wait()


async def orchestrate(args: argparse.Namespace, lab: Lab, names: list[str]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGINT, signal.SIGTERM):  # cancel the run: every finally block below runs
        loop.add_signal_handler(sig, main.cancel)
    results: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="telacd-netem-") as d:
            for n in names:
                results[n] = await run_profile(n, args, lab, Path(d))
                _progress(summary_line(n, results[n]))
    finally:
        if lab.relay is not None:
            lab.relay.close()
            lab.relay = None
        if lab.worker is not None:
            await lab.worker.stop()
            lab.worker = None
    return {
        "profiles": results,
        "link": lab.kind,
        "link_why": lab.why,
        "vehicles_per_transport": args.vehicles,
    }


def summary_line(name: str, r: dict[str, Any]) -> str:
    parts = []
    for kind in ("tcp", "quic"):
        t = r["transports"][kind]
        lat = t["alert_latency_ms"]
        s = (
            f"{kind}: alerts {t['delivered']}/{t['raised']} lost {t['lost']} "
            f"p50 {lat['p50']} ms p95 {lat['p95']} ms max {lat['max']} ms reauth {t['reauths']}"
        )
        if t.get("recovery_ms"):
            s += f" recovery median {t['recovery_ms']['median']} ms max {t['recovery_ms']['max']} ms"
        parts.append(s)
    return f"[{name}] " + " | ".join(parts)


def main(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.profiles.split(",") if n.strip()]
    unknown = [n for n in names if n not in PROFILES]
    if unknown or not names:
        print(
            f"telacd bench netem: unknown profile(s) {unknown} (known: {', '.join(PROFILES)})",
            file=sys.stderr,
        )
        return 2
    # Ctrl-C and SIGTERM clean up: the namespaces go in the finally block. While the
    # loop runs, the loop's own handlers cancel the run (see orchestrate). Outside it,
    # these handlers raise KeyboardInterrupt; pyroute2 forks short-lived helpers (to
    # open netlink sockets in a namespace) and stops them with SIGTERM, and a helper
    # inherits the handler: it must just exit, never unwind into a copy of this
    # function, which would remove the namespaces under the bench.
    me = os.getpid()

    def interrupted(signum: int, frame: Any) -> None:
        if os.getpid() != me:
            os._exit(0)
        raise KeyboardInterrupt

    lab = Lab(str(os.getpid()), args.link)
    previous = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        import uvloop

        # pyroute2 forks to create a namespace: done here, before any loop or thread exists
        _progress(f"creating namespaces {lab.gw_ns} and {lab.fleet_ns}")
        lab.create()
        _progress(f"link: {LINKS[lab.kind]} ({lab.why})")
        out = uvloop.run(orchestrate(args, lab, names))
    except LabError as e:
        print(f"telacd bench netem: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("telacd bench netem: interrupted; namespaces removed", file=sys.stderr)
        return 130
    finally:
        for sig in previous:  # the loop, closing, has put back the default handlers
            signal.signal(sig, interrupted)
        for live in list(_LIVE_LABS):
            live.destroy()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if args.json:
        print(json.dumps(out, separators=(",", ":")))
    else:
        for name, r in out["profiles"].items():
            print(summary_line(name, r))
    return 0


# =================================================================================================
# the children


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, math.ceil(q * len(values)) - 1)]


def _ms(v: float | None) -> float | None:
    return None if v is None else round(1000 * v, 1)


class CellVehicle:
    """One vehicle on one transport, behaving as a careful TCU (see the module docstring)."""

    def __init__(self, fleet: CellFleet, kind: str, phone: str) -> None:
        self.fleet = fleet
        self.kind = kind
        self.phone = phone
        self.conn: Any = None
        self.transport: Any = None
        self.online = False
        self.auth_code: str | None = None
        self.pending: dict[int, tuple[float, int]] = {}  # serial -> (sent at, alert index or -1)
        self.waiting: list[int] = []  # alerts raised and not yet acknowledged
        self.alarm_set = False  # the last report carried the crash bit (the next one clears it)
        self.authentications = 0
        self.connections = 0
        self.recovered_at: float | None = None
        self.connecting = False
        self.lat = 22.54 + random.random() / 100
        self.lon = 114.05 + random.random() / 100

    # -- connection --------------------------------------------------------------------------------

    async def connect(self) -> None:
        if self.connecting or self.fleet.stopping:
            return
        self.connecting = True
        loop = asyncio.get_running_loop()
        try:
            while not self.fleet.stopping:
                from protocols.jt808.connection import Connection, Role

                self.conn = Connection(Role.TERMINAL, phone=self.phone)
                proto = _VehicleProtocol(self)
                try:
                    if self.kind == "tcp":
                        await asyncio.wait_for(
                            loop.create_connection(lambda p=proto: p, GW_ADDR, TCP_PORT), 10.0
                        )
                    else:
                        from bench.quic_client import create_connection

                        await create_connection(
                            lambda p=proto: p,
                            GW_ADDR,
                            QUIC_PORT,
                            tickets=self.fleet.tickets,
                            cafile=self.fleet.cafile,
                        )
                    return
                except (OSError, TimeoutError):
                    await asyncio.sleep(0.5)
        finally:
            self.connecting = False

    def made(self, proto: _VehicleProtocol, transport: Any) -> None:
        self.transport = transport
        self.connections += 1
        self.pending.clear()
        if self.auth_code is None:
            self._send(self.conn.register(maker="TELAC", model="NETEM", terminal_id=self.phone[-7:]))
        else:
            self._authenticate()

    def _authenticate(self) -> None:
        self.authentications += 1
        self._send(self.conn.authenticate(self.auth_code))

    def lost(self, proto: _VehicleProtocol) -> None:
        if proto.transport is not self.transport:
            return  # an older connection, already replaced
        self.transport = None
        self.online = False
        if not self.fleet.stopping and not self.connecting:
            asyncio.get_running_loop().create_task(self.connect())

    def received(self, data: bytes) -> None:
        from protocols.jt808 import events as ev

        now = time.monotonic()
        for e in self.conn.receive_data(data, now):
            t = type(e)
            if t is ev.Acknowledged:
                body = e.message.body
                sent = self.pending.pop(body.reply_serial, None)
                if body.reply_id == 0x0102:
                    if body.result == 0 and not self.online:
                        self.online = True
                        for index in self.waiting:  # what the last connection did not deliver
                            self._send_alert(index)
                elif sent is not None and body.reply_id == 0x0200:
                    if sent[1] >= 0:
                        self.fleet.delivered(self, sent[1], now)
                    light = self.fleet.light_at
                    if light is not None and self.recovered_at is None and now > light:
                        self.recovered_at = now
            elif t is ev.RegisterAnswered:
                self.pending.pop(e.message.body.reply_serial, None)  # answered by 0x8100, not 0x8001
                if e.message.body.result == 0:
                    self.auth_code = e.message.body.auth_code
                    self._authenticate()
            elif t is ev.CommandReceived:
                self._write(self.conn.ack(e))

    # -- sending -----------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _send(self, serial_data: tuple[int, bytes], alert: int = -1) -> None:
        serial, data = serial_data
        if self.transport is None:
            return
        self.pending[serial] = (time.monotonic(), alert)
        self._write(data)

    def _location(self, alarm: int) -> Any:
        from bench.terminal import device_now
        from protocols.jt808.messages import make_location

        return make_location(round(self.lat, 6), round(self.lon, 6), device_time=device_now(), alarm=alarm,
                             speed_kmh=42.0, direction=90, altitude=20)  # fmt: skip

    def _send_alert(self, index: int) -> None:
        self.alarm_set = True
        self._send(self.conn.report_location(self._location(CRASH)), index)

    def report(self) -> None:
        if not self.online:
            return
        self.lon += 1e-5
        self.alarm_set = False
        self._send(self.conn.report_location(self._location(0)))

    def raise_alert(self, index: int) -> None:
        self.waiting.append(index)
        if self.online:
            self._send_alert(index)

    def check(self, now: float, ack_timeout: float) -> None:
        """Give up a connection whose oldest frame has waited ``ack_timeout`` (a silent dead path)."""
        if self.transport is None or not self.pending:
            return
        oldest = min(sent for sent, _ in self.pending.values())
        if now - oldest > ack_timeout:
            self.fleet.timeouts[self.kind] += 1
            self.transport.abort()

    def network_changed(self) -> None:
        """The modem reports a new address."""
        if self.transport is None:
            return
        if self.kind == "tcp":
            self.transport.abort()  # the socket is bound to the address that is gone
        else:
            self.transport.get_extra_info("quic").probe()


class _VehicleProtocol:
    """The asyncio protocol of one connection of a vehicle (a new one per connection)."""

    def __init__(self, vehicle: CellVehicle) -> None:
        self.vehicle = vehicle
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.vehicle.made(self, transport)

    def data_received(self, data: bytes) -> None:
        if self.transport is self.vehicle.transport:
            self.vehicle.received(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.vehicle.lost(self)

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


class CellFleet:
    def __init__(self, args: argparse.Namespace) -> None:
        from bench.quic_client import TicketJar

        self.args = args
        self.stopping = False
        self.tickets = TicketJar()
        self.cafile = args.cert
        self.vehicles = {
            kind: [CellVehicle(self, kind, f"0{prefix}{i:08d}") for i in range(args.vehicles)]
            for kind, prefix in (("tcp", "177"), ("quic", "188"))
        }
        # alert index -> (kind, raised at, delivered at); an alert is raised on both twins at once
        self.alerts: list[list[Any]] = []
        self.dark_at: float | None = None
        self.light_at: float | None = None
        self.in_blackout: set[int] = set()
        self.timeouts = {"tcp": 0, "quic": 0}

    def raise_alert(self, i: int) -> None:
        now = time.monotonic()
        for kind, vehicles in self.vehicles.items():
            index = len(self.alerts)
            self.alerts.append([kind, now, None])
            if self.dark_at is not None and self.light_at is None:
                self.in_blackout.add(index)
            vehicles[i].raise_alert(index)

    def delivered(self, vehicle: CellVehicle, index: int, now: float) -> None:
        alert = self.alerts[index]
        if alert[2] is None:
            alert[2] = now
        with contextlib.suppress(ValueError):
            vehicle.waiting.remove(index)

    def counts(self, kind: str) -> dict[str, Any]:
        vs = self.vehicles[kind]
        mine = [a for a in self.alerts if a[0] == kind]
        return {
            "vehicles": len(vs),
            "online": sum(v.online for v in vs),
            "raised": len(mine),
            "delivered": sum(a[2] is not None for a in mine),
            "reauths": sum(max(0, v.authentications - 1) for v in vs),
        }

    def result(self, kind: str) -> dict[str, Any]:
        vs = self.vehicles[kind]
        mine = [(i, a) for i, a in enumerate(self.alerts) if a[0] == kind]
        latencies = [a[2] - a[1] for _, a in mine if a[2] is not None]
        during = [a[2] - a[1] for i, a in mine if i in self.in_blackout and a[2] is not None]
        out: dict[str, Any] = {
            "raised": len(mine),
            "delivered": len(latencies),
            "lost": sum(a[2] is None for _, a in mine),
            "alert_latency_ms": {
                "p50": _ms(_percentile(latencies, 0.5)),
                "p95": _ms(_percentile(latencies, 0.95)),
                "max": _ms(max(latencies) if latencies else None),
            },
            "reauths": sum(max(0, v.authentications - 1) for v in vs),
            "registrations": sum(1 for v in vs if v.auth_code is not None),
            "reconnects": sum(max(0, v.connections - 1) for v in vs),
            "ack_timeouts": self.timeouts[kind],
        }
        if self.in_blackout:
            out["blackout_alert_latency_ms"] = {
                "n": sum(1 for i, _ in mine if i in self.in_blackout),
                "p50": _ms(_percentile(during, 0.5)),
                "max": _ms(max(during) if during else None),
            }
        if self.light_at is not None:
            after = [a[2] - a[1] for _, a in mine if a[1] > self.light_at + 1.0 and a[2] is not None]
            out["after_alert_latency_ms"] = {  # alerts raised a second or more after the hand-over
                "n": len(after),
                "p50": _ms(_percentile(after, 0.5)),
                "max": _ms(max(after) if after else None),
            }
            rec = [v.recovered_at - self.light_at for v in vs if v.recovered_at is not None]
            out["recovered"] = len(rec)
            out["recovery_ms"] = {
                "median": _ms(statistics.median(rec)) if rec else None,
                "p95": _ms(_percentile(rec, 0.95)),
                "max": _ms(max(rec) if rec else None),
            }
        return out

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        everyone = [v for vs in self.vehicles.values() for v in vs]
        await asyncio.gather(*(v.connect() for v in everyone))
        while not all(v.online for v in everyone):
            await asyncio.sleep(0.05)
        _emit({"event": "online"})
        tasks = [loop.create_task(self._reports(everyone)), loop.create_task(self._progress())]
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        drain = 10.0
        while True:
            line = await reader.readline()
            if not line:
                break
            msg = json.loads(line)
            cmd = msg["cmd"]
            if cmd == "alert":
                self.raise_alert(msg["vehicle"])
            elif cmd == "dark":
                self.dark_at = msg["t"]
                # every vehicle has an alert in flight while the link is dark
                rng = random.Random(self.args.seed + 1)
                for i in range(self.args.vehicles):
                    loop.call_later(rng.uniform(0.1, msg["blackout"] - 0.1), self.raise_alert, i)
            elif cmd == "light":
                self.light_at = msg["t"]
                for v in everyone:
                    v.network_changed()
            elif cmd == "finish":
                drain = msg["drain"]
                break
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline and any(a[2] is None for a in self.alerts):
            await asyncio.sleep(0.1)
        self.stopping = True
        for t in tasks:
            t.cancel()
        _emit({"event": "result", "transports": {k: self.result(k) for k in self.vehicles}})
        for v in everyone:
            if v.transport is not None:
                v.transport.close()
        await asyncio.sleep(0.3)

    async def _reports(self, everyone: list[CellVehicle]) -> None:
        interval = self.args.report_interval
        step = interval / max(1, len(everyone) // 2)
        while True:
            for i in range(len(everyone) // 2):
                now = time.monotonic()
                for kind in ("tcp", "quic"):
                    v = self.vehicles[kind][i]
                    v.report()
                    v.check(now, self.args.ack_timeout)
                await asyncio.sleep(step)

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            _emit({"event": "progress", **{k: self.counts(k) for k in self.vehicles}})


def _emit(msg: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


async def _gateway_child(args: argparse.Namespace) -> None:
    from gateway import config
    from gateway.app import Gateway

    raw = {
        "gateway": {
            "tcp": f"{GW_ADDR}:{TCP_PORT}",
            "quic": f"{GW_ADDR}:{QUIC_PORT}",
            "quic_cert": args.cert,
            "quic_key": args.key,
            "http": "127.0.0.1:8080",  # inside the gateway's namespace: nobody else's port
            "agent_tcp": "",
            "feed_tcp": "",
        },
        "store": {"url": f"sqlite:///{args.workdir}/gateway.db"},
        # vehicles must register, then present their code: a re-authentication is visible
        "terminals": {"auth": "registered"},
    }
    gw = Gateway(config.build(raw, "<netem>", {}))
    await gw.start()
    _emit({"event": "ready"})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()
    quic = next((s for s in gw._servers if hasattr(s, "listener")), None)
    m = gw.metrics
    out = {
        "registrations": m.frames.get(0x0100, 0),
        "authentications": m.frames.get(0x0102, 0),
        "sessions": sum(m.sessions_created.values()),
        "connections": m.connections_total,
    }
    if quic is not None:
        st = quic.stats
        out.update(
            quic_migrations=st.migrations, quic_resumed=st.resumed, quic_connections=st.connections_total
        )
    await gw.stop()
    _emit(out)


def _netlink_child(args: argparse.Namespace) -> None:
    """The netlink worker: link changes on request, one JSON line in, one out."""
    lab = Lab("")
    lab.gw_ns, lab.fleet_ns, lab.fleet_if, lab.gw_if = args.netns, args.fleet_netns, args.fleet_if, args.gw_if
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["op"] == "ping":
                lab.ping_now()
            elif msg["op"] == "netem":
                lab.set_netem_now(Profile(**msg["profile"]), msg["dark"])
            elif msg["op"] == "move":
                lab.move_fleet_now(msg["from"], msg["to"])
            _emit({"ok": True})
        except Exception as e:
            _emit({"ok": False, "error": f"{type(e).__name__}: {e}"})
    lab.close_sockets()


def _child_main() -> None:
    parser = argparse.ArgumentParser(description="a process of telacd bench netem, inside a namespace")
    parser.add_argument("--child", choices=("gateway", "fleet", "netlink"), required=True)
    parser.add_argument("--netns", required=True)
    parser.add_argument("--fleet-netns")
    parser.add_argument("--fleet-if")
    parser.add_argument("--gw-if")
    parser.add_argument("--workdir")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--vehicles", type=int, default=10)
    parser.add_argument("--report-interval", type=float, default=1.0)
    parser.add_argument("--ack-timeout", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator stops us (Ctrl-C reaches the group)
    if args.child == "netlink":
        _netlink_child(args)  # stays in the host namespace; names the two it works on
        return
    from pyroute2 import netns

    netns.setns(args.netns, flags=0)  # before any socket is made; never creates one
    import uvloop

    if args.child == "gateway":
        import logging

        logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
        uvloop.run(_gateway_child(args))
    else:
        random.seed(args.seed)
        uvloop.run(CellFleet(args).run())


if __name__ == "__main__":
    _child_main()
