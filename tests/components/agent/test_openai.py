"""The tool loop through ``OpenAIChatModel`` and the real ``openai`` client, against the
OpenAI-compatible test server (tool-call arguments split across chunks)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from components.agent import Agent, StreamDeltas, component, tool
from components.agent.parts import parts_text
from components.models import OpenAIChatModel, ToolCall
from components.models.testing import OpenAITestServer
from core import ActionCtx, App, QueryCtx


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAITestServer]:
    with OpenAITestServer(chunk_size=3) as running:
        monkeypatch.setenv("OPENAI_BASE_URL", running.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        yield running


@tool
async def weather(ctx: ActionCtx, city: str, unit: str = "celsius") -> str:
    """The current weather in a city."""
    return f"sunny, 21 degrees {unit} in {city}"


@pytest.mark.parametrize("stream", [False, True])
def test_tool_loop_through_openai(
    make_test_app: Any, server: OpenAITestServer, stream: bool
) -> None:
    server.script_chat(
        ToolCall(id="call_1", name="weather", arguments={"city": "Oslo", "unit": "celsius"}),
        "It is sunny in Oslo.",
    )
    app = App()
    model = OpenAIChatModel("test-model")
    agent = Agent(
        app.use(component, name="agent"),
        name="w",
        model=model,
        instructions="Be brief.",
        tools=[weather],
        stream_throttle=0.0,
    )

    @app.action
    async def ask(ctx: ActionCtx) -> dict[str, Any]:
        thread_id = await agent.create_thread(ctx, user_id="ada")
        if stream:
            async with agent.stream_text(ctx, thread_id=thread_id, prompt="Weather?") as s:
                deltas = [d async for d in s]
            result = s.result
        else:
            deltas = []
            result = await agent.generate_text(ctx, thread_id=thread_id, prompt="Weather?")
        return {
            "thread_id": thread_id,
            "text": result.text,
            "deltas": deltas,
            "usage": result.usage.total_tokens,
        }

    @app.action
    async def close(ctx: ActionCtx) -> None:
        await model.aclose()

    @app.query
    def messages(ctx: QueryCtx, thread_id: str) -> list[dict[str, Any]]:
        return agent.list_messages(ctx, thread_id=thread_id).page

    @app.query
    def follow(ctx: QueryCtx, thread_id: str) -> StreamDeltas:
        return agent.stream_deltas(ctx, thread_id=thread_id)

    t = make_test_app(app)
    try:
        out = t.action(ask)
    finally:
        t.action(close)
    assert out["text"] == "It is sunny in Oslo."
    assert out["usage"] > 0
    saved = t.query(messages, {"thread_id": out["thread_id"]})
    assert [(m["order"], m["step_order"], m["role"], m["status"]) for m in saved] == [
        (0, 0, "user", "success"),
        (0, 1, "assistant", "success"),
        (0, 2, "tool", "success"),
        (0, 3, "assistant", "success"),
    ]
    assert saved[1]["tool_calls"] == [
        {"id": "call_1", "name": "weather", "arguments": {"city": "Oslo", "unit": "celsius"}}
    ]
    assert saved[2]["text"] == "sunny, 21 degrees celsius in Oslo"
    second = server.chat_requests[1].body
    assert second["messages"][-1]["role"] == "tool"
    assert second["messages"][-1]["tool_call_id"] == "call_1"
    assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == "weather"
    assert second["tools"][0]["function"]["name"] == "weather"
    assert second.get("stream", False) is stream
    server.assert_consumed()
    if stream:
        assert "".join(out["deltas"]) == "It is sunny in Oslo." and len(out["deltas"]) > 1
        parts = [
            p
            for d in t.query(follow, {"thread_id": out["thread_id"]})["deltas"]
            for p in d["parts"]
        ]
        fragments = [p["input_text_delta"] for p in parts if p["type"] == "tool-input-delta"]
        assert len(fragments) > 1  # the arguments arrived split across chunks
        assert "".join(fragments) == '{"city":"Oslo","unit":"celsius"}'
        assert parts_text(parts) == "It is sunny in Oslo."


def test_generate_object_through_openai(make_test_app: Any, server: OpenAITestServer) -> None:
    import pydantic

    class Forecast(pydantic.BaseModel):
        city: str
        degrees: int

    server.script_chat({"city": "Oslo", "degrees": 21})
    app = App()
    model = OpenAIChatModel("test-model")
    agent = Agent(app.use(component, name="agent"), name="o", model=model)

    @app.action
    async def ask(ctx: ActionCtx) -> dict[str, Any]:
        try:
            thread_id = await agent.create_thread(ctx)
            result = await agent.generate_object(
                ctx, thread_id=thread_id, schema=Forecast, prompt="Oslo?"
            )
            return result.object.model_dump()
        finally:
            await model.aclose()

    t = make_test_app(app)
    assert t.action(ask) == {"city": "Oslo", "degrees": 21}
    body = server.chat_requests[0].body
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "Forecast"
    assert "tools" not in body or not body["tools"]
