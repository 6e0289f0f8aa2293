"""The commit engine on every backend: commit log, listeners, pruning, creation times, failures."""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import pytest

from core import App, Id, MutationCtx, Schema, Table
from core.database import engine as engine_module
from core.database.engine import Conflict, Database
from core.errors import UserError
from core.storage import SQLiteStorage, open_storage
from core.storage.base import Storage
from core.testing import FaultyStorage, ManualClock, TestApp

app = App(Schema(items=Table({"n": int}).index("by_n", ["n"])))


@pytest.fixture
def t(storage: Storage) -> Iterator[TestApp]:
    with TestApp(app, storage=storage, clock=ManualClock(5_000.0)) as harness:
        yield harness


def bump(t: TestApp, doc_id: str) -> None:
    t.run(lambda ctx: ctx.db.patch(doc_id, {"n": ctx.db.get(doc_id)["n"] + 1}))


def log_rows(db: Database) -> int:
    with db.storage.begin_write() as w:
        return len(w.read_log(0))


def test_listeners_hear_every_commit_in_order(t: TestApp, caplog: pytest.LogCaptureFixture) -> None:
    db = t.runtime.db
    heard: list[tuple[int, list[str]]] = []
    remove = db.add_listener(lambda ts, ws: heard.append((ts, list(ws.docs))))

    def broken(ts: int, ws: Any) -> None:
        raise RuntimeError("listener bug")

    remove_broken = db.add_listener(broken)
    with caplog.at_level(logging.ERROR, logger="capsule.database"):
        a = t.run(lambda ctx: ctx.db.insert("items", {"n": 1}))
        bump(t, a)
    remove_broken()
    assert "commit listener failed" in caplog.text
    t.run(lambda ctx: ctx.db.get(a))  # read-only: no commit
    remove()
    bump(t, a)
    assert [docs for _, docs in heard] == [[a], [a]]
    assert heard[0][0] < heard[1][0] <= db.latest_ts


def test_a_transaction_without_writes_commits_at_its_snapshot(t: TestApp) -> None:
    db = t.runtime.db
    a = t.run(lambda ctx: ctx.db.insert("items", {"n": 1}))
    rows = log_rows(db)
    txn = db.transaction()
    txn.get(db.space(""), a)
    assert db.commit(txn) == txn.snapshot_ts
    txn.close()
    assert log_rows(db) == rows


def test_the_commit_log_stays_bounded_under_steady_updates(
    t: TestApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "PRUNE_EVERY", 10)
    db = t.runtime.db
    db.log_retention = 0.0
    space = db.space("")
    a = t.run(lambda ctx: ctx.db.insert("items", {"n": 0}))
    b = t.run(lambda ctx: ctx.db.insert("items", {"n": 100}))
    # An open transaction that read ``a`` keeps what it needs to be validated.
    stale = db.transaction()
    stale.get(space, a)
    untouched = db.transaction()
    untouched.get(space, b)
    for _ in range(200):
        bump(t, a)
    assert log_rows(db) <= 12
    assert len(db._log_ts) <= 215
    stale.patch(space, a, {"n": -1})
    with pytest.raises(Conflict):
        db.commit(stale)
    stale.close()
    untouched.patch(space, b, {"n": 101})
    db.commit(untouched)
    untouched.close()
    assert t.run(lambda ctx: [ctx.db.get(a)["n"], ctx.db.get(b)["n"]]) == [200, 101]
    for _ in range(30):
        bump(t, a)  # with no snapshot open any more, the in-memory log is cut too
    assert len(db._log_ts) <= 15


