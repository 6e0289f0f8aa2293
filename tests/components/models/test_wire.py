"""The Chat Completions wire format: requests both ways, completions, chunks."""

from __future__ import annotations

from components.models import (
    FinalResponse,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    OutputSchema,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
)
from components.models.wire import (
    ChunkEncoder,
    completion_body,
    request_from_body,
    request_params,
    sse_event,
)


def test_a_request_survives_the_round_trip() -> None:
    call = ToolCall(id="c1", name="f", arguments={"x": [1, 2]})
    req = ModelRequest(
        messages=[
            ModelMessage.system("sys"),
            ModelMessage.user("hi"),
            ModelMessage.assistant("calling", tool_calls=[call]),
            ModelMessage.tool(tool_call_id="c1", tool_name="f", text="3"),
            ModelMessage.assistant("done"),
        ],
        tools=[ToolSpec(name="f", description="adds", strict=True)],
        output_schema=OutputSchema(name="out", schema={"type": "object"}, description="d"),
        options={"temperature": 0},
    )
    body = {"model": "m", **request_params(req), **req.options}
    assert body["tools"][0]["function"]["strict"] is True
    assert body["response_format"]["json_schema"]["description"] == "d"
    assert request_from_body(body) == req


def test_request_bodies_in_other_shapes_are_read() -> None:
    req = request_from_body(
        {
            "messages": [
                {
                    "role": "developer",
                    "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "nice"}],
                },
                {"role": "assistant", "content": None},
            ],
            "response_format": {"type": "json_object"},
        }
    )
    assert req.messages == (ModelMessage.system("be nice"), ModelMessage.assistant(""))
    assert req.output_schema is None


def test_an_empty_assistant_message_has_empty_content() -> None:
    assert request_params(ModelRequest(messages=[ModelMessage.assistant()]))["messages"] == [
        {"role": "assistant", "content": ""}
    ]


def test_completion_body_with_tool_calls() -> None:
    call = ToolCall(id="c", name="f", arguments={})
    body = completion_body(
        ModelResponse(tool_calls=(call,), finish_reason="tool_calls", model="m"),
        completion_id="chatcmpl-1",
        created=5,
    )
    assert body["id"] == "chatcmpl-1" and body["created"] == 5
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]


def test_chunk_encoder_sequence() -> None:
    encoder = ChunkEncoder(model="m", include_usage=True, completion_id="x", created=1)
    usage = Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2)
    events: list[StreamEvent] = [
        TextDelta(text="hi"),
        ToolCallDelta(index=0, id="c", name="f", arguments='{"a"'),
        ToolCallDelta(index=0, arguments=":1}"),
        FinalResponse(response=ModelResponse(text="hi", usage=usage)),
    ]
    chunks = [chunk for event in events for chunk in encoder.encode(event)]
    deltas = [c["choices"][0]["delta"] if c["choices"] else None for c in chunks]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "hi"},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "c",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"a"'},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]},
        {},
        None,
    ]
    assert chunks[-1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    assert sse_event({"a": 1}) == b'data: {"a":1}\n\n'
