"""Several app processes on one database (both backends; PostgreSQL is the point).

Each worker is a separate Python process running ``WORKER`` (written to ``tmp_path``): it opens
the same app on the shared storage URL, prints ``ready``, waits for ``go`` on stdin so all
workers start together, and reports on stdout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from core.database.engine import Conflict, Database
from core.database.readsets import WriteSet
from core.storage import open_storage
from core.storage.base import Storage
from core.subscriptions import subscribe_sync
from core.testing import TestApp

REPO = Path(__file__).resolve().parents[3]
WAIT = 120.0
"""Upper bound for any one wait on a worker (the tests finish in seconds)."""

WORKER = r'''
import json
import random
import sys

from core import App, MutationCtx, QueryCtx, Schema, Table
from core.scheduler import SchedulerConfig
from core.storage import open_storage

app = App(Schema(
    counters=Table({"name": str, "value": int}).index("by_name", ["name"]),
    accounts=Table({"n": int, "balance": int}).index("by_n", ["n"]),
    receipts=Table({"worker": int, "seq": int, "src": int, "dst": int, "amount": int})
        .index("by_worker", ["worker", "seq"]),
    runs=Table({"job": int, "runner": int}),
))
app.scheduler_config = SchedulerConfig(poll_interval=0.05)


def counter(ctx, name):
    return ctx.db.query("counters").with_index("by_name", lambda q: q.eq("name", name)).first()


@app.mutation
def bump(ctx: MutationCtx, name: str) -> int:
    doc = counter(ctx, name)
    if doc is None:
        ctx.db.insert("counters", {"name": name, "value": 1})
        return 1
    ctx.db.patch(doc["_id"], {"value": doc["value"] + 1})
    return doc["value"] + 1


@app.query
def value(ctx: QueryCtx, name: str) -> int | None:
    doc = counter(ctx, name)
    return None if doc is None else doc["value"]


RUNNER = {"id": -1}


@app.internal_mutation
def record(ctx: MutationCtx, job: int) -> None:
    ctx.db.insert("runs", {"job": job, "runner": RUNNER["id"]})


@app.mutation
def schedule_many(ctx: MutationCtx, count: int, at: float) -> None:
    for job in range(count):
        ctx.scheduler.run_at(at, record, {"job": job})


@app.mutation
def setup_accounts(ctx: MutationCtx, count: int, balance: int) -> None:
    for n in range(count):
        ctx.db.insert("accounts", {"n": n, "balance": balance})


def account(ctx, n):
    return ctx.db.query("accounts").with_index("by_n", lambda q: q.eq("n", n)).unique()


@app.mutation
def transfer(ctx: MutationCtx, worker: int, seq: int, src: int, dst: int, amount: int) -> int:
    """Move money and record a receipt and a per-worker count: four writes, all or nothing."""
    a, b = account(ctx, src), account(ctx, dst)
    amount = min(amount, a["balance"])
    ctx.db.patch(a["_id"], {"balance": a["balance"] - amount})
    ctx.db.patch(b["_id"], {"balance": b["balance"] + amount})
    ctx.db.insert("receipts", {"worker": worker, "seq": seq, "src": src, "dst": dst,
                               "amount": amount})
    bump.handler(ctx, f"worker{worker}")
    return amount


@app.query
def total(ctx: QueryCtx) -> dict:
    balances = [d["balance"] for d in ctx.db.query("accounts").collect()]
    return {"total": sum(balances), "min": min(balances), "count": len(balances)}


def main():
    url, mode, worker, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rt = app.make_runtime(open_storage(url))
    rt.open()
    ex = rt.executor
    if mode == "scheduler":
        RUNNER["id"] = worker
        rt.start_services()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    rng = random.Random(worker)
    totals = set()
    if mode == "bump":
        for _ in range(n):
            ex.mutation(bump, {"name": "hot"})
    elif mode == "transfer":
        accounts = int(sys.argv[5])
        for seq in range(n):
            src, dst = rng.sample(range(accounts), 2)
            ex.mutation(transfer, {"worker": worker, "seq": seq, "src": src, "dst": dst,
                                   "amount": rng.randint(1, 30)})
            print("ack", seq, flush=True)
            if seq % 10 == 0:
                totals.add(ex.query(total)["total"])
    elif mode == "scheduler":
        sys.stdin.readline()  # run jobs until told to stop
        rt.stop_services()
    print("done", json.dumps({"retries": ex.retries, "totals": sorted(totals)}), flush=True)
    rt.close()


if __name__ == "__main__":
    main()
'''


@pytest.fixture
def worker_file(tmp_path: Path) -> Path:
    path = tmp_path / "mp_worker.py"
    path.write_text(WORKER)
    return path


@pytest.fixture
def worker_app(worker_file: Path) -> ModuleType:
    """The workers' app, imported in this process to set up and check the data."""
    spec = importlib.util.spec_from_file_location("mp_worker", worker_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Workers:
    """Started worker processes; ``go()`` releases them together."""

    def __init__(self, script: Path, url: str, mode: str, count: int, n: int, *extra: str):
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.procs = [
            subprocess.Popen(
                [sys.executable, str(script), url, mode, str(w), str(n), *extra],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=REPO,
                env=env,
            )
            for w in range(count)
        ]
        for p in self.procs:
            line = self.readline(p)
            assert line == "ready", line + self.stderr(p)

    @staticmethod
    def readline(p: subprocess.Popen[str]) -> str:
        assert p.stdout is not None
        return p.stdout.readline().strip()

    @staticmethod
    def stderr(p: subprocess.Popen[str]) -> str:
        if p.poll() is None or p.stderr is None:
            return ""
        return p.stderr.read()

    def go(self, word: str = "go") -> None:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(word + "\n")
            p.stdin.flush()

    def finish(self, p: subprocess.Popen[str]) -> tuple[list[str], dict[str, Any]]:
        """Every stdout line of ``p`` until it exits, and its ``done`` report."""
        out, err = p.communicate(timeout=WAIT)
        assert p.returncode == 0, err
        lines = out.splitlines()
        done = [ln for ln in lines if ln.startswith("done ")]
        assert done, err
        return lines, json.loads(done[0][5:])

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            for pipe in (p.stdin, p.stdout, p.stderr):
                if pipe is not None:
                    pipe.close()


@pytest.fixture
def spawn(worker_file: Path, storage: Storage) -> Iterator[Any]:
    started: list[Workers] = []

    def start(mode: str, count: int, n: int, *extra: str, url: str | None = None) -> Workers:
        w = Workers(worker_file, url or storage.url, mode, count, n, *extra)
        started.append(w)
        return w

    yield start
    for w in started:
        w.kill_all()


@pytest.mark.parametrize("flush", ["in_step", "after_step"])
def test_four_processes_increment_one_document(
    storage: Storage, worker_app: ModuleType, spawn: Any, flush: str
) -> None:
    url, each = storage.url, 250
    if flush == "after_step":  # PostgresStorage(flush="after_step"), chosen by the URL
        if not url.startswith("postgresql"):
            pytest.skip("a PostgresStorage option")
        url, each = url + "?capsule_flush=after_step", 100
    with TestApp(worker_app.app, storage=storage) as t:
        t.mutation(worker_app.bump, {"name": "hot"})
        workers = spawn("bump", 4, each, url=url)
        workers.go()
        for p in workers.procs:
            workers.finish(p)  # a ConflictError would exit non-zero with its traceback
        doc = t.run(lambda ctx: worker_app.counter(ctx, "hot"))
        assert doc["value"] == 1 + 4 * each


def test_transfers_across_processes_keep_the_total(
    storage: Storage, worker_app: ModuleType, spawn: Any
) -> None:
    accounts, balance = 6, 100
    with TestApp(worker_app.app, storage=storage) as t:
        t.mutation(worker_app.setup_accounts, {"count": accounts, "balance": balance})
        workers = spawn("transfer", 4, 60, str(accounts))
        workers.go()
        for p in workers.procs:
            _, report = workers.finish(p)
            # Every snapshot a worker's queries saw was consistent across processes.
            assert report["totals"] == [accounts * balance]
        state = t.query(worker_app.total)
        assert state == {"total": accounts * balance, "min": state["min"], "count": accounts}
        assert state["min"] >= 0
        receipts = t.run(lambda ctx: ctx.db.query("receipts").collect())
        assert len(receipts) == 4 * 60


def test_kill_9_during_a_mutation_storm_loses_no_acknowledged_commit(
    storage: Storage, worker_app: ModuleType, spawn: Any
) -> None:
    accounts, balance, n = 6, 1000, 150
    with TestApp(worker_app.app, storage=storage) as t:
        t.mutation(worker_app.setup_accounts, {"count": accounts, "balance": balance})
        workers = spawn("transfer", 4, n, str(accounts))
        workers.go()
        victim = workers.procs[0]
        acked: set[int] = set()
        while len(acked) < 20:
            line = workers.readline(victim)
            assert line.startswith("ack "), line + workers.stderr(victim)
            acked.add(int(line.split()[1]))
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=WAIT)
        assert victim.stdout is not None
        # Acknowledgements written before the kill may still sit in the pipe.
        acked |= {
            int(ln.split()[1]) for ln in victim.stdout.read().splitlines() if ln.startswith("ack ")
        }
        for p in workers.procs[1:]:
            lines, _ = workers.finish(p)
            assert sum(ln.startswith("ack ") for ln in lines) == n

        receipts = t.run(lambda ctx: ctx.db.query("receipts").collect())
        by_worker: dict[int, set[int]] = {}
        for r in receipts:
            by_worker.setdefault(r["worker"], set()).add(r["seq"])
        assert acked <= by_worker[0]
        # At most the one mutation in flight at the kill committed without its ack.
        assert len(by_worker[0] - acked) <= 1
        for w in (1, 2, 3):
            assert by_worker[w] == set(range(n))
        # No partial transaction: the money adds up and each worker's count matches its
        # receipts (the four writes of a transfer commit together or not at all).
        assert t.query(worker_app.total)["total"] == accounts * balance
        counts = t.run(lambda ctx: {d["name"]: d["value"] for d in ctx.db.query("counters")})
        assert counts == {f"worker{w}": len(seqs) for w, seqs in by_worker.items()}


