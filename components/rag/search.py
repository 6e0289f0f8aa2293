"""Owns rag search inside the component: the vector search, the text search, fusion, windows.

``search`` (an action: vector search is action-side) runs the vector index once, then one
query (``resolve``) at one snapshot runs the text index once, loads every hit, fuses the two
rankings (``components.rag.ranking``) and reads each result's chunk window.

Versions stay whole. The vector search sees every commit acknowledged before it, and the
query's snapshot is at least as new, so the only way the two disagree is a swap (or delete)
committed in between: some vector hits then belong to a version that is no longer ready at
the snapshot (the hit's chunk is there, marked by its entry's status). Those hits are
dropped, and each such key's ready version at the snapshot is
scored exactly instead (all its chunks, against the query vector), so every result comes from
the versions that snapshot holds: all of a version's chunks or none, never two versions of a
key. Vector scores are recomputed in float64 from the stored vectors (the index ranks in
float32), so ``vector_score_threshold`` is applied to the exact ``cosine × importance``.

Hybrid reads little: it fuses the index's own vector ranking with the text ranking first and
loads only the vector hits that make the first ``limit`` (the text hits come loaded); only if
one of those is stale or on the threshold's edge does it rank everything exactly as above.

Filters: the vector search filters on the namespace (or the filter fields), except when the
namespace is the only one whose vectors share its table and the search has no filters: then
it needs none, which is the vector index's fastest path.
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
    namespace_lookup,
    public_entry,
)
from components.rag.errors import EmbedderMismatchError
from components.rag.indexing import (
    filter_terms,
    query_vector,
    text_filter_terms,
    vector_field,
    vector_size,
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
MAX_LOOKUPS = 3
"""Searches per call when namespaces keep changing under it (the last one uses what it has)."""
THRESHOLD_MARGIN = 1e-5
"""How far below the threshold a float32 index score may be and still be checked exactly."""


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
    hint: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Search a namespace: ``{"results", "entries", "lookup"}`` (see the client).

    ``hint`` is a previous ``lookup_namespace`` answer: with it the namespace is not looked up
    first (one query less). ``resolve`` looks it up again at its own snapshot and uses that;
    if the vector search ran on an outdated hint (another namespace id, or unfiltered while
    the namespace has company now) the search runs again with a fresh lookup. ``lookup`` in
    the answer is the hint to pass next time.
    """
    args = {
        "namespace": namespace,
        "query": query,
        "mode": mode,
        "limit": limit,
        "filters": filters,
        "chunk_context": chunk_context,
        "vector_score_threshold": vector_score_threshold,
        "text_weight": text_weight,
        "vector_weight": vector_weight,
    }
    for attempt in range(MAX_LOOKUPS):
        if hint is None:
            hint = await ctx.run_query(lookup_namespace, {"namespace": namespace})
        args["lookup"] = hint
        args["final"] = attempt == MAX_LOOKUPS - 1
        args["query_vector"], args["vector_hits"] = await _vector_hits(ctx, args, vector)
        result: dict[str, Any] = await ctx.run_query(resolve, {"request": args})
        if "retry" not in result:
            break
        hint = None
    return result


