"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core import App, MutationCtx, QueryCtx, Schema, Table
from core.cli import main
from core.config import ServerSettings
from core.logs import call_log_of
from core.server import BackgroundServer, create_asgi_app
from core.server.dashboard import dashboard_routes
from core.testing import TestApp

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")

app = App(Schema(items=Table({"name": str, "n": int})))


@app.mutation
def shout(ctx: MutationCtx, text: str) -> str:
    print(f"shouting {text}")
    return text.upper()


@app.internal_query
def total(ctx: QueryCtx) -> int:
    return sum(d["n"] for d in ctx.db.query("items").collect())


@pytest.fixture
def served() -> Iterator[str]:
    with TestApp(app) as t:
        t.run(
            lambda ctx: [ctx.db.insert("items", {"name": f"item {i}", "n": i}) for i in range(30)]
        )
        asgi = create_asgi_app(app, settings=ServerSettings(), runtime=t.runtime)
        asgi.router.routes[0:0] = dashboard_routes(asgi.state.capsule, local=True)
        t.runtime.start_services()  # call logs are kept while the services run
        log = call_log_of(t.runtime)
        deadline = time.monotonic() + 10
        while not log.capturing:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        try:
            with BackgroundServer(asgi) as server:
                yield server.url
        finally:
            t.runtime.stop_services()


def test_browse_page_edit_run_and_watch_logs(served: str, tmp_path: Path) -> None:
    shots = Path(os.environ.get("CAPSULE_TEST_ARTIFACTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        try:
            page.goto(f"{served}/_dashboard")
            page.click("text=items")
            rows = page.locator("#documents tr")
            assert rows.count() == 21  # header + one page of 20
            first_page = rows.nth(1).inner_text()
            page.click("#next")
            assert rows.count() == 11  # the other 10
            assert rows.nth(1).inner_text() != first_page
            page.locator("#documents a").first.click()
            before = json.loads(page.input_value("#document"))["n"]

            page.fill("#document", '{"name": "renamed", "n": "not a number"}')
            page.click("#save")
            message = page.locator("#message")
            assert "error" in (message.get_attribute("class") or "")
            assert 'field "n"' in message.inner_text() or '"n"' in message.inner_text()
            page.fill("#document", '{"name": "renamed", "n": 1000}')
            page.click("#save")
            assert page.locator("#message").inner_text() == "Saved."

            live = browser.new_page()  # opened before the run: the line must arrive live
            live.goto(f"{served}/_dashboard/logs")
            page.goto(f"{served}/_dashboard/functions")
            page.select_option("#path", shout.path)
            page.fill("#args", '{"text": "hi"}')
            page.click("#run")
            page.wait_for_function("document.getElementById('result').textContent.length > 0")
            assert page.locator("#result").inner_text() == '"HI"'
            page.select_option("#path", total.path)  # an internal function: admins may run it
            page.fill("#args", "{}")
            page.click("#run")
            page.wait_for_function("document.getElementById('result').textContent !== '\"HI\"'")
            assert page.locator("#result").inner_text() == str(sum(range(30)) - before + 1000)

            line = live.locator("#logs li", has_text=shout.path)
            line.wait_for(timeout=15_000)
            assert "| shouting hi" in line.inner_text()
            live.screenshot(path=str(shots / "dashboard-logs.png"), full_page=True)
            page.screenshot(path=str(shots / "dashboard-functions.png"), full_page=True)
        finally:
            browser.close()


def test_the_server_dashboard_needs_the_admin_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with TestApp(app) as t:
        t.run(lambda ctx: ctx.db.insert("items", {"name": "a", "n": 7}))
        monkeypatch.setenv("CAPSULE_ADMIN_KEY", "sesame")
        asgi = create_asgi_app(app, settings=ServerSettings(), runtime=t.runtime)
        with BackgroundServer(asgi) as server:
            assert httpx.get(f"{server.url}/_dashboard").status_code == 401
            r = httpx.get(f"{server.url}/_dashboard?key=sesame")
            assert r.status_code == 200 and "items" in r.text
            again = httpx.get(f"{server.url}/_dashboard/jobs", cookies=r.cookies)
            assert again.status_code == 200
            # capsule run --url: an internal function, on the server, with the admin key.
            assert main(["run", total.path, "--url", server.url]) == 0
            assert capsys.readouterr().out == "7\n"
            assert main(["run", total.path, "--url", server.url, "--admin-key", "nope"]) == 1
            assert capsys.readouterr().err == (
                f"error: The server at {server.url} refused the admin key (or has no "
                "CAPSULE_ADMIN_KEY set).\n"
            )
        monkeypatch.delenv("CAPSULE_ADMIN_KEY")
        plain = create_asgi_app(app, settings=ServerSettings(), runtime=t.runtime)
        with BackgroundServer(plain) as server:
            assert httpx.get(f"{server.url}/_dashboard").status_code == 404
