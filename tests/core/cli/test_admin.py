from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from components.workflow import WorkflowManager
from components.workflow import component as workflow_component
from core import App, MutationCtx, QueryCtx, Schema, Table
from core.cli import main

app = App(Schema(notes=Table({"text": str})))
flows = WorkflowManager(app.use(workflow_component, name="flows"))
APP = f"{__name__}:app"


@app.mutation
def add(ctx: MutationCtx, text: str, tags: list[str] | None = None) -> str:
    """Add a note."""
    return ctx.db.insert("notes", {"text": text})


@app.internal_query
def count(ctx: QueryCtx) -> int:
    return len(ctx.db.query("notes").collect())


@flows.define
async def waiting(step: Any) -> Any:
    return await step.await_event("go")


@app.mutation
def begin(ctx: MutationCtx) -> str:
    return str(flows.start(ctx, waiting, {}))


def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'admin.db'}"


def test_functions_lists_kind_visibility_and_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["functions", APP]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    mine = {r[0]: r[1:] for r in rows if r[0].startswith(__name__)}
    assert mine[add.path] == ["mutation", "public", "", "text: string, tags: list[string]|null?"]
    assert mine[count.path] == ["query", "internal", "", ""]
    assert mine[begin.path] == ["mutation", "public", "", ""]
    component_rows = [r for r in rows if r[3] == "flows"]
    assert any(r[0].endswith(":list_workflows") and r[2] == "public" for r in component_rows)
    assert any(r[0].endswith(":run_step") and r[2] == "internal" for r in component_rows)
    assert main(["functions", APP, "--json"]) == 0
    described = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    full = next(d for d in described if d["path"] == add.path)
    assert full["doc"] == "Add a note." and full["args"]["required"] == ["text"]
    assert full["result"] == {"type": "string"}


def test_run_reaches_internal_functions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", add.path, '{"text": "a"}', "--db", url(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["run", count.path, "--db", url(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == 1


def test_workflows_list_status_cancel_restart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--db", url(tmp_path)]
    assert main(["run", begin.path, *db]) == 0
    wid = json.loads(capsys.readouterr().out)
    assert main(["workflows", "list", APP, *db]) == 0
    assert capsys.readouterr().out == f"{wid}\t{waiting.name}\trunning\tflows\n"
    assert main(["workflows", "cancel", APP, wid, *db]) == 0
    assert capsys.readouterr().err == f"canceled workflow {wid}\n"
    assert main(["workflows", "status", APP, wid, *db]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "canceled"
    assert main(["workflows", "list", APP, "--state", "running", *db]) == 0
    assert capsys.readouterr().out == ""
    assert main(["workflows", "restart", APP, wid, *db]) == 0
    assert capsys.readouterr().err == f"restarted workflow {wid}\n"
    assert main(["workflows", "status", APP, wid, *db]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "running"
    assert main(["workflows", "status", APP, "nope", *db]) == 1
    assert capsys.readouterr().err == 'error: No workflow "nope" (looked in: flows).\n'
    assert main(["workflows", "list", APP, "--component", "other", *db]) == 1
    assert capsys.readouterr().err == (
        'error: No workflow component is mounted as "other"; mounted: "flows".\n'
    )


def test_the_dashboard_lists_and_cancels_workflows() -> None:
    from starlette.testclient import TestClient

    from core.config import ServerSettings
    from core.server import create_asgi_app
    from core.server.dashboard import dashboard_routes
    from core.testing import TestApp

    with TestApp(app) as t:
        wid = t.mutation(begin)
        asgi = create_asgi_app(app, settings=ServerSettings(), runtime=t.runtime)
        asgi.router.routes[0:0] = dashboard_routes(asgi.state.capsule, local=True)
        with TestClient(asgi) as client:
            page = client.get("/_dashboard/jobs").text
            assert wid in page and "running" in page and "Crons" in page
            r = client.post("/_dashboard/workflows/cancel", data={"mount": "flows", "id": wid})
            assert r.status_code == 200 and r.url.path == "/_dashboard/jobs"
            assert "canceled" in r.text
