"""Owns the agent loop: model call, persist, run tools, persist, until an answer or a limit.

The loop knows nothing of the database: it talks to persistence through the narrow
``Persistence`` protocol (``emit`` stream parts, ``save_step``, ``fail``), so it runs with a
``ScriptedChatModel`` and an in-memory store in tests, and with the component's tables in
production (``generations.py``). Every exit leaves persistence finalised: a success saves
the last step with ``more=False``; a model error, a cancellation or any other exception
calls ``fail`` (with the partial text) before it propagates; an abort from another client
ends the loop with ``finish_reason="aborted"``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import anyio

from components.agent.errors import GenerationAbortedError, ObjectGenerationError
from components.agent.messages import outcome_fields, response_fields
from components.agent.parts import Part, PartEncoder
from components.agent.tools import Tool, ToolOutcome, error_outcome
from components.models import (
    ChatModel,
    FinalResponse,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    OutputSchema,
    StreamAccumulator,
    ToolCall,
    Usage,
    open_stream,
)

LoopFinish = Literal[
    "stop", "length", "content_filter", "other", "error", "max_steps", "tool_approval", "aborted"
]
"""Why a generation ended."""


class Persistence(Protocol):
    """Where the loop writes: stream parts and steps.

    Raising ``GenerationAbortedError`` from ``emit`` or ``save_step`` stops the loop
    (another client aborted it).
    """

    async def emit(self, parts: list[Part]) -> None:
        """Record stream parts (a no-op when the generation is not streamed)."""
        ...

    async def save_step(self, messages: list[dict[str, Any]], *, more: bool) -> list[str]:
        """Save messages of a step in order; ``more``: another write of this generation follows.

        Returns the saved messages' ids.
        """
        ...

    async def fail(self, error: str, *, partial_text: str, aborted: bool = False) -> None:
        """Finalise after a failure or an abort, keeping the partial text."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopAgent:
    """What the loop needs of an agent: its model, instructions and tools."""

    name: str | None
    """Written on every message it saves."""
    model: ChatModel
    """The chat model."""
    instructions: str | None = None
    """The system prompt."""
    tools: Mapping[str, Tool] = field(default_factory=dict)
    """Tools by name."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Provider options for every call."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepResult:
    """One model call and the tools it ran."""

    response: ModelResponse
    """The model's answer."""
    outcomes: tuple[ToolOutcome, ...] = ()
    """The tool calls that ran, in call order."""
    message_ids: tuple[str, ...] = ()
    """The ids of the messages this step saved."""
    agent_name: str | None = None
    """The agent that took the step."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopResult:
    """How a generation ended."""

    text: str
    """The last model response's text."""
    steps: tuple[StepResult, ...]
    """Every step, in order."""
    usage: Usage
    """Tokens of every step added up."""
    finish_reason: LoopFinish
    """Why it ended."""
    agent_name: str | None
    """The agent that answered last (another one after a handoff)."""
    pending_approvals: tuple[ToolCall, ...] = ()
    """Calls waiting for approval (``finish_reason == "tool_approval"``)."""


Validator = Callable[[ModelResponse], str | None]
"""Checks a structured reply: ``None`` when valid, else what is wrong."""


@dataclass(slots=True, kw_only=True)
class _State:
    agent: LoopAgent
    history: list[ModelMessage]
    encoder: PartEncoder = field(default_factory=PartEncoder)
    steps: list[StepResult] = field(default_factory=list)
    partial: str = ""


