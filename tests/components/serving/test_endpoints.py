"""The agent endpoints against a live server (uvicorn in a thread), on both backends."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest

from components.agent import Agent
from components.agent import component as agent_component
from core import App
from core.config import AuthSettings, ServerSettings
from core.server import BackgroundServer, create_asgi_app
from core.storage import Storage

from .chat_app import ANSWER, ChatApp, GuideModel, build
from .conftest import NodeAI
from .sse_client import Event, events

ISSUER = "https://auth.test"
SECRET = "test-secret-that-is-long-enough-for-hs256"
SETTINGS = ServerSettings(auth=AuthSettings(issuer=ISSUER, secret=SECRET), sse_ping_seconds=5)
BASE = "/agents/guide"


def token(sub: str) -> dict[str, str]:
    # Made at import and used all run long: a day, so a slow run never outlives it.
    claims = {"sub": sub, "iss": ISSUER, "exp": int(time.time()) + 86_400}
    return {"authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


ADA = token("ada")
BOB = token("bob")


@dataclass
class Live:
    url: str
    chat: ChatApp
    gate: threading.Event

    def client(self, headers: dict[str, str] | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers=ADA if headers is None else headers, timeout=30
        )

    def new_thread(self, headers: dict[str, str] | None = None) -> str:
        with self.client(headers) as c:
            found = c.post(f"{BASE}/threads", json={"title": "t"})
            assert found.status_code == 200, found.text
            thread_id: str = found.json()["thread_id"]
            return thread_id


@pytest.fixture
def live(storage: Storage) -> Iterator[Live]:
    gate = threading.Event()
    chat = build(gate, storage=storage)
    with BackgroundServer(create_asgi_app(chat.app, settings=SETTINGS)) as server:
        try:
            yield Live(server.url, chat, gate)
        finally:
            gate.set()  # never leave a reply blocked at shutdown


def text_of(deltas: list[dict[str, Any]]) -> str:
    return "".join(p["delta"] for d in deltas for p in d["parts"] if p["type"] == "text-delta")


def read_reply(stream: Iterator[Event]) -> tuple[list[dict[str, Any]], list[Event]]:
    """Read to the ``done`` event: (delta payloads, every event)."""
    seen = list(stream)
    deltas = [e.json for e in seen if e.event == "delta"]
    return deltas, seen


def test_send_streams_the_reply_with_server_side_tool_parts(live: Live) -> None:
    live.gate.set()
    thread_id = live.new_thread()
    with (
        live.client() as c,
        c.stream(
            "POST", f"{BASE}/threads/{thread_id}/messages", json={"text": "What is Capsule?"}
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-capsule-thread-id"] == thread_id
        deltas, seen = read_reply(events(response))
    assert seen[0].event == "start" and seen[0].json["thread_id"] == thread_id
    done = seen[-1]
    assert done.event == "done"
    assert done.json["status"] == "success"
    assert done.json["text"] == ANSWER.format(topic="What is Capsule?")
    assert done.json["usage"]["total_tokens"] == 30
    parts = [p["type"] for d in deltas for p in d["parts"]]
    assert "tool-input-available" in parts and "tool-output-available" in parts
    assert text_of(deltas) == done.json["text"]
    # every delta row of the turn arrived once, contiguous from 0
    ends: dict[str, int] = {}
    for d in deltas:
        assert d["start"] == ends.get(d["stream_id"], 0)
        ends[d["stream_id"]] = d["end"]
    with live.client() as c:
        history = c.get(f"{BASE}/threads/{thread_id}/messages").json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
    assert history[-1]["text"] == done.json["text"]
    # nothing is live any more: the thread stream answers 204
    with live.client() as c:
        assert c.get(f"{BASE}/threads/{thread_id}/stream").status_code == 204


def test_last_event_id_resumes_with_exactly_the_remaining_deltas(live: Live) -> None:
    thread_id = live.new_thread()
    first: list[dict[str, Any]] = []
    last_id = None
    with (
        live.client() as c,
        c.stream(
            "POST", f"{BASE}/threads/{thread_id}/messages", json={"text": "resume me"}
        ) as response,
    ):
        for event in events(response):
            if event.event == "delta":
                first.append(event.json)
                if event.id is not None and text_of(first):
                    last_id = event.id
                    break  # hang up mid-reply, right after an event with an id
    assert last_id is not None and live.chat.model.paused.wait(10)
    live.gate.set()
    with (
        live.client({**ADA, "last-event-id": last_id}) as c,
        c.stream("GET", f"{BASE}/threads/{thread_id}/stream") as response,
    ):
        assert response.status_code == 200
        rest, seen = read_reply(events(response))
    assert seen[-1].event == "done"
    assert rest, "the resumed stream brought the rest of the reply"
    ends: dict[str, int] = {}
    for d in first + rest:  # no gap, no repeat
        assert d["start"] == ends.get(d["stream_id"], 0), (d, ends)
        ends[d["stream_id"]] = d["end"]
    assert text_of(first) + text_of(rest) == ANSWER.format(topic="resume me")


def test_stop_from_a_second_client_fails_the_message_with_its_partial_text(live: Live) -> None:
    thread_id = live.new_thread()
    received: list[dict[str, Any]] = []
    with (
        live.client() as c,
        c.stream(
            "POST", f"{BASE}/threads/{thread_id}/messages", json={"text": "stop me"}
        ) as response,
    ):
        stream = events(response)
        for event in stream:
            if event.event == "delta":
                received.append(event.json)
                if text_of(received):
                    break
        assert live.chat.model.paused.wait(10)
        with live.client() as other:
            stopped = other.post(f"{BASE}/threads/{thread_id}/stop")
            assert stopped.status_code == 200, stopped.text
        live.gate.set()
        rest = list(stream)  # the first client's stream ends by itself
    assert rest[-1].event == "done"
    assert rest[-1].json["status"] == "failed"
    assert any(e.event == "stream" and e.json["status"] == "aborted" for e in rest)
    with live.client() as c:
        history = c.get(f"{BASE}/threads/{thread_id}/messages").json()["messages"]
    reply = history[-1]
    assert reply["role"] == "assistant" and reply["status"] == "failed"
    partial = reply["text"]
    assert partial and ANSWER.format(topic="stop me").startswith(partial)
    assert partial != ANSWER.format(topic="stop me")


def test_another_users_thread_is_404_and_anonymous_needs_no_token(live: Live) -> None:
    live.gate.set()
    thread_id = live.new_thread(ADA)
    with live.client(BOB) as c:
        for method, path in [
            ("GET", f"{BASE}/threads/{thread_id}"),
            ("GET", f"{BASE}/threads/{thread_id}/messages"),
            ("GET", f"{BASE}/threads/{thread_id}/stream"),
            ("POST", f"{BASE}/threads/{thread_id}/stop"),
        ]:
            found = c.request(method, path)
            assert found.status_code == 404, (method, path, found.text)
            assert found.json()["code"] == "thread_not_found"
        sent = c.post(f"{BASE}/threads/{thread_id}/messages", json={"text": "mine now"})
        assert sent.status_code == 404
        assert c.get(f"{BASE}/threads").json()["threads"] == []
    with live.client(ADA) as c:
        assert [t["thread_id"] for t in c.get(f"{BASE}/threads").json()["threads"]] == [thread_id]
    with live.client({"authorization": "Bearer not-a-jwt"}) as c:
        assert c.get(f"{BASE}/threads").status_code == 401
    with live.client({}) as c:  # anonymous: a separate owner (nobody)
        assert c.get(f"{BASE}/threads/{thread_id}").status_code == 404


def test_bad_bodies_are_400(live: Live) -> None:
    thread_id = live.new_thread()
    with live.client() as c:
        for body in ({"text": "  "}, {"nothing": 1}, [1]):
            found = c.post(f"{BASE}/threads/{thread_id}/messages", json=body)
            assert found.status_code == 400, found.text
        found = c.post(f"{BASE}/threads/{thread_id}/messages", content=b"{", headers={**ADA})
        assert found.status_code == 400
        found = c.post(f"{BASE}/threads/{thread_id}/messages?protocol=nope", json={"text": "x"})
        assert found.status_code == 400


def test_vercel_protocol_on_send_and_idle_resume(live: Live) -> None:
    live.gate.set()
    thread_id = live.new_thread()
    with (
        live.client() as c,
        c.stream(
            "POST", f"{BASE}/threads/{thread_id}/messages?protocol=vercel", json={"text": "hi"}
        ) as response,
    ):
        assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
        seen = [e.data for e in events(response)]
    assert seen[-1] == "[DONE]"
    chunks = [json.loads(d) for d in seen[:-1]]
    assert chunks[0]["type"] == "start" and chunks[-1] == {"type": "finish", "finishReason": "stop"}
    assert {
        "type": "tool-output-available",
        "toolCallId": chunks[4]["toolCallId"],
        "output": "notes on hi",
    } in chunks
    with live.client() as c:
        assert c.get(f"{BASE}/chat/{thread_id}/stream").status_code == 204


def test_use_chat_transport_reconstructs_the_reply(live: Live, node_ai: NodeAI) -> None:
    live.gate.set()
    thread_id = live.new_thread({})
    body = {
        "id": thread_id,
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hello"}]}],
        "trigger": "submit-message",
    }
    result = node_ai.run("read_ui_stream.mjs", f"{live.url}{BASE}/chat", json.dumps(body))
    assert result["errors"] == []
    message = result["message"]
    kinds = [p["type"] for p in message["parts"]]
    assert kinds == ["step-start", "tool-lookup", "step-start", "text"]
    assert message["parts"][1]["output"] == "notes on hello"
    assert message["parts"][-1]["text"] == ANSWER.format(topic="hello")


def test_openai_endpoints_in_process_with_auth(live: Live) -> None:
    openai = pytest.importorskip("openai", reason="needs the openai extra")
    live.gate.set()
    ada_key = ADA["authorization"].removeprefix("Bearer ")
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=ada_key, max_retries=0)
    assert [m.id for m in client.models.list()] == ["guide"]
    raw = client.chat.completions.with_raw_response.create(
        model="guide", messages=[{"role": "user", "content": "whole"}]
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == ANSWER.format(topic="whole")
    assert reply.usage is not None and reply.usage.total_tokens == 30
    thread_id = raw.headers["x-capsule-thread-id"]
    chunks = list(
        client.chat.completions.create(
            model="guide",
            messages=[{"role": "user", "content": "streamed"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"X-Capsule-Thread-Id": thread_id},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER.format(topic="streamed")
    assert chunks[-1].usage is not None
    # the thread is ada's: bob cannot continue it, and a bad key is refused
    bob = openai.OpenAI(
        base_url=f"{live.url}/v1", api_key=BOB["authorization"].removeprefix("Bearer ")
    )
    with pytest.raises(openai.NotFoundError):
        bob.chat.completions.create(
            model="guide",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"X-Capsule-Thread-Id": thread_id},
        )
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{live.url}/v1", api_key="not-a-jwt").models.list()
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="guide", messages=[])


def test_a_second_server_process_resumes_from_the_persisted_cursor(tmp_path: Any) -> None:
    """Two servers (two apps, one SQLite file): send on one, resume on the other."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    open_gate = threading.Event()
    open_gate.set()
    first_app, second_app = build(open_gate, storage=url), build(open_gate, storage=url)
    with (
        BackgroundServer(create_asgi_app(first_app.app, settings=SETTINGS)) as one,
        BackgroundServer(create_asgi_app(second_app.app, settings=SETTINGS)) as two,
    ):
        a = Live(one.url, first_app, open_gate)
        b = Live(two.url, second_app, open_gate)
        thread_id = a.new_thread()
        first: list[dict[str, Any]] = []
        last_id = None
        with (
            a.client() as c,
            c.stream(
                "POST", f"{BASE}/threads/{thread_id}/messages", json={"text": "two servers"}
            ) as response,
        ):
            for event in events(response):
                if event.event == "delta":
                    first.append(event.json)
                    if event.id is not None and text_of(first):
                        last_id = event.id
                        break
        assert last_id is not None
        with (
            b.client({**ADA, "last-event-id": last_id}) as c,
            c.stream("GET", f"{BASE}/threads/{thread_id}/stream") as response,
        ):
            assert response.status_code == 200
            rest, seen = read_reply(events(response))
        assert seen[-1].event == "done"
        ends: dict[str, int] = {}
        for d in first + rest:
            assert d["start"] == ends.get(d["stream_id"], 0), (d, ends)
            ends[d["stream_id"]] = d["end"]
        assert text_of(first) + text_of(rest) == ANSWER.format(topic="two servers")