async def _vector_hits(
    ctx: ActionCtx, args: dict[str, Any], vector: list[float] | None
) -> tuple[list[float] | None, list[list[Any]]]:
    """The padded query vector and the index's hits ``[chunk_id, score]`` (none in text mode)."""
    lookup, namespace, mode = args["lookup"], args["namespace"], args["mode"]
    namespace_id = lookup["namespace_id"]
    if mode == "text" or vector is None or namespace_id is None or args["limit"] == 0:
        return None, []
    size = vector_size(namespace["dimensions"])
    padded = query_vector(vector, size)
    filters = args["filters"]
    terms = filter_terms(namespace_id, namespace["filter_names"], filters)
    wanted = args["limit"] if mode == "vector" else candidate_count(args["limit"])
    raw = await ctx.vector_search(
        "chunks",
        f"by_{vector_field(size)}",
        vector=padded,
        limit=min(wanted, MAX_VECTOR_CANDIDATES),
        filter=None if lookup["sole"] and not filters else _vector_filter(terms),
    )
    return padded, [[str(h["_id"]), h["_score"]] for h in raw]


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
    field = vector_field(vector_size(args["dimensions"]))
    query = np.asarray(args["query_vector"], dtype=np.float64)
    scored: list[tuple[str, float]] = []
    stale_keys: dict[str, None] = {}
    for chunk_id, _ in args["vector_hits"]:
        chunk = load.get("chunks", chunk_id)
        entry = None if chunk is None else load.get("entries", chunk["entry_id"])
        if chunk is None or entry is None or chunk["namespace_id"] != args["namespace_id"]:
            continue  # deleted since the vector search (or a namespace made since the lookup)
        if entry["status"] == "ready" and chunk[field] is not None:
            scored.append((chunk_id, float(query @ np.asarray(chunk[field]))))
        elif entry["key"] is not None:
            stale_keys[entry["key"]] = None
    for key in stale_keys:
        for entry in _versions(ctx, args["namespace_id"], key):
            if entry["status"] != "ready" or not _matches(entry, args["filters"]):
                continue
            for chunk in entry_chunks(ctx, entry["_id"]):
                load.docs[str(chunk["_id"])] = chunk
                if chunk[field] is not None:
                    scored.append((str(chunk["_id"]), float(query @ np.asarray(chunk[field]))))
    ranked = rank_vector_hits(scored, threshold=args["vector_score_threshold"])
    wanted = args["limit"] if args["mode"] == "vector" else candidate_count(args["limit"])
    return [(hit.key, hit.score) for hit in ranked[:wanted]]


def _text_ranking(ctx: QueryCtx, load: _Loader, args: dict[str, Any]) -> list[str]:
    """Chunk ids by BM25 from one search of the index.

    One filter clause is an equality in the index; several (OR) are checked on the candidates.
    """
    if not any(ch.isalnum() for ch in args["query"]):
        return []
    ns, names, filters = args["namespace_id"], args["filter_names"], args["filters"]
    wanted = args["limit"] if args["mode"] == "text" else candidate_count(args["limit"])
    eqs = text_filter_terms(ns, names, filters[0] if len(filters) == 1 else None)
    if not filters and args["lookup"]["alone"]:
        eqs = []  # the only namespace: the unfiltered search is the same, and faster

    def build(q: Any) -> Any:
        q = q.search("searchable", args["query"])
        for field, value in eqs:
            q = q.eq(field, value)
        return q

    query = ctx.db.query("chunks").with_search_index("by_text", build)
    if len(filters) > 1:
        alternatives = filter_terms(ns, names, filters)
        query = query.filter(lambda doc: any(doc.get(f) == v for f, v in alternatives))
    ids: list[str] = []
    for chunk in query.take(min(wanted, MAX_TEXT_CANDIDATES)):
        load.docs[str(chunk["_id"])] = chunk
        ids.append(str(chunk["_id"]))
    return ids


@component.internal_query
def resolve(ctx: QueryCtx, request: dict[str, Any]) -> dict[str, Any]:
    """The text search, the fusion and the chunk windows, at one snapshot."""
    namespace = request["namespace"]
    lookup = namespace_lookup(ctx, namespace)
    used = request["lookup"]
    outdated = lookup["namespace_id"] != used["namespace_id"] or (used["sole"] > lookup["sole"])
    if outdated and not request["final"]:
        # The vector search ran against another namespace, or unfiltered beside a new one.
        return {"retry": True}
    found = {"results": [], "entries": [], "lookup": lookup}
    if lookup["namespace_id"] is None:
        if lookup["others"]:
            raise EmbedderMismatchError(
                namespace["name"], namespace["model_id"], namespace["dimensions"], lookup["others"]
            )
        return found
    if request["limit"] == 0:
        return found
    args = {
        **request,
        "lookup": lookup,  # this snapshot's: "alone" decides the text search's filter
        "namespace_id": lookup["namespace_id"],
        "name": namespace["name"],
        "dimensions": namespace["dimensions"],
        "filter_names": namespace["filter_names"],
    }
    return {**_resolve(ctx, args), "lookup": lookup}


