"""``@app.http_route`` handlers run through the executor: validated and logged like any call."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from core import ActionCtx, App, Schema, Table
from core.server import BackgroundServer, create_asgi_app
from core.testing import TestApp

app = App(Schema(items=Table({"n": int})))


@app.mutation
def put(ctx: Any, n: int) -> str:
    return str(ctx.db.insert("items", {"n": n}))


@app.http_route("/items/{n}", method="POST")
async def put_item(ctx: ActionCtx, request: Request, n: int, note: str = "") -> Response:
    item = await ctx.run_mutation(put, {"n": n})
    return JSONResponse({"id": item, "n": n, "note": note})


@app.http_route("/plain/{name}")
async def plain(ctx: ActionCtx, request: Request) -> Response:
    return JSONResponse({"name": request.path_params["name"]})


@app.http_route("/fails")
async def fails(ctx: ActionCtx, request: Request) -> Response:
    raise RuntimeError("route exploded")


@pytest.fixture
def url(storage: Any) -> Iterator[str]:
    with TestApp(app, storage=storage) as t:
        with BackgroundServer(create_asgi_app(app, runtime=t.runtime)) as server:
            yield server.url


def test_route_arguments_are_validated_like_a_function_call(url: str) -> None:
    ok = httpx.post(f"{url}/http/items/5?note=hi")
    assert ok.status_code == 200 and ok.json()["n"] == 5 and ok.json()["note"] == "hi"
    assert httpx.get(f"{url}/http/plain/abc").json() == {"name": "abc"}

    route = httpx.post(f"{url}/http/items/five")
    call = httpx.post(f"{url}/api/mutation", json={"path": put.path, "args": {"n": "five"}})
    assert route.status_code == call.status_code == 400
    assert route.json()["code"] == call.json()["code"] == "invalid_argument"
    assert 'Argument "n"' in route.json()["message"] and 'Argument "n"' in call.json()["message"]


def test_route_calls_are_logged_like_function_calls(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="capsule.functions"):
        assert httpx.post(f"{url}/http/items/7").status_code == 200
        assert httpx.post(f"{url}/http/items/x").status_code == 400
        assert httpx.get(f"{url}/http/fails").status_code == 500
    lines = [r.getMessage() for r in caplog.records if r.name == "capsule.functions"]
    assert any(m.startswith(f"http {put_item.path} ok in") for m in lines)
    failed = [m for m in lines if " failed in " in m]
    assert any(
        m.startswith(f"http {put_item.path} failed") and "InvalidArgumentError" in m for m in failed
    )
    assert any(m.startswith(f"http {fails.path} failed") and "route exploded" in m for m in failed)
