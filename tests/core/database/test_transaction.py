"""Transactions on every backend: read-your-writes, savepoints, atomicity, snapshots, limits."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Literal

import pytest

from core import (
    UNSET,
    App,
    Id,
    InvalidArgumentError,
    InvalidIdError,
    InvalidValueError,
    LimitExceededError,
    MutationCtx,
    QueryCtx,
    Schema,
    Table,
    UserError,
)
from core.database import transaction as transaction_module
from core.storage.base import Storage
from core.testing import TestApp

app = App(
    Schema(
        items=Table({"name": str, "rank": int, "tag": str | None})
        .index("by_rank", ["rank"])
        .index("by_tag_rank", ["tag", "rank"]),
        blobs=Table({"data": bytes}),
        loose=Table(),
    )
)


@app.mutation
def insert_three_then_fail(ctx: MutationCtx) -> None:
    for rank in range(3):
        ctx.db.insert("items", {"name": f"n{rank}", "rank": rank, "tag": "t"})
    raise RuntimeError("boom")


@app.mutation
def add(ctx: MutationCtx, name: str, rank: int) -> str:
    return ctx.db.insert("items", {"name": name, "rank": rank})


@app.mutation
def nested_fails(ctx: MutationCtx, rank: int) -> None:
    ctx.db.insert("items", {"name": "nested", "rank": rank})
    raise RuntimeError("nested failure")


@app.mutation
def outer_catches(ctx: MutationCtx) -> None:
    ctx.db.insert("items", {"name": "outer", "rank": 1})
    with pytest.raises(RuntimeError, match="nested failure"):
        ctx.run_mutation(nested_fails, {"rank": 2})


@app.query
def rank_of(ctx: QueryCtx, id: Id[Literal["items"]]) -> int:
    return int(ctx.db.get(id)["rank"])


@app.query
def read_twice(ctx: QueryCtx, id: str) -> list[int]:
    first = ctx.db.get(id)["rank"]
    RENDEZVOUS["read"].set()
    assert RENDEZVOUS["committed"].wait(10)
    return [first, ctx.db.get(id)["rank"]]


RENDEZVOUS: dict[str, threading.Event] = {}


@pytest.fixture
def t(storage: Storage) -> Iterator[TestApp]:
    with TestApp(app, storage=storage) as harness:
        yield harness


def ranks(ctx: Any, order: str = "asc", rng: Any = None) -> list[int]:
    q = ctx.db.query("items").with_index("by_rank", rng).order(order)
    return [d["rank"] for d in q.collect()]


def all_index_entries(t: TestApp, table: str) -> int:
    """Entries of every index of ``table``, read straight from storage."""
    db = t.runtime.db
    info = db.space("").table(table)
    snap = db.storage.begin_read()
    try:
        return sum(
            len(snap.scan_entries(index.id, b"", None, limit=10_000))
            for index in info.indexes.values()
        )
    finally:
        snap.close()


def insert_many(ctx: MutationCtx, table: str, body: dict[str, Any], n: int) -> None:
    for _ in range(n):
        ctx.db.insert(table, body)


def count(t: TestApp, table: str) -> int:
    return int(t.run(lambda ctx: len(ctx.db.query(table).collect())))


# -- atomicity -------------------------------------------------------------------------------


def test_a_failed_mutation_leaves_no_document_and_no_index_entry(t: TestApp) -> None:
    t.run(lambda ctx: ctx.db.insert("items", {"name": "keep", "rank": 9}))
    before = all_index_entries(t, "items")
    assert before == 2  # by_rank, by_tag_rank (the creation order needs no stored entry)
    with pytest.raises(RuntimeError, match="boom"):
        t.mutation(insert_three_then_fail)
    assert count(t, "items") == 1
    assert all_index_entries(t, "items") == before


def test_a_caught_nested_failure_undoes_only_the_nested_writes(t: TestApp) -> None:
    t.mutation(outer_catches)
    assert t.run(lambda ctx: [d["name"] for d in ctx.db.query("items").collect()]) == ["outer"]


def test_savepoints_restore_exactly_the_writes_before_them(t: TestApp) -> None:
    a = t.mutation(add, {"name": "a", "rank": 1})
    db = t.runtime.db
    space = db.space("")
    txn = db.transaction()
    b = txn.insert(space, "items", {"name": "b", "rank": 2})
    mark = txn.savepoint()
    txn.patch(space, a, {"rank": 10})
    txn.patch(space, b, {"rank": 20})
    txn.insert(space, "items", {"name": "c", "rank": 3})
    txn.delete(space, a)
    txn.rollback_to(mark)
    assert txn.get(space, a)["rank"] == 1 and txn.get(space, b)["rank"] == 2
    assert set(txn.writes) == {b}
    db.commit(txn)
    txn.close()
    assert t.run(lambda ctx: ranks(ctx)) == [1, 2]


# -- read your writes ------------------------------------------------------------------------


def test_reads_see_the_transactions_own_writes(t: TestApp) -> None:
    def body(ctx: MutationCtx) -> None:
        a = ctx.db.insert("items", {"name": "a", "rank": 5})
        b = ctx.db.insert("items", {"name": "b", "rank": 1})
        assert ctx.db.get(a)["name"] == "a"
        assert ranks(ctx) == [1, 5] and ranks(ctx, "desc") == [5, 1]
        ctx.db.delete(b)
        assert ctx.db.get(b) is None and ranks(ctx) == [5]
        ctx.db.replace(a, {"name": "a2", "rank": 6})
        assert ctx.db.get(a)["name"] == "a2" and ranks(ctx) == [6]

    t.run(body)
    assert t.run(lambda ctx: ranks(ctx)) == [6]


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_a_patch_that_moves_a_document_within_the_range_is_seen_once(
    t: TestApp, order: str
) -> None:
    ids = {r: t.mutation(add, {"name": f"n{r}", "rank": r}) for r in range(1, 6)}

    def body(ctx: MutationCtx) -> dict[str, list[int]]:
        ctx.db.patch(ids[1], {"rank": 10})  # moves from the start to the end
        ctx.db.patch(ids[4], {"rank": 0})  # moves from near the end to the start
        return {
            "all": ranks(ctx, order),
            "below4": ranks(ctx, order, lambda q: q.lt("rank", 4)),
            "from3": ranks(ctx, order, lambda q: q.gte("rank", 3)),
            "creation": [d["rank"] for d in ctx.db.query("items").order(order).collect()],
        }

    got = t.run(body)
    expected = sorted([0, 2, 3, 5, 10], reverse=order == "desc")
    assert got["all"] == expected
    assert got["below4"] == [r for r in expected if r < 4]
    assert got["from3"] == [r for r in expected if r >= 3]
    # Creation order is unchanged by patches: each document appears once, at its place.
    by_creation = [10, 2, 3, 0, 5]
    assert got["creation"] == (by_creation if order == "asc" else by_creation[::-1])


def test_patch_semantics(t: TestApp) -> None:
    doc_id = t.mutation(add, {"name": "a", "rank": 1})

    def body(ctx: MutationCtx) -> dict[str, Any]:
        ctx.db.patch(doc_id, {"tag": None})
        assert ctx.db.get(doc_id)["tag"] is None
        ctx.db.patch(doc_id, {"tag": "x", "rank": 2})
        ctx.db.patch(doc_id, {"tag": UNSET})
        doc = ctx.db.get(doc_id)
        ctx.db.patch(doc_id, {"_id": doc_id, "_creation_time": doc["_creation_time"]})
        return doc  # type: ignore[return-value]

    doc = t.run(body)
    assert doc["rank"] == 2 and "tag" in doc and doc["tag"] is None  # schema default: null
    with pytest.raises(InvalidValueError, match="cannot be changed"):
        t.run(lambda ctx: ctx.db.patch(doc_id, {"_creation_time": 1.0}))
    with pytest.raises(InvalidValueError, match="dict of fields"):
        t.run(lambda ctx: ctx.db.patch(doc_id, [1]))
    with pytest.raises(InvalidValueError, match="set by the database"):
        t.run(lambda ctx: ctx.db.insert("items", {"_id": doc_id, "name": "x", "rank": 1}))


def test_unset_removes_a_field_of_a_schemaless_table(t: TestApp) -> None:
    doc_id = t.run(lambda ctx: ctx.db.insert("loose", {"a": 1, "b": 2}))
    t.run(lambda ctx: ctx.db.patch(doc_id, {"b": UNSET, "c": None}))
    doc = t.run(lambda ctx: ctx.db.get(doc_id))
    assert {k: v for k, v in doc.items() if not k.startswith("_")} == {"a": 1, "c": None}


def test_writes_to_missing_documents_are_refused(t: TestApp) -> None:
    doc_id = t.mutation(add, {"name": "a", "rank": 1})
    t.run(lambda ctx: ctx.db.delete(doc_id))
    for op in ("patch", "replace", "delete"):
        args = (doc_id,) if op == "delete" else (doc_id, {"name": "b", "rank": 1})
        with pytest.raises(InvalidValueError, match="does not exist"):
            t.run(lambda ctx, op=op, args=args: getattr(ctx.db, op)(*args))  # type: ignore[misc]


def test_ids_of_another_table_are_refused(t: TestApp) -> None:
    blob = t.run(lambda ctx: ctx.db.insert("blobs", {"data": b"x"}))
    with pytest.raises(InvalidArgumentError, match='table "blobs", not of table "items"') as info:
        t.query(rank_of, {"id": blob})
    assert info.value.argument == "id"
    assert t.run(lambda ctx: ctx.db.normalize_id("items", blob)) is None
    assert t.run(lambda ctx: ctx.db.normalize_id("blobs", blob)) == blob
    with pytest.raises(InvalidIdError, match="not a document id"):
        t.run(lambda ctx: ctx.db.get("not-an-id"))


# -- snapshots -------------------------------------------------------------------------------


def test_a_query_reads_one_snapshot_while_others_commit(t: TestApp) -> None:
    doc_id = t.mutation(add, {"name": "a", "rank": 1})
    RENDEZVOUS.update(read=threading.Event(), committed=threading.Event())
    result: list[Any] = []
    reader = threading.Thread(target=lambda: result.append(t.query(read_twice, {"id": doc_id})))
    reader.start()
    assert RENDEZVOUS["read"].wait(10)
    t.run(lambda ctx: ctx.db.patch(doc_id, {"rank": 2}))
    RENDEZVOUS["committed"].set()
    reader.join(10)
    assert result == [[1, 1]]
    assert t.run(lambda ctx: ctx.db.get(doc_id)["rank"]) == 2


def test_snapshot_ts_survives_close_and_a_closed_transaction_cannot_read(t: TestApp) -> None:
    doc_id = t.mutation(add, {"name": "a", "rank": 1})
    db = t.runtime.db
    txn = db.transaction()
    assert txn.snapshot_ts is None
    txn.get(db.space(""), doc_id)
    ts = txn.snapshot_ts
    assert ts is not None and ts <= db.latest_ts
    txn.close()
    txn.close()
    assert txn.snapshot_ts == ts
    with pytest.raises(UserError, match="transaction has ended"):
        txn.get(db.space(""), doc_id)


# -- limits ----------------------------------------------------------------------------------


def deep(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"x": value}
    return value


LIMITED_DOCUMENTS = {
    "document_size": ("loose", {"blob": b"x" * (1 << 20)}, "1 MiB"),
    "nesting_depth": ("loose", {"deep": deep(16)}, "limit is 16"),
    "fields": ("loose", {f"f{i}": i for i in range(1025)}, "limit is 1,024"),
    "array_elements": ("loose", {"xs": [0] * 8193}, "limit is 8,192"),
    "dollar_field": ("loose", {"meta": {"$ref": 1}}, r'starts with "\$"'),
    "underscore_field": ("loose", {"_private": 1}, 'starts with "_"'),
    "table_name": ("bad-name", {"a": 1}, "not valid"),
    "unknown_table": ("nope", {"a": 1}, "not in the schema"),
    "schema": ("items", {"name": "a", "rank": "1"}, 'field "rank"'),
}


@pytest.mark.parametrize("case", list(LIMITED_DOCUMENTS))
def test_each_document_limit_is_refused_and_the_table_is_unchanged(t: TestApp, case: str) -> None:
    table, body, message = LIMITED_DOCUMENTS[case]
    t.run(lambda ctx: ctx.db.insert("loose", {"keep": True}))

    def body_fn(ctx: MutationCtx) -> None:
        ctx.db.insert("loose", {"in_same_transaction": True})
        ctx.db.insert(table, body)  # type: ignore[arg-type]

    with pytest.raises(InvalidValueError, match=message) as info:
        t.run(body_fn)
    if isinstance(info.value, LimitExceededError):
        assert info.value.limit == case
    assert [d.get("keep") for d in t.run(lambda ctx: ctx.db.query("loose").collect())] == [True]


def test_a_patch_over_a_limit_leaves_the_document_as_it_was(t: TestApp) -> None:
    doc_id = t.run(lambda ctx: ctx.db.insert("loose", {"n": 1}))
    with pytest.raises(LimitExceededError) as info:
        t.run(lambda ctx: ctx.db.patch(doc_id, {"xs": [0] * 8193}))
    assert info.value.limit == "array_elements"
    assert "xs" not in t.run(lambda ctx: ctx.db.get(doc_id))


def test_documents_written_limit(t: TestApp) -> None:
    def body(ctx: MutationCtx) -> None:
        for i in range(transaction_module.MAX_WRITTEN + 1):
            ctx.db.insert("loose", {"i": i})

    with pytest.raises(LimitExceededError, match="16,000") as info:
        t.run(body)
    assert info.value.limit == "documents_written"
    assert count(t, "loose") == 0


def test_bytes_written_limit(t: TestApp) -> None:
    blob = b"x" * 1_000_000

    def body(ctx: MutationCtx) -> None:
        for _ in range(17):
            ctx.db.insert("blobs", {"data": blob})

    with pytest.raises(LimitExceededError, match="16 MiB") as info:
        t.run(body)
    assert info.value.limit == "bytes_written"
    assert count(t, "blobs") == 0


def test_bytes_read_limit(t: TestApp) -> None:
    blob = b"x" * 1_000_000
    for _ in range(2):
        t.run(lambda ctx: insert_many(ctx, "blobs", {"data": blob}, 9))
    with pytest.raises(LimitExceededError, match="16 MiB") as info:
        t.run(lambda ctx: ctx.db.query("blobs").collect())
    assert info.value.limit == "bytes_read"
    assert len(t.run(lambda ctx: ctx.db.query("blobs").take(16))) == 16


def test_documents_scanned_limit_counts_filtered_out_documents(t: TestApp) -> None:
    per = 10_700
    for start in range(0, 32_001, per):
        n = min(per, 32_001 - start)
        t.run(lambda ctx, n=n: insert_many(ctx, "loose", {}, n))  # type: ignore[misc]
    with pytest.raises(LimitExceededError, match="32,000") as info:
        t.run(lambda ctx: ctx.db.query("loose").filter(lambda d: False).first())
    assert info.value.limit == "documents_scanned"
    assert len(t.run(lambda ctx: ctx.db.query("loose").take(5))) == 5
