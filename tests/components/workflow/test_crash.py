from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from core.testing import TestApp

pytest.importorskip("core.scheduler")
if not hasattr(TestApp, "finish_scheduled"):  # the scheduler is not wired into runtimes yet
    pytest.skip("core.scheduler is not wired in yet", allow_module_level=True)

APP = Path(__file__).with_name("crash_app.py")
ROOT = Path(__file__).parents[3]


def _spawn(db: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(APP), str(db), mode],
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def _query(db: Path, code: str) -> Any:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; sys.argv=['x', {str(db)!r}, 'q']\n"
            "sys.path.insert(0, 'tests/components/workflow')\nimport crash_app as m\n"
            "with m.app.sync_client(runtime=False) as c:\n"
            f"    print(repr({code}))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return eval(out.stdout.strip().splitlines()[-1])


def _wait(proc: subprocess.Popen[str], pred: Any, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    for line in proc.stdout:
        if pred(line):
            return line
        if time.monotonic() > deadline:
            break
    raise AssertionError("the subprocess never reached the expected state")


def test_five_steps_survive_kill_after_step_three(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    proc = _spawn(db, "five")
    _wait(proc, lambda line: line.startswith("['running', 3]"))
    proc.kill()
    proc.wait()
    proc = _spawn(db, "resume")
    try:
        deadline = time.monotonic() + 30
        while _query(db, "c.query(m.progress, {'key': 'five'})")[0] != "success":
            assert time.monotonic() < deadline
    finally:
        proc.kill()
        proc.wait()
    counts = [_query(db, f"c.query(m.counter, {{'name': 's{i}'}})") for i in range(5)]
    assert counts == [1, 1, 1, 1, 1]


def test_hundred_workflows_with_random_kills(tmp_path: Path) -> None:
    db = tmp_path / "many.db"
    rng = random.Random(7)
    for _ in range(3):
        proc = _spawn(db, "many")
        _wait(proc, lambda line: line.startswith("started"))
        time.sleep(rng.uniform(0.05, 0.3))
        proc.kill()
        proc.wait()
    proc = _spawn(db, "many")
    try:
        deadline = time.monotonic() + 60
        while _query(db, "c.query(m.done, {})") < 100:
            assert time.monotonic() < deadline
    finally:
        proc.kill()
        proc.wait()
    total = _query(db, "c.query(m.counter, {'name': 'total'})")
    assert total == 100
