"""Core engine benchmark: our mutations and queries beside raw ``sqlite3`` in the same run.

Run ``python bench/core.py`` (under a minute). Every figure is measured on a fresh database file
in a temporary folder, with the pragmas the engine uses (WAL, the given ``synchronous``,
``cache_size``), beside raw ``sqlite3`` doing the nearest equivalent work:

* single-client insert mutations/s through the sync client (WAL+NORMAL and WAL+FULL) against
  raw ``BEGIN IMMEDIATE; INSERT; COMMIT`` of the same document (its serialized body under a
  fresh id of the engine's format, the key of a ``WITHOUT ROWID`` table) on one connection; the
  first comparison also shows raw appends to a plain rowid table, SQLite's cheapest insert.
  Ours validates the document against its schema, encodes its index keys, and commits the
  document, one entry per secondary index (the built-in creation-time order is the id order
  of the documents table: no entry) and a commit-log record: two or three B-tree pages per
  commit where raw writes one;
* the same insert mutations with the commit's storage step made a no-op
  (``NullCommitStorage``): what they cost outside it, and so what the step itself costs;
* point-read queries/s (``ctx.db.get``) against raw ``SELECT data FROM docs WHERE id = ?``;
* insert mutations/s from 8 threads sharing one sync client in WAL+FULL against raw
  one-commit-per-transaction inserts, from one connection and from 8 threads (one connection
  each): group commit is what lets us beat them.

Each comparison alternates rounds of raw and ours and keeps each side's best round, so a burst
of load from elsewhere on the machine does not decide the ratio.
"""

# ruff: noqa: T201

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# ``core`` package: put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from core import App, FunctionRef, MutationCtx, QueryCtx, Schema, SQLiteStorage, Table  # noqa: E402
from core.encoding import dump_document  # noqa: E402
from core.ids import new_id  # noqa: E402
from core.storage.base import (  # noqa: E402
    CatalogIndex,
    CatalogTable,
    CommitBatchItem,
    Snapshot,
    WriteSession,
    WriteSessionContext,
)

DOC = {"text": "buy milk and bread", "priority": 3, "done": False}
THREADS = 8
Ref = FunctionRef[Any, Any]

SHAPE = {"text": str, "priority": int, "done": bool}
INDEXED = Schema(tasks=Table(SHAPE).index("by_priority", ["priority"]))
"""A table with one secondary index (the common case)."""
PLAIN = Schema(tasks=Table(SHAPE))
"""The same table with only the built-in creation-time order."""


def insert_task(ctx: MutationCtx, text: str, priority: int, done: bool) -> str:
    """The insert mutation every figure uses."""
    return ctx.db.insert("tasks", {"text": text, "priority": priority, "done": done})


def get_task(ctx: QueryCtx, id: str) -> dict[str, Any] | None:
    """The point-read query."""
    return ctx.db.get(id)


def make_app(path: Path, synchronous: str, schema: Schema = INDEXED) -> tuple[App, Ref, Ref]:
    """A fresh app on its own file, with the insert mutation and the point-read query."""
    app = App(schema, storage=SQLiteStorage(path, synchronous=synchronous))
    return app, app.mutation(insert_task), app.query(get_task)


def timed(seconds: float, step: Callable[[int], Any]) -> float:
    """Call ``step(i)`` for ``seconds``; return calls per second."""
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            step(n)
            n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def threaded(seconds: float, threads: int, make_step: Callable[[], Callable[[int], Any]]) -> float:
    """Run ``threads`` workers for ``seconds``; return total calls per second."""
    counts = [0] * threads
    barrier = threading.Barrier(threads + 1)
    stop = threading.Event()

    def worker(k: int) -> None:
        step = make_step()
        barrier.wait()
        n = 0
        while not stop.is_set():
            step(n)
            n += 1
        counts[k] = n

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - start)


def best_of(rounds: int, *sides: Callable[[], float]) -> list[float]:
    """Run the sides in turn ``rounds`` times; the best rate of each."""
    best = [0.0] * len(sides)
    for _ in range(rounds):
        for i, side in enumerate(sides):
            best[i] = max(best[i], side())
    return best


# -- raw sqlite3 ---------------------------------------------------------------------------------


