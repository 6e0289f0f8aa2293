"""Records, stream reassembly and finish reasons."""

from __future__ import annotations

import dataclasses

import pytest

from components.models import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    ModelResponseError,
    StreamAccumulator,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
)
from components.models.base import normalize_finish_reason


def test_usage_adds_up() -> None:
    a = Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)
    b = Usage(prompt_tokens=10, completion_tokens=20, total_tokens=30)
    assert a + b == Usage(prompt_tokens=11, completion_tokens=22, total_tokens=33)
    assert sum([a, b]) == a + b
    assert sum([a], Usage()) == a
    assert Usage() == Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)


def test_records_are_frozen() -> None:
    call = ToolCall(name="f")
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.name = "g"  # type: ignore[misc]


def test_request_lists_become_tuples() -> None:
    req = ModelRequest(messages=[ModelMessage.user("hi")], tools=[ToolSpec(name="t")])
    assert req.messages == (ModelMessage.user("hi"),)
    assert req.tools == (ToolSpec(name="t"),)
    assert req.output_schema is None and dict(req.options) == {}


def test_message_builders() -> None:
    call = ToolCall(id="c", name="f", arguments={"x": 1})
    assert ModelMessage.system("s") == ModelMessage(role="system", text="s")
    assert ModelMessage.assistant("t", tool_calls=[call]).tool_calls == (call,)
    tool = ModelMessage.tool(tool_call_id="c", tool_name="f", text="42")
    assert (tool.role, tool.tool_call_id, tool.tool_name, tool.text) == ("tool", "c", "f", "42")


def test_tool_call_json() -> None:
    call = ToolCall.from_json(id="c", name="f", arguments='{"city": "Oslo"}')
    assert call.arguments == {"city": "Oslo"} and call.invalid_arguments is None
    assert call.arguments_json() == '{"city":"Oslo"}'
    assert ToolCall.from_json(id="c", name="f", arguments="").arguments == {}
    for bad in ('{"city": "Os', "[1, 2]", "nope"):
        broken = ToolCall.from_json(id="c", name="f", arguments=bad)
        assert broken.arguments == {} and broken.invalid_arguments == bad
        assert broken.arguments_json() == bad
    assert ToolCall(name="f").id.startswith("call_")
    assert ToolCall(name="f").id != ToolCall(name="f").id


def test_parse_json() -> None:
    assert ModelResponse(text='{"a": [1]}').parse_json() == {"a": [1]}
    with pytest.raises(ModelResponseError, match="expected JSON text") as caught:
        ModelResponse(text="not json", model="m").parse_json()
    assert caught.value.model == "m" and '"m"' in str(caught.value)


def test_stream_accumulator() -> None:
    acc = StreamAccumulator()
    events: list[TextDelta | ToolCallDelta] = [
        TextDelta(text="Hel"),
        ToolCallDelta(index=1, id="b", name="g"),
        ToolCallDelta(index=0, id="a", name="f", arguments='{"x"'),
        TextDelta(text="lo"),
        ToolCallDelta(index=1, arguments="{}"),
        ToolCallDelta(index=0, arguments=": 1}"),
    ]
    for event in events:
        acc.add(event)
    assert acc.text == "Hello"
    assert acc.tool_calls() == (
        ToolCall(id="a", name="f", arguments={"x": 1}),
        ToolCall(id="b", name="g", arguments={}),
    )
    nameless = StreamAccumulator()
    nameless.add(ToolCallDelta(index=0, arguments="{}"))
    with pytest.raises(ModelResponseError, match="tool call 0 in the stream has no tool name"):
        nameless.tool_calls()


@pytest.mark.parametrize(
    ("raw", "has_calls", "expected"),
    [
        ("stop", False, "stop"),
        (None, False, "stop"),
        ("length", False, "length"),
        ("content_filter", False, "content_filter"),
        ("tool_calls", True, "tool_calls"),
        ("stop", True, "tool_calls"),
        ("function_call", True, "tool_calls"),
        ("length", True, "length"),
        ("eos", False, "other"),
    ],
)
def test_finish_reasons_are_normalized(raw: str | None, has_calls: bool, expected: str) -> None:
    assert normalize_finish_reason(raw, has_tool_calls=has_calls) == expected
