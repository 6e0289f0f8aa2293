"""add_async on every backend: pending until the work pool embeds it, then the atomic swap."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from components.models import HashingEmbedder
from components.rag import RAG, component
from core import ActionCtx, App, MutationCtx, QueryCtx, Schema, Table
from core.testing import TestApp


class FlakyEmbedder:
    """A HashingEmbedder that fails while ``failing`` is set."""

    model_id = "flaky-16"
    dimensions = 16

    def __init__(self) -> None:
        self.inner = HashingEmbedder(16)
        self.failing = False
        self.calls = 0

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        if self.failing:
            raise RuntimeError("embedding service down")
        return await self.inner.embed(texts)


flaky = FlakyEmbedder()
app = App(Schema(completions=Table({"key": Any, "status": str, "replaced": Any, "error": Any})))
docs = RAG(app.use(component, name="docs"), embedder=flaky)


@app.mutation
def completed(
    ctx: MutationCtx, namespace: str, entry: Any, replaced_entry: Any, error: str | None
) -> None:
    ctx.db.insert(
        "completions",
        {
            "key": entry["key"],
            "status": entry["status"],
            "replaced": None if replaced_entry is None else replaced_entry["entry_id"],
            "error": error,
        },
    )


@app.query
def completions(ctx: QueryCtx) -> list[Any]:
    return [
        {k: d[k] for k in ("key", "status", "replaced", "error")}
        for d in ctx.db.query("completions").collect()
    ]


@app.mutation
def add_later(ctx: MutationCtx, key: str, text: str) -> Any:
    result = docs.add_async(ctx, namespace="global", key=key, text=text, on_complete=completed)
    return [result.entry_id, result.status, result.created, result.replaced_entry_id]


@app.action
async def add_later_from_action(ctx: ActionCtx, key: str, text: str) -> Any:
    result = await docs.add_async(ctx, namespace="global", key=key, text=text)
    return [result.entry_id, result.status, result.created]


@app.action
async def add_now(ctx: ActionCtx, key: str, text: str) -> str:
    return (await docs.add(ctx, namespace="global", key=key, text=text)).entry_id


@app.action
async def search(ctx: ActionCtx, query: str) -> list[str]:
    found = await docs.search(ctx, namespace="global", query=query, mode="vector")
    return [c for r in found.results for c in r.content]


@app.query
def status_of(ctx: QueryCtx, entry_id: str) -> Any:
    entry = docs.get_entry(ctx, entry_id)
    return None if entry is None else entry.status


@pytest.fixture
def t(storage: Any) -> Iterator[TestApp]:
    flaky.failing = False
    with TestApp(app, storage=storage) as harness:
        yield harness


def test_add_async_is_pending_until_the_pool_embeds_it(t: TestApp) -> None:
    entry_id, status, created, replaced = t.mutation(add_later, {"key": "k", "text": "late words"})
    assert (status, created, replaced) == ("pending", True, None)
    assert t.action(search, {"query": "late words"}) == []
    t.finish_scheduled()
    assert t.query(status_of, {"entry_id": entry_id}) == "ready"
    assert t.action(search, {"query": "late words"}) == ["late words"]
    assert t.query(completions) == [
        {"key": "k", "status": "ready", "replaced": None, "error": None}
    ]
    # Same content again: nothing written, no job, no callback.
    again = t.mutation(add_later, {"key": "k", "text": "late words"})
    assert again == [entry_id, "ready", False, None]
    assert t.finish_scheduled() == 0
    assert len(t.query(completions)) == 1


def test_add_async_keeps_the_old_version_live_until_the_swap(t: TestApp) -> None:
    old = t.action(add_now, {"key": "k", "text": "first version"})
    new, status, _, _ = t.mutation(add_later, {"key": "k", "text": "second version"})
    assert status == "pending"
    assert t.action(search, {"query": "version"}) == ["first version"]
    t.finish_scheduled()
    assert t.action(search, {"query": "version"}) == ["second version"]
    assert t.query(status_of, {"entry_id": old}) == "replaced"
    assert t.query(completions) == [{"key": "k", "status": "ready", "replaced": old, "error": None}]
    assert t.query(status_of, {"entry_id": new}) == "ready"


def test_add_async_from_an_action(t: TestApp) -> None:
    entry_id, status, created = t.action(add_later_from_action, {"key": "a", "text": "from action"})
    assert (status, created) == ("pending", True)
    t.finish_scheduled()
    assert t.query(status_of, {"entry_id": entry_id}) == "ready"


def test_a_failing_embedder_leaves_the_old_version_and_reports_the_error(t: TestApp) -> None:
    t.action(add_now, {"key": "k", "text": "stable version"})
    flaky.failing = True
    new, _, _, _ = t.mutation(add_later, {"key": "k", "text": "doomed version"})
    for _ in range(6):  # the pool's retries, with backoff
        t.finish_scheduled()
        t.advance_time(60)
    t.finish_scheduled()
    assert flaky.calls >= 3
    assert t.query(status_of, {"entry_id": new}) == "pending"
    done = t.query(completions)
    assert len(done) == 1 and done[0]["status"] == "pending"
    assert "embedding service down" in done[0]["error"]
    flaky.failing = False
    assert t.action(search, {"query": "version"}) == ["stable version"]


def test_rags_with_other_embedders_keep_their_own_binding() -> None:
    other = RAG(docs.handle, embedder=HashingEmbedder(16))
    assert other.binding == "embedder:hashing-16:16" != docs.binding
    assert docs.handle.bindings[docs.binding] is flaky
    assert RAG(docs.handle, embedder=flaky).binding == docs.binding  # same model: shared
