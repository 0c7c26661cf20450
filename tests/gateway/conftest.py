"""Fixtures for gateway tests: a store on every backend."""

from __future__ import annotations

import os
import uuid
from urllib.parse import parse_qsl, urlsplit

import pytest

from gateway.store import make_store
from tests.conftest import require_service, tcp_reachable

PG_DSN = os.environ.get("TELACD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")

# Backends the store suite runs on. PostgreSQL is always listed: a backend module that does not import
# (asyncpg missing, a syntax error) is a missing service like an unreachable server, so it skips with the
# reason, and fails under TELACD_REQUIRE_SERVICES=1 instead of quietly shrinking the suite to SQLite.
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.services, id="postgresql")]
try:
    import gateway.store.postgres  # noqa: F401

    PG_IMPORT_ERROR: Exception | None = None
except ImportError as e:
    PG_IMPORT_ERROR = e


def pg_target(dsn: str | None = None) -> tuple[str, int]:
    """The (host, port) ``dsn`` (default PG_DSN) names: the URL's, else ``?host=``/``?port=``, else the defaults."""
    parts = urlsplit(PG_DSN if dsn is None else dsn)
    query = dict(parse_qsl(parts.query))
    host = parts.hostname or query.get("host") or "127.0.0.1"
    port = parts.port or int(query.get("port") or 5432)
    return host, port


def pg_available(dsn: str | None = None) -> bool:
    """Whether the server TELACD_TEST_PG names (127.0.0.1:5432 by default) accepts connections."""
    host, port = pg_target(dsn)
    if host.startswith("/"):  # a Unix-socket directory
        return os.path.exists(os.path.join(host, f".s.PGSQL.{port}"))
    return tcp_reachable(host, port)


def require_pg() -> str:
    """PG_DSN, or skip (fail under TELACD_REQUIRE_SERVICES=1) naming why PostgreSQL cannot be used."""
    if PG_IMPORT_ERROR is not None:
        require_service("PostgreSQL", f"gateway.store.postgres does not import: {PG_IMPORT_ERROR!r}")
    if not pg_available():
        host, port = pg_target()
        require_service("PostgreSQL", f"nothing listens on {host}:{port} (TELACD_TEST_PG)")
    return PG_DSN


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "postgresql":
        require_pg()
    return request.param


@pytest.fixture
async def backend_url(backend, tmp_path):
    """A store URL of the current backend for a whole gateway (kept across its restarts, dropped after)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/telacd.db"
        return
    from gateway.store.postgres import drop_schema_url, fresh_schema_url

    url = await fresh_schema_url(PG_DSN)
    yield url
    await drop_schema_url(url)


@pytest.fixture
async def store_factory(backend, tmp_path):
    """Make (and clean up) stores of the current backend; ``fresh=False`` reopens the last one."""
    opened = []
    state = {"url": None}

    async def factory(fresh: bool = True, **options):
        if fresh or state["url"] is None:
            if backend == "sqlite":
                state["url"] = f"sqlite:///{tmp_path}/store-{uuid.uuid4().hex[:8]}.db"
            else:
                from gateway.store.postgres import fresh_schema_url

                state["url"] = await fresh_schema_url(PG_DSN)
        store = make_store(state["url"], **options)
        await store.open()
        opened.append(store)
        return store

    yield factory
    for s in opened:
        await s.close()
    if backend == "postgresql" and state["url"]:
        from gateway.store.postgres import drop_schema_url

        await drop_schema_url(state["url"])


@pytest.fixture
async def store(store_factory):
    return await store_factory()
