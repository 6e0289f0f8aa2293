"""Owns ``ScriptedChatModel``: a chat model that plays back scripted turns, for tests and demos.

Each turn answers one model call:

- a ``str``: a text reply;
- a ``ToolCall``, or a list of them: tool calls (several run in parallel);
- a ``dict``: a structured-output reply, sent as its JSON text;
- a ``ModelResponse``: returned as it is (text and calls together, a finish reason, usage);
- an exception (instance or class): the call fails with it;
- a callable ``(ModelRequest) -> turn``: decides from the request;
- a ``StreamFailure``: streams the start of a reply, then fails (a whole request fails at
  once).

``turn_response`` and ``response_events`` are shared with the OpenAI-compatible test server,
so both play a script the same way.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

import anyio

from components.models.base import (
    FinalResponse,
    ModelRequest,
    ModelResponse,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from components.models.errors import (
    ModelConfigError,
    ModelConnectionError,
    ScriptExhaustedError,
    ScriptNotConsumedError,
)
from components.models.tokens import estimate_usage


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamFailure:
    """A turn whose stream breaks off: ``after`` deltas of ``turn``'s reply, then ``error``.

    Asked for whole (``request``), the call fails at once with ``error``. The test server
    sends an error event with ``error``'s text when one is given, and otherwise drops the
    connection.
    """

    turn: Turn
    """The reply whose start is streamed."""
    after: int = 1
    """How many deltas arrive before the failure."""
    error: BaseException | None = None
    """What the stream fails with (default: a ``ModelConnectionError``)."""

    def exception(self, model: str) -> BaseException:
        """The exception the call fails with."""
        if self.error is not None:
            return self.error
        return ModelConnectionError(
            model=model, detail=f"the stream broke off after {self.after} delta(s) (scripted)"
        )


Turn: TypeAlias = (
    str
    | ToolCall
    | Sequence[ToolCall]
    | dict[str, Any]
    | ModelResponse
    | BaseException
    | type[BaseException]
    | StreamFailure
    | Callable[[ModelRequest], "Turn"]
)
"""One scripted model call (see the module docstring)."""

_MAX_CALLABLE_DEPTH = 16


def describe_turn(turn: object) -> str:
    """A short description of a turn, for error messages."""
    if isinstance(turn, str):
        return f"text {turn[:30]!r}" + ("..." if len(turn) > 30 else "")
    if isinstance(turn, ToolCall):
        return f"tool call {turn.name!r}"
    if isinstance(turn, BaseException):
        return f"error {type(turn).__name__}"
    if isinstance(turn, type) and issubclass(turn, BaseException):
        return f"error {turn.__name__}"
    if isinstance(turn, dict):
        return "structured output"
    if isinstance(turn, StreamFailure):
        return f"stream failure after {turn.after} delta(s)"
    if isinstance(turn, ModelResponse):
        return "response"
    if isinstance(turn, Sequence):
        return f"{len(turn)} tool calls"
    return f"callable {getattr(turn, '__name__', type(turn).__name__)}"


def resolve_turn(turn: Turn, request: ModelRequest) -> Turn:
    """The turn a callable turn returns for ``request`` (other turns as they are).

    Raises:
        ModelConfigError: callables kept returning callables.
    """
    for _ in range(_MAX_CALLABLE_DEPTH):
        if isinstance(turn, BaseException | type) or not callable(turn):
            return turn
        turn = turn(request)
    raise ModelConfigError(
        f"A scripted turn's callable returned callables {_MAX_CALLABLE_DEPTH} times in a row."
    )


def turn_response(turn: Turn, request: ModelRequest, *, model: str) -> ModelResponse:
    """The response a turn stands for; raises the turn when it is an exception.

    Usage is counted with ``estimate_usage`` unless the turn is a ``ModelResponse`` that
    brings its own (non-zero) usage.

    Raises:
        ModelConfigError: the turn is none of the scripted kinds.
    """
    turn = resolve_turn(turn, request)
    if isinstance(turn, BaseException):
        raise turn
    if isinstance(turn, type) and issubclass(turn, BaseException):
        raise turn()
    if isinstance(turn, StreamFailure):
        raise turn.exception(model)
    response = _as_response(turn)
    if response.usage == Usage():
        usage = estimate_usage(request, text=response.text, tool_calls=response.tool_calls)
        response = replace(response, usage=usage)
    return response if response.model else replace(response, model=model)


def _as_response(turn: object) -> ModelResponse:
    if isinstance(turn, ModelResponse):
        return turn
    if isinstance(turn, str):
        return ModelResponse(text=turn, finish_reason="stop")
    if isinstance(turn, ToolCall):
        return ModelResponse(tool_calls=(turn,), finish_reason="tool_calls")
    if isinstance(turn, dict):
        return ModelResponse(text=json.dumps(turn, ensure_ascii=False), finish_reason="stop")
    if isinstance(turn, Sequence) and turn and all(isinstance(c, ToolCall) for c in turn):
        return ModelResponse(tool_calls=tuple(turn), finish_reason="tool_calls")
    raise ModelConfigError(
        f"A scripted turn must be a str, a ToolCall or a list of them, a dict, a ModelResponse, "
        f"an exception or a callable; got {turn!r}."
    )


def _pieces(text: str, size: int) -> Iterator[str]:
    for start in range(0, len(text), size):
        yield text[start : start + size]


def response_events(
    response: ModelResponse, *, chunk_size: int = 8, interleave: bool = False
) -> Iterator[StreamEvent]:
    """A response as the deltas a provider would stream, then its ``FinalResponse``.

    Text comes in ``chunk_size``-character deltas; each tool call as a first delta (index,
    id, name) and its argument JSON in ``chunk_size``-character fragments. With
    ``interleave``, the calls' fragments alternate (call 0, call 1, call 0, ...).
    """
    yield from (TextDelta(text=piece) for piece in _pieces(response.text, chunk_size))
    per_call = [
        [
            ToolCallDelta(index=index, id=call.id, name=call.name),
            *(
                ToolCallDelta(index=index, arguments=piece)
                for piece in _pieces(call.arguments_json(), chunk_size)
            ),
        ]
        for index, call in enumerate(response.tool_calls)
    ]
    if interleave:
        longest = max((len(deltas) for deltas in per_call), default=0)
        for position in range(longest):
            yield from (deltas[position] for deltas in per_call if position < len(deltas))
    else:
        yield from (delta for deltas in per_call for delta in deltas)
    yield FinalResponse(response=response)


def check_chunk_size(chunk_size: int) -> None:
    """Refuse a chunk size that is not a positive integer."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ModelConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}.")


