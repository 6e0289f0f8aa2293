"""Owns exposing an agent: ``expose(agent)`` registers its server-side functions and routes.

``expose(agent)`` (what ``agent.expose()`` calls) adds internal functions to the agent's app —
thread ownership checks, sending a message and scheduling the reply, following the reply's
persisted stream, stopping it — and a route factory, so ``capsule serve`` serves the agent
under ``/agents/<name>/...`` (``components.serving.endpoints``) and, with the ``openai``
protocol, at ``/v1/chat/completions`` (``components.serving.openai_routes``).

Every function checks ownership through ``ctx.auth``: a thread belongs to the user who created
it (the token's ``sub``, or nobody for anonymous callers), and any other caller is told the
thread does not exist (a 404). The reply runs as a scheduled action, so it survives the client
going away; followers read the persisted deltas, so any server process sharing the database
can serve any follower.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from components.serving.errors import ServingError, ThreadNotFoundError
from core import ActionCtx, App, FunctionRef, MutationCtx, QueryCtx, UserError, run_function

logger = logging.getLogger("capsule.serving")

PROTOCOLS = frozenset({"capsule", "vercel", "openai"})
"""What ``expose`` can serve: Capsule's own SSE events, the Vercel AI SDK UI message stream,
and the OpenAI chat completions endpoint."""
RECENT_MESSAGES = 50
"""Messages read (newest first) to find one turn's replies."""
HISTORY_LIMIT = 1000
"""Messages ``GET .../messages`` returns at most."""


def user_id_of(ctx: QueryCtx | MutationCtx | ActionCtx) -> str | None:
    """The caller's user id: the token's subject, or ``None`` for anonymous callers."""
    identity = ctx.auth.get_user_identity()
    return None if identity is None else identity.subject


def message_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A stored message as the endpoints send it."""
    return {
        "id": doc["_id"],
        "order": doc["order"],
        "step_order": doc["step_order"],
        "role": doc["role"],
        "status": doc["status"],
        "text": doc.get("text") or "",
        "tool_calls": doc.get("tool_calls") or [],
        "tool_name": doc.get("tool_name"),
        "error": doc.get("error"),
        "finish_reason": doc.get("finish_reason"),
    }


def turn_outcome(messages: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Whether one turn's reply is over, and its text, status, usage and finish reason.

    ``messages`` are the turn's messages (one ``order``): the user's prompt at step 0, then
    the assistant's and tools' steps. The reply is over once an assistant message exists
    and none is pending. Usage adds up every assistant step; the text is the last step's.
    """
    replies = [m for m in messages if m["role"] in ("assistant", "tool")]
    replies.sort(key=lambda m: m["step_order"])
    assistants = [m for m in replies if m["role"] == "assistant"]
    done = bool(assistants) and all(m["status"] != "pending" for m in replies)
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for message in assistants:
        for key in usage:
            usage[key] += int((message.get("usage") or {}).get(key) or 0)
    last = assistants[-1] if assistants else None
    failed = [m for m in assistants if m["status"] == "failed"]
    return {
        "done": done,
        "status": ("failed" if failed else "success") if done else "pending",
        "text": (last.get("text") or "") if last is not None else "",
        "error": failed[-1].get("error") if failed else None,
        "finish_reason": (last.get("finish_reason") if last is not None else None),
        "usage": usage,
        "message_id": last["_id"] if last is not None else None,
    }


@dataclass(slots=True, kw_only=True)
class ExposedAgent:
    """One exposed agent: its name, route prefix, protocols and server-side functions."""

    name: str
    """The agent's name: its URL segment and its ``model`` on ``/v1/chat/completions``."""
    prefix: str
    """The route prefix (``/agents/<name>`` by default)."""
    protocols: frozenset[str]
    """The protocols served (a subset of ``PROTOCOLS``)."""
    refs: dict[str, FunctionRef[Any, Any]] = field(default_factory=dict)
    """The registered internal functions by role (``send``, ``follow``, ``stop``, ...)."""


