from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from core.server import BackgroundServer


@pytest.fixture
def serve() -> Iterator[Callable[..., BackgroundServer]]:
    """Start ASGI apps under uvicorn on free local ports; stop them after the test."""
    started: list[BackgroundServer] = []

    def start(asgi: Any, **config: Any) -> BackgroundServer:
        server = BackgroundServer(asgi, **config)
        server.start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()
