"""generate_object / stream_object, usage (per step, totals, cost, handler), threads."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from components.agent import (
    Agent,
    ObjectGenerationError,
    Price,
    StepUsage,
    ThreadNotFoundError,
    component,
    tool,
)
from components.models import ModelResponse, ScriptedChatModel, ToolCall, Usage
from core import ActionCtx, App, MutationCtx, QueryCtx


class City(pydantic.BaseModel):
    name: str
    population: int


def object_app(model: ScriptedChatModel) -> tuple[App, dict[str, Any]]:
    app = App()
    agent = Agent(app.use(component, name="agent"), name="o", model=model, stream_throttle=0.0)

    @app.action
    async def extract(ctx: ActionCtx, stream: bool = False) -> dict[str, Any]:
        thread_id = await agent.create_thread(ctx)
        try:
            if stream:
                async with agent.stream_object(
                    ctx, thread_id=thread_id, schema=City, prompt="Oslo?"
                ) as s:
                    partials = [p async for p in s]
                result = s.result
            else:
                partials = []
                result = await agent.generate_object(
                    ctx, thread_id=thread_id, schema=City, prompt="Oslo?"
                )
        except ObjectGenerationError as exc:
            return {"thread_id": thread_id, "error": str(exc)}
        assert isinstance(result.object, City)
        return {"thread_id": thread_id, "object": result.object.model_dump(), "partials": partials}

    @app.query
    def messages(ctx: QueryCtx, thread_id: str) -> list[dict[str, Any]]:
        return agent.list_messages(ctx, thread_id=thread_id).page

    return app, {"extract": extract, "messages": messages}


def test_generate_object_validates(make_test_app: Any) -> None:
    model = ScriptedChatModel([{"name": "Oslo", "population": 700000}])
    app, r = object_app(model)
    t = make_test_app(app)
    out = t.action(r["extract"])
    assert out["object"] == {"name": "Oslo", "population": 700000}
    assert model.requests[0].output_schema is not None
    assert model.requests[0].output_schema.name == "City"
    saved = t.query(r["messages"], {"thread_id": out["thread_id"]})
    assert saved[-1]["status"] == "success" and '"Oslo"' in saved[-1]["text"]


def test_an_invalid_reply_is_retried_then_reported(make_test_app: Any) -> None:
    model = ScriptedChatModel([{"name": "Oslo"}, {"name": "Oslo", "population": 1}])
    app, r = object_app(model)
    t = make_test_app(app)
    assert t.action(r["extract"])["object"]["population"] == 1
    assert "population" in model.requests[1].messages[-1].text
    model = ScriptedChatModel(["not json", {"population": "many"}])
    app, r = object_app(model)
    t = make_test_app(app)
    out = t.action(r["extract"])
    assert "did not validate" in out["error"] and '"City"' in out["error"]
    saved = t.query(r["messages"], {"thread_id": out["thread_id"]})
    assert [m["status"] for m in saved] == ["success", "failed"]


def test_stream_object_yields_partial_objects(make_test_app: Any) -> None:
    model = ScriptedChatModel([{"name": "Oslo", "population": 700000}], chunk_size=5)
    app, r = object_app(model)
    t = make_test_app(app)
    out = t.action(r["extract"], {"stream": True})
    assert out["object"]["name"] == "Oslo"
    assert len(out["partials"]) > 1 and out["partials"][-1] == out["object"]
    assert {"name": "Oslo"} in out["partials"] or out["partials"][0] != out["object"]


@tool
async def noop(ctx: ActionCtx) -> str:
    """Nothing."""
    return "done"


def test_usage_per_step_totals_cost_and_handler(make_test_app: Any) -> None:
    seen: list[StepUsage] = []
    model = ScriptedChatModel(
        [
            ModelResponse(
                tool_calls=(ToolCall(id="n", name="noop"),),
                finish_reason="tool_calls",
                usage=Usage(prompt_tokens=100, completion_tokens=10, total_tokens=110),
            ),
            ModelResponse(
                text="ok", usage=Usage(prompt_tokens=120, completion_tokens=5, total_tokens=125)
            ),
            "estimated",
        ],
        model="gpt-test",
    )
    app = App()
    agent = Agent(
        app.use(component, name="agent"),
        name="u",
        model=model,
        tools=[noop],
        prices={"gpt-*": Price(prompt=1.0, completion=2.0)},
        usage_handler=lambda ctx, usage: seen.append(usage),
    )

    @app.action
    async def ask(ctx: ActionCtx, thread_id: str) -> int:
        result = await agent.generate_text(ctx, thread_id=thread_id, prompt="hi")
        return result.usage.total_tokens

    @app.mutation
    def new_thread(ctx: MutationCtx) -> str:
        return agent.create_thread(ctx, user_id="ada")

    @app.query
    def totals(
        ctx: QueryCtx, thread_id: str | None = None, user_id: str | None = None
    ) -> dict[str, Any]:
        found = agent.usage(ctx, thread_id=thread_id, user_id=user_id)
        return {"total": found.total_tokens, "cost": found.cost, "steps": found.steps}

    t = make_test_app(app)
    first = t.mutation(new_thread)
    assert t.action(ask, {"thread_id": first}) == 235
    assert [s.total_tokens for s in seen] == [110, 125]
    assert seen[0].usage.prompt_tokens == seen[0].prompt_tokens == 100
    assert seen[0].cost == pytest.approx((100 * 1.0 + 10 * 2.0) / 1e6)
    assert seen[0].thread_id == first and seen[0].user_id == "ada"
    totals_first = t.query(totals, {"thread_id": first})
    assert totals_first["total"] == 235 and totals_first["steps"] == 2
    assert totals_first["cost"] == pytest.approx((220 * 1.0 + 15 * 2.0) / 1e6)
    second = t.mutation(new_thread)
    estimated = t.action(ask, {"thread_id": second})
    assert estimated > 0  # no usage from the provider: estimated with tiktoken
    assert t.query(totals, {"user_id": "ada"})["total"] == 235 + estimated


def test_threads_list_update_delete(make_test_app: Any) -> None:
    app = App()
    agent = Agent(app.use(component, name="agent"), name="t", model=ScriptedChatModel([]))

    @app.mutation
    def setup(ctx: MutationCtx) -> list[str]:
        ids = [agent.create_thread(ctx, user_id="ada", title=f"t{i}") for i in range(3)]
        agent.create_thread(ctx, user_id="bob")
        for i in range(30):
            agent.save_message(ctx, thread_id=ids[0], role="user", text=f"m{i}")
        return ids

    @app.query
    def listing(ctx: QueryCtx, user_id: str) -> list[str]:
        return [t["title"] for t in agent.list_threads(ctx, user_id=user_id).page]

    @app.mutation
    def rename(ctx: MutationCtx, thread_id: str) -> str | None:
        return agent.update_thread(ctx, thread_id, title="renamed")["title"]

    @app.mutation
    def delete(ctx: MutationCtx, thread_id: str) -> bool:
        return agent.delete_thread(ctx, thread_id, batch=7)

    @app.query
    def count(ctx: QueryCtx, thread_id: str) -> int:
        return len(agent.list_messages(ctx, thread_id=thread_id).page)

    @app.query
    def get(ctx: QueryCtx, thread_id: str) -> Any:
        return agent.get_thread(ctx, thread_id)

    t = make_test_app(app)
    ids = t.mutation(setup)
    assert t.query(listing, {"user_id": "ada"}) == ["t2", "t1", "t0"]
    assert t.mutation(rename, {"thread_id": ids[1]}) == "renamed"
    with pytest.raises(ThreadNotFoundError):
        t.mutation(rename, {"thread_id": "nope"})
    assert t.mutation(delete, {"thread_id": ids[0]}) is False  # 30 messages, 7 per batch
    t.finish_scheduled()
    assert t.query(count, {"thread_id": ids[0]}) == 0
    assert t.query(get, {"thread_id": ids[0]}) is None
    assert t.query(listing, {"user_id": "ada"}) == ["t2", "renamed"]
