"""Fixtures for gateway tests: a store on every backend."""

from __future__ import annotations

import os
import uuid

import pytest

from gateway.store import make_store
from tests.conftest import require_service, tcp_reachable

PG_DSN = os.environ.get("TELACD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")

# Backends the store suite runs on. PostgreSQL joins when its backend module exists.
BACKENDS = ["sqlite"]
try:
    import gateway.store.postgres  # noqa: F401

    BACKENDS.append("postgresql")
except ImportError:
    pass


def pg_available() -> bool:
    return tcp_reachable("127.0.0.1", 5432)


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "postgresql" and not pg_available():
        require_service("PostgreSQL", "nothing listens on 127.0.0.1:5432")
    return request.param


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
