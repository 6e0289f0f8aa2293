"""Resources under load: descriptors and threads stay flat across bursts, on both backends.

Bursts of short-lived threads each run a query and a mutation (in process), then bursts of
fresh HTTP connections hit a served app (reconnects). After a warm-up burst, the process's
open file descriptors and threads must not grow with the number of bursts. ``scripts/soak``
runs many more bursts, with idle gaps long enough for the server's worker threads to retire.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from core import App, MutationCtx, QueryCtx, Schema, Table
from core.server import BackgroundServer, create_asgi_app
from core.storage.base import Storage
from core.testing import TestApp

app = App(Schema(hits=Table({"n": int})))


@app.mutation
def hit(ctx: MutationCtx, n: int) -> None:
    ctx.db.insert("hits", {"n": n})


@app.query
def recent(ctx: QueryCtx) -> int:
    return len(ctx.db.query("hits").order("desc").take(5))


def usage() -> tuple[int, int]:
    """Open descriptors and live threads of this process."""
    return len(os.listdir("/proc/self/fd")), threading.active_count()


def _burst(work: Callable[[int], Any], threads: int) -> None:
    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(timeout=120)


def _flat(
    label: str, rounds: int, idle: float, burst: Callable[[], None], width: int
) -> dict[str, Any]:
    """Usage after ``rounds`` bursts of ``width`` threads stays within one burst of the start.

    Pools may still grow by up to one burst's concurrency after the warm-up (worker threads
    are started on demand); a leak grows with every burst and passes that bound.
    """
    burst()
    burst()  # warm-up: pools fill, caches load
    fds0, threads0 = usage()
    peak = (fds0, threads0)
    for _ in range(rounds):
        burst()
        if idle:
            time.sleep(idle)  # soak only: idle workers retire in between
        peak = max(peak, usage())
    fds, threads = usage()
    assert fds <= fds0 + width, (
        f"{label}: descriptors grew from {fds0} to {fds} over {rounds} bursts"
    )
    assert threads <= threads0 + width, f"{label}: threads grew from {threads0} to {threads}"
    return {"fds": f"{fds0}->{fds}", "threads": f"{threads0}->{threads}", "peak_fds": peak[0]}


def test_short_lived_threads_and_reconnects_leave_usage_flat(storage: Storage, soak: Any) -> None:
    rounds = soak.size(4, 300)
    # Soak: 52 served bursts, each followed by an idle gap long enough for the server's
    # idle worker threads to retire: about a 10-minute run per backend.
    served_rounds = soak.size(4, 52)
    idle = 11.0 if soak.on else 0.0
    with TestApp(app, storage=storage) as t:

        def in_process() -> None:
            def work(n: int) -> None:
                t.mutation(hit, {"n": n})
                t.query(recent)

            _burst(work, 24)

        local = _flat("in-process", rounds, 0.0, in_process, 24)
        asgi = create_asgi_app(app, runtime=t.runtime)
        with BackgroundServer(asgi) as bg:

            def over_http() -> None:
                def work(n: int) -> None:
                    with httpx.Client(base_url=bg.url) as http:  # a new connection each time
                        r = http.post("/api/mutation", json={"path": hit.path, "args": {"n": n}})
                        assert r.status_code == 200, r.text
                        assert (
                            http.post("/api/query", json={"path": recent.path}).status_code == 200
                        )

                _burst(work, 12)

            served = _flat("server", served_rounds, idle, over_http, 12)
    soak.record(rounds=rounds + served_rounds, anomalies=0, in_process=local, server=served)
