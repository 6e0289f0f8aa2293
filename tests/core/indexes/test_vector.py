from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core import (
    ActionCtx,
    App,
    InvalidArgumentError,
    InvalidValueError,
    MutationCtx,
    QueryCtx,
    Schema,
    SQLiteStorage,
    Table,
)
from core.indexes import vectorstore
from core.indexes.vector import VectorIndex
from core.testing import TestApp

DIMS = 16

app = App(
    Schema(
        items=Table({"v": list[float] | None, "cat": str, "n": int}).vector_index(
            "by_v", vector_field="v", dimensions=DIMS, filter_fields=["cat", "n"]
        ),
    )
)


@app.mutation
def put(ctx: MutationCtx, vectors: list[list[float]], cats: list[str]) -> list[str]:
    return [
        ctx.db.insert("items", {"v": v, "cat": c, "n": i % 5})
        for i, (v, c) in enumerate(zip(vectors, cats, strict=True))
    ]


@app.mutation
def put_one(ctx: MutationCtx, v: Any, cat: str = "a") -> str:
    return ctx.db.insert("items", {"v": v, "cat": cat, "n": 0})


@app.mutation
def put_raw(ctx: MutationCtx, v: Any) -> str:
    # Bypasses argument validation of the vector (NaN and inf are floats).
    return ctx.db.insert("items", {"v": v, "cat": "a", "n": 0})


@app.mutation
def move(ctx: MutationCtx, id: str, v: list[float] | None) -> None:
    ctx.db.patch(id, {"v": v})


@app.mutation
def drop(ctx: MutationCtx, id: str) -> None:
    ctx.db.delete(id)


@app.query
def count(ctx: QueryCtx) -> int:
    return len(ctx.db.query("items").collect())


@app.action
async def nearest(
    ctx: ActionCtx, v: list[float], limit: int = 10, cats: list[str] | None = None
) -> list[dict[str, Any]]:
    def only(q: Any) -> Any:
        return q.or_(*(q.eq("cat", c) for c in cats or ()))

    return await ctx.vector_search(
        "items", "by_v", vector=v, limit=limit, filter=only if cats else None
    )


@app.action
async def nearest_n(ctx: ActionCtx, v: list[float], n: int) -> list[dict[str, Any]]:
    return await ctx.vector_search(
        "items", "by_v", vector=v, limit=10, filter=lambda q: q.eq("n", n)
    )


@app.action
async def misuse(ctx: ActionCtx, case: int) -> Any:
    v = [1.0] * DIMS
    if case == 0:
        return await ctx.vector_search("items", "nope", vector=v)
    if case == 1:
        return await ctx.vector_search("items", "by_v", vector=v[:-1])
    if case == 2:
        return await ctx.vector_search("items", "by_v", vector=v, limit=0)
    if case == 3:
        return await ctx.vector_search("items", "by_v", vector=v, limit=257)
    if case == 4:
        return await ctx.vector_search("items", "by_v", vector=v, filter=lambda q: q.eq("v", 1))
    return await ctx.vector_search("items", "by_v", vector=[math.nan] * DIMS)


