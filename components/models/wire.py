"""Owns the OpenAI Chat Completions wire format, both ways, as plain JSON-like dicts.

Client side: ``request_params`` turns a ``ModelRequest`` into the body's messages, tools and
``response_format``. Server side (the test server, and any OpenAI-compatible endpoint):
``request_from_body`` reads a body back into a ``ModelRequest``, ``completion_body`` writes a
``chat.completion`` and ``ChunkEncoder`` turns stream events into ``chat.completion.chunk``
objects, framed for SSE by ``sse_event`` (ending with ``SSE_DONE``). No ``openai`` import.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from components.models.base import (
    FinalResponse,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    OutputSchema,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
)
from components.models.errors import ModelResponseError

SSE_DONE = b"data: [DONE]\n\n"
"""The event that ends an OpenAI stream."""

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def message_param(message: ModelMessage) -> dict[str, Any]:
    """One message in the Chat Completions ``messages`` shape."""
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text}
    if message.role != "assistant":
        return {"role": message.role, "content": message.text}
    param: dict[str, Any] = {"role": "assistant", "content": message.text or None}
    if message.tool_calls:
        param["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json()},
            }
            for call in message.tool_calls
        ]
    elif not message.text:
        param["content"] = ""
    return param


def tool_param(tool: ToolSpec) -> dict[str, Any]:
    """One tool in the Chat Completions ``tools`` shape."""
    function: dict[str, Any] = {"name": tool.name, "parameters": dict(tool.parameters)}
    if tool.description:
        function["description"] = tool.description
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def response_format_param(schema: OutputSchema) -> dict[str, Any]:
    """The ``response_format`` asking for JSON matching ``schema``."""
    json_schema: dict[str, Any] = {
        "name": schema.name,
        "schema": dict(schema.schema),
        "strict": schema.strict,
    }
    if schema.description:
        json_schema["description"] = schema.description
    return {"type": "json_schema", "json_schema": json_schema}


def request_params(req: ModelRequest) -> dict[str, Any]:
    """The body fields a request sets: ``messages``, and ``tools`` / ``response_format``."""
    params: dict[str, Any] = {"messages": [message_param(m) for m in req.messages]}
    if req.tools:
        params["tools"] = [tool_param(t) for t in req.tools]
    if req.output_schema is not None:
        params["response_format"] = response_format_param(req.output_schema)
    return params


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # Content parts: keep the text ones.
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type") == "text"
        )
    raise ModelResponseError(f"message content must be text or parts, got {content!r}")


def _message_from_param(param: Mapping[str, Any]) -> ModelMessage:
    role = param.get("role")
    text = _content_text(param.get("content"))
    if role == "tool":
        return ModelMessage(
            role="tool",
            text=text,
            tool_call_id=str(param.get("tool_call_id", "")),
            tool_name=param.get("name"),
        )
    if role == "assistant":
        calls = tuple(
            ToolCall.from_json(
                id=str(call.get("id", "")),
                name=str(call["function"]["name"]),
                arguments=str(call["function"].get("arguments") or ""),
            )
            for call in param.get("tool_calls") or ()
        )
        return ModelMessage(role="assistant", text=text, tool_calls=calls)
    if role not in _ROLES:
        raise ModelResponseError(f"unknown message role {role!r}")
    return ModelMessage(role=_ROLES[role], text=text)  # type: ignore[arg-type]


_BODY_FIELDS = frozenset(
    ("model", "messages", "tools", "response_format", "stream", "stream_options")
)


def request_from_body(body: Mapping[str, Any]) -> ModelRequest:
    """Read a Chat Completions request body back into a ``ModelRequest``.

    The fields that are not messages, tools or the response format become ``options``.
    A tool message gets its ``tool_name`` from the assistant call it answers.
    """
    messages = [_message_from_param(p) for p in body.get("messages") or ()]
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    messages = [
        ModelMessage.tool(
            tool_call_id=m.tool_call_id or "",
            tool_name=m.tool_name or names.get(m.tool_call_id or "", ""),
            text=m.text,
        )
        if m.role == "tool"
        else m
        for m in messages
    ]
    tools = [
        ToolSpec(
            name=str(t["function"]["name"]),
            description=str(t["function"].get("description") or ""),
            parameters=t["function"].get("parameters") or {"type": "object", "properties": {}},
            strict=t["function"].get("strict"),
        )
        for t in body.get("tools") or ()
        if t.get("type", "function") == "function"
    ]
    output_schema = None
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        spec = response_format["json_schema"]
        output_schema = OutputSchema(
            name=str(spec.get("name", "output")),
            schema=spec.get("schema") or {},
            description=spec.get("description"),
            strict=bool(spec.get("strict", False)),
        )
    options = {k: v for k, v in body.items() if k not in _BODY_FIELDS}
    return ModelRequest(
        messages=messages, tools=tools, output_schema=output_schema, options=options
    )


def usage_body(usage: Usage) -> dict[str, int]:
    """The ``usage`` object of a response."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def new_completion_id() -> str:
    """A fresh id in OpenAI's style (``chatcmpl-...``)."""
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def completion_body(
    response: ModelResponse, *, completion_id: str | None = None, created: int | None = None
) -> dict[str, Any]:
    """A whole ``chat.completion`` object answering with ``response``."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": response.text if (response.text or not response.tool_calls) else None,
        "refusal": response.refusal,
    }
    if response.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json()},
            }
            for call in response.tool_calls
        ]
    return {
        "id": completion_id or new_completion_id(),
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": response.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": response.finish_reason,
            }
        ],
        "usage": usage_body(response.usage),
    }


class ChunkEncoder:
    """Turns one response's stream events into ``chat.completion.chunk`` objects, as OpenAI does.

    The first chunk carries the role; text deltas become ``content``; a call's first delta
    carries ``index``, ``id``, ``type`` and ``function.name``, later ones only argument
    fragments; the ``FinalResponse`` becomes a chunk with the ``finish_reason`` and, when
    ``include_usage``, one more with empty ``choices`` and the usage.
    """

    def __init__(
        self,
        *,
        model: str,
        include_usage: bool = False,
        completion_id: str | None = None,
        created: int | None = None,
    ):
        self.model = model
        self.include_usage = include_usage
        self.completion_id = completion_id or new_completion_id()
        self.created = created if created is not None else int(time.time())
        self._started = False
        self._seen_calls: set[int] = set()

    def _chunk(
        self,
        delta: dict[str, Any] | None,
        *,
        finish_reason: str | None = None,
        usage: Usage | None = None,
    ) -> dict[str, Any]:
        choices = (
            []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
        )
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": None if usage is None else usage_body(usage),
        }

    def encode(self, event: StreamEvent) -> list[dict[str, Any]]:
        """The chunks one event becomes (the role chunk goes before the first)."""
        chunks = []
        if not self._started:
            self._started = True
            chunks.append(self._chunk({"role": "assistant", "content": ""}))
        if isinstance(event, TextDelta):
            if event.text:
                chunks.append(self._chunk({"content": event.text}))
        elif isinstance(event, FinalResponse):
            response = event.response
            chunks.append(self._chunk({}, finish_reason=response.finish_reason))
            if self.include_usage:
                chunks.append(self._chunk(None, usage=response.usage))
        else:
            call: dict[str, Any] = {"index": event.index}
            function: dict[str, Any] = {"arguments": event.arguments}
            if event.index not in self._seen_calls:
                self._seen_calls.add(event.index)
                call["id"] = event.id
                call["type"] = "function"
                function = {"name": event.name, "arguments": event.arguments}
            call["function"] = function
            chunks.append(self._chunk({"tool_calls": [call]}))
        return chunks


def sse_event(chunk: Mapping[str, Any]) -> bytes:
    """One SSE event holding ``chunk`` as JSON on a single ``data:`` line."""
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
