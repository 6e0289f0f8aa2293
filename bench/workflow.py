"""3-step workflows per second on SQLite: Capsule's workflow component beside DBOS Transact.

Both run on a SQLite file with full synchronous durability (``synchronous=FULL``); each step is
one durable checkpoint (a mutation step here, a ``@DBOS.step`` there). Run:
``python bench/workflow.py``.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.workflow import WorkflowManager, component
from core import App, MutationCtx, QueryCtx, SQLiteStorage

N_SEQ = 100
N_CONC = 100


def capsule(tmp: Path) -> tuple[float, float]:
    app = App(storage=SQLiteStorage(tmp / "capsule.db", synchronous="FULL"))
    manager = WorkflowManager(app.use(component, name="workflow"), max_parallelism=100)

    @app.mutation
    def work(ctx: MutationCtx, i: int) -> int:
        return i + 1

    @manager.define(name="bench3")
    async def three(step: Any, i: int) -> int:
        a = await step.run_mutation(work, {"i": i})
        b = await step.run_mutation(work, {"i": a})
        return int(await step.run_mutation(work, {"i": b}))

    @app.mutation
    def start(ctx: MutationCtx, i: int) -> str:
        return str(manager.start(ctx, "bench3", {"i": i}))

    @app.query
    def state(ctx: QueryCtx, id: str) -> str:
        return str(manager.status(ctx, id).state)  # type: ignore[union-attr]

    def wait_all(client: Any, ids: list[str]) -> None:
        for wid in ids:
            while (st := client.query(state, {"id": wid})) == "running":
                time.sleep(0.0005)
            if st != "success":
                raise RuntimeError(f"workflow {wid} ended {st}")

    with app.sync_client() as client:
        t0 = time.perf_counter()
        for i in range(N_SEQ):
            wait_all(client, [client.mutation(start, {"i": i})])
        seq = N_SEQ / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        ids: list[str] = []
        threads = [
            threading.Thread(target=lambda i=i: ids.append(client.mutation(start, {"i": i})))
            for i in range(N_CONC)
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wait_all(client, ids)
        conc = N_CONC / (time.perf_counter() - t0)
    return seq, conc


def dbos(tmp: Path) -> tuple[float, float] | str:
    try:
        from dbos import DBOS
    except ImportError as exc:
        return f"DBOS is not installed ({exc})"
    DBOS(config={"name": "bench", "system_database_url": f"sqlite:///{tmp / 'dbos.sqlite'}"})

    @DBOS.step()
    def work(i: int) -> int:
        return i + 1

    @DBOS.workflow()
    def three(i: int) -> int:
        return work(work(work(i)))

    DBOS.launch()
    try:
        t0 = time.perf_counter()
        for i in range(N_SEQ):
            three(i)
        seq = N_SEQ / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        handles = [DBOS.start_workflow(three, i) for i in range(N_CONC)]
        for h in handles:
            h.get_result()
        conc = N_CONC / (time.perf_counter() - t0)
    finally:
        DBOS.destroy()
    return seq, conc


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        theirs = dbos(tmp)
        try:
            ours: tuple[float, float] | str = capsule(tmp)
        except Exception as exc:
            ours = f"failed: {type(exc).__name__}: {exc}"
    print(
        f"3-step workflows/s on SQLite (synchronous=FULL), {N_SEQ} sequential, {N_CONC} concurrent"
    )
    for i, label in enumerate(("sequential", "100 concurrent")):
        o = ours if isinstance(ours, str) else f"{ours[i]:8.1f}"
        t = theirs if isinstance(theirs, str) else f"{theirs[i]:8.1f}"
        ratio = (
            f"{ours[i] / theirs[i]:.2f}x"
            if not isinstance(ours, str) and not isinstance(theirs, str)
            else "n/a"
        )
        print(f"  {label:15s} capsule {o}   dbos {t}   ratio {ratio}")


if __name__ == "__main__":
    main()