def low_rank(n: int, dims: int, seed: int, rank: int = 6, clusters: int = 20) -> np.ndarray:
    """Embedding-like vectors: clusters in a low-dimensional subspace, plus a little noise."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, dims))
    centers = rng.standard_normal((clusters, rank))
    z = centers[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, rank))
    return z @ basis + 0.05 * rng.standard_normal((n, dims))


def exact_top(
    vectors: np.ndarray, ids: list[str], q: np.ndarray, k: int
) -> list[tuple[str, float]]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = unit @ (q / np.linalg.norm(q))
    order = np.argsort(-scores, kind="stable")[:k]
    return [(ids[i], float(scores[i])) for i in order]


def store_of(t: TestApp) -> vectorstore.VectorStore:
    index = t.runtime.db.space("").table("items").indexes["by_v"]
    assert isinstance(index, VectorIndex)
    return index.store()


def test_exact_search_equals_numpy_cosine_top_k(storage: Any) -> None:
    vectors = low_rank(600, DIMS, seed=1)
    with TestApp(app, storage=storage) as t:
        ids = t.mutation(put, {"vectors": vectors.tolist(), "cats": ["a"] * len(vectors)})
        for seed in range(5):
            q = np.random.default_rng(100 + seed).standard_normal(DIMS)
            got = t.action(nearest, {"v": q.tolist(), "limit": 25})
            want = exact_top(vectors, ids, q, 25)
            assert [g["_id"] for g in got] == [i for i, _ in want]
            for g, (_, score) in zip(got, want, strict=True):
                assert g["_score"] == pytest.approx(score, abs=1e-5)
                assert -1.0 <= g["_score"] <= 1.0
        assert store_of(t).graph_ready.is_set() is False  # below the threshold: exact


def test_hnsw_recall_at_10_on_embedding_like_vectors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectorstore, "HNSW_THRESHOLD", 1000)
    vectors = low_rank(3000, DIMS, seed=2, rank=8, clusters=40)
    queries = low_rank(100, DIMS, seed=3, rank=8, clusters=40)
    with TestApp(app) as t:
        ids = t.mutation(put, {"vectors": vectors.tolist(), "cats": ["a"] * len(vectors)})
        t.action(nearest, {"v": queries[0].tolist()})
        assert store_of(t).graph_ready.wait(60)
        hits = 0
        for q in queries:
            got = {g["_id"] for g in t.action(nearest, {"v": q.tolist(), "limit": 10})}
            hits += len(got & {i for i, _ in exact_top(vectors, ids, q, 10)})
        assert hits / (10 * len(queries)) >= 0.95
        assert store_of(t)._graph is not None  # the graph, not exact search, answered
        # Deleted documents never come back; the graph still serves (a tenth is dead).
        gone = set(ids[::10])
        for doc in gone:
            t.mutation(drop, {"id": doc})
        keep = [i for i, doc in enumerate(ids) if doc not in gone]
        hits = 0
        for q in queries[:30]:
            got = {g["_id"] for g in t.action(nearest, {"v": q.tolist(), "limit": 10})}
            assert not got & gone
            want = exact_top(vectors[keep], [ids[i] for i in keep], q, 10)
            hits += len(got & {i for i, _ in want})
        assert hits / 300 >= 0.95
        assert store_of(t)._graph is not None


def test_filtered_search_returns_limit_results_when_enough_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vectorstore, "HNSW_THRESHOLD", 1000)
    monkeypatch.setattr(vectorstore, "FILTER_EXACT_MAX", 20)
    vectors = low_rank(2000, DIMS, seed=4)
    cats = ["rare" if i % 50 == 0 else "common" for i in range(len(vectors))]  # 40 rare
    with TestApp(app) as t:
        ids = t.mutation(put, {"vectors": vectors.tolist(), "cats": cats})
        rare = {i for i, c in zip(ids, cats, strict=True) if c == "rare"}
        q = vectors[1].tolist()  # a "common" vector: rare ones are far from it
        t.action(nearest, {"v": q})
        assert store_of(t).graph_ready.wait(60)
        got = t.action(nearest, {"v": q, "limit": 30, "cats": ["rare"]})
        assert len(got) == 30 and {g["_id"] for g in got} <= rare
        assert len(t.action(nearest, {"v": q, "limit": 100, "cats": ["rare"]})) == 40
        # OR across values, exact below FILTER_EXACT_MAX matches too.
        monkeypatch.setattr(vectorstore, "FILTER_EXACT_MAX", 4096)
        both = t.action(nearest, {"v": q, "limit": 256, "cats": ["rare", "common"]})
        assert len(both) == 256
        by_n = t.action(nearest_n, {"v": q, "n": 3})
        assert len(by_n) == 10
        assert all(ids.index(g["_id"]) % 5 == 3 for g in by_n)


def test_wrong_dimensions_nan_and_inf_are_refused_and_leave_the_table_unchanged(
    storage: Any,
) -> None:
    with TestApp(app, storage=storage) as t:
        t.mutation(put_one, {"v": [0.5] * DIMS})
        for bad in (
            [1.0] * (DIMS - 1),
            [1.0] * (DIMS + 1),
            [math.nan] * DIMS,
            [math.inf] + [0.0] * (DIMS - 1),
        ):
            with pytest.raises(InvalidValueError, match=f"{DIMS} finite numbers"):
                t.mutation(put_raw, {"v": bad})
        doc = t.mutation(put_one, {"v": [0.25] * DIMS})
        with pytest.raises(InvalidValueError, match="element 3"):
            t.mutation(move, {"id": doc, "v": [0.0, 1.0, 2.0, -math.inf] + [0.0] * (DIMS - 4)})
        assert t.query(count) == 2
        assert len(t.action(nearest, {"v": [1.0] * DIMS})) == 2
        # A missing vector is allowed and simply not indexed.
        t.mutation(put_one, {"v": None})
        assert t.query(count) == 3
        assert len(t.action(nearest, {"v": [1.0] * DIMS})) == 2


def test_search_reflects_inserts_updates_and_deletes_at_once() -> None:
    with TestApp(app) as t:
        a = t.mutation(put_one, {"v": [1.0] + [0.0] * (DIMS - 1)})
        b = t.mutation(put_one, {"v": [0.0, 1.0] + [0.0] * (DIMS - 2)})
        x = [1.0] + [0.0] * (DIMS - 1)
        assert [g["_id"] for g in t.action(nearest, {"v": x})] == [a, b]
        t.mutation(move, {"id": b, "v": x})
        got = t.action(nearest, {"v": x})
        assert {g["_id"] for g in got} == {a, b} and all(
            g["_score"] == pytest.approx(1.0) for g in got
        )
        t.mutation(drop, {"id": a})
        assert [g["_id"] for g in t.action(nearest, {"v": x})] == [b]
        t.mutation(move, {"id": b, "v": None})
        assert t.action(nearest, {"v": x}) == []


def test_results_after_a_restart_are_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vectors = low_rank(400, DIMS, seed=5)
    queries = low_rank(10, DIMS, seed=6)
    path = tmp_path / "db.sqlite"
    with TestApp(app, storage=SQLiteStorage(path, synchronous="NORMAL")) as t:
        ids = t.mutation(put, {"vectors": vectors.tolist(), "cats": ["a", "b"] * 200})
        t.action(nearest, {"v": queries[0].tolist()})
        t.mutation(drop, {"id": ids[0]})
        t.mutation(move, {"id": ids[1], "v": vectors[2].tolist()})
        before = [t.action(nearest, {"v": q.tolist(), "limit": 50, "cats": ["a"]}) for q in queries]
        before += [t.action(nearest, {"v": q.tolist(), "limit": 50}) for q in queries]
    with TestApp(app, storage=SQLiteStorage(path, synchronous="NORMAL")) as t:
        after = [t.action(nearest, {"v": q.tolist(), "limit": 50, "cats": ["a"]}) for q in queries]
        after += [t.action(nearest, {"v": q.tolist(), "limit": 50}) for q in queries]
    assert after == before


def test_commits_of_another_database_on_the_same_file_are_seen(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    x = [1.0] + [0.0] * (DIMS - 1)
    with TestApp(app, storage=SQLiteStorage(path, synchronous="NORMAL")) as t:
        mine = t.mutation(put_one, {"v": x})
        assert [g["_id"] for g in t.action(nearest, {"v": x})] == [mine]
        with TestApp(app, storage=SQLiteStorage(path, synchronous="NORMAL")) as other:
            theirs = other.mutation(put_one, {"v": x})
            other.mutation(drop, {"id": mine})
        assert [g["_id"] for g in t.action(nearest, {"v": x})] == [theirs]


def test_search_mistakes_are_refused() -> None:
    with TestApp(app) as t:
        t.mutation(put_one, {"v": [1.0] * DIMS})
        for case in range(6):
            with pytest.raises(InvalidArgumentError):
                t.action(misuse, {"case": case})


def test_many_deletes_compact_the_store() -> None:
    vectors = low_rank(300, DIMS, seed=8)
    with TestApp(app) as t:
        ids = t.mutation(put, {"vectors": vectors.tolist(), "cats": ["a"] * 300})
        q = vectors[0]
        t.action(nearest, {"v": q.tolist()})
        for doc in ids[:200]:
            t.mutation(drop, {"id": doc})
        got = t.action(nearest, {"v": q.tolist(), "limit": 20})
        assert [g["_id"] for g in got] == [i for i, _ in exact_top(vectors[200:], ids[200:], q, 20)]
        assert store_of(t).rows == 100
