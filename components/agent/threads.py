"""Owns thread documents and the message queries every other part shares (inside the component).

Helpers here take the component's ``ctx`` and run inside its queries and mutations: reading a
thread, the ordering maxima of a thread, inserting placed messages, and deleting a thread in
batches that survive large threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from components.agent.errors import MessageNotFoundError, ThreadNotFoundError
from components.agent.ordering import Position, place
from core import InvalidIdError

DELETE_BATCH = 200
"""Documents deleted per transaction when a thread is deleted."""

MESSAGE_DEFAULTS: dict[str, Any] = {
    "text": "",
    "tool_calls": [],
    "tool_call_id": None,
    "tool_name": None,
    "output": None,
    "error": None,
    "usage": None,
    "model": None,
    "agent_name": None,
    "finish_reason": None,
    "lease_until": None,
    "embedding_id": None,
}
_MESSAGE_FIELDS = frozenset((*MESSAGE_DEFAULTS, "role", "status"))


def get_thread(ctx: Any, thread_id: str) -> dict[str, Any]:
    """The thread, or ``ThreadNotFoundError``."""
    try:
        doc: dict[str, Any] | None = ctx.db.get(thread_id)
    except InvalidIdError:
        raise ThreadNotFoundError(thread_id) from None
    if doc is None or "status" not in doc or "title" not in doc:
        raise ThreadNotFoundError(thread_id)
    return doc


def get_message(ctx: Any, message_id: str, *, thread_id: str | None = None) -> dict[str, Any]:
    """The message, or ``MessageNotFoundError`` (also for a message of another thread)."""
    try:
        doc: dict[str, Any] | None = ctx.db.get(message_id)
    except InvalidIdError:
        raise MessageNotFoundError(message_id, thread_id=thread_id) from None
    if doc is None or "step_order" not in doc or "role" not in doc:
        raise MessageNotFoundError(message_id, thread_id=thread_id)
    if thread_id is not None and doc["thread_id"] != thread_id:
        raise MessageNotFoundError(message_id, thread_id=thread_id)
    return doc


def last_message(ctx: Any, thread_id: str) -> dict[str, Any] | None:
    """The thread's message with the greatest ``(order, step_order)``, any status."""
    found: dict[str, Any] | None = (
        ctx.db.query("messages")
        .with_index("by_thread", lambda q: q.eq("thread_id", thread_id))
        .order("desc")
        .first()
    )
    return found


def last_step_at(ctx: Any, thread_id: str, order: int) -> int | None:
    """The greatest ``step_order`` at ``order`` in the thread."""
    found = (
        ctx.db.query("messages")
        .with_index("by_thread", lambda q: q.eq("thread_id", thread_id).eq("order", order))
        .order("desc")
        .first()
    )
    return None if found is None else int(found["step_order"])


def position(doc: Mapping[str, Any]) -> Position:
    """A message's position."""
    return Position(order=int(doc["order"]), step_order=int(doc["step_order"]))


def insert_messages(
    ctx: Any,
    thread: Mapping[str, Any],
    batch: Sequence[Mapping[str, Any]],
    *,
    order: int | Literal["next"] | None = None,
    prompt: Position | None = None,
) -> list[str]:
    """Insert messages at the positions the ordering rules give; returns their ids."""
    thread_id = thread["_id"]
    # The thread's last message matters only to a user message or a batch with no anchor.
    needs_last = (
        order == "next"
        or (order is None and prompt is None)
        or any(m["role"] == "user" for m in batch)
    )
    last = last_message(ctx, thread_id) if needs_last else None
    positions = place(
        [m["role"] for m in batch],
        last=None if last is None else position(last),
        last_step_at=lambda o: last_step_at(ctx, thread_id, o),
        order=order,
        prompt=prompt,
    )
    ids = []
    for fields, where in zip(batch, positions, strict=True):
        doc = {**MESSAGE_DEFAULTS, "status": "success", **_known(fields)}
        doc.update(
            thread_id=thread_id,
            user_id=thread.get("user_id"),
            order=where.order,
            step_order=where.step_order,
        )
        ids.append(ctx.db.insert("messages", doc))
    return ids


def _known(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k in _MESSAGE_FIELDS}


def message_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Only the stored message fields of a mapping."""
    return _known(fields)


def delete_thread_batch(ctx: Any, thread_id: str, *, batch: int = DELETE_BATCH) -> bool:
    """Delete up to ``batch`` documents of the thread; whether everything is gone.

    Messages go first, then streams and approvals, the thread itself last.
    """
    budget = batch
    for doc in (
        ctx.db.query("messages")
        .with_index("by_thread", lambda q: q.eq("thread_id", thread_id))
        .take(budget)
    ):
        delete_message(ctx, doc)
        budget -= 1
    if budget <= 0:
        return False
    for stream in (
        ctx.db.query("streams")
        .with_index("by_thread", lambda q: q.eq("thread_id", thread_id))
        .take(budget)
    ):
        budget -= delete_stream_deltas(ctx, stream["_id"], budget)
        if budget <= 0:
            return False
        ctx.db.delete(stream["_id"])
        budget -= 1
    if budget <= 0:
        return False
    for row in (
        ctx.db.query("approvals")
        .with_index("by_thread_status", lambda q: q.eq("thread_id", thread_id))
        .take(budget)
    ):
        ctx.db.delete(row["_id"])
        budget -= 1
    if budget <= 0:
        return False
    if ctx.db.get(thread_id) is not None:
        ctx.db.delete(thread_id)
    return True


def delete_message(ctx: Any, doc: Mapping[str, Any]) -> None:
    """Delete a message and its embedding."""
    embedding = doc.get("embedding_id")
    if embedding and ctx.db.get(embedding) is not None:
        ctx.db.delete(embedding)
    ctx.db.delete(doc["_id"])


def delete_stream_deltas(ctx: Any, stream_id: str, limit: int) -> int:
    """Delete up to ``limit`` delta rows of a stream; returns how many went."""
    count = 0
    for row in (
        ctx.db.query("deltas")
        .with_index("by_stream", lambda q: q.eq("stream_id", stream_id))
        .take(limit)
    ):
        ctx.db.delete(row["_id"])
        count += 1
    return count
