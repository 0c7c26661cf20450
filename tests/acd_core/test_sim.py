"""The simulator against queueing theory, and the ``telacd simulate`` command.

The two agreement tests run a million calls each on the compiled engine with
fixed seeds (about 7 s each here). Figures they achieve, for the record:

* Erlang C, 10 agents, λ = 0.08/s, AHT = 100 s (A = 8 Erl, occupancy 0.8),
  seed 1: P(wait) 0.40426 vs 0.40918 (−1.2 %), ASA 20.583 s vs 20.459 s
  (+0.6 %). Seeds 2–4 gave P(wait) within 0.5 % and ASA within +2.8 %.
* Cobham (M/M/N non-preemptive priority), same centre, classes crash 30 % /
  normal 70 %, seed 1: crash 5.294 s vs 5.384 s (−1.7 %), normal 27.120 s vs
  26.920 s (+0.7 %).
"""

from __future__ import annotations

import json
import math

import pytest

from acd_core import erlang
from acd_core.sim import SimConfig, cobham, parse_classes, simulate
from gateway import cli
from tests.acd_core.conftest import load_engine

CENTRE = {"agents": 10, "arrival_rate": 0.08, "handle_time": 100.0}  # A = 8 Erl, ρ = 0.8


def rel(measured, expected):
    return abs(measured / expected - 1.0)


def test_erlang_formulas():
    assert erlang.erlang_b(1, 1.0) == pytest.approx(0.5)
    assert erlang.erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: P(wait) = ρ
    assert erlang.asa(1, 0.5, 2.0) == pytest.approx(2.0)  # M/M/1: Wq = ρ/(μ−λ)
    assert erlang.erlang_c(10, 8.0) == pytest.approx(0.40918, abs=1e-5)
    assert erlang.erlang_c(10, 12.0) == 1.0 and erlang.asa(10, 12.0, 1.0) == math.inf
    assert erlang.erlang_c(500, 480.0) < 1.0  # no overflow for large N
    n = erlang.agents_needed(8.0, 100.0, 20.0, 0.8)
    assert erlang.service_level(n, 8.0, 100.0, 20.0) >= 0.8 > erlang.service_level(n - 1, 8.0, 100.0, 20.0)
    # Cobham: one class is Erlang C; the classes' mean waits average to it (conservation)
    assert erlang.priority_waits(10, [0.08], 100.0)[0] == pytest.approx(erlang.asa(10, 8.0, 100.0))
    w = erlang.priority_waits(10, [0.024, 0.056], 100.0)
    assert w[0] < w[1]
    assert (0.024 * w[0] + 0.056 * w[1]) / 0.08 == pytest.approx(erlang.asa(10, 8.0, 100.0))


def test_simulator_agrees_with_erlang_c():
    engine = load_engine("compiled")
    r = simulate(SimConfig(calls=1_000_000, seed=1, **CENTRE), engine=engine)
    ec = r["erlang_c"]
    assert r["answered"] == r["offered"] == 1_000_000 and r["abandoned"] == 0
    assert rel(r["p_wait"], ec["p_wait"]) <= 0.03, (r["p_wait"], ec["p_wait"])
    assert rel(r["asa_s"], ec["asa_s"]) <= 0.06, (r["asa_s"], ec["asa_s"])
    assert rel(r["service_level"], ec["service_level"]) <= 0.03
    assert rel(r["occupancy"], 0.8) <= 0.01


def test_simulator_agrees_with_cobham_priority_classes():
    engine = load_engine("compiled")
    cfg = SimConfig(calls=1_000_000, seed=1, classes=(("crash", 0.3), ("normal", 0.7)), **CENTRE)
    r = simulate(cfg, engine=engine)
    theory = cobham(cfg)
    for name in ("crash", "normal"):
        assert rel(r["classes"][name]["asa_s"], theory[name]) <= 0.08, (name, r["classes"][name], theory)
    assert r["classes"]["crash"]["asa_s"] < r["asa_s"] < r["classes"]["normal"]["asa_s"]


def test_both_engines_simulate_identically():
    cfg = SimConfig(calls=3_000, seed=5, classes=(("a", 1), ("b", 2)), patience=60.0, **CENTRE)
    a = simulate(cfg, engine=load_engine("compiled"))
    b = simulate(cfg, engine=load_engine("reference"))
    assert a == b


def test_patience_makes_callers_abandon(impl):
    cfg = SimConfig(agents=5, arrival_rate=0.06, handle_time=100.0, calls=5_000, seed=2, patience=30.0)
    r = simulate(cfg, engine=impl)
    assert r["abandoned"] > 0
    assert r["answered"] + r["abandoned"] == r["offered"] == 5_000
    assert r["asa_s"] < r["erlang_c"]["asa_s"]  # Erlang C ignores abandonment and overstates waits


@pytest.mark.parametrize("strategy", ["random", "ring-all", "most-skilled"])
def test_strategies_do_not_change_waits_of_identical_agents(strategy):
    # all agents alike: who answers is the strategy's business, how long callers wait is not
    base = SimConfig(calls=5_000, seed=3, **CENTRE)
    other = SimConfig(calls=5_000, seed=3, strategy=strategy, **CENTRE)
    engine = load_engine("compiled")
    assert simulate(base, engine=engine)["asa_s"] == pytest.approx(simulate(other, engine=engine)["asa_s"])


def test_parse_classes():
    assert parse_classes("crash:0.2, normal:0.8") == [("crash", 0.2), ("normal", 0.8)]
    with pytest.raises(ValueError):
        parse_classes("crash")


def test_cli_json_keys(capsys):
    code = cli.main(
        [
            "simulate",
            "--agents",
            "3",
            "--arrival-rate",
            "0.02",
            "--handle-time",
            "100",
            "--calls",
            "2000",
            "--classes",
            "hi:1,lo:3",
            "--json",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {
        "offered",
        "answered",
        "abandoned",
        "asa_s",
        "p_wait",
        "service_level",
        "occupancy",
        "classes",
        "erlang_c",
    }
    assert set(out["classes"]) == {"hi", "lo"}
    assert set(out["classes"]["hi"]) == {"offered", "answered", "asa_s", "p_wait"}
    assert set(out["erlang_c"]) == {"p_wait", "asa_s", "service_level"}
    assert out["offered"] == 2000


def test_cli_table_and_progress(capsys):
    assert cli.main(["simulate", "--calls", "20000", "--classes", "crash:1,normal:2"]) == 0
    cap = capsys.readouterr()
    assert "Erlang C" in cap.out and "Cobham" in cap.out and "P(wait)" in cap.out
    assert "20,000/20,000 calls" in cap.err


def test_cli_rejects_bad_input(capsys):
    assert cli.main(["simulate", "--agents", "0"]) == 2
    assert "agents" in capsys.readouterr().err
