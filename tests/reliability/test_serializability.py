"""Serializability: a randomized concurrent run has a serial order (no dependency cycle).

Several runtimes share one database, each with its own storage connection, the first opened
while the database was still empty and the others later, while threads run random
transactions over a few registers through all of them (in one process, then in client
processes of their own); the commit log is pruned after every
few commits. Each committed transaction reports which version of each register it read and
which version each of its writes replaced; ``core.testing.history`` looks for cycles in the
dependency graph (as Elle does). Any anomaly fails the test with the history printed.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import core.database.engine as engine_module
from core import App, MutationCtx, QueryCtx, Schema, Table
from core.storage import open_storage
from core.storage.base import Storage
from core.testing import TestApp
from core.testing.history import INITIAL, History, TxnRecord

KEYS = [f"k{i}" for i in range(5)]
ROOT = Path(__file__).parents[2]
app = App(Schema(registers=Table({"key": str, "version": str}).index("by_key", ["key"])))


def _register(ctx: QueryCtx, key: str) -> Any:
    return ctx.db.query("registers").with_index("by_key", lambda q: q.eq("key", key)).unique()


@app.mutation
def setup(ctx: MutationCtx) -> None:
    for key in KEYS:
        ctx.db.insert("registers", {"key": key, "version": INITIAL})


HELD = threading.Event()
"""Set by a held transaction once it has read (see ``txn``'s ``hold``)."""
RELEASE = threading.Event()


@app.mutation
def txn(
    ctx: MutationCtx, reads: list[str], writes: list[str], pause: float, hold: bool = False
) -> dict[str, Any]:
    """Read some registers, pause (the work a real handler does), overwrite some.

    ``hold``: after reading, wait until the test sets ``RELEASE`` (a retry passes through).
    """
    me = uuid.uuid4().hex[:10]
    seen = {key: _register(ctx, key)["version"] for key in reads}
    if pause:
        time.sleep(pause)  # widens the window in which other runtimes commit and prune
    if hold:
        HELD.set()
        RELEASE.wait(60)
    replaced = {}
    for key in writes:
        doc = _register(ctx, key)
        replaced[key] = doc["version"]
        ctx.db.patch(doc["_id"], {"version": me})
    return {"id": me, "reads": seen, "writes": replaced}


@app.query
def look(ctx: QueryCtx, keys: list[str]) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex[:10], "reads": {k: _register(ctx, k)["version"] for k in keys}}


def drive(
    apps: list[TestApp], n: int, per_thread: int, seed: int, add: Callable[[TxnRecord], None]
) -> None:
    """One client thread's random transactions through the runtimes in ``apps``."""
    wrng = random.Random(seed * 1000 + n)
    for i in range(per_thread):
        which = wrng.randrange(len(apps))
        reads = wrng.sample(KEYS, wrng.randint(0, 3))
        writes = wrng.sample(KEYS, wrng.randint(0, 2))
        t = apps[which]
        where = f"pid {os.getpid()} runtime {which} thread {n} #{i}"
        if not writes:
            out = t.query(look, {"keys": reads})
            add(TxnRecord(id=out["id"], reads=out["reads"], where=where))
            continue
        # The first runtime's transactions are the slow ones.
        pause = wrng.uniform(0.02, 0.08) if which == 0 else 0.0
        out = t.mutation(txn, {"reads": reads, "writes": writes, "pause": pause})
        add(TxnRecord(id=out["id"], reads=out["reads"], writes=out["writes"], where=where))


def run_history(url: str, *, runtimes: int, threads: int, per_thread: int, seed: int) -> History:
    """The randomized run; returns its history of committed transactions."""
    history = History()
    rng = random.Random(seed)
    # The first runtime opens on the empty database; the others open during the run.
    apps = [TestApp(app, storage=open_storage(url)).__enter__()]
    errors: list[BaseException] = []
    try:
        with TestApp(app, storage=open_storage(url)) as seeding:
            seeding.mutation(setup, {})

        def worker(n: int) -> None:
            try:
                drive(apps, n, per_thread, seed, history.add)
            except BaseException as exc:  # reported by the test
                errors.append(exc)

        pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
        for th in pool:
            th.start()
        for _ in range(runtimes - 1):  # the others open while the run goes on
            time.sleep(rng.uniform(0.0, 0.05))
            apps.append(TestApp(app, storage=open_storage(url)).__enter__())
        for th in pool:
            th.join(timeout=300)
        assert not errors, errors
    finally:
        for t in apps:
            t.__exit__(None, None, None)
    return history


def _child(url: str, seed: int, threads: int, per_thread: int) -> None:
    """A client process: its own runtime, ``threads`` threads, one JSON line per transaction."""
    engine_module.PRUNE_EVERY = 3
    lock = threading.Lock()

    def add(record: TxnRecord) -> None:
        line = json.dumps([record.id, record.reads, record.writes, record.where])
        with lock:
            print(line, flush=True)

    with TestApp(app, storage=open_storage(url)) as t:
        pool = [
            threading.Thread(target=drive, args=([t], n, per_thread, seed, add))
            for n in range(threads)
        ]
        for th in pool:
            th.start()
        for th in pool:
            th.join(timeout=300)


