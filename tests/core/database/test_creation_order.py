"""The creation order served by the document key (issue 19), on every backend.

Ids carry their creation time, so a table's creation order is its id order: no creation-order
entry is stored for them. Databases written by the previous layout (millisecond ids, an entry
per document) and imports whose ids do not carry their creation time keep working.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

from core import App, Schema, SQLiteStorage, Table
from core.cli import main
from core.cli.stored import StoredDatabase
from core.encoding import encode_value
from core.ids import carries_time, time_bits
from core.integrity import check_storage
from core.storage.base import Storage
from core.testing import ManualClock, TestApp

ROOT = Path(__file__).resolve().parents[3]
LEGACY_DB = Path(__file__).resolve().parent / "data" / "legacy-v1.db"
LEGACY_START = 1_700_000_000.0
"""The manual clock the legacy database was written at (every creation time is just after)."""

legacy = App(
    Schema(
        tasks=Table({"text": str, "rank": int}).index("by_rank", ["rank"]),
        notes=Table({"body": str}),
    )
)
LEGACY_APP = f"{__name__}:legacy"
LEGACY_TEXTS = [f"t{i:02d}" for i in range(30) if i not in (3, 17)]
"""The legacy ``tasks`` in creation order (t03 and t17 were deleted)."""


class SettableClock(ManualClock):
    """A manual clock that may also go back (as a wall clock may)."""

    def go_back(self, seconds: float) -> None:
        self._now -= seconds


def insert_many(t: TestApp, table: str, texts: list[str]) -> list[str]:
    def body(ctx: Any) -> list[str]:
        return [ctx.db.insert(table, {"text": x, "rank": i % 5}) for i, x in enumerate(texts)]

    return list(t.run(body))


def creation_entries(t: TestApp, table: str) -> int:
    """Stored creation-order entries of ``table``, read straight from storage."""
    db = t.runtime.db
    info = db.space("").table(table)
    snap = db.storage.begin_read()
    try:
        return len(snap.scan_entries(info.creation_index.id, b"", None, limit=100_000))
    finally:
        snap.close()


def texts(t: TestApp, table: str = "tasks", order: str = "asc") -> list[str]:
    return [d["text"] for d in t.run(lambda ctx: ctx.db.query(table).order(order).collect())]


def page_of(t: TestApp, cursor: str | None, size: int, order: str = "asc") -> dict[str, Any]:
    def body(ctx: Any) -> dict[str, Any]:
        page = ctx.db.query("tasks").order(order).paginate(cursor, size)
        texts = [d["text"] for d in page.page]
        return {"texts": texts, "cursor": page.continue_cursor, "done": page.is_done}

    return dict(t.run(body))


def paged(t: TestApp, size: int, order: str = "asc") -> list[str]:
    out: list[str] = []
    cursor = None
    while True:
        page = page_of(t, cursor, size, order)
        out += page["texts"]
        cursor = page["cursor"]
        if page["done"]:
            return out


# -- ids ----------------------------------------------------------------------------------------


def test_ids_are_strictly_increasing_while_the_clock_stands_still_or_goes_back(
    storage: Storage,
) -> None:
    clock = SettableClock(1_000.0)
    with TestApp(legacy, storage=storage, clock=clock) as t:
        made = insert_many(t, "tasks", [f"a{i:03d}" for i in range(300)])  # one instant
        made += insert_many(t, "tasks", [f"b{i:03d}" for i in range(5)])
        clock.go_back(50.0)
        made += insert_many(t, "tasks", [f"c{i:03d}" for i in range(5)])
        clock.advance(500.0)
        made += insert_many(t, "tasks", [f"d{i:03d}" for i in range(5)])
        assert made == sorted(made) and len(set(made)) == len(made)
        docs = t.run(lambda ctx: ctx.db.query("tasks").collect())
        assert [d["_id"] for d in docs] == made
        times = [d["_creation_time"] for d in docs]
        assert times == sorted(times) and len(set(times)) == len(times)
        assert all(carries_time(d["_id"], time_bits(d["_creation_time"])) for d in docs)
        assert creation_entries(t, "tasks") == 0  # no insert wrote a creation-order entry
        assert check_storage(storage).ok


_OTHER_PROCESS = """
import sys
from core import SQLiteStorage
from core.testing import ManualClock, TestApp
from tests.core.database.test_creation_order import legacy

