"""kill -9 in the middle of a streamed generation, then the sweeper: nothing stays pending."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.agent import Agent, component
from components.models import ScriptedChatModel
from core import App, QueryCtx
from core.storage.base import Storage
from core.testing import TestApp

CRASH_APP = Path(__file__).with_name("crash_app.py")


def test_sweeper_fails_what_a_killed_process_left(storage: Storage, child_process: Any) -> None:
    child = child_process(CRASH_APP, storage.url)
    seen = child.wait_for(lambda v: v["text"] == "Partial answer")
    child.kill()
    thread_id = seen["thread_id"]

    app = App()
    agent = Agent(app.use(component, name="agent"), name="crashy", model=ScriptedChatModel([]))

    @app.query
    def state(ctx: QueryCtx) -> dict[str, Any]:
        return {
            "messages": agent.list_messages(ctx, thread_id=thread_id).page,
            "view": agent.stream_deltas(ctx, thread_id=thread_id),
        }

    with TestApp(app, storage=storage) as t:
        before = t.query(state)
        assert [m["status"] for m in before["messages"]] == ["success", "pending"]
        assert before["view"]["streams"][0]["status"] == "streaming"
        t.finish_scheduled()  # the lease has not run out: nothing is swept yet
        assert t.query(state)["messages"][-1]["status"] == "pending"
        t.advance_time(60)  # past the lease (30 s) and the sweep interval
        t.finish_scheduled()
        after = t.query(state)
        assert [m["status"] for m in after["messages"]] == ["success", "failed"]
        assert "lease ran out" in after["messages"][-1]["error"]
        assert after["messages"][-1]["text"] == "Partial answer"  # the partial text is kept
        assert after["view"]["streams"][0]["status"] == "failed"
        assert after["view"]["done"]
