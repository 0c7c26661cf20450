"""The load generator: a short ``telacd bench gateway`` run, its bookkeeping, the ceiling server, the fleet shards.

The run is a few seconds against a real gateway with two worker processes;
what it must show is correctness (no lost session, no duplicate offer, every
key of the documented JSON), not speed: figures come from bench/ runs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json

import pytest

from bench import gateway as bench_gateway
from bench.ceiling import CeilingProtocol, CeilingServers, free_port
from bench.fleet import FleetOptions, ShardedFleet
from protocols.jt808 import events as ev
from protocols.jt808.connection import Connection, Role

KEYS = {
    "connections",
    "frames_per_s",
    "acked_per_s",
    "ack_rtt_ms",
    "crash_to_offer_ms",
    "sessions",
    "lost_sessions",
    "duplicate_offers",
    "gps_shed",
    "rss_mib",
    "cpu",
}


def args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    bench_gateway.add_arguments(p)
    return p.parse_args(list(argv))


async def test_a_short_run_against_two_workers_loses_nothing_and_offers_nothing_twice():
    a = args(
        "--vehicles",
        "60",
        "--report-interval",
        "0.5",
        "--alarm-rate",
        "8",
        "--service-rate",
        "1",
        "--duration",
        "3",
        "--warmup",
        "1",
        "--workers",
        "2",
        "--fleet-procs",
        "0",
        "--agents",
        "4",
        "--json",
    )
    out = await bench_gateway.Bench(a).run()
    assert KEYS <= set(out)
    assert out["lost_sessions"] == 0 and out["duplicate_offers"] == 0
    assert out["connections"] == 60
    assert out["frames_per_s"] > 0 and out["acked_per_s"] > 0
    assert set(out["ack_rtt_ms"]) == set(out["crash_to_offer_ms"]) == {"p50", "p99", "p999", "max"}
    assert out["alarms"]["measured"] > 0 and out["crash_to_offer_ms"]["p50"] > 0
    s = out["sessions"]
    assert set(s) == {"created", "offered", "assigned"} and s["created"] >= out["alarms"]["measured"]
    assert s["offered"] == s["assigned"] == s["created"]  # agents accept every offer at once
    assert out["rss_mib"] > 0 and out["cpu"] is not None and out["gateway_processes"] == 3


async def test_a_short_run_over_quic_starts_a_quic_listener_and_loses_nothing():
    a = args(
        "--transport",
        "quic",
        "--vehicles",
        "20",
        "--report-interval",
        "0.5",
        "--alarm-rate",
        "4",
        "--duration",
        "2",
        "--warmup",
        "1",
        "--workers",
        "1",
        "--fleet-procs",
        "0",
        "--agents",
        "2",
        "--json",
    )
    bench = bench_gateway.Bench(a)
    out = await bench.run()
    assert out["transport"] == "quic" and out["connections"] == 20
    assert out["acked_per_s"] > 0 and out["alarms"]["measured"] > 0
    assert out["lost_sessions"] == 0 and out["duplicate_offers"] == 0
    # the fleet went to the QUIC listener, not the TCP one
    assert bench.gut.quic and bench.gut.tcu[1] == int(bench.gut.quic.rsplit(":", 1)[1])


def test_an_acknowledged_alarm_without_a_session_is_lost_an_unacknowledged_one_is_not():
    log = [
        ("A", "crash", 1.0, 1.1),  # acked, session created
        ("A", "crash", 2.0, 2.1),  # acked, merged into the open session
        ("B", "sos", 3.0, 3.1),  # acked, nothing on the feed: lost
        ("C", "sos", 4.0, None),  # never acknowledged: the vehicle still has it
    ]
    seen = collections.Counter({("A", "crash"): 2})
    assert bench_gateway.lost_sessions(log, seen) == 1
    assert bench_gateway.lost_sessions(log[:2], collections.Counter({("A", "crash"): 1})) == 1


def test_each_first_offer_is_paired_with_the_alarm_that_made_it():
    log = [
        ("A", "crash", 1.0, 1.1),
        ("A", "crash", 5.0, 5.1),
        ("A", "sos", 5.5, 5.6),
        ("B", "crash", 2.0, 2.1),
    ]
    offers = [
        ("S1", "A", "crash", 1.004),
        ("S1", "A", "crash", 1.5),  # offered again (another agent): not a new alert
        ("S2", "B", "crash", 2.003),
        ("S3", "A", "crash", 5.002),
        ("S4", "A", "sos", 5.501),
    ]
    pairs = bench_gateway.crash_to_offer(log, offers)
    assert sorted((sent, round(at - sent, 3), kind) for sent, at, kind in pairs) == [
        (1.0, 0.004, "crash"),
        (2.0, 0.003, "crash"),
        (5.0, 0.002, "crash"),
        (5.5, 0.001, "sos"),
    ]


class _Transport:
    def __init__(self) -> None:
        self.out = b""

    def write(self, data: bytes) -> None:
        self.out += data


def test_the_ceiling_answers_every_frame_with_its_serial_even_escaped_and_split():
    term = Connection(Role.TERMINAL, phone="013900000001")
    frames = []
    for _ in range(0x7F):  # serials 0..0x7e: 0x7d and 0x7e go out escaped
        frames.append(term.heartbeat()[1])
    data = b"".join(frames)
    proto = CeilingProtocol()
    proto.connection_made(_Transport())
    proto.data_received(data[:1000])  # a frame cut in two
    proto.data_received(data[1000:])
    acks = [e for e in term.receive_data(proto.transport.out, 0.0) if type(e) is ev.Acknowledged]
    assert [a.message.body.reply_serial for a in acks] == list(range(0x7F))
    assert {a.message.body.reply_id for a in acks} == {0x0002}
    assert {a.message.phone for a in acks} == {"013900000001"}


async def test_a_fleet_over_two_processes_drives_the_ceiling():
    port = free_port()
    servers = CeilingServers("127.0.0.1", port, 1)
    await servers.start()
    fleet = ShardedFleet(
        FleetOptions(
            port=port,
            vehicles=40,
            report_interval=0.2,
            alarm_rate=20.0,
            ramp_up=0.2,
            register=False,
            window=4,
        ),
        shards=2,
    )
    try:
        opts = fleet.shard_options()
        assert [o.vehicles for o in opts] == [20, 20] and [o.first_index for o in opts] == [0, 20]
        assert not set(opts[0].source_ips) & set(opts[1].source_ips)  # each shard its own addresses
        assert sum(o.alarm_rate for o in opts) == pytest.approx(20.0)
        await fleet.start()
        for _ in range(100):
            snap = await fleet.snapshot()
            if snap["online"] == 40:
                break
            await asyncio.sleep(0.05)
        assert snap["online"] == 40
        await fleet.set_load(saturate=True)
        await asyncio.sleep(0.5)
        await fleet.set_load(saturate=False, paused=True)
        snap = await fleet.snapshot()
        assert snap["acked"] > 40 and snap["rtt"].get_total_count() > 0
        log = await fleet.alarm_log()
        phones = {p for p, _, _, _ in log}
        assert phones and all(p.startswith("0139") for p in phones)
    finally:
        await fleet.stop()
        servers.stop()


def test_the_alert_path_micro_benchmark_times_every_step(capsys):
    from bench.micro import alert_path

    assert alert_path.main(["--alerts", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    steps = out["steps_ms"]
    assert list(steps) == list(alert_path.STEPS)  # every step was reached, in order of the path
    medians = [steps[s]["p50"] for s in alert_path.STEPS]
    assert medians == sorted(medians) and out["sqlite_txn_ms"] > 0


def test_the_alert_path_traced_through_worker_processes(capsys):
    from bench.micro import alert_path

    assert alert_path.main(["--alerts", "4", "--workers", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    steps = out["steps_ms"]
    assert out["alerts"] == 4 and out["workers"] == 2
    # every step was traced in the processes it happens in: worker, owner, agent, worker again
    assert list(steps) == list(alert_path.SERVE_STEPS)
    path = [steps[s]["p50"] for s in ("read", "alarm", "owner", "built", "committed", "offer", "arrived")]
    assert path == sorted(path) and path[0] > 0
    assert steps["acked"]["p50"] > steps["committed"]["p50"]  # acknowledged once stored


def test_alert_tracing_is_off_without_its_variable():
    import subprocess
    import sys

    code = "from gateway import alerttrace; print(alerttrace.ON)"
    env = {k: v for k, v in __import__("os").environ.items() if k != "TELACD_TRACE_ALERTS"}
    assert (
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout
        == "False\n"
    )


def test_alert_tracing_to_an_unwritable_file_turns_itself_off(monkeypatch, tmp_path, caplog):
    from gateway import alerttrace

    monkeypatch.setattr(alerttrace, "_PATH", str(tmp_path / "no-such-dir" / "trace"))
    monkeypatch.setattr(alerttrace, "_fd", -1)
    monkeypatch.setattr(alerttrace, "ON", True)
    alerttrace.mark("alarm", "013800000001")  # must not raise into the alert's path
    assert alerttrace.ON is False
    assert "alert tracing is off" in caplog.text
