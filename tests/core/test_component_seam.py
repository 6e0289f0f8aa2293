"""The seam between the core and component client classes: ``call``, handles and bindings."""

from __future__ import annotations

import pickle
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core import (
    ActionCtx,
    App,
    AppError,
    BindingExistsError,
    BindingNotFoundError,
    CapsuleError,
    Component,
    FunctionNotFoundError,
    FunctionRef,
    MutationCtx,
    QueryCtx,
    Schema,
    Table,
    UserError,
    call,
    function_handle,
    handle_path,
    is_handle,
    run_function,
)
from core.testing import TestApp

# -- a component whose functions report what they see --------------------------------------

probe = Component("probe", schema=Schema(items=Table({"n": int})))


@probe.query
def seen(ctx: QueryCtx, name: str) -> Any:
    return ctx.bindings[name]


@probe.query
def seen_all(ctx: QueryCtx) -> dict[str, Any]:
    return {k: ctx.bindings[k] for k in sorted(ctx.bindings)}


@probe.mutation
def seen_in_mutation(ctx: MutationCtx, name: str) -> Any:
    return ctx.bindings.get(name, "missing")


@probe.action
async def seen_in_action(ctx: ActionCtx, name: str) -> Any:
    return ctx.bindings[name]


@probe.query
def identity(ctx: QueryCtx, name: str) -> int:
    return id(ctx.bindings[name])


@probe.action
async def identity_in_action(ctx: ActionCtx, name: str) -> int:
    return id(ctx.bindings[name])


@probe.query
def missing(ctx: QueryCtx) -> str:
    try:
        ctx.bindings["nope"]
    except BindingNotFoundError as exc:
        return str(exc)
    return "found"


@probe.query
def size(ctx: QueryCtx) -> int:
    return len(ctx.db.query("items").collect())


@probe.mutation
def insert(ctx: MutationCtx, n: int) -> int:
    ctx.db.insert("items", {"n": n})
    return n


@probe.mutation
def insert_and_fail(ctx: MutationCtx, n: int) -> None:
    ctx.db.insert("items", {"n": n})
    raise AppError("no")


@probe.action
async def double(ctx: ActionCtx, n: int) -> int:
    return 2 * n


@probe.query
def own_handle(ctx: QueryCtx) -> str:
    return function_handle(ctx, size)


app = App()
a = app.use(probe, name="a")
b = app.use(probe, name="b")
a.bind("greeting", "hello from a")
a.bind("model", {"which": "a"})
b.bind("greeting", "hello from b")


@app.query
def app_bindings(ctx: QueryCtx) -> list[Any]:
    try:
        ctx.bindings["greeting"]
    except BindingNotFoundError as exc:
        return [len(ctx.bindings), str(exc)]
    return ["found"]


@app.query
def via_query(ctx: QueryCtx, which: str, name: str) -> Any:
    return call(ctx, (a if which == "a" else b).seen, {"name": name})


@app.mutation
def via_mutation(ctx: MutationCtx, which: str, name: str) -> Any:
    return call(ctx, (a if which == "a" else b).seen_in_mutation, {"name": name})


@app.action
async def via_action(ctx: ActionCtx, which: str, name: str) -> Any:
    return await call(ctx, (a if which == "a" else b).seen_in_action, {"name": name})


@app.query
def all_of(ctx: QueryCtx, which: str) -> Any:
    return call(ctx, (a if which == "a" else b).seen_all)


@app.query
def missing_in(ctx: QueryCtx) -> str:
    return call(ctx, a.missing, then=str)


# -- call() from each context ---------------------------------------------------------------


@app.mutation
def insert_twice(ctx: MutationCtx, n: int) -> list[int]:
    first: int = call(ctx, a.insert, {"n": n})
    second = call(ctx, a.insert, {"n": n + 1}, then=lambda v: v * 10)
    return [first, second, call(ctx, a.size)]


