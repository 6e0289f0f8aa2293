"""Defaults are stored data: a table gaining a defaulted field is backfilled at open, resumably.

Each test fills a table under the old shape, then opens the app with a shape that adds a field
with a default (and an index on it): every old document must read back with the default, and
the index must find them all. The crash test kills a real child process with SIGKILL in the
middle of the backfill, inside one of its storage transactions.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pydantic
import pytest

from core import App, Schema, Table
from core.cli import main
from core.encoding import load_document
from core.indexes import creation
from core.storage import open_storage
from core.storage.base import Storage
from core.testing import TestApp


class Old(pydantic.BaseModel):
    title: str
    n: int


class New(pydantic.BaseModel):
    title: str
    n: int
    priority: int = 0
    tags: list[str] = []


def old_app() -> App:
    return App(Schema(tasks=Table(Old).index("by_n", ["n"])))


def new_app() -> App:
    return App(Schema(tasks=Table(New).index("by_n", ["n"]).index("by_prio", ["priority"])))


new = new_app()
NEW_APP = f"{__name__}:new"


def size(storage: Storage) -> int:
    """10,000 documents on SQLite; fewer on PostgreSQL, where inserting them is slower."""
    return 10_000 if storage.url.startswith("sqlite") else 2_000


def fill(storage: Storage, n: int) -> dict[str, dict[str, Any]]:
    with TestApp(old_app(), storage=storage) as t:
        t.run(
            lambda ctx: [ctx.db.insert("tasks", {"title": f"t{i}", "n": i}) for i in range(n)][:1]
        )
    docs = stored(storage.url)
    assert len(docs) == n
    return {d["_id"]: d for d in docs}


def stored(url: str) -> list[dict[str, Any]]:
    """Every stored document, read from storage directly (no schema, no backfill)."""
    storage = open_storage(url)
    storage.open()
    try:
        tables, indexes = storage.load_catalog()
        number = next(t.number for t in tables if t.name == "tasks")
        index = next(i.id for i in indexes if i.table == number and i.name == "by_creation_time")
        snap = storage.begin_read()
        try:
            rows = creation.scan(snap, number, index, b"", None, reverse=False, limit=1_000_000)
            return [load_document(r.doc.data) for r in rows]
        finally:
            snap.close()
    finally:
        storage.close()


def check_backfilled(t: TestApp, before: dict[str, dict[str, Any]]) -> None:
    docs = stored(t.runtime.db.storage.url)
    assert len(docs) == len(before)
    for doc in docs:
        assert doc == {**before[doc["_id"]], "priority": 0, "tags": []}
    found = t.run(
        lambda ctx: len(
            ctx.db.query("tasks").with_index("by_prio", lambda q: q.eq("priority", 0)).collect()
        )
    )
    assert found == len(before)
    by_n = t.run(
        lambda ctx: ctx.db.query("tasks").with_index("by_n", lambda q: q.eq("n", 7)).unique()
    )
    assert by_n is not None and by_n["priority"] == 0


def test_a_defaulted_field_is_stored_in_every_old_document_and_indexed(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    before = fill(storage, size(storage))
    with caplog.at_level(logging.INFO, logger="capsule.database"):
        with TestApp(new_app(), storage=storage) as t:
            assert t.runtime.db.backfilled == len(before)
            check_backfilled(t, before)
            t.run(lambda ctx: ctx.db.insert("tasks", {"title": "new", "n": -1, "priority": 3}))
    progress = [r.getMessage() for r in caplog.records if "storing defaults" in r.getMessage()]
    assert progress and f"{len(before)} of {len(before)} documents checked" in progress[-1]
    # Settled: the next open rewrites nothing.
    with TestApp(new_app(), storage=storage) as t:
        assert t.runtime.db.backfilled == 0
        assert len(stored(storage.url)) == len(before) + 1


CHILD = """
import sys, time

from core import App, Schema, Table
from core.cli import main
from core.database import catalog
from core.storage import open_storage
from core.testing import TestApp
from tests.core.database.test_defaults import new_app

URL, AFTER = sys.argv[1], int(sys.argv[2])
catalog.BACKFILL_BATCH = 100
storage = open_storage(URL)
real_begin = storage.begin_write
applied = 0


class Session:
    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def apply(self, items):
        global applied
        self.inner.apply(items)
        applied += 1
        if applied > AFTER:  # inside an uncommitted batch: wait to be killed
            print("KILL ME", flush=True)
            time.sleep(3600)


class Begin:
    def __init__(self, cm):
        self.cm = cm

    def __enter__(self):
        return Session(self.cm.__enter__())

    def __exit__(self, *exc):
        return self.cm.__exit__(*exc)


storage.begin_write = lambda **kw: Begin(real_begin(**kw))
with TestApp(new_app(), storage=storage):
    print("FINISHED", flush=True)
"""


def test_a_backfill_killed_mid_way_resumes_at_the_next_open(
    tmp_path: Path, storage: Storage, capsys: pytest.CaptureFixture[str]
) -> None:
    before = fill(storage, size(storage))
    script = tmp_path / "backfill_child.py"
    script.write_text(CHILD)
    # Applies: the open's own session (catalog), then one per batch of 100 documents.
    child = subprocess.Popen(
        [sys.executable, str(script), storage.url, "6"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(child.stdout.readline()))
    reader.start()
    reader.join(120)
    if not line or line[0].strip() != "KILL ME":
        child.kill()
        pytest.fail(f"the child did not reach the backfill: {line} {child.communicate()[1]}")
    # The child holds the write lock in the middle of a batch: reads go on meanwhile.
    assert len(stored(storage.url)) == len(before)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    docs = stored(storage.url)
    done = [d for d in docs if "priority" in d]
    assert 0 < len(done) < len(before)  # killed in the middle
    # The status command reports what is left, changing nothing.
    assert main(["migrate", "--status", "--app", NEW_APP, "--db", storage.url]) == 0
    left = len(before) - len(done)
    assert f"table tasks: {left:,} of {len(before):,} documents lack stored defaults" in (
        capsys.readouterr().out
    )
    assert len([d for d in stored(storage.url) if "priority" in d]) == len(done)
    with TestApp(new_app(), storage=storage) as t:
        # Documents rewritten before the kill fit already: none is rewritten again.
        assert t.runtime.db.backfilled == len(before) - len(done)
        check_backfilled(t, before)


def test_processes_opening_at_once_backfill_each_document_once(storage: Storage) -> None:
    before = fill(storage, size(storage) // 2)
    counts: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def open_one() -> None:
        try:
            start.wait()
            with TestApp(new_app(), storage=open_storage(storage.url)) as t:
                counts.append(t.runtime.db.backfilled)
                check_backfilled(t, before)
        except BaseException as exc:  # reported below
            errors.append(exc)

    from core.database import catalog

    batch, catalog.BACKFILL_BATCH = catalog.BACKFILL_BATCH, 50
    try:
        threads = [threading.Thread(target=open_one) for _ in range(3)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        catalog.BACKFILL_BATCH = batch
    assert not errors, errors
    assert sum(counts) == len(before)
