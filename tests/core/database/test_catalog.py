"""Schema changes between opens, on every backend: new tables and indexes, shape checks."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from core import App, InvalidArgumentError, InvalidValueError, Schema, SchemaMismatchError, Table
from core.storage.base import Storage
from core.testing import TestApp


def insert_all(t: TestApp, table: str, docs: list[dict[str, Any]]) -> list[str]:
    def body(ctx: Any) -> list[str]:
        return [ctx.db.insert(table, d) for d in docs]

    return list(t.run(body))


def index_entries(t: TestApp, table: str, index: str) -> int:
    db = t.runtime.db
    index_id = db.space("").table(table).indexes[index].id
    snap = db.storage.begin_read()
    try:
        return len(snap.scan_entries(index_id, b"", None, limit=100_000))
    finally:
        snap.close()


def test_an_index_added_to_a_populated_table_is_backfilled(storage: Storage) -> None:
    v1 = App(Schema(tasks=Table({"text": str, "rank": int})))
    with TestApp(v1, storage=storage) as t:
        ids = insert_all(t, "tasks", [{"text": f"t{r}", "rank": r} for r in [5, 3, 9, 1, 7] * 120])
    v2 = App(Schema(tasks=Table({"text": str, "rank": int}).index("by_rank", ["rank"])))
    with TestApp(v2, storage=storage) as t:
        assert index_entries(t, "tasks", "by_rank") == 600
        ranks = t.run(
            lambda ctx: [d["rank"] for d in ctx.db.query("tasks").with_index("by_rank").collect()]
        )
        assert ranks == sorted([5, 3, 9, 1, 7] * 120)
        low = t.run(
            lambda ctx: (
                ctx.db.query("tasks").with_index("by_rank", lambda q: q.lt("rank", 3)).collect()
            )
        )
        assert {d["_id"] for d in low} == {ids[i] for i in range(3, 600, 5)}
        # Ids made before the change still resolve, and new writes maintain the index.
        assert t.run(lambda ctx: ctx.db.get(ids[0]))["rank"] == 5
        insert_all(t, "tasks", [{"text": "new", "rank": 0}])
        assert index_entries(t, "tasks", "by_rank") == 601


def test_a_changed_index_is_rebuilt_and_a_removed_one_dropped(storage: Storage) -> None:
    shape = {"a": int, "b": int}
    v1 = App(Schema(t=Table(shape).index("by_x", ["a"]).index("gone", ["b"])))
    with TestApp(v1, storage=storage) as t:
        insert_all(t, "t", [{"a": i, "b": -i} for i in range(10)])
        gone_id = t.runtime.db.space("").table("t").indexes["gone"].id
    v2 = App(Schema(t=Table(shape).index("by_x", ["b"])))
    with TestApp(v2, storage=storage) as t:
        got = t.run(lambda ctx: [d["b"] for d in ctx.db.query("t").with_index("by_x").collect()])
        assert got == sorted(-i for i in range(10))
        snap = t.runtime.db.storage.begin_read()
        try:
            assert snap.scan_entries(gone_id, b"", None, limit=10) == []
        finally:
            snap.close()
        tables, indexes = t.runtime.db.storage.load_catalog()
        assert "gone" not in {i.name for i in indexes}


def test_a_new_table_is_created_and_table_numbers_stay_stable(storage: Storage) -> None:
    v1 = App(Schema(a=Table({"x": int})))
    with TestApp(v1, storage=storage) as t:
        [a_id] = insert_all(t, "a", [{"x": 1}])
    v2 = App(Schema(a=Table({"x": int}), b=Table({"y": str})))
    with TestApp(v2, storage=storage) as t:
        [b_id] = insert_all(t, "b", [{"y": "z"}])
        assert t.run(lambda ctx: ctx.db.get(a_id))["x"] == 1
        assert t.run(lambda ctx: ctx.db.normalize_id("a", a_id)) == a_id
        assert t.run(lambda ctx: ctx.db.normalize_id("a", b_id)) is None


class V1(pydantic.BaseModel):
    n: int | str
    note: str = ""


class V2(pydantic.BaseModel):
    n: int
    note: str = ""


def test_narrowing_a_type_that_stored_documents_violate_refuses_to_open(storage: Storage) -> None:
    with TestApp(App(Schema(items=Table(V1))), storage=storage) as t:
        insert_all(t, "items", [{"n": 1}, {"n": 2}])
        [bad] = insert_all(t, "items", [{"n": "three"}])
        insert_all(t, "items", [{"n": 4}])
    with pytest.raises(SchemaMismatchError) as info:
        TestApp(App(Schema(items=Table(V2))), storage=storage).__enter__()
    err = info.value
    assert (err.table, err.document_id, err.field) == ("items", bad, "n")
    assert f'"{bad}"' in str(err) and '"items"' in str(err) and '"n"' in str(err)
    # Nothing changed: the old schema still opens and sees every document.
    with TestApp(App(Schema(items=Table(V1))), storage=storage) as t:
        assert len(t.run(lambda ctx: ctx.db.query("items").collect())) == 4


def test_widening_a_type_or_adding_a_defaulted_field_opens(storage: Storage) -> None:
    with TestApp(App(Schema(items=Table({"n": int}))), storage=storage) as t:
        insert_all(t, "items", [{"n": 1}])
    with TestApp(
        App(Schema(items=Table({"n": int | str, "extra": str | None}))), storage=storage
    ) as t:
        [doc] = t.run(lambda ctx: ctx.db.query("items").collect())
        assert doc["n"] == 1 and doc["extra"] is None  # the default is stored
        insert_all(t, "items", [{"n": "two"}])


def test_a_new_required_field_missing_from_stored_documents_refuses_to_open(
    storage: Storage,
) -> None:
    with TestApp(App(Schema(items=Table({"n": int}))), storage=storage) as t:
        [doc_id] = insert_all(t, "items", [{"n": 1}])
    with pytest.raises(SchemaMismatchError) as info:
        TestApp(App(Schema(items=Table({"n": int, "owner": str}))), storage=storage).__enter__()
    assert (info.value.document_id, info.value.field) == (doc_id, "owner")


def test_schemaless_tables_are_created_on_first_use_and_kept(storage: Storage) -> None:
    loose = App(Schema(declared=Table({"x": int}), strict=False))
    with TestApp(loose, storage=storage) as t:
        [doc_id] = insert_all(t, "notes", [{"anything": [1, "two"]}])
        insert_all(t, "other", [{"a": 1}, {"b": 2}])
        with pytest.raises(InvalidValueError, match='field "x"'):
            insert_all(t, "declared", [{"x": "not an int"}])
    with TestApp(loose, storage=storage) as t:
        assert t.run(lambda ctx: ctx.db.get(doc_id))["anything"] == [1, "two"]
        assert len(t.run(lambda ctx: ctx.db.query("other").collect())) == 2
    strict = App(Schema(declared=Table({"x": int})))
    with TestApp(strict, storage=storage) as t:
        with pytest.raises(InvalidValueError, match='"notes" is not in the schema'):
            t.run(lambda ctx: ctx.db.query("notes").collect())


def test_a_schemaless_table_first_used_in_a_failed_mutation_still_works(storage: Storage) -> None:
    with TestApp(App(), storage=storage) as t:

        def body(ctx: Any) -> None:
            ctx.db.insert("fresh", {"a": 1})
            raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError):
            t.run(body)
        assert t.run(lambda ctx: ctx.db.query("fresh").collect()) == []
        insert_all(t, "fresh", [{"a": 2}])
        assert [d["a"] for d in t.run(lambda ctx: ctx.db.query("fresh").collect())] == [2]


def test_system_table_names_are_refused_in_app_code(storage: Storage) -> None:
    with TestApp(App(), storage=storage) as t:
        with pytest.raises(InvalidValueError, match="not valid|system table"):
            t.run(lambda ctx: ctx.db.insert("_scheduled_functions", {"a": 1}))


ROLLING_V1 = App(Schema(items=Table({"owner": str, "text": str})))
ROLLING_V2 = App(
    Schema(
        items=Table({"owner": str, "text": str})
        .index("by_owner", ["owner"])
        .search_index("search_text", search_field="text", filter_fields=["owner"])
    )
)
OWNERS = ["ann", "bob", "cy"]
WORDS = ["apple", "pear", "plum"]


def assert_indexes_agree_with_a_full_scan(t: TestApp) -> None:
    """Every index of version 2 returns exactly what a full scan finds."""

    def body(ctx: Any) -> None:
        docs = ctx.db.query("items").collect()
        for owner in OWNERS:
            scanned = sorted(d["_id"] for d in docs if d["owner"] == owner)
            indexed = ctx.db.query("items").with_index(
                "by_owner", lambda q, o=owner: q.eq("owner", o)
            )
            assert sorted(d["_id"] for d in indexed.collect()) == scanned, owner
            for word in WORDS:
                found = ctx.db.query("items").with_search_index(
                    "search_text", lambda q, o=owner, w=word: q.search("text", w).eq("owner", o)
                )
                expected = sorted(
                    d["_id"] for d in docs if d["owner"] == owner and word in d["text"]
                )
                assert sorted(d["_id"] for d in found.collect()) == expected, (owner, word)

    t.run(body)
    assert index_entries(t, "items", "by_owner") == len(
        t.run(lambda c: c.db.query("items").collect())
    )


def test_a_rolling_deploy_keeps_every_index_in_line_with_the_documents(storage: Storage) -> None:
    """Issue 11, defect 4: version 1 keeps writing while version 2 adds indexes."""
    from core.storage import open_storage

    v1 = TestApp(ROLLING_V1, storage=open_storage(storage.url))
    with v1:
        ids = insert_all(
            v1, "items", [{"owner": OWNERS[i % 3], "text": WORDS[i % 3]} for i in range(5)]
        )
        with TestApp(ROLLING_V2, storage=storage) as v2:
            assert_indexes_agree_with_a_full_scan(v2)
            for i in range(5, 10):  # version 1 inserts, moves and deletes documents
                ids += insert_all(v1, "items", [{"owner": OWNERS[i % 3], "text": WORDS[i % 3]}])
                assert_indexes_agree_with_a_full_scan(v2)
                moved = ids[i - 5]
                change = {"owner": OWNERS[(i + 1) % 3], "text": f"{WORDS[i % 3]} {WORDS[i % 2]}"}

                def move(ctx: Any, d: str = moved, c: dict[str, str] = change) -> None:
                    ctx.db.patch(d, c)

                v1.run(move)
                assert_indexes_agree_with_a_full_scan(v2)
            v1.run(lambda ctx: ctx.db.delete(ids[-1]))
            assert_indexes_agree_with_a_full_scan(v2)
            # Version 1 wrote through its reloaded catalog: it maintains indexes it never declared.
            names = set(v1.runtime.db.space("").table("items").indexes)
            assert {"by_owner", "search_text"} <= names
    # Version 1 is gone; version 2 restarts on the same database.
    with TestApp(ROLLING_V2, storage=storage) as v2:
        assert_indexes_agree_with_a_full_scan(v2)
        assert len(v2.run(lambda ctx: ctx.db.query("items").collect())) == 9


def test_a_transaction_staged_before_the_indexes_changed_is_retried(storage: Storage) -> None:
    """A version 1 transaction computed its index entries before version 2 opened: it retries."""
    from core.storage import open_storage

    with TestApp(ROLLING_V1, storage=open_storage(storage.url)) as v1:
        db = v1.runtime.db
        txn = db.transaction()
        txn.insert(db.space(""), "items", {"owner": "ann", "text": "apple"})
        with TestApp(ROLLING_V2, storage=storage) as v2:
            from core.database.engine import Conflict

            with pytest.raises(Conflict, match="indexes changed"):
                db.commit(txn)
            txn.close()
            insert_all(v1, "items", [{"owner": "ann", "text": "apple"}])
            assert_indexes_agree_with_a_full_scan(v2)


def test_an_older_version_reopening_mid_deploy_never_leaves_a_silent_stale_index(
    storage: Storage,
) -> None:
    """Version 1 restarts while version 2 runs: the last opener's schema sets the catalog.

    Version 1 drops the indexes it does not declare; version 2's next read notices (the
    snapshot carries the catalog version), so it stops maintaining them and refuses queries on
    them (loudly) instead of answering from an emptied index; a restart of version 2 rebuilds
    them.
    """
    from core.storage import open_storage

    with TestApp(ROLLING_V2, storage=storage) as v2:
        insert_all(v2, "items", [{"owner": "ann", "text": "apple"}])
        with TestApp(ROLLING_V1, storage=open_storage(storage.url)) as v1:
            insert_all(v1, "items", [{"owner": "ann", "text": "pear"}])
            # Version 2's very next read sees the dropped index gone (it committed nothing).
            with pytest.raises(InvalidArgumentError, match="by_owner"):
                v2.run(lambda ctx: ctx.db.query("items").with_index("by_owner").collect())
            insert_all(v2, "items", [{"owner": "bob", "text": "plum"}])
    with TestApp(ROLLING_V2, storage=storage) as v2:
        assert_indexes_agree_with_a_full_scan(v2)


def test_the_entries_of_a_written_version_are_reused_only_for_that_exact_body(
    storage: Storage,
) -> None:
    # A read-modify-write of a document this process wrote finds the entries of the version
    # it read already computed; a version written elsewhere (another body) computes its own.
    from core.database import catalog

    app = App(Schema(limits=Table({"name": str, "value": float}).index("by_name", ["name"])))
    with TestApp(app, storage=storage) as t:
        info = t.runtime.db.space("").table("limits")
        doc = t.run(lambda ctx: ctx.db.insert("limits", {"name": "a", "value": 1.0}))
        plan = info.plan
        assert doc not in plan._known  # type: ignore[operator]  # inserts are not kept
        t.run(lambda ctx: ctx.db.patch(doc, {"value": 1.5}))
        blob, entries = plan._known[doc]
        assert entries == plan.entries(t.run(lambda ctx: ctx.db.get(doc)))
        assert plan.stored_entries(doc, blob, {}) is entries  # the same body: reused
        stored = t.run(lambda ctx: ctx.db.get(doc))
        assert plan.stored_entries(doc, blob + b"x", stored) == entries  # another body
        assert plan.stored_entries(doc, blob + b"x", stored) is not entries
        # A patch reads the remembered entries, and the index stays right.
        for n in (1.0, 2.0, 3.0):
            t.run(lambda ctx, value=n: ctx.db.patch(doc, {"value": value}))  # type: ignore[misc]
        t.run(lambda ctx: ctx.db.patch(doc, {"name": "b"}))
        found = t.run(
            lambda ctx: [
                d["_id"]
                for d in ctx.db.query("limits").with_index("by_name", lambda q: q.eq("name", "b"))
            ]
        )
        assert found == [doc]
        assert index_entries(t, "limits", "by_name") == 1
        # Bounded: long bodies are not kept, and the memo never outgrows its limit.
        long = t.run(lambda ctx: ctx.db.insert("limits", {"name": "x" * 600, "value": 0.0}))
        t.run(lambda ctx: ctx.db.patch(long, {"value": 1.0}))
        assert long not in plan._known  # type: ignore[operator]
        many = t.run(
            lambda ctx: [
                ctx.db.insert("limits", {"name": f"n{i}", "value": 0.0})
                for i in range(catalog._KNOWN_MAX + 10)
            ]
        )
        t.run(lambda ctx: [ctx.db.patch(i, {"value": 1.0}) for i in many])
        assert 0 < len(plan._known) <= catalog._KNOWN_MAX  # type: ignore[arg-type]