def _resolve(ctx: QueryCtx, args: dict[str, Any]) -> dict[str, Any]:
    load = _Loader(ctx)
    mode, limit = args["mode"], args["limit"]
    text = _text_ranking(ctx, load, args) if mode != "vector" else []
    if mode == "text":
        ranked = [(key, (len(text) - i) / len(text)) for i, key in enumerate(text[:limit])]
        return _results(ctx, load, args, ranked)
    if mode == "hybrid":
        quick = _quick_hybrid(load, args, text)
        if quick is not None:
            return _results(ctx, load, args, quick)
    vector = _vector_ranking(ctx, load, args)
    if mode == "vector":
        return _results(ctx, load, args, vector[:limit])
    fused = _fuse(args, [key for key, _ in vector], text)
    return _results(ctx, load, args, [(hit.key, hit.score) for hit in fused[:limit]])


def _fuse(args: dict[str, Any], vector: list[str], text: list[str]) -> list[Any]:
    return hybrid_rank(
        vector, text, vector_weight=args["vector_weight"], text_weight=args["text_weight"]
    )


def _quick_hybrid(
    load: _Loader, args: dict[str, Any], text: list[str]
) -> list[tuple[str, float]] | None:
    """Hybrid results reading only the vector hits that make the cut, or ``None``.

    The vector ranking is taken as the index returned it (float32 scores, the threshold with
    a small margin); then each vector hit among the first ``limit`` fused results is loaded and
    checked: live at this snapshot and exactly at or above the threshold. If every one passes,
    those are the results; otherwise (a swap in between, a score on the threshold's edge) the
    caller ranks everything exactly.
    """
    threshold = args["vector_score_threshold"]
    field = vector_field(vector_size(args["dimensions"]))
    query = np.asarray(args["query_vector"], dtype=np.float64)
    vector = [
        chunk_id
        for chunk_id, score in args["vector_hits"]
        if threshold is None or score >= threshold - THRESHOLD_MARGIN
    ][: candidate_count(args["limit"])]
    out = []
    for hit in _fuse(args, vector, text)[: args["limit"]]:
        if hit.ranks[0] is not None:
            chunk = load.get("chunks", hit.key)
            entry = None if chunk is None else load.get("entries", chunk["entry_id"])
            if (
                chunk is None
                or entry is None
                or entry["status"] != "ready"
                or chunk["namespace_id"] != args["namespace_id"]
                or chunk[field] is None
                or (threshold is not None and float(query @ np.asarray(chunk[field])) < threshold)
            ):
                return None
        out.append((hit.key, hit.score))
    return out


def _results(
    ctx: QueryCtx, load: _Loader, args: dict[str, Any], ranked: list[tuple[str, float]]
) -> dict[str, Any]:
    hits: list[tuple[str, int]] = []
    scores: dict[tuple[str, int], float] = {}
    texts: dict[tuple[str, int], str] = {}
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
            texts[hit] = chunk["text"]
            entries[hit[0]] = entry
    before, after = args["chunk_context"]
    counts = {entry_id: entry["chunk_count"] for entry_id, entry in entries.items()}
    results = []
    for window in chunk_windows(hits, counts, before=before, after=after):
        if window.start_order == window.end_order:  # just the hit, already loaded
            content = [texts[(window.entry_id, window.order)]]
        else:
            chunks = entry_chunks(ctx, window.entry_id, window.start_order, window.end_order + 1)
            content = [c["text"] for c in chunks]
        results.append(
            {
                "entry_id": window.entry_id,
                "order": window.order,
                "start_order": window.start_order,
                "content": content,
                "score": scores[(window.entry_id, window.order)],
            }
        )
    return {
        "results": results,
        "entries": [public_entry(ctx, e, args["name"]) for e in entries.values()],
    }
