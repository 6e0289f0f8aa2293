from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from core import ActionCtx, App, Component, QueryCtx, Schema, Storage, UserError
from core.cli import main
from core.config import ServerSettings
from core.environment import DeploymentEnvironment
from core.server import create_asgi_app
from core.testing import TestApp

shared = Component("shared", schema=Schema())


@shared.action
async def peek_env(ctx: ActionCtx) -> Any:
    return ctx.env.get("K")


app = App(Schema())
shared_handle = app.use(shared)


@app.action
async def read(ctx: ActionCtx, name: str) -> str | None:
    return ctx.env.get(name)


@app.query
def read_in_query(ctx: QueryCtx) -> Any:
    return ctx.env.get("K")


@app.action
async def read_in_component(ctx: ActionCtx) -> Any:
    return await ctx.run_action(shared_handle.peek_env, {})


@pytest.fixture
def served(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, str]]:
    url = str(storage.url)
    monkeypatch.setenv("CAPSULE_DB_URL", url)  # `capsule ... --db` sets it: undo that after
    with TestApp(app, storage=storage) as t:
        asgi = create_asgi_app(app, settings=ServerSettings(), runtime=t.runtime)
        with TestClient(asgi) as client:
            yield client, url


def action(client: TestClient, name: str) -> Any:
    r = client.post("/api/action", json={"path": read.path, "args": {"name": name}})
    assert r.status_code == 200, r.text
    return r.json()["value"]


def test_env_set_is_seen_by_a_running_server_without_a_restart(
    served: tuple[TestClient, str], capsys: pytest.CaptureFixture[str]
) -> None:
    client, url = served
    assert action(client, "K") is None
    # Another "process": the CLI opens its own connection to the same database.
    assert main(["env", "set", "K", "V", "--db", url]) == 0
    assert action(client, "K") == "V"
    assert main(["env", "set", "K", "W", "--db", url]) == 0
    assert action(client, "K") == "W"
    assert main(["env", "unset", "K", "--db", url]) == 0
    assert action(client, "K") is None


def test_the_process_environment_is_the_fallback(
    served: tuple[TestClient, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, url = served
    monkeypatch.setenv("CAPSULE_TEST_ENV_ONLY", "from-process")
    with TestApp(app) as t:  # the process environment is read when a runtime opens
        assert t.action(read, {"name": "CAPSULE_TEST_ENV_ONLY"}) == "from-process"
        DeploymentEnvironment(t.runtime.executor).set("CAPSULE_TEST_ENV_ONLY", "stored")
        assert t.action(read, {"name": "CAPSULE_TEST_ENV_ONLY"}) == "stored"


def test_queries_and_components_cannot_read_it(served: tuple[TestClient, str]) -> None:
    client, url = served
    main(["env", "set", "K", "V", "--db", url])
    with TestApp(app, storage=None) as t:
        with pytest.raises(UserError, match=r"ctx\.env is not available in a query"):
            t.query(read_in_query)
        with pytest.raises(UserError, match="components have no auth and no env"):
            t.action(read_in_component)
    r = client.post("/api/query", json={"path": read_in_query.path, "args": {}})
    assert r.status_code == 500 and "V" not in r.text
