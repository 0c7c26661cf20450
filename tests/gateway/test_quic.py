"""JT/T 808 over QUIC: the same terminal pipeline on a stream, migration, 0-RTT, flow control, certificates.

Terminals are bench/quic_client.py's over real UDP sockets against a gateway in
this process; agents speak the documented WebSocket protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import ssl

import pytest
from cryptography import x509

from bench.clients import agent_login, connect
from bench.quic_client import QuicTerminalClient, TicketJar, client_configuration, create_connection
from bench.terminal import TerminalClient
from gateway import cmd_cert, config
from gateway.app import Gateway
from gateway.quic import (
    ALPN,
    QuicListener,
    TicketStore,
    idle_timeout_for,
    server_configuration,
)
from protocols.jt808 import events as ev

from .harness import free_ports, make_config, metric, running_gateway

SOS = 1 << 0


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("cert")
    cert, key = cmd_cert.write_pair(d)
    return str(cert), str(key)


@contextlib.asynccontextmanager
async def quic_gateway(tmp_path, cert_pair, **overrides):
    """A gateway with a QUIC listener; yields (gateway, endpoints, quic server, quic port)."""
    (port,) = free_ports(1)  # a free TCP port number is as good a guess for UDP
    cert, key = cert_pair
    gateway = {
        "quic": f"127.0.0.1:{port}",
        "quic_cert": cert,
        "quic_key": key,
        **overrides.pop("gateway", {}),
    }
    async with running_gateway(tmp_path, gateway=gateway, **overrides) as (gw, ep):
        server = next(s for s in gw._servers if hasattr(s, "listener"))
        yield gw, ep, server, port


async def quic_terminal(port, cert, phone="013800138000", **kw) -> QuicTerminalClient:
    return await QuicTerminalClient(phone).connect("127.0.0.1", port, cafile=cert, **kw)


async def test_a_quic_terminal_registers_reports_and_its_sos_reaches_an_agent(tmp_path, cert_pair):
    async with quic_gateway(tmp_path, cert_pair) as (gw, ep, server, port):
        agent = await connect("ws", http=ep.http, path="/agent")
        await agent_login(agent, "alice", "alice-token")
        t = await quic_terminal(port, cert_pair[0])
        assert t.quic.handshake.alpn_protocol == ALPN and not t.quic.handshake.session_resumed

        assert await t.login(plate="粤B12345", model="TX-1") == 0
        assert await t.report(speed_kmh=42.0) == 0
        # persist, then acknowledge: the SOS frame's 0x8001 comes after its session is stored
        assert await t.report(alarm=SOS) == 0
        assert any(s.kind == "sos" for s in gw.sessions.open.values())

        offer = await agent.expect("offer")
        session = offer["session"]
        assert session["kind"] == "sos" and session["vehicle"]["plate"] == "粤B12345"
        await agent.send({"type": "accept", "offer": offer["offer"]})
        await agent.expect("assigned")

        # a downlink command travels back over the same stream
        await agent.send(
            {"type": "command", "session": session["id"], "command": "text", "text": "救援已出发", "id": "c1"}
        )
        cmd = await t.answer_commands()
        assert cmd.message.msg_id == 0x8300 and cmd.message.body.text == "救援已出发"
        result = await agent.expect("command_result")
        assert result["ok"] is True and result["status"] == "answered"

        assert server.stats.streams_total == 1 and server.stats.handshakes == 1
        assert await metric(ep.http, "telacd_quic_handshakes_total") == 1
        await agent.close()
        await t.close()


async def test_a_terminal_that_moves_to_a_new_port_keeps_its_session_without_reauthenticating(
    tmp_path, cert_pair
):
    async with quic_gateway(tmp_path, cert_pair) as (gw, ep, server, port):
        agent = await connect("ws", http=ep.http, path="/agent")
        await agent_login(agent, "alice", "alice-token")
        t = await quic_terminal(port, cert_pair[0])
        assert await t.login() == 0
        assert await t.report(speed_kmh=30.0) == 0
        vehicle = gw.terminals.vehicles["013800138000"]
        proto = vehicle.conn
        old_port = t.quic.sockname()[1]

        new = await t.quic.rebind()  # NAT rebinding: new source port, and a fresh connection ID
        assert new[1] != old_port
        assert await t.report(speed_kmh=31.0) == 0
        assert await t.report(alarm=SOS) == 0
        offer = await agent.expect("offer")
        assert offer["session"]["vehicle"]["phone"] == "013800138000"

        # the same terminal connection, now answering the new address; no 0x0100/0x0102 since
        assert vehicle.conn is proto and not proto.closed
        assert proto.transport.get_extra_info("peername") == ("127.0.0.1", new[1])
        assert gw.metrics.frames[0x0100] == 1 and gw.metrics.frames[0x0102] == 1
        assert server.stats.migrations == 1 and server.stats.connections_total == 1
        await agent.close()
        await t.close()


async def test_a_reconnecting_terminal_authenticates_in_0rtt_with_its_ticket(tmp_path, cert_pair):
    async with quic_gateway(tmp_path, cert_pair, terminals={"auth": "registered"}) as (gw, _ep, server, port):
        jar = TicketJar()
        t = await quic_terminal(port, cert_pair[0], tickets=jar)
        assert await t.login() == 0
        code = t.conn.auth_code
        await t.close()
        assert len(jar.tickets) == 1

        # the 0x0102 is written before the handshake: it travels as 0-RTT data
        t2 = QuicTerminalClient("013800138000")
        serial, auth = t2.conn.authenticate(code)
        await t2.connect("127.0.0.1", port, cafile=cert_pair[0], tickets=jar, early_data=auth)
        assert t2.quic.handshake.session_resumed and t2.quic.handshake.early_data_accepted
        assert (await t2.ack_of(serial)).result == 0
        assert await t2.report(speed_kmh=12.0) == 0
        assert server.stats.resumed == 1 and server.stats.early_data == 1
        assert gw.metrics.frames[0x0100] == 1  # registered once, on the first connection
        assert gw.terminals.vehicles["013800138000"].online
        await t2.close()


async def test_a_session_ticket_is_good_for_one_resumption(tmp_path, cert_pair):
    async with quic_gateway(tmp_path, cert_pair) as (_gw, _ep, server, port):
        jar = TicketJar()
        t = await quic_terminal(port, cert_pair[0], tickets=jar)
        assert await t.login() == 0
        await t.close()
        (key, ticket) = next(iter(jar.tickets.items()))

        t2 = await quic_terminal(port, cert_pair[0], tickets=jar)
        assert t2.quic.handshake.session_resumed
        # replaying the same ticket (what an attacker holding a captured 0-RTT flight would do)
        replay = TicketJar()
        replay.tickets[key] = ticket
        t3 = QuicTerminalClient("013800138001")
        serial, auth = t3.conn.authenticate("any")  # open policy: any code
        await t3.connect("127.0.0.1", port, cafile=cert_pair[0], tickets=replay, early_data=auth)
        assert not t3.quic.handshake.session_resumed and not t3.quic.handshake.early_data_accepted
        # a full handshake; the refused 0-RTT frame is sent again after it, and answered once
        assert (await t3.ack_of(serial)).result == 0
        assert await t3.report(speed_kmh=5.0) == 0
        assert server.stats.resumed == 1
        await t2.close()
        await t3.close()


async def test_a_client_without_the_jt808_alpn_is_refused(tmp_path, cert_pair, monkeypatch):
    import bench.quic_client as qc

    original = qc.client_configuration

    def h3_only(*args, **kwargs):
        configuration = original(*args, **kwargs)
        configuration.alpn_protocols = ["h3"]
        return configuration

    monkeypatch.setattr(qc, "client_configuration", h3_only)
    async with quic_gateway(tmp_path, cert_pair) as (_gw, _ep, server, port):
        with pytest.raises(ConnectionRefusedError):
            await create_connection(asyncio.Protocol, "127.0.0.1", port, timeout=5.0)
        assert server.stats.streams_total == 0 and server.stats.handshakes == 0


async def test_the_certificate_is_checked_by_a_terminal_that_asks(tmp_path, cert_pair):
    other_dir = tmp_path / "other"
    other_cert, _ = cmd_cert.write_pair(other_dir)
    async with quic_gateway(tmp_path, cert_pair) as (_gw, _ep, _server, port):
        with pytest.raises(ConnectionRefusedError):  # signed by a key the terminal does not trust
            await create_connection(asyncio.Protocol, "127.0.0.1", port, cafile=str(other_cert), timeout=5.0)
        transport, _ = await create_connection(asyncio.Protocol, "127.0.0.1", port, cafile=cert_pair[0])
        transport.close()


async def test_a_silent_quic_terminal_is_closed_by_the_heartbeat_rule(tmp_path, cert_pair):
    async with quic_gateway(tmp_path, cert_pair, terminals={"heartbeat_timeout_s": 0.5}) as (
        gw,
        _ep,
        server,
        port,
    ):
        assert server.listener.configuration.idle_timeout == idle_timeout_for(0.5)
        t = await quic_terminal(port, cert_pair[0])
        assert await t.login() == 0
        assert await t.next_event(timeout=5) is None  # the stream ends: closed by the gateway
        assert gw.metrics.connections_closed_idle == 1
        await asyncio.wait_for(t.quic.closed.wait(), 5)  # and the QUIC connection with it
        for _ in range(100):  # the gateway's side ends after its closing period (RFC 9000 §10.2)
            if server.stats.connections_open == 0:
                break
            await asyncio.sleep(0.05)
        assert server.stats.connections_open == 0 and not server.listener.endpoints


async def test_a_flooding_quic_terminal_is_paused_not_dropped(tmp_path, cert_pair):
    async with quic_gateway(tmp_path, cert_pair, terminals={"max_frames_per_s": 10}) as (
        gw,
        _ep,
        _server,
        port,
    ):
        t = await quic_terminal(port, cert_pair[0])
        assert await t.login() == 0
        serials = [await t.report(wait=False) for _ in range(25)]
        acked = set()
        while len(acked) < len(serials):
            e = await t.next_event(ev.Acknowledged, timeout=5)
            acked.add(e.message.body.reply_serial)
        assert acked >= set(serials)
        assert gw.metrics.reads_paused >= 1
        await t.close()


async def test_the_gateway_stopping_closes_its_quic_terminals(tmp_path, cert_pair):
    async with quic_gateway(tmp_path, cert_pair) as (_gw, _ep, _server, port):
        t = await quic_terminal(port, cert_pair[0])
        assert await t.login() == 0
    await asyncio.wait_for(t.quic.closed.wait(), 5)
    assert t.quic.terminated.reason_phrase == "gateway stopping"


async def test_tcp_and_quic_terminals_share_one_registry(tmp_path, cert_pair):
    """The same phone logging in over QUIC replaces its TCP connection, as a second TCP login would."""
    async with quic_gateway(tmp_path, cert_pair) as (gw, ep, _server, port):
        tcp = await TerminalClient("013800138000").connect(*ep.tcu)
        assert await tcp.login() == 0
        q = await quic_terminal(port, cert_pair[0])
        assert await q.login(auth_code=None) == 0
        assert await tcp.next_event(timeout=5) is None  # the older connection is closed
        assert gw.metrics.connections_closed_duplicate == 1
        assert gw.terminals.vehicles["013800138000"].conn.transport.get_extra_info("stream_id") == 0
        await q.close()


# -- the stream transport on its own: flow control and write-buffer limits ------------------------


class Recorder(asyncio.Protocol):
    """A server-side protocol that records what it is given and can hold its reading."""

    instances: list[Recorder] = []

    def __init__(self, pause: bool = False) -> None:
        self.pause = pause
        self.data = bytearray()
        self.calls: list[str] = []
        self.transport = None
        self.eof = asyncio.Event()
        Recorder.instances.append(self)

    def connection_made(self, transport):
        self.transport = transport
        if self.pause:
            transport.pause_reading()

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.eof.set()
        return True

    def pause_writing(self):
        self.calls.append("pause_writing")

    def resume_writing(self):
        self.calls.append("resume_writing")


@contextlib.asynccontextmanager
async def raw_listener(cert_pair, factory, window=16384):
    configuration = server_configuration(*cert_pair, idle_timeout=30.0, window=window)
    loop = asyncio.get_running_loop()
    transport, listener = await loop.create_datagram_endpoint(
        lambda: QuicListener(configuration, factory, tickets=TicketStore(), window=window),
        local_addr=("127.0.0.1", 0),
    )
    try:
        yield listener, transport.get_extra_info("sockname")[1]
    finally:
        listener.close()


class Sink(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport


async def test_a_paused_stream_grants_no_more_credit_and_delivers_everything_on_resume(cert_pair):
    Recorder.instances.clear()
    window = 16384
    async with raw_listener(cert_pair, lambda: Recorder(pause=True), window) as (listener, port):
        transport, _ = await create_connection(Sink, "127.0.0.1", port)
        payload = os.urandom(20 * window)
        transport.write(payload)
        transport.write_eof()
        client = transport.get_extra_info("quic")
        sending = client.quic._streams[0]

        def blocked() -> bool:  # the client has sent all the credit it was given
            return sending.sender.highest_offset >= sending.max_stream_data_remote

        for _ in range(200):
            await asyncio.sleep(0.02)
            if blocked():
                break
        await asyncio.sleep(0.2)  # time for any further credit to arrive, if the server granted it
        (rec,) = Recorder.instances
        ep = next(iter(listener.endpoints.values()))
        assert blocked() and sending.max_stream_data_remote == window
        assert rec.data == b""  # nothing delivered while paused
        assert ep.quic._streams[0].receiver.highest_offset == window  # the peer stopped after one window

        rec.transport.resume_reading()
        await asyncio.wait_for(rec.eof.wait(), 10)
        assert bytes(rec.data) == payload  # all of it, in order
        transport.close()  # after write_eof: the stream goes, and with it the connection
        await asyncio.wait_for(client.closed.wait(), 10)


async def test_unacknowledged_writes_pause_and_resume_the_writer(cert_pair):
    Recorder.instances.clear()
    async with raw_listener(cert_pair, Recorder) as (_listener, port):
        transport, _ = await create_connection(Sink, "127.0.0.1", port)
        transport.write(b"hello")
        for _ in range(100):
            await asyncio.sleep(0.01)
            if Recorder.instances and Recorder.instances[0].data:
                break
        (rec,) = Recorder.instances
        rec.transport.set_write_buffer_limits(high=1000, low=100)
        rec.transport.write(b"x" * 5000)
        assert rec.calls == ["pause_writing"]  # 5000 bytes not yet acknowledged
        for _ in range(200):
            await asyncio.sleep(0.01)
            if "resume_writing" in rec.calls:
                break
        assert rec.calls == ["pause_writing", "resume_writing"]
        assert rec.transport.get_write_buffer_size() <= 100
        transport.close()


# -- telacd cert -----------------------------------------------------------------------------------


def test_cert_writes_a_self_signed_pair_the_listener_loads(tmp_path):
    cert_path, key_path = cmd_cert.write_pair(tmp_path / "q", names=["gw.example"], ips=["10.200.7.1"])
    assert os.stat(key_path).st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "gw.example"}
    assert ipaddress.ip_address("10.200.7.1") in san.get_values_for_type(x509.IPAddress)
    assert cert.issuer == cert.subject
    configuration = server_configuration(str(cert_path), str(key_path), idle_timeout=10.0)
    assert configuration.alpn_protocols == [ALPN] and configuration.private_key is not None
    verify = client_configuration("gw.example", cafile=str(cert_path))
    assert verify.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(FileExistsError):
        cmd_cert.write_pair(tmp_path / "q")
    cmd_cert.write_pair(tmp_path / "q", force=True)


def test_cert_command_line(tmp_path, capsys):
    from gateway.cli import main

    assert main(["cert", str(tmp_path / "c"), "--ip", "10.200.7.1"]) == 0
    out = capsys.readouterr().out
    assert "quic_cert" in out and (tmp_path / "c" / "cert.pem").exists()
    assert main(["cert", str(tmp_path / "c")]) == 1  # exists: not overwritten
    assert main(["cert", str(tmp_path / "d"), "--ip", "not-an-ip"]) == 2


async def test_a_bad_certificate_path_stops_the_gateway_with_a_clear_error(tmp_path, cert_pair):
    (port,) = free_ports(1)
    raw = make_config(
        tmp_path,
        gateway={
            "quic": f"127.0.0.1:{port}",
            "quic_cert": str(tmp_path / "missing.pem"),
            "quic_key": cert_pair[1],
        },
    )
    gw = Gateway(config.build(raw, "<test>", {}))
    try:
        with pytest.raises(OSError, match="QUIC certificate"):
            await gw.start()
    finally:
        await gw.stop()


def test_the_demo_runs_its_fleet_over_quic(tmp_path, cert_pair):
    import re
    import subprocess
    import sys

    from .harness import to_toml

    raw = make_config(tmp_path)
    for key in ("agents", "subscribers", "admins"):
        raw.pop(key)
    (port,) = free_ports(1)
    raw["gateway"].update(quic=f"127.0.0.1:{port}", quic_cert=cert_pair[0], quic_key=cert_pair[1])
    cfg = tmp_path / "demo.toml"
    cfg.write_text(to_toml(raw))
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--config", str(cfg), "--store", f"sqlite:///{tmp_path}/demo.db",
         "--transport", "quic", "--vehicles", "20", "--alarm-rate", "2", "--duration", "5"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"quic://127.0.0.1:{port}" in out.stdout
    assert re.search(r"vehicles 20/20", out.stdout), out.stdout
    assert int(re.search(r"demo stopped: (\d+) sessions", out.stdout).group(1)) >= 1


def test_the_quic_benchmark_runs_and_reports_both_servers():
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "bench", "quic", "--json", "--rounds", "1", "--seconds", "0.5",
         "--warmup", "0.2", "--connections", "2", "--batch", "4"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["echo_frames_per_s"] > 0 and result["gateway_frames_per_s"] > 0
    assert result["ratio"] == pytest.approx(
        result["gateway_frames_per_s"] / result["echo_frames_per_s"], rel=0.01
    )
    assert set(result["server_cpu_us_per_frame"]) == {"echo", "gateway"}
