"""Shared test configuration.

Service-backed tests call ``require_service(name, reason)`` when the service
is unreachable: they skip with the reason, except under
``TELACD_REQUIRE_SERVICES=1`` (set by .ci/run), where they fail.
"""

from __future__ import annotations

import os
import socket

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REQUIRE_SERVICES = os.environ.get("TELACD_REQUIRE_SERVICES") == "1"


def require_service(name: str, reason: str) -> None:
    """Skip (or, in CI, fail) a test whose external service is missing."""
    message = f"{name} unavailable: {reason}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (TELACD_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


def tcp_reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
