"""Today's commit layout and a log-structured one, replayed in raw ``sqlite3``, beside raw inserts.

Run ``python bench/logstructured.py`` (about a minute). It first records the storage statements
of real insert mutations (``bench/core.py``'s table with one secondary index, and without it),
then replays them on a copy of the database file with no engine at all, so the figures bound
what each layout can reach:

* raw: ``BEGIN IMMEDIATE; INSERT document; COMMIT`` (the baseline of ``bench/core.py``);
* today: exactly the recorded statements of each commit (the document, its index entries, the
  guarded commit-log record), each commit in its own write transaction;
* log-structured: one append per commit to the commit log (the record carrying the document,
  its entries and the write set); every ``--apply-every`` commits, one transaction runs the
  recorded document and entry statements of the whole batch.

It also measures the Python side of the same mutation (``bench/core.py``'s null commit step)
and prints, for each layout, the projected mutation: the Python side plus the replayed
statements, as a ratio to raw. The log-structured projection leaves out what it would add in
Python (readers overlaying the records not yet applied, and the applier decoding them); see
``bench/README.md`` for the design and its failure modes.
"""

# ruff: noqa: T201
from __future__ import annotations

import argparse
import contextlib
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.core import (  # noqa: E402
    DOC,
    INDEXED,
    PLAIN,
    best_of,
    insert_task,
    python_side,
    raw_insert_step,
    raw_setup,
    timed,
)
from core import App, Schema, SQLiteStorage  # noqa: E402
from core.storage.sqlite import _TAKE_WRITE_LOCK  # noqa: E402

Statement = tuple[str, Any]
Commit = list[Statement]
PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-32000", "wal_autocheckpoint=0")


