"""SQLiteStorage specifics: URLs, pragmas, and durability across ``kill -9``."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core import App, MutationCtx, QueryCtx, Schema, Table, UserError
from core.database.engine import Conflict
from core.storage import open_storage
from core.storage.sqlite import _TAKE_WRITE_LOCK, DEFAULT_WAL_WRAP_FRAMES, SQLiteStorage
from core.testing import TestApp

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("url", "path", "sync"),
    [
        ("sqlite:///rel/app.db", "rel/app.db", "FULL"),
        ("sqlite:////abs/app.db", "/abs/app.db", "FULL"),
        ("sqlite:///app.db?synchronous=NORMAL", "app.db", "NORMAL"),
        ("sqlite:///app.db?synchronous=normal", "app.db", "NORMAL"),
    ],
)
def test_urls_pick_the_file_and_the_durability(url: str, path: str, sync: str) -> None:
    storage = open_storage(url)
    assert isinstance(storage, SQLiteStorage)
    assert (storage.path, storage.synchronous) == (path, sync)
    assert storage.url == f"sqlite:///{path}?synchronous={sync}"


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///x.db?synchronous=SOMETIMES", "mysql://x"])
def test_bad_urls_are_user_errors(url: str) -> None:
    with pytest.raises(UserError):
        open_storage(url)


def test_connections_use_wal_and_the_chosen_synchronous_mode(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "x.db", synchronous="NORMAL")
    storage.open()
    try:
        snap = storage.begin_read()
        conn = snap._conn  # type: ignore[attr-defined]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        snap.close()
    finally:
        storage.close()
    assert SQLiteStorage(tmp_path / "y.db").synchronous == "FULL"  # durable by default


def test_snapshots_from_many_threads_share_the_file(tmp_path: Path) -> None:
    app = App(Schema(n=Table({"v": int})))
    with TestApp(app, storage=SQLiteStorage(tmp_path / "t.db", synchronous="NORMAL")) as t:
        doc = t.run(lambda ctx: ctx.db.insert("n", {"v": 1}))
        seen: list[int] = []
        threads = [
            threading.Thread(target=lambda: seen.append(t.run(lambda ctx: ctx.db.get(doc)["v"])))
            for _ in range(6)
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        assert seen == [1] * 6


def test_reopening_after_close_works(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "r.db")
    app = App(Schema(n=Table({"v": int})))
    with TestApp(app, storage=storage) as t:
        doc = t.run(lambda ctx: ctx.db.insert("n", {"v": 7}))
    with TestApp(app, storage=storage) as t:
        assert t.run(lambda ctx: ctx.db.get(doc))["v"] == 7
    assert storage.files_dir() == str(tmp_path / "r.db") + "-files"


WRITER = r"""
import sys
from core import App, MutationCtx, Schema, Table
from core.storage.sqlite import _TAKE_WRITE_LOCK, SQLiteStorage

app = App(Schema(acks=Table({"seq": int})), storage=SQLiteStorage(sys.argv[1]))


@app.mutation
def record(ctx: MutationCtx, seq: int) -> str:
    return ctx.db.insert("acks", {"seq": seq})


