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
