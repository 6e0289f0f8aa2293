"""``capsule logs``: call logs written by one process, read by another."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from core import App, AppError, MutationCtx, QueryCtx, Schema, Table
from core.cli import main
from core.logs import call_log_of
from core.server.background import free_port

ROOT = Path(__file__).resolve().parents[3]

APP_SOURCE = textwrap.dedent(
    """
    import logging

    from core import App, AppError, MutationCtx, QueryCtx, Schema, Table

    app = App(Schema(notes=Table({"text": str})))
    log = logging.getLogger("notes_app")

    @app.mutation
    def note(ctx: MutationCtx, text: str) -> str:
        print(f"noting {text}")
        log.info("stored %s", text)
        return ctx.db.insert("notes", {"text": text})

    @app.query
    def closed(ctx: QueryCtx) -> None:
        raise AppError({"why": "closed"}, "The shop is closed.")
    """
)


def command(project: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    env.pop("CAPSULE_DB_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "core.cli", *args, "--db", f"sqlite:///{project / 'logs.db'}"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def call(url: str, kind: str, path: str, args: dict[str, Any]) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.post(f"{url}/api/{kind}", json={"path": path, "args": args}, timeout=5)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_follow_shows_a_server_processes_calls_with_their_output(tmp_path: Path) -> None:
    (tmp_path / "notes_app.py").write_text(APP_SOURCE)
    port = free_port()
    server = command(tmp_path, "serve", "notes_app:app", "--port", str(port))
    follower = None
    try:
        url = f"http://127.0.0.1:{port}"
        assert call(url, "mutation", "notes_app:note", {"text": "a"}).status_code == 200
        follower = command(tmp_path, "logs", "--follow")
        assert call(url, "query", "notes_app:closed", {}).status_code == 422
        assert follower.stdout is not None
        lines = [follower.stdout.readline() for _ in range(4)]
    finally:
        if follower is not None:
            stop(follower)
        served = stop(server)
    assert lines[0].split(" ", 1)[1].startswith("mutation notes_app:note ")
    assert lines[0].rstrip().endswith(" ms ok")
    assert lines[1:3] == ["    | noting a\n", "    | INFO notes_app: stored a\n"]
    assert lines[3].split(" ", 1)[1].startswith("query notes_app:closed ")
    assert lines[3].rstrip().endswith(" ms app_error: AppError: The shop is closed.")
    # An AppError is the call's outcome, not a warning of the server.
    assert "WARNING" not in served and "noting a" in served


app = App(Schema(items=Table({"n": int})))


@app.mutation
def add(ctx: MutationCtx, n: int) -> None:
    print(f"adding {n}")
    ctx.db.insert("items", {"n": n})


@app.query
def refuse(ctx: QueryCtx) -> None:
    raise AppError("no")


def test_filters_and_an_in_process_client(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    monkeypatch.setenv("CAPSULE_DB_URL", url)
    with caplog.at_level(logging.INFO), app.sync_client() as client:
        log = call_log_of(client.runtime)
        deadline = time.monotonic() + 10
        while not log.capturing:  # the services start in the background
            assert time.monotonic() < deadline
            time.sleep(0.005)
        client.mutation(add, {"n": 1})
        with pytest.raises(AppError):
            client.query(refuse)
    capsys.readouterr()
    assert main(["logs", "--db", url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" ")[1:3] for line in out if not line.startswith(" ")] == [
        ["mutation", add.path],
        ["query", refuse.path],
    ]
    assert "    | adding 1" in out
    assert main(["logs", "--errors", "--db", url]) == 0
    assert capsys.readouterr().out.count("\n") == 1
    assert main(["logs", "--path", add.path, "--db", url]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "    | adding 1"
    assert main(["logs", "--path", f"{__name__}:", "--component", "x", "--db", url]) == 0
    assert capsys.readouterr().out == ""
