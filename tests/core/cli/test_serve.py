"""``capsule serve`` / ``dev`` / ``worker`` as real subprocesses."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from core import HttpClient
from core.cli import main
from core.cli.stored import StoredDatabase
from core.server.background import free_port

ROOT = Path(__file__).resolve().parents[3]

APP_SOURCE = textwrap.dedent(
    """
    from core import App, MutationCtx, QueryCtx, Schema, Table

    app = App(Schema(hits=Table({"source": str})))

    @app.mutation
    def hit(ctx: MutationCtx, source: str) -> str:
        return ctx.db.insert("hits", {"source": source})

    @app.mutation
    def hit_later(ctx: MutationCtx, source: str) -> str:
        return ctx.scheduler.run_after(0, hit, {"source": source})

    @app.query
    def count(ctx: QueryCtx) -> int:
        return len(ctx.db.query("hits").collect())
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "hits_app.py").write_text(APP_SOURCE)
    return tmp_path


def start(project: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CAPSULE_DB_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "core.cli", *args, "--db", f"sqlite:///{project / 'served.db'}"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(predicate: Any, proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the process exited: {proc.stdout and proc.stdout.read()}")
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def answers(url: str) -> bool:
    try:
        httpx.post(f"{url}/api/query", json={"path": "hits_app:count"}, timeout=1)
        return True
    except httpx.TransportError:
        return False


def stop(proc: subprocess.Popen[str]) -> bool:
    """SIGTERM; whether the process then exited cleanly (uvicorn re-raises the signal)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(20) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("command", ["serve", "dev"])
async def test_serve_and_dev(project: Path, command: str) -> None:
    port = free_port()
    proc = start(project, command, "hits_app:app", "--port", str(port), "--log-level", "warning")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(url), proc)
        async with HttpClient(url) as client:
            await client.mutation("hits_app:hit", {"source": command})
            assert await client.query("hits_app:count") == 1
    finally:
        assert stop(proc)


def hits(project: Path) -> int:
    with StoredDatabase(f"sqlite:///{project / 'served.db'}") as db:
        return db.count(db.table("hits"))


def test_worker_runs_scheduled_jobs(project: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "core.cli",
            "run",
            "hits_app:hit_later",
            '{"source": "job"}',
            "--db",
            f"sqlite:///{project / 'served.db'}",
        ],
        cwd=project,
        env=env,
        check=True,
        capture_output=True,
    )
    proc = start(project, "worker", "hits_app:app")
    try:
        wait_for(lambda: hits(project) == 1, proc)
    finally:
        assert stop(proc)


def test_worker_prints_one_line_per_job(project: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for source in ("a", "b"):
        subprocess.run(
            [sys.executable, "-m", "core.cli", "run", "hits_app:hit_later"]
            + [json.dumps({"source": source}), "--db", f"sqlite:///{project / 'served.db'}"],
            cwd=project,
            env=env,
            check=True,
            capture_output=True,
        )
    proc = start(project, "worker", "hits_app:app")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("capsule worker: running hits_app:app")
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        for line in lines:
            assert re.fullmatch(
                r"\d\d:\d\d:\d\d mutation hits_app:hit ok in [\d.]+ ms \(retries: 0\)\n", line
            ), line
    finally:
        assert stop(proc)


def test_serve_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 127.0.0.1)", "(default: 8000)", "(default: info)"):
        assert default in out
    assert "GET /openapi.json" in out and "CAPSULE_DB_URL" in out
