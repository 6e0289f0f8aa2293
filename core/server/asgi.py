"""Owns the Starlette app: the function endpoints, file URLs, ``@app.http_route`` routes, lifespan.

Endpoints (all JSON in DESIGN.md's wire format):

* ``POST /api/query``, ``/api/mutation``, ``/api/action`` with ``{"path", "args"}`` answer
  ``{"value": ...}`` or an error body (``core.server.errors``). Only the app's public functions
  are reachable. A mutation may carry an ``Idempotency-Key`` header.
* ``GET /api/subscribe?path=...&args=...``: Server-Sent Events of a query's results
  (``core.server.sse``).
* ``GET /api/storage/<id>?exp=...&sig=...`` serves a file through a signed URL;
  ``POST /api/storage/upload?...`` takes one file through a signed upload URL.
* ``/http/<path>``: the app's ``@app.http_route`` handlers.
* ``GET /``, ``GET /_health`` and ``GET /openapi.json`` (``core.server.meta``).
* Routes from ``app.server_routes`` factories (``agent.expose()`` serves agents this way);
  their endpoints use ``CapsuleServer.run_query`` / ``run_mutation`` / ``follow`` /
  ``error_response`` to run the app's functions, internal ones included, as the caller.

The lifespan opens the app's runtime and starts its services (scheduler, crons); at shutdown
new requests are refused with 503, in-flight ones get ``shutdown_seconds`` to finish, then the
runtime closes. Mounted inside another Starlette or FastAPI app whose lifespan does not enter
this one's, the runtime opens on the first request instead (and stays open).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from core.auth import JwtVerifier, UserIdentity
from core.config import ServerSettings
from core.errors import InvalidArgumentError, RequestTooLargeError, UnauthenticatedError, UserError
from core.files import request_base_url
from core.server import idempotency
from core.server.errors import (
    EncodableJSONResponse,
    error_body,
    error_response,
    logger,
    plain_error,
)
from core.values import check_value, from_json, to_json

if TYPE_CHECKING:
    from core.app import App
    from core.functions import FunctionRef
    from core.runtime import Runtime

_KINDS = ("query", "mutation", "action")
INLINE_QUERY_SECONDS = 0.001
"""Queries whose recent duration is below this run on the event loop, without a thread hop."""
MAX_TIMED_PATHS = 4096
PRUNE_EVERY_SECONDS = 600.0


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused once it grows over ``limit`` bytes.

    Raises:
        RequestTooLargeError: the body (or its declared length) is over the limit.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestTooLargeError(limit=limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLargeError(limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes | str, what: str) -> Any:
    """Decode JSON from a client, refusing malformed or absurdly nested input with a 400."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, bad UTF-8 and over-long integer literals.
        raise InvalidArgumentError(f"The {what} is not valid JSON: {exc}.") from None
    try:
        return from_json(value)
    except RecursionError:
        raise InvalidArgumentError(f"The {what} is nested too deeply.") from None


def parse_call(raw: bytes) -> tuple[str, Any]:
    """``(path, args)`` of a function call body ``{"path": str, "args": dict | null}``."""
    body = parse_json(raw, "request body")
    if not isinstance(body, dict):
        raise InvalidArgumentError('The request body must be a JSON object {"path", "args"}.')
    extra = set(body) - {"path", "args"}
    if extra:
        raise InvalidArgumentError(
            f"The request body has unknown field(s) {sorted(extra)}; send only path and args."
        )
    path = body.get("path")
    if not isinstance(path, str) or not path:
        raise InvalidArgumentError('"path" must be a function path string like "tasks:create".')
    args = body.get("args")
    if args is not None and not isinstance(args, dict):
        raise InvalidArgumentError(f'"args" must be an object, not {type(args).__name__}.')
    if args is not None:
        check_value(args, what="the arguments")  # "$" field names and such, refused here
    return path, args


