"""A PostgreSQL server restarted under load: clients see retryable errors, nothing acked is lost.

The shared test server is never touched: each test starts a private, throwaway cluster
(``initdb`` into a temporary folder, ``pg_ctl start`` on a free port of 127.0.0.1, as the
``postgres`` user when running as root) and restarts *it* while client threads keep running
acknowledged mutations through one runtime, with ``pg_ctl restart -m fast`` (connections
terminated, a clean checkpoint) and ``-m immediate`` (the server dies as in a crash and
replays its WAL). Afterwards:

* the same runtime, never reopened, committed again after each restart (it reconnected);
* a call failing during a restart failed with a clear, retryable error
  (``RetryableStorageError`` or ``DatabaseUnavailableError``), never a driver error;
* every acknowledged insert is present, each mutation is whole (the counter equals the rows),
  and the integrity checker agrees.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core import App, MutationCtx, Schema, Table
from core.errors import ConflictError, DatabaseUnavailableError, RetryableStorageError
from core.integrity import check_closed_storage, format_report
from core.testing import TestApp

app = App(
    Schema(
        acks=Table({"worker": int, "seq": int}).index("by_worker", ["worker", "seq"]),
        totals=Table({"n": int}),
    )
)
CLEAR = (RetryableStorageError, DatabaseUnavailableError, ConflictError)
"""What a call may fail with while the server restarts (all say: try again)."""
WAIT = 30.0


@app.mutation
def record(ctx: MutationCtx, worker: int, seq: int) -> None:
    """Insert one acknowledgement and bump the shared total (a read-modify-write)."""
    ctx.db.insert("acks", {"worker": worker, "seq": seq})
    total = ctx.db.query("totals").first()
    if total is None:
        ctx.db.insert("totals", {"n": 1})
    else:
        ctx.db.patch(total["_id"], {"n": total["n"] + 1})


@app.query
def tally(ctx: Any) -> dict[str, Any]:
    total = ctx.db.query("totals").first()
    rows = [(d["worker"], d["seq"]) for d in ctx.db.query("acks").collect()]
    return {"total": 0 if total is None else total["n"], "rows": rows}


class Cluster:
    """A private PostgreSQL cluster in a temporary folder, run by ``pg_ctl``."""

    def __init__(self, bindir: Path, root: Path, port: int, as_user: list[str]):
        self.bindir, self.root, self.port, self.as_user = bindir, root, port, as_user
        self.data = root / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [*self.as_user, str(self.bindir / tool), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{tool} {args}: {done.stdout}{done.stderr}"

    def ctl(self, action: str, *args: str) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}"
        self.run(
            "pg_ctl", action, "-D", str(self.data), "-l", str(self.root / "log"), "-w",
            "-t", "60", "-o", options, *args,
        )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = Path(found[-1]) if found else Path(shutil.which("initdb") or "/nonexistent")
    if not initdb.exists() or not (initdb.parent / "pg_ctl").exists():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    pytest.importorskip("psycopg")
    root = Path(tempfile.mkdtemp(prefix="capsule-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    c = Cluster(initdb.parent, root, _free_port(), as_user)
    try:
        c.run("initdb", "-D", str(c.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
              "--no-sync")  # fmt: skip
        c.ctl("start")
        yield c
    finally:
        subprocess.run(
            [*as_user, str(c.bindir / "pg_ctl"), "stop", "-D", str(c.data), "-m", "immediate"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


class Clients:
    """Threads running ``record`` in a loop; each logs what was acknowledged and what failed."""

    def __init__(self, t: TestApp, count: int):
        self.t = t
        self.acked: list[list[int]] = [[] for _ in range(count)]
        self.failed: list[tuple[int, int, BaseException]] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(w,)) for w in range(count)]

    def _run(self, worker: int) -> None:
        seq = 0
        while not self.stop.is_set():
            seq += 1
            try:
                self.t.mutation(record, {"worker": worker, "seq": seq})
            except BaseException as exc:  # recorded and judged by the test
                with self._lock:
                    self.failed.append((worker, seq, exc))
                time.sleep(0.01)
                continue
            self.acked[worker].append(seq)

    def __enter__(self) -> Clients:
        for th in self._threads:
            th.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for th in self._threads:
            th.join(timeout=WAIT * 2)

    def progress(self, more: int) -> None:
        """Wait until every client has ``more`` acknowledgements beyond what it has now."""
        goal = [len(a) + more for a in self.acked]
        deadline = time.monotonic() + WAIT
        while any(len(a) < g for a, g in zip(self.acked, goal, strict=True)):
            assert time.monotonic() < deadline, (
                f"no progress in {WAIT} s: acked {[len(a) for a in self.acked]}, "
                f"failures {self.failed[-3:]!r}"
            )
            time.sleep(0.02)


def test_clients_ride_through_server_restarts(cluster: Cluster, soak: Any) -> None:
    from core.storage.postgres import PostgresStorage

    restarts = soak.size(1, 5)
    storage = PostgresStorage(cluster.url, max_readers=4, max_writers=2)
    with TestApp(app, storage=storage) as t:
        runtime = t.runtime
        with Clients(t, 3) as clients:
            clients.progress(5)
            for _ in range(restarts):
                for mode in ("fast", "immediate"):
                    cluster.ctl("restart", "-m", mode)
                    clients.progress(5)  # the same runtime commits again: it reconnected
        assert t.runtime is runtime
        unclear = [(w, s, repr(e)) for w, s, e in clients.failed if not isinstance(e, CLEAR)]
        assert not unclear, f"calls failed with unclear errors: {unclear[:5]}"
        seen = t.query(tally)
    rows = set(map(tuple, seen["rows"]))
    for worker, seqs in enumerate(clients.acked):
        lost = [s for s in seqs if (worker, s) not in rows]
        assert not lost, f"worker {worker}: acknowledged writes lost: {lost}"
    assert seen["total"] == len(seen["rows"]), "a mutation was applied in part"
    assert len(rows) <= sum(map(len, clients.acked)) + len(clients.failed)
    report = check_closed_storage(PostgresStorage(cluster.url))
    assert report.ok, "\n".join(format_report(report))
    soak.record(
        rounds=restarts * 2,
        faults=len(clients.failed),
        acked=sum(map(len, clients.acked)),
        anomalies=0,
    )
