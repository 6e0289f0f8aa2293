"""Search benchmark: BM25 text search and vector search, beside rank_bm25, bm25s and raw faiss.

Run ``python bench/search.py`` (about 3 minutes; ``--quick`` for a smaller run). One table grows
to 10k and then 100k generated documents (Zipf-distributed pseudo-words, 20-120 terms each:
with much shorter documents most of bm25s's scores are zero and its top-k selection, numpy's
argpartition, slows down about tenfold, so this length keeps bm25s at its documented speed).
At each size it prints:

* text query latency p50/p90 of a Capsule query (``with_search_index(...).take(10)`` through
  the sync client, with a warm postings cache, and the first, cold pass) beside ``bm25s`` and
  ``rank_bm25`` on the same tokens (target at 100k: p50 within 3x of bm25s);
* the cost of inserting one document: the mutation with and without the search index (target:
  under 1 ms of index work). Each distinct term is one posting written at a random place in
  the index's B-tree, so the cost follows the document's length, not the corpus size.

Then, for 100k 384-dimensional embedding-like vectors (clusters in a low-rank subspace): the
time to open the index (the first search after reopening the database loads it) and until the
HNSW graph is ready, then ``ctx.vector_search`` p50 and recall@10 beside raw faiss (HNSW with
the same parameters, and exact IndexFlatIP) on the same vectors (target: within 2x of raw
faiss at recall >= 0.95).

The machine's other load shows in p90s; compare ratios from one run.
"""

# ruff: noqa: T201
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parent.parent)

import bm25s  # noqa: E402
import faiss  # noqa: E402
import numpy as np  # noqa: E402
from rank_bm25 import BM25Okapi  # noqa: E402

from core import ActionCtx, App, MutationCtx, QueryCtx, Schema, SQLiteStorage, Table  # noqa: E402
from core.indexes import vectorstore  # noqa: E402
from core.indexes.text import TextIndex, query_terms, tokenize  # noqa: E402
from core.indexes.vector import VectorIndex  # noqa: E402

QUERIES = 200
DIMS = 384


def pct(samples: list[float], q: float) -> float:
    """The ``q``-th percentile of ``samples`` (seconds), in milliseconds."""
    return float(np.percentile(samples, q)) * 1e3


def timed(fn: Callable[[], Any]) -> float:
    """Seconds ``fn()`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- corpora ------------------------------------------------------------------------------------


def make_texts(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` documents of 20-120 pseudo-words drawn from a Zipf-like vocabulary of 50k words."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = sorted({"".join(rng.choice(letters, rng.integers(3, 10))) for _ in range(50_000)})
    rng.shuffle(vocab)
    weights = 1 / np.arange(1, len(vocab) + 1) ** 1.07
    lengths = rng.integers(20, 121, n)
    tokens = rng.choice(len(vocab), size=int(lengths.sum()), p=weights / weights.sum())
    out, pos = [], 0
    for length in lengths:
        out.append(" ".join(vocab[i] for i in tokens[pos : pos + length]))
        pos += length
    return out


def make_queries(texts: list[str], rng: np.random.Generator) -> list[str]:
    """Queries of 1-3 words taken from random documents (so common words occur, as in life)."""
    out = []
    for _ in range(QUERIES):
        words = texts[rng.integers(len(texts))].split()
        out.append(" ".join(rng.choice(words, rng.integers(1, 4), replace=False)))
    return out


def embeddings(n: int, rng: np.random.Generator) -> np.ndarray:
    """Embedding-like vectors: 200 clusters in a 32-dimensional subspace, plus noise."""
    basis = rng.standard_normal((32, DIMS)).astype(np.float32)
    centers = rng.standard_normal((200, 32)).astype(np.float32)
    z = centers[rng.integers(0, 200, n)] + 0.6 * rng.standard_normal((n, 32)).astype(np.float32)
    noise = 0.11 * rng.standard_normal((n, DIMS)).astype(np.float32)
    return np.ascontiguousarray(z @ basis + noise, dtype=np.float32)


# -- the app ------------------------------------------------------------------------------------

schema = Schema(
    docs=Table({"text": str, "cat": str}).search_index(
        "search", search_field="text", filter_fields=["cat"]
    ),
    plain=Table({"text": str, "cat": str}),
    items=Table({"v": list[float], "cat": str}).vector_index(
        "by_v", vector_field="v", dimensions=DIMS, filter_fields=["cat"]
    ),
)


def make_app(path: Path) -> App:
    """The benchmark app on a SQLite file; its functions are in ``app.bench``."""
    app = App(schema, storage=SQLiteStorage(path, synchronous="NORMAL"))

    @app.mutation
    def load(ctx: MutationCtx, table: str, texts: list[str]) -> None:
        for i, text in enumerate(texts):
            ctx.db.insert(table, {"text": text, "cat": "abcd"[i % 4]})

    @app.mutation
    def load_vectors(ctx: MutationCtx, vectors: list[list[float]]) -> list[str]:
        return [
            ctx.db.insert("items", {"v": v, "cat": "abcdefghij"[i % 10]})
            for i, v in enumerate(vectors)
        ]

    @app.query
    def search(ctx: QueryCtx, q: str) -> list[str]:
        found = ctx.db.query("docs").with_search_index("search", lambda s: s.search("text", q))
        return [d["_id"] for d in found.take(10)]

    @app.query
    def plain_loaded(ctx: QueryCtx) -> bool:
        return ctx.db.query("plain").first() is not None

    @app.action
    async def nearest(ctx: ActionCtx, queries: list[list[float]]) -> list[Any]:
        out = []
        for v in queries:
            start = time.perf_counter()
            hits = await ctx.vector_search("items", "by_v", vector=v, limit=10)
            out.append([time.perf_counter() - start, [h["_id"] for h in hits]])
        return out

    app.bench = {  # type: ignore[attr-defined]
        "load": load,
        "load_vectors": load_vectors,
        "search": search,
        "nearest": nearest,
        "plain_loaded": plain_loaded,
    }
    return app


def index_of(client: Any, table: str, name: str) -> Any:
    """The index object (text or vector) of an open client's database."""
    return client.runtime.db.space("").table(table).indexes[name]


