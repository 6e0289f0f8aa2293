"""Persisted streaming: deltas followed live through a subscription, aborts, cleanup."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from components.agent import Agent, StreamDeltas, component, tool
from components.agent.parts import parts_text
from components.agent.streams import format_cursor, parse_cursor
from components.models import (
    FinalResponse,
    ModelRequest,
    ModelResponse,
    ScriptedChatModel,
    StreamEvent,
    TextDelta,
    ToolCall,
)
from core import ActionCtx, App, MutationCtx, QueryCtx
from core.storage.base import Storage

PIECES = ["The ", "quick ", "brown ", "fox ", "jumps."]


class GatedModel:
    """Streams PIECES, each only after the test opens the gate (waits on state, not time)."""

    model = "gated"

    def __init__(self) -> None:
        self.gates = [anyio.Event() for _ in PIECES]

    async def request(self, req: ModelRequest) -> ModelResponse:
        raise AssertionError("streamed only")

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamEvent]:
        for gate, piece in zip(self.gates, PIECES, strict=True):
            await gate.wait()
            yield TextDelta(text=piece)
        yield FinalResponse(response=ModelResponse(text="".join(PIECES), model="gated"))


def make_app(storage: Storage, model: Any, **kw: Any) -> tuple[App, Agent, dict[str, Any]]:
    app = App(storage=storage)
    agent = Agent(
        app.use(component, name="agent"), name="streamer", model=model, stream_throttle=0.0, **kw
    )

    @app.mutation
    def new_thread(ctx: MutationCtx) -> str:
        return agent.create_thread(ctx, user_id="u")

    @app.action
    async def ask(ctx: ActionCtx, thread_id: str, text: str) -> dict[str, Any]:
        seen: list[str] = []
        async with agent.stream_text(ctx, thread_id=thread_id, prompt=text) as stream:
            async for delta in stream:
                seen.append(delta)
        result = stream.result
        return {
            "text": result.text,
            "seen": seen,
            "finish": result.finish_reason,
            "message_id": result.message_id,
        }

    @app.query
    def follow(ctx: QueryCtx, thread_id: str, cursor: str | None = None) -> StreamDeltas:
        return agent.stream_deltas(ctx, thread_id=thread_id, cursor=cursor)

    @app.query
    def messages(ctx: QueryCtx, thread_id: str) -> list[dict[str, Any]]:
        return agent.list_messages(ctx, thread_id=thread_id).page

    @app.mutation
    def stop(ctx: MutationCtx, thread_id: str) -> int:
        return agent.abort_stream(ctx, thread_id=thread_id, reason="user pressed stop")

    return (
        app,
        agent,
        {
            "new_thread": new_thread,
            "ask": ask,
            "follow": follow,
            "messages": messages,
            "stop": stop,
        },
    )


def text_of(view: dict[str, Any]) -> str:
    return parts_text(p for d in view["deltas"] for p in d["parts"])


async def test_a_follower_sees_a_growing_prefix_then_the_final_text(storage: Storage) -> None:
    model = GatedModel()
    app, _, r = make_app(storage, model)
    async with app.client() as client:
        thread_id = await client.mutation(r["new_thread"], {})
        outcome: dict[str, Any] = {}

        async def generate() -> None:
            outcome.update(await client.action(r["ask"], {"thread_id": thread_id, "text": "go"}))

        seen: list[str] = []
        async with anyio.create_task_group() as group:
            group.start_soon(generate)
            model.gates[0].set()
            with anyio.fail_after(30):
                async for view in client.subscribe(r["follow"], {"thread_id": thread_id}):
                    text = text_of(view)
                    if text and (not seen or seen[-1] != text):
                        seen.append(text)
                        opened = sum(g.is_set() for g in model.gates)
                        if text == "".join(PIECES[:opened]) and opened < len(PIECES):
                            model.gates[opened].set()
                    if view["done"] and view["streams"]:
                        break
        final = "".join(PIECES)
        # Every piece arrived as its own, growing prefix while the reply was generated.
        assert seen == ["".join(PIECES[: i + 1]) for i in range(len(PIECES))]
        assert outcome["text"] == final and outcome["seen"] == PIECES
        messages = await client.query(r["messages"], {"thread_id": thread_id})
        assert messages[-1]["text"] == final and messages[-1]["status"] == "success"
        view = await client.query(r["follow"], {"thread_id": thread_id})
        assert view["streams"][0]["status"] == "finished"
        assert "".join(d["text"] for d in view["deltas"]) == final
        # Catching up mid-stream: from a cursor in the middle only the rest comes back.
        first = view["deltas"][0]
        later = await client.query(
            r["follow"], {"thread_id": thread_id, "cursor": f"{first['stream_id']}:{first['end']}"}
        )
        assert text_of(later) == final[len(text_of({"deltas": [first]})) :]
        assert later["cursor"] == view["cursor"]
        starts = [d["start"] for d in view["deltas"]]
        ends = [d["end"] for d in view["deltas"]]
        assert starts[1:] == ends[:-1]  # contiguous [start, end) ranges


async def test_abort_from_another_client_keeps_the_partial_text(storage: Storage) -> None:
    model = GatedModel()
    app, _, r = make_app(storage, model)
    async with app.client() as client, app.client() as other:
        thread_id = await client.mutation(r["new_thread"], {})
        outcome: dict[str, Any] = {}

        async def generate() -> None:
            outcome.update(await client.action(r["ask"], {"thread_id": thread_id, "text": "go"}))

        async with anyio.create_task_group() as group:
            group.start_soon(generate)
            model.gates[0].set()
            with anyio.fail_after(30):
                async for view in other.subscribe(r["follow"], {"thread_id": thread_id}):
                    if text_of(view) == PIECES[0]:
                        break
            assert await other.mutation(r["stop"], {"thread_id": thread_id}) >= 1
            for gate in model.gates[1:]:
                gate.set()
        assert outcome["finish"] == "aborted"
        messages = await client.query(r["messages"], {"thread_id": thread_id})
        assert [m["status"] for m in messages] == ["success", "failed"]
        assert messages[-1]["text"].startswith(PIECES[0])
        assert "user pressed stop" in messages[-1]["error"]
        view = await client.query(r["follow"], {"thread_id": thread_id})
        assert view["streams"][0]["status"] == "aborted" and view["done"]


def test_tool_parts_and_cleanup(make_test_app: Any, storage: Storage) -> None:
    @tool
    async def lookup(ctx: ActionCtx, city: str) -> dict[str, Any]:
        """Look a city up."""
        return {"city": city, "temp": 18}

    model = ScriptedChatModel(
        [ToolCall(id="c1", name="lookup", arguments={"city": "Oslo"}), "18 degrees"], chunk_size=4
    )
    app = App()
    agent = Agent(
        app.use(component, name="agent"),
        name="s",
        model=model,
        tools=[lookup],
        stream_throttle=0.0,
        stream_cleanup_delay=60.0,
    )

    @app.action
    async def ask(ctx: ActionCtx) -> str:
        thread_id = await agent.create_thread(ctx)
        async with agent.stream_text(ctx, thread_id=thread_id, prompt="weather?"):
            pass
        return thread_id

    @app.query
    def follow(ctx: QueryCtx, thread_id: str) -> StreamDeltas:
        return agent.stream_deltas(ctx, thread_id=thread_id)

    t = make_test_app(app)
    thread_id = t.action(ask)
    view = t.query(follow, {"thread_id": thread_id})
    parts = [p for d in view["deltas"] for p in d["parts"]]
    kinds = [p["type"] for p in parts]
    assert kinds[:2] == ["start-step", "tool-input-start"]
    assert {
        "type": "tool-input-available",
        "tool_call_id": "c1",
        "tool_name": "lookup",
        "input": {"city": "Oslo"},
    } in parts
    assert {
        "type": "tool-output-available",
        "tool_call_id": "c1",
        "output": {"city": "Oslo", "temp": 18},
    } in parts
    assert (
        "".join(p["input_text_delta"] for p in parts if p["type"] == "tool-input-delta")
        == '{"city":"Oslo"}'
    )
    assert kinds.count("start-step") == kinds.count("finish-step") == 2
    assert parts_text(parts) == "18 degrees"
    assert view["done"]
    t.advance_time(61)
    t.finish_scheduled()
    assert t.query(follow, {"thread_id": thread_id}) == {
        "streams": [],
        "deltas": [],
        "cursor": "",
        "done": True,
    }


def test_cursor_round_trip() -> None:
    ends = {"a1": 3, "b2": 10}
    assert parse_cursor(format_cursor(ends)) == ends
    assert parse_cursor(None) == {} and parse_cursor("junk") == {}


@pytest.mark.parametrize("throttle", [0.0, 0.25])
def test_throttled_stream_still_persists_everything(make_test_app: Any, throttle: float) -> None:
    text = "word " * 40
    app = App()
    agent = Agent(
        app.use(component, name="agent"),
        name="s",
        model=ScriptedChatModel([text], chunk_size=3),
        stream_throttle=throttle,
    )

    @app.action
    async def ask(ctx: ActionCtx) -> str:
        thread_id = await agent.create_thread(ctx)
        async with agent.stream_text(ctx, thread_id=thread_id, prompt="talk"):
            pass
        return thread_id

    @app.query
    def follow(ctx: QueryCtx, thread_id: str) -> StreamDeltas:
        return agent.stream_deltas(ctx, thread_id=thread_id)

    t = make_test_app(app)
    view = t.query(follow, {"thread_id": t.action(ask)})
    assert text_of(view) == text
    if throttle:
        assert len(view["deltas"]) <= 3  # the tail comes with the final save


class GatedRequestModel:
    """Answers a whole request, once the test opens the gate."""

    model = "gated"

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.gate = anyio.Event()

    async def request(self, req: ModelRequest) -> ModelResponse:
        self.started.set()
        await self.gate.wait()
        return ModelResponse(text="too late", model="gated")

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamEvent]:
        yield FinalResponse(response=await self.request(req))


async def test_abort_stops_a_generation_that_is_not_streamed(storage: Storage) -> None:
    model = GatedRequestModel()
    app = App(storage=storage)
    agent = Agent(app.use(component, name="agent"), name="quiet", model=model)

    @app.action
    async def ask(ctx: ActionCtx, thread_id: str) -> str:
        result = await agent.generate_text(ctx, thread_id=thread_id, prompt="go")
        return result.finish_reason

    @app.mutation
    def new_thread(ctx: MutationCtx) -> str:
        return agent.create_thread(ctx)

    @app.mutation
    def stop(ctx: MutationCtx, thread_id: str) -> int:
        return agent.abort_stream(ctx, thread_id=thread_id)

    @app.query
    def statuses(ctx: QueryCtx, thread_id: str) -> list[str]:
        return [m["status"] for m in agent.list_messages(ctx, thread_id=thread_id).page]

    async with app.client() as client:
        thread_id = await client.mutation(new_thread, {})
        finish: list[str] = []

        async def generate() -> None:
            finish.append(await client.action(ask, {"thread_id": thread_id}))

        async with anyio.create_task_group() as group:
            group.start_soon(generate)
            await model.started.wait()
            assert await client.mutation(stop, {"thread_id": thread_id}) == 1
            model.gate.set()
        assert finish == ["aborted"]
        assert await client.query(statuses, {"thread_id": thread_id}) == ["success", "failed"]


async def test_deleting_the_thread_mid_generation_stops_it(storage: Storage) -> None:
    model = GatedRequestModel()
    app = App(storage=storage)
    agent = Agent(app.use(component, name="agent"), name="quiet", model=model)

    @app.action
    async def ask(ctx: ActionCtx, thread_id: str) -> str:
        result = await agent.generate_text(ctx, thread_id=thread_id, prompt="go")
        return result.finish_reason

    @app.mutation
    def new_thread(ctx: MutationCtx) -> str:
        return agent.create_thread(ctx)

    @app.mutation
    def delete(ctx: MutationCtx, thread_id: str) -> bool:
        return agent.delete_thread(ctx, thread_id)

    @app.query
    def left(ctx: QueryCtx, thread_id: str) -> int:
        return len(agent.list_messages(ctx, thread_id=thread_id).page)

    async with app.client(runtime=False) as client:
        thread_id = await client.mutation(new_thread, {})
        finish: list[str] = []

        async def generate() -> None:
            finish.append(await client.action(ask, {"thread_id": thread_id}))

        async with anyio.create_task_group() as group:
            group.start_soon(generate)
            await model.started.wait()
            assert await client.mutation(delete, {"thread_id": thread_id}) is True
            model.gate.set()
        assert finish == ["aborted"]
        assert await client.query(left, {"thread_id": thread_id}) == 0
