"""Owns the agent component: its schema and the functions that are the only way in.

Tables are in ``tables.py``; what each function does lives in ``threads.py`` (threads and
placed messages), ``generations.py`` (a generation's writes, aborts, the sweeper) and
``streams.py`` (stream rows and deltas). These wrappers only check arguments and route.
App code uses the ``Agent`` class (``client.py``), not these functions directly.
"""

from __future__ import annotations

from typing import Any

from components.agent import approvals as approvals_module
from components.agent import generations, ledger, streams
from components.agent.directory import agent_of
from components.agent.errors import OrderError
from components.agent.history import sort_key
from components.agent.ordering import check_order
from components.agent.tables import schema
from components.agent.threads import (
    delete_message,
    delete_thread_batch,
    get_message,
    get_thread,
    insert_messages,
    message_fields,
    position,
)
from core import ActionCtx, Component, Crons, MutationCtx, QueryCtx, UserError

SWEEP_INTERVAL = 60.0
"""Seconds between sweeps for pending messages and streams left by dead processes."""

component = Component("agent", schema=schema)


# -- threads ----------------------------------------------------------------------------------


@component.mutation
def create_thread(
    ctx: MutationCtx,
    user_id: str | None = None,
    title: str | None = None,
    summary: str | None = None,
    agent_name: str | None = None,
) -> str:
    """Create a thread; returns its id."""
    return str(
        ctx.db.insert(
            "threads",
            {
                "user_id": user_id,
                "title": title,
                "summary": summary,
                "status": "active",
                "agent_name": agent_name,
            },
        )
    )


@component.query
def thread(ctx: QueryCtx, thread_id: str) -> dict[str, Any] | None:
    """A thread, or ``None``."""
    try:
        return get_thread(ctx, thread_id)
    except Exception:
        return None


@component.query
def list_threads(
    ctx: QueryCtx,
    user_id: str | None,
    cursor: str | None = None,
    num_items: int = 100,
    order: str = "desc",
) -> dict[str, Any]:
    """A user's threads, newest first by default."""
    page = (
        ctx.db.query("threads")
        .with_index("by_user", lambda q: q.eq("user_id", user_id))
        .order("asc" if order == "asc" else "desc")
        .paginate(cursor, num_items)
    )
    return {"page": page.page, "continue_cursor": page.continue_cursor, "is_done": page.is_done}


@component.mutation
def update_thread(ctx: MutationCtx, thread_id: str, patch: dict[str, Any]) -> dict[str, Any]:
    """Change a thread's ``title``, ``summary``, ``status`` or ``user_id``."""
    get_thread(ctx, thread_id)
    allowed = {k: v for k, v in patch.items() if k in ("title", "summary", "status", "user_id")}
    ctx.db.patch(thread_id, allowed)
    return get_thread(ctx, thread_id)


@component.mutation
def delete_thread(ctx: MutationCtx, thread_id: str, batch: int = 200) -> bool:
    """Delete a thread with its messages and streams, a batch per transaction.

    The next batch is scheduled at once until all is gone; returns whether it already is.
    """
    done = delete_thread_batch(ctx, thread_id, batch=batch)
    if not done:
        ctx.scheduler.run_after(0, delete_thread, {"thread_id": thread_id, "batch": batch})
    return done


# -- messages ---------------------------------------------------------------------------------


@component.mutation
def save_messages(
    ctx: MutationCtx,
    thread_id: str,
    messages: list[dict[str, Any]],
    order: int | str | None = None,
    prompt_message_id: str | None = None,
) -> list[str]:
    """Save messages at the positions the ordering rules give (one transaction)."""
    if order is not None and order != "next":
        check_order(order)
    if order is not None and prompt_message_id is not None:
        raise OrderError("order and prompt_message_id cannot both be given.")
    thread_doc = get_thread(ctx, thread_id)
    anchor = None
    if prompt_message_id is not None:
        anchor = position(get_message(ctx, prompt_message_id, thread_id=thread_id))
    where: Any = order
    return insert_messages(
        ctx, thread_doc, [message_fields(m) for m in messages], order=where, prompt=anchor
    )


@component.mutation
def update_message(ctx: MutationCtx, message_id: str, patch: dict[str, Any]) -> dict[str, Any]:
    """Change a message's ``text``, ``status``, ``error``, ``tool_calls`` or ``output``."""
    get_message(ctx, message_id)
    allowed = {"text", "status", "error", "tool_calls", "output"}
    unknown = sorted(set(patch) - allowed)
    if unknown:
        raise UserError(f"update_message cannot change {unknown}; it changes {sorted(allowed)}.")
    if patch.get("status") not in (None, "pending", "success", "failed"):
        raise UserError(f"A message status is pending, success or failed, not {patch['status']!r}.")
    ctx.db.patch(message_id, patch)
    return get_message(ctx, message_id)


