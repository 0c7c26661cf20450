"""``telacd bench acd`` runs and prints the JSON shape it promises (tiny sizes)."""

from __future__ import annotations

import json

from gateway import cli


def test_bench_acd_json_shape(capsys):
    code = cli.main(
        [
            "bench",
            "acd",
            "--json",
            "--cycles",
            "2000",
            "--ref-cycles",
            "300",
            "--decisions",
            "200",
            "--ref-decisions",
            "50",
            "--depths",
            "1000,2000",
        ]
    )
    assert code == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert set(out) == {"compiled", "reference"}
    for impl in out.values():
        assert set(impl) == {"cycles_per_s", "decision_p99_us"}
        assert impl["cycles_per_s"] > 0
        assert set(impl["decision_p99_us"]) == {"1000", "2000"}
        assert all(v > 0 for v in impl["decision_p99_us"].values())
    assert "queues per agent" in cap.err
