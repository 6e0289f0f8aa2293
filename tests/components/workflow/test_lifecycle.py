from __future__ import annotations

from typing import Any

import pytest

from components.workflow import WorkflowManager, WorkflowStateError, component
from core import App, MutationCtx, QueryCtx

app = App()
handle = app.use(component, name="wf")
manager = WorkflowManager(handle, retention=3600.0)
variant = {"args": 1, "name": "fetch"}


@app.mutation
def note(ctx: MutationCtx, text: str) -> str:
    ctx.db.insert("notes", {"text": text})
    return text


@app.mutation
def finished(ctx: MutationCtx, workflow_id: str, result: dict[str, Any], context: Any) -> None:
    ctx.db.insert("notes", {"text": f"done {result['kind']} {context}"})


@app.mutation
def broken(ctx: MutationCtx, workflow_id: str, result: dict[str, Any], context: Any) -> None:
    raise RuntimeError("on_complete broke")


@manager.define
async def pipeline(step: Any) -> str:
    await step.run_mutation(note, {"text": "fetch"}, name=variant["name"])
    await step.run_mutation(note, {"text": f"process {variant['args']}"}, name="process")
    await step.run_mutation(note, {"text": "save"}, name="save", unstable=True)
    return "done"


@manager.define
async def waiter(step: Any) -> Any:
    return await step.await_event("go")


@manager.define
async def gated(step: Any) -> Any:
    await step.run_mutation(note, {"text": f"process {variant['args']}"}, name="process")
    return await step.await_event("go")


@manager.define
async def big(step: Any) -> Any:
    return "x" * (900 * 1024)


@app.mutation
def start(ctx: MutationCtx, wf: str, cb: str | None = None) -> str:
    ref = {"finished": finished, "broken": broken}.get(cb or "")
    return str(manager.start(ctx, wf, {}, on_complete=ref, context="ctx"))


@app.query
def status(ctx: QueryCtx, id: str) -> Any:
    s = manager.status(ctx, id)
    return (
        None
        if s is None
        else {
            "state": s.state,
            "result": s.result,
            "error": s.error,
            "steps": [st.name for st in s.steps],
        }
    )


@app.query
def notes(ctx: QueryCtx) -> list[str]:
    return [d["text"] for d in ctx.db.query("notes").collect()]


@app.mutation
def op(ctx: MutationCtx, what: str, id: str, arg: Any = None) -> Any:
    if what == "cancel":
        return manager.cancel(ctx, id)
    if what == "restart":
        return manager.restart(ctx, id, arg)
    if what == "cleanup":
        return manager.cleanup(ctx, id)
    return manager.send_event(ctx, id, "go", arg)


@app.query
def listing(ctx: QueryCtx, state: str | None) -> Any:
    page = manager.list(ctx, state=state, num_items=10)
    return [s.state for s in page.page]


@pytest.fixture
def t(make_test_app: Any) -> Any:
    variant.update({"args": 1, "name": "fetch"})
    return make_test_app(app)


def test_cancel_running_workflow_calls_on_complete_once(t: Any) -> None:  # case 30
    wid = t.mutation(start, {"wf": waiter.name, "cb": "finished"})
    t.mutation(op, {"what": "cancel", "id": wid})
    t.mutation(op, {"what": "cancel", "id": wid})
    t.finish_scheduled()
    assert t.query(status, {"id": wid})["state"] == "canceled"
    assert t.query(notes, {}) == ["done canceled ctx"]
    with pytest.raises(WorkflowStateError, match="canceled"):
        t.mutation(op, {"what": "send", "id": wid, "arg": 1})


def test_on_complete_failure_is_recorded(t: Any) -> None:
    wid = t.mutation(start, {"wf": pipeline.name, "cb": "broken"})
    t.finish_scheduled()
    assert t.query(status, {"id": wid})["state"] == "success"
    failures = t.runtime.executor.query(handle.on_complete_failures, {}, caller="")
    assert "on_complete broke" in failures[0]["error"]