with app.sync_client(runtime=False) as client:
    seq = 0
    while True:
        doc_id = client.mutation(record, {"seq": seq})
        # The mutation returned to its caller: from here on it must survive anything.
        sys.stdout.write(f"{seq} {doc_id}\n")
        sys.stdout.flush()
        seq += 1
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_acknowledged_mutations_survive_kill_9(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    db_file = tmp_path / "durable.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(db_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    acknowledged: list[tuple[int, str]] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seq, doc_id = line.split()
            acknowledged.append((int(seq), doc_id))
            if len(acknowledged) >= 300:
                break
        assert len(acknowledged) >= 300, proc.stderr.read() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
        if proc.stdout is not None:
            acknowledged += [
                (int(s), d) for s, d in (ln.split() for ln in proc.stdout.read().splitlines())
            ]
            proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    # Reopen the file the killed process left (WAL and all) and find every acknowledged write.
    app = App(Schema(acks=Table({"seq": int})))
    with TestApp(app, storage=SQLiteStorage(db_file)) as t:
        docs = t.run(lambda ctx: {d["_id"]: d["seq"] for d in ctx.db.query("acks").collect()})
    missing = [(s, d) for s, d in acknowledged if docs.get(d) != s]
    assert not missing, f"{len(missing)} acknowledged mutation(s) lost, first {missing[0]}"
    assert sorted(docs.values()) == list(range(len(docs)))  # no gaps, nothing half-written
    raw = sqlite3.connect(db_file)
    try:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        raw.close()


def test_a_missing_folder_is_an_error_not_a_new_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = open_storage("sqlite:///nonexistent/dir/x.db")
    with pytest.raises(UserError) as info:
        storage.open()
    assert str(info.value) == (
        'Cannot open the SQLite database "nonexistent/dir/x.db": folder '
        f'"{tmp_path}/nonexistent/dir" does not exist; create it first (sqlite:///relative/x.db '
        "is relative to the working directory, sqlite:////absolute/x.db is absolute)."
    )
    assert not (tmp_path / "nonexistent").exists()
    absolute = open_storage(f"sqlite:///{tmp_path}/x.db")  # four slashes: absolute
    assert isinstance(absolute, SQLiteStorage) and absolute.path == f"{tmp_path}/x.db"


def test_a_postgres_url_without_the_driver_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an install without the extra sees
    monkeypatch.delitem(sys.modules, "core.storage.postgres", raising=False)
    with pytest.raises(UserError) as info:
        open_storage("postgresql://u@localhost/db")
    assert str(info.value) == (
        'PostgreSQL needs the "psycopg" driver, which is not installed: '
        'pip install "capsule[postgres]".'
    )


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")


@needs_proc
def test_a_thousand_short_lived_threads_leave_the_descriptors_bounded(tmp_path: Path) -> None:
    """Issue 11, defect 3: readers are pooled by the storage, bounded, and closed."""
    app = App(Schema(n=Table({"v": int})))
    storage = SQLiteStorage(tmp_path / "fds.db", synchronous="NORMAL", max_idle_readers=4)
    with TestApp(app, storage=storage) as t:
        doc = t.run(lambda ctx: ctx.db.insert("n", {"v": 1}))
        assert t.run(lambda ctx: ctx.db.get(doc)["v"]) == 1
        before = open_fds()
        seen: list[int] = []
        for _wave in range(20):  # 20 waves of 50 concurrent threads: 1,000 threads in all
            threads = [
                threading.Thread(
                    target=lambda: seen.append(t.run(lambda ctx: ctx.db.get(doc)["v"]))
                )
                for _ in range(50)
            ]
            for th in threads:
                th.start()
            for th in threads:
                th.join(30)
        assert seen == [1] * 1000
        assert storage.open_connections() <= 4 + 1  # the idle readers and the writer
        # Each SQLite connection in WAL mode holds a few descriptors (database, WAL); leave
        # room for descriptors other parts of the test process open meanwhile (pools,
        # servers of other modules). Without the pool, this test left about 2,000 open.
        assert open_fds() - before <= 4 * 3 + 48
    assert storage.open_connections() == 0
    assert open_fds() <= before + 48


def test_readers_beyond_the_bound_are_closed_and_close_closes_idle_ones(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "pool.db", max_idle_readers=2)
    storage.open()
    snaps = [storage.begin_read() for _ in range(5)]
    # The first borrows the idle writer connection (see ``test_snapshots_borrow_...``).
    assert storage.open_connections() == 5
    for snap in snaps:
        snap.close()
    assert storage.open_connections() == 2 + 1
    again = storage.begin_read()  # an idle reader is reused, not a new one opened
    assert storage.open_connections() == 2 + 1
    again.close()
    storage.close()
    assert storage.open_connections() == 0
    with pytest.raises(UserError, match="max_idle_readers"):
        SQLiteStorage(tmp_path / "bad.db", max_idle_readers=-1)


def test_snapshots_borrow_the_idle_writer_connection_and_commits_never_wait_for_them(
    tmp_path: Path,
) -> None:
    # The connection of the last commit is the only one whose page cache survived it, so a
    # snapshot borrows it when no commit is using it; a commit that finds it borrowed takes
    # another connection (never waits for a running handler), which becomes the warm one.
    storage = SQLiteStorage(tmp_path / "warm.db")
    app = App(Schema(items=Table({"n": int})))
    with TestApp(app, storage=storage) as t:
        db = t.runtime.db
        space = db.space("")
        doc = t.run(lambda ctx: ctx.db.insert("items", {"n": 1}))
        warm = storage._writer()
        txn = db.transaction()
        assert txn.get(space, doc)["n"] == 1
        assert txn.snapshot._conn is warm  # type: ignore[attr-defined]
        t.run(lambda ctx: ctx.db.patch(doc, {"n": 2}))  # commits while the snapshot holds it
        assert storage._writer() is not warm
        assert txn.get(space, doc)["n"] == 1  # the borrowed snapshot is still a snapshot
        txn.patch(space, doc, {"n": 10})
        with pytest.raises(Conflict):
            db.commit(txn)
        txn.close()
        assert warm in storage._idle  # handed back to the pool, no longer the warm one
        again = db.transaction()
        assert again.get(space, doc)["n"] == 2
        assert again.snapshot._conn is storage._writer()  # type: ignore[attr-defined]
        again.close()
        t.run(lambda ctx: ctx.db.patch(doc, {"n": 3}))
        assert t.run(lambda ctx: ctx.db.get(doc)["n"]) == 3
        # The background checkpointer never takes it.
        assert storage._take_reader(warm=False) is not storage._writer()


def test_a_borrowed_warm_connection_returned_while_a_commit_replaces_it_is_pooled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The snapshot holding the warm connection ends while a commit, finding it borrowed and
    # no idle connection, opens a new one: the returned connection goes to the pool, never
    # back as the warm one (it would then be neither warm nor pooled: open, and lost).
    storage = SQLiteStorage(tmp_path / "race.db")
    storage.open()
    old = storage._writer()
    snap = storage.begin_read()
    assert snap._conn is old  # type: ignore[attr-defined]
    connect = storage._connect

    def connect_while_the_snapshot_ends() -> sqlite3.Connection:
        snap.close()
        return connect()

    monkeypatch.setattr(storage, "_connect", connect_while_the_snapshot_ends)
    with storage.begin_write():
        pass
    monkeypatch.undo()
    assert storage._writer() is not old
    assert storage._idle == [old]
    assert storage.open_connections() == 2
    storage.close()


def test_a_read_modify_write_alone_commits_in_its_own_read_transaction(tmp_path: Path) -> None:
    # A mutation that commits while no other commit is in progress, its snapshot on the warm
    # connection, turns that read transaction into the write transaction: one BEGIN, one
    # COMMIT, as a hand-written SQLite read-modify-write.
    storage = SQLiteStorage(tmp_path / "rmw.db")
    app = App(Schema(items=Table({"n": int})))
    with TestApp(app, storage=storage) as t:
        doc = t.run(lambda ctx: ctx.db.insert("items", {"n": 1}))
        statements: list[str] = []
        storage._writer().set_trace_callback(statements.append)
        t.run(lambda ctx: ctx.db.patch(doc, {"n": ctx.db.get(doc)["n"] + 1}))
        storage._writer().set_trace_callback(None)
        assert [s.split()[0] for s in statements if s.split()[0] in ("BEGIN", "COMMIT")] == [
            "BEGIN",
            "COMMIT",
        ]
        assert "BEGIN IMMEDIATE" not in statements
        assert t.run(lambda ctx: ctx.db.get(doc)["n"]) == 2


def test_a_snapshot_another_process_committed_after_begins_the_commit_afresh(
    tmp_path: Path,
) -> None:
    # The other process's commit makes SQLite refuse the read transaction's write lock
    # (SQLITE_BUSY_SNAPSHOT): the commit step begins afresh, sees that commit, and a
    # transaction that read what it changed conflicts; one that did not commits.
    app = App(Schema(items=Table({"n": int})))
    with (
        TestApp(app, storage=SQLiteStorage(tmp_path / "two.db")) as one,
        TestApp(app, storage=SQLiteStorage(tmp_path / "two.db")) as two,
    ):
        db = one.runtime.db
        space = db.space("")
        a = one.run(lambda ctx: ctx.db.insert("items", {"n": 1}))
        b = one.run(lambda ctx: ctx.db.insert("items", {"n": 1}))
        txn = db.transaction()
        txn.patch(space, a, {"n": txn.get(space, a)["n"] + 10})
        two.run(lambda ctx: ctx.db.patch(a, {"n": 5}))
        with pytest.raises(Conflict):
            db.commit(txn)
        txn.close()
        txn = db.transaction()
        txn.patch(space, b, {"n": txn.get(space, b)["n"] + 10})
        two.run(lambda ctx: ctx.db.patch(a, {"n": 6}))
        statements: list[str] = []
        warm = one.runtime.db.storage._writer()  # type: ignore[attr-defined]
        warm.set_trace_callback(statements.append)
        db.commit(txn)
        warm.set_trace_callback(None)
        txn.close()
        # The write lock was asked for in the read transaction, refused, and taken afresh.
        taken = [s for s in statements if s == _TAKE_WRITE_LOCK or s == "BEGIN IMMEDIATE"]
        assert taken == [_TAKE_WRITE_LOCK, "BEGIN IMMEDIATE"]
        assert one.run(lambda ctx: (ctx.db.get(a)["n"], ctx.db.get(b)["n"])) == (6, 11)
        assert two.run(lambda ctx: (ctx.db.get(a)["n"], ctx.db.get(b)["n"])) == (6, 11)


def test_checkpoints_run_off_the_commit_path_and_the_wal_stays_bounded(tmp_path: Path) -> None:
    """Issue 19: under an insert storm the WAL restarts instead of growing without bound.

    A background checkpoint alone never lets it restart (the writer keeps appending while it
    copies); the writer finishes one between commits once the WAL passes its bound. Small
    bounds make the storm short: 3,000 commits of about six frames each would otherwise
    leave a WAL of some 18,000 frames (about 74 MB).
    """
    frames = 200
    storage = SQLiteStorage(
        tmp_path / "storm.db", synchronous="OFF", checkpoint_every=16, wal_wrap_frames=frames
    )
    app = App(Schema(items=Table({"n": int, "text": str}).index("by_n", ["n"])))
    wal = storage.path + "-wal"
    largest = 0
    with TestApp(app, storage=storage) as t:
        db = t.runtime.db
        space = db.space("")
        writer = storage._writer()
        assert writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        for i in range(3000):
            txn = db.transaction()
            txn.insert(space, "items", {"n": i % 100, "text": "x" * 100})
            db.commit(txn)
            txn.close()
            if i % 10 == 0:
                largest = max(largest, os.path.getsize(wal))
        assert storage.checkpoints > 0
        assert storage.wal_restarts > 0
        assert t.run(lambda ctx: len(ctx.db.query("items").collect())) == 3000
    # Four times the bound before the writer steps in regardless, plus the commits between
    # two checks: far below the unbounded 74 MB.
    assert largest <= 8 * frames * 4120
    assert storage._checkpointer is None  # close stopped the background thread


STORM_SECONDS = 60.0


@pytest.mark.timeout(300)
def test_a_sixty_second_insert_storm_keeps_the_wal_within_its_bound(tmp_path: Path) -> None:
    """Issue 19: insert mutations for a whole minute, default settings, one client.

    Without the writer finishing checkpoints between commits the WAL never restarts under a
    steady load (it grew to about 2 GB in a minute when measured); with it, it stays within
    four times ``wal_wrap_frames`` (where the writer steps in regardless), plus the commits
    between two samples.
    """
    storage = SQLiteStorage(tmp_path / "storm.db", synchronous="NORMAL")
    schema = Schema(items=Table({"n": int, "text": str}).index("by_n", ["n"]))
    app = App(schema, storage=storage)

    @app.mutation
    def add(ctx: MutationCtx, n: int) -> str:
        return ctx.db.insert("items", {"n": n, "text": "buy milk and bread"})

    @app.query
    def number(ctx: QueryCtx, id: str) -> int:
        return int(ctx.db.get(id)["n"])

    wal = Path(storage.path + "-wal")
    largest = n = 0
    with app.sync_client(runtime=False) as client:
        deadline = time.monotonic() + STORM_SECONDS
        while time.monotonic() < deadline:
            for _ in range(100):
                last = client.mutation(add, {"n": n % 100})
                n += 1
            largest = max(largest, wal.stat().st_size if wal.exists() else 0)
        assert client.query(number, {"id": last}) == (n - 1) % 100
        assert storage.wal_restarts > 0
    frame = 4096 + 24
    assert largest <= (4 * DEFAULT_WAL_WRAP_FRAMES + 100 * 8) * frame
    with sqlite3.connect(storage.path) as conn:
        assert conn.execute("SELECT count(*) FROM documents").fetchone()[0] >= n


def test_checkpoint_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="checkpoint_every"):
        SQLiteStorage(tmp_path / "x.db", checkpoint_every=0)
    with pytest.raises(UserError, match="wal_wrap_frames"):
        SQLiteStorage(tmp_path / "x.db", wal_wrap_frames=0)
