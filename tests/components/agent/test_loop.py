"""The agent loop with a scripted model and an in-memory store (no database)."""

from __future__ import annotations

from typing import Any

import pytest

from components.agent.errors import ObjectGenerationError
from components.agent.loop import LoopAgent, run_loop
from components.agent.parts import parts_text
from components.agent.testing import MemoryPersistence
from components.agent.tools import tool, tool_map
from components.models import ModelMessage, ModelResponse, ScriptedChatModel, ToolCall


@tool
async def add(ctx: Any, a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool
async def broken(ctx: Any) -> str:
    """Always fails."""
    raise RuntimeError("disk on fire")


def agent(model: ScriptedChatModel, *tools: Any) -> LoopAgent:
    return LoopAgent(
        name="calc", model=model, instructions="Be brief.", tools=tool_map(list(tools))
    )


def history() -> list[ModelMessage]:
    return [ModelMessage.system("Be brief."), ModelMessage.user("1+2?")]


def no_pending(store: MemoryPersistence) -> None:
    assert store.finished
    assert [m for m in store.messages if m["status"] == "pending"] == []


@pytest.mark.parametrize("stream", [False, True])
async def test_two_step_tool_loop(stream: bool) -> None:
    model = ScriptedChatModel([ToolCall(id="c1", name="add", arguments={"a": 1, "b": 2}), "3"])
    store = MemoryPersistence()
    result = await run_loop(agent=agent(model, add), history=history(), store=store, stream=stream)
    assert result.text == "3"
    assert result.finish_reason == "stop"
    assert [m["role"] for m in store.messages] == ["assistant", "tool", "assistant"]
    assert store.messages[1]["text"] == "3"
    second = model.requests[1].messages
    assert second[-1].role == "tool" and second[-1].tool_call_id == "c1"
    assert len(result.steps) == 2
    no_pending(store)
    model.assert_consumed()
    if stream:
        kinds = [p["type"] for p in store.parts]
        assert kinds[0] == "start-step"
        assert "tool-input-start" in kinds and "tool-input-available" in kinds
        assert "tool-output-available" in kinds
        assert parts_text(store.parts) == "3"


async def test_parallel_calls_and_tool_errors_go_back_to_the_model() -> None:
    calls = [
        ToolCall(id="a", name="add", arguments={"a": 1, "b": "x"}),
        ToolCall(id="b", name="broken"),
        ToolCall(id="c", name="nope"),
        ToolCall(id="d", name="add", arguments={"a": 2, "b": 2}),
    ]
    model = ScriptedChatModel([calls, "ok"])
    store = MemoryPersistence()
    result = await run_loop(agent=agent(model, add, broken), history=history(), store=store)
    tool_texts = {m["tool_call_id"]: m["text"] for m in store.messages if m["role"] == "tool"}
    assert "Invalid arguments" in tool_texts["a"]
    assert "disk on fire" in tool_texts["b"]
    assert "Unknown tool" in tool_texts["c"]
    assert tool_texts["d"] == "4"
    assert result.text == "ok"
    no_pending(store)


async def test_max_steps_ends_after_tools() -> None:
    model = ScriptedChatModel([ToolCall(name="add", arguments={"a": 1, "b": 1})])
    store = MemoryPersistence()
    result = await run_loop(agent=agent(model, add), history=history(), store=store, max_steps=1)
    assert result.finish_reason == "max_steps"
    no_pending(store)


async def test_empty_output_is_saved_as_success() -> None:
    store = MemoryPersistence()
    result = await run_loop(agent=agent(ScriptedChatModel([""])), history=history(), store=store)
    assert result.text == ""
    assert store.messages == [{**store.messages[0], "status": "success"}]
    no_pending(store)


@pytest.mark.parametrize("stream", [False, True])
async def test_model_error_fails_the_pending_message(stream: bool) -> None:
    store = MemoryPersistence()
    with pytest.raises(RuntimeError, match="boom"):
        await run_loop(
            agent=agent(ScriptedChatModel([RuntimeError("boom")])),
            history=history(),
            store=store,
            stream=stream,
        )
    assert store.messages[-1]["status"] == "failed"
    assert "boom" in store.messages[-1]["error"]
    no_pending(store)


async def test_abort_stops_with_partial_text() -> None:
    store = MemoryPersistence()
    seen: list[str] = []

    async def on_text(delta: str) -> None:
        seen.append(delta)
        if len(seen) == 2:
            store.aborted = True

    model = ScriptedChatModel(["Hello there, how are you?"], chunk_size=5)
    result = await run_loop(
        agent=agent(model), history=history(), store=store, stream=True, on_text=on_text
    )
    assert result.finish_reason == "aborted"
    assert store.messages[-1]["status"] == "failed"
    partial = store.messages[-1]["text"]
    assert partial.startswith("Hello ther") and partial != "Hello there, how are you?"
    no_pending(store)


async def test_approval_stops_the_loop_with_the_call_pending() -> None:
    @tool(needs_approval=True)
    async def pay(ctx: Any, amount: int) -> str:
        """Pay."""
        return "paid"

    model = ScriptedChatModel(
        [
            [
                ToolCall(id="p", name="pay", arguments={"amount": 5}),
                ToolCall(id="q", name="add", arguments={"a": 1, "b": 1}),
            ]
        ]
    )
    store = MemoryPersistence()
    result = await run_loop(agent=agent(model, pay, add), history=history(), store=store)
    assert result.finish_reason == "tool_approval"
    assert [c.id for c in result.pending_approvals] == ["p"]
    assert [m["role"] for m in store.messages] == ["assistant", "tool"]
    assert store.messages[0]["tool_calls"][0]["needs_approval"] is True
    no_pending(store)


async def test_structured_output_retries_then_reports() -> None:
    def validate(response: ModelResponse) -> str | None:
        return None if response.text.startswith("{") else "not JSON"

    model = ScriptedChatModel(["nope", {"x": 1}])
    store = MemoryPersistence()
    result = await run_loop(
        agent=agent(model), history=history(), store=store, validate=validate, attempts=2
    )
    assert result.text == '{"x": 1}'
    assert "did not match" in model.requests[1].messages[-1].text
    store = MemoryPersistence()
    with pytest.raises(ObjectGenerationError, match="2 attempt"):
        await run_loop(
            agent=agent(ScriptedChatModel(["a", "b"])),
            history=history(),
            store=store,
            validate=validate,
            attempts=2,
        )
    no_pending(store)
