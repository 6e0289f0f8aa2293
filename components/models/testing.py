"""Owns ``OpenAITestServer``: an OpenAI-compatible HTTP server on 127.0.0.1 that plays a script.

For tests, like Starlette's ``TestClient``: the real ``openai`` client talks to it over
HTTP. ``POST /v1/chat/completions`` answers with the next scripted turn (the turns of
``ScriptedChatModel``, plus ``ErrorReply`` for an HTTP error), whole or streamed exactly as
OpenAI streams (``chat.completion.chunk`` events, tool-call argument fragments, a usage chunk,
``[DONE]``); a ``StreamFailure`` turn breaks a stream off. ``POST /v1/embeddings`` answers
with ``HashingEmbedder`` vectors (float or base64), unless an ``ErrorReply`` or explicit
vectors are scripted. Every request is recorded. ::

    with OpenAITestServer() as server:
        server.script_chat(ErrorReply(status=429, retry_after=0), "Hello!")
        async with server.client() as client:
            model = OpenAIChatModel("gpt-4o-mini", client=client)
            response = await model.request(ModelRequest(messages=[ModelMessage.user("Hi")]))
        assert response.text == "Hello!"  # After one retry.
        assert len(server.chat_requests) == 2
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from components.models.base import ModelRequest
from components.models.local import HashingEmbedder
from components.models.openai_embeddings import KNOWN_EMBEDDING_DIMENSIONS
from components.models.scripted import (
    StreamFailure,
    Turn,
    check_chunk_size,
    resolve_turn,
    response_events,
    turn_response,
)
from components.models.tokens import count_tokens
from components.models.wire import (
    SSE_DONE,
    ChunkEncoder,
    completion_body,
    request_from_body,
    sse_event,
)

if TYPE_CHECKING:
    from openai import AsyncOpenAI


class _DroppedConnection(Exception):
    """Raised inside a streaming response to make uvicorn cut the connection."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorReply:
    """A scripted HTTP error: the status, OpenAI's error body, and Retry-After if given."""

    status: int = 500
    """The HTTP status."""
    message: str = "Scripted error."
    """The error's message."""
    code: str | None = None
    """OpenAI's error code (e.g. ``"rate_limit_exceeded"``, ``"insufficient_quota"``)."""
    retry_after: float | None = None
    """Seconds sent as ``Retry-After``."""

    def response(self) -> JSONResponse:
        """The HTTP response."""
        headers = {} if self.retry_after is None else {"retry-after": f"{self.retry_after:g}"}
        body = {
            "error": {
                "message": self.message,
                "type": "rate_limit_error" if self.status == 429 else "server_error",
                "param": None,
                "code": self.code,
            }
        }
        return JSONResponse(body, status_code=self.status, headers=headers)


EmbeddingReply: TypeAlias = ErrorReply | list[list[float]]
"""A scripted embeddings answer: an error, or the vectors to return."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedRequest:
    """One request the server received."""

    path: str
    """The URL path, e.g. ``/v1/chat/completions``."""
    body: dict[str, Any]
    """The JSON body."""
    headers: dict[str, str] = field(default_factory=dict)
    """The headers (lower-cased names)."""

    def model_request(self) -> ModelRequest:
        """A chat request's body read back as a ``ModelRequest``."""
        return request_from_body(self.body)


