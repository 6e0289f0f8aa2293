"""Read sets and write sets: what a transaction observed, and which commits touch it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from core import App, Schema, Table
from core.database.engine import Conflict
from core.database.readsets import KeyRange, ReadSet, WriteSet
from core.encoding import encode_value
from core.storage.base import Storage
from core.testing import TestApp


def test_documents_and_ranges_are_touched_by_matching_writes() -> None:
    reads = ReadSet()
    reads.add_doc("d1")
    reads.add_range(KeyRange(5, b"b", b"d"))
    reads.add_range(KeyRange(6, b"x", None))
    reads.tables.update({5: "tasks", 6: "notes"})

    def ws(doc: str, keys: list[tuple[int, bytes]], name: str = "t") -> WriteSet:
        w = WriteSet()
        w.add(doc, 1, name, keys)
        return w

    assert reads.touched_by(ws("d1", []))
    assert reads.touched_by(ws("d9", [(5, b"c")]))
    assert reads.touched_by(ws("d9", [(5, b"b")]))  # lo is inclusive
    assert not reads.touched_by(ws("d9", [(5, b"d")]))  # hi is exclusive
    assert not reads.touched_by(ws("d9", [(7, b"c")]))  # another index
    assert reads.touched_by(ws("d9", [(6, b"\xff\xff")]))  # unbounded above
    assert reads.tables_touched_by(ws("d9", [(5, b"c"), (6, b"y")])) == {"tasks", "notes"}
    assert reads.tables_touched_by(ws("d1", [], "docs")) == {"docs"}
    assert not ReadSet().touched_by(ws("d1", [(5, b"c")]))
    assert repr(KeyRange(1, b"a", None)) == "KeyRange(1, b'a', None)"


def test_write_sets_round_trip_through_the_commit_log() -> None:
    w = WriteSet()
    w.add("d1", 3, "tasks", [(5, b"k1"), (6, b"k2")])
    w.add("d2", 4, "notes", {(5, b"k3")})
    back = WriteSet.load(w.dump())
    assert back.docs == ["d1", "d2"] and back.tables == {3, 4}
    assert back.keys == {5: [b"k1", b"k3"], 6: [b"k2"]}
    assert back.doc_tables == {"d1": "tasks", "d2": "notes"}


# -- what a query's read set covers ------------------------------------------------------------

app = App(Schema(items=Table({"rank": int}).index("by_rank", ["rank"])))


@pytest.fixture
def t(storage: Storage) -> Iterator[TestApp]:
    with TestApp(app, storage=storage) as harness:
        harness.run(
            lambda ctx: [ctx.db.insert("items", {"rank": r}) for r in (10, 20, 30)] and None
        )
        yield harness


def conflicts(t: TestApp, read: Any, write: Any) -> bool:
    """Whether a transaction that ran ``read`` conflicts with a commit that ran ``write``."""
    db = t.runtime.db
    space = db.space("")
    txn = db.transaction()
    try:
        read(txn, space)
        t.run(write)
        txn.insert(space, "items", {"rank": 999})  # give it a write, so it validates
        try:
            db.commit(txn)
        except Conflict:
            return True
        return False
    finally:
        txn.close()


def first_by_rank(txn: Any, space: Any) -> None:
    info = space.table("items")
    rows = txn.scan(info, info.indexes["by_rank"], b"", None, reverse=False)
    next(rows)
    rows.close()


def all_by_rank(txn: Any, space: Any) -> None:
    info = space.table("items")
    list(txn.scan(info, info.indexes["by_rank"], b"", None, reverse=False))


def insert_rank(rank: int) -> Any:
    return lambda ctx: ctx.db.insert("items", {"rank": rank})


def test_a_scan_that_stops_early_covers_only_what_it_consumed(t: TestApp) -> None:
    assert conflicts(t, first_by_rank, insert_rank(5))  # lands before the first key read
    assert not conflicts(t, first_by_rank, insert_rank(25))  # beyond what was consumed
    assert conflicts(t, all_by_rank, insert_rank(1000))  # an exhausted scan covers its range


def test_a_point_read_conflicts_with_a_change_to_that_document_only(t: TestApp) -> None:
    doc = t.run(lambda ctx: ctx.db.insert("items", {"rank": 50}))
    t.run(lambda ctx: ctx.db.delete(doc))
    assert conflicts(t, lambda txn, space: txn.get(space, doc), lambda ctx: None) is False
    other = t.run(lambda ctx: ctx.db.query("items").first()["_id"])
    assert conflicts(t, lambda txn, space: txn.get(space, other), lambda ctx: ctx.db.delete(other))


def test_a_patch_conflicts_through_its_old_and_new_keys(t: TestApp) -> None:
    ten = t.run(lambda ctx: ctx.db.query("items").with_index("by_rank").first()["_id"])

    def read_ranks_above_100(txn: Any, space: Any) -> None:
        info = space.table("items")
        list(
            txn.scan(
                info, info.indexes["by_rank"], encode_value(100), encode_value(200), reverse=False
            )
        )

    # Moving a document into the range read is a phantom for the reader.
    assert conflicts(t, read_ranks_above_100, lambda ctx: ctx.db.patch(ten, {"rank": 150}))
