from __future__ import annotations

import sys
import threading
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from core import (
    App,
    AppError,
    FunctionNotFoundError,
    MutationCtx,
    QueryCtx,
    Schema,
    Table,
    UserError,
)
from core.storage.base import Storage
from core.subscriptions import same_value, subscribe, subscribe_sync, subscription_hub
from core.testing import TestApp

SCHEMA = Schema(a=Table({"n": int}), b=Table({"n": int}))

app = App(SCHEMA)
query_runs: dict[str, int] = {}


def _count(name: str) -> None:
    query_runs[name] = query_runs.get(name, 0) + 1


@pytest.fixture(autouse=True)
def _reset_counts() -> None:
    query_runs.clear()


@app.mutation
def add(ctx: MutationCtx, table: str, n: int) -> str:
    return ctx.db.insert(table, {"n": n})


@app.mutation
def set_n(ctx: MutationCtx, id: str, n: int) -> None:
    ctx.db.patch(id, {"n": n})


@app.query
def total_a(ctx: QueryCtx) -> int:
    _count("total_a")
    return sum(d["n"] for d in ctx.db.query("a").collect())


@app.query
def big_in_a(ctx: QueryCtx) -> int:
    _count("big_in_a")
    return len(ctx.db.query("a").filter(lambda d: d["n"] >= 10).collect())


@app.query
def n_of(ctx: QueryCtx, id: str) -> int | None:
    _count("n_of")
    doc = ctx.db.get(id)
    return None if doc is None else int(doc["n"])


@app.query
def failing(ctx: QueryCtx) -> None:
    raise AppError({"why": "no"})


@app.internal_query
def hidden(ctx: QueryCtx) -> int:
    return 1


CHILD = """
import sys
from core import App, MutationCtx, Schema, Table

app = App(Schema(a=Table({"n": int}), b=Table({"n": int})), storage=sys.argv[1])


@app.mutation
def add(ctx: MutationCtx, table: str, n: int) -> None:
    ctx.db.insert(table, {"n": n})


with app.sync_client(runtime=False) as client:
    for _ in range(3):
        client.mutation(add, {"table": "b", "n": 1})
    client.mutation(add, {"table": "a", "n": 7})
"""


# -- acceptance ------------------------------------------------------------------------------


async def test_commits_to_another_table_do_not_rerun_the_query(storage: Storage) -> None:
    with TestApp(app, storage=storage) as t:
        hub = subscription_hub(t.runtime)
        async with aclosing(subscribe(t.runtime, total_a)) as updates:
            assert await anext(updates) == 0
            for i in range(100):
                await anyio.to_thread.run_sync(t.mutation, add, {"table": "b", "n": i})
            assert hub.flush()
            assert hub.stale == 0
            assert query_runs["total_a"] == 1
            await anyio.to_thread.run_sync(t.mutation, add, {"table": "a", "n": 5})
            assert hub.flush()
            assert hub.stale == 1
            with anyio.fail_after(10):
                assert await anext(updates) == 5
            assert query_runs["total_a"] == 2
            assert hub.query_runs == 2


async def test_a_commit_from_another_process_is_seen(storage: Storage) -> None:
    with TestApp(app, storage=storage) as t:
        async with aclosing(subscribe(t.runtime, total_a)) as updates:
            assert await anext(updates) == 0
            await anyio.run_process([sys.executable, "-c", CHILD, storage.url])
            with anyio.fail_after(15):
                assert await anext(updates) == 7
        # Only the commit to "a" re-ran it, not the three to "b".
        assert query_runs["total_a"] == 2


# -- behaviour -------------------------------------------------------------------------------


async def test_an_unchanged_result_is_not_yielded_again() -> None:
    with TestApp(app) as t:
        hub = subscription_hub(t.runtime)
        async with aclosing(subscribe(t.runtime, big_in_a)) as updates:
            assert await anext(updates) == 0
            t.mutation(add, {"table": "a", "n": 1})  # read by the query, result unchanged
            assert hub.flush() and hub.stale == 1
            t.mutation(add, {"table": "a", "n": 20})
            with anyio.fail_after(10):
                assert await anext(updates) == 1