def run_processes(url: str, *, processes: int, threads: int, per_thread: int) -> History:
    """Client processes (and this one) on one database, each opened at its own time."""
    with TestApp(app, storage=open_storage(url)) as seeding:
        seeding.mutation(setup, {})
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CAPSULE_LOG_RETENTION": "0"}
    procs = []
    for p in range(processes):
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, url, str(p + 1), str(threads), str(per_thread)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
        time.sleep(0.02 * p)
    history = History()
    with TestApp(app, storage=open_storage(url)) as t:  # opens last
        drive([t], 99, per_thread, 0, history.add)
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        for line in out.splitlines():
            id, reads, writes, where = json.loads(line)
            history.add(TxnRecord(id=id, reads=reads, writes=writes, where=where))
    return history


def _assert_serializable(history: History) -> None:
    anomalies = history.anomalies()
    if anomalies:
        shown = "\n".join(a.describe() for a in anomalies[:5])
        pytest.fail(f"{len(anomalies)} anomalies in {len(history.txns)} transactions:\n{shown}")


@pytest.mark.parametrize("seed", [1, 2])
def test_random_concurrent_run_is_serializable(
    storage: Storage, monkeypatch: pytest.MonkeyPatch, soak: Any, seed: int
) -> None:
    monkeypatch.setenv("CAPSULE_LOG_RETENTION", "0")
    monkeypatch.setattr(engine_module, "PRUNE_EVERY", 3)
    per_thread = soak.size(25, 400)
    history = run_history(storage.url, runtimes=3, threads=6, per_thread=per_thread, seed=seed)
    assert len(history.txns) == 6 * per_thread
    _assert_serializable(history)
    soak.record(transactions=len(history.txns), anomalies=len(history.anomalies()))


def test_client_processes_are_serializable(
    storage: Storage, monkeypatch: pytest.MonkeyPatch, soak: Any
) -> None:
    monkeypatch.setenv("CAPSULE_LOG_RETENTION", "0")
    monkeypatch.setattr(engine_module, "PRUNE_EVERY", 3)
    per_thread = soak.size(20, 300)
    history = run_processes(storage.url, processes=2, threads=3, per_thread=per_thread)
    assert len(history.txns) == (2 * 3 + 1) * per_thread
    _assert_serializable(history)
    soak.record(transactions=len(history.txns), anomalies=len(history.anomalies()))


def test_a_runtime_that_missed_pruned_commits_loses_no_update(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11's defect 1 as a history, deterministic on both backends.

    A (opened first, on the empty database) reads k0 and holds; B updates k0, then commits
    enough elsewhere to prune those updates from the log before A looks at it. A must find
    the gap, conflict and re-run, or the history shows the update A overwrote unseen.
    """
    monkeypatch.setenv("CAPSULE_LOG_RETENTION", "0")
    monkeypatch.setattr(engine_module, "PRUNE_EVERY", 3)
    HELD.clear()
    RELEASE.clear()
    history = History()

    def record(out: dict[str, Any], where: str) -> None:
        history.add(TxnRecord(id=out["id"], reads=out["reads"], writes=out["writes"], where=where))

    with TestApp(app, storage=open_storage(storage.url)) as a:  # the database is empty
        with TestApp(app, storage=open_storage(storage.url)) as b:
            b.mutation(setup, {})
            with ThreadPoolExecutor(1) as pool:
                slow = pool.submit(
                    a.mutation, txn, {"reads": ["k0"], "writes": ["k0"], "pause": 0, "hold": True}
                )
                assert HELD.wait(60)
                for n, key in enumerate(["k0"] * 3 + ["k3"] * 9):
                    args = {"reads": [key], "writes": [key], "pause": 0}
                    record(b.mutation(txn, args), f"B #{n}")
                with b.runtime.storage.begin_write() as w:
                    assert len(w.read_log(0)) < 6  # B's updates of k0 are pruned
                RELEASE.set()
                record(slow.result(timeout=60), "A (held)")
    _assert_serializable(history)


def test_the_checker_finds_a_lost_update_and_a_write_skew() -> None:
    lost = History()
    lost.add(TxnRecord(id="a", reads={"x": INITIAL}, writes={"x": INITIAL}))
    lost.add(TxnRecord(id="b", reads={"x": INITIAL}, writes={"x": INITIAL}))
    kinds = sorted(a.kind for a in lost.anomalies())
    assert kinds == ["cycle", "forked_write"]
    assert "rw x" in lost.anomalies()[-1].describe()

    skew = History()  # each reads both, writes one: no serial order gives both results
    skew.add(TxnRecord(id="a", reads={"x": INITIAL, "y": INITIAL}, writes={"x": INITIAL}))
    skew.add(TxnRecord(id="b", reads={"x": INITIAL, "y": INITIAL}, writes={"y": INITIAL}))
    assert [a.kind for a in skew.anomalies()] == ["cycle"]

    serial = History()
    serial.add(TxnRecord(id="a", reads={"x": INITIAL}, writes={"x": INITIAL}))
    serial.add(TxnRecord(id="b", reads={"x": "a"}, writes={"x": "a"}))
    serial.add(TxnRecord(id="c", reads={"x": "b", "y": INITIAL}))
    assert serial.anomalies() == []
    assert serial.graph()["a"] == {"b": "ww x"}

    dirty = History()
    dirty.add(TxnRecord(id="a", reads={"x": "never-committed"}))
    assert [a.kind for a in dirty.anomalies()] == ["unknown_read"]


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
