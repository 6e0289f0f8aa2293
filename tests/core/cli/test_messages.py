"""Each error a newcomer meets on the command line is one line naming the cause and the fix."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from core import ActionCtx, App, AppError, Component, MutationCtx, QueryCtx, Schema, Table
from core.cli import main

notes = Component("notes", schema=Schema(entries=Table({"body": str}), tags=Table({"t": str})))


@notes.mutation
def note(ctx: MutationCtx, body: str) -> str:
    return ctx.db.insert("entries", {"body": body})


app = App(Schema(items=Table({"name": str})))
notes_handle = app.use(notes)
APP = f"{__name__}:app"


@app.mutation
def add(ctx: MutationCtx, name: str) -> str:
    ctx.run_mutation(notes_handle.note, {"body": name})
    return ctx.db.insert("items", {"name": name})


@app.query
def refuse(ctx: QueryCtx) -> None:
    raise AppError({"why": "closed"}, "The shop is closed.")


@app.action
async def peek(ctx: ActionCtx) -> None:
    ctx.db  # noqa: B018 - an action has no ctx.db


def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'm.db'}"


def error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, printed once
    return err.removeprefix("error: ").rstrip("\n")


def test_an_app_error_is_printed_once_and_not_logged_as_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        assert main(["run", refuse.path, "--db", url(tmp_path)]) == 1
    assert error(capsys) == "The shop is closed."
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_arguments_that_are_not_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", add.path, "nope", "--db", url(tmp_path)]) == 1
    assert error(capsys) == (
        "The arguments are not valid JSON (Expecting value: line 1 column 1 (char 0)); "
        """pass a JSON object such as '{"name": 1}'."""
    )


def test_a_missing_context_capability_in_an_action_reads_an_action(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", peek.path, "--db", url(tmp_path)]) == 1
    assert error(capsys) == (
        "ctx.db is not available in an action: actions reach the database only through "
        "ctx.run_query / ctx.run_mutation, each its own transaction."
    )


def test_import_of_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["import", "--app", APP, "--table", "items", "missing.jsonl", "--db", url(tmp_path)]
    assert main(argv) == 1
    assert error(capsys) == (
        f'Cannot import "missing.jsonl": no such file or folder (in {tmp_path}); check the path.'
    )


def test_import_counts_read_as_english(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = tmp_path / "one.jsonl"
    one.write_text('{"name": "a"}\n')
    assert main(["import", "--app", APP, "--table", "items", str(one), "--db", url(tmp_path)]) == 0
    assert capsys.readouterr().err == "imported 1 document\n"


@pytest.mark.parametrize("target", ["nodir/out.zip", "nodir/out"])
def test_export_into_a_missing_folder(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    target: str,
) -> None:
    main(["run", add.path, '{"name": "a"}', "--db", url(tmp_path)])
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--path", target, "--db", url(tmp_path)]) == 1
    assert (
        error(capsys)
        == f'Cannot export to "{target}": folder "nodir" does not exist; create it first.'
    )
    assert not (tmp_path / "nodir").exists()


def test_a_sqlite_url_into_a_missing_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", add.path, '{"name": "a"}', "--db", "sqlite:///nonexistent/dir/x.db"]) == 1
    assert error(capsys).startswith(
        'Cannot open the SQLite database "nonexistent/dir/x.db": folder '
        f'"{tmp_path}/nonexistent/dir" does not exist; create it first'
    )
    assert not (tmp_path / "nonexistent").exists()


def test_data_with_a_component_and_no_table_lists_its_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["run", add.path, '{"name": "a"}', "--db", url(tmp_path)])
    capsys.readouterr()
    assert main(["data", "--component", "notes", "--db", url(tmp_path)]) == 0
    assert capsys.readouterr().out == "notes\tentries\t1\nnotes\ttags\t0\n"
    assert main(["data", "--component", "nope", "--db", url(tmp_path)]) == 1
    assert error(capsys) == 'No component is mounted at "nope"; components: "notes".'
