"""The crash-storm app: run in child processes by ``crashstorm.py`` and killed with SIGKILL.

``python storm_app.py live URL WORKER ACKLOG SEED`` opens the app on a live runtime (scheduler
running) and does a random mixed load forever: inserts into a table with b-tree, text and
vector indexes, text rewrites and deletes, read-modify-write increments, transfers, sharded
counter and rate limiter calls, scheduled mutations and workflows. Before each operation it
appends a ``try`` line to ``ACKLOG`` (a file outside the database), and an ``ack`` line once the
call returned, so the driver knows what was acknowledged and what was in flight at a kill.

``python storm_app.py finish URL KEYS`` reopens the database with a manual clock hours ahead,
runs everything due until the workflows named in the ``KEYS`` file have finished, and prints
one JSON report of the state the driver checks.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from typing import Any

from components.rate_limiter import FixedWindow, RateLimiter
from components.rate_limiter import component as rate_limiter
from components.sharded_counter import ShardedCounter
from components.sharded_counter import component as sharded_counter
from components.workflow import WorkflowManager
from components.workflow import component as workflow
from components.workflow.pool import RECOVERY_INTERVAL
from core import App, MutationCtx, QueryCtx, Schema, Table
from core.config import use_database_url
from core.storage import open_storage
from core.testing import ManualClock, TestApp

ACCOUNTS = 8
BALANCE = 1000
RATE = 1e9
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]

app = App(
    Schema(
        items=Table({"worker": str, "seq": int, "text": str, "v": list[float]})
        .index("by_worker", ["worker", "seq"])
        .search_index("search", search_field="text", filter_fields=["worker"])
        .vector_index("by_v", vector_field="v", dimensions=3),
        counters=Table({"name": str, "value": int}).index("by_name", ["name"]),
        accounts=Table({"n": int, "balance": int}).index("by_n", ["n"]),
        jobs=Table({"key": str}).index("by_key", ["key"]),
        marks=Table({"key": str, "step": int}).index("by_key", ["key", "step"]),
    )
)
hits = ShardedCounter(app.use(sharded_counter, name="hits"), default_shards=4)
limits = RateLimiter(
    app.use(rate_limiter, name="limits"),
    {"calls": FixedWindow(RATE, RATE, start=0)},
)
flows = WorkflowManager(app.use(workflow, name="flows"), max_parallelism=8)


def _counter(ctx: QueryCtx, name: str) -> Any:
    return ctx.db.query("counters").with_index("by_name", lambda q: q.eq("name", name)).first()


def _account(ctx: QueryCtx, n: int) -> Any:
    return ctx.db.query("accounts").with_index("by_n", lambda q: q.eq("n", n)).unique()


@app.mutation
def setup(ctx: MutationCtx) -> None:
    if _account(ctx, 0) is None:
        for n in range(ACCOUNTS):
            ctx.db.insert("accounts", {"n": n, "balance": BALANCE})


@app.mutation
def insert(ctx: MutationCtx, worker: str, seq: int, text: str, v: list[float]) -> str:
    return str(ctx.db.insert("items", {"worker": worker, "seq": seq, "text": text, "v": v}))


@app.mutation
def retext(ctx: MutationCtx, id: str, text: str, v: list[float]) -> bool:
    if ctx.db.get(id) is None:
        return False
    ctx.db.patch(id, {"text": text, "v": v})
    return True


@app.mutation
def delete(ctx: MutationCtx, id: str) -> bool:
    if ctx.db.get(id) is None:
        return False
    ctx.db.delete(id)
    return True


@app.mutation
def incr(ctx: MutationCtx, name: str) -> int:
    doc = _counter(ctx, name)
    if doc is None:
        ctx.db.insert("counters", {"name": name, "value": 1})
        return 1
    ctx.db.patch(doc["_id"], {"value": doc["value"] + 1})
    return int(doc["value"]) + 1


@app.mutation
def transfer(ctx: MutationCtx, src: int, dst: int, amount: int) -> int:
    a, b = _account(ctx, src), _account(ctx, dst)
    amount = min(amount, a["balance"])
    ctx.db.patch(a["_id"], {"balance": a["balance"] - amount})
    ctx.db.patch(b["_id"], {"balance": b["balance"] + amount})
    return amount


@app.mutation
def shard_add(ctx: MutationCtx) -> None:
    hits.add(ctx, "hits", 1)


@app.mutation
def limit(ctx: MutationCtx) -> bool:
    return bool(limits.limit(ctx, "calls").ok)


@app.internal_mutation
def record_job(ctx: MutationCtx, key: str) -> None:
    ctx.db.insert("jobs", {"key": key})


@app.mutation
def schedule(ctx: MutationCtx, key: str) -> None:
    ctx.scheduler.run_after(0, record_job, {"key": key})


@app.internal_mutation
def mark(ctx: MutationCtx, key: str, step: int) -> None:
    ctx.db.insert("marks", {"key": key, "step": step})


@flows.define(name="two_steps")
async def two_steps(step: Any, key: str) -> str:
    await step.run_mutation(mark, {"key": key, "step": 0})
    await step.run_mutation(mark, {"key": key, "step": 1})
    return key


@app.mutation
def start_flow(ctx: MutationCtx, key: str) -> str:
    return str(flows.start(ctx, "two_steps", {"key": key}, id=key))


def report(ctx: QueryCtx, keys: list[str]) -> dict[str, Any]:
    """The state the driver checks (read in a transaction of ``_read_report``)."""
    counters = {d["name"]: d["value"] for d in ctx.db.query("counters").collect()}
    jobs: dict[str, int] = {}
    for d in ctx.db.query("jobs").collect():
        jobs[d["key"]] = jobs.get(d["key"], 0) + 1
    marks: dict[str, int] = {}
    for d in ctx.db.query("marks").collect():
        k = f"{d['key']}/{d['step']}"
        marks[k] = marks.get(k, 0) + 1
    states = {}
    for key in keys:
        s = flows.status(ctx, key, steps=False)
        states[key] = None if s is None else s.state
    items = {
        str(d["_id"]): [d["worker"], d["seq"], d["text"]] for d in ctx.db.query("items").collect()
    }
    return {
        "counters": counters,
        "balances": [d["balance"] for d in ctx.db.query("accounts").collect()],
        "hits": hits.count(ctx, "hits"),
        "limit_used": RATE - limits.get_value(ctx, "calls").value,
        "jobs": jobs,
        "marks": marks,
        "flows": states,
        "items": items,
    }


def _text(rng: random.Random, worker: str, seq: int) -> str:
    return f"{worker} s{seq} " + " ".join(rng.choices(WORDS, k=4))


def _vec(rng: random.Random) -> list[float]:
    return [rng.uniform(-1, 1) for _ in range(3)]


def run_live(url: str, worker: str, acklog: str, seed: int) -> None:
    rng = random.Random(seed)
    fd = os.open(acklog, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def log(**entry: Any) -> None:
        os.write(fd, (json.dumps(entry) + "\n").encode())

    mine: list[str] = []
    use_database_url(url)
    with app.sync_client() as client:
        client.mutation(setup, {})
        print("ready", flush=True)
        seq = 0
        while True:
            seq += 1
            op = rng.choice(
                ["insert", "insert", "retext", "delete", "incr", "incr", "transfer", "shard"]
                + ["limit", "schedule", "flow"]
            )
            key = f"{worker}-{seq}"
            args: dict[str, Any]
            if op == "insert":
                args = {"worker": worker, "seq": seq, "text": _text(rng, worker, seq)}
                args["v"] = _vec(rng)
            elif op in ("retext", "delete"):
                if not mine:
                    continue
                target = rng.choice(mine)
                args = {"id": target}
                if op == "retext":
                    args |= {"text": _text(rng, worker, seq), "v": _vec(rng)}
                else:
                    mine.remove(target)
            elif op == "transfer":
                src, dst = rng.sample(range(ACCOUNTS), 2)
                args = {"src": src, "dst": dst, "amount": rng.randint(1, 50)}
            elif op == "incr":
                args = {"name": "hot"}
            elif op in ("schedule", "flow"):
                args = {"key": key}
            else:
                args = {}
            ref: Any = {
                "insert": insert,
                "retext": retext,
                "delete": delete,
                "incr": incr,
                "transfer": transfer,
                "shard": shard_add,
                "limit": limit,
                "schedule": schedule,
                "flow": start_flow,
            }[op]
            log(phase="try", op=op, key=key, args=args)
            result = client.mutation(ref, args)
            if op == "insert":
                mine.append(result)
            log(phase="ack", op=op, key=key, result=result)


def _read_report(t: TestApp, keys: list[str]) -> dict[str, Any]:
    # Not a query's return value: a long storm leaves more jobs and items than one value may
    # hold (1,024 fields), so the report leaves the transaction by a side door.
    out: dict[str, Any] = {}
    t.run(lambda ctx: out.update(report(ctx, keys)))
    return out


def run_finish(url: str, keys_file: str) -> None:
    with open(keys_file) as f:
        keys = json.load(f)
    storage = open_storage(url)
    with TestApp(app, storage=storage, clock=ManualClock(time.time() + 7200)) as t:
        value = _read_report(t, keys)
        for _ in range(30):
            if all(s is not None and s != "running" for s in value["flows"].values()):
                break
            t.finish_scheduled()
            t.advance_time(RECOVERY_INTERVAL)
            value = _read_report(t, keys)
        t.finish_scheduled()
        value = _read_report(t, keys)
    print(json.dumps(value), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "live":
        run_live(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        run_finish(sys.argv[2], sys.argv[3])