# -- text ---------------------------------------------------------------------------------------


def text_bench(sizes: tuple[int, ...], tmp: Path, rng: np.random.Generator) -> None:
    """Grow one table through ``sizes``; at each, time the same queries here and in baselines."""
    texts = make_texts(sizes[-1], rng)
    app = make_app(tmp / "text.db")
    fns = app.bench  # type: ignore[attr-defined]
    loaded = 0
    load_s = 0.0
    with app.sync_client() as client:
        for n in sizes:
            start = time.perf_counter()
            for i in range(loaded, n, 5000):
                chunk = texts[i : min(i + 5000, n)]
                client.mutation(fns["load"], {"table": "docs", "texts": chunk})
            load_s += time.perf_counter() - start
            loaded = n
            queries = make_queries(texts[:n], rng)
            cold = [timed(partial(client.query, fns["search"], {"q": q})) for q in queries]
            ours = [timed(partial(client.query, fns["search"], {"q": q})) for q in queries]
            insert = insert_costs(client, fns, texts[:n], rng)
            print(f"\n== text search, {n:,} documents (loaded through mutations, {load_s:.0f} s)")
            print(f"  {'':28} {'p50 ms':>9} {'p90 ms':>9}")
            print(f"  {'capsule (warm cache)':28} {pct(ours, 50):9.2f} {pct(ours, 90):9.2f}")
            print(f"  {'capsule (first pass, cold)':28} {pct(cold, 50):9.2f} {pct(cold, 90):9.2f}")
            baselines(texts[:n], queries, ours, rank_bm25_queries=QUERIES if n <= 10_000 else 20)
            with_index, without, entries_us, terms = insert
            print(
                f"  insert one document ({terms:.0f} distinct terms on average) at {n:,}: "
                f"{with_index * 1e3:.2f} ms per mutation (p50), {without * 1e3:.2f} ms into a "
                f"table without the search index: index work {(with_index - without) * 1e3:.2f} "
                f"ms, of which computing the entries {entries_us:.0f} us (target: < 1 ms)"
            )


def baselines(
    texts: list[str], queries: list[str], ours: list[float], rank_bm25_queries: int
) -> None:
    """Time the queries in bm25s and rank_bm25 on the same tokens; print beside ``ours``."""
    tokens = [tokenize(t) for t in texts]
    qtokens = [query_terms(q) for q in queries]
    start = time.perf_counter()
    fast = bm25s.BM25(k1=1.5, b=0.75)
    fast.index(tokens, show_progress=False)
    bm25s_build = time.perf_counter() - start
    fast_s = [timed(partial(fast.retrieve, [q], k=10, show_progress=False)) for q in qtokens]
    start = time.perf_counter()
    okapi = BM25Okapi(tokens)
    okapi_build = time.perf_counter() - start
    okapi_s = [timed(partial(okapi.get_scores, q)) for q in qtokens[:rank_bm25_queries]]
    print(
        f"  {'bm25s':28} {pct(fast_s, 50):9.2f} {pct(fast_s, 90):9.2f}   "
        f"(index {bm25s_build:.1f} s)"
    )
    print(
        f"  {'rank_bm25 (' + str(len(okapi_s)) + ' queries)':28} {pct(okapi_s, 50):9.2f} "
        f"{pct(okapi_s, 90):9.2f}   (build {okapi_build:.1f} s, +1 doc = rebuild)"
    )
    print(
        f"  capsule / bm25s: p50 {pct(ours, 50) / pct(fast_s, 50):.2f}x, "
        f"p90 {pct(ours, 90) / pct(fast_s, 90):.2f}x (target at 100k: p50 <= 3x)"
    )


