from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from core.storage.base import Storage
from core.testing import TestApp


@pytest.fixture
def make_test_app(storage: Storage) -> Iterator[Any]:
    """Open ``TestApp(app)`` on the ``storage`` fixture (SQLite, and PostgreSQL when set)."""
    opened: list[TestApp] = []

    def make(app: Any, **kw: Any) -> TestApp:
        t = TestApp(app, storage=storage, **kw).__enter__()
        opened.append(t)
        return t

    yield make
    for t in opened:
        t.__exit__(None, None, None)
