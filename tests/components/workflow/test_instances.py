"""Workflow handlers belong to one mounted instance (bound on its handle), not to the process."""

from __future__ import annotations

from typing import Any

import pytest

from components.workflow import WorkflowManager, WorkflowStateError, component
from core import App, BindingExistsError, MutationCtx, QueryCtx, UserError

app = App()
managers = {
    name: WorkflowManager(app.use(component, name=name)) for name in ("first", "second", "bare")
}
first, second = managers["first"], managers["second"]


@app.mutation
def record(ctx: MutationCtx, who: str, by: str) -> str:
    ctx.db.insert("greetings", {"who": who, "by": by})
    return f"{by} greets {who}"


@app.query
def greetings(ctx: QueryCtx) -> list[str]:
    return sorted(f"{d['by']}:{d['who']}" for d in ctx.db.query("greetings").collect())


@first.define(name="greet")
async def greet_first(step: Any, who: str) -> str:
    return str(await step.run_mutation(record, {"who": who, "by": "first"}))


@second.define(name="greet")
async def greet_second(step: Any, who: str) -> str:
    greeting = await step.run_mutation(record, {"who": who, "by": "second"})
    return f"{greeting}, twice: {await step.run_mutation(record, {'who': who, 'by': 'second'})}"


@first.define
async def parent(step: Any) -> str:
    return str(await step.run_workflow(greet_first, {"who": "child"}))


@app.mutation
def start(ctx: MutationCtx, which: str, workflow: str, who: str | None = None) -> str:
    args = {} if who is None else {"who": who}
    return str(managers[which].start(ctx, workflow, args))


@app.mutation
def start_foreign(ctx: MutationCtx) -> str:
    return str(second.start(ctx, greet_first, {"who": "x"}))


@app.query
def outcome(ctx: QueryCtx, which: str, id: str) -> Any:
    s = managers[which].status(ctx, id)
    return None if s is None else [s.state, s.result, s.error]


@pytest.fixture
def t(make_test_app: Any) -> Any:
    return make_test_app(app)


def test_two_mounts_run_their_own_handler_for_one_name(t: Any) -> None:
    a = t.mutation(start, {"which": "first", "workflow": "greet", "who": "ann"})
    b = t.mutation(start, {"which": "second", "workflow": "greet", "who": "bob"})
    t.finish_scheduled()
    assert t.query(outcome, {"which": "first", "id": a}) == ["success", "first greets ann", None]
    assert t.query(outcome, {"which": "second", "id": b}) == [
        "success",
        "second greets bob, twice: second greets bob",
        None,
    ]
    assert t.query(greetings) == ["first:ann", "second:bob", "second:bob"]


def test_child_workflows_run_on_the_same_instance(t: Any) -> None:
    wid = t.mutation(start, {"which": "first", "workflow": parent.name})
    t.finish_scheduled()
    assert t.query(outcome, {"which": "first", "id": wid}) == [
        "success",
        "first greets child",
        None,
    ]


def test_a_workflow_is_defined_on_its_own_mount_only(t: Any) -> None:
    with pytest.raises(WorkflowStateError, match='Workflow "greet" is not defined on this'):
        t.mutation(start, {"which": "bare", "workflow": "greet", "who": "x"})
    with pytest.raises(WorkflowStateError, match="is not defined on this"):
        t.mutation(start, {"which": "second", "workflow": parent.name})
    with pytest.raises(UserError, match='not defined by this WorkflowManager .*"second"'):
        t.mutation(start_foreign)


def test_defining_a_name_twice_on_one_mount_is_an_error() -> None:
    fresh = App()
    manager = WorkflowManager(fresh.use(component, name="wf"))

    async def greet(step: Any) -> None:
        return None

    manager.define(name="greet")(greet)
    with pytest.raises(BindingExistsError, match='"wf" already has a binding named'):
        manager.define(name="greet")(greet)
    # Another name on the same mount is fine, and so is the same name on another mount.
    manager.define(name="greet_again")(greet)
    WorkflowManager(fresh.use(component, name="other")).define(name="greet")(greet)
