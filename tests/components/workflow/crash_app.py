"""A workflow app run in subprocesses by test_crash.py (killed with SIGKILL mid-run).

``python crash_app.py PHASE URL SCENARIO`` with a scenario ``five``, ``many`` or ``action``:

* ``live``: start the scenario's workflows (idempotent ids, so a restart starts
  nothing twice) on a live runtime (its scheduler runs the steps), then print each change of
  their progress, one JSON line each, as a subscription reports it, until killed.
* ``finish``: reopen the database with a manual clock two hours ahead, run everything due
  (recovery cron included) until every workflow has finished, and print a JSON report.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import anyio

from components.workflow import RetryPolicy, WorkflowManager, component
from components.workflow.pool import RECOVERY_INTERVAL
from core import ActionCtx, App, MutationCtx, QueryCtx, Schema, Table
from core.storage import open_storage
from core.testing import ManualClock, TestApp

PHASE, URL = sys.argv[1], sys.argv[2]
app = App(Schema(counters=Table({"name": str, "n": int}).index("by_name", ["name"])), storage=URL)
manager = WorkflowManager(app.use(component, name="workflow"), max_parallelism=20)
N_MANY = 100
_out = threading.Lock()


def emit(value: Any) -> None:
    """Print one JSON line (the action and the subscription print from different threads)."""
    with _out:
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()


def _count(ctx: QueryCtx, name: str) -> int:
    doc = ctx.db.query("counters").with_index("by_name", lambda q: q.eq("name", name)).first()
    return 0 if doc is None else int(doc["n"])


@app.mutation
def incr(ctx: MutationCtx, name: str) -> int:
    doc = ctx.db.query("counters").with_index("by_name", lambda q: q.eq("name", name)).first()
    if doc is None:
        ctx.db.insert("counters", {"name": name, "n": 1})
        return 1
    ctx.db.patch(doc["_id"], {"n": doc["n"] + 1})
    return int(doc["n"]) + 1


@app.action
async def once_hangs(ctx: ActionCtx, name: str) -> int:
    """Counts its attempts; the first one hangs (until the process is killed)."""
    attempt: int = await ctx.run_mutation(incr, {"name": name})
    if attempt == 1:
        emit({"hanging": name})
        await anyio.sleep(3600)
    return attempt


@manager.define(name="five")
async def five(step: Any) -> str:
    for i in range(3):
        await step.run_mutation(incr, {"name": f"s{i}"})
    await step.sleep(3600)  # the parent kills the process while the workflow sleeps here
    for i in range(3, 5):
        await step.run_mutation(incr, {"name": f"s{i}"})
    return "done"


@manager.define(name="one")
async def one(step: Any) -> str:
    await step.run_mutation(incr, {"name": "total"})
    return "done"


@manager.define(name="act")
async def act(step: Any, retry: bool) -> int:
    name = "retried" if retry else "once"
    policy = RetryPolicy(max_attempts=3, initial_backoff=1.0) if retry else False
    return int(await step.run_action(once_hangs, {"name": name}, retry=policy))


WORKFLOWS: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "five": [("five", "five", {})],
    "many": [("one", f"w{i}", {}) for i in range(N_MANY)],
    "action": [("act", "retried", {"retry": True}), ("act", "once", {"retry": False})],
}
KEYS = {phase: [key for _, key, _ in wfs] for phase, wfs in WORKFLOWS.items()}


@app.mutation
def start(ctx: MutationCtx, wf: str, key: str, args: dict[str, Any]) -> str:
    return str(manager.start(ctx, wf, args, id=key))


@app.query
def report(ctx: QueryCtx, keys: list[str], counters: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"workflows": {}, "counters": {n: _count(ctx, n) for n in counters}}
    for key in keys:
        s = manager.status(ctx, key)
        out["workflows"][key] = (
            None
            if s is None
            else {
                "state": s.state,
                "result": s.result,
                "error": s.error,
                "steps": [st.state for st in s.steps],
            }
        )
    return out


def _counters(phase: str) -> list[str]:
    return {
        "five": [f"s{i}" for i in range(5)],
        "many": ["total"],
        "action": ["retried", "once"],
    }[phase]


def run_live(phase: str) -> None:
    with app.sync_client() as client:
        starters = [
            threading.Thread(
                target=client.mutation, args=(start, {"wf": wf, "key": key, "args": args})
            )
            for wf, key, args in WORKFLOWS[phase]
        ]
        for th in starters:  # started concurrently
            th.start()
        for th in starters:
            th.join()
        args = {"keys": KEYS[phase], "counters": _counters(phase)}
        for value in client.subscribe(report, args):
            emit(value)


def run_finish(phase: str) -> None:
    with TestApp(app, storage=open_storage(URL), clock=ManualClock(time.time() + 7200)) as t:
        args = {"keys": KEYS[phase], "counters": _counters(phase)}
        value = t.query(report, args)
        for _ in range(20):
            if all(w is not None and w["state"] != "running" for w in value["workflows"].values()):
                break
            t.finish_scheduled()
            t.advance_time(RECOVERY_INTERVAL)
            value = t.query(report, args)
    emit(value)


if __name__ == "__main__":
    mode = sys.argv[3]
    if PHASE == "live":
        run_live(mode)
    else:
        run_finish(mode)
