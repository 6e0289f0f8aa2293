from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from core import (
    ActionCtx,
    App,
    Component,
    Crons,
    MutationCtx,
    QueryCtx,
    Schema,
    Table,
    UserError,
)
from core.crons import CronService, Schedule
from core.storage import SQLiteStorage, open_storage
from core.storage.base import Storage
from core.testing import ManualClock, TestApp

SCHEMA = Schema(runs=Table({"name": str, "at": float}).index("by_name", ["name"]))


def make_app() -> App:
    app = App(SCHEMA)

    @app.internal_mutation
    def record(ctx: MutationCtx, name: str) -> None:
        ctx.db.insert("runs", {"name": name, "at": ctx.now})

    app.record = record  # type: ignore[attr-defined]
    return app


def runs(t: TestApp, name: str) -> list[float]:
    found: list[float] = t.run(
        lambda ctx: [
            d["at"]
            for d in ctx.db.query("runs").with_index("by_name", lambda q: q.eq("name", name))
        ]
    )
    return found


def cron_row(t: TestApp, name: str) -> dict[str, Any]:
    rows = t.run(lambda ctx: ctx.db.system.query("_crons").collect())
    return next(r for r in rows if r["name"] == name)


# -- acceptance ------------------------------------------------------------------------------


def test_a_cron_every_10_seconds_runs_6_times_in_60_simulated_seconds(storage: Storage) -> None:
    app = make_app()
    app.crons.interval("every10", app.record, {"name": "every10"}, seconds=10)  # type: ignore[attr-defined]
    with TestApp(app, storage=storage) as t:
        start = t.clock.time()
        assert t.finish_scheduled() == 0  # the first run is one interval after the start
        for _ in range(6):
            t.advance_time(10)
            t.finish_scheduled()
        assert runs(t, "every10") == [pytest.approx(start + 10 * k) for k in range(1, 7)]


# An action that takes longer than its cron's interval (the test holds it).
slow_started = threading.Event()
slow_release = threading.Event()
slow_runs: list[float] = []


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    slow_started.clear()
    slow_release.clear()
    slow_runs.clear()
    yield
    slow_release.set()


def test_a_run_longer_than_the_interval_skips_the_next_instead_of_stacking() -> None:
    app = make_app()

    @app.internal_action
    async def slow(ctx: ActionCtx) -> None:
        slow_runs.append(ctx.now)
        if len(slow_runs) == 1:
            slow_started.set()
            await anyio.to_thread.run_sync(slow_release.wait, 10)

    app.crons.interval("slow", slow, seconds=10)
    with TestApp(app) as t:
        t.advance_time(10)
        first = threading.Thread(target=t.finish_scheduled)
        first.start()
        assert slow_started.wait(10)
        # Two more occurrences come due while the first run is still going: both skipped.
        for _ in range(2):
            t.advance_time(10)
            t.finish_scheduled()
            assert len(slow_runs) == 1
        slow_release.set()
        first.join(timeout=30)
        assert len(slow_runs) == 1
        t.advance_time(10)
        t.finish_scheduled()
        assert len(slow_runs) == 2


# -- restarts and several runners -----------------------------------------------------------


def test_crons_survive_restarts_without_double_or_missed_runs(tmp_path: Path) -> None:
    app = make_app()
    app.crons.interval("tick", app.record, {"name": "tick"}, seconds=10)  # type: ignore[attr-defined]
    clock = ManualClock()
    path = tmp_path / "crons.db"
    with TestApp(app, storage=SQLiteStorage(path), clock=clock) as t:
        t.advance_time(10)
        t.finish_scheduled()
        assert len(runs(t, "tick")) == 1
    clock.advance(5)  # down for 5 s, then restarted
    with TestApp(app, storage=SQLiteStorage(path), clock=clock) as t:
        assert t.finish_scheduled() == 0  # the run at +10 is not repeated
        t.advance_time(5)
        t.finish_scheduled()  # and the one at +20 is still due on time
        assert len(runs(t, "tick")) == 2


