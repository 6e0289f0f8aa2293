from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Literal

import pytest

import core.cli.transfer as transfer
from core import ActionCtx, App, Component, Id, MutationCtx, QueryCtx, Schema, SQLiteStorage, Table
from core.cli import main
from core.cli.stored import StoredDatabase
from core.testing import TestApp
from core.values import to_json

notes = Component("notes", schema=Schema(entries=Table({"body": str})))


@notes.mutation
def note(ctx: MutationCtx, body: str) -> str:
    return ctx.db.insert("entries", {"body": body})


app = App(
    Schema(
        users=Table({"name": str, "avatar": bytes | None}),
        tasks=Table({"text": str, "owner": Id[Literal["users"]], "n": int}).index(
            "by_owner", ["owner"]
        ),
    )
)
notes_handle = app.use(notes)
APP = f"{__name__}:app"


@app.mutation
def seed(ctx: MutationCtx, count: int) -> str:
    owner = ctx.db.insert("users", {"name": "ada", "avatar": b"\x00\xffpng"})
    ctx.db.insert("users", {"name": "bob"})
    for i in range(count):
        ctx.db.insert("tasks", {"text": f"task {i}", "owner": owner, "n": 2**60 + i})
    ctx.run_mutation(notes_handle.note, {"body": "from the component"})
    return owner


@app.query
def owned(ctx: QueryCtx, owner: Id[Literal["users"]]) -> int:
    return len(
        ctx.db.query("tasks").with_index("by_owner", lambda q: q.eq("owner", owner)).collect()
    )


@app.action
async def attach(ctx: ActionCtx, data: bytes) -> Any:
    return await ctx.files.store(data, "application/pdf")


@app.action
async def read(ctx: ActionCtx, id: str) -> Any:
    return await ctx.files.get(id)


def url(path: Path) -> str:
    return f"sqlite:///{path}"


