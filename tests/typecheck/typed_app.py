"""A typed app: mypy --strict (scripts/check) verifies references carry the handler's types.

No ``reveal_type``: each result is assigned to a variable annotated with the handler's return
type, so a reference that lost its type (``Any``) or got the wrong one would be caught the
moment ``tests/test_typecheck.py`` swaps an annotation (that test runs mypy on a wrong copy).
"""

from __future__ import annotations

from components.workflow import Step, WorkflowManager
from components.workflow import component as workflow_component
from core import (
    ActionCtx,
    App,
    Component,
    Id,
    MutationCtx,
    QueryCtx,
    Schema,
    SyncClient,
    Table,
    call,
)
from core.testing import TestApp

app = App(Schema(tasks=Table({"title": str, "done": bool})))
counter = Component("counter", schema=Schema(counts=Table({"n": int})))


@app.query
def list_titles(ctx: QueryCtx, done: bool = False) -> list[str]:
    return [t["title"] for t in ctx.db.query("tasks").collect() if t["done"] == done]


@app.mutation
def add_task(ctx: MutationCtx, title: str) -> Id:
    return ctx.db.insert("tasks", {"title": title, "done": False})


@app.internal_query
def count_tasks(ctx: QueryCtx) -> int:
    return len(ctx.db.query("tasks").collect())


@app.internal_mutation
def clear(ctx: MutationCtx) -> float:
    return ctx.now


@app.action
async def summarize(ctx: ActionCtx, prefix: str) -> dict[str, int]:
    titles: list[str] = await ctx.run_query(list_titles, {})
    new_id: Id = await ctx.run_mutation(add_task, {"title": prefix})
    total: int = await ctx.run_query(count_tasks)
    return {"titles": len(titles), "total": total, "id": len(new_id)}


@app.internal_action
async def nested(ctx: ActionCtx) -> bool:
    summary: dict[str, int] = await ctx.run_action(summarize, {"prefix": "x"})
    return bool(summary)


@app.query
def in_a_query(ctx: QueryCtx) -> int:
    titles: list[str] = ctx.run_query(list_titles)
    total: int = call(ctx, count_tasks)
    return len(titles) + total


@app.mutation
def in_a_mutation(ctx: MutationCtx) -> str:
    new_id: Id = ctx.run_mutation(add_task, {"title": "t"})
    when: float = ctx.run_mutation(clear)
    return f"{new_id}@{when}"


@counter.query
def value(ctx: QueryCtx) -> int:
    return len(ctx.db.query("counts").collect())


workflows = WorkflowManager(app.use(workflow_component, name="workflows"))


@workflows.define
async def onboarding(step: Step, title: str) -> int:
    new_id: Id = await step.run_mutation(add_task, {"title": title})
    titles: list[str] = await step.run_query(list_titles)
    summary: dict[str, int] = await step.run_action(summarize, {"prefix": new_id})
    return len(titles) + len(summary)


def with_test_app() -> None:
    with TestApp(app) as t:
        titles: list[str] = t.query(list_titles)
        new_id: Id = t.mutation(add_task, {"title": "a"})
        summary: dict[str, int] = t.action(summarize, {"prefix": new_id})
        assert titles is not None and summary is not None


async def with_client() -> None:
    async with app.client() as client:
        titles: list[str] = await client.query(list_titles, {"done": True})
        new_id: Id = await client.mutation(add_task, {"title": "b"})
        summary: dict[str, int] = await client.action(summarize, {"prefix": "p"})
        untyped = await client.query("typed_app:list_titles")  # a path: Any
        assert titles is not None and new_id and summary is not None and untyped is not None


def with_sync_client(client: SyncClient) -> None:
    titles: list[str] = client.query(list_titles)
    new_id: Id = client.mutation(add_task, {"title": "c"})
    assert titles is not None and new_id
