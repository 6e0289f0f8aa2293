"""Owns a generation's writes inside the component: start, steps, failure, abort and sweeping.

A generation keeps exactly one ``pending`` assistant placeholder while it works; each saved
step replaces it (keeping its position) and, when more follows, appends a new one. Every
placeholder carries a lease (``lease_until``): the sweeper fails pending messages and
streams whose lease ran out, which is what a process killed mid-generation leaves behind.
An abort fails the placeholder at once (keeping the partial text found in the stream), and
the generating process notices at its next write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from components.agent import approvals, ledger, streams
from components.agent.ordering import Position
from components.agent.threads import (
    MESSAGE_DEFAULTS,
    get_message,
    get_thread,
    insert_messages,
    message_fields,
    position,
)

RESTARTING = "Restarting: a new generation took over this turn"
SWEPT = "The generating process stopped (its lease ran out)"


def pending_fields(agent_name: str | None, lease_until: float | None) -> dict[str, Any]:
    """A new pending placeholder."""
    return {
        "role": "assistant",
        "status": "pending",
        "agent_name": agent_name,
        "lease_until": lease_until,
    }


def pending_at(ctx: Any, thread_id: str, order: int | None) -> list[dict[str, Any]]:
    """The thread's pending messages (at ``order`` when given)."""

    def rng(q: Any) -> Any:
        q = q.eq("thread_id", thread_id).eq("status", "pending")
        return q.eq("order", order) if order is not None else q

    return list(ctx.db.query("messages").with_index("by_thread_status", rng).collect())


def fail_message(ctx: Any, doc: Mapping[str, Any], error: str, *, text: str | None = None) -> None:
    """Mark a message failed (keeping ``text`` when given and longer)."""
    patch: dict[str, Any] = {"status": "failed", "error": error, "lease_until": None}
    if text and len(text) >= len(doc.get("text") or ""):
        patch["text"] = text
    ctx.db.patch(doc["_id"], patch)


def start(
    ctx: Any,
    *,
    thread_id: str,
    prompt: str | None,
    prompt_message_id: str | None,
    agent_name: str | None,
    lease_until: float | None,
) -> dict[str, Any]:
    """Save the prompt (or find it), fail stale pending rows of its turn, add a placeholder."""
    thread = get_thread(ctx, thread_id)
    if prompt is not None:
        [prompt_message_id] = insert_messages(ctx, thread, [{"role": "user", "text": prompt}])
    anchor: Position | None = None
    if prompt_message_id is not None:
        prompt_doc = get_message(ctx, prompt_message_id, thread_id=thread_id)
        anchor = position(prompt_doc)
        for stale in pending_at(ctx, thread_id, anchor.order):
            fail_message(ctx, stale, RESTARTING)
        for row in _streams_at(ctx, thread_id, anchor.order):
            if row["status"] == "streaming":
                streams.end_stream(ctx, row, "aborted", reason=RESTARTING)
    [pending_id] = insert_messages(
        ctx, thread, [pending_fields(agent_name, lease_until)], prompt=anchor
    )
    pending = ctx.db.get(pending_id)
    return {
        "prompt_message_id": prompt_message_id,
        "pending_id": pending_id,
        "order": pending["order"],
        "step_order": pending["step_order"],
        "user_id": thread.get("user_id"),
    }


def _streams_at(ctx: Any, thread_id: str, order: int) -> list[dict[str, Any]]:
    return list(
        ctx.db.query("streams")
        .with_index("by_thread", lambda q: q.eq("thread_id", thread_id).eq("order", order))
        .collect()
    )


