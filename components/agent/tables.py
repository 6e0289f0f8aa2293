"""Owns the agent component's tables: threads, messages, streams, deltas, usage, approvals.

Messages are ordered by ``(order, step_order)`` inside a thread; the ``by_thread`` index
serves listing, context and the ordering maxima, ``by_thread_status`` the status filters and
``by_status_lease`` the sweeper (pending rows whose lease ran out belong to a dead process).
Text search uses the core's search index on ``text``; vector search one embeddings table per
dimension (``embeddings_<d>``), whose ``thread_key`` / ``user_key`` fields combine the
embedding model with the owner, so one equality filter scopes a search.
"""

from __future__ import annotations

from typing import Any

from core import Schema, Table

EMBEDDING_DIMENSIONS = (128, 256, 384, 512, 768, 1024, 1536, 3072)
"""The vector sizes message embeddings may have (one table each)."""


def embeddings_table(dimensions: int) -> str:
    """The table holding message vectors of this size."""
    return f"embeddings_{dimensions}"


threads = (
    Table(
        {
            "user_id": str | None,
            "title": str | None,
            "summary": str | None,
            "status": str,
            "agent_name": str | None,
        }
    )
    .index("by_user", ["user_id"])
    .search_index("search_title", search_field="title", filter_fields=["user_id"])
)

messages = (
    Table(
        {
            "thread_id": str,
            "user_id": str | None,
            "order": int,
            "step_order": int,
            "role": str,
            "status": str,
            "text": str,
            "tool_calls": list[dict[str, Any]],
            "tool_call_id": str | None,
            "tool_name": str | None,
            "output": Any,
            "error": str | None,
            "usage": dict[str, int] | None,
            "model": str | None,
            "agent_name": str | None,
            "finish_reason": str | None,
            "lease_until": float | None,
            "embedding_id": str | None,
        }
    )
    .index("by_thread", ["thread_id", "order", "step_order"])
    .index("by_thread_status", ["thread_id", "status", "order", "step_order"])
    .index("by_status_lease", ["status", "lease_until"])
    .search_index("search_text", search_field="text", filter_fields=["thread_id", "user_id"])
)

streams = (
    Table(
        {
            "thread_id": str,
            "user_id": str | None,
            "order": int,
            "step_order": int,
            "status": str,
            "agent_name": str | None,
            "model": str | None,
            "cursor": int,
            "lease_until": float | None,
            "ended_at": float | None,
            "reason": str | None,
        }
    )
    .index("by_thread", ["thread_id", "order", "step_order"])
    .index("by_status_lease", ["status", "lease_until"])
)

deltas = Table({"stream_id": str, "start": int, "end": int, "parts": list[dict[str, Any]]}).index(
    "by_stream", ["stream_id", "start"]
)

usage = (
    Table(
        {
            "thread_id": str | None,
            "user_id": str | None,
            "agent_name": str | None,
            "model": str | None,
            "message_id": str | None,
            "prompt_tokens": int,
            "completion_tokens": int,
            "total_tokens": int,
            "cost": float | None,
        }
    )
    .index("by_thread", ["thread_id"])
    .index("by_user", ["user_id"])
)

approvals = (
    Table(
        {
            "thread_id": str,
            "message_id": str,
            "prompt_message_id": str | None,
            "agent_name": str | None,
            "tool_call_id": str,
            "tool_name": str,
            "arguments": dict[str, Any],
            "status": str,
            "reason": str | None,
        }
    )
    .index("by_call", ["tool_call_id"])
    .index("by_message", ["message_id"])
    .index("by_thread_status", ["thread_id", "status"])
)


def _embeddings(dimensions: int) -> Table:
    return (
        Table(
            {
                "message_id": str,
                "thread_key": str,
                "user_key": str | None,
                "vector": list[float],
            }
        )
        .index("by_message", ["message_id"])
        .vector_index(
            "by_vector",
            vector_field="vector",
            dimensions=dimensions,
            filter_fields=["thread_key", "user_key"],
        )
    )


_tables: dict[str, Any] = {
    "threads": threads,
    "messages": messages,
    "streams": streams,
    "deltas": deltas,
    "usage": usage,
    "approvals": approvals,
    **{embeddings_table(d): _embeddings(d) for d in EMBEDDING_DIMENSIONS},
}
schema = Schema(**_tables)
"""The component's schema."""
