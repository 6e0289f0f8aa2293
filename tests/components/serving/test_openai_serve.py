"""The real ``openai`` client against a running ``capsule serve`` (a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.server.background import free_port

from .chat_app import ANSWER

openai = pytest.importorskip("openai", reason="needs the openai extra")

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``capsule serve tests.components.serving.chat_app:app`` on a free port."""
    folder = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CAPSULE_DB_URL": f"sqlite:///{folder / 'chat.db'}",
    }
    for name in list(env):  # an anonymous server: no token checks
        if name.startswith("CAPSULE_JWT_"):
            del env[name]
    command = [
        sys.executable,
        "-m",
        "core.cli",
        "serve",
        "tests.components.serving.chat_app:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    log = folder / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # wait until it answers (bounded)
            if process.poll() is not None:
                raise AssertionError(f"capsule serve exited: {log.read_text()}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("capsule serve did not answer within 60 s")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def client(url: str) -> Any:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="any-key-when-tokens-are-off", max_retries=0)


def test_models_lists_the_exposed_agent(served: str) -> None:
    assert [m.id for m in client(served).models.list()] == ["guide"]


def test_a_whole_reply_without_client_visible_tool_calls(served: str) -> None:
    reply = client(served).chat.completions.create(
        model="guide", messages=[{"role": "user", "content": "What is Capsule?"}]
    )
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == ANSWER.format(topic="What is Capsule?")
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert reply.usage is not None and reply.usage.total_tokens == 30
    assert reply.model == "guide"


def test_a_streamed_reply_with_usage(served: str) -> None:
    chunks = list(
        client(served).chat.completions.create(
            model="guide",
            messages=[{"role": "user", "content": "Stream it"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER.format(topic="Stream it")
    assert all(c.choices[0].delta.tool_calls is None for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 30
    assert len(chunks) > 5  # it really streamed, piece by piece


def test_the_thread_header_continues_a_conversation(served: str) -> None:
    c = client(served)
    raw = c.chat.completions.with_raw_response.create(
        model="guide",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "First question"},
        ],
    )
    thread_id = raw.headers["x-capsule-thread-id"]
    assert raw.parse().choices[0].message.content == ANSWER.format(topic="First question")
    again = c.chat.completions.create(
        model="guide",
        messages=[{"role": "user", "content": "Second question"}],
        extra_headers={"X-Capsule-Thread-Id": thread_id},
    )
    assert again.choices[0].message.content == ANSWER.format(topic="Second question")
    history = httpx.get(f"{served}/agents/guide/threads/{thread_id}/messages").json()["messages"]
    users = [m["text"] for m in history if m["role"] == "user"]
    assert users == ["First question", "Second question"]
    assert history[0]["role"] == "system"


def test_errors_come_back_in_openai_shape(served: str) -> None:
    c = client(served)
    with pytest.raises(openai.NotFoundError) as caught:
        c.chat.completions.create(model="nobody", messages=[{"role": "user", "content": "x"}])
    assert "guide" in str(caught.value)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="guide", messages=[{"role": "assistant", "content": "x"}])
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(
            model="guide",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"X-Capsule-Thread-Id": "no-such-thread"},
        )
