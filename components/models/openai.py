"""Owns ``OpenAIChatModel`` (Chat Completions) and how the ``openai`` client is made and shared.

It works against any OpenAI-compatible server, as does ``OpenAIEmbedder`` (which shares
``OpenAIClients``). Without ``client=``, each builds an
``openai.AsyncOpenAI`` on first use (base URL and key from ``OPENAI_BASE_URL`` /
``OPENAI_API_KEY``), one per event loop, so a model object outlives the loops it is used
from (tests, portals). Retries are ours (``Backoff``), so the client's own are turned off.
``openai`` itself is imported only when a request is made.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncGenerator, Iterator
from typing import TYPE_CHECKING, Any

import anyio.lowlevel

from components.models.base import (
    FinalResponse,
    ModelRequest,
    ModelResponse,
    StreamAccumulator,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    new_tool_call_id,
    normalize_finish_reason,
)
from components.models.errors import (
    ModelConfigError,
    ModelConnectionError,
    ModelError,
    ModelResponseError,
)
from components.models.retries import Backoff, map_error, with_retries
from components.models.tokens import estimate_usage
from components.models.wire import request_params

if TYPE_CHECKING:
    from openai import AsyncOpenAI

# Options that configure the client's call rather than the request body.
_CALL_OPTIONS = frozenset(("timeout", "extra_headers", "extra_query"))


def _current_loop() -> object:
    token = anyio.lowlevel.current_token()
    # anyio >= 4.11 wraps the loop in a fresh EventLoopToken per call; key on the loop itself.
    return getattr(token, "native_token", token)


class OpenAIClients:
    """The ``AsyncOpenAI`` a model uses: the one given, or one per event loop made on demand."""

    __slots__ = ("_given", "_made", "_model")

    def __init__(self, given: AsyncOpenAI | None, *, model: str):
        # Our Backoff does the retrying; the client's own retries would multiply the attempts.
        self._given = given.with_options(max_retries=0) if given is not None else None
        self._model = model
        self._made: weakref.WeakKeyDictionary[object, AsyncOpenAI] = weakref.WeakKeyDictionary()

    def get(self) -> AsyncOpenAI:
        """The client for the running event loop.

        Raises:
            ModelConfigError: no client was given and no API key is configured.
        """
        if self._given is not None:
            return self._given
        # An httpx pool keeps connections bound to the loop that opened them: reusing them
        # from another loop fails, so each loop gets its own client.
        loop = _current_loop()
        client = self._made.get(loop)
        if client is None:
            import openai

            try:
                client = openai.AsyncOpenAI(max_retries=0)
            except openai.OpenAIError as error:
                raise ModelConfigError(
                    f'Model "{self._model}" has no API key: set OPENAI_API_KEY (any value for '
                    "a local OpenAI-compatible server, with OPENAI_BASE_URL), or pass "
                    f"client=openai.AsyncOpenAI(...). ({error})",
                    model=self._model,
                ) from error
            self._made[loop] = client
        return client

    async def aclose(self) -> None:
        """Close the client made for the running loop, and forget those of other loops."""
        if self._given is None:
            client = self._made.pop(_current_loop(), None)
            self._made.clear()
            if client is not None:
                await client.close()


def _split_options(options: dict[str, Any]) -> dict[str, Any]:
    # Body options go through ``extra_body``: any OpenAI-compatible server's own options
    # work, whatever this version of the ``openai`` client knows about.
    call = {key: options.pop(key) for key in list(options) if key in _CALL_OPTIONS}
    extra_body = {**options.pop("extra_body", {}), **options}
    if extra_body:
        call["extra_body"] = extra_body
    return call


def _usage(raw: Any) -> Usage | None:
    if raw is None:
        return None
    prompt = int(getattr(raw, "prompt_tokens", 0) or 0)
    completion = int(getattr(raw, "completion_tokens", 0) or 0)
    total = int(getattr(raw, "total_tokens", 0) or 0) or prompt + completion
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


class _StreamReader:
    """Turns ``chat.completion.chunk`` objects into events and the final response."""

    def __init__(self) -> None:
        self.accumulator = StreamAccumulator()
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model = ""
        self.refusal: list[str] = []
        # The provider's index -> (our index, call id). Some servers (Ollama) reuse index 0
        # for every call and vary only the id: a new id at a known index is a new call.
        self._calls: dict[int, tuple[int, str]] = {}
        self._started = 0

    def _call_index(self, provider_index: int, call_id: str | None) -> tuple[int, str | None]:
        """Our index for a call delta, and the call's id when the delta starts a call."""
        known = self._calls.get(provider_index)
        if known is not None and (not call_id or call_id == known[1]):
            return known[0], None
        ours = self._started
        self._started += 1
        call_id = call_id or new_tool_call_id()
        self._calls[provider_index] = (ours, call_id)
        return ours, call_id

    def feed(self, chunk: Any) -> Iterator[TextDelta | ToolCallDelta]:
        self.usage = _usage(getattr(chunk, "usage", None)) or self.usage
        self.model = getattr(chunk, "model", None) or self.model
        for choice in getattr(chunk, "choices", None) or ():
            if choice.index != 0:
                continue  # Only the first choice (n=1).
            delta = choice.delta
            if delta is not None:
                if delta.content:
                    text = TextDelta(text=delta.content)
                    self.accumulator.add(text)
                    yield text
                if getattr(delta, "refusal", None):
                    self.refusal.append(delta.refusal)
                for call in delta.tool_calls or ():
                    index, new_id = self._call_index(call.index or 0, call.id)
                    function = call.function
                    event = ToolCallDelta(
                        index=index,
                        id=new_id,
                        name=(function.name or None) if function is not None else None,
                        arguments=(function.arguments or "") if function is not None else "",
                    )
                    self.accumulator.add(event)
                    yield event
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason


