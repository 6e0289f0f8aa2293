"""Rate limiter benchmark: admitted ``limit`` decisions/s beside raw sqlite3 and ``limits``.

Run ``python bench/limiter.py`` (about 15 seconds). In one run, on fresh files with WAL and
``synchronous=NORMAL``:

* our ``RateLimiter.limit`` (a token bucket large enough that every decision is admitted),
  one mutation per decision through the sync client, on 1 key and on 1,000 keys;
* raw ``sqlite3`` read-modify-write transactions doing the same token-bucket update
  (``BEGIN IMMEDIATE; SELECT; UPDATE/INSERT; COMMIT``) with the same pragmas (target: ours at
  least 0.2x);
* the ``limits`` library's moving-window and fixed-window limiters on in-memory storage
  (no durability at all: an upper bound, not a peer);
* ours again with the commit's storage step made a no-op (``bench/core.py``'s
  ``NullCommitStorage``): what a decision costs outside that step (its snapshot reads
  included, on a connection whose cache no commit empties, so a little less than in the real
  run), and so what the step costs.
"""

# ruff: noqa: T201
from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.core import NullCommitStorage  # noqa: E402
from components.rate_limiter import SECOND, RateLimiter, TokenBucket, component  # noqa: E402
from core import App, MutationCtx, SQLiteStorage  # noqa: E402

BIG = 1e12  # capacity and rate large enough that every decision is admitted


def timed(seconds: float, step: Callable[[int], Any]) -> float:
    """Call ``step(i)`` for ``seconds``; return calls per second."""
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        step(n)
        n += 1
        if n % 50 == 0 and time.perf_counter() >= deadline:
            break
    return n / (time.perf_counter() - start)


def ours(folder: Path, keys: int, seconds: float, *, null: bool = False) -> float:
    """Our limiter: admitted decisions/s over ``keys`` keys.

    ``null``: with the commit's storage step made a no-op once the keys' documents exist
    (``bench/core.py``'s ``NullCommitStorage``); the snapshot and its reads stay real.
    """
    path = folder / f"ours-{keys}-{null}.db"
    # The real run uses the storage as shipped, not the subclass with its checks.
    storage = NullCommitStorage(path, synchronous="NORMAL") if null else None
    app = App(storage=storage or SQLiteStorage(path, synchronous="NORMAL"))
    limiter = RateLimiter(app.use(component, name="limits"), {"api": TokenBucket(BIG, SECOND)})

    @app.mutation
    def hit(ctx: MutationCtx, key: str) -> bool:
        status = limiter.limit(ctx, "api", key=key)
        if not status.ok:
            raise RuntimeError("benchmark limit refused a request")
        return True

    names = [f"user{i}" for i in range(keys)]
    with app.sync_client() as client:
        for name in names:  # create the documents first: measure steady state
            client.mutation(hit, {"key": name})
        if storage is not None:
            storage.null_ts = client.runtime.db.latest_ts
            storage.null = True
        return timed(seconds, lambda i: client.mutation(hit, {"key": names[i % keys]}))


def raw(folder: Path, keys: int, seconds: float) -> float:
    """Raw sqlite3 token-bucket read-modify-write transactions/s."""
    conn = sqlite3.connect(folder / f"raw-{keys}.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE limits (key TEXT PRIMARY KEY, value REAL, ts REAL)")
    names = [f"user{i}" for i in range(keys)]

    def step(i: int) -> None:
        key = names[i % keys]
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute("SELECT value, ts FROM limits WHERE key = ?", (key,)).fetchone()
        if row is None:
            conn.execute("INSERT INTO limits VALUES (?, ?, ?)", (key, BIG - 1, now))
        else:
            value = min(row[0] + (now - row[1]) * BIG / SECOND, BIG) - 1
            if value < 0:
                raise RuntimeError("raw limit refused a request")
            conn.execute("UPDATE limits SET value = ?, ts = ? WHERE key = ?", (value, now, key))
        conn.execute("COMMIT")

    for i in range(keys):
        step(i)
    try:
        return timed(seconds, step)
    finally:
        conn.close()


def library(strategy: str, keys: int, seconds: float) -> float:
    """The ``limits`` library's limiter on in-memory storage, hits/s."""
    from limits import RateLimitItemPerSecond, storage, strategies

    store = storage.MemoryStorage()
    cls = {
        "moving": strategies.MovingWindowRateLimiter,
        "fixed": strategies.FixedWindowRateLimiter,
    }[strategy]
    limiter = cls(store)
    item = RateLimitItemPerSecond(10**7)
    names = [f"user{i}" for i in range(keys)]

    def step(i: int) -> None:
        if not limiter.hit(item, names[i % keys]):
            raise RuntimeError("limits refused a request")

    return timed(seconds, step)


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    args = parser.parse_args()
    print(f"admitted decisions/s, {args.seconds:g} s each, SQLite WAL+NORMAL")
    print(
        f"{'keys':>6}  {'ours':>9}  {'raw sqlite3':>11}  {'ratio':>6}  "
        f"{'limits moving':>13}  {'limits fixed':>12}"
    )
    with tempfile.TemporaryDirectory(prefix="capsule-bench-") as tmp:
        folder = Path(tmp)
        for keys in (1, 1000):
            ours_rate = ours(folder, keys, args.seconds)
            raw_rate = raw(folder, keys, args.seconds)
            moving = library("moving", keys, args.seconds)
            fixed = library("fixed", keys, args.seconds)
            side = ours(folder, keys, args.seconds, null=True)
            print(
                f"{keys:>6}  {ours_rate:>9,.0f}  {raw_rate:>11,.0f}  "
                f"{ours_rate / raw_rate:>5.2f}x  {moving:>13,.0f}  {fixed:>12,.0f}"
            )
            print(
                f"{'':>6}  {1e6 / ours_rate:>6.0f} µs a decision; outside the commit's storage "
                f"step {1e6 / side:.0f} µs, the step {1e6 / ours_rate - 1e6 / side:.0f} µs; "
                f"raw's whole decision {1e6 / raw_rate:.0f} µs"
            )
    print("target: ours >= 0.2x raw sqlite3 (the limits figures are in-memory, no durability)")


if __name__ == "__main__":
    main()