class AgentPort:
    """The calls serving makes into one agent, in one place.

    Uses the ``Agent`` client's methods DESIGN.md names, and the agent component's exported
    functions (through ``run_function``) for the reads the client does not offer.
    """

    def __init__(self, agent: Any):
        self.agent = agent
        self.handle = agent.handle

    def thread(self, ctx: Any, thread_id: str) -> dict[str, Any]:
        """The thread if the caller owns it.

        Raises:
            ThreadNotFoundError: it does not exist or is another user's.
        """
        try:
            doc = run_function(ctx, "query", self.handle.thread, {"thread_id": thread_id})
        except Exception:  # a malformed id, or an id of another table: the same 404
            doc = None
        if doc is None or doc.get("user_id") != user_id_of(ctx):
            raise ThreadNotFoundError(thread_id)
        return dict(doc)

    def recent(self, ctx: Any, thread_id: str, num_items: int) -> list[dict[str, Any]]:
        """The thread's newest messages, newest first."""
        page = run_function(
            ctx,
            "query",
            self.handle.list_messages,
            {"thread_id": thread_id, "num_items": num_items, "order": "desc"},
        )
        return list(page["page"])

    def message(self, ctx: Any, message_id: str) -> dict[str, Any]:
        """A message by id."""
        doc = run_function(ctx, "query", self.handle.message, {"message_id": message_id})
        if doc is None:
            raise ServingError(f'Message "{message_id}" vanished right after it was saved.')
        return dict(doc)


def _register_reads(app: App, agent: Any, exposed: ExposedAgent, port: AgentPort) -> None:
    """Register the exposed agent's internal queries on ``app``."""

    def thread(ctx: QueryCtx, thread_id: str) -> dict[str, Any]:
        doc = port.thread(ctx, thread_id)
        return {"thread_id": doc["_id"], "title": doc.get("title"), "user_id": doc.get("user_id")}

    def threads(ctx: QueryCtx, num_items: int = 100) -> list[dict[str, Any]]:
        page = agent.list_threads(ctx, user_id=user_id_of(ctx), num_items=num_items)
        rows = page.page if hasattr(page, "page") else page["page"]
        return [{"thread_id": t["_id"], "title": t.get("title")} for t in rows]

    def messages(ctx: QueryCtx, thread_id: str) -> list[dict[str, Any]]:
        port.thread(ctx, thread_id)
        newest = port.recent(ctx, thread_id, HISTORY_LIMIT)
        return [message_view(m) for m in reversed(newest)]

    def follow(
        ctx: QueryCtx,
        thread_id: str,
        cursor: str | None = None,
        order: int | None = None,
        reply_job: str | None = None,
    ) -> dict[str, Any]:
        port.thread(ctx, thread_id)
        found = dict(agent.stream_deltas(ctx, thread_id=thread_id, cursor=cursor))
        recent = port.recent(ctx, thread_id, RECENT_MESSAGES)
        # A turn is over once none of its messages is pending: the agent ends a stream and
        # saves the final message in one transaction, so this also covers streams whose
        # row is not marked ended.
        found["busy_orders"] = sorted({m["order"] for m in recent if m["status"] == "pending"})
        if order is not None:
            outcome = turn_outcome(m for m in recent if m["order"] == order)
            if reply_job is not None and not outcome["done"] and outcome["message_id"] is None:
                outcome = _unstarted(ctx, reply_job, outcome)
            found["outcome"] = outcome
        return found

    for fn in (thread, threads, messages, follow):
        name = f"agent_{exposed.name}.{fn.__name__}"
        exposed.refs[fn.__name__] = app.internal_query(name=name)(fn)


REPLY_OVER = ("success", "failed", "canceled")
"""States of the reply's scheduled job once it has stopped running (it never leaves them)."""

REPLY_NOT_STARTED = "The reply could not start (the server's log says why)."


def _unstarted(ctx: QueryCtx, reply_job: str, outcome: dict[str, Any]) -> dict[str, Any]:
    """A turn whose reply action ended without an assistant message: over, and failed.

    The action saves its placeholder before anything else, so when its job has stopped
    (returned, raised, or its runner died and the scheduler failed it) and no assistant
    message exists, none will come: without this a follower would wait for good.
    """
    job = ctx.db.system.get(reply_job)
    if job is None or job["state"] not in REPLY_OVER:
        return outcome
    return {**outcome, "done": True, "status": "failed", "error": REPLY_NOT_STARTED}


