"""Services attach to a runtime through ``core.services.Service`` (issue 12, item 4)."""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from core import App, QueryCtx, Schema, Table, UserError
from core.crons import CronService
from core.environment import EnvironmentService
from core.files import FileService
from core.logs import CallLogService, _TeeStream
from core.scheduler import Scheduler, scheduler_of
from core.services import Service, system_schema
from core.subscriptions import SubscriptionHub, subscription_hub
from core.system_tables import FUNCTION_KEYS, IDEMPOTENCY_KEYS, MIGRATIONS, SCHEDULED_FUNCTIONS
from core.testing import TestApp

ROOT = Path(__file__).resolve().parents[2]


class Audit(Service):
    """A service with a system table, an open step, a loop and a close step."""

    tables = {"_audit": Table({"what": str})}
    events: list[str] = []
    looping = threading.Event()

    def open(self) -> None:
        def attempt(txn: Any) -> None:
            from core.database.writer import DatabaseWriter

            DatabaseWriter(txn, self.runtime.db.space("_system")).insert("_audit", {"what": "open"})

        self.runtime.executor.run_transaction(attempt, label="audit")
        Audit.events.append("open")

    async def run(self) -> None:
        Audit.looping.set()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.2)  # winding down takes a while (a last flush, say)
            Audit.events.append("stopped")

    def close(self) -> None:
        Audit.events.append("close")


class Lazy(Service):
    """No tables: made on first use."""


app = App(Schema(notes=Table({"text": str})))
app.add_service(Audit)
app.add_service(Audit)  # a second add is a no-op


@app.query
def audit(ctx: QueryCtx) -> list[str]:
    return [d["what"] for d in ctx.db.system.query("_audit").collect()]


@pytest.fixture
def t(storage: Any) -> Iterator[TestApp]:
    Audit.events.clear()
    with TestApp(app, storage=storage) as harness:
        yield harness
    assert Audit.events[-1] == "close"


def test_services_attach_by_class(t: TestApp) -> None:
    rt = t.runtime
    assert app.services == [
        FileService,
        Scheduler,
        CronService,
        EnvironmentService,
        CallLogService,
        Audit,
    ]
    assert scheduler_of(rt) is rt.service(Scheduler)
    assert rt.files is rt.service(FileService)
    assert rt.service(CronService).runner is not None
    assert isinstance(rt.service(Audit), Audit) and Audit.events == ["open"]
    assert t.query(audit) == ["open"]
    # A service without tables is made on first use, once.
    lazy = rt.service(Lazy)
    assert rt.service(Lazy) is lazy and subscription_hub(rt) is rt.service(SubscriptionHub)


def test_the_system_schema_is_assembled_from_the_services(t: TestApp) -> None:
    tables = t.runtime.db.space("_system").tables
    for name in (SCHEDULED_FUNCTIONS, "_crons", "_storage", "_audit"):
        assert name in tables
    for name in (FUNCTION_KEYS, IDEMPOTENCY_KEYS, MIGRATIONS):  # the core's own
        assert name in tables
    assert set(system_schema([Scheduler]).tables) == {
        SCHEDULED_FUNCTIONS,
        FUNCTION_KEYS,
        IDEMPOTENCY_KEYS,
        MIGRATIONS,
    }


def test_service_loops_run_with_the_runtime_services(t: TestApp) -> None:
    Audit.looping.clear()
    t.runtime.start_services()
    try:
        assert Audit.looping.wait(10)
    finally:
        t.runtime.stop_services()


def test_stop_services_returns_once_the_services_have_wound_down(t: TestApp) -> None:
    Audit.looping.clear()
    t.runtime.start_services()
    assert Audit.looping.wait(10)
    assert isinstance(sys.stdout, _TeeStream)  # the call log's tee, while services run
    t.runtime.stop_services()
    # Their ``finally`` blocks are over: nothing of theirs runs on beside the caller.
    assert Audit.events[-1] == "stopped"
    assert not isinstance(sys.stdout, _TeeStream)


def test_service_mistakes_are_user_errors(t: TestApp) -> None:
    class Other(Service):
        tables = {"_audit": Table({"n": int})}

    class Unprefixed(Service):
        tables = {"audit": Table({"n": int})}

    with pytest.raises(UserError, match='"_audit" is declared by service Audit and by service'):
        system_schema([Audit, Other])
    with pytest.raises(UserError, match="start with '_'"):
        system_schema([Unprefixed])
    with pytest.raises(UserError, match="add it with app.add_service"):
        t.runtime.service(Other)
    with pytest.raises(UserError, match="takes a Service subclass"):
        app.add_service(object)  # type: ignore[arg-type]


def test_no_monkeypatching_or_string_keyed_state() -> None:
    banned = re.compile(r"method-assign|runtime\.state\b|\.state\[\"|catalog\._ensure\s*=")
    for path in sorted((ROOT / "core").rglob("*.py")):
        text = path.read_text()
        assert not banned.search(text), path
    assert "extra_schemas" not in (ROOT / "core" / "app.py").read_text()
