from __future__ import annotations

from typing import Any

import pytest

from core import ActionCtx, App, MutationCtx, QueryCtx, Schema, Table, UserError
from core import execution as execution_module
from core.testing import ManualClock, TestApp

app = App(Schema(notes=Table({"text": str})))


@app.query
def query_uses(ctx: QueryCtx, what: str) -> Any:
    if what == "insert":
        ctx.db.insert("notes", {"text": "x"})
    elif what in ("patch", "replace"):
        getattr(ctx.db, what)("x" * 32, {"text": "x"})
    elif what == "delete":
        ctx.db.delete("x" * 32)
    elif what == "run_mutation":
        ctx.run_mutation(add_note, {"text": "x"})
    else:
        getattr(ctx, what)
    return None


@app.mutation
def mutation_uses(ctx: MutationCtx, what: str) -> None:
    if what == "run_action":
        ctx.run_action(act, {})
    else:
        getattr(ctx, what)


@app.action
async def action_uses(ctx: ActionCtx, what: str) -> Any:
    value = getattr(ctx, what)
    return sorted(value)[:1] if what == "env" else None


@app.action
async def act(ctx: ActionCtx) -> None:
    return None


@app.mutation
def add_note(ctx: MutationCtx, text: str) -> str:
    return ctx.db.insert("notes", {"text": text})


@app.query
def count_notes(ctx: QueryCtx) -> int:
    return len(ctx.db.query("notes").collect())


@app.action
async def write_then_read(ctx: ActionCtx, n: int) -> list[int]:
    seen = []
    for i in range(n):
        await ctx.run_mutation(add_note, {"text": str(i)})
        seen.append(await ctx.run_query(count_notes))
    return seen


@app.query
def times(ctx: QueryCtx) -> list[float]:
    first = ctx.now
    CLOCK.advance(5)
    return [first, ctx.now]


@app.mutation
def mutation_times(ctx: MutationCtx) -> list[float]:
    first = ctx.now
    CLOCK.advance(5)
    rng = ctx.random
    return [first, ctx.now, float(rng is ctx.random)]


@app.action
async def action_time(ctx: ActionCtx) -> float:
    return ctx.now


@app.query
def whoami(ctx: QueryCtx) -> str | None:
    identity = ctx.auth.get_user_identity()
    return None if identity is None else identity.subject


@app.mutation
def insert_then_count(ctx: MutationCtx) -> int:
    ctx.db.insert("notes", {"text": "mine"})
    return int(ctx.run_query(count_notes))


@app.query
def recurse(ctx: QueryCtx, depth: int) -> int:
    return int(ctx.run_query(recurse, {"depth": depth + 1}))


CLOCK = ManualClock(1_000.0)


@pytest.fixture
def t() -> Any:
    with TestApp(app, clock=CLOCK) as harness:
        yield harness


@pytest.mark.parametrize(
    ("what", "why"),
    [
        ("insert", "queries are read-only"),
        ("patch", "queries are read-only"),
        ("replace", "queries are read-only"),
        ("delete", "queries are read-only"),
        ("run_mutation", "queries are read-only"),
        ("run_action", "cannot do I/O"),
        ("scheduler", "read-only"),
        ("random", "no randomness"),
        ("env", "only in actions"),
    ],
)
def test_what_a_query_cannot_do_is_a_user_error(t: TestApp, what: str, why: str) -> None:
    with pytest.raises(UserError, match=why):
        t.query(query_uses, {"what": what})


@pytest.mark.parametrize(
    ("what", "why"), [("run_action", "schedule the action"), ("env", "only in actions")]
)
def test_what_a_mutation_cannot_do_is_a_user_error(t: TestApp, what: str, why: str) -> None:
    with pytest.raises(UserError, match=why):
        t.mutation(mutation_uses, {"what": what})


@pytest.mark.parametrize(
    ("what", "why"), [("db", "run_query / ctx.run_mutation"), ("random", "random module")]
)
def test_what_an_action_cannot_do_is_a_user_error(t: TestApp, what: str, why: str) -> None:
    with pytest.raises(UserError, match=why):
        t.action(action_uses, {"what": what})


def test_an_action_reads_the_environment(t: TestApp) -> None:
    assert isinstance(t.action(action_uses, {"what": "env"}), list)


def test_unknown_attributes_stay_attribute_errors(t: TestApp) -> None:
    with pytest.raises(AttributeError):
        t.query(query_uses, {"what": "no_such_thing"})


def test_now_is_fixed_per_attempt_and_actions_read_the_clock(t: TestApp) -> None:
    start = CLOCK.time()
    assert t.query(times) == [start, start]
    assert t.mutation(mutation_times) == [start + 5, start + 5, 1.0]
    assert t.action(action_time) == start + 10


def test_consecutive_calls_in_an_action_see_the_earlier_writes(t: TestApp) -> None:
    assert t.action(write_then_read, {"n": 20}) == list(range(1, 21))


def test_a_nested_query_in_a_mutation_sees_its_writes(t: TestApp) -> None:
    assert t.mutation(insert_then_count) == 1


def test_identity_reaches_the_context(t: TestApp) -> None:
    assert t.query(whoami) is None
    assert t.with_identity({"sub": "user-1", "iss": "tests"}).query(whoami) == "user-1"
    assert t.query(whoami) is None


def test_nesting_is_bounded(t: TestApp) -> None:
    with pytest.raises(UserError, match=f"depth of {execution_module.MAX_DEPTH}"):
        t.query(recurse, {"depth": 0})