def test_a_run_dispatched_before_a_restart_is_not_dispatched_again(tmp_path: Path) -> None:
    app = make_app()
    app.crons.interval("tick", app.record, {"name": "tick"}, seconds=10)  # type: ignore[attr-defined]
    clock = ManualClock()
    path = tmp_path / "crons.db"
    with TestApp(app, storage=SQLiteStorage(path), clock=clock) as t:
        t.advance_time(10)
        runner = t.runtime.service(CronService).runner
        assert runner is not None
        runner.dispatch(clock.time())  # scheduled, then the process stops
    with TestApp(app, storage=SQLiteStorage(path), clock=clock) as t:
        assert t.finish_scheduled() == 1
        assert len(runs(t, "tick")) == 1


def test_two_runtimes_dispatch_each_occurrence_once(storage: Storage) -> None:
    app = make_app()
    app.crons.interval("tick", app.record, {"name": "tick"}, seconds=10)  # type: ignore[attr-defined]
    clock = ManualClock()
    with (
        TestApp(app, storage=storage, clock=clock) as t1,
        TestApp(app, storage=open_storage(storage.url), clock=clock) as t2,
    ):
        for _ in range(3):
            t1.advance_time(10)
            barrier = threading.Barrier(2)

            def drive(t: TestApp, barrier: threading.Barrier = barrier) -> None:
                barrier.wait(timeout=10)
                t.finish_scheduled()

            threads = [threading.Thread(target=drive, args=(t,)) for t in (t1, t2)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(timeout=30)
        assert len(runs(t1, "tick")) == 3


# -- schedules -------------------------------------------------------------------------------


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def test_cron_expressions_and_calendar_helpers_run_at_their_utc_times() -> None:
    app = make_app()
    record = app.record  # type: ignore[attr-defined]
    app.crons.cron("five", "*/5 * * * *", record, {"name": "five"})
    app.crons.hourly("hourly", record, {"name": "hourly"}, minute=15)
    app.crons.daily("daily", record, {"name": "daily"}, hour=9, minute=30)
    app.crons.weekly("weekly", record, {"name": "weekly"}, day_of_week="monday", hour=8)
    # 2026-01-01 is a Thursday.
    clock = ManualClock(start=at(2026, 1, 1, 0, 0, 30))
    with TestApp(app, clock=clock) as t:
        assert cron_row(t, "five")["next_time"] == at(2026, 1, 1, 0, 5)
        assert cron_row(t, "hourly")["next_time"] == at(2026, 1, 1, 0, 15)
        assert cron_row(t, "daily")["next_time"] == at(2026, 1, 1, 9, 30)
        assert cron_row(t, "weekly")["next_time"] == at(2026, 1, 5, 8, 0)
        clock.set(at(2026, 1, 1, 0, 4, 59))
        t.finish_scheduled()
        assert runs(t, "five") == []
        clock.set(at(2026, 1, 1, 0, 5))
        t.finish_scheduled()
        assert runs(t, "five") == [at(2026, 1, 1, 0, 5)]
        assert cron_row(t, "five")["next_time"] == at(2026, 1, 1, 0, 10)


def test_missed_occurrences_coalesce_into_one_run() -> None:
    app = make_app()
    app.crons.interval("tick", app.record, {"name": "tick"}, seconds=10)  # type: ignore[attr-defined]
    with TestApp(app) as t:
        start = t.clock.time()
        t.advance_time(55)
        t.finish_scheduled()
        assert len(runs(t, "tick")) == 1
        # The schedule keeps its phase: next at +60.
        assert cron_row(t, "tick")["next_time"] == pytest.approx(start + 60)


def test_interval_schedule_arithmetic() -> None:
    every = Schedule(seconds=10)
    assert every.first(100) == 110
    assert every.following(110, 110) == 120
    assert every.following(110, 135) == 140
    assert every.describe() == "interval:10"
    assert Schedule(expression="0 9 * * 1").describe() == "cron:0 9 * * 1"


def test_bad_declarations_are_refused() -> None:
    app = make_app()
    record = app.record  # type: ignore[attr-defined]
    crons = app.crons
    crons.interval("dup", record, {"name": "x"}, seconds=1)
    with pytest.raises(UserError, match="already declared"):
        crons.interval("dup", record, {"name": "x"}, seconds=1)
    with pytest.raises(UserError, match="positive"):
        crons.interval("zero", record, {"name": "x"})
    with pytest.raises(UserError, match="five fields"):
        crons.cron("bad", "every tuesday", record, {"name": "x"})
    with pytest.raises(UserError, match="day_of_week"):
        crons.weekly("bad", record, {"name": "x"}, day_of_week="someday")
    with pytest.raises(UserError, match="hour"):
        crons.daily("bad", record, {"name": "x"}, hour=24)
    with pytest.raises(UserError, match="minute"):
        crons.hourly("bad", record, {"name": "x"}, minute=60)
    with pytest.raises(UserError, match="args"):
        crons.interval("bad", record, ["x"], seconds=1)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="name"):
        crons.interval("", record, seconds=1)
    assert crons.weekly("short", record, {"name": "x"}, day_of_week="Fri").schedule == Schedule(
        expression="0 0 * * 5"
    )
    assert "dup" in repr(crons)


