"""Owns tool approvals inside the component: requests, decisions and the one-time claim.

A step whose tool calls need approval saves the calls marked ``needs_approval``; each gets a
row here (``pending``). ``decide`` approves or denies one call; once every call of that step
is decided, exactly one resumer ``claim``s them (statuses become ``approved_done`` /
``denied_done``) and generation continues. Rows are in the database, so a restart between
the pause, the decision and the resume loses nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from components.agent.errors import ApprovalError


def request(
    ctx: Any, thread: Mapping[str, Any], message_id: str, fields: Mapping[str, Any]
) -> None:
    """Add a pending row for each call of a saved message that needs approval."""
    for call in fields.get("tool_calls") or ():
        if call.get("needs_approval"):
            ctx.db.insert(
                "approvals",
                {
                    "thread_id": thread["_id"],
                    "message_id": message_id,
                    "prompt_message_id": None,
                    "agent_name": fields.get("agent_name"),
                    "tool_call_id": call["id"],
                    "tool_name": call["name"],
                    "arguments": call.get("arguments") or {},
                    "status": "pending",
                    "reason": None,
                },
            )


def of_thread(ctx: Any, thread_id: str, status: str | None) -> list[dict[str, Any]]:
    """A thread's approval rows (of one status when given)."""

    def rng(q: Any) -> Any:
        q = q.eq("thread_id", thread_id)
        return q if status is None else q.eq("status", status)

    return list(ctx.db.query("approvals").with_index("by_thread_status", rng).collect())


def _of_message(ctx: Any, message_id: str) -> list[dict[str, Any]]:
    return list(
        ctx.db.query("approvals")
        .with_index("by_message", lambda q: q.eq("message_id", message_id))
        .collect()
    )


def decide(
    ctx: Any, tool_call_id: str, approved: bool, reason: str | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Approve or deny one pending call; returns its row and its step's rows.

    Raises:
        ApprovalError: no call with that id waits, or it was already decided.
    """
    row = (
        ctx.db.query("approvals")
        .with_index("by_call", lambda q: q.eq("tool_call_id", tool_call_id))
        .first()
    )
    if row is None:
        raise ApprovalError(f'No tool call "{tool_call_id}" waits for approval.')
    if row["status"] != "pending":
        decided = row["status"].removesuffix("_done")  # "_done": its resume has run too
        raise ApprovalError(f'Tool call "{tool_call_id}" was already {decided}.')
    ctx.db.patch(row["_id"], {"status": "approved" if approved else "denied", "reason": reason})
    return row, _of_message(ctx, row["message_id"])


def claim(ctx: Any, message_id: str) -> list[dict[str, Any]]:
    """The decided rows of a step, marked resumed; empty if undecided or already claimed."""
    rows = _of_message(ctx, message_id)
    if not rows or any(r["status"] not in ("approved", "denied") for r in rows):
        return []
    for row in rows:
        ctx.db.patch(row["_id"], {"status": f"{row['status']}_done"})
    return rows
