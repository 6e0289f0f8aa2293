from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from core import ActionCtx, App, AppError, MutationCtx, QueryCtx, Schema, Table, UserError
from core.database.engine import Database
from core.storage.base import Storage

app = App(Schema(counters=Table({"value": int}), seen=Table({"thread": int})))
RIVAL: dict[str, Any] = {}


@app.mutation
def make_counter(ctx: MutationCtx) -> str:
    return ctx.db.insert("counters", {"value": 0})


@app.mutation
def bump(ctx: MutationCtx, id: str) -> list[int]:
    value = ctx.db.get(id)["value"] + 1
    ctx.db.patch(id, {"value": value})
    return [value, threading.get_ident()]


@app.query
def read(ctx: QueryCtx, id: str) -> list[int]:
    return [ctx.db.get(id)["value"], threading.get_ident()]


@app.query
def whoami(ctx: QueryCtx) -> str | None:
    identity = ctx.auth.get_user_identity()
    return None if identity is None else identity.subject


@app.action
async def act(ctx: ActionCtx, id: str) -> int:
    await ctx.run_mutation(bump, {"id": id})
    return int((await ctx.run_query(read, {"id": id}))[0])


@app.mutation
def refuse(ctx: MutationCtx, code: str) -> None:
    raise AppError({"code": code, "nested": {"n": [1, 2]}})


@app.action
async def refuse_in_action(ctx: ActionCtx) -> None:
    await ctx.run_mutation(refuse, {"code": "from-action"})


@app.mutation
def conflicts_once(ctx: MutationCtx, id: str) -> int:
    """Its first attempt loses to a rival commit to the document it read."""
    value = ctx.db.get(id)["value"]
    if not RIVAL.get("done"):
        RIVAL["done"] = True
        db: Database = RIVAL["db"]
        rival = db.transaction()
        space = db.space("")
        rival.patch(space, id, {"value": rival.get(space, id)["value"] + 10})
        db.commit(rival)
        rival.close()
    ctx.db.patch(id, {"value": value + 1})
    return int(value + 1)


@pytest.fixture
def db_url(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Clients open storage from CAPSULE_DB_URL when they are entered."""
    monkeypatch.setenv("CAPSULE_DB_URL", storage.url)
    yield storage.url


def test_the_sync_client_runs_in_the_calling_thread(db_url: str) -> None:
    with app.sync_client() as client:
        counter = client.mutation(make_counter)
        assert client.mutation(bump, {"id": counter}) == [1, threading.get_ident()]
        assert client.query(read, {"id": counter}) == [1, threading.get_ident()]
        assert client.action(act, {"id": counter}) == 2


def test_the_sync_client_is_thread_safe(db_url: str) -> None:
    with app.sync_client() as client:
        counter = client.mutation(make_counter)
        results: list[list[int]] = []
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(50):
                    value, ident = client.mutation(bump, {"id": counter})
                    assert ident == threading.get_ident()
                    results.append([value, ident])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert not errors, errors[0]
        assert sorted(v for v, _ in results) == list(range(1, 401))
        assert client.query(read, {"id": counter})[0] == 400


async def test_the_async_client(db_url: str) -> None:
    async with app.client(identity={"sub": "async-user"}) as client:
        counter = await client.mutation(make_counter)
        assert (await client.mutation(bump, {"id": counter}))[0] == 1
        assert (await client.query(read, {"id": counter}))[0] == 1
        assert await client.action(act, {"id": counter}) == 2
        assert await client.query(whoami) == "async-user"
        with pytest.raises(AppError) as info:
            await client.mutation(refuse, {"code": "async"})
        assert info.value.data == {"code": "async", "nested": {"n": [1, 2]}}
        with pytest.raises(AppError) as info:
            await client.action(refuse_in_action)
        assert info.value.data["code"] == "from-action"


def test_app_error_data_and_identity_reach_the_sync_client(db_url: str) -> None:
    with app.sync_client(identity={"sub": "u1"}) as client, app.sync_client() as anonymous:
        assert client.query(whoami) == "u1" and anonymous.query(whoami) is None
        with pytest.raises(AppError) as info:
            client.mutation(refuse, {"code": "sync"})
        assert info.value.data == {"code": "sync", "nested": {"n": [1, 2]}}


def test_clients_share_one_runtime_until_the_last_leaves(db_url: str) -> None:
    outer = app.sync_client(runtime=False)
    with outer:
        with app.sync_client(runtime=False) as inner:
            assert inner.runtime is outer.runtime
            counter = inner.mutation(make_counter)
        assert outer.query(read, {"id": counter})[0] == 0
    with pytest.raises(UserError, match="not open"):
        outer.query(read, {"id": counter})
    with app.sync_client(runtime=False) as again:
        assert again.query(read, {"id": counter})[0] == 0  # same database, reopened


def test_calls_are_logged(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with app.sync_client() as client, caplog.at_level(logging.DEBUG, logger="capsule.functions"):
        counter = client.mutation(make_counter)
        RIVAL.update(done=False, db=client.runtime.db)
        client.mutation(conflicts_once, {"id": counter})
        client.query(read, {"id": counter})
        client.action(act, {"id": counter})
        with pytest.raises(AppError):
            client.mutation(refuse, {"code": "x"})
    records = [r for r in caplog.records if r.name == "capsule.functions"]
    ok = [
        r.getMessage()
        for r in records
        if r.levelno == logging.DEBUG and " ok in " in r.getMessage()
    ]
    # An AppError is the call's expected outcome: logged at INFO, never as a warning.
    assert not [r for r in records if r.levelno >= logging.WARNING]
    failed = [r for r in records if r.levelno == logging.INFO]
    path = __name__
    assert any(
        m.startswith(f"mutation {path}:conflicts_once ok in ") and "(retries: 1)" in m for m in ok
    ), ok
    assert any(m.startswith(f"query {path}:read ok in ") and "(retries: 0)" in m for m in ok)
    assert any(m.startswith(f"action {path}:act ok in ") for m in ok)
    assert any(m.startswith(f"mutation {path}:make_counter ok in ") and " ms " in m for m in ok)
    assert len(failed) == 1
    message = failed[0].getMessage()
    assert message.startswith(f"mutation {path}:refuse failed in ") and "AppError" in message


def test_failures_are_logged_without_debug_enabled(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with app.sync_client() as client, caplog.at_level(logging.INFO, logger="capsule.functions"):
        client.query(whoami)
        with pytest.raises(AppError):
            client.mutation(refuse, {"code": "y"})
    assert [r.levelno for r in caplog.records if r.name == "capsule.functions"] == [logging.INFO]
