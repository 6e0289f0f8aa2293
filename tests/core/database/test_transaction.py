"""Transactions on every backend: read-your-writes, savepoints, atomicity, snapshots, limits."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Literal

import pydantic
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
from core.database.engine import Conflict
from core.database.query import Query
from core.storage.base import Storage
from core.testing import TestApp


class _Ranked(pydantic.BaseModel):
    """A model shape: its fields are validated together (a patch validates them all)."""

    low: int
    high: int

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> _Ranked:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        return self


app = App(
    Schema(
        items=Table({"name": str, "rank": int, "tag": str | None})
        .index("by_rank", ["rank"])
        .index("by_tag_rank", ["tag", "rank"]),
        blobs=Table({"data": bytes}),
        loose=Table(),
        modelled=Table(_Ranked).index("by_rank", ["rank"]),
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


# -- point operations (the short paths) -------------------------------------------------------


def stored_entries(t: TestApp, table: str, index: str) -> list[bytes]:
    db = t.runtime.db
    info = db.space("").table(table)
    snap = db.storage.begin_read()
    try:
        return [k for k, _, _ in snap.scan_entries(info.indexes[index].id, b"", None, limit=100)]
    finally:
        snap.close()


def by_tag(ctx: Any, tag: str, rank: int) -> Any:
    return (
        ctx.db.query("items")
        .with_index("by_tag_rank", lambda q: q.eq("tag", tag).eq("rank", rank))
        .unique()
    )


def test_a_patch_of_a_field_no_index_reads_keeps_the_index_entries(t: TestApp) -> None:
    doc_id = t.run(lambda ctx: ctx.db.insert("items", {"name": "a", "rank": 1, "tag": "x"}))
    before = stored_entries(t, "items", "by_tag_rank"), stored_entries(t, "items", "by_rank")
    t.run(lambda ctx: ctx.db.patch(doc_id, {"name": "b"}))
    assert (stored_entries(t, "items", "by_tag_rank"), stored_entries(t, "items", "by_rank")) == (
        before
    )
    assert t.run(lambda ctx: by_tag(ctx, "x", 1))["name"] == "b"


def test_a_patch_of_an_indexed_field_moves_its_index_entries(t: TestApp) -> None:
    doc_id = t.run(lambda ctx: ctx.db.insert("items", {"name": "a", "rank": 1, "tag": "x"}))
    before = stored_entries(t, "items", "by_tag_rank")
    t.run(lambda ctx: ctx.db.patch(doc_id, {"rank": 5}))
    after = stored_entries(t, "items", "by_tag_rank")
    assert len(after) == 1 and after != before
    assert t.run(lambda ctx: by_tag(ctx, "x", 1)) is None
    assert t.run(lambda ctx: by_tag(ctx, "x", 5))["_id"] == doc_id
    assert t.run(lambda ctx: ranks(ctx)) == [5]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"rank": "high"}, "rank"),
        ({"name": "ok", "tag": 7}, "tag"),
        ({"rank": 2**70}, "rank"),
        # A value of another plain type than the declared one still meets strict validation.
        ({"rank": True}, "rank"),
        ({"rank": 1.5}, "rank"),
        ({"name": 1.0}, "name"),
    ],
)
def test_a_patch_making_a_field_invalid_is_refused_naming_it(
    t: TestApp, fields: dict[str, Any], field: str
) -> None:
    doc_id = t.run(lambda ctx: ctx.db.insert("items", {"name": "a", "rank": 1, "tag": "x"}))
    before = t.run(lambda ctx: ctx.db.get(doc_id))
    entries = stored_entries(t, "items", "by_tag_rank")
    with pytest.raises((InvalidValueError, LimitExceededError)) as info:
        t.run(lambda ctx: ctx.db.patch(doc_id, fields))
    assert info.value.field == field
    assert f'"{field}"' in str(info.value) and '"items"' in str(info.value)
    assert t.run(lambda ctx: ctx.db.get(doc_id)) == before
    assert stored_entries(t, "items", "by_tag_rank") == entries


def test_a_patch_naming_an_undeclared_field_is_refused_as_before(t: TestApp) -> None:
    doc_id = t.run(lambda ctx: ctx.db.insert("items", {"name": "a", "rank": 1}))
    with pytest.raises(InvalidValueError, match='field "colour"') as info:
        t.run(lambda ctx: ctx.db.patch(doc_id, {"colour": "red"}))
    assert info.value.field == "colour"


def test_a_patch_of_a_model_shape_still_validates_the_whole_document(t: TestApp) -> None:
    doc_id = t.run(lambda ctx: ctx.db.insert("modelled", {"low": 1, "high": 3}))
    with pytest.raises(InvalidValueError, match="low must not exceed high"):
        t.run(lambda ctx: ctx.db.patch(doc_id, {"low": 5}))
    t.run(lambda ctx: ctx.db.patch(doc_id, {"low": 2}))
    assert t.run(lambda ctx: ctx.db.get(doc_id))["low"] == 2


def test_a_patched_document_is_stored_as_a_whole_validation_would_store_it(t: TestApp) -> None:
    a = t.run(lambda ctx: ctx.db.insert("items", {"name": "a", "rank": 1, "tag": "x"}))
    t.run(lambda ctx: ctx.db.patch(a, {"rank": 2, "tag": None}))
    db = t.runtime.db
    snap = db.storage.begin_read()
    try:
        row = snap.get(a)
    finally:
        snap.close()
    assert row is not None
    whole = t.run(lambda ctx: ctx.db.get(a))
    from core.encoding import dump_document

    assert row.data == dump_document(whole)
    assert list(whole) == ["_id", "_creation_time", "name", "rank", "tag"]


def test_a_unique_point_read_sees_the_transactions_own_writes(t: TestApp) -> None:
    kept = t.run(lambda ctx: ctx.db.insert("items", {"name": "kept", "rank": 1, "tag": "x"}))

    def body(ctx: MutationCtx) -> list[Any]:
        seen = [by_tag(ctx, "x", 1)["_id"]]
        new = ctx.db.insert("items", {"name": "new", "rank": 2, "tag": "x"})
        seen.append(by_tag(ctx, "x", 2)["_id"] == new)
        ctx.db.patch(kept, {"rank": 3})
        seen.append(by_tag(ctx, "x", 1))
        seen.append(by_tag(ctx, "x", 3)["name"])
        ctx.db.delete(new)
        seen.append(by_tag(ctx, "x", 2))
        first = ctx.db.query("items").with_index("by_rank").first()
        seen.append(first["name"])
        return seen

    assert t.run(body) == [kept, True, None, "kept", None, "kept"]
    with pytest.raises(UserError, match="more than one"):
        t.run(
            lambda ctx: [
                ctx.db.insert("items", {"name": "twin", "rank": 3, "tag": "x"}),
                by_tag(ctx, "x", 3),
            ]
        )


def test_a_point_read_conflicts_with_a_commit_into_its_range(t: TestApp) -> None:
    db = t.runtime.db
    space = db.space("")

    def insert(name: str, rank: int) -> None:
        t.run(lambda ctx: ctx.db.insert("items", {"name": name, "rank": rank, "tag": "y"}))

    def point_read_then_rival_insert(rank: int, found: bool) -> None:
        reader = db.transaction()
        doc = (
            Query(reader, space, space.table("items"))
            .with_index("by_tag_rank", lambda q: q.eq("tag", "y").eq("rank", rank))
            .unique()
        )
        assert (doc is not None) == found
        insert("b", rank)
        reader.insert(space, "blobs", {"data": b""})
        with pytest.raises(Conflict):
            db.commit(reader)
        reader.close()

    point_read_then_rival_insert(4, False)
    insert("a", 6)
    point_read_then_rival_insert(6, True)
    # Outside the range: no conflict.
    reader = db.transaction()
    assert (
        Query(reader, space, space.table("items"))
        .with_index("by_tag_rank", lambda q: q.eq("tag", "z").eq("rank", 4))
        .first()
    ) is None
    t.run(lambda ctx: ctx.db.insert("items", {"name": "c", "rank": 4, "tag": "y"}))
    reader.insert(space, "blobs", {"data": b""})
    db.commit(reader)
    reader.close()
