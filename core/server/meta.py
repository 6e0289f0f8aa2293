"""Owns the server's routes about itself: ``GET /``, the health check and ``/openapi.json``.

* ``GET /`` answers a small JSON pointer to everything else (never a bare 404).
* ``GET /_health`` (and ``/health``) reads one snapshot of the database: 200
  ``{"status": "ok"}``, or 503 ``{"status": "unavailable", "error": ...}``.
* ``GET /openapi.json`` is the OpenAPI 3.1 description of the public functions
  (``core.server.openapi``), built once on first request.
* ``/_dashboard`` (``core.server.dashboard``) when ``CAPSULE_ADMIN_KEY`` is set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.server.openapi import openapi

if TYPE_CHECKING:
    from core.server.asgi import CapsuleServer

OPENAPI_PATH = "/openapi.json"
HEALTH_PATHS = ("/_health", "/health")


def meta_routes(server: CapsuleServer) -> list[Route]:
    """The routes of ``GET /``, the health check and the OpenAPI description."""
    described: dict[str, Any] = {}

    async def index(request: Request) -> Response:
        return JSONResponse(
            {
                "name": "Capsule",
                "api": {
                    "query": "POST /api/query",
                    "mutation": "POST /api/mutation",
                    "action": "POST /api/action",
                    "subscribe": "GET /api/subscribe?path=...&args=...",
                },
                "openapi": OPENAPI_PATH,
                "health": HEALTH_PATHS[0],
            }
        )

    def check() -> None:
        server.runtime.storage.begin_read().close()

    async def health(request: Request) -> Response:
        if not server.accepting:
            return JSONResponse({"status": "unavailable", "error": "shutting down"}, 503)
        try:
            await anyio.to_thread.run_sync(check)
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "error": str(exc)}, 503)
        return JSONResponse({"status": "ok"})

    async def description(request: Request) -> Response:
        if "spec" not in described:
            described["spec"] = await anyio.to_thread.run_sync(openapi, server.app)
        return JSONResponse(described["spec"])

    from core.server.dashboard import dashboard_routes

    return [
        *dashboard_routes(server),
        Route("/", index, methods=["GET"]),
        *(Route(path, health, methods=["GET"]) for path in HEALTH_PATHS),
        Route(OPENAPI_PATH, description, methods=["GET"]),
    ]


__all__ = ["HEALTH_PATHS", "OPENAPI_PATH", "meta_routes"]
