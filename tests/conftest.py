from __future__ import annotations

import pytest

pytest_plugins = ["core.testing.fixtures"]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"
