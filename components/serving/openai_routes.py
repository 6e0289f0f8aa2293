"""Owns the OpenAI-compatible endpoints at the server's root: chat completions and models.

``POST /v1/chat/completions``: ``model`` names an exposed agent; the last message (the
user's) is the prompt. The thread named by the ``X-Capsule-Thread-Id`` request header is
continued (it must be the caller's); without the header a new thread is created, seeded with
the request's earlier messages, and its id comes back in the ``X-Capsule-Thread-Id`` response
header: send it on the next request to continue the conversation with the history kept on the
server. The agent's tool calls run on the server: the client sees only the text. Usage is
reported (on the last chunk when ``stream_options.include_usage`` is set).

``GET /v1/models`` lists the agents exposed with the ``openai`` protocol.

Auth: ``api_key`` travels as ``Authorization: Bearer <key>``. When the server verifies JWTs
(``CAPSULE_JWT_*``) the key must be a valid token and threads are the token subject's; when
it does not, any key is accepted and the caller is anonymous, like every other request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from components.serving.agents import ExposedAgent
from components.serving.endpoints import follow, read_json, sse
from components.serving.errors import AgentNotFoundError, ReplyFailedError, ServingError
from components.serving.openai_wire import (
    ChatRequest,
    ChunkStream,
    chat_completion,
    error_body,
    models_list,
    parse_chat_request,
)

THREAD_HEADER = "x-capsule-thread-id"
"""The request header naming the thread to continue, and the response header naming it."""

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "invalid_request_error",
}


def openai_error(server: Any, exc: BaseException, where: str) -> Response:
    """An exception as an OpenAI-style error response (bugs logged, as everywhere)."""
    status, body = server.error_body(exc)
    if status == 500:
        server.error_response(exc, where=where)  # logs it
    param = getattr(exc, "param", None)
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return JSONResponse(
        error_body(body["message"], type=kind, code=body["code"], param=param),
        status_code=status,
    )


class OpenAIRoutes:
    """The route factory for ``/v1``: one per app, shared by every exposed agent."""

    def __init__(self) -> None:
        self.agents: dict[str, ExposedAgent] = {}
        """Exposed agents by name (those without the ``openai`` protocol are skipped)."""

    def served(self) -> dict[str, ExposedAgent]:
        """The agents reachable through ``/v1``."""
        return {n: a for n, a in self.agents.items() if "openai" in a.protocols}

    def __call__(self, server: Any) -> list[Route]:
        """The ``/v1`` routes (none when no agent is exposed with ``openai``)."""
        if not self.served():
            return []
        endpoints = OpenAIEndpoints(server, self)
        return [
            Route("/v1/models", server.guarded(endpoints.models), methods=["GET"]),
            Route(
                "/v1/chat/completions",
                server.guarded(endpoints.chat_completions),
                methods=["POST"],
            ),
        ]


class OpenAIEndpoints:
    """``GET /v1/models`` and ``POST /v1/chat/completions`` (see the module docstring)."""

    def __init__(self, server: Any, routes: OpenAIRoutes):
        self.server = server
        self.routes = routes

    def identity(self, request: Request) -> Any:
        """The caller: verified when the server checks tokens, else anonymous."""
        if self.server.verifier is None:
            return None  # no token verification configured: any key, anonymous caller
        return self.server.identity(request)

    async def models(self, request: Request) -> Response:
        """``GET /v1/models``: the exposed agents."""
        try:
            self.identity(request)
        except Exception as exc:
            return openai_error(self.server, exc, "GET /v1/models")
        return JSONResponse(models_list(sorted(self.routes.served())))

    async def chat_completions(self, request: Request) -> Response:
        """``POST /v1/chat/completions``: one reply, whole or streamed."""
        try:
            identity = self.identity(request)
            chat = parse_chat_request(await read_json(request))
            served = self.routes.served()
            exposed = served.get(chat.model)
            if exposed is None:
                raise AgentNotFoundError(chat.model, exposed=sorted(served))
            thread_id = request.headers.get(THREAD_HEADER) or None
            history = [{"role": m.role, "text": m.text} for m in chat.history]
            sent = await self.server.run_mutation(
                exposed.refs["send"],
                {"thread_id": thread_id, "text": chat.prompt, "history": history},
                identity,
            )
            headers = {THREAD_HEADER: sent["thread_id"]}
            if chat.stream:
                events = self._stream(exposed, chat, identity, sent)
                return sse(events, self.server, headers)
            outcome = await self._outcome(exposed, identity, sent)
            if outcome["status"] == "failed" and not outcome.get("aborted"):
                raise ReplyFailedError(exposed.name, outcome["error"])
            body = chat_completion(
                model=chat.model,
                text=outcome["text"],
                finish=outcome["finish_reason"],
                usage=outcome["usage"],
            )
            return JSONResponse(body, headers=headers)
        except Exception as exc:
            return openai_error(self.server, exc, "POST /v1/chat/completions")

    async def _turns(
        self, exposed: ExposedAgent, identity: Any, sent: dict[str, Any]
    ) -> AsyncIterator[tuple[dict[str, Any], list[dict[str, Any]], bool]]:
        """Follow one turn: ``(outcome, new parts, over)`` per update."""
        order = sent["order"]
        statuses: dict[str, str] = {}
        updates = follow(
            self.server,
            exposed,
            identity,
            sent["thread_id"],
            order=order,
            reply_job=sent["reply_job"],
        )
        try:
            async for result in updates:
                turn = {s["stream_id"] for s in result["streams"] if s["order"] == order}
                for stream in result["streams"]:
                    if stream["stream_id"] in turn:
                        statuses[stream["stream_id"]] = stream["status"]
                parts = [
                    part
                    for delta in result["deltas"]
                    if delta["stream_id"] in turn
                    for part in delta["parts"]
                ]
                outcome = result["outcome"]
                over = bool(outcome["done"])
                outcome["aborted"] = any(status == "aborted" for status in statuses.values())
                yield outcome, parts, over
                if over:
                    return
        finally:
            await updates.aclose()

    async def _outcome(
        self, exposed: ExposedAgent, identity: Any, sent: dict[str, Any]
    ) -> dict[str, Any]:
        async for outcome, _parts, over in self._turns(exposed, identity, sent):
            if over:
                return outcome
        raise ServingError("The server is shutting down; the reply was not awaited.")

    async def _stream(
        self, exposed: ExposedAgent, chat: ChatRequest, identity: Any, sent: dict[str, Any]
    ) -> AsyncIterator[str]:
        chunks = ChunkStream(model=chat.model)
        yield chunks.start()
        async for outcome, parts, over in self._turns(exposed, identity, sent):
            for event in chunks.parts(parts):
                yield event
            if not over:
                continue
            if outcome["status"] == "failed" and not outcome["aborted"]:
                for event in chunks.error(f"The agent failed: {outcome['error']}"):
                    yield event
                return
            for event in chunks.finish(
                outcome["finish_reason"], usage=outcome["usage"], include_usage=chat.include_usage
            ):
                yield event
            return
