"""Owns the pytest fixtures later suites reuse: ``storage`` (every backend) and ``clock``.

Load them with ``pytest_plugins = ["core.testing.fixtures"]`` in a conftest. The ``storage``
fixture is parametrized over ``sqlite`` and ``postgres``; the postgres half runs when
``CAPSULE_TEST_POSTGRES_URL`` names a server (each test gets a fresh database, dropped after)
and is skipped otherwise.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.storage.base import Storage
from core.storage.sqlite import SQLiteStorage
from core.testing.clock import ManualClock

BACKENDS = ["sqlite", "postgres"]


def postgres_url() -> str | None:
    """The server the postgres half of the suite uses, or ``None``."""
    return os.environ.get("CAPSULE_TEST_POSTGRES_URL") or None


def make_storage(backend: str, tmp_path: Path) -> Iterator[Storage]:
    """Yield a fresh, unopened storage of ``backend``; clean it up afterwards."""
    if backend == "sqlite":
        yield SQLiteStorage(tmp_path / "test.db", synchronous="NORMAL")
        return
    url = postgres_url()
    if url is None:
        pytest.skip("CAPSULE_TEST_POSTGRES_URL is not set")
    try:
        from core.storage.postgres import PostgresStorage, temporary_database
    except ImportError as exc:  # pragma: no cover - depends on the install
        pytest.skip(f"PostgreSQL backend unavailable: {exc}")
    with temporary_database(url, f"capsule_test_{uuid.uuid4().hex[:12]}") as db_url:
        storage = PostgresStorage(db_url)
        try:
            yield storage
        finally:
            storage.close()


@pytest.fixture(params=BACKENDS)
def storage(request: Any, tmp_path: Path) -> Iterator[Storage]:
    """A fresh storage on each backend."""
    yield from make_storage(request.param, tmp_path)


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock."""
    return ManualClock()
