"""Random bodies, paths and arguments to the three endpoints: never a 500, and a refused request
leaves the database as it was."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from core import ActionCtx, App, Id, MutationCtx, QueryCtx, Schema, Table
from core.config import ServerSettings
from core.testing import TestApp

app = App(Schema(items=Table({"name": str, "n": int, "tags": list[str]}), strict=False))


@app.mutation
def create(ctx: MutationCtx, name: str, n: int, tags: list[str]) -> Id[Literal["items"]]:
    return ctx.db.insert("items", {"name": name, "n": n, "tags": tags})


@app.mutation
def put(ctx: MutationCtx, value: Any, table: str = "blobs") -> str:
    return ctx.db.insert("blobs", {"value": value, "table": table})


@app.mutation
def rename(ctx: MutationCtx, id: Id[Literal["items"]], name: str) -> None:
    ctx.db.patch(id, {"name": name})


@app.query
def get(ctx: QueryCtx, id: Id[Literal["items"]]) -> dict[str, Any] | None:
    return ctx.db.get(id)


@app.query
def echo(ctx: QueryCtx, value: Any = None, flag: bool = False) -> Any:
    return value


@app.action
async def relay(ctx: ActionCtx, name: str, n: int) -> Any:
    return await ctx.run_mutation(create, {"name": name, "n": n, "tags": []})


@app.internal_mutation
def wipe(ctx: MutationCtx) -> None:
    for doc in ctx.db.query("items").collect():
        ctx.db.delete(doc["_id"])


@dataclass
class Live:
    t: TestApp
    http: httpx.Client


@pytest.fixture(scope="module")
def live(serve_app: Any) -> Iterator[Live]:
    served = serve_app(app, ServerSettings(max_body_bytes=64 * 1024))
    served.t.mutation(create, {"name": "seed", "n": 1, "tags": ["a"]})
    with httpx.Client(base_url=served.url) as http:
        yield Live(served.t, http)


def snapshot(t: TestApp) -> Any:
    def read(ctx: Any) -> Any:
        return [sorted(map(repr, ctx.db.query(name).collect())) for name in ("items", "blobs")]

    return (t.runtime.db.commit_count, t.run(read))


PATHS = [ref.path for ref in (create, put, rename, get, echo, relay, wipe)]
ARG_NAMES = ["name", "n", "tags", "value", "table", "id", "flag", "$bytes", "_id", ""]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
tagged = st.sampled_from(["$bytes", "$integer", "$float", "$other"]).flatmap(
    lambda tag: st.fixed_dictionaries({tag: json_scalars})
)
json_values = st.recursive(
    json_scalars | tagged,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["$a", "_b", "c"]) | st.text(max_size=8), inner, max_size=4
        )
    ),
    max_leaves=12,
)
paths = st.sampled_from(PATHS) | st.text(max_size=30) | json_values
args = st.dictionaries(st.sampled_from(ARG_NAMES) | st.text(max_size=6), json_values, max_size=4)
bodies = (
    st.fixed_dictionaries({"path": paths, "args": args | json_values})
    | st.fixed_dictionaries({"path": paths}, optional={"args": args, "extra": json_values})
    | json_values
)


int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
well_formed = st.one_of(
    st.tuples(
        st.just("mutation"),
        st.fixed_dictionaries(
            {
                "path": st.just(create.path),
                "args": st.fixed_dictionaries(
                    {"name": st.text(max_size=10), "n": int64, "tags": st.lists(st.text())}
                ),
            }
        ),
    ),
    st.tuples(
        st.just("mutation"),
        st.fixed_dictionaries(
            {"path": st.just(put.path), "args": st.fixed_dictionaries({"value": json_values})}
        ),
    ),
    st.tuples(
        st.just("query"),
        st.fixed_dictionaries(
            {"path": st.just(echo.path), "args": st.fixed_dictionaries({"value": json_values})}
        ),
    ),
    st.tuples(
        st.just("action"),
        st.fixed_dictionaries(
            {
                "path": st.just(relay.path),
                "args": st.fixed_dictionaries({"name": st.text(max_size=10), "n": int64}),
            }
        ),
    ),
)
calls = st.tuples(st.sampled_from(["query", "mutation", "action"]), bodies) | well_formed


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(call=calls)
def test_random_requests_never_500_and_refusals_change_nothing(
    live: Live, call: tuple[str, Any]
) -> None:
    kind, body = call
    before = snapshot(live.t)
    r = live.http.post(f"/api/{kind}", content=json.dumps(body))
    event(f"HTTP {r.status_code}")
    assert r.status_code != 500, (kind, body, r.text)
    assert r.status_code in (200, 400, 404, 422), (kind, body, r.text)
    if r.status_code != 200:
        assert set(r.json()) >= {"code", "message", "data"}
        assert snapshot(live.t) == before, (kind, body)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_random_bytes_are_400(live: Live, raw: bytes) -> None:
    before = snapshot(live.t)
    r = live.http.post("/api/mutation", content=raw)
    assert r.status_code in (400, 404), (raw, r.text)
    assert snapshot(live.t) == before


def test_deep_nesting_is_400(live: Live) -> None:
    deep = "[" * 20_000 + "]" * 20_000
    r = live.http.post(
        "/api/query", content=f'{{"path": "{echo.path}", "args": {{"value": {deep}}}}}'
    )
    assert r.status_code == 400


# -- lone surrogates (issue 11, defect 5) -------------------------------------------------------

surrogates = st.integers(0xD800, 0xDFFF).map(chr)
odd_text = st.text(surrogates | st.characters(), max_size=8)
"""Text where unpaired surrogates are common (JSON ``\\udc80`` escapes decode to them)."""
odd_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | odd_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text, inner, max_size=3),
    max_leaves=8,
)
odd_paths = (
    odd_text
    | st.sampled_from(PATHS)
    | st.tuples(st.sampled_from(PATHS), odd_text).map("".join)
    | st.tuples(odd_text, st.sampled_from(PATHS)).map("".join)
)
odd_args = st.dictionaries(st.sampled_from(ARG_NAMES) | odd_text, odd_values, max_size=3)


def header_value(raw: bytes) -> bytes:
    """What a client can put in a header value: any byte but controls (servers read latin-1)."""
    return bytes(c for c in raw[:24] if 0x20 <= c != 0x7F).strip() or b"k"


odd_headers = st.dictionaries(
    st.sampled_from(["idempotency-key", "authorization", "x-anything", "content-type"]),
    (st.binary(max_size=24) | odd_text.map(lambda s: s.encode("utf-8", "surrogatepass"))).map(
        header_value
    ),
    max_size=3,
)


def query_string(params: dict[str, str]) -> str:
    """Percent-encode ``params`` byte for byte (surrogates too, as their UTF-8-like bytes)."""
    from urllib.parse import quote

    return "&".join(
        f"{quote(k.encode('utf-8', 'surrogatepass'))}={quote(v.encode('utf-8', 'surrogatepass'))}"
        for k, v in params.items()
    )


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(["query", "mutation", "action"]),
    path=odd_paths,
    args=odd_args | odd_values,
    headers=odd_headers,
    params=st.dictionaries(odd_text, odd_text, max_size=2),
)
def test_unpaired_surrogates_anywhere_in_a_call_never_500(
    live: Live, kind: str, path: str, args: Any, headers: dict[str, bytes], params: dict[str, str]
) -> None:
    before = snapshot(live.t)
    body = json.dumps({"path": path, "args": args})  # ensure_ascii: surrogates as \u escapes
    url = f"/api/{kind}?{query_string(params)}"
    r = live.http.post(url, content=body, headers=[(k.encode(), v) for k, v in headers.items()])
    event(f"HTTP {r.status_code}")
    assert r.status_code in (200, 400, 401, 404, 422), (kind, body, headers, r.text)
    if r.status_code != 200:
        assert set(r.json()) >= {"code", "message", "data"}
        assert snapshot(live.t) == before, (kind, body)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    path=odd_paths,
    args=odd_args | odd_values,
    headers=odd_headers,
    extra=st.dictionaries(odd_text, odd_text, max_size=2),
    raw_args=st.booleans(),
)
def test_unpaired_surrogates_in_a_subscription_never_500(
    live: Live,
    path: str,
    args: Any,
    headers: dict[str, bytes],
    extra: dict[str, str],
    raw_args: bool,
) -> None:
    # The args parameter is JSON (its \u escapes decode to surrogates), or the raw text.
    encoded = json.dumps(args) if not raw_args or not isinstance(args, str) else args
    qs = query_string({**extra, "path": path, "args": encoded})
    with live.http.stream(
        "GET", f"/api/subscribe?{qs}", headers=[(k.encode(), v) for k, v in headers.items()]
    ) as r:
        event(f"HTTP {r.status_code}")
        assert r.status_code in (200, 400, 401, 404, 422), (path, args, headers, r.read())
        if r.status_code != 200:
            assert set(json.loads(r.read())) >= {"code", "message", "data"}


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("query", '{"path": "\\udc80"}'),
        ("mutation", '{"path": "\\ud800x:y", "args": {}}'),
        ("query", '{"path": "ECHO", "args": {"value": {"\\ud800": 1}}}'),
        ("mutation", '{"path": "PUT", "args": {"value": "\\udfff"}}'),
        ("query", '{"path": "ECHO", "args": {"\\udc80": 1}}'),
    ],
)
@pytest.mark.parametrize("key", [None, "k-\xff-1"])
def test_the_reported_surrogate_requests_are_400_and_keep_the_connection(
    live: Live, kind: str, body: str, key: str | None
) -> None:
    body = body.replace("ECHO", echo.path).replace("PUT", put.path)
    headers = {} if key is None else {b"Idempotency-Key": key.encode("latin-1")}
    for _ in range(2):  # the keep-alive connection survives the refusal
        r = live.http.post(f"/api/{kind}", content=body, headers=headers)
        assert r.status_code in (400, 404), r.text
        assert set(r.json()) >= {"code", "message", "data"}
    qs = query_string({"path": echo.path, "args": json.dumps({"\ud800": 1})})
    r = live.http.get(f"/api/subscribe?{qs}")
    assert r.status_code == 400, r.text
