"""Pick the compiled or the reference implementation of each fast path.

``acd_core._queue`` (Cython) and ``acd_core._engine`` (Cython pure-Python mode:
the ``.py`` is the source of both) are imported compiled when their extension
was built. The reference of the engine is the same ``_engine.py`` loaded by
path under another module name, so Python never sees the compiled ``.so``
for it; that reference then uses ``queue.py`` (heapq) instead of ``_queue``.

``TELACD_PURE_PYTHON=1`` forces the references everywhere (for platforms
without a compiler, and to run the whole suite on the reference alone).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pathlib
import sys
from types import ModuleType

PURE_PYTHON = os.environ.get("TELACD_PURE_PYTHON") == "1"
_HERE = pathlib.Path(__file__).parent


def is_compiled(module: ModuleType) -> bool:
    return not str(getattr(module, "__file__", "")).endswith(".py")


def reference_engine() -> ModuleType:
    """``_engine.py`` run as plain Python (module name ``acd_core._engine_ref``)."""
    name = "acd_core._engine_ref"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _HERE / "_engine.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def compiled_engine() -> ModuleType:
    """The compiled engine; ImportError if the extension is missing."""
    module = importlib.import_module("acd_core._engine")
    if not is_compiled(module):
        raise ImportError("acd_core._engine is not compiled (run setup.py build_ext --inplace)")
    return module


def engine() -> ModuleType:
    """The engine to use: compiled if available and not forced off."""
    if PURE_PYTHON:
        return reference_engine()
    try:
        return compiled_engine()
    except ImportError:
        return reference_engine()


def queue_classes() -> dict[str, type]:
    """``{"compiled": ..., "reference": ...}`` IndexedHeap classes (compiled may be absent)."""
    from acd_core import queue

    found: dict[str, type] = {"reference": queue.IndexedHeap}
    if not PURE_PYTHON:
        try:
            from acd_core import _queue

            found["compiled"] = _queue.IndexedHeap
        except ImportError:
            pass
    return found