@contextlib.contextmanager
def recording(commits: list[Commit]) -> Iterator[None]:
    """Record the data statements of every write transaction the storage runs meanwhile."""
    current: list[Commit] = []

    class Recorder(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if sql.startswith(("BEGIN IMMEDIATE", _TAKE_WRITE_LOCK)):
                current[:] = [[]]
            elif sql == "COMMIT" and current:
                commits.append(current.pop())
            elif current and sql.startswith(("INSERT", "DELETE")):
                current[0].append((sql, args[0] if args else ()))
            return super().execute(sql, *args)

    connect = sqlite3.connect

    def recorded(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        return connect(*args, factory=Recorder, **kwargs)

    # The storage opens its connections with ``sqlite3.connect``: hand it recording ones.
    setattr(sqlite3, "connect", recorded)  # noqa: B010
    try:
        yield
    finally:
        setattr(sqlite3, "connect", connect)  # noqa: B010


def record(folder: Path, schema: Schema, name: str, n: int) -> tuple[Path, list[Commit]]:
    """The database file as a run of the app leaves it, and the next ``n`` insert commits.

    The commits are recorded in a second run on the same file, so replaying them on a copy
    of the file as the first run left it repeats them exactly (each guarded commit-log record
    finds the newest record it presumes).
    """
    path = folder / f"record-{name}.db"
    first = App(schema, storage=SQLiteStorage(path, synchronous="NORMAL"))
    with first.sync_client(runtime=False) as client:
        client.mutation(first.mutation(insert_task), DOC)
    start = folder / f"start-{name}.db"
    shutil.copy(path, start)
    commits: list[Commit] = []
    app = App(schema, storage=SQLiteStorage(path, synchronous="NORMAL"))
    add = app.mutation(insert_task)
    with recording(commits), app.sync_client(runtime=False) as client:
        for i in range(n):
            client.mutation(add, {**DOC, "priority": i % 100})
    return start, [c for c in commits if c]


def fresh(start: Path, folder: Path, name: str) -> sqlite3.Connection:
    """A connection to a fresh copy of ``start`` with the engine's pragmas."""
    path = folder / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copy(start, path)
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in PRAGMAS:
        conn.execute(f"PRAGMA {pragma}")
    return conn


def run_commits(conn: sqlite3.Connection, commits: list[Commit]) -> None:
    """Each recorded commit in its own write transaction (a checkpoint every 256, as ours)."""
    for n, commit in enumerate(commits):
        conn.execute("BEGIN IMMEDIATE")
        for sql, params in commit:
            conn.execute(sql, params)
        conn.execute("COMMIT")
        if n % 256 == 255:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def run_log_structured(conn: sqlite3.Connection, commits: list[Commit], every: int) -> None:
    """One append per commit; the batch's document and entry statements every ``every``.

    The appended record holds the commit's parameters (the document, its entries and the
    commit-log record) and the number of each statement, not its text.
    """
    texts = sorted({sql for commit in commits for sql, _ in commit})
    number = {sql: k for k, sql in enumerate(texts)}
    records = [
        msgpack.packb([[number[sql], list(params)] for sql, params in commit]) for commit in commits
    ]
    unpack = msgpack.unpackb
    pending: list[bytes] = []
    for n, record in enumerate(records):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO commits(data) VALUES (?)", (record,))  # an append
        conn.execute("COMMIT")
        pending.append(record)
        if len(pending) == every:
            conn.execute("BEGIN IMMEDIATE")
            for data in pending:
                for k, params in unpack(data):
                    sql = texts[k]
                    if not sql.startswith("INSERT INTO commits"):
                        conn.execute(sql, params)
            conn.execute("COMMIT")
            pending.clear()
        if n % 256 == 255:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def rate(run: Callable[[], None], n: int) -> float:
    """Commits per second of one run."""
    start = time.perf_counter()
    run()
    return n / (time.perf_counter() - start)


def compare(folder: Path, schema: Schema, name: str, args: argparse.Namespace) -> None:
    """Record, replay both layouts beside raw, measure the Python side; print the table."""
    start, commits = record(folder, schema, name, args.commits)
    n = len(commits)
    log_records = sum(1 for c in commits for sql, _ in c if sql.startswith("INSERT INTO commits"))
    raw_conn = raw_setup(folder / f"raw-{name}.db", "NORMAL")
    raw_step = raw_insert_step(raw_conn)
    rounds = 0

    def today() -> float:
        nonlocal rounds
        rounds += 1
        conn = fresh(start, folder, f"today-{name}-{rounds}")
        try:
            before = conn.execute("SELECT count(*) FROM commits").fetchone()[0]
            result = rate(lambda: run_commits(conn, commits), n)
            after = conn.execute("SELECT count(*) FROM commits").fetchone()[0]
            if after - before < log_records * 0.99:  # a few records are pruned on the way
                raise RuntimeError("the replayed commits did not write their log records")
            return result
        finally:
            conn.close()

    def log() -> float:
        nonlocal rounds
        rounds += 1
        conn = fresh(start, folder, f"log-{name}-{rounds}")
        try:
            return rate(lambda: run_log_structured(conn, commits, args.apply_every), n)
        finally:
            conn.close()

    raw, now, logged = best_of(args.rounds, lambda: timed(args.seconds, raw_step), today, log)
    raw_conn.close()
    side = python_side(folder, args.seconds, args.rounds, schema, name)
    per = {
        "raw insert transaction (as our storage)": 1 / raw,
        "today's statements, replayed": 1 / now,
        f"log-structured, applied every {args.apply_every}": 1 / logged,
    }
    print(f"{name}: {n:,} recorded commits; Python side of the mutation {1e6 / side:.1f} µs")
    print(f"{'':<40} {'statements':>12} {'ratio':>7} {'projected mutation':>20} {'ratio':>7}")
    for label, seconds in per.items():
        projected = seconds + 1 / side
        print(
            f"{label:<40} {seconds * 1e6:>9.1f} µs {(1 / raw) / seconds:>6.2f}x "
            f"{projected * 1e6:>17.1f} µs {(1 / raw) / projected:>6.2f}x"
        )


def main() -> None:
    """Print both tables (a secondary index, and none)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--commits", type=int, default=20_000, help="insert commits recorded")
    parser.add_argument("--seconds", type=float, default=1.2, help="raw and Python rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--apply-every", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="capsule-bench-") as tmp:
        for schema, name in ((INDEXED, "secondary index"), (PLAIN, "no secondary index")):
            compare(Path(tmp), schema, name.replace(" ", "-"), args)


if __name__ == "__main__":
    main()
