"""Owns an exposed agent's HTTP endpoints under ``/agents/<name>``.

=====================================================  =======================================
``POST   /agents/<name>/threads``                      create a thread: ``{"thread_id"}``
``GET    /agents/<name>/threads``                      the caller's threads
``GET    /agents/<name>/threads/{id}/messages``        the thread's messages, oldest first
``POST   /agents/<name>/threads/{id}/messages``        send ``{"text"}``; the reply as SSE
``GET    /agents/<name>/threads/{id}/stream``          the thread's live stream (SSE),
                                                       resumable with ``Last-Event-ID``
``POST   /agents/<name>/threads/{id}/stop``            stop the running reply
``POST   /agents/<name>/chat``                         ``useChat`` (Vercel UI message stream)
``GET    /agents/<name>/chat/{id}/stream``             ``useChat`` resume: 204 when idle
=====================================================  =======================================

Capsule's SSE events: ``start`` (``{"thread_id", "message_id", "order"}``, on a send),
``delta`` (``{"stream_id", "start", "end", "parts"}``, parts as the AI SDK's UI message chunks
in snake_case), ``stream`` (a stream's status changed: ``{"stream_id", "order", "status",
"reason"}``), ``done`` (the reply's outcome on a send; ``{}`` on a thread stream) and
``error``. Delta events carry ``id: <cursor>``; send it back as ``Last-Event-ID`` (or
``?cursor=``) to resume after it. ``?protocol=vercel`` on a send answers with the UI message
stream instead. Followers read only what is persisted, so a reconnect may go to any server
process, and a client leaving never stops the reply (``.../stop`` does).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from components.serving.agents import ExposedAgent
from components.serving.errors import ChatRequestError
from components.serving.sse import json_frame
from components.serving.ui_stream import UI_MESSAGE_STREAM_HEADERS, UIMessageStream
from core import InvalidArgumentError

RESUBSCRIBE_AFTER = 200
"""Delta rows one subscription may accumulate before following resumes from a new cursor."""
MAX_BODY_BYTES = 1 << 20
"""The largest request body an agent endpoint reads."""
ENDED = frozenset({"finished", "aborted", "failed"})


async def read_json(request: Request) -> Any:
    """The request's JSON body (400 when it is not JSON)."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise InvalidArgumentError(f"The request body is over {MAX_BODY_BYTES:,} bytes.")
    try:
        return json.loads(raw or b"{}")
    except ValueError as exc:
        raise InvalidArgumentError(f"The request body is not valid JSON: {exc}.") from None


