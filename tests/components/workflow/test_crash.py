"""kill -9 in the middle of workflows, then restart: they finish, mutation steps ran once.

Each scenario runs ``crash_app.py`` in a child process on a live runtime, reads the progress
it prints (a subscription on the workflows' status), kills it with SIGKILL at a chosen point,
and finally restarts the app in a process that runs whatever is due and reports.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.storage.base import Storage

APP = Path(__file__).with_name("crash_app.py")


Start = Callable[..., Any]  # the ``child_process`` fixture (tests/components/conftest.py)


def _finish(child_process: Start, url: str, scenario: str) -> dict[str, Any]:
    child = child_process(APP, "finish", url, scenario)
    try:
        return child.wait_for(lambda v: True, timeout=120)
    finally:
        child.stop()


def _done(report: dict[str, Any]) -> int:
    return sum(w is not None and w["state"] == "success" for w in report["workflows"].values())


def test_five_steps_survive_kill_after_step_three(child_process: Start, storage: Storage) -> None:
    child = child_process(APP, "live", storage.url, "five")
    seen = child.wait_for(lambda v: v["workflows"]["five"]["steps"].count("success") >= 3)
    child.kill()
    # Killed while sleeping after step 3: steps 1-3 ran once each, 4 and 5 not at all.
    assert seen["workflows"]["five"]["steps"] == ["success"] * 3 + ["running"]
    assert seen["counters"] == {"s0": 1, "s1": 1, "s2": 1, "s3": 0, "s4": 0}
    report = _finish(child_process, storage.url, "five")
    assert report["workflows"]["five"]["state"] == "success"
    assert report["counters"] == {f"s{i}": 1 for i in range(5)}


def test_hundred_workflows_with_random_kills(child_process: Start, storage: Storage) -> None:
    rng = random.Random(7)
    done = 0
    for _ in range(3):  # kill each run part-way, at a random count of finished workflows
        child = child_process(APP, "live", storage.url, "many")
        target = min(done + rng.randint(5, 30), 99)
        report = child.wait_for(lambda v, n=target: _done(v) >= n)
        child.kill()
        done = _done(report)
        # One snapshot: a finished workflow's increment is there, an unfinished one's is not.
        assert report["counters"]["total"] == done
    report = _finish(child_process, storage.url, "many")
    assert _done(report) == 100
    assert report["counters"]["total"] == 100


def test_action_step_whose_runner_died(child_process: Start, storage: Storage) -> None:
    child = child_process(APP, "live", storage.url, "action")
    hanging: set[str] = set()

    def both_hang(value: Any) -> bool:
        if "hanging" in value:
            hanging.add(value["hanging"])
        return hanging == {"retried", "once"}

    child.wait_for(both_hang)
    child.kill()
    report = _finish(child_process, storage.url, "action")
    retried, once = report["workflows"]["retried"], report["workflows"]["once"]
    # With retries the step is at least once: the lost attempt counts, the second succeeds.
    assert retried["state"] == "success" and retried["result"] == 2
    # Without, it is at most once: the attempt that died is not re-run; the step fails.
    assert once["state"] == "failed" and "runner stopped" in once["error"]
    assert report["counters"] == {"retried": 2, "once": 1}
