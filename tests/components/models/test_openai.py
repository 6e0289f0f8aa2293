"""OpenAIChatModel and OpenAIEmbedder: the real ``openai`` client against the test server."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator

import anyio
import pytest

pytest.importorskip("openai", reason="needs the openai extra: pip install -e '.[openai]'")

import openai

from components.models import (
    Backoff,
    FinalResponse,
    ModelAPIError,
    ModelConfigError,
    ModelConnectionError,
    ModelMessage,
    ModelRateLimitError,
    ModelRequest,
    ModelResponse,
    ModelResponseError,
    OpenAIChatModel,
    OutputSchema,
    StreamEvent,
    StreamFailure,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
    open_stream,
)
from components.models.testing import ErrorReply, OpenAITestServer

FAST = Backoff(initial_delay=0.0, jitter=0.0)
WEATHER = ToolSpec(
    name="weather",
    description="The weather in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


@pytest.fixture
async def client(server: OpenAITestServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with server.client() as client:
        yield client


def ask(text: str = "Hi", **fields: object) -> ModelRequest:
    return ModelRequest(messages=[ModelMessage.user(text)], **fields)  # type: ignore[arg-type]


async def collect(model: OpenAIChatModel, req: ModelRequest) -> list[StreamEvent]:
    return [event async for event in model.stream(req)]


# -- chat: text ------------------------------------------------------------------------------


async def test_text_reply(server: OpenAITestServer, client: openai.AsyncOpenAI) -> None:
    server.script_chat("Hello there, how can I help you today?")
    model = OpenAIChatModel("gpt-4o-mini", client=client, backoff=FAST)
    response = await model.request(ask())
    assert response.text == "Hello there, how can I help you today?"
    assert response.finish_reason == "stop"
    assert response.tool_calls == ()
    assert response.model == "gpt-4o-mini"
    assert response.usage.prompt_tokens > 0
    assert response.usage.completion_tokens > 0
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )
    body = server.chat_requests[0].body
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"] == [{"role": "user", "content": "Hi"}]
    assert "stream" not in body


async def test_text_reply_streamed(server: OpenAITestServer, client: openai.AsyncOpenAI) -> None:
    text = "Streaming works one small piece at a time."
    server.script_chat(text)
    model = OpenAIChatModel("gpt-4o-mini", client=client, backoff=FAST)
    events = await collect(model, ask())
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == math.ceil(len(text) / 8)  # The server streams 8-character pieces.
    assert "".join(deltas) == text
    assert isinstance(events[-1], FinalResponse)
    assert [e for e in events if isinstance(e, FinalResponse)] == [events[-1]]
    final = events[-1].response
    assert final.text == text
    assert final.finish_reason == "stop"
    assert final.usage.completion_tokens > 0 and final.usage.prompt_tokens > 0
    body = server.chat_requests[0].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_usage_is_the_servers_when_it_reports_one(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    usage = Usage(prompt_tokens=11, completion_tokens=22, total_tokens=33)
    server.script_chat(ModelResponse(text="x", usage=usage), ModelResponse(text="y", usage=usage))
    model = OpenAIChatModel("m", client=client, backoff=FAST)
    assert (await model.request(ask())).usage == usage
    events = await collect(model, ask())
    assert isinstance(events[-1], FinalResponse) and events[-1].response.usage == usage


async def test_usage_is_counted_when_the_server_sends_none(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    server.script_chat("a reply of several words", "whole")
    model = OpenAIChatModel("m", client=client, backoff=FAST, stream_options=None)
    events = await collect(model, ask())
    await model.request(ask())
    assert all("stream_options" not in r.body for r in server.chat_requests)
    final = events[-1]
    assert isinstance(final, FinalResponse)
    assert final.response.usage.completion_tokens == 5
    assert final.response.usage.prompt_tokens > 0


# -- chat: tools -----------------------------------------------------------------------------


async def test_tool_call_arguments_split_across_chunks_are_reassembled(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    server.chunk_size = 3
    call = ToolCall(id="call_1", name="weather", arguments={"city": "Paris", "unit": "celsius"})
    server.script_chat(call)
    model = OpenAIChatModel("gpt-4o", client=client, backoff=FAST)
    events = await collect(model, ask("Weather in Paris?", tools=[WEATHER]))
    fragments = [e for e in events if isinstance(e, ToolCallDelta)]
    assert len(fragments) > 5  # Really split across many chunks.
    assert fragments[0] == ToolCallDelta(index=0, id="call_1", name="weather", arguments="")
    assert all(f.id is None and f.name is None for f in fragments[1:])
    assert "".join(f.arguments for f in fragments) == call.arguments_json()
    final = events[-1]
    assert isinstance(final, FinalResponse)
    assert final.response.tool_calls == (call,)
    assert final.response.finish_reason == "tool_calls"
    assert final.response.text == ""
    tools = server.chat_requests[0].body["tools"]
    assert tools == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "The weather in a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]


@pytest.mark.parametrize("interleave", [False, True])
async def test_two_parallel_tool_calls(
    server: OpenAITestServer, client: openai.AsyncOpenAI, interleave: bool
) -> None:
    server.chunk_size = 4
    server.interleave_tool_calls = interleave
    calls = [
        ToolCall(id="call_a", name="weather", arguments={"city": "Oslo"}),
        ToolCall(id="call_b", name="weather", arguments={"city": "Lima"}),
    ]
    server.script_chat(calls, calls)
    model = OpenAIChatModel("gpt-4o", client=client, backoff=FAST)
    response = await model.request(ask(tools=[WEATHER]))
    assert response.tool_calls == tuple(calls)
    assert response.finish_reason == "tool_calls"
    events = await collect(model, ask(tools=[WEATHER]))
    indexes = [e.index for e in events if isinstance(e, ToolCallDelta)]
    if interleave:
        assert indexes[:4] == [0, 1, 0, 1]
    else:
        assert indexes == sorted(indexes)
    final = events[-1]
    assert isinstance(final, FinalResponse) and final.response.tool_calls == tuple(calls)


async def test_text_and_tool_calls_together(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    call = ToolCall(id="call_x", name="weather", arguments={"city": "Rome"})
    server.script_chat(ModelResponse(text="Let me check.", tool_calls=(call,)))
    model = OpenAIChatModel("m", client=client, backoff=FAST)
    events = await collect(model, ask(tools=[WEATHER]))
    final = events[-1]
    assert isinstance(final, FinalResponse)
    # Finish reason "stop" with calls present still means: run the tools.
    assert final.response.finish_reason == "tool_calls"
    assert final.response.text == "Let me check."
    assert final.response.tool_calls == (call,)


async def test_conversation_with_tool_results_goes_out_in_openai_shape(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    server.script_chat("It is sunny.")
    call = ToolCall(id="call_9", name="weather", arguments={"city": "Oslo"})
    req = ModelRequest(
        messages=[
            ModelMessage.system("Be brief."),
            ModelMessage.user("Weather in Oslo?"),
            ModelMessage.assistant(tool_calls=[call]),
            ModelMessage.tool(tool_call_id="call_9", tool_name="weather", text="sunny"),
        ],
        tools=[WEATHER],
        options={"temperature": 0.25, "tool_choice": "auto"},
    )
    model = OpenAIChatModel("m", client=client, backoff=FAST, max_tokens=50, temperature=1.0)
    await model.request(req)
    body = server.chat_requests[0].body
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_9",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_9", "content": "sunny"},
    ]
    # The model's options apply; the request's own override them.
    assert body["temperature"] == 0.25
    assert body["max_tokens"] == 50
    assert body["tool_choice"] == "auto"
    # What the server read back is the same conversation.
    assert server.chat_requests[0].model_request().messages == req.messages


async def test_invalid_tool_arguments_are_kept_not_crashed_on(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    bad = ToolCall(id="call_bad", name="weather", invalid_arguments='{"city": "Par')
    server.script_chat(bad, bad)
    model = OpenAIChatModel("m", client=client, backoff=FAST)
    for response in [
        await model.request(ask()),
        (await collect(model, ask()))[-1].response,
    ]:
        (call,) = response.tool_calls
        assert call.arguments == {}
        assert call.invalid_arguments == '{"city": "Par'


# -- chat: structured output -----------------------------------------------------------------


async def test_structured_output(server: OpenAITestServer, client: openai.AsyncOpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    server.script_chat({"name": "Ada", "age": 36}, {"name": "Alan", "age": 41})
    model = OpenAIChatModel("gpt-4o-mini", client=client, backoff=FAST)
    req = ask("Who?", output_schema=OutputSchema(name="person", schema=schema, strict=True))
    response = await model.request(req)
    assert response.parse_json() == {"name": "Ada", "age": 36}
    assert server.chat_requests[0].body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": schema, "strict": True},
    }
    final = (await collect(model, req))[-1]
    assert isinstance(final, FinalResponse)
    assert final.response.parse_json() == {"name": "Alan", "age": 41}


# -- chat: errors and retries ----------------------------------------------------------------


async def test_429_then_success_is_retried(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    server.script_chat(ErrorReply(status=429, retry_after=0), ErrorReply(status=503), "finally")
    model = OpenAIChatModel("gpt-4o-mini", client=client, backoff=FAST)
    assert (await model.request(ask())).text == "finally"
    assert len(server.chat_requests) == 3


async def test_streaming_retries_opening_the_stream(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    server.script_chat(ErrorReply(status=429, retry_after=0), "streamed after a 429")
    model = OpenAIChatModel("m", client=client, backoff=FAST)
    events = await collect(model, ask())
    final = events[-1]
    assert isinstance(final, FinalResponse) and final.response.text == "streamed after a 429"
    assert len(server.chat_requests) == 2


async def test_500_exhausting_retries_is_a_clear_error(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    server.script_chat(*[ErrorReply(status=500, message="upstream exploded")] * 3)
    model = OpenAIChatModel(
        "gpt-4o-mini", client=client, backoff=Backoff(max_attempts=3, initial_delay=0)
    )
    with pytest.raises(ModelAPIError) as caught:
        await model.request(ask())
    error = caught.value
    assert (error.status, error.attempts, error.model) == (500, 3, "gpt-4o-mini")
    assert "gpt-4o-mini" in str(error) and "500" in str(error) and "3 attempts" in str(error)
    assert "upstream exploded" in str(error)
    assert len(server.chat_requests) == 3
    server.assert_consumed()


async def test_429_exhausting_retries_is_a_rate_limit_error(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    server.script_chat(*[ErrorReply(status=429, retry_after=0)] * 2)
    model = OpenAIChatModel("m", client=client, backoff=Backoff(max_attempts=2, initial_delay=0))
    with pytest.raises(ModelRateLimitError) as caught:
        await collect(model, ask())
    assert caught.value.status == 429 and caught.value.retry_after == 0
    assert caught.value.http_status == 503 and caught.value.code == "model_rate_limited"


async def test_a_long_retry_after_ends_the_retries_at_once(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    server.script_chat(ErrorReply(status=429, retry_after=120))
    model = OpenAIChatModel("m", client=client, backoff=Backoff(max_delay=5))
    with pytest.raises(ModelRateLimitError) as caught:
        await model.request(ask())
    assert caught.value.retry_after == 120
    assert "retry after 120 s" in str(caught.value)
    assert len(server.chat_requests) == 1


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (ErrorReply(status=400, message="bad request"), 400),
        (ErrorReply(status=401, message="bad key"), 401),
        (ErrorReply(status=429, code="insufficient_quota", message="no quota"), 429),
    ],
)
async def test_errors_that_will_not_pass_are_not_retried(
    server: OpenAITestServer, client: openai.AsyncOpenAI, reply: ErrorReply, status: int
) -> None:
    server.script_chat(reply)
    model = OpenAIChatModel("gpt-4o-mini", client=client, backoff=FAST)
    with pytest.raises(ModelAPIError) as caught:
        await model.request(ask())
    assert caught.value.status == status and caught.value.attempts == 1
    assert f"HTTP {status}" in str(caught.value) and reply.message in str(caught.value)
    assert len(server.chat_requests) == 1


async def test_an_exception_turn_on_the_server_is_a_500(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    server.script_chat(RuntimeError("boom"))
    model = OpenAIChatModel("m", client=client, backoff=Backoff(max_attempts=1))
    with pytest.raises(ModelAPIError, match="boom") as caught:
        await model.request(ask())
    assert caught.value.status == 500


async def test_an_unreachable_server_is_a_connection_error() -> None:
    async with openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="k") as client:
        model = OpenAIChatModel(
            "m", client=client, backoff=Backoff(max_attempts=2, initial_delay=0)
        )
        with pytest.raises(ModelConnectionError) as caught:
            await model.request(ask())
    assert caught.value.attempts == 2 and '"m"' in str(caught.value)


async def test_a_stream_that_breaks_off_is_a_connection_error(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    server.script_chat(StreamFailure(turn="partial answer here", after=2))
    model = OpenAIChatModel("m", client=client, backoff=FAST)
    seen: list[StreamEvent] = []
    with pytest.raises(ModelConnectionError, match="the stream broke off") as caught:
        async for event in model.stream(ask()):
            seen.append(event)
    assert [e.text for e in seen if isinstance(e, TextDelta)] == ["partial ", "answer h"]
    assert '"m"' in str(caught.value)
    assert len(server.chat_requests) == 1  # A started stream is never retried.


async def test_an_error_event_inside_a_stream_is_a_response_error(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    server.script_chat(
        StreamFailure(turn="partial answer", after=1, error=RuntimeError("overloaded")),
        StreamFailure(turn="whole request", error=RuntimeError("fails at once")),
    )
    model = OpenAIChatModel("m", client=client, backoff=Backoff(max_attempts=1))
    seen: list[StreamEvent] = []
    with pytest.raises(ModelResponseError, match="overloaded"):
        async for event in model.stream(ask()):
            seen.append(event)
    assert seen == [TextDelta(text="partial ")]
    with pytest.raises(ModelAPIError, match="fails at once"):
        await model.request(ask())


async def test_stopping_a_stream_early_closes_it(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    server.script_chat("a long answer " * 20, "next")
    model = OpenAIChatModel("m", client=client, backoff=FAST)
    async with open_stream(model, ask()) as events:
        async for event in events:
            assert isinstance(event, TextDelta)
            break
    # The connection went back to the pool: the next call works on the same client.
    assert (await model.request(ask())).text == "next"


async def test_the_client_comes_from_the_environment(
    server: OpenAITestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    server.script_chat("from the environment")
    async with OpenAIChatModel("m", backoff=FAST) as model:
        assert (await model.request(ask())).text == "from the environment"
    assert server.chat_requests[0].headers["authorization"] == "Bearer sk-from-env"


def test_one_model_serves_several_event_loops(
    server: OpenAITestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An app builds its model once, at import; TestApp portals and anyio.run calls each bring
    # their own event loop, and pooled connections must not cross from one to the next.
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    model = OpenAIChatModel("m", backoff=FAST)
    server.script_chat("first loop", "first loop again", "second loop")

    async def twice() -> list[str]:
        texts = [(await model.request(ask())).text, (await model.request(ask())).text]
        await model.aclose()
        return texts

    async def once() -> str:
        text = (await model.request(ask())).text
        await model.aclose()
        return text

    assert anyio.run(twice) == ["first loop", "first loop again"]
    assert anyio.run(once) == "second loop"


async def test_a_missing_api_key_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    model = OpenAIChatModel("gpt-4o-mini")  # Building it needs no key: using it does.
    with pytest.raises(ModelConfigError, match="OPENAI_API_KEY"):
        await model.request(ask())


async def test_raw_stream_matches_the_openai_types(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    server.script_chat("hi")
    stream = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert json.loads(chunks[-1].model_dump_json())["object"] == "chat.completion.chunk"


def test_calls_that_reuse_index_0_with_new_ids_stay_apart() -> None:
    # Some OpenAI-compatible servers (Ollama) send every call at index 0, each with its id.
    from types import SimpleNamespace as NS

    from components.models.openai import _StreamReader

    def chunk(index: int, id: str | None, name: str | None, arguments: str) -> NS:
        call = NS(index=index, id=id, function=NS(name=name, arguments=arguments))
        delta = NS(content=None, refusal=None, tool_calls=[call])
        return NS(model="m", usage=None, choices=[NS(index=0, delta=delta, finish_reason=None)])

    reader = _StreamReader()
    events = [
        event
        for raw in [
            chunk(0, "a", "f", '{"x":'),
            chunk(0, None, None, "1}"),
            chunk(0, "b", "g", "{}"),
            chunk(0, "b", None, ""),  # A repeated id is the same call.
        ]
        for event in reader.feed(raw)
    ]
    assert [(e.index, e.id) for e in events] == [(0, "a"), (0, None), (1, "b"), (1, None)]
    assert reader.accumulator.tool_calls() == (
        ToolCall(id="a", name="f", arguments={"x": 1}),
        ToolCall(id="b", name="g", arguments={}),
    )
