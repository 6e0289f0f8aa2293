"""Owns the HTTP layer: ``create_asgi_app(app)`` (Starlette + SSE) and ``BackgroundServer``."""

from __future__ import annotations

from core.server.asgi import CapsuleServer, create_asgi_app
from core.server.background import BackgroundServer

__all__ = ["BackgroundServer", "CapsuleServer", "create_asgi_app"]