def test_creation_times_follow_the_app_clock_and_strictly_increase(t: TestApp) -> None:
    def body(ctx: Any) -> list[float]:
        ids = [ctx.db.insert("items", {"n": i}) for i in range(3)]
        return [ctx.db.get(i)["_creation_time"] for i in ids]

    first = t.run(body)
    # (The database's handle key, written as it opened, took the clock's first instant.)
    assert 5_000.0 <= first[0] < first[1] < first[2] < 5_000.001
    t.advance_time(60)
    later = t.run(body)
    assert later[0] == 5_060.0
    db = t.runtime.db
    assert db.creation_time() > 1_000_000_000  # no clock given: the wall clock
    assert db.creation_time(1.0) > later[-1]  # never goes back


def test_a_failed_commit_step_reaches_the_caller_and_leaves_nothing(storage: Storage) -> None:
    failing = FaultyStorage(storage)
    with TestApp(app, storage=failing) as t:
        db = t.runtime.db
        a = t.run(lambda ctx: ctx.db.insert("items", {"n": 1}))
        heard: list[int] = []
        db.add_listener(lambda ts, ws: heard.append(ts))
        failing.fail_commits(1, OSError("disk full"))
        with pytest.raises(OSError, match="disk full"):
            bump(t, a)
        assert heard == []
        assert t.run(lambda ctx: ctx.db.get(a)["n"]) == 1
        bump(t, a)
        assert t.run(lambda ctx: ctx.db.get(a)["n"]) == 2 and len(heard) == 1


def test_another_database_on_the_same_storage_sees_commits_when_it_polls(tmp_path: Any) -> None:
    from core.storage.sqlite import SQLiteStorage

    with (
        TestApp(app, storage=SQLiteStorage(tmp_path / "shared.db")) as one,
        TestApp(app, storage=SQLiteStorage(tmp_path / "shared.db")) as two,
    ):
        heard: list[list[str]] = []
        two.runtime.db.add_listener(lambda ts, ws: heard.append(list(ws.docs)))
        a = one.run(lambda ctx: ctx.db.insert("items", {"n": 1}))
        two.runtime.db.poll_other_processes()
        assert heard == [[a]]
        # A transaction of ``two`` that read ``a`` before ``one`` changed it must conflict.
        db2 = two.runtime.db
        txn = db2.transaction()
        txn.get(db2.space(""), a)
        bump(one, a)
        txn.patch(db2.space(""), a, {"n": 50})
        with pytest.raises(Conflict):
            db2.commit(txn)
        txn.close()
        assert two.run(lambda ctx: ctx.db.get(a)["n"]) == 2


def test_a_commit_presuming_no_other_process_committed_is_redone_when_one_did(
    tmp_path: Any,
) -> None:
    # A commit step skips reading the newest timestamp while no other process is seen
    # committing; the storage verifies the guess as it appends the log record.
    with (
        TestApp(app, storage=SQLiteStorage(tmp_path / "shared.db")) as one,
        TestApp(app, storage=SQLiteStorage(tmp_path / "shared.db")) as two,
    ):
        db1, db2 = one.runtime.db, two.runtime.db
        a = one.run(lambda ctx: ctx.db.insert("items", {"n": 1}))
        for _ in range(3):  # alternating writers: every presumption is stale once
            db1._read_latest = db2._read_latest = 0
            bump(two, a)
            assert db2._read_latest == engine_module.PRESUME_PAUSE
            db1._read_latest = 0
            bump(one, a)
            assert db1._read_latest == engine_module.PRESUME_PAUSE
        assert one.run(lambda ctx: ctx.db.get(a)["n"]) == 7
        # A stale read is still refused: the redone step takes in the other's commit first.
        txn = db1.transaction()
        txn.get(db1.space(""), a)
        bump(two, a)
        db1._read_latest = 0
        txn.patch(db1.space(""), a, {"n": 50})
        with pytest.raises(Conflict):
            db1.commit(txn)
        txn.close()
        assert two.run(lambda ctx: ctx.db.get(a)["n"]) == 8
        # Alone again: the next commits presume (no statement reads the newest timestamp).
        db1._read_latest = 0
        statements: list[str] = []
        db1.storage._writer_conn.set_trace_callback(statements.append)  # type: ignore[attr-defined]
        bump(one, a)
        db1.storage._writer_conn.set_trace_callback(None)  # type: ignore[attr-defined]
        assert not [s for s in statements if s.startswith("SELECT coalesce(max(ts), 0) FROM")]
        assert one.run(lambda ctx: ctx.db.get(a)["n"]) == 9