def raw_connect(path: Path, synchronous: str) -> sqlite3.Connection:
    """A connection with the engine's pragmas."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA cache_size=-32000")
    return conn


def raw_setup(path: Path, synchronous: str) -> sqlite3.Connection:
    """A fresh raw database: documents by id, and a rowid table."""
    conn = raw_connect(path, synchronous)
    conn.execute("CREATE TABLE docs(id TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID")
    conn.execute("CREATE TABLE rows(id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    return conn


def raw_insert_step(conn: sqlite3.Connection) -> Callable[[int], Any]:
    """One transaction per document insert, as a mutation commits one."""
    blob = dump_document(DOC)

    def step(i: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO docs(id, data) VALUES (?, ?)", (new_id(1, time.time()), blob))
        conn.execute("COMMIT")

    return step


def raw_append_step(conn: sqlite3.Connection) -> Callable[[int], Any]:
    """One transaction per append to a rowid table: the cheapest insert SQLite has."""
    blob = dump_document(DOC)

    def step(i: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO rows(data) VALUES (?)", (blob,))
        conn.execute("COMMIT")

    return step


# -- measurements --------------------------------------------------------------------------------


def single_inserts(
    folder: Path, synchronous: str, seconds: float, rounds: int, schema: Schema, name: str
) -> list[float]:
    """Insert mutations/s from one client, and raw inserts/s."""
    raw = raw_setup(folder / f"raw-{name}.db", synchronous)
    raw_step, append_step = raw_insert_step(raw), raw_append_step(raw)
    app, add, _ = make_app(folder / f"ours-{name}.db", synchronous, schema)
    with app.sync_client(runtime=False) as client:
        result = best_of(
            rounds,
            lambda: timed(seconds, lambda i: client.mutation(add, {**DOC, "priority": i % 100})),
            lambda: timed(seconds, raw_step),
            lambda: timed(seconds, append_step),
        )
    raw.close()
    return result


class _NullSession(WriteSession):
    """A commit step that runs no statement: it only remembers the newest timestamp."""

    def __init__(self, storage: NullCommitStorage):
        self.storage = storage

    def latest_ts(self) -> int:
        return self.storage.null_ts

    def presume_latest(self, ts: int) -> bool:
        return True

    def read_log(self, after_ts: int) -> list[tuple[int, bytes]]:
        return []

    def snapshot(self) -> Snapshot:
        raise NotImplementedError("the null commit step has no snapshot")

    def apply(self, items: Sequence[CommitBatchItem]) -> None:
        self.storage.null_ts = items[-1].ts

    def put_catalog(
        self, tables: Sequence[CatalogTable], indexes: Sequence[CatalogIndex], drop: Sequence[int]
    ) -> None:
        raise NotImplementedError("the null commit step changes no catalog")

    def prune_log(self, before_ts: int) -> None:
        pass


class _NullWrite(WriteSessionContext):
    def __init__(self, storage: NullCommitStorage):
        self.storage = storage

    def __enter__(self) -> WriteSession:
        return _NullSession(self.storage)

    def __exit__(self, *exc: Any) -> None:
        pass


class NullCommitStorage(SQLiteStorage):
    """SQLite storage whose commit step, once ``null`` is set, runs no statement at all.

    What an insert mutation then costs is everything but the storage statements: argument
    and document validation, ids, keys, the transaction, group-commit bookkeeping, the
    executor and the client.
    """

    null = False
    null_ts = 0

    def begin_write(self, *, timeout: float | None = None) -> WriteSessionContext:
        """The null commit step once ``null`` is set."""
        return _NullWrite(self) if self.null else super().begin_write(timeout=timeout)

    def begin_write_from(self, snapshot: Snapshot) -> WriteSessionContext | None:
        """Never continues a snapshot once ``null`` is set."""
        return None if self.null else super().begin_write_from(snapshot)

    def begin_read(self) -> Snapshot:
        """A real snapshot, stamped as of the null step's newest commit once ``null`` is set.

        Its reads see what was stored before (the null step stores nothing), and validation
        finds no newer commit, so read-modify-write mutations measure without conflicts.
        """
        snap = super().begin_read()
        if self.null:
            snap.ts = max(snap.ts, self.null_ts)
        return snap


def python_side(folder: Path, seconds: float, rounds: int, schema: Schema, name: str) -> float:
    """Insert mutations/s with the storage statements made no-ops (see ``NullCommitStorage``)."""
    storage = NullCommitStorage(folder / f"null-{name}.db", synchronous="NORMAL")
    app = App(schema, storage=storage)
    add = app.mutation(insert_task)
    with app.sync_client(runtime=False) as client:
        client.mutation(add, DOC)  # the tables exist: from here no commit writes anything
        storage.null = True
        storage.null_ts = client.runtime.db.latest_ts
        (rate,) = best_of(
            rounds,
            lambda: timed(seconds, lambda i: client.mutation(add, {**DOC, "priority": i % 100})),
        )
    return rate


LONG_TEXT = "x" * 100_000
"""With ``point_reads(long=True)``, every fifth document holds this text (100 KB)."""


def point_reads(folder: Path, seconds: float, rounds: int, long: bool = False) -> list[float]:
    """Point-read queries/s of 1,000 small documents, and raw point reads/s.

    With ``long``, a long document (100 KB, as a call log's batch or a file chunk) follows
    every fifth small one in the same table: SQLite stores a long row in overflow pages, and a
    key comparison against a row stored that way reads the row whole.
    """
    name = "reads-long" if long else "reads"
    raw = raw_setup(folder / f"raw-{name}.db", "NORMAL")
    step = raw_insert_step(raw)
    long_blob = dump_document({**DOC, "text": LONG_TEXT})
    for i in range(1000):
        step(i)
        if long and i % 5 == 4:
            raw.execute(
                "INSERT INTO docs(id, data) VALUES (?, ?)", (new_id(1, time.time()), long_blob)
            )
    raw_ids = [r[0] for r in raw.execute("SELECT id FROM docs WHERE length(data) < 1000")]
    app, add, get = make_app(folder / f"ours-{name}.db", "NORMAL")
    with app.sync_client(runtime=False) as client:
        ids = []
        for i in range(1000):
            ids.append(client.mutation(add, DOC))
            if long and i % 5 == 4:
                client.mutation(add, {**DOC, "text": LONG_TEXT})

        def raw_read(i: int) -> Any:
            return raw.execute(
                "SELECT data FROM docs WHERE id = ?", (raw_ids[i % 1000],)
            ).fetchone()

        result = best_of(
            rounds,
            lambda: timed(seconds, lambda i: client.query(get, {"id": ids[i % 1000]})),
            lambda: timed(seconds, raw_read),
        )
    raw.close()
    return result


def concurrent_inserts(folder: Path, seconds: float, rounds: int) -> tuple[list[float], float]:
    """Ours from 8 threads, raw from 1 connection and from 8; and commits per storage commit."""
    raw = raw_setup(folder / "raw-8.db", "FULL")
    raw_step = raw_insert_step(raw)
    app, add, _ = make_app(folder / "ours-8.db", "FULL")
    with app.sync_client(runtime=False) as client:
        db = client.runtime.db
        before = (db.commit_count, db.batch_count)

        def make_step() -> Callable[[int], Any]:
            return lambda i: client.mutation(add, {**DOC, "priority": i % 100})

        rates = best_of(
            rounds,
            lambda: threaded(seconds, THREADS, make_step),
            lambda: timed(seconds, raw_step),
            lambda: threaded(
                seconds, THREADS, lambda: raw_insert_step(raw_connect(folder / "raw-8.db", "FULL"))
            ),
        )
        commits, batches = db.commit_count - before[0], db.batch_count - before[1]
    raw.close()
    return rates, commits / max(batches, 1)


def _frames(path: Path) -> int:
    wal = Path(str(path) + "-wal")
    return (wal.stat().st_size - 32) // (4096 + 24) if wal.exists() else 0


def per_commit(folder: Path, schema: Schema, name: str, n: int = 500) -> tuple[float, float]:
    """Statements and WAL frames per insert commit (no checkpoint runs while counting)."""
    path = folder / f"count-{name}.db"
    storage = SQLiteStorage(path, synchronous="NORMAL", checkpoint_every=10**9)
    app = App(schema, storage=storage)
    add = app.mutation(insert_task)
    statements = 0

    def count(_sql: str) -> None:
        nonlocal statements
        statements += 1

    with app.sync_client(runtime=False) as client:
        client.mutation(add, DOC)
        with storage._writer_lock:
            writer = storage._writer()
            writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        writer.set_trace_callback(count)
        for i in range(n):
            client.mutation(add, {**DOC, "priority": i % 100})
        writer.set_trace_callback(None)
        frames = _frames(path)
    return statements / n, frames / n


def raw_per_commit(folder: Path, n: int = 500) -> tuple[float, float]:
    """The same counts for raw sqlite3's insert transaction."""
    path = folder / "count-raw.db"
    conn = raw_setup(path, "NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    step = raw_insert_step(conn)
    step(0)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    statements = 0

    def count(_sql: str) -> None:
        nonlocal statements
        statements += 1

    conn.set_trace_callback(count)
    for i in range(n):
        step(i)
    conn.set_trace_callback(None)
    frames = _frames(path)
    conn.close()
    return statements / n, frames / n


def wal_storm(folder: Path, seconds: float) -> tuple[int, float, int, int]:
    """Insert mutations for ``seconds``: (mutations, largest WAL in MB, checkpoints, restarts)."""
    path = folder / "storm.db"
    storage = SQLiteStorage(path, synchronous="NORMAL")
    app = App(INDEXED, storage=storage)
    add = app.mutation(insert_task)
    wal = Path(str(path) + "-wal")
    largest = 0
    n = 0
    with app.sync_client(runtime=False) as client:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            for _ in range(100):
                client.mutation(add, {**DOC, "priority": n % 100})
                n += 1
            largest = max(largest, wal.stat().st_size if wal.exists() else 0)
    return n, largest / 1e6, storage.checkpoints, storage.wal_restarts


def row(label: str, ours: float, raw: float, raw_label: str = "raw sqlite3") -> None:
    """One printed comparison."""
    print(f"{label:<46} {ours:>8,.0f}/s   {raw_label} {raw:>8,.0f}/s   ratio {ours / raw:5.2f}x")


def split(ours: float, side: float, raw: float) -> None:
    """Where a mutation's time goes: outside the commit's storage step, and in it."""
    print(
        f"{'  of which outside the storage step':<46} {1e6 / side:>6,.1f} µs; "
        f"storage step {1e6 / ours - 1e6 / side:,.1f} µs; raw's whole insert {1e6 / raw:,.1f} µs"
    )


def main() -> None:
    """Run every comparison and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.2, help="per round and side")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per comparison")
    parser.add_argument(
        "--storm", type=float, default=0.0, help="only an insert storm of this many seconds"
    )
    args = parser.parse_args()
    s, r = args.seconds, args.rounds
    with tempfile.TemporaryDirectory(prefix="capsule-bench-") as tmp:
        folder = Path(tmp)
        if args.storm:
            n, largest, checkpoints, restarts = wal_storm(folder, args.storm)
            print(
                f"insert storm {args.storm:g} s: {n:,} mutations, largest WAL {largest:.1f} MB, "
                f"{checkpoints} checkpoints, {restarts} WAL restarts"
            )
            return
        for label, counts in (
            ("raw sqlite3 insert", raw_per_commit(folder)),
            ("ours, secondary index", per_commit(folder, INDEXED, "indexed")),
            ("ours, no secondary index", per_commit(folder, PLAIN, "plain")),
        ):
            print(
                f"{label:<46} {counts[0]:5.2f} statements, {counts[1]:5.2f} WAL frames per commit"
            )
        ours, raw, append = single_inserts(folder, "NORMAL", s, r, INDEXED, "normal")
        row("insert mutations, 1 client, WAL+NORMAL", ours, raw)
        row("", ours, append, "raw append ")
        print(f"{'':<46} {1e6 / ours:>6,.0f} µs per mutation; target ratio >= 0.30")
        split(ours, python_side(folder, s, r, INDEXED, "indexed"), raw)
        ours, raw, _ = single_inserts(folder, "NORMAL", s, r, PLAIN, "plain")
        row("  same, table without a secondary index", ours, raw)
        split(ours, python_side(folder, s, r, PLAIN, "plain"), raw)
        ours, raw, _ = single_inserts(folder, "FULL", s, r, INDEXED, "full")
        row("insert mutations, 1 client, WAL+FULL", ours, raw)
        ours, raw = point_reads(folder, s, r)
        row("point-read queries (get by id), WAL+NORMAL", ours, raw)
        ours, raw = point_reads(folder, s, r, long=True)
        row("  same, a 100 KB document after every 5th", ours, raw)
        (ours, raw_one, raw_eight), per_batch = concurrent_inserts(folder, s, r)
        row(f"insert mutations, {THREADS} threads, WAL+FULL", ours, raw_one, "raw 1 conn ")
        row("", ours, raw_eight, f"raw {THREADS} conns")
        print(f"{'':<46} {per_batch:>6.1f} commits per storage transaction (group commit)")


if __name__ == "__main__":
    main()
