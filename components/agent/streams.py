"""Owns persisted streams: stream rows, delta rows, cursors, abort and cleanup.

A stream row (``streams``) exists per streamed generation, at the position of its first
message, with a status ``streaming`` → ``finished`` | ``aborted`` | ``failed``. Its parts are
written as delta rows ``{stream_id, start, end, parts}`` with contiguous ``[start, end)``
ranges (``end - start == len(parts)``), so a follower resumes from the last ``end`` it saw
and notices a gap. ``stream_deltas`` is a plain query: subscribe to it and every write wakes
the follower. Finished streams' rows are deleted after a delay.

A cursor is ``"<stream id>:<end>,<stream id>:<end>,..."``: the ends a follower has read, one
per stream, usable verbatim as an SSE ``Last-Event-ID``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from components.agent.parts import Part, last_step_text, parts_text
from components.agent.threads import delete_stream_deltas

CLEANUP_DELAY = 300.0
"""Seconds a finished or aborted stream's deltas are kept (late followers catch up)."""
LIST_LIMIT = 20
"""Streams ``stream_deltas`` reports per thread (the newest)."""
DELTA_LIMIT = 1000
"""Delta rows ``stream_deltas`` returns per call (call again with the new cursor)."""
CLEANUP_BATCH = 1000
"""Delta rows deleted per transaction by the cleanup."""

ENDED = ("finished", "aborted", "failed")


def parse_cursor(cursor: str | None) -> dict[str, int]:
    """A cursor's ends by stream id (``{}`` for ``None`` or an empty or malformed one)."""
    ends: dict[str, int] = {}
    for item in (cursor or "").split(","):
        stream_id, sep, end = item.strip().rpartition(":")
        if sep and stream_id and end.isdigit():
            ends[stream_id] = int(end)
    return ends


def format_cursor(ends: Mapping[str, int]) -> str:
    """The cursor for these ends."""
    return ",".join(f"{stream_id}:{end}" for stream_id, end in sorted(ends.items()))


def stream_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A stream row as ``stream_deltas`` reports it."""
    return {
        "stream_id": doc["_id"],
        "thread_id": doc["thread_id"],
        "order": doc["order"],
        "step_order": doc["step_order"],
        "status": doc["status"],
        "agent_name": doc.get("agent_name"),
        "model": doc.get("model"),
        "cursor": doc["cursor"],
        "reason": doc.get("reason"),
    }


def create_stream(ctx: Any, fields: Mapping[str, Any]) -> str:
    """Insert a ``streaming`` row."""
    return str(
        ctx.db.insert(
            "streams",
            {
                "thread_id": fields["thread_id"],
                "user_id": fields.get("user_id"),
                "order": fields["order"],
                "step_order": fields["step_order"],
                "status": "streaming",
                "agent_name": fields.get("agent_name"),
                "model": fields.get("model"),
                "cursor": 0,
                "lease_until": fields.get("lease_until"),
            },
        )
    )


def append(
    ctx: Any,
    stream: Mapping[str, Any],
    start: int,
    parts: list[Part],
    *,
    lease_until: float | None = None,
) -> int:
    """Write one delta row at ``start`` (which must be the stream's cursor); returns the end.

    Raises:
        ValueError: ``start`` is not the stream's cursor (a gap or an overlap).
    """
    if start != stream["cursor"]:
        raise ValueError(
            f'delta of stream "{stream["_id"]}" starts at {start}, its cursor is {stream["cursor"]}'
        )
    end = start + len(parts)
    if parts:
        ctx.db.insert(
            "deltas", {"stream_id": stream["_id"], "start": start, "end": end, "parts": parts}
        )
    patch: dict[str, Any] = {"cursor": end}
    if lease_until is not None:
        patch["lease_until"] = lease_until
    ctx.db.patch(stream["_id"], patch)
    return end


def end_stream(
    ctx: Any,
    stream: Mapping[str, Any],
    status: str,
    *,
    reason: str | None = None,
    cleanup_ref: Any = None,
    delay: float = CLEANUP_DELAY,
) -> None:
    """Mark a stream ended and schedule the deletion of its deltas."""
    ctx.db.patch(
        stream["_id"],
        {"status": status, "ended_at": ctx.now, "reason": reason, "lease_until": None},
    )
    if cleanup_ref is not None:
        ctx.scheduler.run_after(delay, cleanup_ref, {"stream_id": stream["_id"]})


def all_parts(ctx: Any, stream_id: str) -> list[Part]:
    """Every part written so far, in order."""
    parts: list[Part] = []
    for row in ctx.db.query("deltas").with_index(
        "by_stream", lambda q: q.eq("stream_id", stream_id)
    ):
        parts.extend(row["parts"])
    return parts


def partial_text(ctx: Any, stream_id: str) -> str:
    """The text of the stream's last step so far (what an abort keeps)."""
    return last_step_text(all_parts(ctx, stream_id))


def read(ctx: Any, thread_id: str, cursor: str | None) -> dict[str, Any]:
    """The thread's streams and the deltas after ``cursor`` (see the module docstring)."""
    ends = parse_cursor(cursor)
    rows = (
        ctx.db.query("streams")
        .with_index("by_thread", lambda q: q.eq("thread_id", thread_id))
        .order("desc")
        .take(LIST_LIMIT)
    )
    rows.reverse()
    deltas: list[dict[str, Any]] = []
    budget = DELTA_LIMIT
    complete = True
    for row in rows:
        stream_id = row["_id"]
        start = ends.get(stream_id, 0)
        if budget <= 0:
            complete = False
            break
        found = (
            ctx.db.query("deltas")
            .with_index(
                "by_stream", lambda q, s=stream_id, b=start: q.eq("stream_id", s).gte("start", b)
            )
            .take(budget + 1)
        )
        if len(found) > budget:
            found = found[:budget]
            complete = False
        for delta in found:
            deltas.append(
                {
                    "stream_id": stream_id,
                    "start": delta["start"],
                    "end": delta["end"],
                    "parts": delta["parts"],
                    # The row's text deltas joined: what a text-only follower appends.
                    "text": parts_text(delta["parts"]),
                }
            )
            ends[stream_id] = delta["end"]
        budget -= len(found)
        ends.setdefault(stream_id, start)
    known = {row["_id"] for row in rows}
    cursor_ends = {k: v for k, v in ends.items() if k in known}
    done = complete and all(row["status"] in ENDED for row in rows)
    return {
        "streams": [stream_view(row) for row in rows],
        "deltas": deltas,
        "cursor": format_cursor(cursor_ends),
        "done": done,
    }


def cleanup(ctx: Any, stream_id: str) -> bool:
    """Delete a batch of an ended stream's deltas, then the row; whether all is gone."""
    doc = ctx.db.get(stream_id)
    if doc is None:
        return True
    deleted = delete_stream_deltas(ctx, stream_id, CLEANUP_BATCH)
    if deleted >= CLEANUP_BATCH:
        return False
    ctx.db.delete(stream_id)
    return True
