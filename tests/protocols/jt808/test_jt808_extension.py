"""The compiled fast path really loaded (unless TELACD_PURE_PYTHON forces the reference)."""

from __future__ import annotations

import os
import subprocess
import sys

from protocols.jt808 import impl


def test_extension_loaded():
    if impl.FORCE_PURE:
        assert impl.IMPLEMENTATION == "reference"
        assert impl.FrameDecoder is impl.reference.FrameDecoder
    else:
        # a silent fallback to the reference would pass every other test at a tenth of the speed
        assert impl.compiled is not None, "protocols.jt808._speedups did not import: run setup.py build_ext"
        assert impl.IMPLEMENTATION == "compiled"
        assert impl.FrameDecoder is impl.compiled.FrameDecoder
        assert impl.compiled.__file__.endswith((".so", ".pyd"))


def test_both_implementations_export_the_same_names():
    for module in impl.implementations().values():
        missing = [n for n in impl.NAMES if not hasattr(module, n)]
        assert not missing, (module.__name__, missing)


def test_env_switch_forces_the_reference():
    code = "from protocols.jt808 import impl; print(impl.IMPLEMENTATION)"
    env = {**os.environ, "TELACD_PURE_PYTHON": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "reference"


def test_compiled_records_stay_out_of_the_cycle_collector_only_when_safe():
    # the fast path allocates records untracked (see _speedups.pyx); a record that holds a
    # tracked object must still be tracked, or a cycle through it could leak
    c = impl.compiled
    if c is None:
        return
    import gc

    from protocols.jt808 import messages as m

    plain = m.make_location(1.0, 2.0, device_time=None, items=((0x01, 5),))
    composite = plain._replace(item_ids=b"\x12", item_values=((1, 7, 0),))
    for loc, tracked in ((plain, False), (composite, True)):
        msg = c.decode_frame(c.encode_frame(0x0200, m.push_location(loc), "013812345678", 1))
        assert msg.body == loc
        assert gc.is_tracked(msg) == tracked and gc.is_tracked(msg.body) == tracked


def test_compiled_decoder_does_not_leak():
    c = impl.compiled
    if c is None:
        return
    import tracemalloc

    from protocols.jt808 import messages as m

    loc = m.make_location(1.0, 2.0, device_time=None, items=((0x01, 5), (0xE4, b"xyz"), (0x11, (1, None))))
    frame = c.encode_frame(0x0200, m.push_location(loc), "013812345678", 1)
    data = frame * 500 + c.encode_frame(0x0102, b"code", "013812345678", 2) + b"\x7e\x01\x7e"

    def run():
        for _ in range(20):
            c.FrameDecoder().feed(data)

    run()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    run()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown < 64 * 1024, grown