@app.mutation
def insert_then_catch(ctx: MutationCtx) -> int:
    call(ctx, a.insert, {"n": 1})
    try:
        call(ctx, a.insert_and_fail, {"n": 2})
    except AppError:
        pass
    return call(ctx, a.size, then=int)


@app.query
def count_with_then(ctx: QueryCtx) -> str:
    return call(ctx, a.size, then=lambda n: f"{n} items")


@app.query
def mutation_from_query(ctx: QueryCtx) -> Any:
    return call(ctx, a.insert, {"n": 1})


@app.mutation
def action_from_mutation(ctx: MutationCtx) -> Any:
    return call(ctx, a.double, {"n": 1})


@app.action
async def from_action(ctx: ActionCtx) -> list[Any]:
    inserted = call(ctx, a.insert, {"n": 5})
    assert isinstance(inserted, Awaitable)
    value = await inserted
    count = await call(ctx, a.size, then=lambda n: n + 100)
    doubled = await call(ctx, a.double, {"n": 21})
    return [value, count, doubled]


@app.query
def size_of_a(ctx: QueryCtx) -> int:
    return call(ctx, a.size)


@app.query
def run_function_still_works(ctx: QueryCtx) -> list[Any]:
    ok = run_function(ctx, "query", a.size, {})
    try:
        run_function(ctx, "query", a.insert, {"n": 1})
    except FunctionNotFoundError as exc:
        return [ok, str(exc)]
    return [ok, "no error"]


@app.mutation
def not_a_context(ctx: MutationCtx) -> Any:
    return call(object(), a.size)  # type: ignore[call-overload]


@app.query
def handles(ctx: QueryCtx) -> dict[str, Any]:
    own = function_handle(ctx, app_bindings)
    return {
        "own": own,
        "own_path": handle_path(own),
        "roundtrip": function_handle(ctx, own) == own,
        "component": call(ctx, a.own_handle),
    }


@pytest.fixture
def t(storage: Any) -> Iterator[TestApp]:
    with TestApp(app, storage=storage) as harness:
        yield harness


def test_call_from_a_mutation_runs_in_its_transaction(t: TestApp) -> None:
    assert t.mutation(insert_twice, {"n": 1}) == [1, 20, 2]
    assert t.mutation(insert_then_catch) == 3  # the failed nested call's insert is undone
    assert t.query(count_with_then) == "3 items"


def test_call_from_an_action_returns_an_awaitable(t: TestApp) -> None:
    assert t.action(from_action) == [5, 101, 42]


def test_call_refuses_what_the_context_cannot_do(t: TestApp) -> None:
    with pytest.raises(UserError, match="queries are read-only"):
        t.query(mutation_from_query)
    with pytest.raises(UserError, match="is an action; a mutation cannot call it"):
        t.mutation(action_from_mutation)
    with pytest.raises(UserError, match="call\\(\\) takes the caller's QueryCtx"):
        t.mutation(not_a_context)
    assert t.query(size_of_a) == 0


def test_run_function_is_kept_and_checks_the_kind(t: TestApp) -> None:
    ok, error = t.query(run_function_still_works)
    assert ok == 0
    assert "it is a mutation, not a query" in error


def test_handles_are_parsed_by_the_core(t: TestApp) -> None:
    found = t.query(handles)
    assert is_handle(found["own"]) and is_handle(found["component"])
    assert found["own_path"] == app_bindings.path
    assert found["roundtrip"] is True

    def from_the_app(ctx: MutationCtx) -> None:
        by_ref = function_handle(ctx, a.function(size))
        by_name = function_handle(ctx, a.function("size"))
        assert found["component"] == by_ref == by_name == function_handle(ctx, a.function(a.size))
        assert handle_path(by_name) == size.path
        assert by_name != function_handle(ctx, b.function("size"))
        assert ctx.run_query(a.function("size")) == 0  # a granted reference is callable
        with pytest.raises(FunctionNotFoundError, match='not "a"'):
            a.function(b.size)
        with pytest.raises(FunctionNotFoundError, match="has no such function"):
            a.function("nothing")

    t.run(from_the_app)
    assert not is_handle("tests:fn") and not is_handle(None) and not is_handle(3)
    with pytest.raises(UserError, match="not a function handle"):
        handle_path("tests:fn")