@component.mutation
def delete_messages(ctx: MutationCtx, message_ids: list[str]) -> list[str]:
    """Delete messages (and their vectors); returns the ids that existed."""
    deleted = []
    for message_id in message_ids:
        try:
            doc = get_message(ctx, message_id)
        except Exception:
            continue
        delete_message(ctx, doc)
        deleted.append(message_id)
    return deleted


@component.query
def message(ctx: QueryCtx, message_id: str) -> dict[str, Any] | None:
    """A message, or ``None``."""
    try:
        return get_message(ctx, message_id)
    except Exception:
        return None


@component.query
def list_messages(
    ctx: QueryCtx,
    thread_id: str,
    cursor: str | None = None,
    num_items: int = 100,
    statuses: list[str] | None = None,
    order: str = "asc",
) -> dict[str, Any]:
    """A page of a thread's messages by ``(order, step_order)``."""
    query = ctx.db.query("messages").with_index("by_thread", lambda q: q.eq("thread_id", thread_id))
    if statuses is not None:
        wanted = set(statuses)
        query = query.filter(lambda doc: doc["status"] in wanted)
    page = query.order("desc" if order == "desc" else "asc").paginate(cursor, num_items)
    return {"page": page.page, "continue_cursor": page.continue_cursor, "is_done": page.is_done}


@component.query
def context_messages(
    ctx: QueryCtx, thread_id: str, upto_order: int | None = None, recent: int = 100
) -> list[dict[str, Any]]:
    """The latest ``recent`` successful messages up to ``upto_order``, oldest first."""
    return _recent(ctx, thread_id, upto_order, recent)


def _recent(
    ctx: QueryCtx, thread_id: str, upto_order: int | None, recent: int
) -> list[dict[str, Any]]:
    if recent <= 0:
        return []

    def rng(q: Any) -> Any:
        q = q.eq("thread_id", thread_id).eq("status", "success")
        return q if upto_order is None else q.lte("order", upto_order)

    found = ctx.db.query("messages").with_index("by_thread_status", rng).order("desc").take(recent)
    return sorted(found, key=sort_key)


@component.query
def search_text(
    ctx: QueryCtx,
    query: str,
    thread_id: str | None = None,
    user_id: str | None = None,
    limit: int = 10,
    before_order: int | None = None,
    target_thread_id: str | None = None,
) -> list[dict[str, Any]]:
    """Full-text search over messages of a thread or of all a user's threads.

    With ``before_order``, messages of the target thread (``target_thread_id``, else
    ``thread_id``) at or after that order are left out; other threads' are not (agent#256).
    """
    target = target_thread_id or thread_id
    if not query.strip():
        return []

    def search(q: Any) -> Any:
        q = q.search("text", query)
        if thread_id is not None:
            q = q.eq("thread_id", thread_id)
        if user_id is not None:
            q = q.eq("user_id", user_id)
        return q

    hits = []
    for doc in ctx.db.query("messages").with_search_index("search_text", search).take(limit * 4):
        if doc["status"] != "success" or doc["role"] not in ("user", "assistant"):
            continue
        if before_order is not None and doc["thread_id"] == target and doc["order"] >= before_order:
            continue
        hits.append(doc)
        if len(hits) >= limit:
            break
    return hits


@component.query
def messages_by_ids(ctx: QueryCtx, ids: list[str]) -> list[dict[str, Any]]:
    """Messages by id (missing ones left out)."""
    found = []
    for message_id in ids:
        doc = ctx.db.get(message_id)
        if doc is not None and "step_order" in doc:
            found.append(doc)
    return found


@component.mutation
def save_embedding(
    ctx: MutationCtx,
    message_id: str,
    table: str,
    vector: list[float],
    thread_key: str,
    user_key: str | None = None,
) -> str:
    """Store a message's vector (replacing an older one)."""
    doc = get_message(ctx, message_id)
    old = doc.get("embedding_id")
    if old and ctx.db.get(old) is not None:
        ctx.db.delete(old)
    embedding_id = ctx.db.insert(
        table,
        {
            "message_id": message_id,
            "thread_key": thread_key,
            "user_key": user_key,
            "vector": vector,
        },
    )
    ctx.db.patch(message_id, {"embedding_id": embedding_id})
    return str(embedding_id)


