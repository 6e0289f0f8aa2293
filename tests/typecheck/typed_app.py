"""A typed app: mypy --strict (scripts/check) verifies references carry the handler's types.

No ``reveal_type``: each result is assigned to a variable annotated with the handler's return
type, so a reference that lost its type (``Any``) or got the wrong one would be caught the
moment ``tests/test_typecheck.py`` swaps an annotation (that test runs mypy on a wrong copy).
"""

from __future__ import annotations

from components.agent import (
    Agent,
    ApprovalDocument,
    GenerateResult,
    MessageDocument,
    StreamDeltas,
    ThreadDocument,
    UsageTotals,
)
from components.agent import component as agent_component
from components.models import ScriptedChatModel
from components.sharded_counter import ShardedCounter
from components.sharded_counter import component as counter_component
from components.workflow import (
    Step,
    WorkflowManager,
    WorkflowPage,
    WorkflowStatus,
    WorkPool,
    WorkStatus,
    pool_component,
)
from components.workflow import component as workflow_component
from core import (
    ActionCtx,
    App,
    Component,
    Id,
    MutationCtx,
    Page,
    QueryCtx,
    Schema,
    SyncClient,
    Table,
    Value,
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


# Component clients: the context decides between a value (query, mutation) and an awaitable
# (action), and each method takes only the contexts it may run in.

likes = ShardedCounter(app.use(counter_component, name="likes"), shards={"posts": 4})
pool = WorkPool(app.use(pool_component, name="pool"), max_parallelism=2)
helper = Agent(
    app.use(agent_component, name="agent"), name="helper", model=ScriptedChatModel(["Hi!"])
)


@app.mutation
def clients_in_a_mutation(ctx: MutationCtx, post: str) -> str:
    shard: int = likes.inc(ctx, post)
    likes.add(ctx, post, 2.5, shard=shard)
    work_id: Id = pool.enqueue_action(ctx, summarize, {"prefix": post}, retry=True)
    pool.cancel(ctx, work_id)
    workflow_id: Id = workflows.start(ctx, onboarding, {"title": post})
    removed: bool = workflows.cleanup(ctx, workflow_id)
    thread_id: str = helper.create_thread(ctx, user_id="ada", title=post)
    message_id: str = helper.save_message(ctx, thread_id=thread_id, text="hello")
    renamed: ThreadDocument = helper.update_thread(ctx, thread_id, title="renamed")
    edited: MessageDocument = helper.update_message(ctx, message_id, text="hi")
    stopped: int = helper.abort_stream(ctx, thread_id=thread_id)
    return f"{removed}{renamed['title']}{edited['text']}{stopped}"


@app.query
def clients_in_a_query(ctx: QueryCtx, post: str, work_id: str, thread_id: str) -> int:
    total: int | float = likes.count(ctx, post)
    by_shard: dict[int, int | float] = likes.shard_values(ctx, post)
    work: WorkStatus = pool.status(ctx, work_id)
    status: WorkflowStatus | None = workflows.status(ctx, "a workflow id", steps=False)
    thread: ThreadDocument | None = helper.get_thread(ctx, thread_id)
    messages: Page = helper.list_messages(ctx, thread_id=thread_id)
    found: list[MessageDocument] = helper.search_messages(ctx, query="hi", thread_id=thread_id)
    deltas: StreamDeltas = helper.stream_deltas(ctx, thread_id=thread_id)
    totals: UsageTotals = helper.usage(ctx, thread_id=thread_id)
    waiting: list[ApprovalDocument] = helper.pending_approvals(ctx, thread_id=thread_id)
    counted = int(total) + len(by_shard) + work.previous_attempts + len(messages.page)
    known = (status, thread, found, deltas["done"], waiting)
    return counted + totals.total_tokens + len(known)


@app.action
async def clients_in_an_action(ctx: ActionCtx, post: str) -> float:
    estimate: float = await likes.estimate_count(ctx, post, read_shards=2)
    await likes.reset(ctx, post)
    work_id: Id = await pool.enqueue_mutation(ctx, add_task, {"title": post})
    work: WorkStatus = await pool.status(ctx, work_id)
    workflow_id: Id = await workflows.start(ctx, "typed_app:onboarding", {"title": post})
    page: WorkflowPage = await workflows.list(ctx, state="running")
    outcome: Value = await workflows.result(ctx, workflow_id)
    thread_id: str = await helper.create_thread(ctx, user_id="ada")
    result: GenerateResult = await helper.generate_text(ctx, thread_id=thread_id, prompt=post)
    hits: list[MessageDocument] = await helper.search_messages(
        ctx, query=post, user_id="ada", mode="hybrid"
    )
    swept: int = await helper.sweep(ctx)
    counted = len(page.page) + len(hits) + swept + work.previous_attempts
    return estimate + counted + len(result.text) + (outcome is None)


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
