"""ScriptedChatModel: each turn kind, recorded requests, running out, streaming in chunks."""

from __future__ import annotations

import json
import time

import anyio
import pytest

from components.models import (
    ChatModel,
    FinalResponse,
    ModelConfigError,
    ModelConnectionError,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    ScriptedChatModel,
    ScriptExhaustedError,
    ScriptNotConsumedError,
    StreamAccumulator,
    StreamEvent,
    StreamFailure,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from components.models.scripted import response_events


def ask(text: str = "Hi") -> ModelRequest:
    return ModelRequest(messages=[ModelMessage.user(text)])


async def collect(model: ScriptedChatModel, req: ModelRequest) -> list[StreamEvent]:
    return [event async for event in model.stream(req)]


def test_it_is_a_chat_model() -> None:
    assert isinstance(ScriptedChatModel([]), ChatModel)


async def test_a_str_turn_is_a_text_reply() -> None:
    model = ScriptedChatModel(["Hello!"])
    response = await model.request(ask())
    assert response.text == "Hello!"
    assert response.tool_calls == ()
    assert response.finish_reason == "stop"
    assert response.model == "scripted"


async def test_tool_call_turns() -> None:
    one = ToolCall(name="weather", arguments={"city": "Oslo"})
    two = [ToolCall(name="a", arguments={}), ToolCall(name="b", arguments={"x": 1})]
    model = ScriptedChatModel([one, two])
    first = await model.request(ask())
    assert first.tool_calls == (one,) and first.finish_reason == "tool_calls"
    assert first.tool_calls[0].id.startswith("call_")
    second = await model.request(ask())
    assert second.tool_calls == tuple(two) and second.finish_reason == "tool_calls"
    assert len({c.id for c in second.tool_calls}) == 2


async def test_a_dict_turn_is_a_structured_reply() -> None:
    model = ScriptedChatModel([{"name": "Ada", "tags": ["math", "é"]}])
    response = await model.request(ask())
    assert json.loads(response.text) == {"name": "Ada", "tags": ["math", "é"]}
    assert response.parse_json() == {"name": "Ada", "tags": ["math", "é"]}


async def test_a_model_response_turn_is_returned_as_is() -> None:
    call = ToolCall(id="call_1", name="t")
    usage = Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)
    turn = ModelResponse(
        text="partial", tool_calls=(call,), finish_reason="length", usage=usage, model="x"
    )
    assert await ScriptedChatModel([turn]).request(ask()) == turn


@pytest.mark.parametrize("turn", [ValueError("scripted failure"), ValueError])
async def test_an_exception_turn_fails_the_call(turn: object) -> None:
    model = ScriptedChatModel([turn, "after"])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        await model.request(ask())
    assert (await model.request(ask())).text == "after"
    assert len(model.requests) == 2


async def test_a_callable_turn_decides_from_the_request() -> None:
    def echo(req: ModelRequest) -> str:
        return f"you said {req.messages[-1].text}"

    model = ScriptedChatModel([echo, lambda req: lambda again: {"n": len(req.messages)}])
    assert (await model.request(ask("cheese"))).text == "you said cheese"
    assert (await model.request(ask())).parse_json() == {"n": 1}


async def test_a_turn_of_another_kind_is_a_clear_error() -> None:
    with pytest.raises(ModelConfigError, match="must be a str, a ToolCall"):
        await ScriptedChatModel([42]).request(ask())  # type: ignore[list-item]


async def test_requests_are_recorded() -> None:
    model = ScriptedChatModel(["a", "b"])
    first, second = ask("one"), ask("two")
    await model.request(first)
    _ = [e async for e in model.stream(second)]
    assert model.requests == [first, second]


async def test_running_out_of_turns_is_a_clear_error() -> None:
    model = ScriptedChatModel(["only one", "and two"])
    await model.request(ask())
    await model.request(ask())
    with pytest.raises(ScriptExhaustedError) as caught:
        await model.request(ask("one more please"))
    message = str(caught.value)
    assert "got request 3" in message and "only 2 turn(s) were scripted" in message
    assert "user: 'one more please'" in message
    assert caught.value.scripted == 2
    with pytest.raises(ScriptExhaustedError):
        await collect(model, ask())
    assert len(model.requests) == 4


async def test_assert_consumed() -> None:
    model = ScriptedChatModel(["a", ToolCall(name="weather"), RuntimeError("x")])
    await model.request(ask())
    with pytest.raises(ScriptNotConsumedError) as caught:
        model.assert_consumed()
    assert "used 1 of 3" in str(caught.value)
    assert "tool call 'weather'" in str(caught.value) and "error RuntimeError" in str(caught.value)
    assert model.remaining == 2
    model.add_turns("c")
    await model.request(ask())
    with pytest.raises(RuntimeError):
        await model.request(ask())
    await model.request(ask())
    model.assert_consumed()


async def test_usage_is_estimated_never_zero_by_accident() -> None:
    model = ScriptedChatModel(["a reply of six words here", ToolCall(name="f", arguments={})])
    text = await model.request(ask("How long is this prompt?"))
    assert text.usage.prompt_tokens > 6
    assert text.usage.completion_tokens == 6
    assert text.usage.total_tokens == text.usage.prompt_tokens + text.usage.completion_tokens
    call = await model.request(ask())
    assert call.usage.completion_tokens > 0