def test_another_process_commit_reaches_this_process_listeners(
    storage: Storage, worker_app: ModuleType, spawn: Any
) -> None:
    """The mechanism subscriptions use: wait_for_commit wakes, poll_other_processes delivers."""
    # A runtime's first open writes the database's handle key; do it now, so the worker's
    # open commits nothing and the only commit to wake this process is the worker's bump.
    with TestApp(worker_app.app, storage=open_storage(storage.url)):
        pass
    db = Database(storage)
    db.open(worker_app.app.schemas())
    try:
        seen: list[WriteSet] = []
        db.add_listener(lambda ts, ws: seen.append(ws))
        workers = spawn("bump", 1, 1)
        # Listen first, so the wake-up has to come from the worker's NOTIFY.
        assert not storage.wait_for_commit(db.latest_ts, timeout=0.01)
        workers.go()
        woke = False
        deadline = time.monotonic() + WAIT
        while not any("counters" in ws.doc_tables.values() for ws in seen):
            assert time.monotonic() < deadline
            woke |= storage.wait_for_commit(db.latest_ts, timeout=0.5)
            db.poll_other_processes()
        if "postgresql" in storage.url:
            assert woke  # LISTEN/NOTIFY delivered the wake-up, not a poll timeout
        workers.finish(workers.procs[0])
    finally:
        db.close()