# -- bindings ---------------------------------------------------------------------------------


def test_each_instance_sees_only_its_own_bindings(t: TestApp) -> None:
    assert t.query(via_query, {"which": "a", "name": "greeting"}) == "hello from a"
    assert t.query(via_query, {"which": "b", "name": "greeting"}) == "hello from b"
    assert t.mutation(via_mutation, {"which": "a", "name": "model"}) == {"which": "a"}
    assert t.mutation(via_mutation, {"which": "b", "name": "model"}) == "missing"
    assert t.action(via_action, {"which": "a", "name": "greeting"}) == "hello from a"
    assert t.action(via_action, {"which": "b", "name": "greeting"}) == "hello from b"
    assert t.query(all_of, {"which": "a"}) == {"greeting": "hello from a", "model": {"which": "a"}}
    assert t.query(all_of, {"which": "b"}) == {"greeting": "hello from b"}


def test_app_functions_have_no_bindings(t: TestApp) -> None:
    size_, message = t.query(app_bindings)
    assert size_ == 0
    assert message == 'No binding named "greeting" on the app (bound: none); bind it with ' + (
        "handle.bind(name, obj) on the handle app.use() returned."
    )


def test_a_missing_binding_names_the_instance_and_the_name(t: TestApp) -> None:
    message = t.query(missing_in)
    assert 'No binding named "nope" on component instance "a"' in message
    assert '(bound: "greeting", "model")' in message
    with pytest.raises(BindingNotFoundError) as info:
        t.action(via_action, {"which": "b", "name": "model"})
    assert isinstance(info.value, KeyError) and isinstance(info.value, CapsuleError)
    assert (info.value.namespace, info.value.name) == ("b", "model")
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value)


def test_binding_a_name_twice_is_an_error() -> None:
    fresh = App()
    handle = fresh.use(probe, name="p")
    handle.bind("tool", len)
    with pytest.raises(BindingExistsError, match='instance "p" already has a binding named "tool"'):
        handle.bind("tool", len)
    with pytest.raises(UserError, match="non-empty string"):
        handle.bind("", len)
    assert handle.bindings["tool"] is len
    error = BindingExistsError("p", "tool")
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


def test_bindings_are_shared_by_every_runtime_of_the_app(tmp_path: Path) -> None:
    shared = App(storage=f"sqlite:///{tmp_path / 'shared.db'}")
    handle = shared.use(probe, name="p")
    marker = object()
    handle.bind("marker", marker)

    @shared.query
    def is_marker(ctx: QueryCtx) -> bool:
        return call(ctx, handle.identity, {"name": "marker"}) == id(marker)

    @shared.action
    async def is_marker_async(ctx: ActionCtx) -> bool:
        return await call(ctx, handle.identity_in_action, {"name": "marker"}) == id(marker)

    with (
        shared.sync_client() as client,
        TestApp(shared) as one,
        TestApp(shared, storage=f"sqlite:///{tmp_path / 'other.db'}") as two,
    ):
        assert client.query(is_marker) is True
        assert client.action(is_marker_async) is True
        assert one.query(is_marker) is True
        assert two.action(is_marker_async) is True


# -- typing: call() has the handler's result type -------------------------------------------


def _typed(ctx_q: QueryCtx, ctx_a: ActionCtx, ref: FunctionRef[Any, int]) -> None:
    # Checked by mypy --strict (scripts/check): these annotations must match the overloads.
    value: int = call(ctx_q, ref)
    converted: str = call(ctx_q, ref, then=str)
    pending: Awaitable[int] = call(ctx_a, ref)
    pending_converted: Awaitable[str] = call(ctx_a, ref, then=str)
    del value, converted, pending, pending_converted
