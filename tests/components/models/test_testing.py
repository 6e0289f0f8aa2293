"""The OpenAI-compatible test server's wire format, read raw (no openai client)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

import httpx
import numpy as np
import pytest

from components.models import HashingEmbedder, ModelResponse, ToolCall, Usage
from components.models.testing import ErrorReply, OpenAITestServer, json_chunks

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


def post(server: OpenAITestServer, path: str, body: Mapping[str, object]) -> httpx.Response:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        return client.post(path, json=body)


def test_the_server_is_not_collected_as_a_test() -> None:
    assert OpenAITestServer.__test__ is False


def test_a_whole_completion(server: OpenAITestServer) -> None:
    server.script_chat("Hello!")
    body = post(server, "/chat/completions", CHAT).json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-") and body["model"] == "gpt-test"
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": "Hello!", "refusal": None}
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


def test_a_streamed_text_as_openai_streams_it(server: OpenAITestServer) -> None:
    server.script_chat("Hello, streaming world!")
    response = post(
        server,
        "/chat/completions",
        {**CHAT, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    raw = response.content
    assert raw.endswith(b"data: [DONE]\n\n")
    events = raw.split(b"\n\n")
    assert all(e.startswith(b"data: ") for e in events if e)
    chunks = json_chunks(raw)
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    texts = [c["choices"][0]["delta"].get("content") for c in chunks[1:-2]]
    assert texts == ["Hello, s", "treaming", " world!"]
    assert chunks[-2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert all(c["usage"] is None for c in chunks[:-1])


def test_no_usage_chunk_unless_asked(server: OpenAITestServer) -> None:
    server.script_chat("Hi")
    chunks = json_chunks(post(server, "/chat/completions", {**CHAT, "stream": True}).content)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"] for c in chunks)


def test_streamed_tool_calls_as_openai_streams_them(server: OpenAITestServer) -> None:
    server.chunk_size = 5
    calls = [
        ToolCall(id="call_1", name="weather", arguments={"city": "Oslo"}),
        ToolCall(id="call_2", name="clock", arguments={"tz": "UTC"}),
    ]
    server.script_chat(calls)
    chunks = json_chunks(post(server, "/chat/completions", {**CHAT, "stream": True}).content)
    parts = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[1:-1]]
    assert parts[0] == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather", "arguments": ""},
    }
    firsts = [p for p in parts if "id" in p]
    assert [(p["index"], p["id"]) for p in firsts] == [(0, "call_1"), (1, "call_2")]
    later = [p for p in parts if "id" not in p]
    assert all(
        set(p) == {"index", "function"} and set(p["function"]) == {"arguments"} for p in later
    )
    for index, call in enumerate(calls):
        joined = "".join(p["function"]["arguments"] for p in parts if p["index"] == index)
        assert json.loads(joined) == call.arguments
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_scripted_errors_and_running_out(server: OpenAITestServer) -> None:
    server.script_chat(ErrorReply(status=429, message="slow down", retry_after=2))
    limited = post(server, "/chat/completions", CHAT)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    assert limited.json()["error"]["message"] == "slow down"
    unscripted = post(server, "/chat/completions", CHAT)
    assert unscripted.status_code == 500
    assert "no chat answer was scripted" in unscripted.json()["error"]["message"]


def test_requests_are_recorded_and_the_script_checked(server: OpenAITestServer) -> None:
    server.script_chat("a", "b")
    post(server, "/chat/completions", {**CHAT, "temperature": 0.5})
    (recorded,) = server.chat_requests
    assert recorded.path == "/v1/chat/completions" and recorded.body["temperature"] == 0.5
    assert recorded.model_request().options == {"temperature": 0.5}
    with pytest.raises(AssertionError, match="1 chat and 0 embeddings"):
        server.assert_consumed()


def test_embeddings_as_float_and_base64(server: OpenAITestServer) -> None:
    body = {"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 16}
    plain = post(server, "/embeddings", body).json()
    assert [d["index"] for d in plain["data"]] == [0, 1]
    expected = HashingEmbedder(16).embed_one("a")
    assert plain["data"][0]["embedding"] == expected
    assert plain["usage"]["prompt_tokens"] == 2
    packed = post(server, "/embeddings", {**body, "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    assert decoded == pytest.approx(expected, abs=1e-6)
    single = post(server, "/embeddings", {"model": "text-embedding-3-large", "input": "x"}).json()
    assert len(single["data"]) == 1 and len(single["data"][0]["embedding"]) == 3072


def test_models_list(server: OpenAITestServer) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        listing = client.get("/models").json()
    assert listing["data"][0]["id"] == server.model


def test_a_model_response_turn_keeps_its_usage(server: OpenAITestServer) -> None:
    usage = Usage(prompt_tokens=7, completion_tokens=8, total_tokens=15)
    server.script_chat(ModelResponse(text="x", usage=usage, finish_reason="length"))
    body = post(server, "/chat/completions", CHAT).json()
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 8, "total_tokens": 15}
    assert body["choices"][0]["finish_reason"] == "length"
