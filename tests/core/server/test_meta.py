from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pytest
from openapi_spec_validator import validate
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.testclient import TestClient

from core import ActionCtx, App, Component, Id, MutationCtx, QueryCtx, Schema, Table
from core.config import ServerSettings
from core.server import create_asgi_app
from core.testing import TestApp

widgets = Component("widgets", schema=Schema(items=Table({"n": int})))


@widgets.query
def widget_count(ctx: QueryCtx) -> int:
    return len(ctx.db.query("items").collect())


app = App(Schema(users=Table({"name": str})))
widget_handle = app.use(widgets, name="widgets")


class Filter(BaseModel):
    prefix: str
    limit: int = 10


@app.query
def find(ctx: QueryCtx, owner: Id[Literal["users"]], where: Filter) -> list[str]:
    """Names of users, filtered."""
    return []


@app.mutation
def create(ctx: MutationCtx, name: str) -> Id[Literal["users"]]:
    return ctx.db.insert("users", {"name": name})


@app.internal_mutation
def secret(ctx: MutationCtx, token: str) -> None: ...


@app.action
async def upload(ctx: ActionCtx, data: bytes, note: str | None = None) -> dict[str, Any]:
    return {}


@app.http_route("/items/{id}")
async def item(ctx: ActionCtx, request: Request) -> Response:
    return JSONResponse({"id": request.path_params["id"]})


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestApp(app) as t:
        asgi = create_asgi_app(app, settings=ServerSettings(), runtime=t.runtime)
        with TestClient(asgi) as c:
            yield c


def test_root_points_to_the_api_and_health_is_ok(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.json()["openapi"] == "/openapi.json" and r.json()["health"] == "/_health"
    for path in ("/_health", "/health"):
        r = client.get(path)
        assert (r.status_code, r.json()) == (200, {"status": "ok"})


def test_the_openapi_description_validates_and_lists_public_functions_only(
    client: TestClient,
) -> None:
    spec = client.get("/openapi.json").json()
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    schemas = spec["components"]["schemas"]
    calls = {
        kind: spec["paths"][f"/api/{kind}"]["post"]["requestBody"]["content"]["application/json"][
            "schema"
        ]["discriminator"]["mapping"]
        for kind in ("query", "mutation", "action")
    }
    assert calls == {
        "query": {find.path: "#/components/schemas/tests.core.server.test_meta.find.call"},
        "mutation": {create.path: "#/components/schemas/tests.core.server.test_meta.create.call"},
        "action": {upload.path: "#/components/schemas/tests.core.server.test_meta.upload.call"},
    }
    assert "secret" not in str(spec) and "widget" not in str(spec)  # internal, component
    find_args = schemas["tests.core.server.test_meta.find.args"]
    assert find_args["required"] == ["owner", "where"]
    assert find_args["properties"]["owner"]["type"] == "string"
    assert find_args["properties"]["where"] == {"$ref": "#/components/schemas/Filter"}
    assert schemas["Filter"]["properties"]["limit"] == {
        "default": 10,
        "title": "Limit",
        "type": "integer",
    }
    assert schemas["tests.core.server.test_meta.find.result"]["items"] == {"type": "string"}
    assert schemas["tests.core.server.test_meta.find.call"]["description"] == (
        "Names of users, filtered."
    )
    data = schemas["tests.core.server.test_meta.upload.args"]["properties"]["data"]
    assert data["properties"] == {"$bytes": {"type": "string", "contentEncoding": "base64"}}
    assert spec["paths"]["/http/items/{id}"]["get"]["parameters"][0]["name"] == "id"


def test_a_function_whose_hints_do_not_resolve_is_described_without_schemas() -> None:
    from core.server.openapi import describe

    other = App(Schema())

    @other.query
    def broken(ctx: QueryCtx, x: NoSuchType) -> int:  # noqa: F821
        return 1

    d = describe(broken)
    assert (d.path, d.kind, d.visibility, d.args) == (broken.path, "query", "public", {})