@component.action
async def vector_search(
    ctx: ActionCtx,
    table: str,
    vector: list[float],
    thread_key: str | None = None,
    user_key: str | None = None,
    limit: int = 10,
) -> list[dict[str, Any]]:
    """Messages nearest to ``vector`` in a thread (``thread_key``) or a user's threads."""

    def scope(q: Any) -> Any:
        return (
            q.eq("thread_key", thread_key) if thread_key is not None else q.eq("user_key", user_key)
        )

    hits = await ctx.vector_search(table, "by_vector", vector=vector, limit=limit, filter=scope)
    docs: list[dict[str, Any]] = await ctx.run_query(
        messages_for_embeddings, {"table": table, "ids": [h["_id"] for h in hits]}
    )
    scores = {h["_id"]: h["_score"] for h in hits}
    for doc in docs:
        doc["_score"] = scores.get(doc.get("embedding_id"), 0.0)
    return docs


@component.query
def messages_for_embeddings(ctx: QueryCtx, table: str, ids: list[str]) -> list[dict[str, Any]]:
    """The messages that own these embedding rows."""
    found = []
    for embedding_id in ids:
        row = ctx.db.get(embedding_id)
        if row is None:
            continue
        doc = ctx.db.get(row["message_id"])
        if doc is not None:
            found.append(doc)
    return found


# -- generations ------------------------------------------------------------------------------


@component.mutation
def start_generation(
    ctx: MutationCtx,
    thread_id: str,
    prompt: str | None = None,
    prompt_message_id: str | None = None,
    agent_name: str | None = None,
    lease: float = 600.0,
    recent: int = 100,
) -> dict[str, Any]:
    """Save the prompt and a pending placeholder; fail stale pending rows of the turn.

    The answer carries the generation's recent context (``context``) and the prompt's text,
    read in the same transaction.
    """
    started = generations.start(
        ctx,
        thread_id=thread_id,
        prompt=prompt,
        prompt_message_id=prompt_message_id,
        agent_name=agent_name,
        lease_until=ctx.now + lease,
    )
    started["context"] = _recent(ctx, thread_id, started["order"], recent)
    prompt_id = started["prompt_message_id"]
    started["prompt_text"] = (
        prompt
        if prompt is not None
        else (None if prompt_id is None else get_message(ctx, prompt_id).get("text"))
    )
    return started


@component.mutation
def save_step(
    ctx: MutationCtx,
    pending_id: str,
    messages: list[dict[str, Any]],
    more: bool,
    lease: float = 600.0,
    delta: dict[str, Any] | None = None,
    create_stream: dict[str, Any] | None = None,
    costs: list[float | None] | None = None,
    cleanup_delay: float = streams.CLEANUP_DELAY,
) -> dict[str, Any]:
    """Save a generation's step (see ``generations.save_step``)."""
    return generations.save_step(
        ctx,
        pending_id=pending_id,
        messages=messages,
        more=more,
        lease_until=ctx.now + lease,
        delta=delta,
        create_stream=create_stream,
        cleanup_ref=cleanup_stream,
        cleanup_delay=cleanup_delay,
        costs=costs or (),
    )


@component.mutation
def add_delta(
    ctx: MutationCtx,
    delta: dict[str, Any],
    create_stream: dict[str, Any] | None = None,
    pending_id: str | None = None,
    lease: float = 600.0,
) -> dict[str, Any]:
    """Write stream parts; ``ok`` false means the generation was aborted."""
    return generations.add_delta(
        ctx,
        delta=delta,
        create_stream=create_stream,
        lease_until=ctx.now + lease,
        pending_id=pending_id,
    )


@component.mutation
def fail_generation(
    ctx: MutationCtx,
    pending_id: str | None,
    error: str,
    partial_text: str = "",
    aborted: bool = False,
    delta: dict[str, Any] | None = None,
    create_stream: dict[str, Any] | None = None,
    cleanup_delay: float = streams.CLEANUP_DELAY,
) -> None:
    """Finalise a failed or aborted generation (see ``generations.fail``)."""
    generations.fail(
        ctx,
        pending_id=pending_id,
        error=error,
        partial_text=partial_text,
        aborted=aborted,
        delta=delta,
        create_stream=create_stream,
        cleanup_ref=cleanup_stream,
        cleanup_delay=cleanup_delay,
    )