class OpenAITestServer:
    """An OpenAI-compatible server on 127.0.0.1 and a free port, in a background thread.

    Args:
        model: the model name it reports when a request names none.
        chunk_size: characters per streamed text or argument delta.
        interleave_tool_calls: stream the fragments of parallel calls interleaved.
        embedding_dimensions: vector length when neither the request nor the model says.
    """

    __test__ = False

    def __init__(
        self,
        *,
        model: str = "test-model",
        chunk_size: int = 8,
        interleave_tool_calls: bool = False,
        embedding_dimensions: int = 1536,
    ):
        check_chunk_size(chunk_size)
        self.model = model
        self.chunk_size = chunk_size
        self.interleave_tool_calls = interleave_tool_calls
        self.embedding_dimensions = embedding_dimensions
        self.requests: list[RecordedRequest] = []
        """Every request received, in order."""
        self._chat: deque[Turn | ErrorReply] = deque()
        self._embeddings: deque[EmbeddingReply] = deque()
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- the script ------------------------------------------------------------------------

    def script_chat(self, *turns: Turn | ErrorReply) -> None:
        """Queue answers for the next chat completions requests, one each."""
        with self._lock:
            self._chat.extend(turns)

    def script_embeddings(self, *replies: EmbeddingReply) -> None:
        """Queue answers (errors or vectors) for the next embeddings requests, one each."""
        with self._lock:
            self._embeddings.extend(replies)

    def reset(self) -> None:
        """Forget the script and the recorded requests."""
        with self._lock:
            self._chat.clear()
            self._embeddings.clear()
            self.requests.clear()

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The chat completions requests received."""
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def embedding_requests(self) -> list[RecordedRequest]:
        """The embeddings requests received."""
        return [r for r in self.requests if r.path.endswith("/embeddings")]

    def assert_consumed(self) -> None:
        """Check that every scripted answer was used.

        Raises:
            AssertionError: some were not (it says how many).
        """
        with self._lock:
            left = (len(self._chat), len(self._embeddings))
        if any(left):
            raise AssertionError(
                f"OpenAITestServer: {left[0]} chat and {left[1]} embeddings answers were "
                "scripted but never requested."
            )

    # -- HTTP ------------------------------------------------------------------------------

    async def _record(self, request: Request) -> dict[str, Any]:
        body = await request.json()
        with self._lock:
            self.requests.append(
                RecordedRequest(path=request.url.path, body=body, headers=dict(request.headers))
            )
        return body  # type: ignore[no-any-return]

    async def _chat_completions(self, request: Request) -> Response:
        body = await self._record(request)
        with self._lock:
            turn = self._chat.popleft() if self._chat else None
        if turn is None:
            return ErrorReply(
                status=500, message="OpenAITestServer: no chat answer was scripted."
            ).response()
        if isinstance(turn, ErrorReply):
            return turn.response()
        model = str(body.get("model") or self.model)
        request_record = request_from_body(body)
        try:
            turn = resolve_turn(turn, request_record)
            failure = turn if isinstance(turn, StreamFailure) else None
            if failure is not None and not body.get("stream"):
                raise failure.exception(model)
            reply = turn if failure is None else failure.turn
            response = turn_response(reply, request_record, model=model)
        except Exception as error:  # An exception turn: the call fails with a 500.
            return ErrorReply(status=500, message=f"{type(error).__name__}: {error}").response()
        if not body.get("stream"):
            return JSONResponse(completion_body(response))
        encoder = ChunkEncoder(
            model=model,
            include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
        )
        events = list(
            response_events(
                response, chunk_size=self.chunk_size, interleave=self.interleave_tool_calls
            )
        )
        if failure is not None:  # The start of the reply, never its end.
            events = events[: min(failure.after, len(events) - 1)]

        async def chunks() -> AsyncIterator[bytes]:
            for event in events:
                for chunk in encoder.encode(event):
                    yield sse_event(chunk)
            if failure is None:
                yield SSE_DONE
            elif failure.error is not None:
                error = {"message": str(failure.error), "type": "server_error", "code": None}
                yield sse_event({"error": {**error, "param": None}})
            else:
                raise _DroppedConnection("OpenAITestServer: a StreamFailure drops the connection.")

        return StreamingResponse(chunks(), media_type="text/event-stream")

    async def _embeddings_endpoint(self, request: Request) -> Response:
        body = await self._record(request)
        with self._lock:
            reply = self._embeddings.popleft() if self._embeddings else None
        if isinstance(reply, ErrorReply):
            return reply.response()
        model = str(body.get("model") or self.model)
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        if reply is None:
            dimensions = int(
                body.get("dimensions")
                or KNOWN_EMBEDDING_DIMENSIONS.get(model, self.embedding_dimensions)
            )
            reply = await HashingEmbedder(dimensions).embed([str(t) for t in texts])
        base64_format = body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
                if base64_format
                else vector,
            }
            for index, vector in enumerate(reply)
        ]
        tokens = sum(count_tokens(str(t), model) for t in texts)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _models(self, request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "test"}],
            }
        )

    def asgi(self) -> Starlette:
        """The Starlette app (to mount or serve elsewhere)."""
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat_completions, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings_endpoint, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The API's base URL, e.g. ``http://127.0.0.1:51234/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def client(self, **options: Any) -> AsyncOpenAI:
        """An ``openai.AsyncOpenAI`` for this server (needs the ``openai`` extra)."""
        import openai

        return openai.AsyncOpenAI(base_url=self.base_url, api_key="test-key", **options)

    def start(self, *, timeout: float = 20.0) -> None:
        """Start serving; return once connections are accepted.

        Raises:
            RuntimeError: uvicorn failed to start, or did not within ``timeout`` seconds.
        """
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        config = uvicorn.Config(
            self.asgi(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        server = self._server = uvicorn.Server(config)
        thread = self._thread = threading.Thread(
            target=server.run, name="openai-test-server", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("OpenAITestServer: uvicorn stopped during startup.")
            if time.monotonic() > deadline:
                raise RuntimeError(f"OpenAITestServer did not start within {timeout:g} s.")
            thread.join(0.01)

    def stop(self, *, timeout: float = 20.0) -> None:
        """Stop serving and wait for the thread."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout)

    def __enter__(self) -> OpenAITestServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def json_chunks(raw: bytes) -> list[Mapping[str, Any]]:
    """The JSON objects of an SSE body (``[DONE]`` left out), for inspecting streams."""
    events = [line[len(b"data: ") :] for line in raw.split(b"\n") if line.startswith(b"data: ")]
    return [json.loads(event) for event in events if event != b"[DONE]"]
