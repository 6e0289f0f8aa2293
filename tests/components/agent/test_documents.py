"""The TypedDicts of ``components.agent.documents`` describe what ``Agent`` methods return."""

from __future__ import annotations

from typing import Any

from components.agent import (
    Agent,
    ApprovalDecision,
    ApprovalDocument,
    MessageDocument,
    StreamDelta,
    StreamDeltas,
    StreamInfo,
    ThreadDocument,
    component,
    tool,
)
from components.models import ScriptedChatModel, ToolCall
from core import ActionCtx, App, MutationCtx, QueryCtx
from core.storage.base import Storage
from core.testing import TestApp


@tool(needs_approval=True)
async def pay(ctx: ActionCtx, amount: int) -> str:
    """Pay an amount."""
    return f"paid {amount}"


def assert_shape(shape: type[Any], value: Any) -> None:
    """``value`` has every key of ``shape`` and no other (``NotRequired`` ones may be absent)."""
    # The module uses future annotations, so NotRequired is only visible in the strings.
    annotations: dict[str, Any] = shape.__annotations__
    optional = {k for k, a in annotations.items() if "NotRequired[" in str(a)}
    assert isinstance(value, dict)
    assert set(annotations) - optional <= set(value) <= set(annotations), (shape, value)


def test_documents_match_the_values_returned(storage: Storage) -> None:
    model = ScriptedChatModel(
        ["Hello there, streaming.", ToolCall(id="p1", name="pay", arguments={"amount": 5})]
    )
    app = App(storage=storage)
    agent = Agent(
        app.use(component, name="agent"),
        name="helper",
        model=model,
        tools=[pay],
        stream_throttle=0,
    )

    @app.action
    async def converse(ctx: ActionCtx) -> str:
        thread_id = await agent.create_thread(ctx, user_id="ada", title="t")
        async with agent.stream_text(ctx, thread_id=thread_id, prompt="hello") as stream:
            async for _ in stream:
                pass
        await agent.generate_text(ctx, thread_id=thread_id, prompt="pay 5")
        return thread_id

    @app.query
    def read(ctx: QueryCtx, thread_id: str) -> dict[str, Any]:
        page = agent.list_messages(ctx, thread_id=thread_id)
        return {
            "thread": agent.get_thread(ctx, thread_id),
            "message": agent.get_message(ctx, page.page[0]["_id"]),
            "found": agent.search_messages(ctx, query="hello", thread_id=thread_id),
            "deltas": agent.stream_deltas(ctx, thread_id=thread_id),
            "approvals": agent.pending_approvals(ctx, thread_id=thread_id),
        }

    @app.mutation
    def change(ctx: MutationCtx, thread_id: str, message_id: str) -> dict[str, Any]:
        return {
            "thread": agent.update_thread(ctx, thread_id, title="renamed"),
            "message": agent.update_message(ctx, message_id, text="edited"),
            "decision": agent.approve_tool_call(ctx, tool_call_id="p1"),
        }

    with TestApp(app, storage=storage) as t:
        thread_id = t.action(converse)
        got = t.query(read, {"thread_id": thread_id})
        assert_shape(ThreadDocument, got["thread"])
        assert_shape(MessageDocument, got["message"])
        assert got["found"]
        for found in got["found"]:
            assert_shape(MessageDocument, found)
        assert_shape(StreamDeltas, got["deltas"])
        assert got["deltas"]["streams"] and got["deltas"]["deltas"]
        assert_shape(StreamInfo, got["deltas"]["streams"][0])
        assert_shape(StreamDelta, got["deltas"]["deltas"][0])
        assert [a["tool_call_id"] for a in got["approvals"]] == ["p1"]
        assert_shape(ApprovalDocument, got["approvals"][0])

        changed = t.mutation(change, {"thread_id": thread_id, "message_id": got["message"]["_id"]})
        assert_shape(ThreadDocument, changed["thread"])
        assert_shape(MessageDocument, changed["message"])
        assert_shape(ApprovalDecision, changed["decision"])
        assert changed["decision"]["ready"] is True
        for approval in changed["decision"]["approvals"]:
            assert_shape(ApprovalDocument, approval)
