"""3-step workflows per second on SQLite: Capsule's workflow component beside DBOS Transact.

Both run on a SQLite file with the same durability: every commit is fsynced
(``synchronous=FULL``, SQLite's default, which DBOS keeps). Each step is one durable
checkpoint: a mutation step here (its write and its journal entry commit together), a
``@DBOS.step`` there. Measured: ``N_SEQ`` workflows one after another (start, wait for the
result), then ``N_CONC`` started at once and waited for. Every workflow's result is checked
(and, here, every step's write). Rounds alternate between the two systems, each in a fresh
process on a fresh file, and the medians are compared, so load on the machine hits both alike.

Run: ``python bench/workflow.py [--rounds 3]``.
"""

# ruff: noqa: T201
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.workflow import WorkflowManager, component
from core import App, MutationCtx, QueryCtx, Schema, SQLiteStorage, SyncClient, Table

N_SEQ = 200
N_CONC = 100
Figures = tuple[float, float]


def _timed(n: int, body: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    body()
    return n / (time.perf_counter() - t0)


def _run_sequentially(n: int, one: Callable[[int], None]) -> None:
    for i in range(n):
        one(i)


def _run_concurrently(n: int, one: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def capsule(tmp: Path) -> Figures:
    """Workflows/s: sequential, then ``N_CONC`` concurrent."""
    app = App(
        Schema(marks=Table({"i": int})),
        storage=SQLiteStorage(tmp / "capsule.db", synchronous="FULL"),
    )
    manager = WorkflowManager(app.use(component, name="workflow"))

    @app.mutation
    def work(ctx: MutationCtx, i: int) -> int:
        ctx.db.insert("marks", {"i": i})
        return i + 1

    @manager.define(name="bench3")
    async def three(step: Any, i: int) -> int:
        a = await step.run_mutation(work, {"i": i})
        b = await step.run_mutation(work, {"i": a})
        return int(await step.run_mutation(work, {"i": b}))

    @app.mutation
    def start(ctx: MutationCtx, i: int) -> str:
        return str(manager.start(ctx, three, {"i": i}))

    @app.query
    def outcome(ctx: QueryCtx, id: str) -> Any:
        s = manager.status(ctx, id, steps=False)  # re-run only when the workflow finishes
        return None if s is None or s.state == "running" else [s.state, s.result]

    @app.query
    def count_marks(ctx: QueryCtx) -> int:
        return len(ctx.db.query("marks").collect())

    def run_one(client: SyncClient, i: int) -> None:
        wid = client.mutation(start, {"i": i})
        for value in client.subscribe(outcome, {"id": wid}):  # wakes on each commit
            if value is not None:
                if value != ["success", i + 3]:
                    raise RuntimeError(f"workflow {wid} ended {value}")
                return

    with app.sync_client() as client:
        run_one(client, -1)  # warm up
        seq = _timed(N_SEQ, lambda: _run_sequentially(N_SEQ, lambda i: run_one(client, i)))
        conc = _timed(N_CONC, lambda: _run_concurrently(N_CONC, lambda i: run_one(client, i)))
        marks = client.query(count_marks, {})
    if marks != 3 * (N_SEQ + N_CONC + 1):
        raise RuntimeError(f"{marks} step writes; expected {3 * (N_SEQ + N_CONC + 1)}")
    return seq, conc


def dbos(tmp: Path) -> Figures:
    """DBOS Transact on its SQLite system database, the same workload."""
    from dbos import DBOS

    db_url = f"sqlite:///{tmp / 'dbos.sqlite'}"
    DBOS(config={"name": "bench", "system_database_url": db_url, "log_level": "WARNING"})

    # DBOS's decorators are untyped where the checks run (it is installed by hand).
    @DBOS.step()  # type: ignore[untyped-decorator]
    def work(i: int) -> int:
        return i + 1

    @DBOS.workflow()  # type: ignore[untyped-decorator]
    def three(i: int) -> int:
        return int(work(work(work(i))))

    def run_one(i: int) -> None:
        if DBOS.start_workflow(three, i).get_result() != i + 3:
            raise RuntimeError(f"DBOS workflow {i} returned a wrong result")

    DBOS.launch()
    try:
        run_one(-1)
        seq = _timed(N_SEQ, lambda: _run_sequentially(N_SEQ, run_one))
        conc = _timed(N_CONC, lambda: _run_concurrently(N_CONC, run_one))
    finally:
        DBOS.destroy()
    return seq, conc


def _round(system: str) -> Figures:
    """One round of ``system`` in a fresh process."""
    out = subprocess.run(
        [sys.executable, __file__, "--one", system],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{system} round failed:\n{out.stderr}")
    seq, conc = json.loads(out.stdout.strip().splitlines()[-1])
    return float(seq), float(conc)


def main() -> None:
    """Alternate rounds of both systems and print the medians side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", choices=["capsule", "dbos"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps((capsule if args.one == "capsule" else dbos)(Path(d))))
        return
    runs: dict[str, list[Figures]] = {"capsule": [], "dbos": []}
    for _ in range(args.rounds):
        for system in ("dbos", "capsule"):
            runs[system].append(_round(system))
    print(
        f"3-step workflows/s on SQLite (synchronous=FULL), median of {args.rounds} rounds: "
        f"{N_SEQ} sequential, {N_CONC} concurrent; every result checked"
    )
    for k, label in enumerate(("sequential", f"{N_CONC} concurrent")):
        ours = statistics.median(r[k] for r in runs["capsule"])
        theirs = statistics.median(r[k] for r in runs["dbos"])
        each = " ".join(
            f"{r[k]:.0f}/{t[k]:.0f}" for r, t in zip(runs["capsule"], runs["dbos"], strict=True)
        )
        print(
            f"  {label:15s} capsule {ours:7.1f}   dbos {theirs:7.1f}   ratio {ours / theirs:.2f}x"
            f"   (rounds capsule/dbos: {each})"
        )


if __name__ == "__main__":
    main()
