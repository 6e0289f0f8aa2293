"""Prototype of a log-structured commit, in raw ``sqlite3``, beside today's commit layout.

Run ``python bench/logstructured.py`` (about 20 seconds). No Python engine at all: every side
replays precomputed bytes, so the figures bound what each storage layout can reach.

* raw: ``BEGIN IMMEDIATE; INSERT document; COMMIT`` (the baseline of ``bench/core.py``);
* today: the statements an insert commit runs now (``SELECT max(ts)``, the document, a
  creation-order entry and a secondary entry in one multi-row statement, a commit-log row);
* log-structured: one append per commit to a rowid table (the document, its entries and the
  write set in one record); every ``--apply-every`` commits, the applier moves the appended
  records into the documents and index tables in one transaction and deletes them.

Each side alternates rounds and keeps its best, as ``bench/core.py`` does; see
``bench/README.md`` for the design and its failure modes.
"""

# ruff: noqa: T201
from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

DOC = msgpack.packb({"text": "buy milk and bread", "priority": 3, "done": False})
LOG = os.urandom(190)  # about the size of today's commit-log record


def connect(path: Path, synchronous: str) -> sqlite3.Connection:
    """A connection with the engine's pragmas."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA cache_size=-32000")
    conn.executescript(
        "CREATE TABLE docs(id BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE entries(idx INTEGER, key BLOB, doc BLOB, value BLOB, "
        "PRIMARY KEY(idx, key)) WITHOUT ROWID;"
        "CREATE TABLE commits(ts INTEGER PRIMARY KEY, data BLOB NOT NULL);"
        "CREATE TABLE pending(seq INTEGER PRIMARY KEY, data BLOB NOT NULL);"
    )
    return conn


def ids() -> Callable[[], bytes]:
    """Ids that sort by creation (time prefix, then a sequence), as item 1 proposes."""
    seq = 0

    def make() -> bytes:
        nonlocal seq
        seq += 1
        return time.time_ns().to_bytes(8, "big") + seq.to_bytes(4, "big") + os.urandom(6)

    return make


def raw_step(conn: sqlite3.Connection) -> Callable[[int], Any]:
    """One transaction per document insert."""
    new = ids()

    def step(i: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO docs VALUES (?, ?)", (new(), DOC))
        conn.execute("COMMIT")

    return step


def today_step(conn: sqlite3.Connection) -> Callable[[int], Any]:
    """Today's insert commit: six statements, four B-trees."""
    new = ids()

    def step(i: int) -> None:
        doc_id = new()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("SELECT coalesce(max(ts), 0) FROM commits").fetchone()
        conn.execute("INSERT INTO docs VALUES (?, ?)", (doc_id, DOC))
        conn.execute(
            "INSERT INTO entries VALUES (?, ?, ?, ?), (?, ?, ?, ?)",
            (1, doc_id, doc_id, b"", 2, bytes([i % 100]) + doc_id, doc_id, b""),
        )
        conn.execute("INSERT INTO commits VALUES (?, ?)", (time.time_ns(), LOG))
        conn.execute("COMMIT")

    return step


def log_step(conn: sqlite3.Connection, apply_every: int) -> Callable[[int], Any]:
    """One append per commit; the tables are updated in batches behind it."""
    new = ids()
    pack = msgpack.Packer().pack

    def apply() -> None:
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute("SELECT seq, data FROM pending ORDER BY seq").fetchall()
        docs, entries = [], []
        for _, data in rows:
            doc_id, doc, key, _log = msgpack.unpackb(data)
            docs.append((doc_id, doc))
            entries.append((2, key, doc_id, b""))
        conn.executemany("INSERT INTO docs VALUES (?, ?)", docs)
        conn.executemany("INSERT INTO entries VALUES (?, ?, ?, ?)", entries)
        conn.execute("DELETE FROM pending WHERE seq <= ?", (rows[-1][0],))
        conn.execute("COMMIT")

    def step(i: int) -> None:
        doc_id = new()
        record = pack([doc_id, DOC, bytes([i % 100]) + doc_id, LOG])
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO pending(data) VALUES (?)", (record,))
        conn.execute("COMMIT")
        if i % apply_every == apply_every - 1:
            apply()

    return step


def timed(seconds: float, step: Callable[[int], Any]) -> float:
    """Calls of ``step`` per second for ``seconds``."""
    n = 0
    start = time.perf_counter()
    while True:
        for _ in range(64):
            step(n)
            n += 1
        if time.perf_counter() - start >= seconds:
            return n / (time.perf_counter() - start)


def main() -> None:
    """Print the three rates and their ratios to raw."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--apply-every", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="capsule-bench-") as tmp:
        folder = Path(tmp)
        conns = [connect(folder / f"{name}.db", "NORMAL") for name in ("raw", "today", "log")]
        steps = [
            raw_step(conns[0]),
            today_step(conns[1]),
            log_step(conns[2], args.apply_every),
        ]
        best = [0.0, 0.0, 0.0]
        for _ in range(args.rounds):
            for k, step in enumerate(steps):
                best[k] = max(best[k], timed(args.seconds, step))
        for conn in conns:
            conn.close()
    raw = best[0]
    print(f"raw insert transaction         {raw:>9,.0f}/s")
    print(f"today's statements (replayed)  {best[1]:>9,.0f}/s   ratio {best[1] / raw:4.2f}x")
    print(
        f"log-structured, apply every {args.apply_every:<3}{best[2]:>9,.0f}/s   "
        f"ratio {best[2] / raw:4.2f}x"
    )


if __name__ == "__main__":
    main()