def _write_delta(
    ctx: Any,
    delta: Mapping[str, Any] | None,
    *,
    lease_until: float | None,
    create: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Write a delta (creating its stream first when asked); the stream row, or ``None``."""
    if delta is None:
        return None
    stream_id = delta.get("stream_id")
    if stream_id is None:
        if create is None:
            return None
        stream_id = streams.create_stream(ctx, {**create, "lease_until": lease_until})
    row: dict[str, Any] | None = ctx.db.get(stream_id)
    if row is None or row["status"] != "streaming":
        return row
    streams.append(ctx, row, int(delta["start"]), list(delta["parts"]), lease_until=lease_until)
    result: dict[str, Any] = ctx.db.get(stream_id)
    return result


def save_step(
    ctx: Any,
    *,
    pending_id: str,
    messages: Sequence[Mapping[str, Any]],
    more: bool,
    lease_until: float | None,
    delta: Mapping[str, Any] | None,
    create_stream: Mapping[str, Any] | None,
    cleanup_ref: Any,
    cleanup_delay: float,
    costs: Sequence[float | None] = (),
) -> dict[str, Any]:
    """Save a step in place of the placeholder; with ``more``, add the next placeholder.

    When the step is the last (``more`` false), the stream ends in this same transaction.
    Returns ``{"aborted": True}`` when the placeholder is no longer pending (an abort, a
    restart or a deleted thread): nothing is written then.
    """
    pending: dict[str, Any] | None = ctx.db.get(pending_id)
    if pending is None or pending.get("status") != "pending":
        return {"aborted": True, "ids": [], "stream_id": None}
    # Deleting a thread deletes its pending rows too, so the placeholder vouches for it.
    thread = {"_id": pending["thread_id"], "user_id": pending.get("user_id")}
    stream = _write_delta(ctx, delta, lease_until=lease_until, create=create_stream)
    if stream is not None and stream["status"] != "streaming":
        return {"aborted": True, "ids": [], "stream_id": stream["_id"]}
    ids: list[str] = []
    rest = list(messages)
    if rest:
        first = {**MESSAGE_DEFAULTS, "status": "success", **message_fields(rest.pop(0))}
        first["lease_until"] = None
        ctx.db.patch(pending_id, first)
        ids.append(pending_id)
    else:
        ctx.db.delete(pending_id)
    anchor = position(pending)
    batch = [*rest, *([pending_fields(pending.get("agent_name"), lease_until)] if more else [])]
    if batch:
        anchor = Position(order=anchor.order, step_order=anchor.step_order - (0 if ids else 1))
        ids += insert_messages(ctx, thread, batch, prompt=anchor)
    next_pending = ids.pop() if more else None
    for message_id, fields, cost in zip(
        ids, messages, [*costs, *[None] * len(messages)], strict=False
    ):
        ledger.record(ctx, thread, message_id, fields, cost)
        approvals.request(ctx, thread, message_id, fields)
    if not more and stream is not None:
        streams.end_stream(ctx, stream, "finished", cleanup_ref=cleanup_ref, delay=cleanup_delay)
    return {
        "aborted": False,
        "ids": ids,
        "pending_id": next_pending,
        "stream_id": None if stream is None else stream["_id"],
    }


def add_delta(
    ctx: Any,
    *,
    delta: Mapping[str, Any],
    create_stream: Mapping[str, Any] | None,
    lease_until: float | None,
    pending_id: str | None,
) -> dict[str, Any]:
    """Write stream parts; ``ok`` is false when the stream or the placeholder was aborted."""
    if pending_id is not None:
        pending = ctx.db.get(pending_id)
        if pending is None or pending.get("status") != "pending":
            return {"ok": False, "stream_id": delta.get("stream_id")}
        if lease_until is not None:
            ctx.db.patch(pending_id, {"lease_until": lease_until})
    row = _write_delta(ctx, delta, lease_until=lease_until, create=create_stream)
    if row is None:
        return {"ok": False, "stream_id": delta.get("stream_id")}
    return {"ok": row["status"] == "streaming", "stream_id": row["_id"]}


def fail(
    ctx: Any,
    *,
    pending_id: str | None,
    error: str,
    partial_text: str,
    aborted: bool,
    delta: Mapping[str, Any] | None,
    create_stream: Mapping[str, Any] | None,
    cleanup_ref: Any,
    cleanup_delay: float,
) -> None:
    """Finalise a generation that failed or was aborted: no pending row, no live stream."""
    if pending_id is not None:
        pending = ctx.db.get(pending_id)
        if pending is not None and pending.get("status") in ("pending", "failed"):
            fail_message(ctx, pending, pending.get("error") or error, text=partial_text)
    stream = _write_delta(ctx, delta, lease_until=None, create=create_stream)
    if stream is not None and stream["status"] == "streaming":
        streams.end_stream(
            ctx,
            stream,
            "aborted" if aborted else "failed",
            reason=error,
            cleanup_ref=cleanup_ref,
            delay=cleanup_delay,
        )


def abort(
    ctx: Any,
    *,
    thread_id: str | None,
    stream_id: str | None,
    order: int | None,
    reason: str,
    cleanup_ref: Any,
    cleanup_delay: float,
) -> int:
    """Abort streams and pending messages (of a thread, at an order, or one stream).

    The partial text of each aborted stream goes into its pending message. Returns how many
    streams and messages were stopped.
    """
    rows: list[dict[str, Any]]
    if stream_id is not None:
        row = ctx.db.get(stream_id)
        rows = [row] if row is not None else []
        thread_id = row["thread_id"] if row is not None else thread_id
        order = row["order"] if row is not None else order
    elif thread_id is not None:
        rows = [
            r
            for r in ctx.db.query("streams")
            .with_index("by_thread", lambda q: q.eq("thread_id", thread_id))
            .collect()
            if order is None or r["order"] == order
        ]
    else:
        rows = []
    stopped = 0
    texts: dict[int, str] = {}
    for row in rows:
        if row["status"] == "streaming":
            texts[row["order"]] = streams.partial_text(ctx, row["_id"])
            streams.end_stream(
                ctx, row, "aborted", reason=reason, cleanup_ref=cleanup_ref, delay=cleanup_delay
            )
            stopped += 1
    if thread_id is not None:
        for doc in pending_at(ctx, thread_id, order):
            fail_message(ctx, doc, f"aborted: {reason}", text=texts.get(doc["order"]))
            stopped += 1
    return stopped


def sweep(ctx: Any, *, cleanup_ref: Any, cleanup_delay: float, limit: int = 500) -> int:
    """Fail pending messages and streams whose lease ran out; returns how many.

    A swept stream's partial text goes into the pending message of its turn, as an abort's.
    """
    now = ctx.now
    count = 0
    texts: dict[tuple[str, int], str] = {}
    for row in (
        ctx.db.query("streams")
        .with_index("by_status_lease", lambda q: q.eq("status", "streaming").lt("lease_until", now))
        .take(limit)
    ):
        if row.get("lease_until") is None:
            continue
        texts[(row["thread_id"], row["order"])] = streams.partial_text(ctx, row["_id"])
        streams.end_stream(
            ctx, row, "failed", reason=SWEPT, cleanup_ref=cleanup_ref, delay=cleanup_delay
        )
        count += 1
    for doc in (
        ctx.db.query("messages")
        .with_index("by_status_lease", lambda q: q.eq("status", "pending").lt("lease_until", now))
        .take(limit)
    ):
        if doc.get("lease_until") is None:
            continue
        fail_message(ctx, doc, SWEPT, text=texts.get((doc["thread_id"], doc["order"])))
        count += 1
    return count
