"""Migrations benchmark: documents per second rewritten by a backfill and by a migration.

Run ``python bench/migrations.py [--docs N]`` (a few seconds). A table of N documents gains a
defaulted field with an index on it; we measure

* the backfill at open (``Database.settle``: defaults stored, index entries rewritten, 500
  documents per storage transaction);
* a migration (``app.migration``, 500 documents per transaction, each a serializable
  mutation with a cursor record) setting a field on every document;
* baseline: plain ``sqlite3`` rewriting the same number of JSON rows (read, decode, change,
  encode, ``UPDATE``) 500 per transaction, WAL and ``synchronous=NORMAL``, no index.

Each figure is documents per second; the ratios are ours over the baseline.
"""

# ruff: noqa: T201

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from core import App, MutationCtx, Schema, Table  # noqa: E402
from core.migrations import Migrator  # noqa: E402
from core.storage.sqlite import SQLiteStorage  # noqa: E402
from core.testing import TestApp  # noqa: E402

BATCH = 500


def fill(path: Path, n: int) -> None:
    """Store ``n`` documents of the old shape."""
    app = App(Schema(tasks=Table({"title": str, "n": int})))

    def chunk(start: int) -> Callable[[MutationCtx], None]:
        def body(ctx: MutationCtx) -> None:
            for i in range(start, min(start + 5000, n)):
                ctx.db.insert("tasks", {"title": f"task {i}", "n": i})

        return body

    with TestApp(app, storage=SQLiteStorage(path, synchronous="NORMAL")) as t:
        for start in range(0, n, 5000):
            t.run(chunk(start))


def backfill(path: Path, n: int) -> float:
    """Documents per second of the backfill at open."""
    fill(path, n)
    app = App(
        Schema(
            tasks=Table({"title": str, "n": int, "priority": int | None}).index("p", ["priority"])
        )
    )
    began = time.perf_counter()
    with TestApp(app, storage=SQLiteStorage(path, synchronous="NORMAL")) as t:
        elapsed = time.perf_counter() - began
        assert t.runtime.db.backfilled == n
    return n / elapsed


def migration(path: Path, n: int) -> float:
    """Documents per second of a migration."""
    fill(path, n)
    app = App(Schema(tasks=Table({"title": str, "n": int})))

    @app.migration("upper", table="tasks", batch_size=BATCH)
    def upper(ctx: MutationCtx, doc: dict[str, Any]) -> dict[str, Any]:
        return {"title": doc["title"].upper()}

    with TestApp(app, storage=SQLiteStorage(path, synchronous="NORMAL")) as t:
        began = time.perf_counter()
        [status] = Migrator(app, t.runtime).run()
        elapsed = time.perf_counter() - began
        assert status.changed == n
    return n / elapsed


def baseline(path: Path, n: int) -> float:
    """Documents per second of a plain sqlite3 rewrite."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, data TEXT)")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO docs VALUES (?, ?)",
        ((i, json.dumps({"title": f"task {i}", "n": i})) for i in range(n)),
    )
    conn.execute("COMMIT")
    began = time.perf_counter()
    last = -1
    while True:
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(
            "SELECT id, data FROM docs WHERE id > ? ORDER BY id LIMIT ?", (last, BATCH)
        ).fetchall()
        updates = []
        for doc_id, data in rows:
            doc = json.loads(data)
            doc["title"] = doc["title"].upper()
            updates.append((json.dumps(doc), doc_id))
        conn.executemany("UPDATE docs SET data = ? WHERE id = ?", updates)
        conn.execute("COMMIT")
        if len(rows) < BATCH:
            break
        last = rows[-1][0]
    elapsed = time.perf_counter() - began
    conn.close()
    return n / elapsed


def main() -> None:
    """Run the three and print the figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", type=int, default=20_000)
    n = p.parse_args().docs
    with tempfile.TemporaryDirectory() as tmp:
        base = baseline(Path(tmp) / "base.db", n)
        ours_backfill = backfill(Path(tmp) / "backfill.db", n)
        ours_migration = migration(Path(tmp) / "migration.db", n)
    print(f"{n:,} documents, {BATCH} per transaction")
    print(f"baseline (sqlite3 JSON rewrite):   {base:>10,.0f} docs/s")
    print(
        f"backfill at open (defaults+index): {ours_backfill:>10,.0f} docs/s  "
        f"({ours_backfill / base:.2f}x baseline)"
    )
    print(
        f"migration (app.migration):         {ours_migration:>10,.0f} docs/s  "
        f"({ours_migration / base:.2f}x baseline)"
    )


if __name__ == "__main__":
    main()
