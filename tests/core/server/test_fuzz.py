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
