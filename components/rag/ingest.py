"""Owns asynchronous ingestion (``add_async``): a pending entry embedded by a work-pool job.

``add_async`` runs in the caller's mutation (or its own, from an action): the same dedupe as
``add``, then a ``pending`` entry with its chunks' text, and a job in the component's work
pool (``embed_entry``, retried with backoff). The job embeds the chunks that have no vector
yet in batches, with the embedder bound to this instance (``ctx.bindings``, one binding
per model: ``embedder:<model_id>:<dimensions>``),
stages them, and promotes the entry with the same atomic swap as ``add``: until then the
key's previous version stays searchable, whole. If the job fails for good, the entry stays
``pending`` with its error and ``on_complete`` gets the error; the previous version is
untouched.
"""

from __future__ import annotations

from typing import Any

from components.rag.component import (
    _insert_chunks,
    _result,
    component,
    finish_entry,
    new_version,
    pool,
    public_entry,
    stage_vectors,
    unembedded_chunks,
)
from components.rag.embedding import checked_vectors
from core import ActionCtx, MutationCtx

EMBED_BATCH = 256
"""Chunks embedded per embedder call by the job."""
RETRY = {"max_attempts": 3, "initial_backoff": 1.0, "base": 2.0}
"""The job's retry policy (work-pool form)."""
MAX_PARALLELISM = 10
"""Embedding jobs of one instance running at once."""


@component.mutation
def add_async(
    ctx: MutationCtx,
    namespace: dict[str, Any],
    key: str | None,
    title: str | None,
    metadata: Any,
    filter_values: dict[str, Any],
    importance: float,
    content_hash: str,
    chunks: list[str],
    embedder: str,
    on_complete: str | None = None,
) -> dict[str, Any]:
    """Add a pending version whose chunks a work-pool job embeds, then swaps in."""
    entry, ns, created = new_version(
        ctx,
        namespace,
        key,
        {
            "title": title,
            "metadata": metadata,
            "filter_values": filter_values,
            "importance": importance,
            "content_hash": content_hash,
            "chunk_count": len(chunks),
            "on_complete": on_complete,
        },
    )
    if not created:
        return _result(entry, False)
    _insert_chunks(ctx, entry, ns, 0, [{"text": text} for text in chunks])
    ctx.run_mutation(
        pool.enqueue,
        {
            "fn": embed_entry,
            "fn_type": "action",
            "args": {"entry_id": entry["_id"], "embedder": embedder},
            "on_complete": embed_done,
            "context": {"entry_id": entry["_id"]},
            "retry": RETRY,
            "max_parallelism": MAX_PARALLELISM,
            "name": "rag:embed_entry",
        },
    )
    return _result(entry, True)


@component.internal_action
async def embed_entry(ctx: ActionCtx, entry_id: str, embedder: str) -> dict[str, Any]:
    """Embed a pending entry's remaining chunks in batches, then promote it.

    ``embedder`` names the instance's binding of the embedder (``embedder_binding``).
    """
    model: Any = ctx.bindings[embedder]
    while True:
        batch = await ctx.run_query(unembedded_chunks, {"entry_id": entry_id, "limit": EMBED_BATCH})
        if not batch:
            break
        texts = [chunk["text"] for chunk in batch]
        vectors = checked_vectors(model, texts, await model.embed(texts))
        # Unembedded chunks are read in order, so a batch is a run of consecutive orders.
        await ctx.run_mutation(
            stage_vectors,
            {
                "entry_id": entry_id,
                "start_order": batch[0]["order"],
                "vectors": vectors,
            },
        )
    result: dict[str, Any] = await ctx.run_mutation(finish_entry, {"entry_id": entry_id})
    return result


@component.internal_mutation
def embed_done(
    ctx: MutationCtx, work_id: str, context: dict[str, Any], result: dict[str, Any]
) -> None:
    """The pool's report on an embedding job: on a final failure, record it and tell."""
    if result.get("kind") == "success":
        return
    entry = ctx.db.get(context["entry_id"])
    if entry is None or entry["status"] != "pending":
        return
    error = str(result.get("error") or result.get("kind"))
    ctx.db.patch(entry["_id"], {"error": error})
    if entry["on_complete"] is not None:
        ns = ctx.db.get(entry["namespace_id"])
        name = ns["name"] if ns is not None else ""
        ctx.run_mutation(
            entry["on_complete"],
            {
                "namespace": name,
                "entry": public_entry(ctx, entry, name),
                "replaced_entry": None,
                "error": error,
            },
        )
