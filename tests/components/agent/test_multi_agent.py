"""Multi-agent: an agent as another's tool (on its own thread), and handoffs."""

from __future__ import annotations

from typing import Any

from components.agent import Agent, component
from components.models import ScriptedChatModel, ToolCall
from core import ActionCtx, App, QueryCtx


def test_agent_as_tool_runs_on_its_own_thread(make_test_app: Any) -> None:
    app = App()
    handle = app.use(component, name="agent")
    researcher = Agent(
        handle,
        name="researcher",
        instructions="Find facts.",
        model=ScriptedChatModel(["Oslo has 700k people."]),
    )
    boss = Agent(
        handle,
        name="boss",
        model=ScriptedChatModel(
            [
                ToolCall(id="r", name="research", arguments={"prompt": "Population of Oslo?"}),
                "About 700k.",
            ]
        ),
        tools=[researcher.as_tool(name="research")],
    )

    @app.action
    async def ask(ctx: ActionCtx) -> dict[str, Any]:
        thread_id = await boss.create_thread(ctx, user_id="ada")
        result = await boss.generate_text(ctx, thread_id=thread_id, prompt="How many?")
        return {"thread_id": thread_id, "text": result.text}

    @app.query
    def messages(ctx: QueryCtx, thread_id: str) -> list[dict[str, Any]]:
        return boss.list_messages(ctx, thread_id=thread_id).page

    t = make_test_app(app)
    out = t.action(ask)
    assert out["text"] == "About 700k."
    saved = t.query(messages, {"thread_id": out["thread_id"]})
    assert saved[2]["text"] == "Oslo has 700k people."
    assert [m["agent_name"] for m in saved[1:]] == ["boss", "boss", "boss"]
    # The researcher's own conversation lives on a thread of its own.
    research_request = researcher.model.requests[0]  # type: ignore[attr-defined]
    assert [m.text for m in research_request.messages] == ["Find facts.", "Population of Oslo?"]


def test_handoff_transfers_the_conversation(make_test_app: Any) -> None:
    app = App()
    handle = app.use(component, name="agent")
    billing = Agent(
        handle,
        name="billing",
        instructions="You handle billing.",
        model=ScriptedChatModel(["Your invoice is paid."]),
    )
    triage = Agent(
        handle,
        name="triage",
        instructions="Route the user.",
        model=ScriptedChatModel([ToolCall(id="h", name="transfer_to_billing")]),
        handoffs=[billing],
    )

    @app.action
    async def ask(ctx: ActionCtx) -> dict[str, Any]:
        thread_id = await triage.create_thread(ctx)
        result = await triage.generate_text(ctx, thread_id=thread_id, prompt="My invoice?")
        return {"thread_id": thread_id, "text": result.text, "agent": result.agent_name}

    @app.query
    def messages(ctx: QueryCtx, thread_id: str) -> list[dict[str, Any]]:
        return triage.list_messages(ctx, thread_id=thread_id).page

    t = make_test_app(app)
    out = t.action(ask)
    assert out == {**out, "text": "Your invoice is paid.", "agent": "billing"}
    saved = t.query(messages, {"thread_id": out["thread_id"]})
    assert [(m["role"], m["agent_name"]) for m in saved] == [
        ("user", None),
        ("assistant", "triage"),
        ("tool", "triage"),
        ("assistant", "billing"),
    ]
    request = billing.model.requests[0]  # type: ignore[attr-defined]
    assert request.messages[0].text == "You handle billing."
    assert request.messages[-1].role == "tool"
    assert "transfer_to_billing" in {t.name for t in triage.model.requests[0].tools}  # type: ignore[attr-defined]