class UnstartableAgent(Agent):
    """An agent whose replies fail before they save anything (no placeholder, no stream)."""

    def stream_text(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("this agent cannot start a reply")


@pytest.mark.timeout(60)  # without the job check the reply is awaited for good (pings flow)
def test_a_reply_that_dies_before_its_placeholder_ends_the_wait(storage: Storage) -> None:
    app = App(storage=storage)
    agent = UnstartableAgent(
        app.use(agent_component, name="agent"), name="guide", model=GuideModel()
    )
    agent.expose()
    with BackgroundServer(create_asgi_app(app, settings=SETTINGS)) as server:
        with httpx.Client(base_url=server.url, headers=ADA, timeout=30) as c:
            thread_id = c.post(f"{BASE}/threads", json={}).json()["thread_id"]
            with c.stream(
                "POST", f"{BASE}/threads/{thread_id}/messages", json={"text": "hello"}
            ) as response:
                seen = list(events(response))
            with c.stream(
                "POST", f"{BASE}/threads/{thread_id}/messages?protocol=vercel", json={"text": "hi"}
            ) as response:
                chunks = [e.data for e in events(response)]
    assert seen[0].event == "start" and set(seen[0].json) == {"thread_id", "message_id", "order"}
    assert seen[-1].event == "done"
    assert seen[-1].json["status"] == "failed"
    assert "could not start" in seen[-1].json["error"]
    assert chunks[-1] == "[DONE]"
    assert {"type": "error", "errorText": seen[-1].json["error"]} in [
        json.loads(d) for d in chunks[:-1]
    ]
