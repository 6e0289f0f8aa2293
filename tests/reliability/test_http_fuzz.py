"""Hostile HTTP input to every route of the server, on both backends: a clear 4xx, never a 500.

The routes are read from the ASGI app itself (so a new endpoint is fuzzed without touching
this file): the function endpoints, subscriptions, file upload and download, and the app's
``@app.http_route`` handlers. Each request gets a random method, body (JSON values with
``$``/``_`` keys, huge integers, odd unicode with unpaired surrogates, raw bytes), headers (bad,
expired and foreign-issuer tokens, odd content types) and query string. A response is never a
5xx; an error carries a JSON body with a code and a message; a refused request changes
nothing in the database.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st
from starlette.routing import Route

from components.sharded_counter import ShardedCounter
from components.sharded_counter import component as sharded_counter
from core import ActionCtx, App, MutationCtx, QueryCtx, Schema, Table
from core.config import AuthSettings, ServerSettings
from core.server import BackgroundServer, create_asgi_app
from core.storage.base import Storage
from core.testing import TestApp

ISSUER = "https://auth.reliability.test"
SECRET = "reliability-secret-long-enough-for-hs256"
SETTINGS = ServerSettings(auth=AuthSettings(issuer=ISSUER, secret=SECRET), max_body_bytes=8192)
EXAMPLES = int(
    os.environ.get("CAPSULE_FUZZ_EXAMPLES") or (10_000 if os.environ.get("CAPSULE_SOAK") else 100)
)

app = App(Schema(items=Table({"name": str, "n": int}).index("by_name", ["name"])))
counter = ShardedCounter(app.use(sharded_counter, name="counter"), default_shards=2)


@app.mutation
def create(ctx: MutationCtx, name: str, n: int) -> str:
    counter.add(ctx, "created", 1)
    return str(ctx.db.insert("items", {"name": name, "n": n}))


@app.mutation
def mine(ctx: MutationCtx, name: str) -> str:
    if ctx.auth.get_user_identity() is None:
        from core import UnauthenticatedError

        raise UnauthenticatedError("sign in to create your own items")
    return str(ctx.db.insert("items", {"name": name, "n": 0}))


@app.query
def find(ctx: QueryCtx, name: str) -> list[dict[str, Any]]:
    return ctx.db.query("items").with_index("by_name", lambda q: q.eq("name", name)).collect()


@app.action
async def relay(ctx: ActionCtx, name: str) -> Any:
    return await ctx.run_mutation(create, {"name": name, "n": 1})


@app.http_route("/hook", method="POST")
async def hook(ctx: ActionCtx, request: Any) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"ok": True, "size": len(await request.body())})


@app.internal_mutation
def wipe(ctx: MutationCtx) -> None:
    for doc in ctx.db.query("items").collect():
        ctx.db.delete(doc["_id"])


class Served:
    def __init__(self, t: TestApp, url: str, routes: list[tuple[str, list[str]]]):
        self.t = t
        self.url = url
        self.routes = routes
        self.fuzzed = False


@pytest.fixture
def served(storage: Storage, soak: Any) -> Iterator[Served]:
    with TestApp(app, storage=storage) as t:
        asgi = create_asgi_app(app, settings=SETTINGS, runtime=t.runtime)
        t.mutation(create, {"name": "seed", "n": 1})
        routes = [
            (r.path, sorted(r.methods or ["GET"])) for r in asgi.routes if isinstance(r, Route)
        ]
        with BackgroundServer(asgi) as bg:
            served = Served(t, bg.url, routes)
            yield served
    if served.fuzzed:
        soak.record(transactions=EXAMPLES, anomalies=0)


def snapshot(t: TestApp) -> Any:
    def read(ctx: Any) -> Any:
        return sorted(map(repr, ctx.db.query("items").collect()))

    return t.run(read)


def token(**claims: Any) -> str:
    now = int(time.time())
    base = {"iss": ISSUER, "sub": "user-1", "iat": now, "exp": now + 600}
    return jwt.encode({**base, **claims}, claims.pop("key", SECRET), algorithm="HS256")


surrogates = st.integers(0xD800, 0xDFFF).map(chr)
odd_text = st.text(surrogates | st.characters(), max_size=12)
lone = st.tuples(odd_text, surrogates, odd_text).map("".join)
"""Text that always holds an unpaired surrogate (odd_text alone rarely lands one where an
error message quotes it: 100 examples missed a server that could not encode such errors)."""
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | odd_text
)
keys = (
    st.sampled_from(["$bytes", "$integer", "_id", "_creation_time", "$", "name", "n"])
    | odd_text
    | lone
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=16,
)
PATHS = [ref.path for ref in (create, mine, find, relay, wipe)] + ["counter:add", "nope:x"]
bodies = (
    st.fixed_dictionaries(
        {
            "path": st.sampled_from(PATHS) | odd_text | lone,
            "args": st.dictionaries(keys, values) | values,
        }
    ).map(lambda b: json.dumps(b).encode())
    | st.fixed_dictionaries({"path": lone, "args": st.just({})}).map(
        lambda b: json.dumps(b).encode()
    )
    | st.fixed_dictionaries(
        {"path": st.sampled_from(PATHS), "args": st.dictionaries(keys, values)}
    ).map(lambda b: json.dumps(b).encode())
    | values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=64)
    | st.just(b"x" * 9000)
)
BAD_TOKENS = [
    "garbage",
    token(exp=int(time.time()) - 3600),
    token(iss="https://someone.else"),
    jwt.encode({"iss": ISSUER, "sub": "x", "exp": int(time.time()) + 600}, "another-secret-" * 3),
]
headers = st.fixed_dictionaries(
    {},
    optional={
        "authorization": st.sampled_from(BAD_TOKENS).map(lambda t: f"Bearer {t}")
        | odd_text.map(lambda s: s.encode("utf-8", "surrogatepass").decode("latin-1")),
        "content-type": st.sampled_from(
            ["application/json", "text/plain", "multipart/form-data", "image/png", "\x7f"]
        ),
        "idempotency-key": odd_text.map(
            lambda s: s.encode("utf-8", "surrogatepass").decode("latin-1")
        ),
    },
)
params = st.dictionaries(odd_text | lone, odd_text | lone, max_size=3)


def _qs(p: dict[str, str]) -> str:
    enc = [
        f"{quote(k.encode('utf-8', 'surrogatepass'))}={quote(v.encode('utf-8', 'surrogatepass'))}"
        for k, v in p.items()
    ]
    return "&".join(enc)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), body=bodies, hdrs=headers, query=params)
def test_every_route_refuses_hostile_input_cleanly(
    served: Served, data: Any, body: bytes, hdrs: dict[str, str], query: dict[str, str]
) -> None:
    served.fuzzed = True
    path, methods = data.draw(st.sampled_from(served.routes))
    method = data.draw(st.sampled_from([*methods, "GET", "POST", "PUT", "DELETE"]))
    path = path.replace("{id}", quote(data.draw(odd_text).encode("utf-8", "surrogatepass")) or "x")
    before = snapshot(served.t)
    with httpx.Client(base_url=served.url, timeout=30) as http:
        request = http.build_request(
            method,
            f"{path}?{_qs(query)}",
            content=body if method != "GET" else None,
            headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in hdrs.items()],
        )
        try:
            r = http.send(request, stream=path == "/api/subscribe")
        except httpx.LocalProtocolError:
            reject()  # a header no HTTP client can send
        try:
            status = r.status_code
            text = "" if status == 200 and path == "/api/subscribe" else r.read().decode()
        finally:
            r.close()
    event(f"{path} {status}")
    assert status < 500, (method, path, body[:200], hdrs, text)
    if status >= 400 and path.startswith("/api/") and status != 405 and method != "HEAD":
        assert set(json.loads(text)) >= {"code", "message"}, (status, method, path, text)
    if status >= 400:
        assert snapshot(served.t) == before, (method, path, body[:200])


SURROGATE_BODIES = [
    {"path": "\ud800", "args": {}},
    {"path": "nope:x\udfff", "args": {}},
    {"path": PATHS[0], "args": {"name": "\udc80", "n": 1}},
    {"path": PATHS[0], "args": {"na\ud801me": "x", "n": 1}},
    {"path": PATHS[2], "args": "\ud83d"},
]


def test_errors_quoting_unpaired_surrogates_are_clean_4xx(served: Served) -> None:
    """Every JSON route, every body above: the error quoting a lone surrogate still encodes.

    The fixed cases the random run may miss in CI's 100 examples (each is a 500 from a
    server that renders error bodies with strict UTF-8).
    """
    posts = [p for p, methods in served.routes if "POST" in methods and p.startswith("/api/")]
    assert posts
    with httpx.Client(base_url=served.url, timeout=30) as http:
        for path in posts:
            if "{" in path:
                continue
            for body in SURROGATE_BODIES:
                r = http.post(path, content=json.dumps(body).encode())
                assert r.status_code < 500, (path, body, r.text)
                if r.status_code >= 400:
                    assert set(r.json()) >= {"code", "message"}, (path, body, r.text)
            r = http.post(
                path,
                content=json.dumps(SURROGATE_BODIES[0]).encode(),
                headers=[(b"idempotency-key", "\ud800".encode("utf-8", "surrogatepass"))],
            )
            assert r.status_code < 500, (path, "idempotency-key", r.text)


@pytest.mark.parametrize("path", ["/api/storage//", "/api/nope", "/api/query/x"])
def test_an_unknown_api_route_is_a_json_404(served: Served, path: str) -> None:
    """Found by the soak (10,000 cases): ``GET /api/storage//`` answered a plain "Not Found"."""
    with httpx.Client(base_url=served.url, timeout=30) as http:
        r = http.get(path)
    assert r.status_code == 404
    assert r.json()["code"] == "route_not_found", r.text
