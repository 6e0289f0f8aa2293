"""The ``Storage`` contract, run on every backend (the ``storage`` fixture)."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import App, Schema, Table
from core.storage.base import (
    CatalogIndex,
    CatalogTable,
    CommitBatchItem,
    DocumentWrite,
    IndexRow,
    Storage,
)
from core.testing import FaultyStorage, TestApp
from core.values import INT64_MAX, INT64_MIN


@pytest.fixture
def opened(storage: Storage) -> Iterator[Storage]:
    storage.open()
    storage.open()  # idempotent
    try:
        yield storage
    finally:
        storage.close()


def write(doc_id: str, data: bytes | None, *, added: Any = (), removed: Any = ()) -> DocumentWrite:
    return DocumentWrite(
        id=doc_id,
        table=1,
        creation_time=1.5,
        data=data,
        added_entries=list(added),
        removed_entries=list(removed),
    )


def commit(storage: Storage, ts: int, *writes: DocumentWrite, log: bytes = b"log") -> None:
    with storage.begin_write() as w:
        assert w.latest_ts() < ts
        w.apply([CommitBatchItem(ts=ts, writes=list(writes), log_record=log)])


def keys(rows: list[IndexRow]) -> list[bytes]:
    return [r.key for r in rows]


def test_a_fresh_storage_is_empty(opened: Storage) -> None:
    assert opened.load_catalog() == ([], [])
    with opened.begin_write() as w:
        assert w.latest_ts() == 0 and w.read_log(0) == []
    snap = opened.begin_read()
    try:
        assert snap.ts == 0 and snap.get("nope") is None
        assert snap.scan(1, b"", None, reverse=False, limit=10) == []
    finally:
        snap.close()


def test_catalog_rows_persist_and_dropped_indexes_lose_their_entries(opened: Storage) -> None:
    with opened.begin_write() as w:
        w.put_catalog(
            [CatalogTable(number=1, namespace="", name="t", fingerprint="f1")],
            [
                CatalogIndex(id=1, table=1, name="by_creation_time", spec="btree:"),
                CatalogIndex(id=2, table=1, name="by_x", spec="btree:x"),
            ],
            [],
        )
    commit(opened, 10, write("d1", b"doc", added=[(2, b"k1", b""), (1, b"c1", b"")]))
    with opened.begin_write() as w:
        w.put_catalog([CatalogTable(number=1, namespace="", name="t", fingerprint="f2")], [], [2])
    tables, indexes = opened.load_catalog()
    assert tables == [CatalogTable(number=1, namespace="", name="t", fingerprint="f2")]
    assert [i.name for i in indexes] == ["by_creation_time"]
    snap = opened.begin_read()
    try:
        assert snap.scan_entries(2, b"", None, limit=10) == []
        assert len(snap.scan_entries(1, b"", None, limit=10)) == 1
    finally:
        snap.close()


def test_documents_and_index_entries_are_written_and_read_back(opened: Storage) -> None:
    entries = [(7, bytes([k]), b"v%d" % k) for k in (5, 1, 9, 3, 7)]
    commit(
        opened,
        100,
        *[write(f"d{e[1][0]}", b"body%d" % e[1][0], added=[e]) for e in entries],
    )
    snap = opened.begin_read()
    try:
        assert snap.ts == 100
        row = snap.get("d5")
        assert row is not None and (row.id, row.table, row.creation_time, row.data) == (
            "d5",
            1,
            1.5,
            b"body5",
        )
        assert keys(snap.scan(7, b"", None, reverse=False, limit=10)) == [
            bytes([k]) for k in (1, 3, 5, 7, 9)
        ]
        assert keys(snap.scan(7, b"", None, reverse=True, limit=10)) == [
            bytes([k]) for k in (9, 7, 5, 3, 1)
        ]
        assert keys(snap.scan(7, b"\x03", b"\x09", reverse=False, limit=10)) == [
            b"\x03",
            b"\x05",
            b"\x07",
        ]
        assert keys(snap.scan(7, b"\x03", b"\x09", reverse=True, limit=2)) == [b"\x07", b"\x05"]
        assert keys(snap.scan(7, b"", None, reverse=False, limit=2)) == [b"\x01", b"\x03"]
        rows = snap.scan(7, b"\x05", b"\x06", reverse=False, limit=10)
        assert rows[0].value == b"v5" and rows[0].doc.id == "d5" and rows[0].doc.data == b"body5"
        assert snap.scan_entries(7, b"\x02", None, limit=2) == [
            (b"\x03", b"v3", "d3"),
            (b"\x05", b"v5", "d5"),
        ]
        assert snap.scan(8, b"", None, reverse=False, limit=10) == []
    finally:
        snap.close()


def test_documents_are_scanned_by_id_range_in_both_directions(opened: Storage) -> None:
    ids = ["0a" + "x" * 30, "0b" + "0" * 30, "0b" + "v" * 30, "0c" + "1" * 30, "1" + "0" * 31]
    commit(opened, 1, *[write(doc_id, doc_id.encode()[:3]) for doc_id in reversed(ids)])
    snap = opened.begin_read()
    try:
        found = snap.scan_documents("0b", "0d", reverse=False, limit=10)
        assert [r.id for r in found] == ids[1:4]
        assert (found[0].table, found[0].creation_time, found[0].data) == (1, 1.5, b"0b0")
        assert [r.id for r in snap.scan_documents("0b", "0d", reverse=True, limit=2)] == [
            ids[3],
            ids[2],
        ]
        after = ids[1] + "0"  # just above an id (the creation-order scan continues so)
        assert [r.id for r in snap.scan_documents(after, "w", reverse=False, limit=2)] == ids[2:4]
        assert [r.id for r in snap.scan_documents("", "w", reverse=False, limit=10)] == ids
        assert snap.scan_documents("2", "w", reverse=False, limit=10) == []
    finally:
        snap.close()


def test_updates_and_deletes_replace_documents_and_entries(opened: Storage) -> None:
    commit(
        opened,
        1,
        write("a", b"v1", added=[(1, b"ka1", b"")]),
        write("b", b"b1", added=[(1, b"kb", b"")]),
    )
    commit(opened, 2, write("a", b"v2", added=[(1, b"ka2", b"")], removed=[(1, b"ka1")]))
    commit(opened, 3, write("b", None, removed=[(1, b"kb")]))
    snap = opened.begin_read()
    try:
        assert snap.get("a").data == b"v2"
        assert snap.get("b") is None
        assert keys(snap.scan(1, b"", None, reverse=False, limit=10)) == [b"ka2"]
    finally:
        snap.close()


def test_a_snapshot_does_not_see_later_commits(opened: Storage) -> None:
    commit(opened, 5, write("a", b"old", added=[(1, b"a", b"")]))
    before = opened.begin_read()
    try:
        assert before.get("a").data == b"old"  # starts the snapshot
        commit(opened, 6, write("a", b"new"), write("b", b"x", added=[(1, b"b", b"")]))
        assert before.ts == 5
        assert before.get("a").data == b"old"
        assert before.get("b") is None
        assert keys(before.scan(1, b"", None, reverse=False, limit=10)) == [b"a"]
        after = opened.begin_read()
        try:
            assert after.ts == 6 and after.get("b") is not None
        finally:
            after.close()
    finally:
        before.close()


def test_the_write_session_sees_its_own_writes_and_rolls_back_on_error(opened: Storage) -> None:
    with pytest.raises(RuntimeError):
        with opened.begin_write() as w:
            w.apply(
                [
                    CommitBatchItem(
                        ts=9, writes=[write("x", b"1", added=[(1, b"x", b"")])], log_record=b"l"
                    )
                ]
            )
            inner = w.snapshot()
            assert inner.get("x") is not None
            assert keys(inner.scan(1, b"", None, reverse=False, limit=5)) == [b"x"]
            raise RuntimeError("abort")
    with opened.begin_write() as w:
        assert w.latest_ts() == 0 and w.read_log(0) == []
    snap = opened.begin_read()
    try:
        assert snap.get("x") is None and snap.scan_entries(1, b"", None, limit=5) == []
    finally:
        snap.close()


def test_the_commit_log_reads_in_order_and_prunes_all_but_the_newest(opened: Storage) -> None:
    with opened.begin_write() as w:
        w.apply([CommitBatchItem(ts=ts, writes=[], log_record=b"r%d" % ts) for ts in (10, 20, 30)])
    commit(opened, 40, log=b"r40")
    with opened.begin_write() as w:
        assert w.latest_ts() == 40
        assert w.read_log(15) == [(20, b"r20"), (30, b"r30"), (40, b"r40")]
        w.prune_log(35)
        assert [ts for ts, _ in w.read_log(0)] == [40]
        w.prune_log(1000)
        assert [ts for ts, _ in w.read_log(0)] == [40]  # the newest always stays
    assert opened.read_commits(0) == [(40, b"r40")]


def test_the_commit_step_is_exclusive_and_times_out(opened: Storage) -> None:
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with opened.begin_write():
            inside.set()
            leave.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert inside.wait(30)
        with pytest.raises(TimeoutError):
            with opened.begin_write(timeout=0.2):
                pass
    finally:
        leave.set()
        holder.join(30)
    with opened.begin_write(timeout=5) as w:
        assert w.latest_ts() == 0


# -- through the database ----------------------------------------------------------------------

app = App(Schema(docs=Table(), rows=Table({"n": int}).index("by_n", ["n"])))

storable = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(INT64_MIN, INT64_MAX)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text().filter(lambda k: not k.startswith("$")), inner, max_size=4)
    ),
    max_leaves=15,
)
bodies = st.dictionaries(
    st.text(min_size=1).filter(lambda k: not k.startswith(("_", "$"))), storable, max_size=5
)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@pytest.fixture
def t(storage: Storage) -> Iterator[TestApp]:
    with TestApp(app, storage=storage) as harness:
        yield harness


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies)
def test_values_round_trip_through_storage(t: TestApp, body: dict[str, Any]) -> None:
    doc_id = t.run(lambda ctx: ctx.db.insert("docs", body))
    back = t.run(lambda ctx: ctx.db.get(doc_id))
    assert same({k: v for k, v in back.items() if not k.startswith("_")}, body)
    assert back["_id"] == doc_id and isinstance(back["_creation_time"], float)


def test_scans_are_bounded_by_what_the_query_consumes(storage: Storage) -> None:
    counting = FaultyStorage(storage)
    with TestApp(app, storage=counting) as t:
        for _ in range(3):
            t.run(lambda ctx: [ctx.db.insert("rows", {"n": i}) for i in range(1000)] and None)
        counting.rows_scanned = 0
        got = t.run(lambda ctx: [d["n"] for d in ctx.db.query("rows").with_index("by_n").take(10)])
        assert got == [0] * 3 + [1] * 3 + [2] * 3 + [3]
        assert counting.rows_scanned <= 64, counting.rows_scanned
        counting.rows_scanned = 0
        assert t.run(lambda ctx: ctx.db.query("rows").order("desc").first())["n"] == 999
        assert counting.rows_scanned <= 64
        counting.rows_scanned = 0
        assert len(t.run(lambda ctx: ctx.db.query("rows").collect())) == 3000
        assert counting.rows_scanned == 3000