clock = ManualClock(float(sys.argv[2]))
with TestApp(legacy, storage=SQLiteStorage(sys.argv[1]), clock=clock) as t:
    for i in range(5):
        t.run(lambda ctx: ctx.db.insert("tasks", {"text": f"{clock.time():.0f}", "rank": 0}))
        clock.advance(2.0)
"""


def test_ids_of_two_processes_interleave_by_creation_time(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    clock = ManualClock(2_000.0)  # this process: even seconds; the other one: odd seconds
    with TestApp(legacy, storage=SQLiteStorage(path), clock=clock) as t:
        for _ in range(5):
            t.run(lambda ctx: ctx.db.insert("tasks", {"text": f"{clock.time():.0f}", "rank": 0}))
            clock.advance(2.0)
        subprocess.run(
            [sys.executable, "-c", _OTHER_PROCESS, str(path), "2001"], cwd=ROOT, check=True
        )
        docs = t.run(lambda ctx: ctx.db.query("tasks").collect())
        assert [d["text"] for d in docs] == [str(2000 + i) for i in range(10)]
        ids = [d["_id"] for d in docs]
        assert ids == sorted(ids)  # id order is creation order across processes
        assert creation_entries(t, "tasks") == 0


# -- reads through the documents table ------------------------------------------------------------


def test_creation_order_ranges_pages_and_reverse_read_the_documents_table(storage: Storage) -> None:
    clock = ManualClock(5_000.0)
    with TestApp(legacy, storage=storage, clock=clock) as t:
        names = []
        for i in range(40):
            names.append(f"x{i:02d}")
            insert_many(t, "tasks", [names[-1]])
            clock.advance(1.0 if i % 3 else 0.0)
        assert texts(t) == names and texts(t, order="desc") == names[::-1]
        assert paged(t, 7) == names and paged(t, 6, "desc") == names[::-1]
        docs = t.run(lambda ctx: ctx.db.query("tasks").collect())
        lo, hi = docs[10]["_creation_time"], docs[20]["_creation_time"]
        ranged = t.run(
            lambda ctx: (
                ctx.db.query("tasks")
                .with_index(
                    "by_creation_time",
                    lambda q: q.gte("_creation_time", lo).lt("_creation_time", hi),
                )
                .collect()
            )
        )
        assert [d["text"] for d in ranged] == names[10:20]
        # Point reads in creation order (first() / unique()) read the documents too.
        assert t.run(lambda ctx: ctx.db.query("tasks").first())["text"] == names[0]
        at = docs[5]["_creation_time"]
        point = t.run(
            lambda ctx: (
                ctx.db.query("tasks")
                .with_index("by_creation_time", lambda q: q.eq("_creation_time", at))
                .unique()
            )
        )
        assert point is not None and point["text"] == names[5]
        assert creation_entries(t, "tasks") == 0


# -- the previous layout -------------------------------------------------------------------------


def open_legacy(tmp_path: Path) -> Path:
    path = tmp_path / "legacy.db"
    shutil.copy(LEGACY_DB, path)
    return path


def test_a_database_of_the_previous_layout_reads_in_creation_order(tmp_path: Path) -> None:
    path = open_legacy(tmp_path)
    with TestApp(legacy, storage=SQLiteStorage(path), clock=ManualClock(LEGACY_START + 60)) as t:
        docs = t.run(lambda ctx: ctx.db.query("tasks").collect())
        ids = [d["_id"] for d in docs]
        assert ids != sorted(ids)  # millisecond ids: their order is not the creation order
        assert [d["text"] for d in docs] == LEGACY_TEXTS
        assert texts(t, order="desc") == LEGACY_TEXTS[::-1]
        assert paged(t, 4) == LEGACY_TEXTS and paged(t, 5, "desc") == LEGACY_TEXTS[::-1]
        assert [d["body"] for d in t.run(lambda ctx: ctx.db.query("notes").collect())] == [
            "n0",
            "n1",
            "n2",
        ]
        by_rank = t.run(lambda ctx: ctx.db.query("tasks").with_index("by_rank").collect())
        assert [(d["rank"], d["text"]) for d in by_rank] == sorted(
            (100 if x == "t05" else int(x[1:]) % 7, x) for x in LEGACY_TEXTS
        )
        assert creation_entries(t, "tasks") == 28


def test_a_database_of_the_previous_layout_takes_writes_and_stays_consistent(
    tmp_path: Path,
) -> None:
    path = open_legacy(tmp_path)
    clock = ManualClock(LEGACY_START + 60)
    with TestApp(legacy, storage=SQLiteStorage(path), clock=clock) as t:
        new = insert_many(t, "tasks", ["u0", "u1", "u2"])
        old = {d["text"]: d["_id"] for d in t.run(lambda ctx: ctx.db.query("tasks").collect())}

        def change(ctx: Any) -> None:
            ctx.db.delete(old["t00"])
            ctx.db.delete(new[1])
            ctx.db.patch(old["t29"], {"rank": 6})
            ctx.db.patch(new[0], {"rank": 4})

        t.run(change)
        want = [x for x in LEGACY_TEXTS if x != "t00"] + ["u0", "u2"]
        assert texts(t) == want and paged(t, 3) == want and paged(t, 4, "desc") == want[::-1]
        assert creation_entries(t, "tasks") == 27  # the old documents' entries, no new ones
        # A page cursor taken in the old part continues into the new part.
        first = page_of(t, None, 26)
        rest = page_of(t, first["cursor"], 10)
        assert rest["texts"] == ["t29", "u0", "u2"] and rest["done"]
    storage = SQLiteStorage(path)
    storage.open()
    try:
        report = check_storage(storage)
    finally:
        storage.close()
    assert report.ok, report.problems
    with StoredDatabase(f"sqlite:///{path}") as db:  # capsule data / export, without the app
        table = db.table("tasks")
        assert [d["text"] for d in db.documents(table)] == want
        assert [d["text"] for d in db.documents(table, reverse=True, limit=3)] == want[:-4:-1]
    with TestApp(legacy, storage=SQLiteStorage(path), clock=clock) as t:  # and it opens again
        assert texts(t) == want


def test_an_import_of_ids_that_do_not_carry_their_time_keeps_creation_order(
    tmp_path: Path,
) -> None:
    out = tmp_path / "export"
    legacy_url = f"sqlite:///{open_legacy(tmp_path)}"
    assert main(["export", "--path", str(out), "--db", legacy_url]) == 0
    copy = tmp_path / "copy.db"
    assert main(["import", str(out), "--app", LEGACY_APP, "--db", f"sqlite:///{copy}"]) == 0
    clock = ManualClock(LEGACY_START + 60)
    with TestApp(legacy, storage=SQLiteStorage(copy), clock=clock) as t:
        assert texts(t) == LEGACY_TEXTS and paged(t, 9, "desc") == LEGACY_TEXTS[::-1]
        assert creation_entries(t, "tasks") == 28  # their ids do not carry their time
        insert_many(t, "tasks", ["after"])
        assert texts(t) == [*LEGACY_TEXTS, "after"]
        assert creation_entries(t, "tasks") == 28
    storage = SQLiteStorage(copy)
    storage.open()
    try:
        assert check_storage(storage).ok
    finally:
        storage.close()


def test_an_import_of_the_new_layout_stores_no_creation_entry(tmp_path: Path) -> None:
    source, copy, out = tmp_path / "source.db", tmp_path / "copy.db", tmp_path / "export"
    with TestApp(legacy, storage=SQLiteStorage(source), clock=ManualClock(3_000.0)) as t:
        made = insert_many(t, "tasks", [f"n{i}" for i in range(20)])
    assert main(["export", "--path", str(out), "--db", f"sqlite:///{source}"]) == 0
    assert main(["import", str(out), "--app", LEGACY_APP, "--db", f"sqlite:///{copy}"]) == 0
    with TestApp(legacy, storage=SQLiteStorage(copy), clock=ManualClock(4_000.0)) as t:
        docs = t.run(lambda ctx: ctx.db.query("tasks").collect())
        assert [d["_id"] for d in docs] == made
        assert creation_entries(t, "tasks") == 0


# -- the integrity check -----------------------------------------------------------------------


def checked(path: Path) -> list[tuple[str, str]]:
    storage = SQLiteStorage(path)
    storage.open()
    try:
        return [(p.kind, p.index) for p in check_storage(storage).problems]
    finally:
        storage.close()


def test_the_integrity_check_knows_which_creation_entries_are_stored(tmp_path: Path) -> None:
    path = open_legacy(tmp_path)
    with TestApp(legacy, storage=SQLiteStorage(path), clock=ManualClock(LEGACY_START + 60)) as t:
        new = insert_many(t, "tasks", ["u0"])[0]
        info = t.runtime.db.space("").table("tasks")
        creation = info.creation_index.id
        old = {d["text"]: d for d in t.run(lambda ctx: ctx.db.query("tasks").collect())}
    assert checked(path) == []
    conn = sqlite3.connect(path)
    with conn:  # an entry for an id that carries its time is one too many
        key = encode_value(old["u0"]["_creation_time"]) + encode_value(new)
        conn.execute("INSERT INTO index_entries VALUES (?, ?, ?, x'')", (creation, key, new))
    assert checked(path) == [("stray_entry", "by_creation_time")]
    with conn:  # and an old document without its entry is out of the creation order
        conn.execute("DELETE FROM index_entries WHERE idx = ? AND doc = ?", (creation, new))
        conn.execute(
            "DELETE FROM index_entries WHERE idx = ? AND doc = ?", (creation, old["t09"]["_id"])
        )
    conn.close()
    assert checked(path) == [("missing_entry", "by_creation_time")]


def legacy_id(table: int, millis: int) -> str:
    """An id of the previous layout: table, wall-clock milliseconds, 80 random bits."""
    raw = table.to_bytes(2, "big") + millis.to_bytes(6, "big") + os.urandom(10)
    n = int.from_bytes(raw + (zlib.crc32(raw) & 0xFFFF).to_bytes(2, "big"), "big")
    alphabet = "0123456789abcdefghijklmnopqrstuv"
    return "".join(alphabet[(n >> s) & 31] for s in range(155, -1, -5))


def test_a_table_mixing_both_kinds_of_ids_reads_and_writes_in_creation_order(
    storage: Storage,
) -> None:
    clock = ManualClock(10_000.0)
    with TestApp(legacy, storage=storage, clock=clock) as t:
        db = t.runtime.db
        space = db.space("")
        number = space.table("tasks").number
        # Ids in an order unrelated to their creation times, as the previous layout made them.
        old = [legacy_id(number, 1_700_000_000_000 + (7 * i) % 10) for i in range(12)]
        txn = db.transaction(now=clock.time())
        for i, doc_id in enumerate(old):
            txn.insert_with_id(
                space,
                "tasks",
                {"text": f"o{i:02d}", "rank": i},
                doc_id=doc_id,
                creation_time=9.0 + i,
            )
        db.commit(txn)
        txn.close()
        insert_many(t, "tasks", [f"n{i:02d}" for i in range(12)])
        want = [f"o{i:02d}" for i in range(12)] + [f"n{i:02d}" for i in range(12)]
        assert texts(t) == want and texts(t, order="desc") == want[::-1]
        assert paged(t, 5) == want and paged(t, 7, "desc") == want[::-1]
        assert creation_entries(t, "tasks") == 12  # the old ids' entries only

        def change(ctx: Any) -> None:
            ctx.db.delete(old[0])
            ctx.db.patch(old[5], {"rank": 99})

        t.run(change)
        assert texts(t) == want[1:] and creation_entries(t, "tasks") == 11
        assert check_storage(storage).ok