class CapsuleServer:
    """The server state behind the Starlette app: runtime, auth, in-flight requests."""

    def __init__(self, app: App, *, settings: ServerSettings, runtime: Runtime | None = None):
        self.app = app
        self.settings = settings
        self.verifier = JwtVerifier.from_settings(settings.auth)
        self._runtime = runtime
        self._owns_runtime = False
        self._lock = threading.Lock()
        self.accepting = True
        self.inflight = 0
        self._drained: anyio.Event | None = None
        self.active_streams = 0
        """Open SSE subscription streams (tests watch it fall back to zero on disconnect)."""
        self.query_seconds: dict[str, float] = {}
        """Recent duration of each query path (a moving average), to choose where it runs."""

    # -- runtime --------------------------------------------------------------------------------

    def open(self) -> None:
        """Open the app's runtime and start its services (unless one was given)."""
        with self._lock:
            if self._runtime is not None:
                return
            rt = self.app._acquire_runtime()
            try:
                rt.start_services()
            except BaseException:
                self.app._release_runtime()
                raise
            self._runtime, self._owns_runtime = rt, True

    def close(self) -> None:
        """Stop the services and release the runtime this server opened."""
        with self._lock:
            rt, owned = self._runtime, self._owns_runtime
            if not owned or rt is None:
                return
            self._runtime, self._owns_runtime = None, False
        rt.stop_services()
        self.app._release_runtime()

    @property
    def runtime(self) -> Runtime:
        """The open runtime (opened now if no lifespan ran, as when mounted elsewhere)."""
        rt = self._runtime
        if rt is None:
            self.open()
            rt = self._runtime
        if rt is None:  # pragma: no cover - open() sets it or raises
            raise UserError("The server's runtime is not open.")
        return rt

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Any = None) -> AsyncIterator[None]:
        """Open on startup; on shutdown refuse new requests, drain (bounded), close."""
        await anyio.to_thread.run_sync(self.open)
        self.accepting = True
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._prune_forever)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self.accepting = False
            with anyio.move_on_after(self.settings.shutdown_seconds):
                while self.inflight:
                    self._drained = anyio.Event()
                    await self._drained.wait()
            await anyio.to_thread.run_sync(self.close)

    async def _prune_forever(self) -> None:
        while True:
            await anyio.sleep(PRUNE_EVERY_SECONDS)
            try:
                await anyio.to_thread.run_sync(idempotency.prune, self.runtime)
            except Exception:  # pruning is housekeeping: never let it take the server down
                logger.exception("pruning idempotency keys failed")

    # -- requests -------------------------------------------------------------------------------

    def identity(self, request: Request, *, query_token: bool = False) -> UserIdentity | None:
        """The verified caller, from ``Authorization: Bearer <jwt>`` (or ``?token=`` on SSE).

        Raises:
            UnauthenticatedError: a token is present but not valid.
        """
        header = request.headers.get("authorization")
        token = None
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise UnauthenticatedError('The Authorization header must be "Bearer <token>".')
        elif query_token:
            token = request.query_params.get("token")
        if token is None:
            return None
        if self.verifier is None:
            raise UnauthenticatedError(
                "This server is not configured to accept tokens (set CAPSULE_JWT_ISSUER and "
                "CAPSULE_JWT_SECRET or CAPSULE_JWT_JWKS_FILE)."
            )
        return self.verifier.verify(token.strip())

    def guarded(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap an endpoint: 503 while shutting down, counted while in flight."""

        async def endpoint(request: Request) -> Response:
            if not self.accepting:
                return plain_error(503, "unavailable", "The server is shutting down.")
            self.inflight += 1
            try:
                return await handler(request)
            finally:
                self.inflight -= 1
                if not self.inflight and self._drained is not None:
                    self._drained.set()

        return endpoint

    async def _query(self, ex: Any, path: str, args: Any, identity: UserIdentity | None) -> Any:
        """Run a query inline on the event loop when it is known to be quick, else in a thread.

        A hop to a worker thread and back costs more than a quick query itself (measured over
        the raw ASGI interface: a point read takes ~0.7 ms through a thread, ~0.2 ms inline),
        but a slow query run inline would stall every other request. So a query runs in a
        thread until its moving average duration is known to be under
        ``INLINE_QUERY_SECONDS``, and goes back to threads if it slows down. Only on storage
        whose reads never wait (``Storage.inline_reads``: SQLite): a PostgreSQL read may wait
        for a pooled connection, and nothing may block the event loop on a pool or a lock.
        """
        times = self.query_seconds

        def timed() -> Any:
            start = time.perf_counter()
            value = ex.query(path, args, identity)
            took = time.perf_counter() - start
            known = times.get(path)
            if known is not None or len(times) < MAX_TIMED_PATHS:
                times[path] = took if known is None else 0.8 * known + 0.2 * took
            return value

        known = times.get(path)
        if known is not None and known < INLINE_QUERY_SECONDS and self.runtime.storage.inline_reads:
            return timed()
        return await anyio.to_thread.run_sync(timed)

    async def call(self, request: Request, kind: str) -> Response:
        """``POST /api/<kind>``: run a public function and answer its value."""
        path = "?"
        try:
            identity = self.identity(request)
            path, args = parse_call(await read_body(request, self.settings.max_body_bytes))
            rt = self.runtime
            ex = rt.executor
            if kind == "query":
                value = await self._query(ex, path, args, identity)
            elif kind == "mutation":
                key = request.headers.get("idempotency-key")
                if key is None:
                    value = await anyio.to_thread.run_sync(ex.mutation, path, args, identity)
                else:
                    value = await anyio.to_thread.run_sync(
                        idempotency.run_mutation, rt, path, args, identity, key
                    )
            else:
                token = request_base_url.set(str(request.base_url).rstrip("/"))
                try:
                    value = await ex.action(path, args, identity)
                finally:
                    request_base_url.reset(token)
            return EncodableJSONResponse({"value": to_json(value)})
        except Exception as exc:
            return error_response(exc, where=f"{kind} {path}")

    # -- server-side calls (for route factories) -------------------------------------------------

    async def run_query(self, ref: Any, args: Any, identity: UserIdentity | None) -> Any:
        """Run one of the app's queries, internal ones included, as ``identity``."""
        ex = self.runtime.executor
        return await anyio.to_thread.run_sync(lambda: ex.query(ref, args, identity, caller=""))

    async def run_mutation(self, ref: Any, args: Any, identity: UserIdentity | None) -> Any:
        """Run one of the app's mutations, internal ones included, as ``identity``."""
        ex = self.runtime.executor
        return await anyio.to_thread.run_sync(lambda: ex.mutation(ref, args, identity, caller=""))

    def follow(self, ref: Any, args: Any, identity: UserIdentity | None) -> AsyncIterator[Any]:
        """Subscribe to one of the app's queries (internal ones included) as ``identity``.

        Close the iterator (``aclose``) to unsubscribe; it ends when the runtime closes.
        """
        from core.subscriptions import subscribe

        return subscribe(self.runtime, ref, args, identity, caller="")

    @staticmethod
    def error_response(exc: BaseException, *, where: str) -> Response:
        """The JSON error response for ``exc`` (logged when it is a bug), as everywhere else."""
        return error_response(exc, where=where)

    @staticmethod
    def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
        """The status and JSON body ``exc`` becomes (a generic 500 for bugs)."""
        return error_body(exc)

    async def http_action(self, request: Request, ref: FunctionRef[Any, Any]) -> Response:
        """An ``@app.http_route`` handler, run like an action."""
        try:
            identity = self.identity(request)
            args = {**request.query_params, **request.path_params}
            token = request_base_url.set(str(request.base_url).rstrip("/"))
            try:
                response = await self.runtime.executor.http(ref, request, args, identity)
            finally:
                request_base_url.reset(token)
            if not isinstance(response, Response):
                raise UserError(
                    f'HTTP route "{ref.path}" returned {type(response).__name__}; return a '
                    "starlette Response."
                )
            return response
        except Exception as exc:
            return error_response(exc, where=f"http route {ref.path}")

    async def get_file(self, request: Request) -> Response:
        """``GET /api/storage/<id>``: a file through a signed URL."""
        file_id = request.path_params["id"]
        try:
            files = self.runtime.files
            params = dict(request.query_params)
            await anyio.to_thread.run_sync(files.check_url, file_id, params)
            found = await anyio.to_thread.run_sync(files.read_any, file_id)
        except Exception as exc:
            return error_response(exc, where=f"file {file_id}")
        if found is None:
            return plain_error(404, "file_not_found", f'File "{file_id}" does not exist.')
        data, content_type = found
        return Response(
            data,
            media_type=content_type or "application/octet-stream",
            headers={"Cache-Control": "private, max-age=60"},
        )

    async def upload_file(self, request: Request) -> Response:
        """``POST /api/storage/upload?...``: take one file through a signed upload URL."""
        try:
            files = self.runtime.files
            params = dict(request.query_params)
            # Check the URL before reading a possibly large body for nothing.
            await anyio.to_thread.run_sync(files.check_upload, params)
            data = await read_body(request, self.settings.max_upload_bytes)
            content_type = request.headers.get("content-type")
            file_id = await anyio.to_thread.run_sync(
                files.accept_upload, params, data, content_type
            )
        except Exception as exc:
            return error_response(exc, where="file upload")
        return EncodableJSONResponse({"storageId": file_id})


async def _not_found(request: Request, exc: Exception) -> Response:
    """No route matched: under ``/api/`` a JSON error like every other API error."""
    if request.url.path.startswith("/api/"):
        return plain_error(404, "route_not_found", f"No API route {request.url.path}.")
    detail = getattr(exc, "detail", None) or "Not Found"
    return PlainTextResponse(str(detail), status_code=404, headers=getattr(exc, "headers", None))


def create_asgi_app(
    app: App, *, settings: ServerSettings | None = None, runtime: Runtime | None = None
) -> Starlette:
    """The Starlette (ASGI) app serving ``app`` over HTTP; run it with uvicorn or mount it.

    Args:
        app: the Capsule app.
        settings: server settings (default: read from ``CAPSULE_*`` variables now).
        runtime: an already open runtime to serve (tests); the server then neither opens nor
            closes it.

    ``capsule serve tasks:app`` runs it under uvicorn; ``parent.mount("/capsule", asgi)``
    serves it inside your own Starlette or FastAPI app (enter ``asgi.router.lifespan_context``
    from the parent's lifespan for a clean shutdown).
    """
    from core.server.meta import meta_routes
    from core.server.sse import subscribe_endpoint

    settings = settings or ServerSettings.from_env()
    server = CapsuleServer(app, settings=settings, runtime=runtime)

    def call_endpoint(kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await server.call(request, kind)

        return server.guarded(endpoint)

    def http_endpoint(ref: FunctionRef[Any, Any]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await server.http_action(request, ref)

        return server.guarded(endpoint)

    async def subscribe(request: Request) -> Response:
        return await subscribe_endpoint(server, request)

    routes = [Route(f"/api/{kind}", call_endpoint(kind), methods=["POST"]) for kind in _KINDS]
    routes += [
        Route("/api/subscribe", server.guarded(subscribe), methods=["GET"]),
        Route("/api/storage/upload", server.guarded(server.upload_file), methods=["POST"]),
        Route("/api/storage/{id}", server.guarded(server.get_file), methods=["GET"]),
    ]
    routes += [
        Route(f"/http{path}", http_endpoint(ref), methods=[method])
        for path, method, ref in app.http_routes
    ]
    for factory in app.server_routes:
        routes += factory(server)
    routes += meta_routes(server)
    middleware = []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                allow_headers=[
                    "authorization",
                    "content-type",
                    "idempotency-key",
                    "last-event-id",
                    "x-capsule-thread-id",
                ],
                expose_headers=["x-capsule-thread-id"],
            )
        )
    asgi = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=server.lifespan,
        exception_handlers={404: _not_found},
    )
    asgi.state.capsule = server
    return asgi
