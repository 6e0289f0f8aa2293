from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from core import App, MutationCtx, QueryCtx, Schema, SQLiteStorage, Table, UserError
from core.testing import ManualClock, TestApp
from core.testing.fixtures import BACKENDS, postgres_url

app = App(Schema(notes=Table({"text": str})))


@app.mutation
def add(ctx: MutationCtx, text: str) -> str:
    return ctx.db.insert("notes", {"text": text})


@app.query
def texts(ctx: QueryCtx) -> list[str]:
    return [d["text"] for d in ctx.db.query("notes").collect()]


@app.query
def whoami(ctx: QueryCtx) -> Any:
    identity = ctx.auth.get_user_identity()
    return None if identity is None else [identity.subject, identity.email]


def test_each_harness_runs_on_a_fresh_sqlite_file_deleted_on_close() -> None:
    with TestApp(app) as t:
        storage = t.runtime.storage
        assert isinstance(storage, SQLiteStorage)
        path = Path(storage.path)
        assert path.exists()
        t.mutation(add, {"text": "a"})
        assert t.query(texts) == ["a"]
    assert not path.parent.exists()
    with TestApp(app) as t:
        assert t.query(texts) == []


def test_run_executes_a_function_as_a_mutation() -> None:
    with TestApp(app) as t:
        doc_id = t.run(lambda ctx: ctx.db.insert("notes", {"text": "direct"}))
        assert t.run(lambda ctx: ctx.db.get(doc_id)["text"]) == "direct"
        with pytest.raises(ZeroDivisionError):
            t.run(lambda ctx: ctx.db.insert("notes", {"text": "undone"}) and 1 / 0)
        assert t.query(texts) == ["direct"]


def test_with_identity_is_a_view_that_shares_the_database() -> None:
    with TestApp(app) as t:
        alice = t.with_identity({"sub": "alice", "email": "a@example.com"})
        assert alice.query(whoami) == ["alice", "a@example.com"]
        assert t.query(whoami) is None
        with alice:
            alice.mutation(add, {"text": "from alice"})
        assert t.query(texts) == ["from alice"]  # leaving the view did not close the harness


def test_the_harness_must_be_open() -> None:
    t = TestApp(app)
    with pytest.raises(UserError, match="not open"):
        t.query(texts)


def test_the_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock(100.0)
    assert clock.time() == 100.0 == clock.time()
    assert clock.advance(2.5) == 102.5
    clock.set(200.0)
    assert clock.time() == 200.0
    with pytest.raises(UserError):
        clock.advance(-1)
    with pytest.raises(UserError):
        clock.set(10.0)
    assert abs(ManualClock().time() - __import__("time").time()) < 60


def test_the_harness_clock_is_what_ctx_now_reads() -> None:
    with TestApp(app, clock=ManualClock(50.0)) as t:
        t.advance_time(10)
        assert t.clock.time() == 60.0
        doc_id = t.mutation(add, {"text": "x"})
        assert t.run(lambda ctx: ctx.db.get(doc_id))["_creation_time"] == 60.0


def test_the_storage_fixture_covers_every_backend(
    storage: Any, request: pytest.FixtureRequest
) -> None:
    assert BACKENDS == ["sqlite", "postgres"]
    backend = request.node.callspec.params["storage"]
    assert backend in BACKENDS
    if backend == "postgres":
        assert postgres_url() == os.environ["CAPSULE_TEST_POSTGRES_URL"]
    with TestApp(app, storage=storage) as t:
        t.mutation(add, {"text": backend})
        assert t.query(texts) == [backend]


def test_the_clock_fixture(clock: ManualClock) -> None:
    start = clock.time()
    clock.advance(1)
    assert clock.time() == start + 1