def insert_costs(
    client: Any, fns: Any, texts: list[str], rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """Median mutation seconds to insert one document with and without the search index.

    Also the microseconds to compute one document's index entries, and its distinct terms.
    """
    sample = [texts[i] for i in rng.integers(0, len(texts), 200)]
    if not client.query(fns["plain_loaded"]):
        client.mutation(fns["load"], {"table": "plain", "texts": texts[:5000]})
    with_index = [
        timed(partial(client.mutation, fns["load"], {"table": "docs", "texts": [t]}))
        for t in sample
    ]
    without = [
        timed(partial(client.mutation, fns["load"], {"table": "plain", "texts": [t]}))
        for t in sample
    ]
    index: TextIndex = index_of(client, "docs", "search")
    docs = [{"_id": "a" * 32, "_creation_time": 1.0, "text": t, "cat": "a"} for t in sample]
    start = time.perf_counter()
    for doc in docs:
        index.entries(doc)
    entries_us = (time.perf_counter() - start) / len(docs) * 1e6
    terms = float(np.mean([len(set(tokenize(t))) for t in sample]))
    return float(np.median(with_index)), float(np.median(without)), entries_us, terms


# -- vectors ------------------------------------------------------------------------------------


def vector_bench(n: int, tmp: Path, rng: np.random.Generator) -> None:
    """Load ``n`` vectors, reopen, then time searches here and in raw faiss, with recall."""
    vectors = embeddings(n + QUERIES, rng)
    queries, vectors = vectors[n:], vectors[:n]
    path = tmp / "vectors.db"
    app = make_app(path)
    fns = app.bench  # type: ignore[attr-defined]
    rows = vectors.tolist()
    with app.sync_client() as client:
        start = time.perf_counter()
        loaded: list[str] = []
        for i in range(0, n, 2000):
            loaded += client.mutation(fns["load_vectors"], {"vectors": rows[i : i + 2000]})
        load_s = time.perf_counter() - start
    position = {doc: i for i, doc in enumerate(loaded)}
    # A fresh process's view: open the database again, then the first search loads the index.
    app = make_app(path)
    fns = app.bench  # type: ignore[attr-defined]
    with app.sync_client() as client:
        qs = queries.tolist()
        start = time.perf_counter()
        client.action(fns["nearest"], {"queries": qs[:1]})
        first = time.perf_counter() - start
        index: VectorIndex = index_of(client, "items", "by_v")
        store = index.store()
        store.graph_ready.wait(600)
        ready = time.perf_counter() - start
        results = client.action(fns["nearest"], {"queries": qs})
    ours = [r[0] for r in results]
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    qunit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    flat = faiss.IndexFlatIP(DIMS)
    flat.add(unit)
    flat_s = [timed(partial(flat.search, q[None, :], 10)) for q in qunit[:50]]
    _, truth = flat.search(qunit, 10)
    start = time.perf_counter()
    raw = faiss.IndexHNSWFlat(DIMS, vectorstore.HNSW_M, faiss.METRIC_INNER_PRODUCT)
    raw.hnsw.efConstruction = vectorstore.HNSW_EF_CONSTRUCTION
    raw.add(unit)
    raw_build = time.perf_counter() - start
    raw.hnsw.efSearch = vectorstore.HNSW_EF_SEARCH
    raw_s = [timed(partial(raw.search, q[None, :], 10)) for q in qunit]
    _, raw_found = raw.search(qunit, 10)
    # Map our ids to rows of ``vectors``, the order faiss saw them in.
    ours_recall = recall([[position[d] for d in r[1]] for r in results], truth)
    raw_recall = recall(raw_found.tolist(), truth)

    print(f"\n== vector search, {n:,} x {DIMS} (loaded through mutations in {load_s:.1f} s)")
    print(
        f"  open: first search {first:.2f} s (loads the index), HNSW ready after {ready:.1f} s "
        f"(raw faiss build {raw_build:.1f} s)"
    )
    print(f"  {'':32} {'p50 ms':>9} {'p90 ms':>9} {'recall@10':>10}")
    for name, samples, rec in (
        ("capsule ctx.vector_search", ours, ours_recall),
        ("raw faiss HNSW (same params)", raw_s, raw_recall),
        ("raw faiss IndexFlatIP (exact)", flat_s, 1.0),
    ):
        print(f"  {name:32} {pct(samples, 50):9.3f} {pct(samples, 90):9.3f} {rec:10.3f}")
    print(
        f"  capsule / raw HNSW: p50 {pct(ours, 50) / pct(raw_s, 50):.2f}x "
        "(target: <= 2x at recall >= 0.95)"
    )


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    """Mean recall@k of ``found`` rows against the exact ``truth``."""
    hits = sum(len(set(f) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def main() -> None:
    """Run every part at 10k and 100k documents (``--quick``: 10k and 30k)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k and 30k documents only")
    args = parser.parse_args()
    sizes = (10_000, 30_000) if args.quick else (10_000, 100_000)
    rng = np.random.default_rng(42)
    with tempfile.TemporaryDirectory(prefix="capsule-bench-search-") as tmp:
        text_bench(sizes, Path(tmp), rng)
        vector_bench(sizes[-1], Path(tmp), rng)


if __name__ == "__main__":
    main()
