"""generate_text end to end: the tool loop persisted, turns, exit paths, re-runs."""

from __future__ import annotations

from typing import Any

import pytest

from components.agent import Agent, component, tool
from components.models import ModelRequest, ScriptedChatModel, ToolCall
from core import ActionCtx, App, MutationCtx, QueryCtx


@tool
async def add(ctx: ActionCtx, a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool
async def explode(ctx: ActionCtx) -> str:
    """Always fails."""
    raise RuntimeError("tool broke")


def make_app(model: ScriptedChatModel, **kw: Any) -> tuple[App, Agent, dict[str, Any]]:
    app = App()
    agent = Agent(
        app.use(component, name="agent"),
        name="calc",
        model=model,
        instructions="Be brief.",
        tools=[add, explode],
        **kw,
    )
    refs: dict[str, Any] = {}

    @app.mutation
    def new_thread(ctx: MutationCtx, user_id: str | None = None) -> str:
        return agent.create_thread(ctx, user_id=user_id)

    @app.action
    async def ask(ctx: ActionCtx, thread_id: str, text: str) -> dict[str, Any]:
        result = await agent.generate_text(ctx, thread_id=thread_id, prompt=text)
        return {
            "text": result.text,
            "finish": result.finish_reason,
            "order": result.order,
            "message_id": result.message_id,
        }

    @app.action
    async def rerun(ctx: ActionCtx, thread_id: str, prompt_message_id: str) -> str:
        result = await agent.generate_text(
            ctx, thread_id=thread_id, prompt_message_id=prompt_message_id
        )
        return result.text

    @app.query
    def messages(ctx: QueryCtx, thread_id: str) -> list[dict[str, Any]]:
        return agent.list_messages(ctx, thread_id=thread_id).page

    @app.mutation
    def save(ctx: MutationCtx, thread_id: str, text: str) -> str:
        return agent.save_message(ctx, thread_id=thread_id, role="user", text=text)

    refs.update(new_thread=new_thread, ask=ask, messages=messages, rerun=rerun, save=save)
    return app, agent, refs


def shape(messages: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(m["order"], m["step_order"], m["role"], m["status"]) for m in messages]


def test_two_step_tool_loop_persists_every_step(make_test_app: Any) -> None:
    model = ScriptedChatModel(
        [ToolCall(id="c1", name="add", arguments={"a": 2, "b": 3}), "It is 5.", "Still 5."]
    )
    app, _, r = make_app(model)
    t = make_test_app(app)
    thread_id = t.mutation(r["new_thread"], {"user_id": "ada"})
    out = t.action(r["ask"], {"thread_id": thread_id, "text": "2+3?"})
    assert out["text"] == "It is 5." and out["finish"] == "stop" and out["order"] == 0
    messages = t.query(r["messages"], {"thread_id": thread_id})
    assert shape(messages) == [
        (0, 0, "user", "success"),
        (0, 1, "assistant", "success"),
        (0, 2, "tool", "success"),
        (0, 3, "assistant", "success"),
    ]
    assert messages[1]["tool_calls"] == [{"id": "c1", "name": "add", "arguments": {"a": 2, "b": 3}}]
    assert messages[2]["text"] == "5" and messages[2]["tool_call_id"] == "c1"
    assert messages[3]["text"] == "It is 5." and out["message_id"] == messages[3]["_id"]
    second: ModelRequest = model.requests[1]
    assert [m.role for m in second.messages] == ["system", "user", "assistant", "tool"]
    assert second.messages[-1].text == "5"
    # A second turn starts order 1 and carries the first as history.
    out = t.action(r["ask"], {"thread_id": thread_id, "text": "again?"})
    assert out["order"] == 1
    third = model.requests[2]
    assert [m.role for m in third.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert third.messages[-1].text == "again?"
    model.assert_consumed()


def no_pending(t: Any, r: dict[str, Any], thread_id: str) -> list[dict[str, Any]]:
    messages = t.query(r["messages"], {"thread_id": thread_id})
    assert [m for m in messages if m["status"] == "pending"] == []
    return messages


def test_empty_output_finalises_the_placeholder(make_test_app: Any) -> None:
    app, _, r = make_app(ScriptedChatModel([""]))
    t = make_test_app(app)
    thread_id = t.mutation(r["new_thread"], {})
    assert t.action(r["ask"], {"thread_id": thread_id, "text": "hi"})["text"] == ""
    assert shape(no_pending(t, r, thread_id)) == [
        (0, 0, "user", "success"),
        (0, 1, "assistant", "success"),
    ]


def test_model_error_fails_the_message(make_test_app: Any) -> None:
    app, _, r = make_app(ScriptedChatModel([RuntimeError("provider down")]))
    t = make_test_app(app)
    thread_id = t.mutation(r["new_thread"], {})
    with pytest.raises(RuntimeError, match="provider down"):
        t.action(r["ask"], {"thread_id": thread_id, "text": "hi"})
    messages = no_pending(t, r, thread_id)
    assert messages[-1]["status"] == "failed" and "provider down" in messages[-1]["error"]


def test_tool_error_goes_back_to_the_model(make_test_app: Any) -> None:
    model = ScriptedChatModel([ToolCall(id="x", name="explode"), "sorry"])
    app, _, r = make_app(model)
    t = make_test_app(app)
    thread_id = t.mutation(r["new_thread"], {})
    assert t.action(r["ask"], {"thread_id": thread_id, "text": "go"})["text"] == "sorry"
    messages = no_pending(t, r, thread_id)
    assert "tool broke" in messages[2]["text"] and messages[2]["error"]
    assert "tool broke" in model.requests[1].messages[-1].text


def test_rerun_with_prompt_message_id_continues_from_saved_responses(make_test_app: Any) -> None:
    model = ScriptedChatModel(["first answer", "continued"])
    app, agent, r = make_app(model)
    t = make_test_app(app)
    thread_id = t.mutation(r["new_thread"], {})
    prompt_id = t.mutation(r["save"], {"thread_id": thread_id, "text": "hello"})
    t.action(r["rerun"], {"thread_id": thread_id, "prompt_message_id": prompt_id})
    # A generation that died: its pending placeholder is still there at the prompt's turn.
    t.run(
        lambda ctx: agent._call(
            ctx,
            "mutation",
            "start_generation",
            {"thread_id": thread_id, "prompt_message_id": prompt_id},
        )
    )
    assert (
        t.action(r["rerun"], {"thread_id": thread_id, "prompt_message_id": prompt_id})
        == "continued"
    )
    request = model.requests[1]
    assert [m.text for m in request.messages[1:]] == ["hello", "first answer"]
    messages = no_pending(t, r, thread_id)
    assert shape(messages) == [
        (0, 0, "user", "success"),
        (0, 1, "assistant", "success"),
        (0, 2, "assistant", "failed"),
        (0, 3, "assistant", "success"),
    ]
    assert messages[2]["error"].startswith("Restarting")