def test_a_cron_whose_function_cannot_be_scheduled_fails_at_open() -> None:
    app = make_app()

    @app.query
    def not_schedulable(ctx: QueryCtx) -> None:
        return None

    app.crons.interval("q", not_schedulable, seconds=1)
    with pytest.raises(UserError, match='Cron "q"'), TestApp(app):
        pass


def test_changed_and_removed_crons_are_updated_at_open(tmp_path: Path) -> None:
    path = tmp_path / "crons.db"
    clock = ManualClock()
    first = make_app()
    first.crons.interval("a", first.record, {"name": "a"}, seconds=10)  # type: ignore[attr-defined]
    first.crons.interval("b", first.record, {"name": "b"}, seconds=10)  # type: ignore[attr-defined]
    with TestApp(first, storage=SQLiteStorage(path), clock=clock):
        pass
    clock.advance(3)
    second = make_app()
    second.crons.interval("a", second.record, {"name": "a"}, seconds=30)  # type: ignore[attr-defined]
    with TestApp(second, storage=SQLiteStorage(path), clock=clock) as t:
        rows = t.run(lambda ctx: ctx.db.system.query("_crons").collect())
        assert [r["name"] for r in rows] == ["a"]
        assert rows[0]["next_time"] == pytest.approx(clock.time() + 30)


# -- components ------------------------------------------------------------------------------

sweeper = Component("sweeper", schema=Schema(sweeps=Table({"n": int})))


@sweeper.internal_mutation
def sweep(ctx: MutationCtx) -> None:
    ctx.db.insert("sweeps", {"n": 1})


@sweeper.query
def sweeps(ctx: QueryCtx) -> int:
    return len(ctx.db.query("sweeps").collect())


Crons.of(sweeper).interval("sweep", sweep, seconds=60)


def test_components_declare_crons_that_each_instance_runs() -> None:
    app = make_app()
    one = app.use(sweeper, name="one")
    two = app.use(sweeper, name="two")

    @app.query
    def counts(ctx: QueryCtx) -> list[int]:
        return [ctx.run_query(one.sweeps), ctx.run_query(two.sweeps)]

    assert Crons.of(sweeper) is Crons.of(sweeper)
    with TestApp(app) as t:
        t.advance_time(60)
        assert t.finish_scheduled() == 2
        assert t.query(counts) == [1, 1]
        namespaces = sorted(
            r["namespace"] for r in t.run(lambda ctx: ctx.db.system.query("_crons").collect())
        )
        assert namespaces == ["one", "two"]
