from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import anyio
import httpx
import jwt
import pytest

from core import (
    App,
    AppError,
    FunctionNotFoundError,
    HttpClient,
    InvalidArgumentError,
    MutationCtx,
    QueryCtx,
    Schema,
    Table,
    UnauthenticatedError,
)
from core.config import AuthSettings, ServerSettings
from core.subscriptions import subscription_hub

ISSUER = "https://auth.test"
SECRET = "sse-secret-sse-secret-sse-secret-sse"

app = App(Schema(messages=Table({"text": str, "room": str}).index("by_room", ["room"])))


@app.mutation
def send(ctx: MutationCtx, room: str, text: str) -> str:
    return ctx.db.insert("messages", {"room": room, "text": text})


@app.query
def room(ctx: QueryCtx, room: str) -> list[str]:
    docs = ctx.db.query("messages").with_index("by_room", lambda q: q.eq("room", room))
    texts = [d["text"] for d in docs.collect()]
    if "boom" in texts:
        raise AppError({"room": room, "why": "boom"})
    return texts


@app.query
def me(ctx: QueryCtx) -> str | None:
    ident = ctx.auth.get_user_identity()
    return None if ident is None else ident.subject


@app.internal_query
def hidden(ctx: QueryCtx) -> int:
    return 1


Live = Any  # tests/core/server/conftest.py's LiveServer


@pytest.fixture(scope="module")
def live(serve_app: Any) -> Live:
    settings = ServerSettings(auth=AuthSettings(issuer=ISSUER, secret=SECRET), sse_ping_seconds=0.2)
    return serve_app(app, settings)


async def test_new_result_after_a_mutation_and_cleanup_on_disconnect(
    live: Live, wait_for: Any
) -> None:
    hub = subscription_hub(live.t.runtime)
    async with HttpClient(live.url) as client:
        async with contextlib.aclosing(client.subscribe(room, {"room": "a"})) as updates:
            assert await updates.__anext__() == []
            assert live.server.active_streams == 1 and hub.live == 1
            await client.mutation(send, {"room": "b", "text": "elsewhere"})
            await client.mutation(send, {"room": "a", "text": "hi"})
            with anyio.fail_after(10):
                assert await updates.__anext__() == ["hi"]
            await client.mutation(send, {"room": "a", "text": "there"})
            with anyio.fail_after(10):
                assert await updates.__anext__() == ["hi", "there"]
    # The client went away: the server stops the stream and unregisters the subscription.
    await anyio.to_thread.run_sync(wait_for, lambda: live.server.active_streams == 0)
    await anyio.to_thread.run_sync(wait_for, lambda: hub.live == 0)


def test_event_framing_ids_and_pings(live: Live) -> None:
    live.t.mutation(send, {"room": "framed", "text": "one"})
    lines: list[str] = []
    params = {"path": room.path, "args": json.dumps({"room": "framed"})}
    with httpx.stream("GET", f"{live.url}/api/subscribe", params=params, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            lines.append(line)
            if line.startswith("data:") and "two" not in line:
                live.t.mutation(send, {"room": "framed", "text": "two"})
            if any("two" in x for x in lines) and any(x.startswith(":") for x in lines):
                break
    events = [x for x in lines if x.startswith(("id:", "event:", "data:"))]
    assert events[:3] == ["id: 1", "event: result", 'data: {"value":["one"]}']
    assert "id: 2" in events and 'data: {"value":["one","two"]}' in events
    assert any(x.startswith(": ping") for x in lines)  # keep-alive comment


async def test_reconnect_gets_the_current_result_at_once(live: Live) -> None:
    async with HttpClient(live.url) as client:
        await client.mutation(send, {"room": "re", "text": "first"})
        for _ in range(2):
            async with contextlib.aclosing(client.subscribe(room, {"room": "re"})) as updates:
                with anyio.fail_after(10):
                    assert await updates.__anext__() == ["first"]


async def test_errors_before_the_stream(live: Live) -> None:
    async with HttpClient(live.url) as client:
        with pytest.raises(FunctionNotFoundError):
            await client.subscribe("nope:nothing").__anext__()
        with pytest.raises(FunctionNotFoundError):
            await client.subscribe(hidden).__anext__()
        with pytest.raises(InvalidArgumentError):
            await client.subscribe(room, {"room": 5}).__anext__()
    async with httpx.AsyncClient(base_url=live.url) as http:
        r = await http.get("/api/subscribe", params={"path": room.path, "args": "{oops"})
        assert (r.status_code, r.json()["code"]) == (400, "invalid_argument")
        r = await http.get("/api/subscribe")
        assert r.status_code == 400
    async with HttpClient(live.url, token="bad") as client:
        with pytest.raises(UnauthenticatedError):
            await client.subscribe(me).__anext__()


async def test_auth_by_header_or_query_token(live: Live) -> None:
    good = jwt.encode(
        {"sub": "sse-user", "iss": ISSUER, "exp": int(time.time()) + 60}, SECRET, algorithm="HS256"
    )
    async with HttpClient(live.url, token=good) as client:
        assert await client.subscribe(me).__anext__() == "sse-user"
    params = {"path": me.path, "token": good}
    with httpx.stream("GET", f"{live.url}/api/subscribe", params=params, timeout=10) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                assert line == 'data: {"value":"sse-user"}'
                break


async def test_query_error_mid_stream_ends_it_with_the_error(live: Live) -> None:
    async with HttpClient(live.url) as client:
        updates = client.subscribe(room, {"room": "err"})
        assert await updates.__anext__() == []
        await client.mutation(send, {"room": "err", "text": "boom"})
        with anyio.fail_after(10), pytest.raises(AppError) as info:
            await updates.__anext__()
        assert info.value.data == {"room": "err", "why": "boom"}