@component.mutation
def abort(
    ctx: MutationCtx,
    thread_id: str | None = None,
    stream_id: str | None = None,
    order: int | None = None,
    reason: str = "aborted by a client",
    cleanup_delay: float = streams.CLEANUP_DELAY,
) -> int:
    """Abort a thread's (or one stream's) generation; it stops at its next write."""
    return generations.abort(
        ctx,
        thread_id=thread_id,
        stream_id=stream_id,
        order=order,
        reason=reason,
        cleanup_ref=cleanup_stream,
        cleanup_delay=cleanup_delay,
    )


@component.query
def stream_deltas(ctx: QueryCtx, thread_id: str, cursor: str | None = None) -> dict[str, Any]:
    """A thread's streams and the deltas after ``cursor`` (subscribe to follow live)."""
    return streams.read(ctx, thread_id, cursor)


@component.internal_mutation
def cleanup_stream(ctx: MutationCtx, stream_id: str) -> None:
    """Delete an ended stream's deltas and row (rescheduling itself for big streams)."""
    if not streams.cleanup(ctx, stream_id):
        ctx.scheduler.run_after(0, cleanup_stream, {"stream_id": stream_id})


@component.mutation
def sweep(ctx: MutationCtx) -> int:
    """Fail pending messages and streams whose lease ran out (a dead process's leftovers)."""
    return generations.sweep(ctx, cleanup_ref=cleanup_stream, cleanup_delay=streams.CLEANUP_DELAY)


Crons.of(component).interval("sweep", sweep, seconds=SWEEP_INTERVAL)


# -- usage and approvals ----------------------------------------------------------------------


@component.query
def usage_totals(
    ctx: QueryCtx, thread_id: str | None = None, user_id: str | None = None
) -> dict[str, Any]:
    """Tokens (and cost) used in a thread, or by a user across threads."""
    return ledger.totals(ctx, thread_id=thread_id, user_id=user_id)


@component.query
def approvals(
    ctx: QueryCtx, thread_id: str, status: str | None = "pending"
) -> list[dict[str, Any]]:
    """A thread's tool approvals (pending ones by default)."""
    return approvals_module.of_thread(ctx, thread_id, status)


@component.mutation
def decide_approval(
    ctx: MutationCtx,
    tool_call_id: str,
    approved: bool,
    reason: str | None = None,
    resume_agent: str | None = None,
) -> dict[str, Any]:
    """Approve or deny a pending tool call; reports whether its message's calls are all decided."""
    row, siblings = approvals_module.decide(ctx, tool_call_id, approved, reason)
    ready = all(s["status"] != "pending" for s in siblings)
    if ready and resume_agent is not None:
        # Durable: the resume is a scheduled job, so it survives a restart before it runs.
        ctx.scheduler.run_after(
            0,
            resume_approvals,
            {
                "agent_name": resume_agent,
                "thread_id": row["thread_id"],
                "message_id": row["message_id"],
            },
        )
    return {
        "thread_id": row["thread_id"],
        "message_id": row["message_id"],
        "ready": ready,
        "approvals": siblings,
    }


@component.mutation
def claim_approvals(ctx: MutationCtx, message_id: str) -> list[dict[str, Any]]:
    """Mark a message's decided approvals as resumed (exactly one resumer gets them)."""
    return approvals_module.claim(ctx, message_id)


@component.internal_action
async def resume_approvals(
    ctx: ActionCtx, agent_name: str, thread_id: str, message_id: str
) -> dict[str, Any] | None:
    """Resume a generation whose approvals were all decided (scheduled by a mutation)."""
    agent = agent_of(ctx, agent_name)
    result = await agent.resume(ctx, thread_id=thread_id, message_id=message_id)
    return None if result is None else _summary(result)


@component.action
async def generate_text_step(
    ctx: ActionCtx,
    agent_name: str,
    thread_id: str,
    prompt: str | None = None,
    prompt_message_id: str | None = None,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """``generate_text`` as a function (a workflow step): ``agent.text_step`` is its handle."""
    agent = agent_of(ctx, agent_name)
    result = await agent.generate_text(
        ctx,
        thread_id=thread_id,
        prompt=prompt,
        prompt_message_id=prompt_message_id,
        max_steps=max_steps,
    )
    return _summary(result)


def _summary(result: Any) -> dict[str, Any]:
    return {
        "text": result.text,
        "message_id": result.message_id,
        "prompt_message_id": result.prompt_message_id,
        "order": result.order,
        "finish_reason": result.finish_reason,
        "total_tokens": result.usage.total_tokens,
    }
