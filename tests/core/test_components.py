from __future__ import annotations

from typing import Any

import pytest

from core import (
    ActionCtx,
    App,
    AppError,
    Component,
    FunctionNotFoundError,
    InvalidIdError,
    InvalidValueError,
    MutationCtx,
    QueryCtx,
    Schema,
    Table,
    UserError,
    run_function,
)
from core.testing import TestApp

counter = Component(
    "counter",
    schema=Schema(counts=Table({"name": str, "n": int}).index("by_name", ["name"])),
    config={"step": int},
)


def _find(ctx: Any, name: str) -> dict[str, Any] | None:
    return ctx.db.query("counts").with_index("by_name", lambda q: q.eq("name", name)).first()


@counter.mutation
def add(ctx: MutationCtx, name: str) -> int:
    doc = _find(ctx, name)
    step = int(ctx.config["step"])
    if doc is None:
        ctx.db.insert("counts", {"name": name, "n": step})
        return step
    ctx.db.patch(doc["_id"], {"n": doc["n"] + step})
    return int(doc["n"]) + step


@counter.mutation
def add_then_fail(ctx: MutationCtx, name: str) -> None:
    ctx.run_mutation(add, {"name": name})
    raise AppError({"why": "boom"})


@counter.query
def get(ctx: QueryCtx, name: str) -> int:
    doc = _find(ctx, name)
    return 0 if doc is None else int(doc["n"])


@counter.internal_query
def secret(ctx: QueryCtx) -> int:
    return 42


@counter.query
def calls_secret(ctx: QueryCtx) -> int:
    return int(ctx.run_query(secret, {}))


@counter.query
def read_doc(ctx: QueryCtx, id: str) -> Any:
    return ctx.db.get(id)


@counter.query
def read_table(ctx: QueryCtx, table: str) -> Any:
    return ctx.db.query(table).collect()


@counter.query
def whoami(ctx: QueryCtx) -> Any:
    return ctx.auth.get_user_identity()


@counter.action
async def read_env(ctx: ActionCtx) -> Any:
    return dict(ctx.env)


@counter.mutation
def call_back(ctx: MutationCtx, fn: str, text: str) -> Any:
    return ctx.run_mutation(fn, {"text": text})


outer = Component("outer", schema=Schema(logs=Table({"msg": str})))
inner_handle = outer.use(counter, name="inner", config={"step": 100})


@outer.mutation
def outer_add(ctx: MutationCtx, name: str) -> int:
    ctx.db.insert("logs", {"msg": name})
    return int(ctx.run_mutation(inner_handle.add, {"name": name}))


app = App(Schema(notes=Table({"text": str})))
one = app.use(counter, name="one", config={"step": 1})
two = app.use(counter, name="two", config={"step": 10})
nested = app.use(outer, name="nested")


@app.mutation
def bump(ctx: MutationCtx, which: str, name: str) -> int:
    handle = one if which == "one" else two
    return int(ctx.run_mutation(handle.add, {"name": name}))


@app.query
def count(ctx: QueryCtx, which: str, name: str) -> int:
    handle = one if which == "one" else two
    return int(run_function(ctx, "query", handle.get, {"name": name}))


@app.mutation
def note_and_catch(ctx: MutationCtx, catch: bool) -> str:
    ctx.db.insert("notes", {"text": "kept"})
    if not catch:
        ctx.run_mutation(one.add_then_fail, {"name": "y"})
        return "unreachable"
    try:
        ctx.run_mutation(one.add_then_fail, {"name": "y"})
    except AppError as exc:
        return str(exc.data["why"])
    return "no error"


@app.query
def notes(ctx: QueryCtx) -> int:
    return len(ctx.db.query("notes").collect())


@app.query
def internal_from_app(ctx: QueryCtx) -> int:
    return int(ctx.run_query(one.secret, {}))


@app.query
def exported_calling_internal(ctx: QueryCtx) -> int:
    return int(ctx.run_query(one.calls_secret, {}))


@app.query
def mutation_from_query(ctx: QueryCtx) -> int:
    return int(ctx.run_mutation(one.add, {"name": "q"}))


@app.mutation
def component_reads_app_doc(ctx: MutationCtx) -> Any:
    note = ctx.db.insert("notes", {"text": "secret"})
    return ctx.run_query(one.read_doc, {"id": note})


@app.mutation
def component_reads_other_instance(ctx: MutationCtx) -> Any:
    ctx.run_mutation(two.add, {"name": "z"})
    return ctx.run_query(one.read_table, {"table": "notes"})


@app.mutation
def component_reads_other_instance_id(ctx: MutationCtx) -> Any:
    ctx.run_mutation(two.add, {"name": "z"})
    doc_id = ctx.run_query(two.read_table, {"table": "counts"})[0]["_id"]
    return ctx.run_query(one.read_doc, {"id": doc_id})


@app.query
def component_auth(ctx: QueryCtx) -> Any:
    return ctx.run_query(one.whoami, {})


@app.action
async def component_env(ctx: ActionCtx) -> Any:
    return await ctx.run_action(one.read_env, {})


@app.internal_mutation
def save_note(ctx: MutationCtx, text: str) -> str:
    return str(ctx.db.insert("notes", {"text": text}))


@app.mutation
def pass_callback(ctx: MutationCtx) -> Any:
    return ctx.run_mutation(one.call_back, {"fn": save_note, "text": "from component"})


@app.mutation
def nested_add(ctx: MutationCtx, name: str) -> int:
    return int(ctx.run_mutation(nested.outer_add, {"name": name}))


@app.mutation
def app_calls_grandchild(ctx: MutationCtx) -> Any:
    from core.components import BoundRef

    return ctx.run_mutation(BoundRef(add, "nested/inner"), {"name": "direct"})