async def test_streaming_splits_text_into_chunk_size_deltas() -> None:
    model = ScriptedChatModel(["abcdefghij" * 2], chunk_size=7)
    events = await collect(model, ask())
    assert [e.text for e in events if isinstance(e, TextDelta)] == [
        "abcdefg",
        "hijabcd",
        "efghij",
    ]
    assert isinstance(events[-1], FinalResponse)
    assert events[-1].response.text == "abcdefghij" * 2
    assert events[-1].response.usage.completion_tokens > 0


async def test_streaming_splits_tool_call_arguments_into_deltas() -> None:
    calls = [
        ToolCall(id="c1", name="weather", arguments={"city": "Reykjavik"}),
        ToolCall(id="c2", name="time", arguments={"zone": "UTC"}),
    ]
    model = ScriptedChatModel([calls], chunk_size=5)
    events = await collect(model, ask())
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert deltas[0] == ToolCallDelta(index=0, id="c1", name="weather", arguments="")
    starts = [d for d in deltas if d.id is not None]
    assert [(d.index, d.id, d.name) for d in starts] == [(0, "c1", "weather"), (1, "c2", "time")]
    assert all(len(d.arguments) <= 5 for d in deltas)
    accumulator = StreamAccumulator()
    for delta in deltas:
        accumulator.add(delta)
    assert accumulator.tool_calls() == tuple(calls)
    assert isinstance(events[-1], FinalResponse) and events[-1].response.tool_calls == tuple(calls)


def test_interleaved_events_still_reassemble() -> None:
    calls = (ToolCall(name="a", arguments={"k": "v" * 20}), ToolCall(name="b", arguments={}))
    events = list(response_events(ModelResponse(tool_calls=calls), chunk_size=4, interleave=True))
    indexes = [e.index for e in events if isinstance(e, ToolCallDelta)]
    assert indexes[:4] == [0, 1, 0, 1]
    accumulator = StreamAccumulator()
    for event in events:
        if isinstance(event, ToolCallDelta):
            accumulator.add(event)
    assert accumulator.tool_calls() == calls


async def test_streamed_deltas_are_delay_seconds_apart() -> None:
    model = ScriptedChatModel(["x" * 40], chunk_size=10, delay=0.02)
    arrivals: list[float] = []
    async for event in model.stream(ask()):
        if isinstance(event, TextDelta):
            arrivals.append(time.monotonic())
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert len(gaps) == 3 and all(gap >= 0.015 for gap in gaps)


async def test_a_slow_stream_lets_other_tasks_run() -> None:
    # A reader can act between deltas (e.g. notice an abort) because each delta yields.
    model = ScriptedChatModel(["abcdefgh"], chunk_size=1)
    seen: list[str] = []
    progressed = anyio.Event()

    async def other() -> None:
        progressed.set()

    async with anyio.create_task_group() as group:
        group.start_soon(other)
        async for event in model.stream(ask()):
            if isinstance(event, TextDelta):
                seen.append(event.text)
                if len(seen) == 2:
                    with anyio.fail_after(5):
                        await progressed.wait()
    assert "".join(seen) == "abcdefgh"


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_bad_options_are_refused(bad: object) -> None:
    with pytest.raises(ModelConfigError, match="chunk_size must be a positive integer"):
        ScriptedChatModel([], chunk_size=bad)  # type: ignore[arg-type]
    with pytest.raises(ModelConfigError, match="delay"):
        ScriptedChatModel([], delay=-1)


async def test_a_stream_failure_streams_the_start_then_fails() -> None:
    model = ScriptedChatModel(
        [
            StreamFailure(turn="abcdefghijkl", after=2),
            StreamFailure(turn="abc", after=99, error=ValueError("custom")),
            StreamFailure(turn="whole"),
        ],
        chunk_size=4,
    )
    seen: list[str] = []
    with pytest.raises(ModelConnectionError, match="broke off after 2 delta"):
        async for event in model.stream(ask()):
            assert isinstance(event, TextDelta)
            seen.append(event.text)
    assert seen == ["abcd", "efgh"]
    events: list[StreamEvent] = []
    with pytest.raises(ValueError, match="custom"):
        async for event in model.stream(ask()):
            events.append(event)
    assert events == [TextDelta(text="abc")]  # Never the FinalResponse.
    with pytest.raises(ModelConnectionError):
        await model.request(ask())  # Asked for whole, it fails at once.
    model.assert_consumed()


async def test_a_callable_may_return_a_stream_failure() -> None:
    model = ScriptedChatModel([lambda req: StreamFailure(turn="xyz", after=1)], chunk_size=1)
    seen = []
    with pytest.raises(ModelConnectionError):
        async for event in model.stream(ask()):
            seen.append(event)
    assert seen == [TextDelta(text="x")]


def echo_turn(req: ModelRequest) -> str:
    return req.messages[-1].text


def test_turns_are_described_for_errors() -> None:
    model = ScriptedChatModel(
        [
            "a" * 40,
            ValueError,
            {"a": 1},
            ModelResponse(text="r"),
            [ToolCall(name="f"), ToolCall(name="g")],
            StreamFailure(turn="x", after=3),
            echo_turn,
        ]
    )
    with pytest.raises(ScriptNotConsumedError) as caught:
        model.assert_consumed()
    assert caught.value.remaining == [
        "text 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'...",
        "error ValueError",
        "structured output",
        "response",
        "2 tool calls",
        "stream failure after 3 delta(s)",
        "callable echo_turn",
    ]


async def test_callables_returning_callables_forever_are_refused() -> None:
    def forever(req: ModelRequest) -> object:
        return forever

    with pytest.raises(ModelConfigError, match="returned callables 16 times"):
        await ScriptedChatModel([forever]).request(ask())  # type: ignore[list-item]
