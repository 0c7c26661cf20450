"""Fixtures that run each ACD test on both implementations.

``impl`` is the engine module (compiled ``acd_core._engine`` or the reference
``_engine.py`` loaded by path); the compiled parameter FAILS when the
extension did not load, unless TELACD_PURE_PYTHON=1 asks for the reference only.
"""

from __future__ import annotations

import pytest

from acd_core import impl as _impl

IMPLS = ["compiled", "reference"]


def load_engine(which: str):
    if which == "reference" or _impl.PURE_PYTHON:
        return _impl.reference_engine()
    try:
        return _impl.compiled_engine()
    except ImportError as exc:  # a missing build is a failure, not a skip
        pytest.fail(f"compiled engine did not load: {exc}", pytrace=False)


def load_heap(which: str):
    classes = _impl.queue_classes()
    if which == "reference" or _impl.PURE_PYTHON:
        return classes["reference"]
    if "compiled" not in classes:
        pytest.fail("acd_core._queue did not load (build the extension)", pytrace=False)
    return classes["compiled"]


@pytest.fixture(params=IMPLS)
def impl(request):
    return load_engine(request.param)


@pytest.fixture(params=IMPLS)
def heap_cls(request):
    return load_heap(request.param)
