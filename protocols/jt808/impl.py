"""Pick the codec implementation: the compiled ``_speedups`` if it was built, else the reference.

``TELACD_PURE_PYTHON=1`` in the environment forces the pure-Python reference
(``codec.py``), e.g. to compare behaviour or to debug. Both modules export the
same names (``NAMES`` below); import them from here::

    from protocols.jt808.impl import FrameDecoder, encode_general_response

``IMPLEMENTATION`` says which one was loaded ("compiled" or "reference").
``implementations()`` returns both modules (the compiled one only if it
loaded), which is what the tests parametrize over.
"""

from __future__ import annotations

import os
from types import ModuleType

from . import codec as reference

NAMES = (
    "IMPLEMENTATION",
    "DEFAULT_MAX_BUFFER",
    "checksum",
    "escape",
    "unescape",
    "frame_ok",
    "Splitter",
    "FrameDecoder",
    "decode_frame",
    "encode_frame",
    "encode_general_response",
    "encode_ack",
    "encode_location",
)

FORCE_PURE = os.environ.get("TELACD_PURE_PYTHON", "") not in ("", "0")

compiled: ModuleType | None
try:
    from . import _speedups as compiled
except ImportError:  # not built (TELACD_NO_EXTENSIONS, or a source checkout without build_ext)
    compiled = None

_chosen: ModuleType = reference if FORCE_PURE or compiled is None else compiled

IMPLEMENTATION: str = _chosen.IMPLEMENTATION
DEFAULT_MAX_BUFFER: int = _chosen.DEFAULT_MAX_BUFFER
checksum = _chosen.checksum
escape = _chosen.escape
unescape = _chosen.unescape
frame_ok = _chosen.frame_ok
Splitter = _chosen.Splitter
FrameDecoder = _chosen.FrameDecoder
decode_frame = _chosen.decode_frame
encode_frame = _chosen.encode_frame
encode_general_response = _chosen.encode_general_response
encode_ack = _chosen.encode_ack
encode_location = _chosen.encode_location


def implementations() -> dict[str, ModuleType]:
    """{"reference": codec, "compiled": _speedups}; without the extension only the reference."""
    found = {"reference": reference}
    if compiled is not None:
        found["compiled"] = compiled
    return found
