from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.serving.ui_stream import (
    UI_MESSAGE_STREAM_HEADERS,
    UIMessageStream,
    camel,
    finish_reason,
    ui_chunk,
)

from .conftest import NodeAI

TOOL_TURN: list[dict[str, Any]] = [
    {"type": "start-step"},
    {"type": "tool-input-start", "tool_call_id": "c1", "tool_name": "weather"},
    {"type": "tool-input-delta", "tool_call_id": "c1", "input_text_delta": '{"city":'},
    {"type": "tool-input-delta", "tool_call_id": "c1", "input_text_delta": '"Paris"}'},
    {
        "type": "tool-input-available",
        "tool_call_id": "c1",
        "tool_name": "weather",
        "input": {"city": "Paris"},
    },
    {"type": "tool-output-available", "tool_call_id": "c1", "output": {"temp_c": 18}},
    {"type": "finish-step"},
    {"type": "start-step"},
    {"type": "text-start", "id": "t1"},
    {"type": "text-delta", "id": "t1", "delta": "It is 18°C "},
    {"type": "text-delta", "id": "t1", "delta": "in Paris."},
    {"type": "text-end", "id": "t1"},
    {"type": "finish-step"},
]


def events(body: str) -> list[Any]:
    """The data of each event, as dicts ([DONE] as the string)."""
    out: list[Any] = []
    for block in body.strip().split("\n\n"):
        data = "\n".join(line[6:] for line in block.splitlines() if line.startswith("data: "))
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def encode(parts: list[dict[str, Any]], **finish: Any) -> str:
    stream = UIMessageStream(message_id="m1")
    body = stream.start()
    body += "".join(stream.parts(parts, id="cur-1"))
    body += "".join(stream.finish(**finish))
    return body


def test_keys_become_camel_case_and_unknown_fields_are_dropped() -> None:
    assert camel("tool_call_id") == "toolCallId"
    assert camel("input_text_delta") == "inputTextDelta"
    part = {"type": "tool-output-available", "tool_call_id": "c", "output": {"a_b": 1}, "x": 2}
    assert ui_chunk(part) == {
        "type": "tool-output-available",
        "toolCallId": "c",
        "output": {"a_b": 1},
    }
    assert ui_chunk({"type": "error", "error_text": "boom"}) == {
        "type": "error",
        "errorText": "boom",
    }
    assert ui_chunk({"type": "no-such-part"}) is None
    # Version 5 of the SDK refuses a chunk type it does not know, so the approval request
    # (our own SSE stream carries it) stays out of the UI stream.
    assert (
        ui_chunk({"type": "tool-approval-request", "approval_id": "a", "tool_call_id": "a"}) is None
    )


def test_a_tool_turn_is_wrapped_in_start_finish_and_done() -> None:
    body = encode(TOOL_TURN)
    parsed = events(body)
    assert parsed[0] == {"type": "start", "messageId": "m1"}
    assert parsed[-2] == {"type": "finish", "finishReason": "stop"}
    assert parsed[-1] == "[DONE]"
    assert parsed[3] == {
        "type": "tool-input-delta",
        "toolCallId": "c1",
        "inputTextDelta": '{"city":',
    }
    # the cursor goes on the last event of the batch only
    assert body.count("id: cur-1\n") == 1
    assert UI_MESSAGE_STREAM_HEADERS["x-vercel-ai-ui-message-stream"] == "v1"


def test_finish_closes_blocks_left_open_by_a_stopped_reply() -> None:
    parts = [
        {"type": "start-step"},
        {"type": "text-start", "id": "t9"},
        {"type": "text-delta", "id": "t9", "delta": "Partial"},
    ]
    parsed = events(encode(parts, reason="error", error="Stopped by the user."))
    assert parsed[-5:] == [
        {"type": "text-end", "id": "t9"},
        {"type": "finish-step"},
        {"type": "error", "errorText": "Stopped by the user."},
        {"type": "finish", "finishReason": "error"},
        "[DONE]",
    ]


def test_finish_reasons_map_to_the_sdk_values() -> None:
    assert finish_reason("tool_calls") == "tool-calls"
    assert finish_reason("content_filter") == "content-filter"
    assert finish_reason(None) == "stop"
    assert finish_reason("weird") == "other"


def test_the_ai_sdk_reconstructs_the_message(node_ai: NodeAI, tmp_path: Path) -> None:
    path = tmp_path / "stream.txt"
    path.write_text(encode(TOOL_TURN), encoding="utf-8")
    result = node_ai.run("read_ui_stream.mjs", str(path))
    assert result["errors"] == []
    message = result["message"]
    assert message["id"] == "m1"
    assert message["role"] == "assistant"
    kinds = [part["type"] for part in message["parts"]]
    assert kinds == ["step-start", "tool-weather", "step-start", "text"]
    tool = message["parts"][1]
    assert tool["state"] == "output-available"
    assert tool["input"] == {"city": "Paris"}
    assert tool["output"] == {"temp_c": 18}
    assert message["parts"][3]["text"] == "It is 18°C in Paris."
    assert message["parts"][3]["state"] == "done"


def test_the_ai_sdk_reads_a_stopped_reply_with_its_partial_text(
    node_ai: NodeAI, tmp_path: Path
) -> None:
    parts = [
        {"type": "start-step"},
        {"type": "text-start", "id": "t1"},
        {"type": "text-delta", "id": "t1", "delta": "Half a rep"},
    ]
    path = tmp_path / "stream.txt"
    path.write_text(encode(parts, reason="stop", aborted=True), encoding="utf-8")
    result = node_ai.run("read_ui_stream.mjs", str(path))
    assert result["errors"] == []
    assert result["message"]["parts"][-1]["text"] == "Half a rep"
