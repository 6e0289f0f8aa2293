"""Owns the OpenAI Chat Completions wire shapes: requests, ``chat.completion`` and its chunks.

A request names an exposed agent in ``model``; its last ``user`` message is the prompt.
Replies come back as one ``chat.completion`` or, with ``"stream": true``, as
``chat.completion.chunk`` events: the first carries ``role``, then ``content`` pieces, then a
chunk with ``finish_reason``, then (with ``stream_options.include_usage``) a usage chunk with
``choices: []``, then ``data: [DONE]``. The agent's own tool calls ran on the server, so only
text reaches the client: tool parts of the stream are dropped here and the finish reason is
never ``tool_calls``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from components.serving.errors import ChatRequestError
from components.serving.sse import DONE, json_frame

FINISH_REASONS = frozenset({"stop", "length", "content_filter"})
"""Finish reasons a client may see (``tool_calls`` never: those calls ran server-side)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatMessage:
    """One message of a request: ``role`` and its text (content parts joined)."""

    role: str
    """``system``, ``developer``, ``user``, ``assistant`` or ``tool``."""
    text: str
    """The message's text; a list of content parts contributes its ``text`` parts."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatRequest:
    """A parsed ``POST /v1/chat/completions`` body."""

    model: str
    """The exposed agent's name."""
    messages: list[ChatMessage] = field(default_factory=list)
    """Every message sent; the last one is the prompt (a ``user`` message)."""
    stream: bool = False
    """Answer with ``chat.completion.chunk`` events instead of one ``chat.completion``."""
    include_usage: bool = False
    """``stream_options.include_usage``: end the stream with a usage chunk."""

    @property
    def prompt(self) -> str:
        """The text of the last message (the user's turn)."""
        return self.messages[-1].text

    @property
    def history(self) -> list[ChatMessage]:
        """The messages before the prompt (used to seed a new thread)."""
        return self.messages[:-1]


def _text_of(content: Any, n: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        ]
        return "".join(texts)
    raise ChatRequestError(
        f"messages[{n}].content must be a string or a list of content parts.",
        param=f"messages[{n}].content",
    )


def parse_chat_request(body: Any) -> ChatRequest:
    """Check and parse a chat completions body.

    Raises:
        ChatRequestError: a field is missing or of the wrong type, or the last message is not
            the user's.
    """
    if not isinstance(body, dict):
        raise ChatRequestError("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ChatRequestError(
            '"model" must name an agent (GET /v1/models lists them).', param="model"
        )
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise ChatRequestError('"messages" must be a non-empty list.', param="messages")
    messages: list[ChatMessage] = []
    for n, raw in enumerate(raw_messages):
        if not isinstance(raw, dict) or not isinstance(raw.get("role"), str):
            raise ChatRequestError(
                f"messages[{n}] must be an object with a role.", param=f"messages[{n}]"
            )
        messages.append(ChatMessage(role=raw["role"], text=_text_of(raw.get("content"), n)))
    if messages[-1].role != "user":
        raise ChatRequestError(
            f'The last message must be the user\'s, not "{messages[-1].role}".', param="messages"
        )
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return ChatRequest(
        model=model,
        messages=messages,
        stream=body.get("stream") is True,
        include_usage=include_usage,
    )


def finish_reason(reason: str | None) -> str:
    """An agent's finish reason as a client's (``tool_calls`` and unknown ones → ``stop``)."""
    if reason is None:
        return "stop"
    normalized = reason.replace("-", "_")
    return normalized if normalized in FINISH_REASONS else "stop"


def usage_body(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """``{prompt_tokens, completion_tokens, total_tokens}`` from a usage record (zeros if none)."""
    usage = usage or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    total = int(usage.get("total_tokens") or prompt + completion)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def new_completion_id() -> str:
    """A fresh ``chatcmpl-…`` id."""
    return f"chatcmpl-{uuid.uuid4().hex}"


def chat_completion(
    *,
    model: str,
    text: str,
    finish: str | None,
    usage: Mapping[str, Any] | None,
    id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """A whole non-streamed reply: one ``chat.completion`` object."""
    return {
        "id": id or new_completion_id(),
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason(finish),
            }
        ],
        "usage": usage_body(usage),
    }


def models_list(names: Iterable[str], *, created: int = 0) -> dict[str, Any]:
    """The ``GET /v1/models`` body: one model per exposed agent."""
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "capsule"}
            for name in names
        ],
    }


def error_body(
    message: str, *, type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """An OpenAI-style error object (the client raises ``APIError`` on a streamed one)."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class ChunkStream:
    """Encodes one streamed reply as ``chat.completion.chunk`` events.

    ``start()``, then ``parts(...)`` with the persisted stream parts (only ``text-delta`` parts
    produce chunks), then ``finish(reason, usage)``.
    """

    def __init__(self, *, model: str, id: str | None = None, created: int | None = None):
        self.id = id or new_completion_id()
        self.model = model
        self.created = created if created is not None else int(time.time())

    def _chunk(
        self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None
    ) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
            "usage": usage,
        }

    def _delta(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return self._chunk(
            [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        )

    def start(self) -> str:
        """The first chunk: the assistant's role and empty content."""
        return json_frame(self._delta({"role": "assistant", "content": ""}))

    def text(self, parts: Iterable[Mapping[str, Any]]) -> str:
        """The text the parts add (tool, step and control parts contribute nothing)."""
        return "".join(
            str(part.get("delta") or "") for part in parts if part.get("type") == "text-delta"
        )

    def parts(self, parts: Iterable[Mapping[str, Any]]) -> Iterator[str]:
        """One content chunk for the text the parts add, if any."""
        text = self.text(parts)
        if text:
            yield json_frame(self._delta({"content": text}))

    def finish(
        self,
        reason: str | None,
        *,
        usage: Mapping[str, Any] | None = None,
        include_usage: bool = False,
    ) -> Iterator[str]:
        """The ``finish_reason`` chunk, the usage chunk when asked for, then ``[DONE]``."""
        yield json_frame(self._delta({}, finish_reason(reason)))
        if include_usage:
            yield json_frame(self._chunk([], usage_body(usage)))
        yield DONE

    def error(self, message: str, *, type: str = "server_error") -> Iterator[str]:
        """An error event the client raises as ``APIError``, then ``[DONE]``."""
        yield json_frame(error_body(message, type=type))
        yield DONE
