"""Fixtures for the JT/T 808 tests: every decoding test runs on both implementations."""

from __future__ import annotations

import pytest
from jt808_helpers import IMPLEMENTATIONS


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def codec(request):
    """The reference (codec.py) and, when built, the compiled (_speedups) implementation."""
    return IMPLEMENTATIONS[request.param]
