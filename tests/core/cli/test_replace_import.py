"""``capsule import --replace`` as the way out of a schema change: export, edit, re-import.

The stored documents do not fit the new schema (a required field was added), so the app
refuses to open; the import opens it anyway, validates the edited documents against the new
schema, and commits only if every table then fits. A bad line leaves the database as it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core import App, Schema, SchemaMismatchError, Table
from core.cli import main
from core.storage.base import Storage
from core.testing import TestApp

OLD = {"name": str, "visits": int}
NEW = {"first": str, "last": str, "visits": int}

old_app = App(Schema(users=Table(OLD), notes=Table({"text": str})))
new_app = App(Schema(users=Table(NEW).index("by_last", ["last"]), notes=Table({"text": str})))
NEW_APP = f"{__name__}:new_app"


def populate(storage: Storage, n: int = 50) -> list[str]:
    with TestApp(old_app, storage=storage) as t:
        t.run(lambda ctx: ctx.db.insert("notes", {"text": "kept"}))
        ids: list[str] = t.run(
            lambda ctx: [
                ctx.db.insert("users", {"name": f"Ada{i} Lovelace{i}", "visits": i})
                for i in range(n)
            ]
        )
    return ids


def edit(path: Path, *, break_line: int | None = None) -> None:
    """Turn each exported user's name into first and last (one line left bad if asked)."""
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        doc: dict[str, Any] = json.loads(line)
        first, _, last = doc.pop("name").partition(" ")
        doc["first"] = first
        if i != break_line:
            doc["last"] = last
        out.append(json.dumps(doc))
    path.write_text("\n".join(out) + "\n")


def test_export_edit_and_replace_into_the_same_database(
    tmp_path: Path, storage: Storage, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = populate(storage)
    with pytest.raises(SchemaMismatchError):
        TestApp(new_app, storage=storage).__enter__()
    export = tmp_path / "export"
    assert main(["export", "--path", str(export), "--db", storage.url]) == 0
    users = export / "users" / "documents.jsonl"

    # A line that does not fit the new schema: nothing is imported, nothing changes.
    edit(users, break_line=17)
    assert main(["import", str(export), "--replace", "--app", NEW_APP, "--db", storage.url]) == 1
    assert "users/documents.jsonl line 18" in capsys.readouterr().err
    with TestApp(old_app, storage=storage) as t:
        docs = t.run(lambda ctx: ctx.db.query("users").collect())
        assert len(docs) == len(ids) and all("name" in d for d in docs)
    with pytest.raises(SchemaMismatchError):
        TestApp(new_app, storage=storage).__enter__()

    # Every line fits: the import replaces the documents, ids kept, and the app opens.
    assert main(["export", "--path", str(tmp_path / "again"), "--db", storage.url]) == 0
    users = tmp_path / "again" / "users" / "documents.jsonl"
    edit(users)
    assert (
        main(
            ["import", str(tmp_path / "again"), "--replace", "--app", NEW_APP, "--db", storage.url]
        )
        == 0
    )
    with TestApp(new_app, storage=storage) as t:
        docs = t.run(lambda ctx: ctx.db.query("users").collect())
        assert sorted(d["_id"] for d in docs) == sorted(ids)
        found = t.run(
            lambda ctx: (
                ctx.db.query("users")
                .with_index("by_last", lambda q: q.eq("last", "Lovelace3"))
                .unique()
            )
        )
        assert found is not None and found["first"] == "Ada3" and "name" not in found
        assert [n["text"] for n in t.run(lambda ctx: ctx.db.query("notes").collect())] == ["kept"]


def test_replacing_one_table_must_leave_every_table_fitting(
    tmp_path: Path, storage: Storage, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(storage, 5)
    export = tmp_path / "export"
    assert main(["export", "--path", str(export), "--db", storage.url]) == 0
    users = export / "users" / "documents.jsonl"
    edit(users)
    # Replacing "notes" leaves "users" not fitting: refused, naming the table.
    notes = export / "notes" / "documents.jsonl"
    args = ["import", str(notes), "--table", "notes", "--replace", "--app", NEW_APP]
    assert main([*args, "--db", storage.url]) == 1
    assert 'Table "users": 5 stored documents do not match' in capsys.readouterr().err
    args = ["import", str(users), "--table", "users", "--replace", "--app", NEW_APP]
    assert main([*args, "--db", storage.url]) == 0
    with TestApp(new_app, storage=storage) as t:
        assert t.run(lambda ctx: len(ctx.db.query("users").collect())) == 5
