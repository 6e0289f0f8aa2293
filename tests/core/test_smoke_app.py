from __future__ import annotations

from core import App, MutationCtx, QueryCtx, Schema, Table
from core.testing import TestApp

app = App(Schema(counters=Table({"name": str, "value": int}).index("by_name", ["name"])))


@app.mutation
def bump(ctx: MutationCtx, name: str) -> int:
    doc = ctx.db.query("counters").with_index("by_name", lambda q: q.eq("name", name)).first()
    if doc is None:
        ctx.db.insert("counters", {"name": name, "value": 1})
        return 1
    ctx.db.patch(doc["_id"], {"value": doc["value"] + 1})
    return int(doc["value"]) + 1


@app.query
def value(ctx: QueryCtx, name: str) -> int | None:
    doc = ctx.db.query("counters").with_index("by_name", lambda q: q.eq("name", name)).first()
    return None if doc is None else int(doc["value"])


def test_bump_on_every_backend(storage) -> None:
    with TestApp(app, storage=storage) as t:
        for _ in range(3):
            t.mutation(bump, {"name": "a"})
        assert t.query(value, {"name": "a"}) == 3
