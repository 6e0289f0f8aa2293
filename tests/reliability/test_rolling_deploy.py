"""A rolling deploy under load: version 1 keeps writing in its own process while version 2
adds indexes; every index must agree with the documents (issue 11, defect 4, in a process).

The writer is killed with SIGKILL at the end; the integrity checker (``capsule check``) then
finds no inconsistency, every acknowledged insert that was not deleted is there, and version
2's indexes answer exactly what a full scan does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from core import App, Schema, Table
from core.integrity import check_storage, format_report
from core.storage.base import Storage
from core.testing import TestApp

APP = Path(__file__).with_name("deploy_app.py")
ROOT = Path(__file__).resolve().parents[2]
OWNERS = ["ann", "bob", "cy"]

v2 = App(
    Schema(
        items=Table({"owner": str, "text": str})
        .index("by_owner", ["owner"])
        .search_index("search_text", search_field="text", filter_fields=["owner"])
    )
)


def _acks(proc: subprocess.Popen[str], count: int, into: list[dict[str, Any]]) -> None:
    assert proc.stdout is not None
    for _ in range(count):
        line = proc.stdout.readline()
        assert line, "the writer ended early (see its stderr above)"
        into.append(json.loads(line))


def test_writes_of_the_old_version_keep_the_new_indexes_whole(
    storage: Storage, tmp_path: Path, soak: Any
) -> None:
    writes = soak.size(60, 600)
    acked: list[dict[str, Any]] = []
    with (tmp_path / "writer.log").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(APP), storage.url],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    try:
        _acks(proc, writes // 3, acked)  # version 1 alone
        with TestApp(v2, storage=storage) as t:  # version 2 opens: new indexes, backfilled
            _acks(proc, writes, acked)  # version 1 goes on writing beside it
            proc.kill()
            proc.wait(30)

            def scan(ctx: Any) -> dict[str, Any]:
                docs = ctx.db.query("items").collect()
                by_owner = {
                    o: sorted(
                        d["_id"]
                        for d in ctx.db.query("items").with_index(
                            "by_owner", lambda q, o=o: q.eq("owner", o)
                        )
                    )
                    for o in OWNERS
                }
                found = ctx.db.query("items").with_search_index(
                    "search_text", lambda q: q.search("text", "apple")
                )
                return {
                    "docs": docs,
                    "by_owner": by_owner,
                    "apple": sorted(d["_id"] for d in found.collect()),
                }

            seen = t.run(scan)
            report = check_storage(storage)  # what ``capsule check`` runs
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
    docs = {d["_id"]: d for d in seen["docs"]}
    deleted = {a["deleted"] for a in acked if a["deleted"]}
    assert {a["new"] for a in acked} - deleted <= set(docs)  # nothing acknowledged is lost
    for owner in OWNERS:
        assert seen["by_owner"][owner] == sorted(i for i, d in docs.items() if d["owner"] == owner)
    assert seen["apple"] == sorted(i for i, d in docs.items() if "apple" in d["text"])
    assert report.ok, "\n".join(format_report(report))
    soak.record(cases=len(acked), anomalies=0)
