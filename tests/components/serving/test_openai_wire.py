from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from components.serving.errors import ChatRequestError
from components.serving.openai_wire import (
    ChunkStream,
    chat_completion,
    finish_reason,
    models_list,
    parse_chat_request,
)

openai = pytest.importorskip("openai", reason="needs the openai extra")

PARTS: list[dict[str, Any]] = [
    {"type": "start-step"},
    {"type": "tool-input-start", "tool_call_id": "c1", "tool_name": "search"},
    {
        "type": "tool-input-available",
        "tool_call_id": "c1",
        "tool_name": "search",
        "input": {"q": "x"},
    },
    {"type": "tool-output-available", "tool_call_id": "c1", "output": "found"},
    {"type": "finish-step"},
    {"type": "start-step"},
    {"type": "text-start", "id": "t"},
    {"type": "text-delta", "id": "t", "delta": "Hello "},
    {"type": "text-delta", "id": "t", "delta": "there."},
    {"type": "text-end", "id": "t"},
    {"type": "finish-step"},
]
USAGE = {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}


def streamed_body(include_usage: bool) -> str:
    chunks = ChunkStream(model="helper")
    body = chunks.start()
    body += "".join(chunks.parts(PARTS[:5]))
    body += "".join(chunks.parts(PARTS[5:]))
    body += "".join(chunks.finish("tool_calls", usage=USAGE, include_usage=include_usage))
    return body


def client_for(body: str | dict[str, Any], *, stream: bool) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        if stream:
            return httpx.Response(
                200, text=str(body), headers={"content-type": "text/event-stream"}
            )
        return httpx.Response(200, json=body)

    return openai.OpenAI(
        base_url="http://capsule.invalid/v1",
        api_key="k",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )


def test_parse_request_takes_the_last_user_message_as_prompt() -> None:
    request = parse_chat_request(
        {
            "model": "helper",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "you"}],
                },
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    assert request.model == "helper"
    assert request.prompt == "Hi you"
    assert [m.role for m in request.history] == ["system"]
    assert request.stream and request.include_usage


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], None),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "a", "messages": []}, "messages"),
        ({"model": "a", "messages": ["x"]}, "messages[0]"),
        ({"model": "a", "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"model": "a", "messages": [{"role": "assistant", "content": "x"}]}, "messages"),
    ],
)
def test_bad_requests_are_refused_naming_the_field(body: Any, param: str | None) -> None:
    with pytest.raises(ChatRequestError) as caught:
        parse_chat_request(body)
    assert caught.value.param == param
    assert caught.value.http_status == 400


def test_the_openai_client_reads_our_stream_without_tool_calls() -> None:
    client = client_for(streamed_body(include_usage=True), stream=True)
    chunks = list(
        client.chat.completions.create(
            model="helper",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello there."
    assert all(not c.choices or c.choices[0].delta.tool_calls is None for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 15
    assert len({c.id for c in chunks}) == 1


def test_the_usage_chunk_is_only_sent_when_asked() -> None:
    client = client_for(streamed_body(include_usage=False), stream=True)
    chunks = list(
        client.chat.completions.create(
            model="helper", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert all(c.usage is None for c in chunks)


def test_a_streamed_error_raises_in_the_client() -> None:
    body = "".join(ChunkStream(model="helper").error("The model failed."))
    client = client_for(body, stream=True)
    with pytest.raises(openai.APIError, match="The model failed"):
        list(
            client.chat.completions.create(
                model="helper", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )


def test_the_openai_client_reads_a_whole_completion() -> None:
    completion = chat_completion(model="helper", text="Hello.", finish="stop", usage=USAGE)
    client = client_for(completion, stream=False)
    reply = client.chat.completions.create(
        model="helper", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "Hello."
    assert reply.choices[0].message.tool_calls is None
    assert reply.usage is not None and reply.usage.prompt_tokens == 11
    assert json.loads(reply.model_dump_json())["object"] == "chat.completion"


def test_models_list_and_finish_reasons() -> None:
    assert models_list(["a", "b"])["data"][1]["id"] == "b"
    assert finish_reason("tool_calls") == "stop"
    assert finish_reason("length") == "length"
    assert finish_reason("content-filter") == "content_filter"
    assert chat_completion(model="m", text="", finish=None, usage=None)["usage"] == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
    }
