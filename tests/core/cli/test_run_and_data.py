from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core import ActionCtx, App, AppError, MutationCtx, QueryCtx, Schema, Table
from core.cli import main

app = App(Schema(items=Table({"name": str, "owner": str | None})))
other = App(Schema())


@app.mutation
def add(ctx: MutationCtx, name: str) -> str:
    ident = ctx.auth.get_user_identity()
    return ctx.db.insert("items", {"name": name, "owner": ident and ident.subject})


@app.query
def names(ctx: QueryCtx) -> list[str]:
    return [d["name"] for d in ctx.db.query("items").collect()]


@app.action
async def shout(ctx: ActionCtx, text: str) -> dict[str, Any]:
    return {"text": text.upper(), "raw": text.encode()}


@app.query
def fails(ctx: QueryCtx) -> None:
    raise AppError({"why": "because"}, "it failed")


def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def out(capsys: pytest.CaptureFixture[str]) -> Any:
    return json.loads(capsys.readouterr().out)


def test_run_each_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = db(tmp_path)
    assert main(["run", add.path, '{"name": "a"}', "--db", url]) == 0
    doc_id = out(capsys)
    assert isinstance(doc_id, str) and len(doc_id) == 32
    assert main(["run", add.path, '{"name": "b"}', "--identity", '{"sub": "u1"}', "--db", url]) == 0
    capsys.readouterr()
    assert main(["run", names.path, "--db", url]) == 0
    assert out(capsys) == ["a", "b"]
    assert main(["run", shout.path, '{"text": "hi"}', "--db", url]) == 0
    assert out(capsys) == {"text": "HI", "raw": {"$bytes": "aGk="}}
    assert main(["data", "items", "--db", url, "--order", "asc"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["name"], r["owner"]) for r in rows] == [("a", None), ("b", "u1")]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([add.path, '{"name": 1}'], 'Argument "name"'),
        ([add.path, "{oops"], "not valid JSON"),
        ([add.path, "[1]"], "must be a JSON object"),
        ([fails.path], "it failed"),
        (["nomodule_xyz:f"], "Cannot import"),
        ([f"{__name__}:missing"], "no attribute"),
        ([f"{__name__}:db"], "not a capsule function"),
        (["no-colon"], "not a function path"),
        ([names.path, "--app", f"{__name__}:db"], "not a capsule App"),
    ],
)
def test_run_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["run", *argv, "--db", db(tmp_path)]) == 1
    assert message in capsys.readouterr().err


def test_data_lists_tables_and_limits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = db(tmp_path)
    for name in ("x", "y", "z"):
        main(["run", add.path, json.dumps({"name": name}), "--db", url])
    capsys.readouterr()
    assert main(["data", "--db", url]) == 0
    assert capsys.readouterr().out == "\titems\t3\n"
    assert main(["data", "items", "--limit", "2", "--db", url]) == 0
    assert [json.loads(x)["name"] for x in capsys.readouterr().out.splitlines()] == ["z", "y"]
    assert main(["data", "nope", "--db", url]) == 1
    assert 'No table "nope"' in capsys.readouterr().err
    assert main(["data", "--db", f"sqlite:///{tmp_path / 'missing.db'}"]) == 1
    assert "no database" in capsys.readouterr().err


def test_database_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAPSULE_DB_URL", db(tmp_path))
    assert main(["run", add.path, '{"name": "env"}']) == 0
    capsys.readouterr()
    assert main(["data", "items"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "env"
