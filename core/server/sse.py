"""Owns Server-Sent Events: ``GET /api/subscribe``, streaming a query's results as they change.

``GET /api/subscribe?path=<function path>&args=<JSON object>`` answers, once the query has run,
with a stream of ``result`` events: one now and one per new result, each with an increasing
``id`` and the data ``{"value": ...}`` in the wire format. Keep-alive comments go out every
``sse_ping_seconds``. If the query later fails, one ``error`` event carries the error body and
the stream ends. Errors before the first result (bad path, arguments or token) are ordinary
JSON error responses. Auth is the ``Authorization`` header, or ``?token=`` for browsers'
``EventSource``, which cannot set headers. A client that reconnects gets the current result at
once. When the client goes away the stream's generator is cancelled and the subscription
closed, so the server stops re-running the query.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from core.errors import InvalidArgumentError
from core.server.errors import error_body, error_response
from core.values import check_value, to_json

if TYPE_CHECKING:
    from core.server.asgi import CapsuleServer


def result_event(value: Any, n: int) -> ServerSentEvent:
    """The event carrying the ``n``-th result of a stream."""
    return ServerSentEvent(
        data=json.dumps({"value": to_json(value)}, separators=(",", ":")),
        event="result",
        id=str(n),
    )


async def subscribe_endpoint(server: CapsuleServer, request: Request) -> Response:
    """``GET /api/subscribe``: an SSE stream of a public query's results."""
    from core.server.asgi import parse_json
    from core.subscriptions import subscribe

    path = request.query_params.get("path") or "?"
    try:
        identity = server.identity(request, query_token=True)
        if path == "?":
            raise InvalidArgumentError('Pass the query\'s path: /api/subscribe?path="mod:fn".')
        args = parse_json(request.query_params.get("args") or "{}", "args parameter")
        if not isinstance(args, dict):
            raise InvalidArgumentError('"args" must be a JSON object.')
        check_value(args, what="the arguments")
        updates = subscribe(server.runtime, path, args, identity)
        try:
            first = await updates.__anext__()
        except BaseException:
            await _close(updates)
            raise
    except Exception as exc:
        return error_response(exc, where=f"subscribe {path}")
    return EventSourceResponse(
        _events(server, path, first, updates),
        ping=server.settings.sse_ping_seconds,
        headers={"Cache-Control": "no-store"},
    )


async def _events(
    server: CapsuleServer, path: str, first: Any, updates: AsyncIterator[Any]
) -> AsyncIterator[ServerSentEvent]:
    server.active_streams += 1
    try:
        n = 1
        yield result_event(first, n)
        while True:
            try:
                value = await updates.__anext__()
            except StopAsyncIteration:
                return
            except Exception as exc:
                status, body = error_body(exc)
                if status == 500:
                    error_response(exc, where=f"subscribe {path}")  # logs it
                yield ServerSentEvent(data=json.dumps(body), event="error")
                return
            n += 1
            yield result_event(value, n)
    finally:
        server.active_streams -= 1
        await _close(updates)


async def _close(updates: AsyncIterator[Any]) -> None:
    """Close a subscription, even while the stream is being cancelled (client gone)."""
    aclose = getattr(updates, "aclose", None)
    if aclose is not None:
        with anyio.CancelScope(shield=True):
            await aclose()
