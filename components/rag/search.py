"""Owns rag search inside the component: the vector search, the text search, fusion, windows.

``search`` (an action: vector search is action-side) runs the vector index once, then one
query (``resolve``) at one snapshot runs the text index once, loads every hit, fuses the two
rankings (``components.rag.ranking``) and reads each result's chunk window.

Versions stay whole. The vector search sees every commit acknowledged before it, and the
query's snapshot is at least as new, so the only way the two disagree is a swap (or delete)
committed in between: some vector hits then belong to a version that is no longer ready at
the snapshot. Those hits are dropped, and each such key's ready version at the snapshot is
scored exactly instead (all its chunks, against the query vector), so every result comes from
the versions that snapshot holds: all of a version's chunks or none, never two versions of a
key. Vector scores are recomputed in float64 from the stored vectors (the index ranks in
float32), so ``vector_score_threshold`` is applied to the exact ``cosine × importance``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from components.rag.component import (
    Doc,
    _versions,
    component,
    entry_chunks,
    lookup_namespace,
    public_entry,
)
from components.rag.errors import EmbedderMismatchError
from components.rag.indexing import (
    filter_terms,
    query_vector,
    vector_size,
    vector_table,
)
from components.rag.ranking import (
    MAX_VECTOR_CANDIDATES,
    candidate_count,
    chunk_windows,
    hybrid_rank,
    rank_vector_hits,
)
from core import ActionCtx, QueryCtx

MAX_TEXT_CANDIDATES = 1024
"""The search index returns at most this many documents."""


@component.action
async def search(
    ctx: ActionCtx,
    namespace: dict[str, Any],
    query: str,
    vector: list[float] | None,
    mode: str,
    limit: int,
    filters: list[dict[str, Any]],
    chunk_context: list[int],
    vector_score_threshold: float | None,
    text_weight: float,
    vector_weight: float,
) -> dict[str, Any]:
    """Search a namespace; ``{"results": [...], "entries": [...]}`` (see the client)."""
    found = await ctx.run_query(lookup_namespace, {"namespace": namespace})
    namespace_id = found["namespace_id"]
    if namespace_id is None:
        if found["others"]:
            raise EmbedderMismatchError(
                namespace["name"], namespace["model_id"], namespace["dimensions"], found["others"]
            )
        return {"results": [], "entries": []}
    if limit == 0:
        return {"results": [], "entries": []}
    hits: list[list[Any]] = []
    padded: list[float] | None = None
    if mode != "text" and vector is not None:
        table = vector_table(namespace["dimensions"])
        padded = query_vector(vector, vector_size(table))
        terms = filter_terms(namespace_id, namespace["filter_names"], filters)
        wanted = limit if mode == "vector" else candidate_count(limit)
        raw = await ctx.vector_search(
            table,
            "by_vector",
            vector=padded,
            limit=min(wanted, MAX_VECTOR_CANDIDATES),
            filter=_vector_filter(terms),
        )
        hits = [[str(h["_id"]), h["_score"]] for h in raw]
    args = {
        "namespace_id": namespace_id,
        "name": namespace["name"],
        "dimensions": namespace["dimensions"],
        "filter_names": namespace["filter_names"],
        "query": query,
        "query_vector": padded,
        "vector_hits": hits,
        "mode": mode,
        "limit": limit,
        "filters": filters,
        "chunk_context": chunk_context,
        "vector_score_threshold": vector_score_threshold,
        "text_weight": text_weight,
        "vector_weight": vector_weight,
    }
    result: dict[str, Any] = await ctx.run_query(resolve, {"request": args})
    return result


def _vector_filter(terms: list[tuple[str, Any]]) -> Callable[[Any], Any]:
    def build(q: Any) -> Any:
        for field, value in terms:
            q.eq(field, value)
        return q

    return build


class _Loader:
    """Reads hit documents once per query."""

    def __init__(self, ctx: QueryCtx):
        self.ctx = ctx
        self.docs: dict[str, Doc | None] = {}

    def get(self, table: str, doc_id: Any) -> Doc | None:
        key = str(doc_id)
        if key not in self.docs:
            normalized = self.ctx.db.normalize_id(table, key)
            self.docs[key] = None if normalized is None else self.ctx.db.get(normalized)
        return self.docs[key]


def _matches(entry: Doc, filters: list[dict[str, Any]]) -> bool:
    values = entry["filter_values"]
    return not filters or any(
        all(values.get(name) == value for name, value in clause.items()) for clause in filters
    )


def _vector_ranking(ctx: QueryCtx, load: _Loader, args: dict[str, Any]) -> list[tuple[str, float]]:
    """The vector hits that are live at this snapshot, rescored exactly (see the module)."""
    table = vector_table(args["dimensions"])
    query = np.asarray(args["query_vector"], dtype=np.float64)
    scored: list[tuple[str, float]] = []
    stale_keys: dict[str, None] = {}
    for vector_id, _ in args["vector_hits"]:
        vdoc = load.get(table, vector_id)
        chunk = None if vdoc is None else load.get("chunks", vdoc["chunk_id"])
        entry = None if chunk is None else load.get("entries", chunk["entry_id"])
        if vdoc is None or chunk is None or entry is None:
            continue  # deleted since the vector search
        if entry["status"] == "ready" and vdoc["namespace_id"] is not None:
            scored.append((str(chunk["_id"]), float(query @ np.asarray(vdoc["vector"]))))
        elif entry["key"] is not None:
            stale_keys[entry["key"]] = None
    for key in stale_keys:
        for entry in _versions(ctx, args["namespace_id"], key):
            if entry["status"] != "ready" or not _matches(entry, args["filters"]):
                continue
            for chunk in entry_chunks(ctx, entry["_id"]):
                load.docs[str(chunk["_id"])] = chunk
                vdoc = load.get(table, chunk["vector_id"])
                if vdoc is not None:
                    scored.append((str(chunk["_id"]), float(query @ np.asarray(vdoc["vector"]))))
    ranked = rank_vector_hits(scored, threshold=args["vector_score_threshold"])
    wanted = args["limit"] if args["mode"] == "vector" else candidate_count(args["limit"])
    return [(hit.key, hit.score) for hit in ranked[:wanted]]


def _text_ranking(ctx: QueryCtx, load: _Loader, args: dict[str, Any]) -> list[str]:
    """Chunk ids by BM25 from one search of the index.

    One filter clause is an equality in the index; several (OR) are checked on the candidates.
    """
    if not any(ch.isalnum() for ch in args["query"]):
        return []
    terms = filter_terms(args["namespace_id"], args["filter_names"], args["filters"])
    wanted = args["limit"] if args["mode"] == "text" else candidate_count(args["limit"])
    field, value = terms[0] if len(terms) == 1 else ("namespace_id", args["namespace_id"])
    query = ctx.db.query("chunks").with_search_index(
        "by_text", lambda q: q.search("searchable", args["query"]).eq(field, value)
    )
    if len(terms) > 1:
        alternatives = terms
        query = query.filter(lambda doc: any(doc.get(f) == v for f, v in alternatives))
    ids: list[str] = []
    for chunk in query.take(min(wanted, MAX_TEXT_CANDIDATES)):
        load.docs[str(chunk["_id"])] = chunk
        ids.append(str(chunk["_id"]))
    return ids


@component.internal_query
def resolve(ctx: QueryCtx, request: dict[str, Any]) -> dict[str, Any]:
    """The text search, the fusion and the chunk windows, at one snapshot."""
    args = request
    load = _Loader(ctx)
    mode, limit = args["mode"], args["limit"]
    vector = _vector_ranking(ctx, load, args) if args["query_vector"] is not None else []
    text = _text_ranking(ctx, load, args) if mode != "vector" else []
    if mode == "vector":
        ranked = vector[:limit]
    elif mode == "text":
        ranked = [(key, (len(text) - i) / len(text)) for i, key in enumerate(text[:limit])]
    else:
        fused = hybrid_rank(
            [key for key, _ in vector],
            text,
            vector_weight=args["vector_weight"],
            text_weight=args["text_weight"],
        )
        ranked = [(hit.key, hit.score) for hit in fused[:limit]]
    return _results(ctx, load, args, ranked)


def _results(
    ctx: QueryCtx, load: _Loader, args: dict[str, Any], ranked: list[tuple[str, float]]
) -> dict[str, Any]:
    hits: list[tuple[str, int]] = []
    scores: dict[tuple[str, int], float] = {}
    entries: dict[str, Doc] = {}
    for chunk_id, score in ranked:
        chunk = load.get("chunks", chunk_id)
        if chunk is None:
            continue
        entry = load.get("entries", chunk["entry_id"])
        if entry is None:
            continue
        hit = (str(entry["_id"]), chunk["order"])
        if hit not in scores:
            hits.append(hit)
            scores[hit] = score
            entries[hit[0]] = entry
    before, after = args["chunk_context"]
    counts = {entry_id: entry["chunk_count"] for entry_id, entry in entries.items()}
    results = []
    for window in chunk_windows(hits, counts, before=before, after=after):
        chunks = entry_chunks(ctx, window.entry_id, window.start_order, window.end_order + 1)
        results.append(
            {
                "entry_id": window.entry_id,
                "order": window.order,
                "start_order": window.start_order,
                "content": [c["text"] for c in chunks],
                "score": scores[(window.entry_id, window.order)],
            }
        )
    return {
        "results": results,
        "entries": [public_entry(ctx, e, args["name"]) for e in entries.values()],
    }
