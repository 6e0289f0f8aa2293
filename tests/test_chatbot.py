"""The chatbot example, served for real: its HTTP API offline, and its page in a browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.server.background import free_port

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "chatbot" / "app.py"
CHROMIUM = os.environ.get("CAPSULE_CHROMIUM", "/usr/bin/chromium")
ADMIN_KEY = "dashboard-test-key"


def artifacts_dir(tmp_path: Path) -> Path:
    """Where screenshots go: ``CAPSULE_TEST_ARTIFACTS`` (CI keeps it) or the test's tmp dir."""
    folder = Path(os.environ.get("CAPSULE_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def chatbot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python examples/chatbot/app.py`` offline (no OpenAI variables) on a free port."""
    folder = tmp_path_factory.mktemp("chatbot")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CAPSULE_JWT_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        CAPSULE_DB_URL=f"sqlite:///{folder / 'chat.db'}",
        CAPSULE_ADMIN_KEY=ADMIN_KEY,  # serves /_dashboard to requests carrying the key
    )
    log = folder / "chatbot.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                str(APP),
                "--port",
                str(port),
                "--delay",
                "0.03",
                "--embedder",
                "hashing",
            ],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:  # bounded wait until it serves (ingestion loads the embedder first)
            if process.poll() is not None:
                raise AssertionError(f"the chatbot exited:\n{log.read_text()}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the chatbot did not start:\n{log.read_text()}")
            time.sleep(0.1)
        assert "Docs in" in log.read_text() and "6 added" in log.read_text()
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_offline_reply_is_retrieval_only_and_says_so(chatbot: str) -> None:
    with httpx.Client(base_url=chatbot, timeout=60) as c:
        page = c.get("/")
        assert "<title>Capsule docs chat</title>" in page.text
        thread_id = c.post("/agents/docs/threads", json={}).json()["thread_id"]
        with c.stream(
            "POST",
            f"/agents/docs/threads/{thread_id}/messages",
            json={"text": "How do I switch to PostgreSQL?"},
        ) as response:
            data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    done = json.loads(data[-1])
    assert done["status"] == "success"
    assert "without a language model" in done["text"]  # honest: no fake AI answer
    assert "CAPSULE_DB_URL=postgresql://" in done["text"]  # the relevant passage, quoted
    tools = [
        p
        for d in data[1:-1]
        for p in json.loads(d).get("parts", [])
        if p.get("type") == "tool-input-available"
    ]
    assert tools[0]["tool_name"] == "search_docs"


def _sync_api() -> Any:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    return sync_api


def test_browser_streams_resumes_after_reload_and_shares_the_thread(
    chatbot: str, tmp_path: Path
) -> None:
    sync_api = _sync_api()
    streaming = ".assistant[data-status=streaming] .text"
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        except Exception as exc:  # a browser that cannot start here: say why
            pytest.skip(f"Chromium does not start: {exc}")
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 760})
            page.goto(chatbot)
            page.wait_for_function("location.hash.length > 1")  # a thread was opened
            page.fill("#input", "How do rate limits work?")
            page.click("#send")
            page.wait_for_function(
                f"(document.querySelector('{streaming}')?.textContent.length ?? 0) > 40"
            )
            before = page.inner_text(streaming)
            assert "without a language model" in before
            page.reload()  # mid-reply
            page.wait_for_selector(streaming)
            page.wait_for_function(
                f"(document.querySelector('{streaming}')?.textContent.length ?? 0) > {len(before)}"
            )
            page.wait_for_selector(".assistant[data-status=done]", timeout=60_000)
            final = page.locator(".assistant").last.inner_text()
            assert final.startswith(before.rstrip("▍").strip()[:40])
            assert "From “" in final
            shot = artifacts_dir(tmp_path) / "chatbot.png"
            page.screenshot(path=str(shot), full_page=False)
            print(f"screenshot: {shot}")
            other = browser.new_page()
            other.goto(page.url)  # the same thread, in a second page
            other.wait_for_selector(".assistant[data-status=done]")
            assert other.locator(".assistant").last.inner_text() == final
            assert other.locator(".user").last.inner_text() == "How do rate limits work?"
        finally:
            browser.close()


def test_dashboard_follows_a_thread_live(chatbot: str, tmp_path: Path) -> None:
    sync_api = _sync_api()
    with httpx.Client(base_url=chatbot, timeout=60) as c:
        thread_id = c.post("/agents/docs/threads", json={}).json()["thread_id"]
        assert c.get("/_dashboard/agents").status_code == 401  # the admin key is required
    replies: list[str] = []

    def ask() -> None:
        with (
            httpx.Client(base_url=chatbot, timeout=60) as c,
            c.stream(
                "POST",
                f"/agents/docs/threads/{thread_id}/messages",
                json={"text": "How do rate limits work?"},
            ) as response,
        ):
            data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        replies.append(json.loads(data[-1])["text"])

    live = ".stream[data-status=streaming] .text"
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        except Exception as exc:
            pytest.skip(f"Chromium does not start: {exc}")
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 760})
            page.goto(f"{chatbot}/_dashboard/agents?key={ADMIN_KEY}")
            page.click(f"a.thread[href*='{thread_id}']")  # the thread is listed under its mount
            page.wait_for_selector("#live", state="attached")
            asker = threading.Thread(target=ask)
            asker.start()
            try:
                page.wait_for_function(
                    f"(document.querySelector('{live}')?.textContent.length ?? 0) > 20"
                )
                seen = page.inner_text(live)
                page.wait_for_function(  # it grows while the reply is written
                    f"(document.querySelector('{live}')?.textContent.length ?? 0) > {len(seen)}"
                )
                # Once every stream has ended the page shows the saved messages.
                page.wait_for_selector("tr.message.assistant[data-status=success]", timeout=60_000)
            finally:
                asker.join(timeout=60)
            final = page.locator("tr.message.assistant pre").last.inner_text()
            assert replies and final == replies[0]
            assert final.startswith(seen[:20])
            assert page.locator("tr.message.user pre").last.inner_text() == (
                "How do rate limits work?"
            )
            shot = artifacts_dir(tmp_path) / "dashboard-thread.png"
            page.screenshot(path=str(shot), full_page=False)
            print(f"screenshot: {shot}")
        finally:
            browser.close()