async def test_quick_commits_are_coalesced() -> None:
    with TestApp(app) as t:
        async with aclosing(subscribe(t.runtime, total_a)) as updates:
            assert await anext(updates) == 0
            for _ in range(50):
                t.mutation(add, {"table": "a", "n": 1})
            with anyio.fail_after(10):
                assert await anext(updates) == 50
            assert query_runs["total_a"] == 2


async def test_a_point_read_reruns_only_when_that_document_changes() -> None:
    with TestApp(app) as t:
        hub = subscription_hub(t.runtime)
        mine = t.mutation(add, {"table": "b", "n": 1})
        other = t.mutation(add, {"table": "b", "n": 1})
        async with aclosing(subscribe(t.runtime, n_of, {"id": mine})) as updates:
            assert await anext(updates) == 1
            t.mutation(set_n, {"id": other, "n": 2})
            assert hub.flush() and hub.stale == 0
            t.mutation(set_n, {"id": mine, "n": 3})
            with anyio.fail_after(10):
                assert await anext(updates) == 3
            assert query_runs["n_of"] == 2


async def test_unsubscribing_unregisters() -> None:
    with TestApp(app) as t:
        hub = subscription_hub(t.runtime)
        async with aclosing(subscribe(t.runtime, total_a)) as updates:
            await anext(updates)
            assert hub.live == 1
        assert hub.live == 0
        t.mutation(add, {"table": "a", "n": 1})
        assert hub.flush()
        assert query_runs["total_a"] == 1


async def test_errors_end_the_subscription() -> None:
    with TestApp(app) as t:
        with pytest.raises(AppError):
            await anext(subscribe(t.runtime, failing))
        with pytest.raises(FunctionNotFoundError, match="internal"):
            await anext(subscribe(t.runtime, hidden))
        assert subscription_hub(t.runtime).live == 0


def test_the_sync_iterator_follows_changes_and_ends_when_the_runtime_closes() -> None:
    ended = threading.Event()
    seen: list[Any] = []
    with TestApp(app) as t:
        hub = subscription_hub(t.runtime)
        updates = subscribe_sync(t.runtime, total_a)
        assert next(updates) == 0
        t.mutation(add, {"table": "a", "n": 4})
        assert next(updates) == 4

        def follow() -> None:
            seen.extend(updates)
            ended.set()

        threading.Thread(target=follow).start()
    assert ended.wait(10)
    assert seen == []
    with pytest.raises(UserError, match="closed"):
        hub.add()


async def test_the_async_iterator_ends_when_the_runtime_closes() -> None:
    t = TestApp(app).__enter__()
    updates = subscribe(t.runtime, total_a)
    assert await anext(updates) == 0
    async with anyio.create_task_group() as tg:

        async def follow() -> None:
            with anyio.fail_after(10):
                assert [u async for u in updates] == []

        tg.start_soon(follow)
        await anyio.lowlevel.checkpoint()  # let it start waiting
        await anyio.to_thread.run_sync(t.__exit__, None, None, None)


def test_clients_subscribe(tmp_path: Path) -> None:
    served = App(SCHEMA, storage=f"sqlite:///{tmp_path / 'clients.db'}")

    @served.mutation
    def put(ctx: MutationCtx, n: int) -> None:
        ctx.db.insert("a", {"n": n})

    @served.query
    def total(ctx: QueryCtx) -> int:
        return sum(d["n"] for d in ctx.db.query("a").collect())

    with served.sync_client() as client:
        updates = client.subscribe(total)
        assert next(updates) == 0
        client.mutation(put, {"n": 2})
        assert next(updates) == 2
        updates.close()  # type: ignore[attr-defined]

    async def run_async() -> None:
        async with served.client() as client:
            async with aclosing(client.subscribe(total)) as stream:  # type: ignore[type-var]
                assert await anext(stream) == 2
                await client.mutation(put, {"n": 3})
                with anyio.fail_after(10):
                    assert await anext(stream) == 5

    anyio.run(run_async)


def test_same_value_compares_types_exactly() -> None:
    assert same_value({"a": [1, "x", None]}, {"a": [1, "x", None]})
    assert not same_value(1, 1.0)
    assert not same_value(1, True)
    assert not same_value({"a": 1}, {"a": 1, "b": 2})
    assert not same_value([1], [1, 2])
    assert same_value(float("nan"), float("nan"))
    assert same_value(b"x", b"x")