def test_commits_another_process_pruned_before_this_one_saw_them_still_conflict(
    storage: Storage, worker_app: ModuleType
) -> None:
    """Two processes' databases; B prunes the log records A has not read yet."""
    other = open_storage(storage.url)
    schemas = worker_app.app.schemas()
    a, b = Database(storage), Database(other)
    a.open(schemas)
    b.open(schemas)
    try:
        space_a, space_b = a.space(""), b.space("")
        setup = a.transaction()
        doc_id = setup.insert(space_a, "counters", {"name": "x", "value": 0})
        a.commit(setup)
        setup.close()

        stale = a.transaction()
        before = stale.get(space_a, doc_id)
        assert before is not None
        for n in range(2):
            txn = b.transaction()
            if n == 0:
                txn.patch(space_b, doc_id, {"value": 10})
            else:
                txn.insert(space_b, "counters", {"name": "y", "value": 0})
            b.commit(txn)
            txn.close()
        with other.begin_write() as w:
            w.prune_log(w.latest_ts())  # keeps only the newest record

        stale.patch(space_a, doc_id, {"value": before["value"] + 1})
        with pytest.raises(Conflict):
            a.commit(stale)
        stale.close()
    finally:
        a.close()
        b.close()


def test_a_subscription_sees_a_commit_made_by_another_process(
    storage: Storage, worker_app: ModuleType, spawn: Any
) -> None:
    with TestApp(worker_app.app, storage=storage) as t:
        t.mutation(worker_app.bump, {"name": "hot"})
        updates = subscribe_sync(t.runtime, worker_app.value, {"name": "hot"})
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(next, updates).result(timeout=WAIT) == 1
            workers = spawn("bump", 1, 1)
            workers.go()
            assert pool.submit(next, updates).result(timeout=WAIT) == 2
            updates.close()
        workers.finish(workers.procs[0])


def test_two_scheduler_processes_run_each_due_job_exactly_once(
    storage: Storage, worker_app: ModuleType, spawn: Any
) -> None:
    jobs = 200
    with TestApp(worker_app.app, storage=storage) as t:
        workers = spawn("scheduler", 2, 0)  # both runners are polling before the jobs exist
        workers.go()
        t.mutation(worker_app.schedule_many, {"count": jobs, "at": time.time()})

        def states() -> dict[str, int]:
            found: dict[str, int] = {}
            for job in t.run(lambda ctx: ctx.db.system.query("_scheduled_functions").collect()):
                found[job["state"]] = found.get(job["state"], 0) + 1
            return found

        deadline = time.monotonic() + WAIT
        while states() != {"success": jobs}:
            assert time.monotonic() < deadline, states()
            time.sleep(0.05)
        workers.go("stop")
        for p in workers.procs:
            workers.finish(p)
        runs = t.run(lambda ctx: ctx.db.query("runs").collect())
        assert sorted(r["job"] for r in runs) == list(range(jobs))
