from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from core import (
    AppError,
    CapsuleError,
    ConflictError,
    FunctionNotFoundError,
    HttpClient,
    InvalidArgumentError,
    LimitExceededError,
    UserError,
)
from core.http_client import error_from_body


def fake_server(handler: Any) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


async def test_requests_carry_path_wire_args_and_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"value": {"$bytes": "AAE="}})

    async with HttpClient("http://srv/base/", token="t1", transport=fake_server(handler)) as c:
        assert await c.query("mod:fn", {"big": 2**60, "b": b"\x00"}) == b"\x00\x01"
        c.set_auth("t2")
        await c.mutation("mod:m", idempotency_key="k")
        c.set_auth(None)
        await c.action("mod:a")
    assert [str(r.url) for r in seen] == [
        "http://srv/base/api/query",
        "http://srv/base/api/mutation",
        "http://srv/base/api/action",
    ]
    assert json.loads(seen[0].content) == {
        "path": "mod:fn",
        "args": {"big": {"$integer": str(2**60)}, "b": {"$bytes": "AA=="}},
    }
    assert seen[0].headers["authorization"] == "Bearer t1"
    assert seen[1].headers["authorization"] == "Bearer t2"
    assert seen[1].headers["idempotency-key"] == "k"
    assert "authorization" not in seen[2].headers


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (
            404,
            {"code": "function_not_found", "message": "No function", "data": None},
            FunctionNotFoundError,
        ),
        (
            409,
            {"code": "conflict", "message": "busy", "data": None, "details": {"tables": ["t"]}},
            ConflictError,
        ),
        (
            400,
            {
                "code": "limit_exceeded",
                "message": "too big",
                "data": None,
                "details": {"limit": "bytes", "maximum": 5},
            },
            LimitExceededError,
        ),
        (
            400,
            {
                "code": "invalid_argument",
                "message": "bad",
                "data": None,
                "details": {"argument": "x", "function": "m:f"},
            },
            InvalidArgumentError,
        ),
        (503, {"code": "unavailable", "message": "shutting down", "data": None}, CapsuleError),
        (502, "<html>bad gateway</html>", CapsuleError),
    ],
)
async def test_errors_come_back_as_the_in_process_classes(
    status: int, body: Any, cls: type[Exception]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    async with HttpClient("http://srv", transport=fake_server(handler)) as c:
        with pytest.raises(cls) as info:
            await c.query("m:f")
    err = info.value
    assert type(err) is cls
    if isinstance(body, dict):
        assert str(err) == body["message"]
        for name, value in body.get("details", {}).items():
            assert getattr(err, name) == value
        if cls is CapsuleError:
            assert isinstance(err, CapsuleError)
            assert (err.code, err.http_status) == ("unavailable", 503)


def test_app_error_data_is_decoded() -> None:
    err = error_from_body(422, {"code": "app_error", "message": "m", "data": {"$bytes": "AA=="}})
    assert isinstance(err, AppError) and err.data == b"\x00" and str(err) == "m"


async def test_subscribe_parses_server_sent_events() -> None:
    stream = (
        b': ping\n\nid: 1\nevent: result\ndata: {"value": 1}\n\n'
        b'id: 2\nevent: result\ndata: {"value": {"$integer": "9007199254740993"}}\n\n'
        b'event: error\ndata: {"code": "app_error", "message": "gone", "data": 7}\n\n'
    )

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["path"] == "m:q"
        assert json.loads(request.url.params["args"]) == {"a": {"$bytes": "AQ=="}}
        return httpx.Response(200, content=stream, headers={"content-type": "text/event-stream"})

    got: list[Any] = []
    async with HttpClient("http://srv", transport=fake_server(handler)) as c:
        with pytest.raises(AppError) as info:
            async for value in c.subscribe("m:q", {"a": b"\x01"}):
                got.append(value)
    assert got == [1, 2**53 + 1] and info.value.data == 7


async def test_refs_or_paths_only() -> None:
    async with HttpClient("http://srv", transport=fake_server(lambda r: httpx.Response(500))) as c:
        with pytest.raises(UserError):
            await c.query(3)  # type: ignore[call-overload]
