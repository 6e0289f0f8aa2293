"""PostgreSQL backend benchmark: increments/s of a counter from 4 app processes.

Run ``python bench/postgres.py`` (about 40 seconds) with a server at
``CAPSULE_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``); it
works in a temporary database that is dropped afterwards. Each scenario runs 4 worker
processes for a fixed time and prints committed increments/s:

* ours: a Capsule mutation reading and patching one hot document (then 16 documents, one
  picked at random per increment), through ``PostgresStorage`` with its default
  ``flush="in_step"`` and again with ``flush="after_step"``; retries are OCC retries per
  commit (the last attempt of a mutation holds the commit lock and cannot fail);
* baseline: raw psycopg ``SERIALIZABLE`` read-modify-write of one row (then 16 rows), measured
  in the same run, with its abort rate (SQLSTATE 40001 per attempt);
* the commit step alone: blind one-document commits through ``begin_write``/``apply`` from 4
  processes (no reads, so no conflicts), i.e. how many commits/s the serialized step allows,
  in both flush modes.
"""

# ruff: noqa: T201
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

from core import App, MutationCtx, Schema, Table  # noqa: E402
from core.config import setting  # noqa: E402
from core.storage.base import CommitBatchItem, DocumentWrite  # noqa: E402

PROCESSES = 4
SECONDS = 5.0
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

app = App(Schema(counters=Table({"n": int, "value": int}).index("by_n", ["n"])))


@app.mutation
def setup(ctx: MutationCtx, docs: int) -> None:
    """Create counters ``0 .. docs-1``."""
    for n in range(docs):
        ctx.db.insert("counters", {"n": n, "value": 0})


@app.mutation
def increment(ctx: MutationCtx, n: int) -> None:
    """Read-modify-write one counter."""
    doc = ctx.db.query("counters").with_index("by_n", lambda q: q.eq("n", n)).unique()
    assert doc is not None
    ctx.db.patch(doc["_id"], {"value": doc["value"] + 1})


# -- workers (each a separate process) ----------------------------------------------------------


def work_ours(url: str, docs: int, stop: float) -> dict[str, Any]:
    """Increment random counters of ``docs`` through our mutations for ``stop`` seconds."""
    from core.storage import open_storage

    rt = app.make_runtime(open_storage(url))
    rt.open()
    rng = random.Random()
    done = 0
    go()
    end = time.monotonic() + stop
    while time.monotonic() < end:
        rt.executor.mutation(increment, {"n": rng.randrange(docs)})
        done += 1
    retries = rt.executor.retries
    rt.close()
    return {"commits": done, "retries": retries}


def work_raw(url: str, docs: int, stop: float) -> dict[str, Any]:
    """The same through raw SERIALIZABLE read-modify-write transactions, counting aborts."""
    import psycopg

    conn = psycopg.connect(url, autocommit=True)
    rng = random.Random()
    done = aborts = 0
    go()
    end = time.monotonic() + stop
    while time.monotonic() < end:
        n = rng.randrange(docs)
        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                row = conn.execute("SELECT value FROM raw_counters WHERE n = %s", (n,)).fetchone()
                assert row is not None
                conn.execute("UPDATE raw_counters SET value = %s WHERE n = %s", (row[0] + 1, n))
            done += 1
        except psycopg.errors.SerializationFailure:
            aborts += 1
    conn.close()
    return {"commits": done, "aborts": aborts}


def work_step(url: str, worker: int, stop: float) -> dict[str, Any]:
    """Blind one-document commits straight through the storage's commit step."""
    from core.storage.postgres import PostgresStorage

    storage = PostgresStorage(url)
    storage.open()
    done = 0
    go()
    end = time.monotonic() + stop
    while time.monotonic() < end:
        with storage.begin_write() as w:
            ts = max(w.latest_ts() + 1, time.time_ns())
            write = DocumentWrite(id=f"step{worker}", table=999, creation_time=0.0, data=b"x")
            w.apply([CommitBatchItem(ts=ts, writes=[write], log_record=b"")])
        done += 1
    storage.close()
    return {"commits": done}


def with_flush(url: str, mode: str) -> str:
    """``url`` choosing ``PostgresStorage(flush=mode)``."""
    return url + ("&" if "?" in url else "?") + f"capsule_flush={mode}"


def go() -> None:
    """Say ready and wait for the driver's go, so all workers start together."""
    print("ready", flush=True)
    sys.stdin.readline()


# -- the driver -------------------------------------------------------------------------------


def scenario(url: str, kind: str, arg: int) -> dict[str, Any]:
    """Run ``PROCESSES`` workers together; sum their reports and add commits/s."""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", kind, url, str(arg if kind != "step" else w)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(PROCESSES)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    total: dict[str, Any] = {}
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"worker {kind} failed")
        for key, value in json.loads(out.splitlines()[-1]).items():
            total[key] = total.get(key, 0) + value
    total["per_s"] = total["commits"] / SECONDS
    return total


def main() -> None:
    """Print our increments/s beside raw SERIALIZABLE PostgreSQL, and the commit step's rate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=setting("CAPSULE_TEST_POSTGRES_URL") or DEFAULT_URL)
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "URL", "ARG"))
    args = parser.parse_args()
    if args.worker:
        kind, url, arg = args.worker
        work = {"ours": work_ours, "raw": work_raw, "step": work_step}[kind]
        print(json.dumps(work(url, int(arg), SECONDS)))
        return

    import psycopg

    from core.storage.postgres import temporary_database

    name = f"capsule_bench_{uuid.uuid4().hex[:8]}"
    with temporary_database(args.url, name) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE raw_counters(n integer PRIMARY KEY, value bigint)")
            conn.execute("INSERT INTO raw_counters SELECT g, 0 FROM generate_series(0, 15) g")
        from core.storage.postgres import PostgresStorage

        storage = PostgresStorage(url)
        rt = app.make_runtime(storage)
        rt.open()
        rt.executor.mutation(setup, {"docs": 16})
        rt.close()

        after = with_flush(url, "after_step")
        print(f"PostgreSQL, {PROCESSES} processes x {SECONDS:g} s each scenario")
        for docs in (1, 16):
            ours = scenario(url, "ours", docs)
            ours_after = scenario(after, "ours", docs)
            raw = scenario(url, "raw", docs)
            attempts = raw["commits"] + raw["aborts"]
            label = "1 hot document" if docs == 1 else f"{docs} documents"
            print(f"\n{label}:")
            for name, figures in (("in_step", ours), ("after_step", ours_after)):
                print(
                    f"  ours, flush={name:<11}    {figures['per_s']:8.0f} increments/s"
                    f"   retries/commit {figures['retries'] / max(1, figures['commits']):.2f}"
                    f"   {figures['per_s'] / max(1.0, raw['per_s']):5.2f}x raw"
                )
            print(
                f"  raw SERIALIZABLE psycopg   {raw['per_s']:8.0f} increments/s"
                f"   aborts {raw['aborts'] / max(1, attempts):.0%} of attempts"
            )
        print("\ncommit step alone (blind writes):")
        for name, target in (("in_step", url), ("after_step", after)):
            print(f"  flush={name:<11} {scenario(target, 'step', 0)['per_s']:8.0f} commits/s")


if __name__ == "__main__":
    main()
