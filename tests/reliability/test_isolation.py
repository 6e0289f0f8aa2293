"""Isolation and auth sweep: nothing reaches across a table space, and every route checks tokens.

From inside a mounted component instance, every way of reaching the app's or another
instance's internal functions and data is tried — by path string, by forged handle, by id,
by scheduling — and each must be refused with a clear error and change nothing. Environment
variables are readable only in app actions. Over HTTP, internal functions are not found, and
every route refuses a bad, an expired and a foreign-issuer token.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from starlette.routing import Route

from core import ActionCtx, App, Component, MutationCtx, QueryCtx, Schema, Table
from core.config import AuthSettings, ServerSettings
from core.server import BackgroundServer, create_asgi_app
from core.storage.base import Storage
from core.testing import TestApp

vault = Component("vault", schema=Schema(secrets=Table({"text": str})))


@vault.internal_mutation
def secret_write(ctx: MutationCtx) -> str:
    return str(ctx.db.insert("secrets", {"text": "planted"}))


@vault.query
def count_secrets(ctx: QueryCtx) -> int:
    return len(ctx.db.query("secrets").collect())


@vault.mutation
def keep(ctx: MutationCtx, text: str) -> str:
    return str(ctx.db.insert("secrets", {"text": text}))


def _attempt(fn: Any) -> str:
    try:
        fn()
    except Exception as exc:
        return f"refused: {type(exc).__name__}"
    return "reached"


@vault.mutation
def try_call(ctx: MutationCtx, kind: str, target: str) -> str:
    run = ctx.run_query if kind == "query" else ctx.run_mutation
    return _attempt(lambda: run(target, {}))


@vault.mutation
def try_schedule(ctx: MutationCtx, target: str) -> str:
    return _attempt(lambda: ctx.scheduler.run_after(0, target, {}))


@vault.query
def try_get(ctx: QueryCtx, id: str) -> str:
    return _attempt(lambda: ctx.db.get(id))


@vault.query
def try_env_and_auth(ctx: QueryCtx) -> list[str]:
    return [_attempt(lambda: ctx.env), _attempt(lambda: ctx.auth)]


app = App(Schema(private=Table({"text": str})))
a = app.use(vault, name="a")
b = app.use(vault, name="b")


@app.internal_mutation
def app_internal_write(ctx: MutationCtx) -> str:
    return str(ctx.db.insert("private", {"text": "planted"}))


@app.internal_query
def app_internal_read(ctx: QueryCtx) -> list[Any]:
    return ctx.db.query("private").collect()


@app.mutation
def seed(ctx: MutationCtx) -> dict[str, str]:
    return {
        "app": str(ctx.db.insert("private", {"text": "mine"})),
        "b": str(ctx.run_mutation(b.keep, {"text": "b's"})),
    }


@app.mutation
def from_a(ctx: MutationCtx, probe: str, args: dict[str, Any]) -> Any:
    ref = {"call": a.try_call, "schedule": a.try_schedule}[probe]
    return ctx.run_mutation(ref, args)


@app.query
def from_a_query(ctx: QueryCtx, probe: str, args: dict[str, Any]) -> Any:
    ref = {"get": a.try_get, "env": a.try_env_and_auth}[probe]
    return ctx.run_query(ref, args)


@app.query
def env_in_query(ctx: QueryCtx) -> str:
    return _attempt(lambda: ctx.env)


@app.action
async def env_in_action(ctx: ActionCtx) -> bool:
    return isinstance(dict(ctx.env), dict)


@app.query
def counts(ctx: QueryCtx) -> dict[str, int]:
    return {
        "app": len(ctx.db.query("private").collect()),
        "a": int(ctx.run_query(a.count_secrets, {})),
        "b": int(ctx.run_query(b.count_secrets, {})),
    }


APP_WRITE = app_internal_write.path
APP_READ = app_internal_read.path
B_SECRET = f"fn:b|{secret_write.path}"
FORGED = "A" * 24
"""A well-formed signature this database's key never made (a handle's is 24 characters)."""


@pytest.fixture
def t(storage: Storage) -> Iterator[TestApp]:
    with TestApp(app, storage=storage) as t:
        t.ids = t.mutation(seed, {})  # type: ignore[attr-defined]
        yield t


@pytest.mark.parametrize(
    ("kind", "target"),
    [
        pytest.param("mutation", APP_WRITE, id="app-internal-by-path"),
        pytest.param("query", APP_READ, id="app-internal-read-by-path"),
        pytest.param("mutation", f"fn:|{APP_WRITE}", id="forged-app-handle"),
        pytest.param("mutation", B_SECRET, id="forged-other-instance-handle"),
        pytest.param("mutation", f"fn:|{APP_WRITE}|{FORGED}", id="forged-signed-app-handle"),
        pytest.param("mutation", f"{B_SECRET}|{FORGED}", id="forged-signed-other-handle"),
        pytest.param("mutation", "b:secret_write", id="other-instance-by-path"),
    ],
)
def test_a_component_cannot_call_across_table_spaces(t: TestApp, kind: str, target: str) -> None:
    before = t.query(counts)
    out = t.mutation(from_a, {"probe": "call", "args": {"kind": kind, "target": target}})
    assert out.startswith("refused"), out
    assert t.query(counts) == before


@pytest.mark.parametrize("forged", [f"fn:|{APP_WRITE}", f"fn:|{APP_WRITE}|{FORGED}"])
def test_a_component_cannot_schedule_a_forged_handle(t: TestApp, forged: str) -> None:
    before = t.query(counts)
    out = t.mutation(from_a, {"probe": "schedule", "args": {"target": forged}})
    t.finish_scheduled()
    assert out.startswith("refused"), out
    assert t.query(counts) == before


def test_a_component_cannot_read_ids_of_other_table_spaces(t: TestApp) -> None:
    ids = t.ids  # type: ignore[attr-defined]
    for id in (ids["app"], ids["b"]):
        out = t.query(from_a_query, {"probe": "get", "args": {"id": id}})
        assert out == "refused: InvalidIdError", (id, out)


def test_environment_variables_only_in_app_actions(t: TestApp) -> None:
    env, auth = t.query(from_a_query, {"probe": "env", "args": {}})
    assert env.startswith("refused") and auth.startswith("refused"), (env, auth)
    assert t.query(env_in_query).startswith("refused")
    assert t.action(env_in_action) is True


# -- over HTTP ---------------------------------------------------------------------------------

ISSUER = "https://auth.sweep.test"
SECRET = "sweep-secret-that-is-long-enough-for-hs256"


def _token(**claims: Any) -> str:
    key = claims.pop("key", SECRET)
    now = int(time.time())
    return jwt.encode({"iss": ISSUER, "sub": "u1", "exp": now + 600, **claims}, key, "HS256")


BAD = {
    "malformed": "not-a-jwt",
    "expired": _token(exp=int(time.time()) - 3600),
    "foreign-issuer": _token(iss="https://elsewhere.test"),
    "wrong-key": _token(key="another-secret-that-is-long-enough-for-hs256"),
}


@pytest.fixture
def served(storage: Storage) -> Iterator[tuple[str, list[Route]]]:
    settings = ServerSettings(auth=AuthSettings(issuer=ISSUER, secret=SECRET))
    with TestApp(app, storage=storage) as t:
        asgi = create_asgi_app(app, settings=settings, runtime=t.runtime)
        t.mutation(seed, {})
        with BackgroundServer(asgi) as bg:
            yield bg.url, [r for r in asgi.routes if isinstance(r, Route)]


def test_internal_and_component_functions_are_not_reachable_over_http(
    served: tuple[str, list[Route]],
) -> None:
    url, _ = served
    with httpx.Client(base_url=url) as http:
        for kind, path in [
            ("mutation", APP_WRITE),
            ("query", APP_READ),
            ("mutation", f"fn:|{APP_WRITE}"),
            ("mutation", B_SECRET),
            ("mutation", keep.path),
            ("mutation", "a:keep"),
        ]:
            r = http.post(f"/api/{kind}", json={"path": path, "args": {"text": "x"}})
            assert r.status_code == 404, (path, r.status_code, r.text)


PUBLIC_PATHS = frozenset({"/", "/_health", "/health", "/openapi.json"})
"""Routes that describe the server (no documents, no identity): answered whatever the token."""


@pytest.mark.parametrize("bad", sorted(BAD))
def test_every_route_refuses_a_bad_token(served: tuple[str, list[Route]], bad: str) -> None:
    url, routes = served
    headers = {"authorization": f"Bearer {BAD[bad]}"}
    with httpx.Client(base_url=url, headers=headers) as http:
        for route in routes:
            path = route.path.replace("{id}", "x")
            method = "POST" if "POST" in (route.methods or ()) else "GET"
            body = {"path": seed.path, "args": {}} if path.startswith("/api/") else None
            r = http.request(method, path, json=body, params={"path": seed.path})
            if path in PUBLIC_PATHS:
                # The index, health and API description hold no data and read no identity.
                assert r.status_code == 200, (bad, method, path, r.status_code, r.text)
                continue
            # File URLs are capabilities of their own (signed): refused as forbidden there.
            allowed = (401, 403) if path.startswith("/api/storage/") else (401,)
            assert r.status_code in allowed, (bad, method, path, r.status_code, r.text)
