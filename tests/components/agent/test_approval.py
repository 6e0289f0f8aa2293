"""Tool approval: the loop stops with the call pending; approval resumes it after a restart."""

from __future__ import annotations

from typing import Any

import pytest

from components.agent import Agent, ApprovalError, component, tool
from components.models import ScriptedChatModel, ToolCall
from core import ActionCtx, App, MutationCtx, QueryCtx
from core.storage.base import Storage
from core.testing import TestApp

PAID: list[int] = []


@tool(needs_approval=True)
async def pay(ctx: ActionCtx, amount: int) -> str:
    """Pay an amount."""
    PAID.append(amount)
    return f"paid {amount}"


def make_app(storage: Storage, model: ScriptedChatModel) -> tuple[App, dict[str, Any]]:
    app = App(storage=storage)
    agent = Agent(app.use(component, name="agent"), name="payer", model=model, tools=[pay])

    @app.action
    async def ask(ctx: ActionCtx) -> dict[str, Any]:
        thread_id = await agent.create_thread(ctx)
        result = await agent.generate_text(ctx, thread_id=thread_id, prompt="Pay 5")
        return {
            "thread_id": thread_id,
            "finish": result.finish_reason,
            "calls": [c.id for c in result.pending_approvals],
        }

    @app.action
    async def decide(ctx: ActionCtx, call_id: str, approve: bool) -> dict[str, Any] | None:
        if approve:
            result = await agent.approve_tool_call(ctx, tool_call_id=call_id)
        else:
            result = await agent.deny_tool_call(ctx, tool_call_id=call_id, reason="too much")
        return None if result is None else {"text": result.text, "finish": result.finish_reason}

    @app.query
    def state(ctx: QueryCtx, thread_id: str) -> dict[str, Any]:
        return {
            "messages": agent.list_messages(ctx, thread_id=thread_id).page,
            "pending": agent.pending_approvals(ctx, thread_id=thread_id),
        }

    return app, {"ask": ask, "decide": decide, "state": state}


def shape(messages: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(m["order"], m["step_order"], m["role"], m["status"]) for m in messages]


@pytest.mark.parametrize("approve", [True, False])
def test_approval_survives_a_restart(storage: Storage, approve: bool) -> None:
    PAID.clear()
    app, r = make_app(
        storage, ScriptedChatModel([ToolCall(id="p1", name="pay", arguments={"amount": 5})])
    )
    with TestApp(app, storage=storage) as t:
        out = t.action(r["ask"])
        assert out["finish"] == "tool_approval" and out["calls"] == ["p1"]
        state = t.query(r["state"], {"thread_id": out["thread_id"]})
        assert shape(state["messages"]) == [
            (0, 0, "user", "success"),
            (0, 1, "assistant", "success"),
        ]
        assert [p["tool_call_id"] for p in state["pending"]] == ["p1"]
    assert PAID == []
    # A new process: new app and agent objects, the same database.
    model = ScriptedChatModel(["Paid." if approve else "Not paid."])
    app, r = make_app(storage, model)
    with TestApp(app, storage=storage) as t:
        result = t.action(r["decide"], {"call_id": "p1", "approve": approve})
        assert result == {"text": "Paid." if approve else "Not paid.", "finish": "stop"}
        state = t.query(r["state"], {"thread_id": out["thread_id"]})
        assert shape(state["messages"]) == [
            (0, 0, "user", "success"),
            (0, 1, "assistant", "success"),
            (0, 2, "tool", "success"),
            (0, 3, "assistant", "success"),
        ]
        assert state["pending"] == []
        tool_text = state["messages"][2]["text"]
        if approve:
            assert PAID == [5] and tool_text == "paid 5"
        else:
            assert PAID == [] and "denied: too much" in tool_text
        assert model.requests[0].messages[-1].text == tool_text
        decided = "approved" if approve else "denied"
        with pytest.raises(ApprovalError, match=f'"p1" was already {decided}.$'):
            t.action(r["decide"], {"call_id": "p1", "approve": True})


def test_approval_from_a_mutation_resumes_through_the_scheduler(storage: Storage) -> None:
    PAID.clear()
    app, r = make_app(
        storage, ScriptedChatModel([ToolCall(id="m1", name="pay", arguments={"amount": 7})])
    )
    with TestApp(app, storage=storage) as t:
        out = t.action(r["ask"])
    model = ScriptedChatModel(["Paid 7."])
    app = App(storage=storage)
    agent = Agent(app.use(component, name="agent"), name="payer", model=model, tools=[pay])

    @app.mutation
    def approve(ctx: MutationCtx, call_id: str) -> bool:
        return bool(agent.approve_tool_call(ctx, tool_call_id=call_id)["ready"])

    @app.query
    def texts(ctx: QueryCtx, thread_id: str) -> list[str]:
        return [m["text"] for m in agent.list_messages(ctx, thread_id=thread_id).page]

    with TestApp(app, storage=storage) as t:
        assert t.mutation(approve, {"call_id": "m1"}) is True
    assert PAID == []  # closed before the scheduled resume ran: it waits in the database
    with TestApp(app, storage=storage) as t:
        t.finish_scheduled()
        assert t.query(texts, {"thread_id": out["thread_id"]})[-2:] == ["paid 7", "Paid 7."]
    assert PAID == [7]


def test_a_streamed_call_waiting_for_approval_is_a_stream_part(storage: Storage) -> None:
    PAID.clear()
    model = ScriptedChatModel([ToolCall(id="s1", name="pay", arguments={"amount": 3})])
    app = App(storage=storage)
    agent = Agent(
        app.use(component, name="agent"),
        name="payer",
        model=model,
        tools=[pay],
        stream_throttle=0.0,
    )

    @app.action
    async def ask(ctx: ActionCtx) -> dict[str, Any]:
        thread_id = await agent.create_thread(ctx)
        async with agent.stream_text(ctx, thread_id=thread_id, prompt="Pay 3") as stream:
            async for _ in stream:
                pass
        return {"thread_id": thread_id, "finish": stream.result.finish_reason}

    @app.query
    def parts(ctx: QueryCtx, thread_id: str) -> list[dict[str, Any]]:
        found = agent.stream_deltas(ctx, thread_id=thread_id)
        return [p for d in found["deltas"] for p in d["parts"]]

    with TestApp(app, storage=storage) as t:
        out = t.action(ask)
        assert out["finish"] == "tool_approval"
        found = t.query(parts, {"thread_id": out["thread_id"]})
    kinds = [p["type"] for p in found]
    request = next(p for p in found if p["type"] == "tool-approval-request")
    assert request == {"type": "tool-approval-request", "approval_id": "s1", "tool_call_id": "s1"}
    # After the call's input, before the step ends; no output, since the tool has not run.
    assert kinds.index("tool-input-available") < kinds.index("tool-approval-request")
    assert kinds.index("tool-approval-request") < kinds.index("finish-step")
    assert "tool-output-available" not in kinds
    assert PAID == []
