"""Owns ``Agent``, the class app code uses: threads, messages, generation, streams, usage.

Methods take the caller's ``ctx`` first. Thread and message methods work from any context:
from a query or mutation they run inside that transaction, from an action each call is its
own transaction and the method returns an awaitable. Generation (``generate_text``,
``stream_text``, ``generate_object``, ``stream_object``) calls a model, so it runs in
actions only.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeGuard, TypeVar, cast, overload

import pydantic

from components.agent import generation
from components.agent.context import ContextOptions, SearchMode
from components.agent.directory import AgentDirectory
from components.agent.documents import (
    ApprovalDecision,
    ApprovalDocument,
    MessageDocument,
    StreamDeltas,
    ThreadDocument,
)
from components.agent.loop import LoopAgent
from components.agent.results import GenerateObjectResult, GenerateResult, ResultStream
from components.agent.search import embed_messages, search_messages
from components.agent.tools import Tool, make_tool, tool_map
from components.agent.usage import PriceTable, UsageHandler, UsageTotals
from components.models import ChatModel, Embedder
from core import (
    ActionCtx,
    ComponentHandle,
    FunctionRef,
    MutationCtx,
    Page,
    QueryCtx,
    UserError,
    call,
)

if TYPE_CHECKING:
    from components.serving import ExposedAgent
    from core import App

ResultT = TypeVar("ResultT")
ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)


def _given(**fields: Any) -> dict[str, Any]:
    """The fields that are not ``None`` (a patch's "leave it as it is")."""
    return {k: v for k, v in fields.items() if v is not None}


def _first(ids: list[str]) -> str:
    return ids[0]


def _page(raw: Mapping[str, Any]) -> Page:
    return Page(page=raw["page"], continue_cursor=raw["continue_cursor"], is_done=raw["is_done"])


def _is_action(ctx: object) -> TypeGuard[ActionCtx]:
    return bool(getattr(getattr(ctx, "_frame", None), "kind", None) == "action")


class Agent:
    """An agent over one mounted ``agent`` component.

    Args:
        handle: what ``app.use(agent_component, name=...)`` returned.
        name: written on every message the agent saves.
        model: the ``ChatModel`` it calls.
        instructions: its system prompt.
        tools: ``Tool``s (or functions, made into tools).
        max_steps: the most model calls per generation.
        context: how much history each generation reads.
        embedder: embeds messages for vector search (optional).
        usage_handler: ``(ctx, StepUsage)`` called after each step.
        prices: a price table, so usage records carry a cost.
        handoffs: agents this one may transfer the conversation to (``transfer_to_<name>``).
        stream_throttle: seconds between persisted delta writes (0: every part at once).
        pending_timeout: seconds a pending message may go without a write before the
            sweeper fails it (a process that died).
        stream_cleanup_delay: seconds an ended stream's deltas are kept.
        object_attempts: how many times ``generate_object`` asks for a valid reply.
        options: provider options for every model call.
    """

    def __init__(
        self,
        handle: ComponentHandle,
        *,
        name: str,
        model: ChatModel,
        instructions: str | None = None,
        tools: Sequence[Tool | Callable[..., Any]] = (),
        max_steps: int = 10,
        context: ContextOptions | None = None,
        embedder: Embedder | None = None,
        usage_handler: UsageHandler | None = None,
        prices: PriceTable | None = None,
        handoffs: Sequence[Agent] = (),
        stream_throttle: float = 0.25,
        pending_timeout: float = 600.0,
        stream_cleanup_delay: float = 300.0,
        object_attempts: int = 2,
        options: Mapping[str, Any] | None = None,
    ):
        if max_steps < 1:
            raise UserError(f'Agent "{name}": max_steps must be at least 1, got {max_steps}.')
        self.handle = handle
        self.name = name
        self.model = model
        self.instructions = instructions
        self.tools = tool_map(list(tools))
        self.handoffs = list(handoffs)
        for other in self.handoffs:
            handoff = handoff_tool(other)
            if handoff.name in self.tools:
                raise UserError(f'Agent "{name}" already has a tool named "{handoff.name}".')
            self.tools[handoff.name] = handoff
        self.max_steps = max_steps
        self.context = context or ContextOptions()
        self.embedder = embedder
        self.usage_handler = usage_handler
        self.prices = prices
        self.stream_throttle = stream_throttle
        self.pending_timeout = pending_timeout
        self.stream_cleanup_delay = stream_cleanup_delay
        self.object_attempts = object_attempts
        self.options = dict(options or {})
        # Component functions (approval resumes, workflow steps) reach this agent, and so
        # its model, tools and embedder, through the instance's bound directory.
        AgentDirectory.of(handle).add(self)

    def __repr__(self) -> str:
        return f"<Agent {self.name!r}>"

    # -- plumbing ---------------------------------------------------------------------------

    def _call(
        self,
        ctx: Any,
        kind: str,
        name: str,
        args: dict[str, Any],
        then: Callable[[Any], Any] | None = None,
    ) -> Any:
        # ``kind`` documents the call; ``call`` finds it from the function itself.
        return call(ctx, getattr(self.handle, name), args, then=then)

    def loop_agent(self, tools: Sequence[Tool | Callable[..., Any]] | None = None) -> LoopAgent:
        """This agent as the loop sees it (``tools`` replaces its own for one call)."""
        chosen = self.tools if tools is None else tool_map(list(tools))
        return LoopAgent(
            name=self.name,
            model=self.model,
            instructions=self.instructions,
            tools=chosen,
            options=self.options,
        )

    # -- threads ----------------------------------------------------------------------------

    @overload
    def create_thread(
        self,
        ctx: ActionCtx,
        *,
        user_id: str | None = None,
        title: str | None = None,
        summary: str | None = None,
    ) -> Awaitable[str]: ...
    @overload
    def create_thread(
        self,
        ctx: MutationCtx,
        *,
        user_id: str | None = None,
        title: str | None = None,
        summary: str | None = None,
    ) -> str: ...
    def create_thread(
        self,
        ctx: MutationCtx | ActionCtx,
        *,
        user_id: str | None = None,
        title: str | None = None,
        summary: str | None = None,
    ) -> str | Awaitable[str]:
        """Create a thread; returns its id."""
        args = {"user_id": user_id, "title": title, "summary": summary, "agent_name": self.name}
        return call(ctx, self.handle.create_thread, args)

    @overload
    def get_thread(self, ctx: ActionCtx, thread_id: str) -> Awaitable[ThreadDocument | None]: ...
    @overload
    def get_thread(self, ctx: QueryCtx, thread_id: str) -> ThreadDocument | None: ...
    def get_thread(
        self, ctx: QueryCtx | ActionCtx, thread_id: str
    ) -> ThreadDocument | None | Awaitable[ThreadDocument | None]:
        """A thread document, or ``None``."""
        return call(ctx, self.handle.thread, {"thread_id": thread_id})

    @overload
    def list_threads(
        self,
        ctx: ActionCtx,
        *,
        user_id: str | None,
        cursor: str | None = None,
        num_items: int = 100,
        order: str = "desc",
    ) -> Awaitable[Page]: ...
    @overload
    def list_threads(
        self,
        ctx: QueryCtx,
        *,
        user_id: str | None,
        cursor: str | None = None,
        num_items: int = 100,
        order: str = "desc",
    ) -> Page: ...
    def list_threads(
        self,
        ctx: QueryCtx | ActionCtx,
        *,
        user_id: str | None,
        cursor: str | None = None,
        num_items: int = 100,
        order: str = "desc",
    ) -> Page | Awaitable[Page]:
        """A ``Page`` of a user's threads (newest first by default)."""
        args = {"user_id": user_id, "cursor": cursor, "num_items": num_items, "order": order}
        return call(ctx, self.handle.list_threads, args, then=_page)

    @overload
    def update_thread(
        self,
        ctx: ActionCtx,
        thread_id: str,
        *,
        title: str | None = None,
        summary: str | None = None,
        status: str | None = None,
        user_id: str | None = None,
    ) -> Awaitable[ThreadDocument]: ...
    @overload
    def update_thread(
        self,
        ctx: MutationCtx,
        thread_id: str,
        *,
        title: str | None = None,
        summary: str | None = None,
        status: str | None = None,
        user_id: str | None = None,
    ) -> ThreadDocument: ...
    def update_thread(
        self,
        ctx: MutationCtx | ActionCtx,
        thread_id: str,
        *,
        title: str | None = None,
        summary: str | None = None,
        status: str | None = None,
        user_id: str | None = None,
    ) -> ThreadDocument | Awaitable[ThreadDocument]:
        """Change a thread's title, summary, status or user (``None`` leaves one as it is).

        Returns the updated thread.
        """
        patch = _given(title=title, summary=summary, status=status, user_id=user_id)
        return call(ctx, self.handle.update_thread, {"thread_id": thread_id, "patch": patch})

    @overload
    def delete_thread(
        self, ctx: ActionCtx, thread_id: str, *, batch: int = 200
    ) -> Awaitable[bool]: ...
    @overload
    def delete_thread(self, ctx: MutationCtx, thread_id: str, *, batch: int = 200) -> bool: ...
    def delete_thread(
        self, ctx: MutationCtx | ActionCtx, thread_id: str, *, batch: int = 200
    ) -> bool | Awaitable[bool]:
        """Delete a thread, its messages and streams (in batches, continued by the scheduler).

        Returns whether everything is already gone (``False``: the scheduler continues).
        """
        return call(ctx, self.handle.delete_thread, {"thread_id": thread_id, "batch": batch})

    # -- messages ---------------------------------------------------------------------------

    @overload
    def save_message(
        self,
        ctx: ActionCtx,
        *,
        thread_id: str,
        role: str = "user",
        text: str = "",
        order: int | str | None = None,
        prompt_message_id: str | None = None,
        agent_name: str | None = None,
        **fields: Any,
    ) -> Awaitable[str]: ...
    @overload
    def save_message(
        self,
        ctx: MutationCtx,
        *,
        thread_id: str,
        role: str = "user",
        text: str = "",
        order: int | str | None = None,
        prompt_message_id: str | None = None,
        agent_name: str | None = None,
        **fields: Any,
    ) -> str: ...
    def save_message(
        self,
        ctx: MutationCtx | ActionCtx,
        *,
        thread_id: str,
        role: str = "user",
        text: str = "",
        order: int | str | None = None,
        prompt_message_id: str | None = None,
        agent_name: str | None = None,
        **fields: Any,
    ) -> str | Awaitable[str]:
        """Save one message; returns its id (see the ordering rules of ``save_messages``)."""
        message = {"role": role, "text": text, "agent_name": agent_name, **fields}
        if role not in ("user", "system") and agent_name is None:
            message["agent_name"] = self.name
        args = {
            "thread_id": thread_id,
            "messages": [message],
            "order": order,
            "prompt_message_id": prompt_message_id,
        }
        if _is_action(ctx) and self.embedder is not None:
            return self._save_and_embed(ctx, args, then=_first)
        return call(ctx, self.handle.save_messages, args, then=_first)

    @overload
    def save_messages(
        self,
        ctx: ActionCtx,
        *,
        thread_id: str,
        messages: Sequence[Mapping[str, Any]],
        order: int | str | None = None,
        prompt_message_id: str | None = None,
    ) -> Awaitable[list[str]]: ...
    @overload
    def save_messages(
        self,
        ctx: MutationCtx,
        *,
        thread_id: str,
        messages: Sequence[Mapping[str, Any]],
        order: int | str | None = None,
        prompt_message_id: str | None = None,
    ) -> list[str]: ...
    def save_messages(
        self,
        ctx: MutationCtx | ActionCtx,
        *,
        thread_id: str,
        messages: Sequence[Mapping[str, Any]],
        order: int | str | None = None,
        prompt_message_id: str | None = None,
    ) -> list[str] | Awaitable[list[str]]:
        """Save messages in one transaction; returns their ids.

        A user message starts a new turn; any other message takes the next step of the
        current turn. ``order="next"`` starts a new turn, an explicit ``order`` appends to
        that turn, ``prompt_message_id`` appends to the prompt's turn. From an action, an
        agent with an embedder embeds the saved user and assistant messages for vector search
        (from a mutation that waits for the next generation in the thread).
        """
        args = {
            "thread_id": thread_id,
            "messages": [dict(m) for m in messages],
            "order": order,
            "prompt_message_id": prompt_message_id,
        }
        if _is_action(ctx) and self.embedder is not None:
            return self._save_and_embed(ctx, args, then=list)
        return call(ctx, self.handle.save_messages, args)

    async def _save_and_embed(
        self, ctx: ActionCtx, args: dict[str, Any], then: Callable[[list[str]], ResultT]
    ) -> ResultT:
        """Save messages, then embed them (the save stands if the embedder fails)."""
        ids: list[str] = await call(ctx, self.handle.save_messages, args)
        docs = await call(ctx, self.handle.messages_by_ids, {"ids": ids})
        await embed_messages(self, ctx, [d for d in docs if not d.get("embedding_id")])
        return then(ids)

    @overload
    def update_message(
        self,
        ctx: ActionCtx,
        message_id: str,
        *,
        text: str | None = None,
        status: str | None = None,
        error: str | None = None,
    ) -> Awaitable[MessageDocument]: ...
    @overload
    def update_message(
        self,
        ctx: MutationCtx,
        message_id: str,
        *,
        text: str | None = None,
        status: str | None = None,
        error: str | None = None,
    ) -> MessageDocument: ...
    def update_message(
        self,
        ctx: MutationCtx | ActionCtx,
        message_id: str,
        *,
        text: str | None = None,
        status: str | None = None,
        error: str | None = None,
    ) -> MessageDocument | Awaitable[MessageDocument]:
        """Change a message's text, status or error (``None`` leaves one as it is).

        Returns the updated message.
        """
        patch = _given(text=text, status=status, error=error)
        return call(ctx, self.handle.update_message, {"message_id": message_id, "patch": patch})

    @overload
    def delete_messages(
        self, ctx: ActionCtx, message_ids: Sequence[str]
    ) -> Awaitable[list[str]]: ...
    @overload
    def delete_messages(self, ctx: MutationCtx, message_ids: Sequence[str]) -> list[str]: ...
    def delete_messages(
        self, ctx: MutationCtx | ActionCtx, message_ids: Sequence[str]
    ) -> list[str] | Awaitable[list[str]]:
        """Delete messages by id; returns the ids that existed."""
        return call(ctx, self.handle.delete_messages, {"message_ids": list(message_ids)})

    @overload
    def get_message(self, ctx: ActionCtx, message_id: str) -> Awaitable[MessageDocument | None]: ...
    @overload
    def get_message(self, ctx: QueryCtx, message_id: str) -> MessageDocument | None: ...
    def get_message(
        self, ctx: QueryCtx | ActionCtx, message_id: str
    ) -> MessageDocument | None | Awaitable[MessageDocument | None]:
        """A message document, or ``None``."""
        return call(ctx, self.handle.message, {"message_id": message_id})

    @overload
    def list_messages(
        self,
        ctx: ActionCtx,
        *,
        thread_id: str,
        cursor: str | None = None,
        num_items: int = 100,
        statuses: Sequence[str] | None = None,
        order: str = "asc",
    ) -> Awaitable[Page]: ...
    @overload
    def list_messages(
        self,
        ctx: QueryCtx,
        *,
        thread_id: str,
        cursor: str | None = None,
        num_items: int = 100,
        statuses: Sequence[str] | None = None,
        order: str = "asc",
    ) -> Page: ...
    def list_messages(
        self,
        ctx: QueryCtx | ActionCtx,
        *,
        thread_id: str,
        cursor: str | None = None,
        num_items: int = 100,
        statuses: Sequence[str] | None = None,
        order: str = "asc",
    ) -> Page | Awaitable[Page]:
        """A ``Page`` of a thread's messages, ascending by ``(order, step_order)``."""
        args = {
            "thread_id": thread_id,
            "cursor": cursor,
            "num_items": num_items,
            "statuses": list(statuses) if statuses is not None else None,
            "order": order,
        }
        return call(ctx, self.handle.list_messages, args, then=_page)

    @overload
    def search_messages(
        self,
        ctx: ActionCtx,
        *,
        query: str,
        thread_id: str | None = None,
        user_id: str | None = None,
        limit: int = 10,
        mode: SearchMode = "text",
    ) -> Awaitable[list[MessageDocument]]: ...
    @overload
    def search_messages(
        self,
        ctx: QueryCtx,
        *,
        query: str,
        thread_id: str | None = None,
        user_id: str | None = None,
        limit: int = 10,
        mode: Literal["text"] = "text",
    ) -> list[MessageDocument]: ...
    def search_messages(
        self,
        ctx: QueryCtx | ActionCtx,
        *,
        query: str,
        thread_id: str | None = None,
        user_id: str | None = None,
        limit: int = 10,
        mode: SearchMode = "text",
    ) -> list[MessageDocument] | Awaitable[list[MessageDocument]]:
        """Messages matching ``query`` in a thread or across a user's threads.

        ``mode="text"`` works from any context; ``"vector"`` and ``"hybrid"`` need the
        agent's embedder and an action.
        """
        if thread_id is None and user_id is None:
            raise UserError("search_messages needs a thread_id or a user_id.")
        if mode == "text" and not _is_action(ctx):
            args = {"query": query, "thread_id": thread_id, "user_id": user_id, "limit": limit}
            return call(ctx, self.handle.search_text, args)
        found = search_messages(
            self, ctx, query=query, thread_id=thread_id, user_id=user_id, limit=limit, mode=mode
        )
        return cast("Awaitable[list[MessageDocument]]", found)

    # -- streams, aborts, sweeping ----------------------------------------------------------

    @overload
    def stream_deltas(
        self, ctx: ActionCtx, *, thread_id: str, cursor: str | None = None
    ) -> Awaitable[StreamDeltas]: ...
    @overload
    def stream_deltas(
        self, ctx: QueryCtx, *, thread_id: str, cursor: str | None = None
    ) -> StreamDeltas: ...
    def stream_deltas(
        self, ctx: QueryCtx | ActionCtx, *, thread_id: str, cursor: str | None = None
    ) -> StreamDeltas | Awaitable[StreamDeltas]:
        """A thread's streams and the delta rows after ``cursor``.

        Returns ``{"streams", "deltas", "cursor", "done"}``. Usable from a query, so a
        subscription follows streams live.
        """
        return call(ctx, self.handle.stream_deltas, {"thread_id": thread_id, "cursor": cursor})

    @overload
    def abort_stream(
        self,
        ctx: ActionCtx,
        *,
        thread_id: str | None = None,
        stream_id: str | None = None,
        order: int | None = None,
        reason: str = "aborted by a client",
    ) -> Awaitable[int]: ...
    @overload
    def abort_stream(
        self,
        ctx: MutationCtx,
        *,
        thread_id: str | None = None,
        stream_id: str | None = None,
        order: int | None = None,
        reason: str = "aborted by a client",
    ) -> int: ...
    def abort_stream(
        self,
        ctx: MutationCtx | ActionCtx,
        *,
        thread_id: str | None = None,
        stream_id: str | None = None,
        order: int | None = None,
        reason: str = "aborted by a client",
    ) -> int | Awaitable[int]:
        """Stop a thread's generation (or one stream's) from any client.

        The generation stops at its next write; its message ends ``failed`` with the partial
        text kept. Returns how many streams and messages were stopped.
        """
        if thread_id is None and stream_id is None:
            raise UserError("abort_stream needs a thread_id or a stream_id.")
        args = {
            "thread_id": thread_id,
            "stream_id": stream_id,
            "order": order,
            "reason": reason,
            "cleanup_delay": self.stream_cleanup_delay,
        }
        return call(ctx, self.handle.abort, args)

    @overload
    def sweep(self, ctx: ActionCtx) -> Awaitable[int]: ...
    @overload
    def sweep(self, ctx: MutationCtx) -> int: ...
    def sweep(self, ctx: MutationCtx | ActionCtx) -> int | Awaitable[int]:
        """Fail pending messages and streams left by dead processes now (a cron does it too).

        Returns how many messages and streams it failed.
        """
        return call(ctx, self.handle.sweep, {})

    # -- usage -------------------------------------------------------------------------------

    @overload
    def usage(
        self, ctx: ActionCtx, *, thread_id: str | None = None, user_id: str | None = None
    ) -> Awaitable[UsageTotals]: ...
    @overload
    def usage(
        self, ctx: QueryCtx, *, thread_id: str | None = None, user_id: str | None = None
    ) -> UsageTotals: ...
    def usage(
        self, ctx: QueryCtx | ActionCtx, *, thread_id: str | None = None, user_id: str | None = None
    ) -> UsageTotals | Awaitable[UsageTotals]:
        """``UsageTotals`` of a thread, or of a user across threads."""
        if thread_id is None and user_id is None:
            raise UserError("usage needs a thread_id or a user_id.")
        args = {"thread_id": thread_id, "user_id": user_id}
        return call(ctx, self.handle.usage_totals, args, then=UsageTotals.from_dict)

    # -- generation --------------------------------------------------------------------------

    async def generate_text(
        self,
        ctx: ActionCtx,
        *,
        thread_id: str,
        prompt: str | None = None,
        prompt_message_id: str | None = None,
        tools: Sequence[Tool | Callable[..., Any]] | None = None,
        max_steps: int | None = None,
        context: ContextOptions | None = None,
    ) -> GenerateResult:
        """Answer a prompt in a thread, running tools, saving every step as it completes.

        Give ``prompt`` (saved as a user message) or ``prompt_message_id`` (a saved message;
        re-running with it fails stale pending messages and continues from the responses
        already saved).
        """
        return await generation.generate(
            self,
            ctx,
            thread_id=thread_id,
            prompt=prompt,
            prompt_message_id=prompt_message_id,
            tools=tools,
            max_steps=max_steps,
            context=context,
            stream=False,
        )

    def stream_text(
        self,
        ctx: ActionCtx,
        *,
        thread_id: str,
        prompt: str | None = None,
        prompt_message_id: str | None = None,
        tools: Sequence[Tool | Callable[..., Any]] | None = None,
        max_steps: int | None = None,
        context: ContextOptions | None = None,
    ) -> ResultStream[str, GenerateResult]:
        """``generate_text``, streamed.

        ``async with agent.stream_text(...) as stream``, then ``async for delta in stream``
        and ``stream.result``. Deltas are also persisted (throttled) for other clients
        (``stream_deltas``).
        """

        async def run(push: Callable[[str], Awaitable[None]]) -> GenerateResult:
            return await generation.generate(
                self,
                ctx,
                thread_id=thread_id,
                prompt=prompt,
                prompt_message_id=prompt_message_id,
                tools=tools,
                max_steps=max_steps,
                context=context,
                stream=True,
                on_text=push,
            )

        return ResultStream(run)

    async def generate_object(
        self,
        ctx: ActionCtx,
        *,
        thread_id: str,
        schema: type[ModelT],
        prompt: str | None = None,
        prompt_message_id: str | None = None,
        context: ContextOptions | None = None,
    ) -> GenerateObjectResult[ModelT]:
        """A validated ``schema`` instance from the model (structured output, no tools).

        A reply that does not validate is asked again (``object_attempts`` in all), then
        reported with ``ObjectGenerationError``; the message never stays pending.
        """
        return await generation.generate_object(
            self,
            ctx,
            thread_id=thread_id,
            schema=schema,
            prompt=prompt,
            prompt_message_id=prompt_message_id,
            context=context,
        )

    def stream_object(
        self,
        ctx: ActionCtx,
        *,
        thread_id: str,
        schema: type[ModelT],
        prompt: str | None = None,
        prompt_message_id: str | None = None,
        context: ContextOptions | None = None,
    ) -> ResultStream[dict[str, Any], GenerateObjectResult[ModelT]]:
        """``generate_object`` streamed: iterate for partial objects (dicts), then ``result``."""

        async def run(
            push: Callable[[dict[str, Any]], Awaitable[None]],
        ) -> GenerateObjectResult[ModelT]:
            return await generation.generate_object(
                self,
                ctx,
                thread_id=thread_id,
                schema=schema,
                prompt=prompt,
                prompt_message_id=prompt_message_id,
                context=context,
                push=push,
            )

        return ResultStream(run)

    # -- approvals ---------------------------------------------------------------------------

    @overload
    def approve_tool_call(
        self, ctx: ActionCtx, *, tool_call_id: str, reason: str | None = None
    ) -> Awaitable[GenerateResult | None]: ...
    @overload
    def approve_tool_call(
        self, ctx: MutationCtx, *, tool_call_id: str, reason: str | None = None
    ) -> ApprovalDecision: ...
    def approve_tool_call(
        self, ctx: MutationCtx | ActionCtx, *, tool_call_id: str, reason: str | None = None
    ) -> ApprovalDecision | Awaitable[GenerateResult | None]:
        """Approve a call waiting for approval.

        Once every call of that step is decided, generation resumes: at once from an action
        (returning its ``GenerateResult``; ``None`` while calls are undecided), through the
        scheduler from a mutation (returning the ``ApprovalDecision``).
        """
        return self._decide(ctx, tool_call_id, True, reason)

    @overload
    def deny_tool_call(
        self, ctx: ActionCtx, *, tool_call_id: str, reason: str | None = None
    ) -> Awaitable[GenerateResult | None]: ...
    @overload
    def deny_tool_call(
        self, ctx: MutationCtx, *, tool_call_id: str, reason: str | None = None
    ) -> ApprovalDecision: ...
    def deny_tool_call(
        self, ctx: MutationCtx | ActionCtx, *, tool_call_id: str, reason: str | None = None
    ) -> ApprovalDecision | Awaitable[GenerateResult | None]:
        """Deny a call waiting for approval; the model reads the denial when generation resumes."""
        return self._decide(ctx, tool_call_id, False, reason)

    def _decide(
        self, ctx: MutationCtx | ActionCtx, tool_call_id: str, approved: bool, reason: str | None
    ) -> ApprovalDecision | Awaitable[GenerateResult | None]:
        decided = self._call(
            ctx,
            "mutation",
            "decide_approval",
            {
                "tool_call_id": tool_call_id,
                "approved": approved,
                "reason": reason,
                # From a mutation the resume is scheduled (it commits with the decision);
                # from an action it runs right here.
                "resume_agent": None if _is_action(ctx) else self.name,
            },
        )
        if not _is_action(ctx):
            return cast(ApprovalDecision, decided)

        async def then() -> GenerateResult | None:
            outcome = await decided
            if not outcome["ready"]:
                return None
            return await self.resume(
                ctx, thread_id=outcome["thread_id"], message_id=outcome["message_id"]
            )

        return then()

    @property
    def text_step(self) -> FunctionRef[Any, Any]:
        """``generate_text`` as an action, granted: for workflow steps and schedulers.

        Its arguments: ``agent_name`` (this agent's name), ``thread_id``, ``prompt`` or
        ``prompt_message_id``, ``max_steps``; it returns ``{"text", "message_id",
        "prompt_message_id", "order", "finish_reason", "total_tokens"}``.
        """
        granted: FunctionRef[Any, Any] = self.handle.function("generate_text_step")
        return granted

    def expose(
        self,
        *,
        prefix: str | None = None,
        protocols: Sequence[str] = ("capsule", "vercel", "openai"),
        app: App | None = None,
    ) -> ExposedAgent:
        """Serve this agent over HTTP from ``capsule serve`` (see ``components.serving.expose``).

        ``/agents/<name>/...`` (SSE replies, live streams resumable with ``Last-Event-ID``,
        stop, the Vercel AI SDK UI message stream) and ``/v1/chat/completions`` with
        ``/v1/models``, for the protocols named.
        """
        from components.serving import expose

        return expose(self, prefix=prefix, protocols=protocols, app=app)

    @overload
    def pending_approvals(
        self, ctx: ActionCtx, *, thread_id: str
    ) -> Awaitable[list[ApprovalDocument]]: ...
    @overload
    def pending_approvals(self, ctx: QueryCtx, *, thread_id: str) -> list[ApprovalDocument]: ...
    def pending_approvals(
        self, ctx: QueryCtx | ActionCtx, *, thread_id: str
    ) -> list[ApprovalDocument] | Awaitable[list[ApprovalDocument]]:
        """The thread's tool calls waiting for approval."""
        return call(ctx, self.handle.approvals, {"thread_id": thread_id})

    async def resume(
        self, ctx: ActionCtx, *, thread_id: str, message_id: str
    ) -> GenerateResult | None:
        """Run a decided step's calls and continue the generation.

        Approved calls run; denied ones answer with the denial. Exactly one caller resumes a
        step; others get ``None``.
        """
        return await generation.resume(self, ctx, thread_id=thread_id, message_id=message_id)

    # -- multi-agent -------------------------------------------------------------------------

    def as_tool(self, *, name: str | None = None, description: str | None = None) -> Tool:
        """This agent as another agent's tool: each call runs on a new thread of its own."""
        agent = self

        async def run(ctx: Any, prompt: str) -> str:
            thread_id = await agent.create_thread(ctx, title=f"{agent.name} (as a tool)")
            result = await agent.generate_text(ctx, thread_id=thread_id, prompt=prompt)
            return result.text

        return make_tool(
            run,
            name=name or agent.name,
            description=description or agent.instructions or f"Ask {agent.name}.",
        )


def handoff_tool(target: Agent) -> Tool:
    """The ``transfer_to_<name>`` tool that hands a conversation over to ``target``."""

    async def transfer(ctx: Any) -> str:
        return json.dumps({"assistant": target.name})

    made = make_tool(
        transfer,
        name=f"transfer_to_{target.name}",
        description=f"Hand the conversation over to {target.name}: "
        f"{target.instructions or ''}".strip(),
        handoff=target,
    )
    return made
