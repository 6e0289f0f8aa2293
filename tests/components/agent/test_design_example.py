"""DESIGN.md's agent example as written: a mutation saves the prompt and schedules the reply."""

from __future__ import annotations

from typing import Any

from components.agent import Agent, tool
from components.agent import component as agent_component
from components.models import ScriptedChatModel, ToolCall
from core import ActionCtx, App, MutationCtx, QueryCtx


@tool
async def weather(ctx: ActionCtx, city: str) -> str:
    """The current weather in a city."""
    return f"sunny in {city}"


def test_design_example(make_test_app: Any) -> None:
    app = App()
    model = ScriptedChatModel(
        [ToolCall(name="weather", arguments={"city": "Oslo"}), "It is sunny in Oslo."]
    )
    helper = Agent(
        app.use(agent_component, name="agent"),
        name="helper",
        model=model,
        instructions="Be brief.",
        tools=[weather],
        max_steps=5,
    )

    @app.mutation
    def start(ctx: MutationCtx, text: str) -> str:
        thread_id = helper.create_thread(ctx, user_id="ada")
        message_id = helper.save_message(ctx, thread_id=thread_id, role="user", text=text)
        ctx.scheduler.run_after(0, reply, {"thread_id": thread_id, "prompt_message_id": message_id})
        return thread_id

    @app.internal_action
    async def reply(ctx: ActionCtx, thread_id: str, prompt_message_id: str) -> None:
        await helper.generate_text(ctx, thread_id=thread_id, prompt_message_id=prompt_message_id)

    @app.query
    def conversation(ctx: QueryCtx, thread_id: str) -> list[tuple[str, str, str]]:
        page = helper.list_messages(ctx, thread_id=thread_id)
        return [(m["role"], m["status"], m["text"]) for m in page.page]

    t = make_test_app(app)
    thread_id = t.mutation(start, {"text": "Weather in Oslo?"})
    t.finish_scheduled()
    assert t.query(conversation, {"thread_id": thread_id}) == [
        ("user", "success", "Weather in Oslo?"),
        ("assistant", "success", ""),
        ("tool", "success", "sunny in Oslo"),
        ("assistant", "success", "It is sunny in Oslo."),
    ]
    model.assert_consumed()
