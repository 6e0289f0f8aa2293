"""Owns ``HttpClient``: calling a running Capsule server, with the in-process client's errors.

``async with HttpClient(url, token=None) as client:`` gives ``query``, ``mutation``, ``action``
(each ``(ref_or_path, args)``) and ``subscribe`` (an async iterator over the server's SSE
stream). Values travel in the JSON wire format and come back as the values the in-process
client returns (``bytes``, big ints, non-finite floats intact); an error answer is raised as the
same class the in-process client raises, by its ``code`` (``AppError.data`` intact).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any, TypeVar, overload

import httpx

from core.errors import AppError, CapsuleError, UserError
from core.values import from_json, to_json

if TYPE_CHECKING:
    from core.functions import FunctionRef

ReturnT = TypeVar("ReturnT")


def _error_classes() -> dict[str, type[CapsuleError]]:
    found: dict[str, type[CapsuleError]] = {}
    todo: list[type[CapsuleError]] = [CapsuleError]
    while todo:
        cls = todo.pop()
        if cls.__module__ == CapsuleError.__module__:
            found.setdefault(cls.code, cls)
        todo.extend(cls.__subclasses__())
    return found


_ERRORS = _error_classes()


def error_from_body(status: int, body: Any) -> CapsuleError:
    """Rebuild the error a server answered (``{"code", "message", "data", "details"}``)."""
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        return CapsuleError(f"The server answered HTTP {status} without an error body.")
    code, message = body["code"], str(body.get("message", ""))
    if code == AppError.code:
        return AppError(from_json(body.get("data")), message)
    cls = _ERRORS.get(code, CapsuleError)
    # Error constructors take the facts and build the message; the server sent both, so the
    # instance is made without re-running the constructor and given them back.
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    details = body.get("details")
    if isinstance(details, dict):
        for name, value in details.items():
            setattr(exc, name, value)
    if cls is CapsuleError and code != CapsuleError.code:
        exc.code = code
        exc.http_status = status
    return exc


def _path(ref: Any) -> str:
    path = getattr(ref, "path", ref)
    if not isinstance(path, str):
        raise UserError(
            f"Expected a function reference or a path string, not {type(ref).__name__}."
        )
    return path


class HttpClient:
    """An async client of a Capsule server: ``async with HttpClient(url) as client``.

    Args:
        url: the server's base URL (``http://127.0.0.1:8000``; a mount prefix is kept).
        token: a JWT sent as ``Authorization: Bearer <token>``.
        timeout: seconds per request (streams wait for events without a read timeout).
        transport: an ``httpx`` transport (for example ``httpx.ASGITransport(asgi_app)``).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    def set_auth(self, token: str | None) -> None:
        """Use another token from now on (``None`` to call unauthenticated)."""
        if token:
            self._http.headers["Authorization"] = f"Bearer {token}"
        else:
            self._http.headers.pop("Authorization", None)

    async def _call(
        self, kind: str, ref: Any, args: dict[str, Any] | None, headers: dict[str, str] | None
    ) -> Any:
        body = {"path": _path(ref), "args": to_json(args or {})}
        response = await self._http.post(f"/api/{kind}", json=body, headers=headers)
        return _decode(response)

    @overload
    async def query(
        self, ref: FunctionRef[Any, ReturnT], args: dict[str, Any] | None = None
    ) -> ReturnT: ...
    @overload
    async def query(self, ref: str, args: dict[str, Any] | None = None) -> Any: ...
    async def query(
        self, ref: FunctionRef[Any, Any] | str, args: dict[str, Any] | None = None
    ) -> Any:
        """Run a public query on the server."""
        return await self._call("query", ref, args, None)

    @overload
    async def mutation(
        self,
        ref: FunctionRef[Any, ReturnT],
        args: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> ReturnT: ...
    @overload
    async def mutation(
        self, ref: str, args: dict[str, Any] | None = None, *, idempotency_key: str | None = None
    ) -> Any: ...
    async def mutation(
        self,
        ref: FunctionRef[Any, Any] | str,
        args: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Any:
        """Run a public mutation; with ``idempotency_key`` a retry returns the first result."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return await self._call("mutation", ref, args, headers)

    @overload
    async def action(
        self, ref: FunctionRef[Any, ReturnT], args: dict[str, Any] | None = None
    ) -> ReturnT: ...
    @overload
    async def action(self, ref: str, args: dict[str, Any] | None = None) -> Any: ...
    async def action(
        self, ref: FunctionRef[Any, Any] | str, args: dict[str, Any] | None = None
    ) -> Any:
        """Run a public action on the server."""
        return await self._call("action", ref, args, None)

    async def subscribe(
        self, ref: Any, args: dict[str, Any] | None = None
    ) -> AsyncGenerator[Any, None]:
        """Yield the query's result now and again whenever it changes (over SSE).

        Leaving the loop (``break``, an exception, cancellation) closes the stream, and the
        server stops re-running the query.
        """
        params = {"path": _path(ref), "args": json.dumps(to_json(args or {}))}
        timeout = httpx.Timeout(self._http.timeout.connect, read=None)
        async with self._http.stream(
            "GET",
            "/api/subscribe",
            params=params,
            timeout=timeout,
            headers={"Accept": "text/event-stream"},
        ) as response:
            if response.status_code != 200:
                await response.aread()
                raise _error(response)
            async for event, data in _sse_events(response.aiter_lines()):
                if event == "result":
                    yield from_json(json.loads(data)["value"])
                elif event == "error":
                    raise error_from_body(response.status_code, json.loads(data))


def _error(response: httpx.Response) -> CapsuleError:
    try:
        body = response.json()
    except ValueError:
        body = None
    return error_from_body(response.status_code, body)


def _decode(response: httpx.Response) -> Any:
    if response.status_code != 200:
        raise _error(response)
    return from_json(response.json()["value"])


async def _sse_events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """``(event, data)`` pairs of an SSE stream (comments and ids skipped)."""
    event, data = "message", list[str]()
    async for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
