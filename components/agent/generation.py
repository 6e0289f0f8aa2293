"""Owns a generation's run in the calling action: start, context, loop, result, usage.

``Agent.generate_text`` / ``stream_text`` / ``generate_object`` / ``stream_object`` and the
approval resume all come here: the component saves the prompt and a pending placeholder
(reading the recent context in the same transaction), the loop runs against
``ComponentPersistence``, and the result is assembled from the loop's steps.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import pydantic
import pydantic_core

from components.agent.context import ContextOptions, fetch_context
from components.agent.loop import LoopResult, StepResult, denial_outcome, run_loop
from components.agent.messages import call_from_dict, outcome_fields
from components.agent.results import GenerateObjectResult, GenerateResult
from components.agent.runs import ComponentPersistence, RunSettings
from components.agent.search import embed_messages, search_messages
from components.agent.tools import Tool, ToolOutcome
from components.agent.usage import StepUsage, cost
from components.models import ModelResponse, OutputSchema, Usage
from core import UserError

if TYPE_CHECKING:
    from components.agent.client import Agent

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)


def _is_action(ctx: Any) -> bool:
    return bool(getattr(getattr(ctx, "_frame", None), "kind", None) == "action")


async def generate_object(
    agent: Agent,
    ctx: Any,
    *,
    thread_id: str,
    schema: type[ModelT],
    prompt: str | None,
    prompt_message_id: str | None,
    context: ContextOptions | None,
    push: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
) -> GenerateObjectResult[ModelT]:
    """A validated ``schema`` instance (streamed partial objects go to ``push``)."""
    found: list[ModelT] = []

    def validate(response: ModelResponse) -> str | None:
        try:
            found.append(schema.model_validate_json(response.text))
        except pydantic.ValidationError as exc:
            return "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(reply)'}: {e['msg']}"
                for e in exc.errors()
            )
        return None

    on_text = None
    if push is not None:
        text: list[str] = []
        last: list[Any] = [None]

        async def on_text(delta: str) -> None:
            text.append(delta)
            try:
                partial = pydantic_core.from_json("".join(text), allow_partial=True)
            except ValueError:
                return
            if isinstance(partial, dict) and partial != last[0]:
                last[0] = partial
                await push(partial)

    output = OutputSchema(name=schema.__name__, schema=schema.model_json_schema())
    result = await generate(
        agent,
        ctx,
        thread_id=thread_id,
        prompt=prompt,
        prompt_message_id=prompt_message_id,
        tools=(),
        max_steps=1,
        context=context,
        stream=push is not None,
        on_text=on_text,
        output_schema=output,
        validate=validate,
    )
    return GenerateObjectResult(
        object=found[-1],
        text=result.text,
        message_id=result.message_id,
        prompt_message_id=result.prompt_message_id,
        usage=result.usage,
        finish_reason=result.finish_reason,
    )


async def generate(
    agent: Agent,
    ctx: Any,
    *,
    thread_id: str,
    prompt: str | None,
    prompt_message_id: str | None,
    tools: Sequence[Tool | Callable[..., Any]] | None,
    max_steps: int | None,
    context: ContextOptions | None,
    stream: bool,
    on_text: Callable[[str], Awaitable[None]] | None = None,
    output_schema: OutputSchema | None = None,
    validate: Callable[[ModelResponse], str | None] | None = None,
    resume: Sequence[ToolOutcome] = (),
) -> GenerateResult:
    """Run one generation: start it, assemble context, run the loop, return the result."""
    if not _is_action(ctx):
        raise UserError("Generation calls a model, so it runs in an action (ActionCtx).")
    if prompt is not None and prompt_message_id is not None:
        raise UserError("Give prompt or prompt_message_id, not both.")
    options = context or agent.context
    started = await agent._call(
        ctx,
        "mutation",
        "start_generation",
        {
            "thread_id": thread_id,
            "prompt": prompt,
            "prompt_message_id": prompt_message_id,
            "agent_name": agent.name,
            "lease": agent.pending_timeout,
            "recent": options.recent_messages,
        },
    )
    settings = RunSettings(
        stream=stream,
        throttle=agent.stream_throttle,
        lease=agent.pending_timeout,
        cleanup_delay=agent.stream_cleanup_delay,
    )
    starting = agent.loop_agent(tools)
    async with ComponentPersistence(
        ctx,
        agent.handle,
        start=started,
        thread_id=thread_id,
        agent_name=agent.name,
        model_name=getattr(agent.model, "model", None),
        settings=settings,
        costs=lambda m: cost_of(agent, m),
    ) as store:
        if resume:
            await store.save_step(
                [outcome_fields(o, agent_name=agent.name) for o in resume], more=True
            )
        recent = started["context"]
        if resume:
            # The resumed calls' results were saved after the context was read.
            recent = await agent._call(
                ctx,
                "query",
                "context_messages",
                {
                    "thread_id": thread_id,
                    "upto_order": started["order"],
                    "recent": options.recent_messages,
                },
            )
        history = await fetch_context(
            recent=recent,
            search=lambda **kw: search_messages(agent, ctx, **kw),
            thread_id=thread_id,
            user_id=started.get("user_id"),
            upto_order=started["order"],
            prompt_text=started["prompt_text"],
            instructions=agent.instructions,
            options=options,
        )

        async def on_step(step: StepResult) -> None:
            await _report_usage(agent, ctx, step, thread_id, started.get("user_id"))

        result = await run_loop(
            agent=starting,
            history=history,
            store=store,
            ctx=ctx,
            max_steps=max_steps or agent.max_steps,
            stream=stream,
            output_schema=output_schema,
            validate=validate,
            attempts=agent.object_attempts if validate is not None else 1,
            on_text=on_text,
            on_step=on_step,
        )
    final = _result(agent, result, thread_id=thread_id, started=started)
    if agent.embedder is not None:
        ids = [i for i in (final.prompt_message_id, final.message_id) if i is not None]
        docs = await agent._call(ctx, "query", "messages_by_ids", {"ids": ids})
        await embed_messages(agent, ctx, [d for d in docs if not d.get("embedding_id")])
    return final


def _result(
    agent: Agent, result: LoopResult, *, thread_id: str, started: dict[str, Any]
) -> GenerateResult:
    message_id = None
    for step in reversed(result.steps):
        if step.message_ids:
            message_id = step.message_ids[0]
            break
    return GenerateResult(
        text=result.text,
        message_id=message_id,
        prompt_message_id=started["prompt_message_id"],
        thread_id=thread_id,
        order=started["order"],
        steps=result.steps,
        usage=result.usage,
        finish_reason=result.finish_reason,
        agent_name=result.agent_name,
        pending_approvals=result.pending_approvals,
    )


def cost_of(agent: Agent, message: dict[str, Any]) -> float | None:
    """The cost of a saved message's usage, by the agent's price table."""
    usage = message.get("usage")
    if not usage:
        return None
    return cost(
        agent.prices,
        message.get("model"),
        Usage(
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            total_tokens=usage["total_tokens"],
        ),
    )


async def _report_usage(
    agent: Agent, ctx: Any, step: StepResult, thread_id: str, user_id: str | None
) -> None:
    if agent.usage_handler is None:
        return
    response = step.response
    report = StepUsage(
        usage=response.usage,
        cost=cost(agent.prices, response.model, response.usage),
        model=response.model or None,
        agent_name=step.agent_name,
        thread_id=thread_id,
        user_id=user_id,
    )
    outcome = agent.usage_handler(ctx, report)
    if inspect.isawaitable(outcome):
        await outcome


async def resume(
    agent: Agent, ctx: Any, *, thread_id: str, message_id: str
) -> GenerateResult | None:
    """Run a decided step's calls and continue the generation.

    Approved calls run, denied ones answer with the denial; ``None`` when another caller
    already resumed the step.
    """
    rows = await agent._call(ctx, "mutation", "claim_approvals", {"message_id": message_id})
    if not rows:
        return None
    outcomes: list[ToolOutcome] = []
    for row in rows:
        call = call_from_dict(
            {"id": row["tool_call_id"], "name": row["tool_name"], "arguments": row["arguments"]}
        )
        found = agent.tools.get(call.name)
        if row["status"].startswith("approved") and found is not None:
            outcomes.append(await found(ctx, call))
        else:
            outcomes.append(denial_outcome(call, row.get("reason")))
    return await generate(
        agent,
        ctx,
        thread_id=thread_id,
        prompt=None,
        prompt_message_id=message_id,
        tools=None,
        max_steps=None,
        context=None,
        stream=False,
        resume=outcomes,
    )
