from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from core import App
from core.config import ServerSettings
from core.server import BackgroundServer, CapsuleServer, create_asgi_app
from core.testing import TestApp


@dataclass
class LiveServer:
    url: str
    t: TestApp
    """The harness whose runtime the server serves (to seed and inspect data)."""
    server: CapsuleServer


@pytest.fixture(scope="module")
def serve_app() -> Iterator[Callable[[App, ServerSettings], LiveServer]]:
    """Serve an app (on a TestApp's runtime) under uvicorn for the whole module."""
    with contextlib.ExitStack() as stack:

        def start(app: App, settings: ServerSettings) -> LiveServer:
            t = stack.enter_context(TestApp(app))
            asgi = create_asgi_app(app, settings=settings, runtime=t.runtime)
            bg = stack.enter_context(BackgroundServer(asgi))
            return LiveServer(bg.url, t, asgi.state.capsule)

        yield start


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
