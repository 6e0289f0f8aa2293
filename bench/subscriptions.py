"""Subscriptions benchmark: 1,000 live subscriptions over distinct index ranges, one write.

Run ``python bench/subscriptions.py`` (a few seconds; ``--subscriptions N --rounds R`` to
change the sizes). Each subscription follows one bucket of an index (``with_index("by_bucket",
eq bucket)``); each round writes one document into one random bucket and measures:

* query re-runs the write caused (target: 1 -- only the affected subscription re-runs);
* time from the write until the affected subscriber has its new result (median over rounds).

Printed beside a naive baseline measured in the same run on the same database: after the same
kind of write, re-run all 1,000 queries (in subscription order) and take the time until the
affected one's re-run finished (and until all of them did).
"""

# ruff: noqa: T201
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from core import App, MutationCtx, QueryCtx, Schema, SQLiteStorage, Table  # noqa: E402
from core.runtime import Runtime  # noqa: E402
from core.subscriptions import subscribe, subscription_hub  # noqa: E402

app = App(Schema(items=Table({"bucket": int, "n": int}).index("by_bucket", ["bucket"])))


@app.mutation
def add(ctx: MutationCtx, bucket: int, n: int) -> None:
    """Put one item in a bucket."""
    ctx.db.insert("items", {"bucket": bucket, "n": n})


@app.mutation
def seed(ctx: MutationCtx, buckets: int) -> None:
    """One item in each bucket."""
    for bucket in range(buckets):
        ctx.db.insert("items", {"bucket": bucket, "n": 0})


@app.query
def in_bucket(ctx: QueryCtx, bucket: int) -> list[int]:
    """The items of one bucket (one index range)."""
    return [
        d["n"]
        for d in ctx.db.query("items").with_index("by_bucket", lambda q: q.eq("bucket", bucket))
    ]


async def ours(rt: Runtime, count: int, rounds: int) -> tuple[list[int], list[float]]:
    """Re-runs per write and seconds until the affected subscriber has its result."""
    hub = subscription_hub(rt)
    latest: list[Any] = [None] * count
    changed = [anyio.Event() for _ in range(count)]

    async def follow(bucket: int) -> None:
        async with aclosing(subscribe(rt, in_bucket, {"bucket": bucket})) as updates:
            async for value in updates:
                latest[bucket] = value
                changed[bucket].set()

    reruns: list[int] = []
    latencies: list[float] = []
    rng = random.Random(7)
    async with anyio.create_task_group() as tg:
        for bucket in range(count):
            tg.start_soon(follow, bucket)
        for event in list(changed):
            await event.wait()
        for n in range(1, rounds + 1):
            target = rng.randrange(count)
            changed[target] = anyio.Event()
            await anyio.to_thread.run_sync(hub.flush)
            before = hub.query_runs
            start = time.perf_counter()
            await anyio.to_thread.run_sync(rt.executor.mutation, add, {"bucket": target, "n": n})
            await changed[target].wait()
            latencies.append(time.perf_counter() - start)
            assert latest[target][-1] == n
            await anyio.to_thread.run_sync(hub.flush)
            reruns.append(hub.query_runs - before + hub.stale)
        tg.cancel_scope.cancel()
    return reruns, latencies


def naive(rt: Runtime, count: int, rounds: int) -> tuple[int, list[float], list[float]]:
    """Re-run every query after each write: re-runs, time to the affected one, time to all."""
    rng = random.Random(11)
    to_affected: list[float] = []
    to_all: list[float] = []
    ex = rt.executor
    for n in range(1, rounds + 1):
        target = rng.randrange(count)
        start = time.perf_counter()
        ex.mutation(add, {"bucket": target, "n": 1000 + n})
        for bucket in range(count):
            result = ex.query(in_bucket, {"bucket": bucket})
            if bucket == target:
                to_affected.append(time.perf_counter() - start)
                assert result[-1] == 1000 + n
        to_all.append(time.perf_counter() - start)
    return count, to_affected, to_all


def main() -> None:
    """Run both measurements and print them side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    opts = parser.parse_args()
    count, rounds = opts.subscriptions, opts.rounds
    with tempfile.TemporaryDirectory() as tmp:
        rt = app.make_runtime(SQLiteStorage(Path(tmp) / "bench.db", synchronous="NORMAL"))
        rt.open()
        try:
            rt.executor.mutation(seed, {"buckets": count})
            reruns, latencies = anyio.run(ours, rt, count, rounds)
            base_reruns, base_affected, base_all = naive(rt, count, rounds)
        finally:
            rt.close()
    ms = 1000.0
    ours_ms = statistics.median(latencies) * ms
    base_ms = statistics.median(base_affected) * ms
    all_ms = statistics.median(base_all) * ms
    print(
        f"subscriptions: {count:,} live over distinct index ranges, one write per round "
        f"(SQLite, median of {rounds} rounds)"
    )
    print(f"{'':28}{'re-runs per write':>18}{'time to new result':>22}")
    print(f"{'capsule (read sets)':28}{statistics.median(reruns):>18g}{ours_ms:>19.2f} ms")
    print(
        f"{'naive (re-run all)':28}{base_reruns:>18,}{base_ms:>19.2f} ms"
        f"   (all {count:,}: {all_ms:.2f} ms)"
    )
    print(
        f"{'ratio':28}{base_reruns / max(statistics.median(reruns), 1):>17.0f}x"
        f"{base_ms / ours_ms:>20.1f}x faster"
    )
    print(f"re-runs per write, every round: min {min(reruns)}, max {max(reruns)}")


if __name__ == "__main__":
    main()