async def run_loop(
    *,
    agent: LoopAgent,
    history: Sequence[ModelMessage],
    store: Persistence,
    ctx: Any = None,
    max_steps: int = 10,
    stream: bool = False,
    output_schema: OutputSchema | None = None,
    validate: Validator | None = None,
    attempts: int = 1,
    on_text: Callable[[str], Awaitable[None]] | None = None,
    on_step: Callable[[StepResult], Awaitable[None]] | None = None,
) -> LoopResult:
    """Run model calls and tools until the model answers, a limit is hit, or it is aborted.

    Args:
        agent: the agent that starts (a handoff tool switches to another).
        history: the context: instructions first, then the conversation.
        store: where steps and stream parts go.
        ctx: handed to every tool as its first argument.
        max_steps: the most model calls.
        stream: stream each model call (parts are emitted as they arrive).
        output_schema: ask for a structured reply (no tools are offered then).
        validate: checks a structured reply; an invalid one is asked again.
        attempts: how many replies ``validate`` may see in all.
        on_text: receives the text deltas of streamed calls, for the caller.
        on_step: called after each step is saved (usage handlers).

    Raises:
        Exception: a model error (after ``store.fail``); the persistence never stays pending.
    """
    state = _State(agent=agent, history=list(history))
    try:
        return await _run(
            state,
            store,
            ctx=ctx,
            max_steps=max_steps,
            stream=stream,
            output_schema=output_schema,
            validate=validate,
            attempts=attempts,
            on_text=on_text,
            on_step=on_step,
        )
    except GenerationAbortedError:
        with anyio.CancelScope(shield=True):
            await store.fail("aborted", partial_text=state.partial, aborted=True)
        return _result(state, "aborted")
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            await store.fail(error, partial_text=state.partial)
        raise


def _result(state: _State, finish: LoopFinish, pending: tuple[ToolCall, ...] = ()) -> LoopResult:
    last = state.steps[-1].response if state.steps else None
    return LoopResult(
        text=last.text if last is not None else "",
        steps=tuple(state.steps),
        usage=sum((s.response.usage for s in state.steps), Usage()),
        finish_reason=finish,
        agent_name=state.agent.name,
        pending_approvals=pending,
    )


async def _run(
    state: _State,
    store: Persistence,
    *,
    ctx: Any,
    max_steps: int,
    stream: bool,
    output_schema: OutputSchema | None,
    validate: Validator | None,
    attempts: int,
    on_text: Callable[[str], Awaitable[None]] | None,
    on_step: Callable[[StepResult], Awaitable[None]] | None,
) -> LoopResult:
    for step_number in range(1, max_steps + 1):
        agent = state.agent
        await store.emit(state.encoder.start_step())
        response = await _call_with_retries(
            state,
            store,
            stream=stream,
            output_schema=output_schema,
            validate=validate,
            attempts=attempts,
            on_text=on_text,
        )
        state.history.append(ModelMessage.assistant(response.text, tool_calls=response.tool_calls))
        await store.emit(state.encoder.end_response(response.tool_calls))
        calls = response.tool_calls if output_schema is None else ()
        waiting = tuple(
            c for c in calls if c.name in agent.tools and agent.tools[c.name].needs_approval
        )
        waiting_ids = {c.id for c in waiting}
        runnable = [c for c in calls if c.id not in waiting_ids]
        fields = response_fields(response, agent_name=agent.name, approvals=tuple(waiting_ids))
        if not calls:
            await store.emit(state.encoder.finish_step())
            ids = await store.save_step([fields], more=False)
            state.partial = ""
            step = StepResult(response=response, message_ids=tuple(ids), agent_name=agent.name)
            await _record(state, step, on_step)
            reason = response.finish_reason
            finish: LoopFinish = reason if reason != "tool_calls" else "stop"
            return _result(state, finish)
        outcomes = await _run_tools(agent, runnable, ctx)
        await store.emit(PartEncoder.outputs(outcomes))
        await store.emit(PartEncoder.approval_requests(waiting))
        await store.emit(state.encoder.finish_step())
        handoff = next(
            (
                agent.tools[o.call.name].handoff
                for o in outcomes
                if not o.error and agent.tools[o.call.name].handoff is not None
            ),
            None,
        )
        more = not waiting and step_number < max_steps
        # As the Convex agent does, a step's call and its results are saved together (one
        # transaction): a thread never holds a call whose result is still to come.
        saved = await store.save_step(
            [fields, *(outcome_fields(o, agent_name=agent.name) for o in outcomes)], more=more
        )
        state.partial = ""
        ids, tool_ids = saved[:1], saved[1:]
        for outcome in outcomes:
            state.history.append(
                ModelMessage.tool(
                    tool_call_id=outcome.call.id, tool_name=outcome.call.name, text=outcome.text
                )
            )
        step = StepResult(
            response=response,
            outcomes=tuple(outcomes),
            message_ids=(*ids, *tool_ids),
            agent_name=agent.name,
        )
        await _record(state, step, on_step)
        if waiting:
            return _result(state, "tool_approval", waiting)
        if handoff is not None:
            target: LoopAgent = handoff.loop_agent()
            state.agent = target
            if target.instructions and state.history and state.history[0].role == "system":
                state.history[0] = ModelMessage.system(target.instructions)
    return _result(state, "max_steps")


