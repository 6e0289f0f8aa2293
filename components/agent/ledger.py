"""Owns the usage ledger inside the component: one row per model call, and the totals.

Each saved assistant message that carries usage adds a row (tokens, and its cost when the
agent has a price table) keyed by thread and user, so totals per thread and per user are
index scans. Rows outlive their thread: they are the account of what was spent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def record(
    ctx: Any,
    thread: Mapping[str, Any],
    message_id: str,
    fields: Mapping[str, Any],
    cost: float | None,
) -> None:
    """Add the usage row of a saved message (nothing when it has no usage)."""
    usage = fields.get("usage")
    if not usage:
        return
    ctx.db.insert(
        "usage",
        {
            "thread_id": thread["_id"],
            "user_id": thread.get("user_id"),
            "agent_name": fields.get("agent_name"),
            "model": fields.get("model"),
            "message_id": message_id,
            "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"],
            "total_tokens": usage["total_tokens"],
            "cost": cost,
        },
    )


def totals(ctx: Any, *, thread_id: str | None, user_id: str | None) -> dict[str, Any]:
    """Tokens (and cost) summed over a thread's rows, or a user's."""
    if thread_id is not None:
        rows = ctx.db.query("usage").with_index("by_thread", lambda q: q.eq("thread_id", thread_id))
    else:
        rows = ctx.db.query("usage").with_index("by_user", lambda q: q.eq("user_id", user_id))
    summed: dict[str, Any] = {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "cost": None,
        "steps": 0,
    }
    for row in rows:
        summed["steps"] += 1
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            summed[key] += row[key]
        if row.get("cost") is not None:
            summed["cost"] = (summed["cost"] or 0.0) + row["cost"]
    return summed