counter_app = App(Schema(counters=Table({"value": int}), churn=Table({"n": int})))
slow_started = threading.Event()
slow_release = threading.Event()


@counter_app.mutation
def add_slowly(ctx: MutationCtx, doc_id: Id[Literal["counters"]], amount: int) -> int:
    """Read, then work a long while (until the test releases it), then write."""
    doc = ctx.db.get(doc_id)
    slow_started.set()
    slow_release.wait(60)
    ctx.db.patch(doc_id, {"value": doc["value"] + amount})
    return int(doc["value"] + amount)


@counter_app.mutation
def add(ctx: MutationCtx, doc_id: Id[Literal["counters"]], amount: int) -> None:
    ctx.db.patch(doc_id, {"value": ctx.db.get(doc_id)["value"] + amount})


@counter_app.mutation
def churn(ctx: MutationCtx, n: int) -> None:
    ctx.db.insert("churn", {"n": n})


@pytest.mark.parametrize("catch_up", ["at-commit", "by-polling"])
@pytest.mark.parametrize("opened", ["empty", "non-empty"])
def test_no_update_is_lost_after_another_runtime_pruned_the_log(
    storage: Storage, monkeypatch: pytest.MonkeyPatch, opened: str, catch_up: str
) -> None:
    """Defect 1 of issue 11: A's snapshot predates every record B left in the log.

    A takes in B's commits either when it commits or earlier, polling (as idle subscriptions
    do); either way the pruned update must make A's stale attempt conflict and retry.
    """
    monkeypatch.setenv("CAPSULE_LOG_RETENTION", "0")
    monkeypatch.setattr(engine_module, "PRUNE_EVERY", 50)
    slow_started.clear()
    slow_release.clear()
    other = open_storage(storage.url)
    with TestApp(counter_app, storage=storage) as a:
        if opened == "non-empty":
            a.run(lambda ctx: ctx.db.insert("churn", {"n": -1}))
        with TestApp(counter_app, storage=other) as b:
            assert a.runtime.db.log_retention == b.runtime.db.log_retention == 0.0
            doc_id = b.run(lambda ctx: ctx.db.insert("counters", {"value": 0}))
            with ThreadPoolExecutor(1) as pool:
                slow = pool.submit(a.mutation, add_slowly, {"doc_id": doc_id, "amount": 100})
                assert slow_started.wait(60)
                b.mutation(add, {"doc_id": doc_id, "amount": 1})
                for n in range(60):  # enough batches for B to prune its update from the log
                    b.mutation(churn, {"n": n})
                with b.runtime.storage.begin_write() as w:
                    oldest = w.read_log(0)[0][0]
                assert oldest > a.runtime.db.latest_ts  # A never saw B's update in the log
                if catch_up == "by-polling":
                    a.runtime.db.poll_other_processes()
                slow_release.set()
                assert slow.result(timeout=60) == 101
            assert b.run(lambda ctx: ctx.db.get(doc_id)["value"]) == 101
        assert a.run(lambda ctx: ctx.db.get(doc_id)["value"]) == 101


