"""kill -9 in the middle of scheduled work, then restart: actions at most once, mutations once.

Each scenario runs a child process (the app below, written to a file so every process gives
its functions the same paths), kills it with SIGKILL while its runner executes a job, then
restarts the app in fresh processes that run whatever is due and report the state.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from core.storage.base import Storage

CHILD = """
import json, os, sys, time

import anyio

from core import ActionCtx, App, MutationCtx, Schema, Table
from core.storage import open_storage
from core.testing import TestApp

PHASE, URL, KIND = sys.argv[1:4]
app = App(Schema(marks=Table({"what": str})), storage=URL)
BLOCK = PHASE == "crash"


@app.internal_mutation
def mark(ctx: MutationCtx, what: str) -> None:
    ctx.db.insert("marks", {"what": what})


@app.internal_action
async def slow_action(ctx: ActionCtx) -> None:
    await ctx.run_mutation(mark, {"what": "action started"})
    print("STARTED", flush=True)
    if BLOCK:
        await anyio.sleep(3600)


@app.internal_mutation
def slow_mutation(ctx: MutationCtx) -> None:
    ctx.db.insert("marks", {"what": "mutation ran"})
    if BLOCK:
        print("STARTED", flush=True)
        time.sleep(3600)


@app.mutation
def start(ctx: MutationCtx, kind: str) -> str:
    return ctx.scheduler.run_after(0, slow_action if kind == "action" else slow_mutation, {})


if PHASE == "crash":
    with app.sync_client() as client:  # its runner picks the job up at once
        client.mutation(start, {"kind": KIND})
        time.sleep(3600)
else:
    with TestApp(app, storage=open_storage(URL)) as t:
        t.finish_scheduled()
        t.finish_scheduled()
        jobs = t.run(lambda ctx: ctx.db.system.query("_scheduled_functions").collect())
        marks = t.run(lambda ctx: [d["what"] for d in ctx.db.query("marks").collect()])
    print(json.dumps({
        "jobs": [{"state": j["state"], "error": j["error"]} for j in jobs],
        "marks": marks,
    }))
"""


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The child's next stdout line, or a failure after ``timeout`` seconds."""
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()))
    reader.start()
    reader.join(timeout)
    if not line:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the child did not start its job in {timeout} s: {err}")
    return line[0].strip()


def _run(script: Path, phase: str, url: str, kind: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script), phase, url, kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )


def _crash_then_recover(tmp_path: Path, storage: Storage, kind: str) -> list[dict[str, Any]]:
    script = tmp_path / "crashapp.py"
    script.write_text(CHILD)
    url = storage.url
    child = _run(script, "crash", url, kind)
    assert _read_line(child, 60) == "STARTED"
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)  # reaps it and closes its pipes
    reports = []
    for _ in range(2):  # restart twice: the second restart must change nothing
        out, err = _run(script, "recover", url, kind).communicate(timeout=120)
        assert out.strip(), err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def test_an_action_killed_mid_run_is_marked_failed_and_not_rerun(
    tmp_path: Path, storage: Storage
) -> None:
    first, second = _crash_then_recover(tmp_path, storage, "action")
    assert first["marks"] == ["action started"]
    assert [j["state"] for j in first["jobs"]] == ["failed"]
    assert "not re-run" in first["jobs"][0]["error"]
    assert second == first


def test_a_mutation_pending_at_kill_runs_exactly_once_after_restart(
    tmp_path: Path, storage: Storage
) -> None:
    first, second = _crash_then_recover(tmp_path, storage, "mutation")
    # The killed attempt never committed; the restart ran it once, the second restart not at all.
    assert first["marks"] == ["mutation ran"]
    assert [j["state"] for j in first["jobs"]] == ["success"]
    assert second == first