@pytest.fixture
def t(storage: Any) -> Any:
    with TestApp(app, storage=storage) as harness:
        yield harness


def test_two_instances_keep_separate_data(t: TestApp) -> None:
    assert t.mutation(bump, {"which": "one", "name": "a"}) == 1
    assert t.mutation(bump, {"which": "one", "name": "a"}) == 2
    assert t.mutation(bump, {"which": "two", "name": "a"}) == 10
    assert t.query(count, {"which": "one", "name": "a"}) == 2
    assert t.query(count, {"which": "two", "name": "a"}) == 10


def test_caught_component_failure_undoes_only_its_writes(t: TestApp) -> None:
    assert t.mutation(note_and_catch, {"catch": True}) == "boom"
    assert t.query(notes) == 1
    assert t.query(count, {"which": "one", "name": "y"}) == 0


def test_uncaught_component_failure_undoes_everything(t: TestApp) -> None:
    with pytest.raises(AppError) as info:
        t.mutation(note_and_catch, {"catch": False})
    assert info.value.data == {"why": "boom"}
    assert t.query(notes) == 0
    assert t.query(count, {"which": "one", "name": "y"}) == 0


def test_app_cannot_call_internal_function(t: TestApp) -> None:
    with pytest.raises(FunctionNotFoundError, match="internal"):
        t.query(internal_from_app)
    assert t.query(exported_calling_internal) == 42


def test_query_calling_component_mutation_is_refused(t: TestApp) -> None:
    with pytest.raises(UserError, match="run_mutation is not available in a query"):
        t.query(mutation_from_query)


def test_component_cannot_read_app_document_by_id(t: TestApp) -> None:
    with pytest.raises(InvalidIdError, match='component "one"'):
        t.mutation(component_reads_app_doc)
    assert t.query(notes) == 0


def test_component_cannot_read_app_table_by_name(t: TestApp) -> None:
    with pytest.raises(InvalidValueError, match='"notes" is not in the schema of component'):
        t.mutation(component_reads_other_instance)


def test_component_cannot_read_other_instance_by_id(t: TestApp) -> None:
    with pytest.raises(InvalidIdError):
        t.mutation(component_reads_other_instance_id)


def test_component_has_no_auth_and_no_env(t: TestApp) -> None:
    with pytest.raises(UserError, match="components have no auth"):
        t.with_identity({"sub": "u1"}).query(component_auth)
    with pytest.raises(UserError, match="components have no auth and no env"):
        t.action(component_env)


def test_clients_cannot_call_component_functions(t: TestApp) -> None:
    with pytest.raises(FunctionNotFoundError, match="not clients"):
        t.query(one.get, {"name": "a"})


def test_app_function_passed_to_component_travels_as_handle(t: TestApp) -> None:
    note_id = t.mutation(pass_callback)
    assert isinstance(note_id, str)
    assert t.query(notes) == 1


def test_nested_components_have_their_own_tables(t: TestApp) -> None:
    assert t.mutation(nested_add, {"name": "a"}) == 100
    assert t.mutation(nested_add, {"name": "a"}) == 200
    # The app mounted "outer", not "outer/inner": it cannot reach the grandchild directly.
    with pytest.raises(FunctionNotFoundError, match="not mounted by"):
        t.mutation(app_calls_grandchild)


def test_nesting_depth_is_limited() -> None:
    deep = App()

    @deep.mutation
    def recurse(ctx: MutationCtx, n: int) -> int:
        return int(ctx.run_mutation(recurse, {"n": n + 1}))

    with TestApp(deep) as t:
        with pytest.raises(UserError, match="depth of 8"):
            t.mutation(recurse, {"n": 0})


def test_mount_errors() -> None:
    fresh = App()
    fresh.use(counter, name="c", config={"step": 1})
    with pytest.raises(UserError, match="already mounted"):
        fresh.use(counter, name="c", config={"step": 1})
    with pytest.raises(UserError, match="Configuration"):
        fresh.use(counter, name="d", config={"step": "1"})
    with pytest.raises(UserError, match="Mount name"):
        fresh.use(counter, name="bad name", config={"step": 1})


sysview = Component("sysview")


@sysview.mutation
def schedule_own(ctx: MutationCtx) -> str:
    return str(ctx.scheduler.run_after(60, own_job, {}))


@sysview.internal_mutation
def own_job(ctx: MutationCtx) -> None:
    return None


@sysview.query
def read_job(ctx: QueryCtx, id: str) -> Any:
    return ctx.db.system.get(id)


@sysview.query
def count_jobs(ctx: QueryCtx) -> int:
    return len(ctx.db.system.query("_scheduled_functions").collect())


sys_app = App()
sys_handle = sys_app.use(sysview, name="sv")


@sys_app.internal_mutation
def app_job(ctx: MutationCtx) -> None:
    return None


@sys_app.mutation
def schedule_both(ctx: MutationCtx) -> list[str]:
    own = ctx.run_mutation(sys_handle.schedule_own, {})
    app_id = str(ctx.scheduler.run_after(60, app_job, {}))
    return [own, app_id]


@sys_app.query
def component_view(ctx: QueryCtx, own: str, app_id: str) -> list[Any]:
    return [
        ctx.run_query(sys_handle.read_job, {"id": own}) is not None,
        ctx.run_query(sys_handle.read_job, {"id": app_id}),
        ctx.run_query(sys_handle.count_jobs, {}),
        len(ctx.db.system.query("_scheduled_functions").collect()),
    ]


def test_component_sees_only_its_own_system_documents() -> None:
    with TestApp(sys_app) as t:
        own, app_id = t.mutation(schedule_both)
        assert t.query(component_view, {"own": own, "app_id": app_id}) == [True, None, 1, 2]