def everything(db_url: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    with StoredDatabase(db_url) as db:
        return {(t.namespace, t.name): list(db.documents(t)) for t in db.user_tables()}


def populated(path: Path, count: int = 30) -> tuple[str, str]:
    with TestApp(app, storage=SQLiteStorage(path)) as t:
        owner = t.mutation(seed, {"count": count})
        file_id = t.action(attach, {"data": b"%PDF-1.7 content"})
    return owner, file_id


@pytest.mark.parametrize("target", ["export.zip", "export-dir"])
def test_export_then_import_reproduces_every_document(tmp_path: Path, target: str) -> None:
    owner, file_id = populated(tmp_path / "source.db")
    out = tmp_path / target
    assert (
        main(["export", "--path", str(out), "--include-files", "--db", url(tmp_path / "source.db")])
        == 0
    )
    assert main(["import", str(out), "--app", APP, "--db", url(tmp_path / "copy.db")]) == 0

    before, after = everything(url(tmp_path / "source.db")), everything(url(tmp_path / "copy.db"))
    assert before == after  # same _id, same _creation_time, same values, every table
    assert len(after[("", "tasks")]) == 30 and len(after[("notes", "entries")]) == 1
    with TestApp(app, storage=SQLiteStorage(tmp_path / "copy.db")) as t:
        assert t.query(owned, {"owner": owner}) == 30  # references and indexes still work
        assert t.action(read, {"id": file_id}) == b"%PDF-1.7 content"
        new_id = t.mutation(seed, {"count": 1})  # the copy keeps working
        assert t.query(owned, {"owner": new_id}) == 1


def test_export_layout(tmp_path: Path) -> None:
    populated(tmp_path / "source.db", count=2)
    out = tmp_path / "x.zip"
    main(["export", "--path", str(out), "--db", url(tmp_path / "source.db")])
    names = set(zipfile.ZipFile(out).namelist())
    assert names == {
        "_tables.jsonl",
        "users/documents.jsonl",
        "tasks/documents.jsonl",
        "_components/notes/entries/documents.jsonl",
    }
    line = zipfile.ZipFile(out).read("users/documents.jsonl").decode().splitlines()[0]
    assert json.loads(line)["avatar"] == {"$bytes": "AP9wbmc="}
    assert main(["export", "--path", str(out), "--db", url(tmp_path / "source.db")]) == 1


def jsonl(path: Path, docs: list[Any]) -> Path:
    path.write_text("".join((d if isinstance(d, str) else json.dumps(d)) + "\n" for d in docs))
    return path


def users_of(db: Path) -> list[dict[str, Any]]:
    return everything(url(db))[("", "users")]


@pytest.mark.parametrize(
    "bad",
    [
        '{"name": 57}',
        '{"name": "x", "extra": 1}',
        "{not json",
        '["a list"]',
        '{"name": "x", "_id": "nope"}',
        '{"name": "x", "$bytes": 1}',
    ],
    ids=["schema", "unknown-field", "json", "not-object", "bad-id", "dollar"],
)
def test_bad_line_57_names_it_and_leaves_the_table_untouched(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    bad: str,
) -> None:
    monkeypatch.setattr(transfer, "BATCH_DOCUMENTS", 10)  # line 57 is in the sixth batch
    db = tmp_path / "t.db"
    populated(db, count=1)
    before = users_of(db)
    lines: list[Any] = [{"name": f"user {i}"} for i in range(1, 101)]
    lines[56] = bad
    source = jsonl(tmp_path / "users.jsonl", lines)
    code = main(
        ["import", "--table", "users", str(source), "--append", "--app", APP, "--db", url(db)]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "users.jsonl line 57:" in err
    assert users_of(db) == before


def test_duplicate_ids_are_refused_by_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "t.db"
    populated(db, count=1)
    existing = users_of(db)[0]
    source = jsonl(tmp_path / "u.jsonl", [{"name": "new"}, to_json(existing)])
    assert (
        main(["import", "--table", "users", str(source), "--append", "--app", APP, "--db", url(db)])
        == 1
    )
    err = capsys.readouterr().err
    assert "u.jsonl line 2:" in err and "already exists" in err
    assert len(users_of(db)) == 2


def test_modes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    populated(db, count=1)
    source = jsonl(tmp_path / "u.jsonl", [{"name": "x"}, {"name": "y"}])
    base = ["import", "--table", "users", str(source), "--app", APP, "--db", url(db)]
    assert main(base) == 1
    assert "not empty" in capsys.readouterr().err
    assert main([*base, "--append"]) == 0
    assert len(users_of(db)) == 4
    assert main([*base, "--replace"]) == 0
    assert sorted(u["name"] for u in users_of(db)) == ["x", "y"]
    assert main(["import", "--table", "nope", str(source), "--app", APP, "--db", url(db)]) == 1
    assert main(["import", "--table", "users", str(source), "--db", url(db)]) == 1
    assert "--app" in capsys.readouterr().err


def test_csv_and_json_imports(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    owner, _ = populated(db, count=0)
    csv_file = tmp_path / "tasks.csv"
    csv_file.write_text(f'text,owner,n\nfirst,{owner},1\n"with, comma",{owner},2\n')
    base = ["--app", APP, "--db", url(db), "--append"]
    assert main(["import", "--table", "tasks", str(csv_file), *base]) == 0
    json_file = tmp_path / "tasks.json"
    json_file.write_text(json.dumps([{"text": "third", "owner": owner, "n": 3}]))
    assert main(["import", "--table", "tasks", str(json_file), *base]) == 0
    tasks = everything(url(db))[("", "tasks")]
    assert [(t["text"], t["n"]) for t in tasks] == [("first", 1), ("with, comma", 2), ("third", 3)]


def test_csv_bad_row_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    owner, _ = populated(db, count=0)
    csv_file = tmp_path / "tasks.csv"
    csv_file.write_text(f"text,owner,n\nok,{owner},1\nbad,{owner},not-a-number\n")
    assert (
        main(
            ["import", "--table", "tasks", str(csv_file), "--app", APP, "--db", url(db), "--append"]
        )
        == 1
    )
    assert "tasks.csv line 3:" in capsys.readouterr().err


def test_importing_into_a_database_with_other_table_numbers_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    populated(tmp_path / "source.db", count=1)
    main(["export", "--path", str(tmp_path / "e.zip"), "--db", url(tmp_path / "source.db")])
    other = App(Schema(aaa=Table({"x": int})), storage=SQLiteStorage(tmp_path / "other.db"))
    with other.sync_client(runtime=False):
        pass  # "aaa" takes table number 1 there
    assert (
        main(["import", str(tmp_path / "e.zip"), "--app", APP, "--db", url(tmp_path / "other.db")])
        == 1
    )
    assert "cannot be kept" in capsys.readouterr().err


def test_quiet_when_piped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    populated(tmp_path / "source.db", count=5)
    main(["export", "--path", str(tmp_path / "q"), "--db", url(tmp_path / "source.db")])
    err = capsys.readouterr().err
    assert err == f"exported 8 documents to {tmp_path / 'q'}\n"


def test_progress_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then treats stderr as a terminal
    populated(tmp_path / "source.db", count=5)
    main(["export", "--path", str(tmp_path / "q"), "--db", url(tmp_path / "source.db")])
    assert "exporting" in capsys.readouterr().err


def test_export_and_import_on_every_backend(storage: Any, tmp_path: Path) -> None:
    """From the backend under test to SQLite and back into the (emptied) backend."""
    with TestApp(app, storage=storage) as t:
        t.mutation(seed, {"count": 5})
        fid = t.action(attach, {"data": b"on any backend"})
    source = storage.url
    assert main(["export", "--path", str(tmp_path / "e"), "--include-files", "--db", source]) == 0
    copy = url(tmp_path / "copy.db")
    assert main(["import", str(tmp_path / "e"), "--app", APP, "--db", copy]) == 0
    assert everything(source) == everything(copy)
    assert main(["import", str(tmp_path / "e"), "--app", APP, "--db", source, "--replace"]) == 0
    assert everything(source) == everything(copy)
    with TestApp(app, storage=SQLiteStorage(tmp_path / "copy.db")) as t:
        assert t.action(read, {"id": fid}) == b"on any backend"
