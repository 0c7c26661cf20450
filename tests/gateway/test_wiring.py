"""The test wiring itself: which PostgreSQL the suite probes, and that a missing backend is not silent."""

from __future__ import annotations

import socket

import pytest

import tests.conftest
from tests.gateway import conftest


def test_pg_target_is_the_server_the_dsn_names():
    assert conftest.pg_target("postgresql://u@db.example:6543/x?schema=s") == ("db.example", 6543)
    assert conftest.pg_target("postgresql://u@10.0.0.5/x") == ("10.0.0.5", 5432)
    assert conftest.pg_target("postgresql:///x?host=/run/postgresql&port=5433") == ("/run/postgresql", 5433)
    assert conftest.pg_target("postgresql:///x") == ("127.0.0.1", 5432)


def test_pg_available_probes_the_configured_server_not_the_default():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        assert conftest.pg_available(f"postgresql://u@127.0.0.1:{port}/x")
    finally:
        listener.close()
    assert not conftest.pg_available(f"postgresql://u@127.0.0.1:{port}/x")  # nothing listens there now


@pytest.mark.parametrize("required", [False, True])
def test_a_postgres_backend_that_does_not_import_skips_or_fails(monkeypatch, required):
    assert "postgresql" in {getattr(b, "values", (b,))[0] for b in conftest.BACKENDS}  # listed either way
    monkeypatch.setattr(conftest, "PG_IMPORT_ERROR", ImportError("No module named 'asyncpg'"))
    monkeypatch.setattr(tests.conftest, "REQUIRE_SERVICES", required)
    outcome = pytest.fail.Exception if required else pytest.skip.Exception
    with pytest.raises(outcome, match=r"gateway\.store\.postgres does not import"):
        conftest.require_pg()


def test_an_unreachable_configured_server_is_named(monkeypatch):
    monkeypatch.setattr(conftest, "PG_IMPORT_ERROR", None)
    monkeypatch.setattr(conftest, "PG_DSN", "postgresql://u@127.0.0.1:1/x")
    monkeypatch.setattr(tests.conftest, "REQUIRE_SERVICES", True)
    with pytest.raises(pytest.fail.Exception, match=r"nothing listens on 127\.0\.0\.1:1"):
        conftest.require_pg()
