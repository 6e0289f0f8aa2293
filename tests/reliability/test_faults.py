"""Fault injection on the commit path: the state is before or after a transaction, never between.

``FaultyStorage`` fails each point of the commit path in turn (``COMMIT_POINTS``), raising in
this process or killing a child process with SIGKILL there; then the database is reopened and
must read exactly as before the transaction or exactly as after it, through every index, and
the integrity checker must agree. Then: SQLite's disk full (the real ``SQLITE_FULL``, from a
page limit) and a PostgreSQL connection terminated mid-commit, which the same runtime retries
on a fresh connection (``test_pg_restart.py`` restarts a whole server).
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from core.integrity import check_closed_storage, format_report
from core.storage import open_storage
from core.storage.base import Storage
from core.storage.sqlite import SQLiteStorage
from core.testing import FaultyStorage, TestApp
from core.testing.faults import COMMIT_POINTS

APP = Path(__file__).with_name("fault_app.py")
ROOT = Path(__file__).parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fault_app", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fa = _load()
BEFORE = {"balances": [100, 100, 100], "receipts": [], "found": [], "count": 0}
AFTER = {
    "balances": [90, 110, 100],
    "receipts": ["receipt one"],
    "found": ["receipt one"],
    "count": 1,
}
ONE = {"src": 0, "dst": 1, "amount": 10, "note": "receipt one"}


def _reopened_state(url: str) -> dict[str, Any]:
    storage = open_storage(url)
    with TestApp(fa.app, storage=storage) as t:
        value = dict(t.query(fa.state))
    report = check_closed_storage(open_storage(url))
    assert report.ok, "\n".join(format_report(report))
    return value


def _setup(url: str) -> None:
    with TestApp(fa.app, storage=open_storage(url)) as t:
        t.mutation(fa.setup, {})


@pytest.mark.parametrize("point", COMMIT_POINTS)
def test_a_raised_fault_leaves_before_or_after(storage: Storage, point: str, soak: Any) -> None:
    _setup(storage.url)
    faulty = FaultyStorage(open_storage(storage.url))
    with TestApp(fa.app, storage=faulty) as t:
        faulty.fail_at(point)
        with pytest.raises(OSError, match="injected storage fault"):
            t.mutation(fa.transfer, ONE)
        assert faulty.faults == 1
        seen = t.query(fa.state)
        assert seen == (AFTER if point == "committed" else BEFORE)
        # The runtime goes on: the next transfer commits on top of whatever is there.
        t.mutation(fa.transfer, {**ONE, "note": "receipt two"})
    state = _reopened_state(storage.url)
    assert state["count"] == (2 if point == "committed" else 1)
    soak.record(faults=faulty.faults, anomalies=0)


@pytest.mark.parametrize("point", COMMIT_POINTS)
def test_a_kill_at_each_point_leaves_before_or_after(
    storage: Storage, point: str, soak: Any
) -> None:
    _setup(storage.url)
    done = subprocess.run(
        [sys.executable, str(APP), storage.url, point],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == -9, done.stdout + done.stderr  # killed at the point
    state = _reopened_state(storage.url)
    # Before the storage commit nothing is kept; after it, everything.
    assert state == (AFTER if point == "committed" else BEFORE)
    soak.record(faults=1, anomalies=0)


def test_an_unknown_point_is_refused(tmp_path: Path) -> None:
    from core.errors import UserError

    faulty = FaultyStorage(SQLiteStorage(tmp_path / "x.db"))
    with pytest.raises(UserError, match="not a commit point"):
        faulty.fail_at("fsync-ish")


def test_simulated_disk_full_applies_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/full.db"
    _setup(url)
    faulty = FaultyStorage(open_storage(url))
    full = sqlite3.OperationalError("database or disk is full")
    with TestApp(fa.app, storage=faulty) as t:
        faulty.fail_at("apply", error=full)
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            t.mutation(fa.transfer, ONE)
        assert t.query(fa.state) == BEFORE
        t.mutation(fa.transfer, ONE)
    assert _reopened_state(url) == AFTER


def test_real_sqlite_full_applies_nothing_and_recovers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/full.db"
    _setup(url)
    storage = SQLiteStorage(tmp_path / "full.db")
    with TestApp(fa.app, storage=storage) as t:
        with storage._writer_lock:
            writer = storage._writer()
            pages = writer.execute("PRAGMA page_count").fetchone()[0]
            writer.execute(f"PRAGMA max_page_count={pages + 2}")
        big = {**ONE, "note": "receipt " + "x" * 200_000}
        with pytest.raises(sqlite3.OperationalError, match="full"):
            t.mutation(fa.transfer, big)
        assert t.query(fa.state) == BEFORE
        with storage._writer_lock:
            storage._writer().execute("PRAGMA max_page_count=1073741823")
        t.mutation(fa.transfer, ONE)
        assert t.query(fa.state) == AFTER
    assert _reopened_state(url) == AFTER


@pytest.mark.parametrize("point", ["apply", "commit"])
def test_postgres_connection_dropped_mid_commit(storage: Storage, point: str) -> None:
    if isinstance(storage, SQLiteStorage):
        pytest.skip("a PostgreSQL connection")
    import psycopg

    _setup(storage.url)
    faulty = FaultyStorage(open_storage(storage.url))

    def drop(session: Any) -> None:
        pid = session._conn.info.backend_pid
        with psycopg.connect(storage.url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    with TestApp(fa.app, storage=faulty) as t:
        faulty.fail_at(point, hook=drop)
        # Lost before COMMIT (at "commit" the storage asks the server whether the COMMIT
        # happened, and it did not): retried transparently on a fresh connection, once.
        t.mutation(fa.transfer, ONE)
        assert faulty.faults == 1
        assert t.query(fa.state) == AFTER
    assert _reopened_state(storage.url) == AFTER


def test_postgres_reply_to_commit_lost_after_it_committed(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The COMMIT happened but its reply never came: the storage asks, and it is not re-run."""
    if isinstance(storage, SQLiteStorage):
        pytest.skip("a PostgreSQL connection")
    import psycopg

    from core.storage.postgres import PostgresStorage

    _setup(storage.url)
    pg = open_storage(storage.url)
    assert isinstance(pg, PostgresStorage)
    end = pg._end
    lost: list[bool] = []

    def end_then_lose(conn: Any, *, commit: bool, wrote: bool = False) -> None:
        end(conn, commit=commit, wrote=wrote)
        if commit and wrote and not lost:
            lost.append(True)
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(pg, "_end", end_then_lose)
    with TestApp(fa.app, storage=pg) as t:
        t.mutation(fa.transfer, ONE)
        assert lost == [True]
        assert t.query(fa.state) == AFTER  # applied once, acknowledged
    assert _reopened_state(storage.url) == AFTER
