"""Owns the shapes every chat model and embedder shares: records, stream events and protocols.

A conversation is a sequence of ``ModelMessage``; a ``ModelRequest`` adds the tools the model
may call (``ToolSpec``), an optional structured-output schema (``OutputSchema``) and provider
options. A ``ChatModel`` answers with a ``ModelResponse``, or streams ``TextDelta`` and
``ToolCallDelta`` events ending in one ``FinalResponse`` that carries the whole response.
``StreamAccumulator`` rebuilds a response from deltas; ``open_stream`` reads a stream and
closes it on the way out. An ``Embedder`` turns texts into vectors.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from components.models.errors import ModelResponseError

Role = Literal["system", "user", "assistant", "tool"]
"""Who speaks in a ``ModelMessage``."""

FinishReason = Literal["stop", "tool_calls", "length", "content_filter", "error", "other"]
"""Why the model stopped: a text answer, tool calls, the token limit, a filter, ..."""

_FINISH_REASONS: frozenset[str] = frozenset(
    ("stop", "tool_calls", "length", "content_filter", "error")
)


def new_tool_call_id() -> str:
    """A fresh tool-call id in OpenAI's style (``call_`` and 24 hex digits)."""
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    """One call of a tool the model asked for."""

    name: str
    """The tool's name, as given in its ``ToolSpec``."""
    arguments: dict[str, Any] = field(default_factory=dict)
    """The arguments, parsed from the model's JSON (empty when it was not a JSON object)."""
    id: str = field(default_factory=new_tool_call_id)
    """The call's id; the tool's result refers to it (``ModelMessage.tool_call_id``)."""
    invalid_arguments: str | None = None
    """The model's argument text when it was not a JSON object (``arguments`` is then empty)."""

    def arguments_json(self) -> str:
        """The arguments as JSON text, as sent to a provider (the raw text if they were invalid)."""
        if self.invalid_arguments is not None:
            return self.invalid_arguments
        return json.dumps(self.arguments, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, *, id: str, name: str, arguments: str) -> ToolCall:
        """A call whose arguments arrive as JSON text; text that is no JSON object is kept aside."""
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            return cls(id=id, name=name, arguments={}, invalid_arguments=arguments)
        return cls(id=id, name=name, arguments=parsed)


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Tokens used by one or more model calls; ``a + b`` adds them up."""

    prompt_tokens: int = 0
    """Tokens the model read (the prompt, tools and history)."""
    completion_tokens: int = 0
    """Tokens the model wrote."""
    total_tokens: int = 0
    """Their sum, as the provider reports it."""

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )

    def __radd__(self, other: object) -> Usage:
        # Lets ``sum(usages)`` start from 0.
        if other == 0:
            return self
        return NotImplemented


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelMessage:
    """One message of the conversation a model reads.

    Build them with ``system``, ``user``, ``assistant`` and ``tool``.
    """

    role: Role
    """Who speaks."""
    text: str = ""
    """The text (for a tool message: the tool's result, or its error text)."""
    tool_calls: tuple[ToolCall, ...] = ()
    """The tools an assistant message called."""
    tool_call_id: str | None = None
    """For a tool message: the id of the call it answers."""
    tool_name: str | None = None
    """For a tool message: the name of the tool that ran."""

    @classmethod
    def system(cls, text: str) -> ModelMessage:
        """Instructions for the model."""
        return cls(role="system", text=text)

    @classmethod
    def user(cls, text: str) -> ModelMessage:
        """What the user said."""
        return cls(role="user", text=text)

    @classmethod
    def assistant(cls, text: str = "", *, tool_calls: Sequence[ToolCall] = ()) -> ModelMessage:
        """What the model said, and the tools it called."""
        return cls(role="assistant", text=text, tool_calls=tuple(tool_calls))

    @classmethod
    def tool(cls, *, tool_call_id: str, tool_name: str, text: str) -> ModelMessage:
        """A tool's result (or error text) answering one tool call."""
        return cls(role="tool", text=text, tool_call_id=tool_call_id, tool_name=tool_name)


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolSpec:
    """A tool the model may call: its name, what it does, and its parameters' JSON schema."""

    name: str
    """The name the model calls it by."""
    description: str = ""
    """What the tool does (the model reads this to decide when to call it)."""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    """The JSON schema of the arguments object."""
    strict: bool | None = None
    """Ask the provider to follow the schema exactly (OpenAI strict mode); ``None`` omits it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputSchema:
    """A structured-output request: the reply must be a JSON value matching ``schema``."""

    name: str
    """A name for the schema (OpenAI wants ``[A-Za-z0-9_-]``, at most 64 characters)."""
    schema: Mapping[str, Any]
    """The JSON schema of the reply."""
    description: str | None = None
    """What the reply is, for the model."""
    strict: bool = False
    """Ask for exact schema adherence (OpenAI strict mode needs every property required and
    ``additionalProperties: false``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRequest:
    """Everything one model call needs: the conversation, tools, output schema and options."""

    messages: Sequence[ModelMessage] = ()
    """The conversation, oldest first (system instructions usually first)."""
    tools: Sequence[ToolSpec] = ()
    """The tools the model may call."""
    output_schema: OutputSchema | None = None
    """When set, the reply is JSON text matching this schema."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Provider options for this call (``temperature``, ``max_tokens``, ``tool_choice``, ...);
    they override the model's own."""

    def __post_init__(self) -> None:
        # Frozen means frozen: lists handed in become tuples.
        object.__setattr__(self, "messages", tuple(self.messages))
        object.__setattr__(self, "tools", tuple(self.tools))


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelResponse:
    """One model call's answer: text and/or tool calls, why it stopped, and what it cost."""

    text: str = ""
    """The text of the answer (JSON text for a structured-output request)."""
    tool_calls: tuple[ToolCall, ...] = ()
    """The tools the model asked to call (several: run them in parallel)."""
    finish_reason: FinishReason = "stop"
    """Why the model stopped."""
    usage: Usage = field(default_factory=Usage)
    """Tokens used by this call."""
    model: str = ""
    """The model that answered, as the provider names it."""
    refusal: str | None = None
    """The model's refusal, when it declined a structured-output request."""

    def parse_json(self) -> Any:
        """The text parsed as JSON (the reply to a structured-output request).

        Raises:
            ModelResponseError: the text is not JSON.
        """
        try:
            return json.loads(self.text)
        except ValueError as error:
            shown = self.text if len(self.text) <= 80 else self.text[:77] + "..."
            raise ModelResponseError(
                f"expected JSON text, got {shown!r} ({error})", model=self.model or None
            ) from None


def normalize_finish_reason(raw: str | None, *, has_tool_calls: bool) -> FinishReason:
    """A provider's finish reason in our vocabulary.

    Some OpenAI-compatible servers say ``"stop"`` (or the legacy ``"function_call"``) when
    the answer is tool calls; the loop needs ``"tool_calls"`` then. Unknown reasons become
    ``"other"``.
    """
    if has_tool_calls and raw in (None, "stop", "function_call", "tool_calls"):
        return "tool_calls"
    if raw is None:
        return "stop"
    if raw in _FINISH_REASONS:
        return raw  # type: ignore[return-value]
    return "other"


@dataclass(frozen=True, slots=True, kw_only=True)
class TextDelta:
    """A piece of the answer's text, in order."""

    text: str
    """The new text."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallDelta:
    """A piece of a tool call, as OpenAI streams them.

    The first delta of a call carries its ``index``, ``id`` and ``name``; later deltas carry
    the same ``index`` and further fragments of the JSON ``arguments``. Deltas of several
    calls may interleave; ``index`` tells them apart.
    """

    index: int
    """Which call of this response (0, 1, ... in the order the calls started)."""
    id: str | None = None
    """The call's id (on its first delta)."""
    name: str | None = None
    """The tool's name (on its first delta)."""
    arguments: str = ""
    """The next fragment of the arguments' JSON text."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FinalResponse:
    """The last event of every stream: the whole response, with usage and finish reason."""

    response: ModelResponse
    """The complete answer (its text equals the streamed text deltas joined)."""


StreamEvent = TextDelta | ToolCallDelta | FinalResponse
"""What ``ChatModel.stream`` yields."""


class StreamAccumulator:
    """Rebuilds text and tool calls from stream deltas (calls keyed by ``index``)."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._calls: dict[int, list[str]] = {}
        self._ids: dict[int, str] = {}
        self._names: dict[int, str] = {}

    def add(self, event: TextDelta | ToolCallDelta) -> None:
        """Take in one delta."""
        if isinstance(event, TextDelta):
            self._text.append(event.text)
            return
        self._calls.setdefault(event.index, []).append(event.arguments)
        if event.id:
            self._ids.setdefault(event.index, event.id)
        if event.name:
            self._names.setdefault(event.index, event.name)

    @property
    def text(self) -> str:
        """The text so far."""
        return "".join(self._text)

    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The calls so far, by index; a call without an id gets a fresh one.

        Raises:
            ModelResponseError: a call never got its tool name.
        """
        calls = []
        for index in sorted(self._calls):
            name = self._names.get(index)
            if not name:
                raise ModelResponseError(f"tool call {index} in the stream has no tool name")
            calls.append(
                ToolCall.from_json(
                    id=self._ids.get(index) or new_tool_call_id(),
                    name=name,
                    arguments="".join(self._calls[index]),
                )
            )
        return tuple(calls)


@runtime_checkable
class ChatModel(Protocol):
    """A chat model: one request in, one response out (whole, or streamed as events).

    Anything with these two methods plugs into ``Agent``: ``OpenAIChatModel`` and
    ``ScriptedChatModel`` ship here.
    """

    async def request(self, req: ModelRequest) -> ModelResponse:
        """Answer one request."""
        ...

    def stream(self, req: ModelRequest) -> AsyncIterator[StreamEvent]:
        """Answer one request as it is generated: deltas, then one ``FinalResponse``.

        Read it inside ``open_stream(model, req)`` so that stopping early closes it (and
        releases the provider's connection) at once.
        """
        ...


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors of ``dimensions`` floats, in input order."""

    @property
    def model_id(self) -> str:
        """Names the model (and its variant): vectors of different ids never mix."""
        ...

    @property
    def dimensions(self) -> int:
        """The length of every vector."""
        ...

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in the same order."""
        ...


@contextlib.asynccontextmanager
async def open_stream(
    model: ChatModel, req: ModelRequest
) -> AsyncIterator[AsyncIterator[StreamEvent]]:
    """Stream ``req`` from ``model``, closing the stream on exit, early exits included.

    ``async with open_stream(model, req) as events: async for event in events: ...``
    """
    events = model.stream(req)
    try:
        yield events
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