def ui_message_text(message: Any) -> str:
    """The text of a ``useChat`` UI message (its ``text`` parts joined)."""
    if not isinstance(message, dict):
        return ""
    parts = message.get("parts")
    if isinstance(parts, list):
        return "".join(
            p["text"]
            for p in parts
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    content = message.get("content")
    return content if isinstance(content, str) else ""


def prompt_of(body: Any) -> str:
    """The prompt of a send: ``{"text"}``, or ``useChat``'s ``{"messages"}`` / ``{"message"}``.

    Raises:
        ChatRequestError: there is no non-empty user text.
    """
    if not isinstance(body, dict):
        raise ChatRequestError("The request body must be a JSON object.")
    if isinstance(body.get("text"), str):
        text: str = body["text"]
    elif isinstance(body.get("message"), dict):
        text = ui_message_text(body["message"])
    elif isinstance(body.get("messages"), list) and body["messages"]:
        text = ui_message_text(body["messages"][-1])
    else:
        raise ChatRequestError('Send {"text": "..."} (or useChat\'s {"messages": [...]}).')
    if not text.strip():
        raise ChatRequestError("The message text is empty.", param="text")
    return text


async def follow(
    server: Any,
    exposed: ExposedAgent,
    identity: Any,
    thread_id: str,
    *,
    cursor: str | None = None,
    order: int | None = None,
    reply_job: str | None = None,
) -> AsyncGenerator[dict[str, Any], None]:
    """Follow a thread's persisted streams: yield each new result of the ``follow`` query.

    Each yielded result holds only deltas not yielded before (``deltas``), every stream's
    status (``streams``), the cursor after them (``cursor``), ``done`` (every stream ended),
    ``busy_orders`` (turns with a pending message) and, with ``order``, that turn's
    ``outcome`` (failed at once if ``reply_job``, the reply's scheduled action, ended
    without starting it). Ends when the runtime closes.
    """
    ref = exposed.refs["follow"]
    emitted: dict[str, int] = {}
    while True:
        updates = server.follow(
            ref,
            {"thread_id": thread_id, "cursor": cursor, "order": order, "reply_job": reply_job},
            identity,
        )
        try:
            async for result in updates:
                fresh = [d for d in result["deltas"] if d["end"] > emitted.get(d["stream_id"], -1)]
                for delta in fresh:
                    emitted[delta["stream_id"]] = delta["end"]
                yield {**result, "deltas": fresh}
                if len(result["deltas"]) >= RESUBSCRIBE_AFTER:
                    cursor = result["cursor"]
                    break
            else:
                return
        finally:
            await updates.aclose()


def sse(events: AsyncIterator[str], server: Any, headers: dict[str, str] | None = None) -> Response:
    """An event stream of pre-framed events, with keep-alive pings."""

    async def raw() -> AsyncIterator[bytes]:
        async for event in events:
            yield event.encode("utf-8")

    return EventSourceResponse(
        raw(), ping=server.settings.sse_ping_seconds, headers=headers or {}, sep="\n"
    )


class AgentEndpoints:
    """The endpoints of one exposed agent (see the module docstring)."""

    def __init__(self, server: Any, exposed: ExposedAgent):
        self.server = server
        self.exposed = exposed

    # -- plumbing --------------------------------------------------------------------------

    def guarded(
        self, handler: Callable[[Request], Awaitable[Response]], what: str
    ) -> Callable[[Request], Awaitable[Response]]:
        """Errors become the server's JSON error responses; shutdown and in-flight as usual."""

        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                response: Response = self.server.error_response(
                    exc, where=f"agent {self.exposed.name} {what}"
                )
                return response

        return self.server.guarded(endpoint)  # type: ignore[no-any-return]

    def identity(self, request: Request) -> Any:
        """The verified caller (a token in the header, or ``?token=`` for EventSource)."""
        return self.server.identity(request, query_token=True)

    def routes(self) -> list[Route]:
        """The Starlette routes for the protocols the agent exposes."""
        p = self.exposed.prefix
        routes: list[Route] = []
        if "capsule" in self.exposed.protocols or "vercel" in self.exposed.protocols:
            routes += [
                Route(f"{p}/threads", self.guarded(self.create, "create"), methods=["POST"]),
                Route(f"{p}/threads", self.guarded(self.threads, "threads"), methods=["GET"]),
                Route(
                    f"{p}/threads/{{thread_id}}",
                    self.guarded(self.thread, "thread"),
                    methods=["GET"],
                ),
                Route(
                    f"{p}/threads/{{thread_id}}/messages",
                    self.guarded(self.messages, "messages"),
                    methods=["GET"],
                ),
                Route(
                    f"{p}/threads/{{thread_id}}/messages",
                    self.guarded(self.send, "send"),
                    methods=["POST"],
                ),
                Route(
                    f"{p}/threads/{{thread_id}}/stream",
                    self.guarded(self.stream, "stream"),
                    methods=["GET"],
                ),
                Route(
                    f"{p}/threads/{{thread_id}}/stop",
                    self.guarded(self.stop, "stop"),
                    methods=["POST"],
                ),
            ]
        if "vercel" in self.exposed.protocols:
            routes += [
                Route(f"{p}/chat", self.guarded(self.chat, "chat"), methods=["POST"]),
                Route(
                    f"{p}/chat/{{thread_id}}/stream",
                    self.guarded(self.chat_resume, "chat resume"),
                    methods=["GET"],
                ),
            ]
        return routes

    # -- JSON endpoints --------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        """``POST .../threads``: a new thread of the caller's."""
        body = await read_json(request)
        title = body.get("title") if isinstance(body, dict) else None
        thread_id = await self.server.run_mutation(
            self.exposed.refs["create"], {"title": title}, self.identity(request)
        )
        return JSONResponse({"thread_id": thread_id})

    async def threads(self, request: Request) -> Response:
        """``GET .../threads``: the caller's threads."""
        found = await self.server.run_query(
            self.exposed.refs["threads"], {}, self.identity(request)
        )
        return JSONResponse({"threads": found})

    async def thread(self, request: Request) -> Response:
        """``GET .../threads/{id}``: one of the caller's threads."""
        thread_id = request.path_params["thread_id"]
        found = await self.server.run_query(
            self.exposed.refs["thread"], {"thread_id": thread_id}, self.identity(request)
        )
        return JSONResponse(found)

    async def messages(self, request: Request) -> Response:
        """``GET .../threads/{id}/messages``: the thread's messages, oldest first."""
        thread_id = request.path_params["thread_id"]
        found = await self.server.run_query(
            self.exposed.refs["messages"], {"thread_id": thread_id}, self.identity(request)
        )
        return JSONResponse({"messages": found})

    async def stop(self, request: Request) -> Response:
        """``POST .../threads/{id}/stop``: stop the running reply (its partial text is kept)."""
        thread_id = request.path_params["thread_id"]
        stopped = await self.server.run_mutation(
            self.exposed.refs["stop"], {"thread_id": thread_id}, self.identity(request)
        )
        return JSONResponse({"stopped": stopped})

    # -- sending ---------------------------------------------------------------------------

    async def _send(self, request: Request, thread_id: str | None, text: str) -> dict[str, Any]:
        sent: dict[str, Any] = await self.server.run_mutation(
            self.exposed.refs["send"],
            {"thread_id": thread_id, "text": text},
            self.identity(request),
        )
        return sent

    async def send(self, request: Request) -> Response:
        """``POST .../threads/{id}/messages``: save the prompt, answer with the reply's events."""
        thread_id = request.path_params["thread_id"]
        protocol = request.query_params.get("protocol", "capsule")
        if protocol not in self.exposed.protocols or protocol == "openai":
            raise InvalidArgumentError(
                f'protocol "{protocol}" is not served by agent "{self.exposed.name}".'
            )
        identity = self.identity(request)
        sent = await self._send(request, thread_id, prompt_of(await read_json(request)))
        headers = {"x-capsule-thread-id": sent["thread_id"]}
        if protocol == "vercel":
            events = self.ui_reply(identity, sent["thread_id"], sent["order"], sent["reply_job"])
            return sse(events, self.server, {**UI_MESSAGE_STREAM_HEADERS, **headers})
        return sse(self.capsule_reply(identity, sent), self.server, headers)

    async def capsule_reply(self, identity: Any, sent: dict[str, Any]) -> AsyncIterator[str]:
        """Capsule events for one turn: ``start``, ``delta``/``stream`` events, ``done``."""
        yield json_frame({k: v for k, v in sent.items() if k != "reply_job"}, event="start")
        statuses: dict[str, str] = {}
        async for result in follow(
            self.server,
            self.exposed,
            identity,
            sent["thread_id"],
            order=sent["order"],
            reply_job=sent["reply_job"],
        ):
            turn = {s["stream_id"] for s in result["streams"] if s["order"] == sent["order"]}
            for event in self._capsule_events(result, statuses, turn):
                yield event
            outcome = result["outcome"]
            if outcome["done"]:
                yield json_frame(outcome, event="done")
                return

    def _capsule_events(
        self, result: dict[str, Any], statuses: dict[str, str], streams: set[str] | None
    ) -> list[str]:
        """Delta and stream-status events of one follow result (only ``streams`` if given)."""
        out: list[str] = []
        deltas = [d for d in result["deltas"] if streams is None or d["stream_id"] in streams]
        for n, delta in enumerate(deltas):
            last = n == len(deltas) - 1
            out.append(json_frame(delta, event="delta", id=result["cursor"] if last else None))
        for stream in result["streams"]:
            sid = stream["stream_id"]
            if streams is not None and sid not in streams:
                continue
            if statuses.get(sid) != stream["status"]:
                statuses[sid] = stream["status"]
                view = {k: stream.get(k) for k in ("stream_id", "order", "status", "reason")}
                out.append(json_frame(view, event="stream"))
        return out

    # -- following a thread ----------------------------------------------------------------

    async def stream(self, request: Request) -> Response:
        """``GET .../threads/{id}/stream``: follow the thread's live streams (204 if none)."""
        thread_id = request.path_params["thread_id"]
        cursor = request.headers.get("last-event-id") or request.query_params.get("cursor")
        identity = self.identity(request)
        updates = follow(self.server, self.exposed, identity, thread_id, cursor=cursor)
        try:
            first = await updates.__anext__()
        except BaseException:
            await updates.aclose()
            raise
        # Without a cursor, follow the streams that are live now and those that start later;
        # streams already over are history (GET .../messages has them).
        old = (
            set() if cursor else {s["stream_id"] for s in first["streams"] if s["status"] in ENDED}
        )
        if not cursor and (first["done"] or not first["busy_orders"]):
            await updates.aclose()
            return Response(status_code=204)
        return sse(self._thread_events(first, updates, old), self.server)

    async def _thread_events(
        self, first: dict[str, Any], updates: AsyncGenerator[dict[str, Any], None], old: set[str]
    ) -> AsyncIterator[str]:
        statuses: dict[str, str] = {}
        try:
            result: dict[str, Any] | None = first
            while result is not None:
                live = {s["stream_id"] for s in result["streams"]} - old
                for event in self._capsule_events(result, statuses, live):
                    yield event
                if result["done"] or not result["busy_orders"]:
                    yield json_frame({}, event="done")
                    return
                result = await anext(updates, None)
        finally:
            await updates.aclose()

    # -- the Vercel AI SDK (useChat) -------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        """``useChat``'s ``POST``: ``{"id": <thread id>, "messages": [...]}``."""
        body = await read_json(request)
        text = prompt_of(body)
        thread_id = body.get("id") if isinstance(body.get("id"), str) else None
        identity = self.identity(request)
        sent = await self._send(request, thread_id, text)
        events = self.ui_reply(identity, sent["thread_id"], sent["order"], sent["reply_job"])
        headers = {**UI_MESSAGE_STREAM_HEADERS, "x-capsule-thread-id": sent["thread_id"]}
        return sse(events, self.server, headers)

    async def chat_resume(self, request: Request) -> Response:
        """``useChat``'s resume: the live reply from its start, or 204 when none runs."""
        thread_id = request.path_params["thread_id"]
        identity = self.identity(request)
        current = await self.server.run_query(
            self.exposed.refs["follow"], {"thread_id": thread_id}, identity
        )
        busy = set(current["busy_orders"])
        live = [s for s in current["streams"] if s["status"] not in ENDED and s["order"] in busy]
        if not live:
            return Response(status_code=204)
        events = self.ui_reply(identity, thread_id, live[-1]["order"])
        return sse(events, self.server, dict(UI_MESSAGE_STREAM_HEADERS))

    async def ui_reply(
        self, identity: Any, thread_id: str, order: int, reply_job: str | None = None
    ) -> AsyncIterator[str]:
        """One turn as a UI message stream: ``start``, its parts, ``finish``, ``[DONE]``."""
        ui = UIMessageStream()
        yield ui.start()
        statuses: dict[str, str] = {}
        updates = follow(
            self.server, self.exposed, identity, thread_id, order=order, reply_job=reply_job
        )
        async for result in updates:
            turn = {s["stream_id"] for s in result["streams"] if s["order"] == order}
            for stream in result["streams"]:
                if stream["stream_id"] in turn:
                    statuses[stream["stream_id"]] = stream["status"]
            for delta in result["deltas"]:
                if delta["stream_id"] in turn:
                    for event in ui.parts(delta["parts"], id=result["cursor"]):
                        yield event
            outcome = result["outcome"]
            if outcome["done"]:
                aborted = any(status == "aborted" for status in statuses.values())
                error = None if aborted or outcome["status"] != "failed" else outcome["error"]
                reason = "error" if error else outcome["finish_reason"]
                for event in ui.finish(reason, error=error, aborted=aborted):
                    yield event
                return


def agent_routes(server: Any, exposed: ExposedAgent) -> list[Route]:
    """The routes ``capsule serve`` adds for one exposed agent."""
    return AgentEndpoints(server, exposed).routes()