def test_restart(t: Any) -> None:  # cases 31, 32
    wid = t.mutation(start, {"wf": waiter.name})
    with pytest.raises(WorkflowStateError, match="still running"):
        t.mutation(op, {"what": "restart", "id": wid})
    wid = t.mutation(start, {"wf": pipeline.name})
    t.finish_scheduled()
    with pytest.raises(WorkflowStateError, match='Step "nonexistent" not found'):
        t.mutation(op, {"what": "restart", "id": wid, "arg": "nonexistent"})
    with pytest.raises(WorkflowStateError, match="cannot be negative: -1"):
        t.mutation(op, {"what": "restart", "id": wid, "arg": -1})
    t.mutation(op, {"what": "restart", "id": wid, "arg": "process"})
    assert t.query(status, {"id": wid}) == {
        "state": "running",
        "result": None,
        "error": None,
        "steps": ["fetch", "process"],
    }
    t.finish_scheduled()
    assert t.query(notes, {}) == ["fetch", "process 1", "save", "process 1", "save"]
    t.mutation(op, {"what": "restart", "id": wid, "arg": 1})
    t.finish_scheduled()
    assert t.query(status, {"id": wid})["state"] == "success"
    assert t.query(notes, {})[-2:] == ["process 1", "save"]


def test_journal_mismatch_fails_naming_the_step(t: Any) -> None:  # case 34
    wid = t.mutation(start, {"wf": gated.name})
    t.finish_scheduled()
    variant["args"] = 2  # the code changed while the workflow was in flight
    t.mutation(op, {"what": "send", "id": wid, "arg": 1})
    s = t.query(status, {"id": wid})
    assert s["state"] == "failed"
    assert 'step "process"' in s["error"] and "arguments" in s["error"]


def test_unstable_step_skips_the_argument_check_but_not_the_name(t: Any) -> None:  # case 34
    wid = t.mutation(start, {"wf": pipeline.name})
    variant["name"] = "download"
    t.finish_scheduled()
    s = t.query(status, {"id": wid})
    assert s["state"] == "failed" and "kind or name" in s["error"]


def test_cleanup_and_retention(t: Any) -> None:  # case 33, retention
    running = t.mutation(start, {"wf": waiter.name})
    assert t.mutation(op, {"what": "cleanup", "id": running}) is False
    wid = t.mutation(start, {"wf": pipeline.name})
    t.finish_scheduled()
    assert t.mutation(op, {"what": "cleanup", "id": wid}) is True
    assert t.query(status, {"id": wid}) is None
    other = t.mutation(start, {"wf": pipeline.name})
    t.finish_scheduled()
    assert t.query(status, {"id": other})["state"] == "success"
    t.advance_time(3601)
    t.finish_scheduled()
    assert t.query(status, {"id": other}) is None


def test_oversized_result_fails_clearly(t: Any) -> None:
    wid = t.mutation(start, {"wf": big.name})
    s = t.query(status, {"id": wid})
    assert s["state"] == "failed" and "the limit for a journaled value" in s["error"]


def test_list_by_state(t: Any) -> None:
    t.mutation(start, {"wf": waiter.name})
    t.mutation(start, {"wf": pipeline.name})
    t.finish_scheduled()
    assert t.query(listing, {"state": "running"}) == ["running"]
    assert t.query(listing, {"state": "success"}) == ["success"]
    assert len(t.query(listing, {"state": None})) == 2


def test_cancel_before_a_mutation_step_runs_prevents_it(t: Any) -> None:
    wid = t.mutation(start, {"wf": pipeline.name, "cb": "finished"})
    t.mutation(op, {"what": "cancel", "id": wid})
    t.finish_scheduled()
    assert t.query(status, {"id": wid})["state"] == "canceled"
    assert t.query(notes, {}) == ["done canceled ctx"]  # the "fetch" step never ran
