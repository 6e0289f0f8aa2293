"""Sharded counter benchmark: 8 concurrent writers on one name, 16 shards vs one document.

Run ``python bench/counter.py`` (about 20 seconds), optionally with ``--postgres URL`` (or
``CAPSULE_DB_URL`` set to a ``postgresql://`` URL) to add the PostgreSQL figures; each run
there uses a temporary database that is dropped afterwards. Printed per backend: increments/s
through ``ShardedCounter.add`` and OCC retries per committed increment, for the sharded counter
(16 shards) beside the single-document counter (1 shard) measured in the same run (target on
PostgreSQL with 4+ writers: sharded at least 2x the single document).
"""

# ruff: noqa: T201
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from components.sharded_counter import ShardedCounter, component  # noqa: E402
from core import App, MutationCtx, QueryCtx, SQLiteStorage, Storage  # noqa: E402

WRITERS = 8


def run(storage: Storage, shards: int, each: int) -> tuple[float, float]:
    """Increments/s and retries per commit for ``WRITERS`` threads x ``each`` increments."""
    app = App(storage=storage)
    counter = ShardedCounter(app.use(component, name="counts"), default_shards=shards)

    @app.mutation
    def hit(ctx: MutationCtx) -> None:
        counter.inc(ctx, "hot")

    @app.query
    def total(ctx: QueryCtx) -> Any:
        return counter.count(ctx, "hot")

    with app.sync_client() as client:
        client.mutation(hit)
        executor = client.runtime.executor
        retries_before = executor.retries
        barrier = threading.Barrier(WRITERS + 1)

        def writer() -> None:
            barrier.wait()
            for _ in range(each):
                client.mutation(hit)

        threads = [threading.Thread(target=writer) for _ in range(WRITERS)]
        for thread in threads:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        retries = executor.retries - retries_before
        if client.query(total) != 1 + WRITERS * each:
            raise RuntimeError("an increment was lost")
    commits = WRITERS * each
    return commits / elapsed, retries / commits


@contextlib.contextmanager
def postgres(url: str) -> Iterator[Storage]:
    """A PostgresStorage on a temporary database."""
    from core.storage.postgres import PostgresStorage, temporary_database

    with temporary_database(url, f"capsule_bench_{uuid.uuid4().hex[:10]}") as db_url:
        storage = PostgresStorage(db_url)
        try:
            yield storage
        finally:
            storage.close()


@contextlib.contextmanager
def sqlite(folder: Path, name: str) -> Iterator[Storage]:
    """A SQLiteStorage on a fresh file."""
    yield SQLiteStorage(folder / f"{name}.db", synchronous="NORMAL")


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--each", type=int, default=250, help="increments per writer")
    parser.add_argument("--postgres", help="a PostgreSQL server URL")
    args = parser.parse_args()
    url = args.postgres or os.environ.get("CAPSULE_DB_URL", "")
    backends = ["sqlite"] + (["postgres"] if url.startswith("postgres") else [])
    print(f"{WRITERS} writers x {args.each} increments on one name")
    print(
        f"{'backend':>9}  {'sharded(16)/s':>13}  {'retries':>7}  {'single/s':>9}  "
        f"{'retries':>7}  {'ratio':>6}"
    )
    with tempfile.TemporaryDirectory(prefix="capsule-bench-") as tmp:
        for backend in backends:
            figures = []
            for shards in (16, 1):
                if backend == "sqlite":
                    store = sqlite(Path(tmp), f"counter-{shards}")
                else:
                    store = postgres(url)
                with store as storage:
                    figures.append(run(storage, shards, args.each))
            (s_rate, s_retry), (o_rate, o_retry) = figures
            print(
                f"{backend:>9}  {s_rate:>13,.0f}  {s_retry:>7.2f}  {o_rate:>9,.0f}  "
                f"{o_retry:>7.2f}  {s_rate / o_rate:>5.2f}x"
            )
    if len(backends) == 1:
        print("(PostgreSQL skipped: pass --postgres URL or set CAPSULE_DB_URL)")


if __name__ == "__main__":
    main()
