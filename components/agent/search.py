"""Owns message search: text (the core's BM25 index), vector (the agent's embedder), hybrid.

Vectors live in the embeddings table of their size; ``thread_key`` and ``user_key`` join the
embedder's ``model_id`` with the owner, so vectors of another model never mix in. Hybrid
search fuses the two rankings with reciprocal rank fusion (k = 60, ranks from 1): a message
missing from one ranking gains nothing from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from components.agent.tables import EMBEDDING_DIMENSIONS, embeddings_table
from core import UserError

if TYPE_CHECKING:
    from components.agent.client import Agent

RRF_K = 60
MAX_EMBED_CHARS = 10_000


def thread_key(model_id: str, thread_id: str) -> str:
    """The vector filter value of a thread."""
    return f"{model_id}|{thread_id}"


def user_key(model_id: str, user_id: str | None) -> str | None:
    """The vector filter value of a user (``None`` for anonymous threads)."""
    return None if user_id is None else f"{model_id}|{user_id}"


def _table(agent: Agent) -> str:
    embedder = agent.embedder
    if embedder is None:
        raise UserError(f'Agent "{agent.name}" has no embedder; vector search needs one.')
    if embedder.dimensions not in EMBEDDING_DIMENSIONS:
        raise UserError(
            f"Embedder {embedder.model_id!r} makes {embedder.dimensions}-dimensional vectors; "
            f"message vectors may have {', '.join(map(str, EMBEDDING_DIMENSIONS))} dimensions."
        )
    return embeddings_table(embedder.dimensions)


def fuse(rankings: Sequence[Sequence[dict[str, Any]]], limit: int) -> list[dict[str, Any]]:
    """Reciprocal rank fusion of rankings of documents (by ``_id``)."""
    scores: dict[str, float] = {}
    docs: dict[str, dict[str, Any]] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            scores[doc["_id"]] = scores.get(doc["_id"], 0.0) + 1.0 / (RRF_K + rank)
            docs.setdefault(doc["_id"], doc)
    ordered = sorted(scores, key=lambda i: -scores[i])[:limit]
    return [docs[i] for i in ordered]


async def search_messages(
    agent: Agent,
    ctx: Any,
    *,
    query: str,
    thread_id: str | None,
    user_id: str | None,
    limit: int = 10,
    mode: str = "text",
    before_order: int | None = None,
    target_thread_id: str | None = None,
) -> list[dict[str, Any]]:
    """Messages matching ``query`` (from an action), best first.

    With ``before_order``, the target thread's messages from that order on are left out.
    """
    target = target_thread_id or thread_id
    text_hits: list[dict[str, Any]] = []
    vector_hits: list[dict[str, Any]] = []
    if mode in ("text", "hybrid"):
        text_hits = await agent._call(
            ctx,
            "query",
            "search_text",
            {
                "query": query,
                "thread_id": thread_id,
                "user_id": user_id,
                "limit": limit,
                "before_order": before_order,
                "target_thread_id": target,
            },
        )
    if mode in ("vector", "hybrid"):
        table = _table(agent)
        embedder = agent.embedder
        if embedder is None:  # _table refused already; this keeps the type checker informed
            return []
        [vector] = await embedder.embed([query[:MAX_EMBED_CHARS]])
        model_id = embedder.model_id
        found = await agent._call(
            ctx,
            "action",
            "vector_search",
            {
                "table": table,
                "vector": vector,
                "thread_key": thread_key(model_id, thread_id) if thread_id else None,
                "user_key": user_key(model_id, user_id) if thread_id is None else None,
                "limit": limit * 2,
            },
        )
        vector_hits = [
            d
            for d in found
            if d["status"] == "success"
            and d["role"] in ("user", "assistant")
            and not (
                before_order is not None and d["thread_id"] == target and d["order"] >= before_order
            )
        ]
    if mode == "text":
        return text_hits
    if mode == "vector":
        return vector_hits[:limit]
    return fuse([vector_hits, text_hits], limit)


async def embed_messages(agent: Agent, ctx: Any, docs: Sequence[dict[str, Any]]) -> None:
    """Embed and store the vectors of user and assistant messages with text."""
    if agent.embedder is None:
        return
    wanted = [d for d in docs if d.get("text") and d["role"] in ("user", "assistant")]
    if not wanted:
        return
    table = _table(agent)
    embedder = agent.embedder
    vectors = await embedder.embed([d["text"][:MAX_EMBED_CHARS] for d in wanted])
    model_id = embedder.model_id
    for doc, vector in zip(wanted, vectors, strict=True):
        await agent._call(
            ctx,
            "mutation",
            "save_embedding",
            {
                "message_id": doc["_id"],
                "table": table,
                "vector": vector,
                "thread_key": thread_key(model_id, doc["thread_id"]),
                "user_key": user_key(model_id, doc.get("user_id")),
            },
        )