def _broken_stream(model: str, error: Exception) -> ModelConnectionError:
    detail = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
    return ModelConnectionError(model=model, detail=f"the stream broke off: {detail}")


class OpenAIChatModel:
    """A ``ChatModel`` on OpenAI Chat Completions (or any OpenAI-compatible server).

    Args:
        model: the model name, e.g. ``"gpt-4o-mini"``.
        client: an ``openai.AsyncOpenAI`` to use (default: one from the environment).
        backoff: how 429s, 5xx and connection failures are retried.
        **options: request options for every call (``temperature``, ``max_tokens``, ...);
            a request's own ``options`` override them.
    """

    def __init__(
        self,
        model: str,
        *,
        client: AsyncOpenAI | None = None,
        backoff: Backoff | None = None,
        **options: Any,
    ):
        self.model = model
        self.backoff = backoff or Backoff()
        self.options = options
        self._clients = OpenAIClients(client, model=model)

    def _params(self, req: ModelRequest, *, stream: bool) -> dict[str, Any]:
        options = {**self.options, **req.options}
        options.pop("stream", None)
        # Usage arrives on a last chunk only when asked for; options may replace (or, with
        # None, drop) stream_options for servers that refuse it.
        stream_options = options.pop("stream_options", {"include_usage": True})
        params = {"model": self.model, **request_params(req), **_split_options(options)}
        if stream:
            params["stream"] = True
            if stream_options is not None:
                params["stream_options"] = stream_options
        return params

    def _finish(
        self,
        req: ModelRequest,
        *,
        text: str,
        calls: tuple[ToolCall, ...],
        finish: str | None,
        usage: Usage | None,
        model: str,
        refusal: str | None,
    ) -> ModelResponse:
        return ModelResponse(
            text=text,
            tool_calls=calls,
            finish_reason=normalize_finish_reason(finish, has_tool_calls=bool(calls)),
            # A server that reports no usage gets it counted here, never a silent zero.
            usage=usage or estimate_usage(req, text=text, tool_calls=calls, model=self.model),
            model=model or self.model,
            refusal=refusal,
        )

    async def request(self, req: ModelRequest) -> ModelResponse:
        """Answer one request (retrying per ``backoff``).

        Raises:
            ModelAPIError: the provider refused (the status is named), retries included.
            ModelRateLimitError: still rate-limited after the retries.
            ModelConnectionError: the provider could not be reached.
            ModelResponseError: the answer has no choice, or is malformed.
        """
        client = self._clients.get()
        params = self._params(req, stream=False)
        completion: Any = await with_retries(
            lambda: client.chat.completions.create(**params),
            model=self.model,
            backoff=self.backoff,
        )
        if not completion.choices:
            raise ModelResponseError("the completion has no choices", model=self.model)
        choice = completion.choices[0]
        message = choice.message
        calls = tuple(
            ToolCall.from_json(
                id=call.id or new_tool_call_id(),
                name=call.function.name,
                arguments=call.function.arguments or "",
            )
            for call in message.tool_calls or ()
            if getattr(call, "function", None) is not None
        )
        return self._finish(
            req,
            text=message.content or "",
            calls=calls,
            finish=choice.finish_reason,
            usage=_usage(completion.usage),
            model=completion.model,
            refusal=getattr(message, "refusal", None),
        )

    async def stream(self, req: ModelRequest) -> AsyncGenerator[StreamEvent, None]:
        """Stream one answer: text and tool-call deltas, then a ``FinalResponse`` with usage.

        Tool-call argument fragments are reassembled by index; usage comes from the final
        chunk (``stream_options.include_usage``). Only opening the stream is retried.

        Raises:
            ModelAPIError: the provider refused (the status is named), retries included.
            ModelRateLimitError: still rate-limited after the retries.
            ModelConnectionError: the provider could not be reached, or the stream broke off.
            ModelResponseError: the stream carried an error or a malformed chunk.
        """
        import openai

        client = self._clients.get()
        params = self._params(req, stream=True)
        chunks: Any = await with_retries(
            lambda: client.chat.completions.create(**params),
            model=self.model,
            backoff=self.backoff,
        )
        reader = _StreamReader()
        iterator = chunks.__aiter__()
        try:
            while True:
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                except ModelError:
                    raise
                except openai.OpenAIError as error:
                    if not isinstance(error, openai.APIConnectionError):
                        raise map_error(error, model=self.model) from error
                    raise _broken_stream(self.model, error) from error
                except Exception as error:
                    raise _broken_stream(self.model, error) from error
                for event in reader.feed(chunk):
                    yield event
        finally:
            await chunks.close()
        calls = reader.accumulator.tool_calls()
        yield FinalResponse(
            response=self._finish(
                req,
                text=reader.accumulator.text,
                calls=calls,
                finish=reader.finish_reason,
                usage=reader.usage,
                model=reader.model,
                refusal="".join(reader.refusal) or None,
            )
        )

    async def aclose(self) -> None:
        """Close the client this model made for the current event loop (not a given one)."""
        await self._clients.aclose()

    async def __aenter__(self) -> OpenAIChatModel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
