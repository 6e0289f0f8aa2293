"""Crash storm: app processes under mixed load are killed with SIGKILL at random, K rounds.

Each worker (``storm_app.py live``) logs every operation it tries and every one acknowledged
to its own append-only file. The driver kills a random worker once it has made some progress
and starts a new one, round after round, then kills the rest, lets a fresh process finish
what is due (``storm_app.py finish``) and checks, against the logs:

* every acknowledged insert is present (unless a delete of it was tried), with its values;
* counters equal the acknowledged increments, give or take the calls in flight at a kill;
* transfers conserve the total; sharded counter and rate limiter count exactly what ran;
* every scheduled mutation ran exactly once, every acknowledged workflow finished with each
  mutation step applied exactly once;
* the integrity checker finds every index (b-tree, text, vector) in agreement.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from core.integrity import check_closed_storage, format_report
from core.storage.base import Storage

APP = Path(__file__).with_name("storm_app.py")
ROOT = Path(__file__).parents[2]
WAIT = 120.0


class Worker:
    """One live ``storm_app.py`` process and its acknowledgement log."""

    def __init__(self, tmp_path: Path, url: str, name: str, seed: int):
        self.name = name
        self.acklog = tmp_path / f"{name}.acks"
        self.errlog = tmp_path / f"{name}.err"
        with self.errlog.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(APP), "live", url, name, str(self.acklog), str(seed)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )

    def acks(self) -> int:
        if not self.acklog.exists():
            return 0
        return self.acklog.read_text().count('"phase": "ack"')

    def wait_for_acks(self, n: int) -> None:
        """Block until ``n`` operations were acknowledged (polls the log; bounded)."""

        deadline = time.monotonic() + WAIT
        while self.acks() < n:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read() if self.proc.stdout else ""
                raise AssertionError(
                    f"worker {self.name} exited {self.proc.returncode}: {out}"
                    f"{self.errlog.read_text()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {self.name} made no progress in {WAIT} s")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: nothing of the worker's cleanup runs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=WAIT)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def _entries(tmp_path: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(tmp_path.glob("*.acks")):
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:  # a line cut by the kill (never an ack: acks end with it)
                continue
    return out


def _finish(tmp_path: Path, url: str, keys: list[str]) -> dict[str, Any]:
    keys_file = tmp_path / "flow_keys.json"
    keys_file.write_text(json.dumps(keys))
    done = subprocess.run(
        [sys.executable, str(APP), "finish", url, str(keys_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.splitlines()[-1]))


def storm(tmp_path: Path, url: str, *, workers: int, rounds: int, seed: int) -> dict[str, Any]:
    """Run the storm; return the final report and the logs' tallies."""
    rng = random.Random(seed)
    live = [Worker(tmp_path, url, f"w{i}", rng.randrange(1 << 30)) for i in range(workers)]
    started = workers
    try:
        for _ in range(rounds):
            victim = rng.randrange(workers)
            w = live[victim]
            w.wait_for_acks(w.acks() + rng.randint(3, 25))
            w.kill()
            live[victim] = Worker(tmp_path, url, f"w{started}", rng.randrange(1 << 30))
            started += 1
        for w in live:
            w.wait_for_acks(rng.randint(1, 10))
    finally:
        for w in live:
            w.kill()
    entries = _entries(tmp_path)
    flows = sorted({e["key"] for e in entries if e["op"] == "flow" and e["phase"] == "ack"})
    return {"report": _finish(tmp_path, url, flows), "entries": entries, "kills": started}


def verify(result: dict[str, Any]) -> dict[str, int]:
    """Check the invariants; return the tallies (acks, in-flight) for the summary."""
    report, entries = result["report"], result["entries"]
    tried: dict[str, dict[str, Any]] = {}
    acked: dict[str, dict[str, Any]] = {}
    for e in entries:
        (tried if e["phase"] == "try" else acked)[e["key"]] = e
    inflight = Counter(tried[k]["op"] for k in tried if k not in acked)
    done = Counter(tried[k]["op"] for k in acked)

    def between(name: str, value: float, op: str) -> None:
        lo, hi = done[op], done[op] + inflight[op]
        assert lo <= value <= hi, f"{name} is {value}, acknowledged {lo}, in flight {inflight[op]}"

    between("counter hot", report["counters"].get("hot", 0), "incr")
    between("sharded counter", report["hits"], "shard")
    between("rate limiter use", report["limit_used"], "limit")
    assert sum(report["balances"]) == 8 * 1000, report["balances"]
    assert min(report["balances"]) >= 0

    deleted = {tried[k]["args"]["id"] for k in tried if tried[k]["op"] == "delete"}
    items = report["items"]
    for key, ack in acked.items():
        if tried[key]["op"] == "insert" and ack["result"] not in deleted:
            worker, seq = tried[key]["args"]["worker"], tried[key]["args"]["seq"]
            assert ack["result"] in items, f"acknowledged insert {key} ({ack['result']}) is lost"
            assert items[ack["result"]][:2] == [worker, seq]
    for key in acked:
        if tried[key]["op"] == "delete" and acked[key]["result"]:
            assert tried[key]["args"]["id"] not in items, f"acknowledged delete {key} undone"

    scheduled = {k for k in tried if tried[k]["op"] == "schedule"}
    assert all(n == 1 for n in report["jobs"].values()), report["jobs"]
    assert set(report["jobs"]) <= scheduled
    assert {k for k in acked if tried[k]["op"] == "schedule"} <= set(report["jobs"])

    for key, state in report["flows"].items():
        assert state == "success", f"workflow {key} is {state}"
        assert report["marks"].get(f"{key}/0") == 1 and report["marks"].get(f"{key}/1") == 1
    assert all(n == 1 for n in report["marks"].values()), report["marks"]
    return {"acked": len(acked), "in_flight": sum(inflight.values())}


def test_crash_storm(tmp_path: Path, storage: Storage, soak: Any) -> None:
    rounds = soak.size(3, 50)
    result = storm(tmp_path, storage.url, workers=2, rounds=rounds, seed=rounds)
    tallies = verify(result)
    integrity = check_closed_storage(storage)
    assert integrity.ok, "\n".join(format_report(integrity))
    assert tallies["acked"] > rounds
    soak.record(rounds=rounds, kills=result["kills"], anomalies=0, **tallies)
