"""Agent calls as durable workflow steps (``agent.text_step``)."""

from __future__ import annotations

from typing import Any

from components.agent import Agent
from components.agent import component as agent_component
from components.models import ScriptedChatModel
from components.workflow import WorkflowManager
from components.workflow import component as workflow_component
from core import App, MutationCtx, QueryCtx


def test_two_agents_as_workflow_steps(make_test_app: Any) -> None:
    app = App()
    handle = app.use(agent_component, name="agent")
    writer = Agent(handle, name="writer", model=ScriptedChatModel(["A draft."]))
    editor = Agent(handle, name="editor", model=ScriptedChatModel(["An edited draft."]))
    manager = WorkflowManager(app.use(workflow_component, name="workflow"))

    @manager.define
    async def write_and_edit(step: Any, thread_id: str) -> str:
        draft = await step.run_action(
            writer.text_step, {"agent_name": "writer", "thread_id": thread_id, "prompt": "Write."}
        )
        edited = await step.run_action(
            editor.text_step,
            {"agent_name": "editor", "thread_id": thread_id, "prompt": "Edit: " + draft["text"]},
        )
        return str(edited["text"])

    @app.mutation
    def start(ctx: MutationCtx) -> list[str]:
        thread_id = writer.create_thread(ctx)
        return [thread_id, str(manager.start(ctx, write_and_edit, {"thread_id": thread_id}))]

    @app.query
    def outcome(ctx: QueryCtx, workflow_id: str, thread_id: str) -> Any:
        status = manager.status(ctx, workflow_id)
        texts = [
            (m["agent_name"], m["text"])
            for m in writer.list_messages(ctx, thread_id=thread_id).page
        ]
        return [status.state, status.result, texts]

    t = make_test_app(app)
    thread_id, workflow_id = t.mutation(start)
    t.finish_scheduled()
    state, result, texts = t.query(outcome, {"workflow_id": workflow_id, "thread_id": thread_id})
    assert (state, result) == ("success", "An edited draft.")
    assert texts == [
        (None, "Write."),
        ("writer", "A draft."),
        (None, "Edit: A draft."),
        ("editor", "An edited draft."),
    ]


def test_agents_belong_to_their_instance_and_the_latest_of_a_name_wins(
    make_test_app: Any,
) -> None:
    app = App()
    first = app.use(agent_component, name="first")
    second = app.use(agent_component, name="second")
    Agent(first, name="a", model=ScriptedChatModel(["old"]))
    newer = Agent(first, name="a", model=ScriptedChatModel(["new"]))
    other = Agent(second, name="a", model=ScriptedChatModel(["other"]))

    @app.action
    async def run(ctx: Any) -> list[str]:
        texts = []
        for agent in (newer, other):
            thread_id = await agent.create_thread(ctx)
            out = await ctx.run_action(
                agent.text_step, {"agent_name": "a", "thread_id": thread_id, "prompt": "hi"}
            )
            texts.append(out["text"])
        return texts

    t = make_test_app(app)
    assert t.action(run) == ["new", "other"]
