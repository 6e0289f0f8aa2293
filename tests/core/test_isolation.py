"""Component isolation (issue 11, defect 2): paths stay in their instance, handles are signed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from core import (
    App,
    CapsuleError,
    Component,
    FunctionNotFoundError,
    MutationCtx,
    QueryCtx,
    Schema,
    Table,
    call,
    function_handle,
    handle_path,
    is_handle,
)
from core.errors import InvalidHandleError
from core.handles import HandleKey
from core.storage import open_storage
from core.system_tables import FUNCTION_KEYS, SCHEDULED_FUNCTIONS
from core.testing import TestApp

MOD = __name__

# -- a component that tries to reach what it was not given -------------------------------------

probe = Component("probe", schema=Schema(marks=Table({"by": str})))


@probe.internal_mutation
def evil_internal(ctx: MutationCtx) -> None:
    ctx.db.insert("marks", {"by": "internal"})


@probe.mutation
def mutate(ctx: MutationCtx, ref: str) -> Any:
    return ctx.run_mutation(ref, {"by": "probe"})


@probe.query
def read(ctx: QueryCtx, ref: str) -> Any:
    return ctx.run_query(ref)


@probe.mutation
def schedule(ctx: MutationCtx, ref: str) -> str:
    return str(ctx.scheduler.run_after(0, ref, {"by": "probe"}))


@probe.mutation
def own_by_path(ctx: MutationCtx) -> int:
    ctx.run_mutation(f"{MOD}:evil_internal")
    return len(ctx.db.query("marks").collect())


@probe.query
def marks(ctx: QueryCtx) -> int:
    return len(ctx.db.query("marks").collect())


@probe.query
def make_handle(ctx: QueryCtx) -> str:
    return function_handle(ctx, evil_internal)


# -- the app ------------------------------------------------------------------------------------

app = App(Schema(secrets=Table({"by": str})))
a = app.use(probe, name="a")
b = app.use(probe, name="b")


@app.internal_mutation
def app_write(ctx: MutationCtx, by: str) -> None:
    ctx.db.insert("secrets", {"by": by})


@app.internal_query
def app_read(ctx: QueryCtx) -> int:
    return len(ctx.db.query("secrets").collect())


@app.mutation
def attempt_mutation(ctx: MutationCtx, ref: str) -> Any:
    return call(ctx, a.mutate, {"ref": ref})


@app.query
def attempt_query(ctx: QueryCtx, ref: str) -> Any:
    return call(ctx, a.read, {"ref": ref})


@app.mutation
def attempt_schedule(ctx: MutationCtx, ref: str) -> Any:
    return call(ctx, a.schedule, {"ref": ref})


@app.mutation
def give_write(ctx: MutationCtx) -> Any:
    # A reference passed as an argument travels as a handle the app signed.
    return call(ctx, a.mutate, {"ref": app_write})


@app.mutation
def give_schedule(ctx: MutationCtx) -> Any:
    return call(ctx, a.schedule, {"ref": function_handle(ctx, app_write)})


@app.mutation
def own_internal(ctx: MutationCtx) -> int:
    return call(ctx, a.own_by_path)


@app.query
def state(ctx: QueryCtx) -> dict[str, int]:
    return {
        "secrets": len(ctx.db.query("secrets").collect()),
        "a": call(ctx, a.marks),
        "b": call(ctx, b.marks),
        "jobs": len(ctx.db.system.query(SCHEDULED_FUNCTIONS).collect()),
    }


@app.query
def b_handle(ctx: QueryCtx) -> str:
    return call(ctx, b.make_handle)


@pytest.fixture
def t(storage: Any) -> Iterator[TestApp]:
    with TestApp(app, storage=storage) as harness:
        yield harness


NOTHING = {"secrets": 0, "a": 0, "b": 0, "jobs": 0}


def _forged(namespace: str, path: str) -> str:
    return HandleKey(os.urandom(32)).sign(namespace, path)


def test_a_component_cannot_reach_app_internals_by_path(t: TestApp) -> None:
    with pytest.raises(FunctionNotFoundError, match="resolves paths only among its own"):
        t.mutation(attempt_mutation, {"ref": f"{MOD}:app_write"})
    with pytest.raises(FunctionNotFoundError, match="resolves paths only among its own"):
        t.query(attempt_query, {"ref": f"{MOD}:app_read"})
    assert t.query(state) == NOTHING


def test_forged_handles_are_refused(t: TestApp) -> None:
    legit_b = t.query(b_handle)
    sig = legit_b.rpartition("|")[2]
    forgeries = [
        f"fn:|{MOD}:app_write",  # the old, unsigned shape: not a handle, so a path
        _forged("", f"{MOD}:app_write"),  # signed with another key
        _forged("b", f"{MOD}:evil_internal"),
        f"fn:|{MOD}:app_write|{sig}",  # b's signature on another function
        f"fn:a|{MOD}:evil_internal|{sig}",  # ... on the same path in another instance
        legit_b[:-2] + "AA",
    ]
    for ref in forgeries:
        with pytest.raises((InvalidHandleError, FunctionNotFoundError)) as info:
            t.mutation(attempt_mutation, {"ref": ref})
        if is_handle(ref):
            assert isinstance(info.value, InvalidHandleError)
            assert "cannot be written by hand" in str(info.value)
            assert info.value.http_status == 403
    with pytest.raises(InvalidHandleError):
        t.query(attempt_query, {"ref": _forged("", f"{MOD}:app_read")})
    assert t.query(state) == NOTHING


def test_scheduling_a_forged_handle_is_refused(t: TestApp) -> None:
    with pytest.raises(InvalidHandleError):
        t.mutation(attempt_schedule, {"ref": _forged("", f"{MOD}:app_write")})
    with pytest.raises(FunctionNotFoundError):
        t.mutation(attempt_schedule, {"ref": f"{MOD}:app_write"})
    assert t.finish_scheduled() == 0
    assert t.query(state) == NOTHING


def test_handles_the_app_gives_still_work(t: TestApp) -> None:
    t.mutation(give_write)
    assert t.query(state)["secrets"] == 1
    t.mutation(give_schedule)
    assert t.finish_scheduled() == 1
    assert t.query(state)["secrets"] == 2
    # A component calls its own internal functions by path.
    assert t.mutation(own_internal) == 1
    # A handle an instance made for its own internal function works for whoever holds it.
    legit_b = t.query(b_handle)
    assert handle_path(legit_b) == f"{MOD}:evil_internal"
    assert t.query(state)["b"] == 0


def test_handles_are_refused_to_clients_and_shared_across_runtimes(storage: Any) -> None:
    with TestApp(app, storage=storage) as first:
        handle = first.query(b_handle)
        with pytest.raises(FunctionNotFoundError, match="not callable by clients"):
            first.mutation(handle)
        keys = first.run(lambda ctx: len(ctx.db.system.query(FUNCTION_KEYS).collect()))
        assert keys == 1
        # A second runtime on the same database signs with the same key.
        with TestApp(app, storage=open_storage(storage.url)) as second:
            assert second.query(b_handle) == handle
    assert isinstance(InvalidHandleError("x", "y"), CapsuleError)