def _register_writes(app: App, agent: Any, exposed: ExposedAgent, port: AgentPort) -> None:
    """Register the exposed agent's internal mutations and its reply action on ``app``."""

    async def reply(ctx: ActionCtx, thread_id: str, prompt_message_id: str) -> None:
        try:
            async with agent.stream_text(
                ctx, thread_id=thread_id, prompt_message_id=prompt_message_id
            ) as stream:
                async for _ in stream:
                    pass
        except Exception:
            # The agent has already marked the reply failed (no message is left pending), or
            # it failed before saving its placeholder: the job's state tells followers then.
            logger.exception("agent %s: the reply in thread %s failed", exposed.name, thread_id)
            raise

    reply_ref = app.internal_action(name=f"agent_{exposed.name}.reply")(reply)

    def create(ctx: MutationCtx, title: str | None = None) -> str:
        return str(agent.create_thread(ctx, user_id=user_id_of(ctx), title=title))

    def send(
        ctx: MutationCtx,
        text: str,
        thread_id: str | None = None,
        history: list[dict[str, str]] | None = None,
        title: str | None = None,
    ) -> dict[str, Any]:
        if thread_id is None:
            thread_id = str(agent.create_thread(ctx, user_id=user_id_of(ctx), title=title))
            for item in history or []:
                if item.get("role") in ("system", "user", "assistant") and item.get("text"):
                    agent.save_message(
                        ctx, thread_id=thread_id, role=item["role"], text=item["text"]
                    )
        else:
            port.thread(ctx, thread_id)
        message_id = str(agent.save_message(ctx, thread_id=thread_id, role="user", text=text))
        order = port.message(ctx, message_id)["order"]
        args = {"thread_id": thread_id, "prompt_message_id": message_id}
        job = ctx.scheduler.run_after(0, reply_ref, args)
        return {
            "thread_id": thread_id,
            "message_id": message_id,
            "order": order,
            "reply_job": str(job),
        }

    def stop(ctx: MutationCtx, thread_id: str) -> Any:
        port.thread(ctx, thread_id)
        return agent.abort_stream(ctx, thread_id=thread_id)

    exposed.refs["reply"] = reply_ref
    for fn in (create, send, stop):
        name = f"agent_{exposed.name}.{fn.__name__}"
        exposed.refs[fn.__name__] = app.internal_mutation(name=name)(fn)


def expose(
    agent: Any,
    *,
    prefix: str | None = None,
    protocols: Iterable[str] = ("capsule", "vercel", "openai"),
    app: App | None = None,
) -> ExposedAgent:
    """Serve ``agent`` over HTTP from ``capsule serve`` (and ``create_asgi_app``).

    Args:
        agent: an ``Agent``.
        prefix: the route prefix (default ``/agents/<agent name>``).
        protocols: which of ``"capsule"`` (SSE of persisted deltas), ``"vercel"`` (the AI SDK
            UI message stream, ``useChat``) and ``"openai"`` (``/v1/chat/completions``) to
            serve.
        app: the app to serve it from (default: the app that mounted the agent's component).

    Raises:
        UserError: the agent has no name, is exposed twice, or a protocol is unknown.
    """
    from components.serving.endpoints import agent_routes
    from components.serving.openai_routes import OpenAIRoutes

    name = getattr(agent, "name", None)
    if not isinstance(name, str) or not name:
        raise UserError("Only a named agent can be exposed: Agent(..., name='helper').")
    wanted = frozenset(protocols)
    unknown = sorted(wanted - PROTOCOLS)
    if unknown:
        raise UserError(f"Unknown protocol(s) {unknown}; choose from {sorted(PROTOCOLS)}.")
    target = app if app is not None else getattr(agent.handle, "owner", None)
    if not isinstance(target, App):
        raise UserError(f'Agent "{name}" was not mounted with app.use(...); pass expose(app=...).')
    path = (prefix or f"/agents/{name}").rstrip("/")
    if not path.startswith("/"):
        raise UserError(f"An agent's route prefix must start with '/', not {path!r}.")
    openai = next((f for f in target.server_routes if isinstance(f, OpenAIRoutes)), None)
    if openai is None:
        openai = OpenAIRoutes()
        target.server_routes.append(openai)
    if name in openai.agents:
        raise UserError(f'Agent "{name}" is exposed twice.')
    exposed = ExposedAgent(name=name, prefix=path, protocols=wanted)
    port = AgentPort(agent)
    _register_reads(target, agent, exposed, port)
    _register_writes(target, agent, exposed, port)
    openai.agents[name] = exposed
    target.server_routes.append(lambda server: agent_routes(server, exposed))
    return exposed
