"""The integrity checker (``core.integrity``, ``capsule check``) finds planted inconsistencies.

A database written through the app is consistent; then each test plants one defect below the
database layer (a write that skips the index maintainers, a lost entry, an orphan) and checks
that the checker names it, on both backends.
"""

from __future__ import annotations

from typing import Any

import pytest

from core import App, MutationCtx, Schema, Table
from core.cli import main
from core.encoding import dump_document, load_document
from core.integrity import check_closed_storage, format_report
from core.storage.base import CommitBatchItem, DocumentWrite, Storage
from core.testing import TestApp

app = App(
    Schema(
        notes=Table({"owner": str, "text": str, "v": list[float]})
        .index("by_owner", ["owner"])
        .search_index("search", search_field="text", filter_fields=["owner"])
        .vector_index("by_v", vector_field="v", dimensions=2, filter_fields=["owner"])
    )
)


@app.mutation
def add(ctx: MutationCtx, owner: str, text: str, x: float) -> str:
    return ctx.db.insert("notes", {"owner": owner, "text": text, "v": [x, 1.0]})


def _fill(storage: Storage) -> list[str]:
    with TestApp(app, storage=storage) as t:
        return [
            t.mutation(add, {"owner": f"o{i % 3}", "text": f"w{i} common", "x": i})
            for i in range(12)
        ]


def _plant(storage: Storage, doc_id: str, change: Any) -> None:
    """Rewrite one stored document below the database layer: ``change(write, stored)``."""
    storage.open()
    try:
        snap = storage.begin_read()
        row = snap.get(doc_id)
        snap.close()
        assert row is not None
        write = DocumentWrite(
            id=doc_id, table=row.table, creation_time=row.creation_time, data=row.data
        )
        change(write, load_document(row.data))
        with storage.begin_write() as w:
            ts = w.latest_ts() + 1
            w.apply([CommitBatchItem(ts=ts, writes=[write], log_record=b"")])
    finally:
        storage.close()


def _check(storage: Storage) -> Any:
    return check_closed_storage(storage)


def _index_id(storage: Storage, name: str) -> int:
    storage.open()
    try:
        return next(i.id for i in storage.load_catalog()[1] if i.name == name)
    finally:
        storage.close()


def test_a_database_written_by_the_app_is_consistent(storage: Storage) -> None:
    _fill(storage)
    report = _check(storage)
    assert report.ok, list(format_report(report))
    assert report.documents >= 12  # and the system tables' documents
    assert report.indexes >= 4  # creation time, by_owner, search, by_v (+ system tables)
    assert report.entries > 12 * 4


def test_a_document_changed_without_its_index_entries_is_found(storage: Storage) -> None:
    ids = _fill(storage)

    def stale(write: DocumentWrite, doc: dict[str, Any]) -> None:
        write.data = dump_document({**doc, "owner": "mallory", "text": "other words"})

    _plant(storage, ids[3], stale)
    report = _check(storage)
    assert not report.ok
    kinds = {(p.kind, p.index) for p in report.problems}
    # The b-tree and both filtered indexes disagree; the creation-time order still holds.
    assert ("missing_entry", "by_owner") in kinds
    assert ("stray_entry", "by_owner") in kinds
    assert ("missing_entry", "search") in kinds
    assert ("wrong_entry", "by_v") in kinds
    assert all(p.doc_id == ids[3] for p in report.problems)


def test_a_lost_index_entry_and_a_stray_one_are_found(storage: Storage) -> None:
    ids = _fill(storage)
    vec = _index_id(storage, "by_v")
    owner = _index_id(storage, "by_owner")

    def lose(write: DocumentWrite, doc: dict[str, Any]) -> None:
        from core.encoding import encode_value

        write.removed_entries = [(vec, encode_value(doc["_id"]))]
        write.added_entries = [(owner, b"\x00stray" + encode_value(doc["_id"]), b"")]

    _plant(storage, ids[0], lose)
    report = _check(storage)
    kinds = sorted((p.kind, p.index) for p in report.problems)
    assert kinds == [("missing_entry", "by_v"), ("stray_entry", "by_owner")]


def test_a_document_that_does_not_decode_is_found(storage: Storage) -> None:
    ids = _fill(storage)

    def corrupt(write: DocumentWrite, doc: dict[str, Any]) -> None:
        write.data = b"\xff\x00garbage"

    _plant(storage, ids[5], corrupt)
    report = _check(storage)
    assert any(p.kind == "bad_document" and p.doc_id == ids[5] for p in report.problems)


def test_capsule_check_exits_nonzero_on_a_planted_inconsistency(
    storage: Storage, capsys: Any
) -> None:
    ids = _fill(storage)
    assert main(["check", "--db", storage.url]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: ")

    def stale(write: DocumentWrite, doc: dict[str, Any]) -> None:
        write.data = dump_document({**doc, "owner": "zed"})

    _plant(storage, ids[1], stale)
    assert main(["check", "--db", storage.url]) == 1
    out = capsys.readouterr().out
    assert "missing_entry: notes.by_owner document " + ids[1] in out
    assert "problem(s)" in out.splitlines()[-1]


def test_capsule_check_refuses_a_missing_file(tmp_path: Any, capsys: Any) -> None:
    assert main(["check", "--db", f"sqlite:///{tmp_path}/none.db"]) == 1
    assert "There is no database" in capsys.readouterr().err


def test_the_report_lists_a_bounded_number_of_problems() -> None:
    from core.integrity import MAX_LISTED, Inconsistency, IntegrityReport

    report = IntegrityReport()
    for n in range(MAX_LISTED + 5):
        report.add(Inconsistency(kind="stray_entry", table="t", index="i", detail=str(n)))
    lines = list(format_report(report))
    assert len(lines) == MAX_LISTED + 2
    assert lines[-2] == "... and 5 more"
    assert not report.ok


@pytest.mark.parametrize("spec", ["nonsense:x"])
def test_an_index_without_a_maintainer_is_reported(storage: Storage, spec: str) -> None:
    _fill(storage)
    from core.storage.base import CatalogIndex

    storage.open()
    try:
        tables, indexes = storage.load_catalog()
        table = next(t for t in tables if t.name == "notes")
        with storage.begin_write() as w:
            top = max(i.id for i in indexes)
            w.put_catalog(
                [], [CatalogIndex(id=top + 1, table=table.number, name="odd", spec=spec)], []
            )
            w.put_catalog(
                [], [CatalogIndex(id=top + 2, table=9999, name="lost", spec="btree:")], []
            )
    finally:
        storage.close()
    kinds = sorted((p.kind, p.index) for p in _check(storage).problems)
    assert kinds == [("bad_index", "lost"), ("bad_index", "odd")]


def test_an_orphan_document_and_entries_of_an_unknown_index_are_found(storage: Storage) -> None:
    _fill(storage)
    storage.open()
    try:
        orphan = DocumentWrite(
            id="orphan1",
            table=9999,
            creation_time=1.0,
            data=dump_document({"_id": "orphan1", "_creation_time": 1.0}),
            added_entries=[(8888, b"k1", b""), (8888, b"k2", b"")],
        )
        with storage.begin_write() as w:
            w.apply([CommitBatchItem(ts=w.latest_ts() + 1, writes=[orphan], log_record=b"")])
    finally:
        storage.close()
    report = _check(storage)
    kinds = sorted((p.kind, p.table, p.index) for p in report.problems)
    assert kinds == [("orphan_document", "#9999", ""), ("unknown_index", "?", "#8888")]
    assert "2 entries" in str(report.problems[-1])
