"""The codec benchmark's mix is what it claims to be, and the bench runs (briefly) on both."""

from __future__ import annotations

import argparse
import json

from jt808_helpers import IMPLEMENTATIONS, assert_plausible

from bench import codec as bench_codec
from protocols.jt808 import codec as reference
from protocols.jt808 import messages as m


def test_mix_proportions_and_content():
    stream, counts = bench_codec.build_mix(2000, seed=1)
    msgs = reference.FrameDecoder().feed(stream)
    assert len(msgs) == 2000 and all(isinstance(x, m.Message) for x in msgs)
    assert sum(counts.values()) == 2000
    assert 0.75 < counts["0x0200"] / 2000 < 0.85 and 0.07 < counts["0x0002"] / 2000 < 0.13
    locs = [x.body for x in msgs if x.msg_id == 0x0200]
    assert all(4 <= len(loc.item_ids) <= 8 for loc in locs)
    for loc in locs:
        assert_plausible(loc)
    batches = [x.body for x in msgs if x.msg_id == 0x0704]
    assert batches and all(len(b.positions) == 5 for b in batches)
    assert any(b"\x7d" in f for f in reference.Splitter(1 << 22).feed(stream))  # escapes occur


def test_bench_codec_json(capsys):
    args = argparse.Namespace(
        json=True, seconds=0.01, frames=300, read_size=4096, phones=1, version=2013, seed=808
    )
    assert bench_codec.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    for name in IMPLEMENTATIONS:
        assert out[name]["frames_per_s"] > 0 and out[name]["frames"] % 300 == 0
    if "compiled" in IMPLEMENTATIONS:
        assert out["ratio"] > 0
