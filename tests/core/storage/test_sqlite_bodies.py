"""SQLite keeps long document bodies out of line, so the documents B-tree stays compact."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from core import ActionCtx, App, MutationCtx, Schema, Table
from core.integrity import check_closed_storage, format_report
from core.storage.sqlite import INLINE_BODY_MAX, SQLiteStorage
from core.testing import TestApp

SCHEMA = Schema(notes=Table({"text": str, "n": int}).index("by_n", ["n"]))
LONG = "x" * (INLINE_BODY_MAX * 4)


def _rows(path: Path) -> tuple[dict[str, object], int]:
    """Each document row's stored ``data`` type, and the number of out-of-line bodies."""
    conn = sqlite3.connect(path)
    try:
        kinds = dict(conn.execute("SELECT id, typeof(data) FROM documents").fetchall())
        (bodies,) = conn.execute("SELECT count(*) FROM bodies").fetchone()
    finally:
        conn.close()
    return kinds, bodies


@pytest.fixture
def storage(tmp_path: Path) -> SQLiteStorage:
    return SQLiteStorage(tmp_path / "b.db", synchronous="NORMAL")


def _insert(t: TestApp, text: str, n: int) -> str:
    doc_id: str = t.run(lambda ctx: ctx.db.insert("notes", {"text": text, "n": n}))
    return doc_id


def _check(storage: SQLiteStorage) -> None:
    report = check_closed_storage(storage)
    assert report.ok, "\n".join(format_report(report))


def test_long_bodies_live_out_of_line_and_read_back_everywhere(storage: SQLiteStorage) -> None:
    path = Path(storage.path)
    with TestApp(App(SCHEMA), storage=storage) as t:
        short = _insert(t, "hi", 1)
        long = _insert(t, LONG, 2)
        kinds, bodies = _rows(path)
        assert (kinds[short], kinds[long], bodies) == ("blob", "integer", 1)
        # By id, through an index, and in creation order: the same documents.
        assert t.run(lambda ctx: ctx.db.get(long))["text"] == LONG
        by_n = t.run(
            lambda ctx: ctx.db.query("notes").with_index("by_n", lambda q: q.eq("n", 2)).unique()
        )
        assert by_n["_id"] == long and by_n["text"] == LONG
        texts = t.run(lambda ctx: [d["text"] for d in ctx.db.query("notes").collect()])
        assert texts == ["hi", LONG]
    _check(storage)


def test_replacing_or_deleting_a_long_body_leaves_no_orphan(storage: SQLiteStorage) -> None:
    path = Path(storage.path)
    with TestApp(App(SCHEMA), storage=storage) as t:
        a = _insert(t, LONG, 1)
        b = _insert(t, LONG, 2)
        assert _rows(path)[1] == 2
        t.run(lambda ctx: ctx.db.patch(a, {"text": LONG + "y"}))  # long to long: a new body
        assert _rows(path)[1] == 2
        assert t.run(lambda ctx: ctx.db.get(a))["text"] == LONG + "y"
        t.run(lambda ctx: ctx.db.patch(a, {"text": "short"}))  # long to short: inline again
        kinds, bodies = _rows(path)
        assert (kinds[a], bodies) == ("blob", 1)
        t.run(lambda ctx: ctx.db.patch(a, {"text": LONG}))  # and back
        assert _rows(path)[1] == 2
        t.run(lambda ctx: ctx.db.delete(b))
        t.run(lambda ctx: ctx.db.delete(a))
        kinds, bodies = _rows(path)
        assert (a in kinds, b in kinds, bodies) == (False, False, 0)
    _check(storage)


def test_a_long_body_written_inline_by_the_previous_layout_reads_and_moves_out(
    storage: SQLiteStorage,
) -> None:
    path = Path(storage.path)
    with TestApp(App(SCHEMA), storage=storage) as t:
        doc = _insert(t, LONG, 1)
    # Put the body back inline, as a database written before out-of-line bodies holds it.
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "UPDATE documents SET data = "
            "(SELECT b.data FROM bodies b WHERE b.rid = documents.data) WHERE id = ?",
            (doc,),
        )
    conn.close()
    kinds, bodies = _rows(path)
    assert (kinds[doc], bodies) == ("blob", 0)  # the trigger removed the body it replaced
    _check(storage)
    with TestApp(App(SCHEMA), storage=storage) as t:
        assert t.run(lambda ctx: ctx.db.get(doc))["text"] == LONG
        t.run(lambda ctx: ctx.db.patch(doc, {"n": 5}))
        kinds, bodies = _rows(path)
        assert (kinds[doc], bodies) == ("integer", 1)
        assert t.run(lambda ctx: ctx.db.get(doc))["n"] == 5
    _check(storage)


def test_the_check_reports_a_missing_body_and_an_orphan_body(storage: SQLiteStorage) -> None:
    path = Path(storage.path)
    with TestApp(App(SCHEMA), storage=storage) as t:
        doc = _insert(t, LONG, 1)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("INSERT INTO bodies(data) VALUES (x'00')")
        conn.execute(
            "DELETE FROM bodies WHERE rid = (SELECT data FROM documents WHERE id = ?)", (doc,)
        )
    conn.close()
    report = check_closed_storage(storage)
    kinds = sorted(p.kind for p in report.problems)
    assert "orphan_body" in kinds
    assert any(p.kind == "bad_document" and "body" in p.detail for p in report.problems), kinds


DIMS = 128  # 512 bytes a vector: out of line
VECTORS = Schema(
    items=Table({"v": list[float], "n": int}).vector_index(
        "by_v", vector_field="v", dimensions=DIMS
    )
)


def _vector(k: int) -> list[float]:
    return [1.0 if i == k else 0.01 for i in range(DIMS)]


def test_long_index_values_live_out_of_line_and_search_reads_them(
    storage: SQLiteStorage,
) -> None:
    path = Path(storage.path)
    app = App(VECTORS, storage=storage)

    @app.mutation
    def put(ctx: MutationCtx, k: int) -> str:
        return ctx.db.insert("items", {"v": _vector(k), "n": k})

    @app.mutation
    def move(ctx: MutationCtx, id: str, k: int) -> None:
        ctx.db.patch(id, {"v": _vector(k)})

    @app.mutation
    def drop(ctx: MutationCtx, id: str) -> None:
        ctx.db.delete(id)

    @app.action
    async def nearest(ctx: ActionCtx, k: int) -> list[str]:
        hits = await ctx.vector_search("items", "by_v", vector=_vector(k))
        return [str(hit["_id"]) for hit in hits]

    def stored() -> tuple[list[str], int]:
        conn = sqlite3.connect(path)
        try:
            kinds = [
                k
                for (k,) in conn.execute(
                    "SELECT typeof(value) FROM index_entries WHERE typeof(value) = 'integer' "
                    "OR length(value) > 0"
                )
            ]
        finally:
            conn.close()
        return kinds, _rows(path)[1]

    with app.sync_client(runtime=False) as client:
        ids = [client.mutation(put, {"k": k}) for k in range(3)]
        # Each document's body is long too: two rows of ``bodies`` a document.
        assert stored() == (["integer"] * 3, 6)
        assert client.action(nearest, {"k": 1})[0] == ids[1]
        client.mutation(move, {"id": ids[0], "k": 2})  # a new value; the old one is deleted
        assert stored() == (["integer"] * 3, 6)
        assert set(client.action(nearest, {"k": 2})[:2]) == {ids[0], ids[2]}
        client.mutation(drop, {"id": ids[2]})
        assert stored() == (["integer"] * 2, 4)
    _check(storage)