async def _record(
    state: _State, step: StepResult, on_step: Callable[[StepResult], Awaitable[None]] | None
) -> None:
    state.steps.append(step)
    if on_step is not None:
        await on_step(step)


async def _call_with_retries(
    state: _State,
    store: Persistence,
    *,
    stream: bool,
    output_schema: OutputSchema | None,
    validate: Validator | None,
    attempts: int,
    on_text: Callable[[str], Awaitable[None]] | None,
) -> ModelResponse:
    extra: list[ModelMessage] = []
    for attempt in range(1, attempts + 1):
        agent = state.agent
        request = ModelRequest(
            messages=[*state.history, *extra],
            tools=[t.spec() for t in agent.tools.values()] if output_schema is None else (),
            output_schema=output_schema,
            options=agent.options,
        )
        if stream:
            response = await _stream_call(state, store, request, on_text)
        else:
            response = await agent.model.request(request)
            await store.emit(state.encoder.text(response.text))
            state.partial = response.text
        problem = validate(response) if validate is not None else None
        if problem is None:
            return response
        if attempt == attempts:
            name = output_schema.name if output_schema is not None else "output"
            raise ObjectGenerationError(schema=name, attempts=attempts, detail=problem)
        extra += [
            ModelMessage.assistant(response.text),
            ModelMessage.user(
                f"Your reply did not match the required JSON schema: {problem} "
                "Reply again with only JSON that matches it."
            ),
        ]
    raise AssertionError("unreachable")  # pragma: no cover


async def _stream_call(
    state: _State,
    store: Persistence,
    request: ModelRequest,
    on_text: Callable[[str], Awaitable[None]] | None,
) -> ModelResponse:
    accumulator = StreamAccumulator()
    final: ModelResponse | None = None
    async with open_stream(state.agent.model, request) as events:
        async for event in events:
            if isinstance(event, FinalResponse):
                final = event.response
                continue
            accumulator.add(event)
            state.partial = accumulator.text
            await store.emit(state.encoder.delta(event))
            if on_text is not None and hasattr(event, "text") and event.text:
                await on_text(event.text)
    if final is None:
        return ModelResponse(
            text=accumulator.text,
            tool_calls=accumulator.tool_calls(),
            finish_reason="tool_calls" if accumulator.tool_calls() else "stop",
        )
    return final


async def _run_tools(agent: LoopAgent, calls: Sequence[ToolCall], ctx: Any) -> list[ToolOutcome]:
    outcomes: list[ToolOutcome | None] = [None] * len(calls)

    async def run(index: int, call: ToolCall) -> None:
        found = agent.tools.get(call.name)
        if found is None:
            known = ", ".join(sorted(agent.tools)) or "none"
            outcomes[index] = error_outcome(
                call, f'Unknown tool "{call.name}"; the tools are: {known}.'
            )
            return
        outcomes[index] = await found(ctx, call)

    if len(calls) == 1:
        await run(0, calls[0])
    else:
        async with anyio.create_task_group() as group:
            for index, call in enumerate(calls):
                group.start_soon(run, index, call)
    return [o for o in outcomes if o is not None]


def denial_outcome(call: ToolCall, reason: str | None) -> ToolOutcome:
    """The outcome the model reads for a call a person denied."""
    text = f'The call of tool "{call.name}" was denied' + (f": {reason}" if reason else ".")
    return ToolOutcome(call=call, text=text, output=None, error=True)


def dumps(value: Any) -> str:
    """JSON text of a value (for messages the loop writes itself)."""
    return json.dumps(value, ensure_ascii=False)