class ScriptedChatModel:
    """A ``ChatModel`` that answers each call with the next scripted turn.

    Args:
        turns: one turn per expected model call (see the module docstring).
        chunk_size: characters per streamed text (and argument) delta.
        delay: seconds between streamed deltas.
        model: the model name it reports.

    Example::

        model = ScriptedChatModel(["Hello!", ToolCall(name="weather", arguments={"city": "Oslo"})])
        response = await model.request(ModelRequest(messages=[ModelMessage.user("Hi")]))
        assert response.text == "Hello!"
    """

    def __init__(
        self,
        turns: Iterable[Turn],
        *,
        chunk_size: int = 8,
        delay: float = 0.0,
        model: str = "scripted",
    ):
        check_chunk_size(chunk_size)
        if delay < 0:
            raise ModelConfigError(f"delay must be zero or more seconds, got {delay!r}.")
        self.model = model
        self.chunk_size = chunk_size
        self.delay = delay
        self.requests: list[ModelRequest] = []
        """Every request received, in order (failed ones included)."""
        self._turns: deque[Turn] = deque(turns)
        self._scripted = len(self._turns)

    @property
    def remaining(self) -> int:
        """How many scripted turns are still unused."""
        return len(self._turns)

    def add_turns(self, *turns: Turn) -> None:
        """Script more turns, after the ones still waiting."""
        self._turns.extend(turns)
        self._scripted += len(turns)

    def _next(self, request: ModelRequest) -> Turn:
        self.requests.append(request)
        if not self._turns:
            last = request.messages[-1] if request.messages else None
            shown = None
            if last is not None:
                text = last.text if len(last.text) <= 60 else last.text[:57] + "..."
                shown = f"{last.role}: {text!r}"
            raise ScriptExhaustedError(
                model=self.model, scripted=self._scripted, last_message=shown
            )
        return self._turns.popleft()

    async def request(self, req: ModelRequest) -> ModelResponse:
        """Answer with the next turn.

        Raises:
            ScriptExhaustedError: every scripted turn has been used.
        """
        await anyio.lowlevel.checkpoint()
        return turn_response(self._next(req), req, model=self.model)

    async def stream(self, req: ModelRequest) -> AsyncGenerator[StreamEvent, None]:
        """Stream the next turn: deltas ``delay`` seconds apart, then the ``FinalResponse``.

        Raises:
            ScriptExhaustedError: every scripted turn has been used.
        """
        turn = resolve_turn(self._next(req), req)
        failure = turn if isinstance(turn, StreamFailure) else None
        response = turn_response(turn if failure is None else failure.turn, req, model=self.model)
        events = list(response_events(response, chunk_size=self.chunk_size))
        if failure is not None:  # The start of the reply, never its FinalResponse.
            events = events[: min(failure.after, len(events) - 1)]
        for number, event in enumerate(events):
            if number and not isinstance(event, FinalResponse):
                await anyio.sleep(self.delay)
            else:
                await anyio.lowlevel.checkpoint()
            yield event
        if failure is not None:
            raise failure.exception(self.model)

    def assert_consumed(self) -> None:
        """Check that every scripted turn was used.

        Raises:
            ScriptNotConsumedError: some turns never ran (it lists them).
        """
        if self._turns:
            raise ScriptNotConsumedError(
                model=self.model,
                scripted=self._scripted,
                remaining=[describe_turn(turn) for turn in self._turns],
            )
