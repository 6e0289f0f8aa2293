"""A workflow app run in a subprocess by test_crash.py (killed with SIGKILL mid-run)."""

from __future__ import annotations

import sys
import time
from typing import Any

from components.workflow import WorkflowManager, component
from core import App, MutationCtx, QueryCtx, SQLiteStorage

app = App(storage=SQLiteStorage(sys.argv[1]))
manager = WorkflowManager(app.use(component, name="workflow"), max_parallelism=20)


@app.mutation
def incr(ctx: MutationCtx, name: str) -> None:
    doc = ctx.db.query("counters").filter(lambda d: d["name"] == name).first()
    if doc is None:
        ctx.db.insert("counters", {"name": name, "n": 1})
    else:
        ctx.db.patch(doc["_id"], {"n": doc["n"] + 1})


@manager.define(name="five")
async def five(step: Any) -> str:
    for i in range(3):
        await step.run_mutation(incr, {"name": f"s{i}"})
    await step.sleep(0.5)
    for i in range(3, 5):
        await step.run_mutation(incr, {"name": f"s{i}"})
    return "done"


@manager.define(name="one")
async def one(step: Any) -> str:
    await step.run_mutation(incr, {"name": "total"})
    return "done"


@app.mutation
def start(ctx: MutationCtx, wf: str, key: str) -> str:
    return str(manager.start(ctx, wf, {}, id=key))


@app.query
def progress(ctx: QueryCtx, key: str) -> Any:
    s = manager.status(ctx, key)
    return None if s is None else [s.state, sum(st.state == "success" for st in s.steps)]


@app.query
def counter(ctx: QueryCtx, name: str) -> int:
    doc = ctx.db.query("counters").filter(lambda d: d["name"] == name).first()
    return 0 if doc is None else int(doc["n"])


@app.query
def done(ctx: QueryCtx) -> int:
    return len(manager.list(ctx, state="success", num_items=1000).page)


if __name__ == "__main__":
    mode = sys.argv[2]
    with app.sync_client() as client:
        if mode == "five":
            client.mutation(start, {"wf": "five", "key": "five"})
        elif mode == "many":
            for i in range(100):
                client.mutation(start, {"wf": "one", "key": f"w{i}"})
        print("started", flush=True)
        while True:  # the parent kills us, or we run until everything is done
            time.sleep(0.02)
            if mode == "five":
                print(client.query(progress, {"key": "five"}), flush=True)