def test_the_floor_never_goes_down_when_memory_is_pruned_after_a_gap(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gap raises the floor; pruning memory up to an older snapshot must not lower it again.

    A keeps its record at ``t2`` in memory for a snapshot taken there. B updates ``x`` and
    prunes that update from the storage log before A looks, so A's catch-up finds a gap and
    raises its floor above ``t2``. When A then prunes its memory up to ``t2`` (the oldest
    snapshot left), the floor must stay where the gap put it: were it lowered to ``t2``, the
    snapshot at ``t2`` would be validated against a log missing B's update, and A's write of
    ``x`` from that snapshot would silently undo it (the PostgreSQL anomaly of the
    serializability run).
    """
    monkeypatch.setattr(engine_module, "PRUNE_EVERY", 1)
    other = open_storage(storage.url)
    with TestApp(app, storage=storage) as a, TestApp(app, storage=other) as b:
        da, db = a.runtime.db, b.runtime.db
        da.log_retention = db.log_retention = 0.0
        space = da.space("")
        x = a.run(lambda ctx: ctx.db.insert("items", {"n": 0}))
        old = da.transaction()
        old.get(space, x)  # pins the memory log below t2 for now
        a.run(lambda ctx: ctx.db.insert("items", {"n": -1}))  # t2
        victim = da.transaction()
        victim.get(space, x)
        t2 = victim.snapshot_ts
        assert t2 is not None and t2 in da._log_ts
        b.run(lambda ctx: ctx.db.patch(x, {"n": 1}))
        b.run(lambda ctx: ctx.db.insert("items", {"n": -2}))  # B prunes its update away
        with b.runtime.storage.begin_write() as w:
            assert w.read_log(0)[0][0] > db.latest_ts - 1 > t2
        a.run(lambda ctx: ctx.db.insert("items", {"n": -3}))  # catch-up finds the gap
        assert da.log_gaps >= 1
        gap_floor = da._floor
        assert gap_floor > t2
        old.close()
        a.run(lambda ctx: ctx.db.insert("items", {"n": -4}))  # prunes memory up to t2
        assert t2 not in da._log_ts
        assert da._floor >= gap_floor, "pruning memory lowered the floor below the gap"
        victim.patch(space, x, {"n": 100})
        with pytest.raises(Conflict):
            da.commit(victim)
        victim.close()
        assert a.run(lambda ctx: ctx.db.get(x)["n"]) == 1


def test_log_retention_comes_from_the_setting_or_the_constructor(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CAPSULE_LOG_RETENTION", raising=False)
    assert Database(storage).log_retention == 60.0
    monkeypatch.setenv("CAPSULE_LOG_RETENTION", "2.5")
    assert Database(storage).log_retention == 2.5
    assert Database(storage, log_retention=7).log_retention == 7
    with pytest.raises(UserError, match="log_retention"):
        Database(storage, log_retention=-1)
    monkeypatch.setenv("CAPSULE_LOG_RETENTION", "-3")
    with pytest.raises(UserError, match="CAPSULE_LOG_RETENTION"):
        Database(storage)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.timeout(1200)  # 200k commits: about a minute on a busy machine, under coverage
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_memory_stays_flat_over_200k_mutations(tmp_path: Path) -> None:
    # The in-memory commit log keeps only what open snapshots need, not the retention
    # period's worth of write sets (about 2 KB a commit, 400 MB here): after warming up,
    # resident memory must not grow with the number of commits. SQLite's page cache is
    # kept small so that only the engine could grow.
    storage = SQLiteStorage(tmp_path / "flat.db", synchronous="OFF")
    db = Database(storage, log_retention=60.0)
    db.open({"": Schema(items=Table({"n": int}))})
    with storage._writer_lock:
        storage._writer().execute("PRAGMA cache_size=-2000")
    space = db.space("")
    try:
        baseline = 0
        for i in range(200_000):
            txn = db.transaction()
            txn.insert(space, "items", {"n": i})
            db.commit(txn)
            txn.close()
            if i == 20_000:
                gc.collect()
                baseline = _rss_bytes()
        gc.collect()
        grown = _rss_bytes() - baseline
        assert grown < 50 << 20, f"resident memory grew {grown >> 20} MB after the first 20k"
        assert len(db._log_ts) <= engine_module.LOG_SLACK
    finally:
        db.close()
