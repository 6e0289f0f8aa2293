from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest

from core import (
    ActionCtx,
    App,
    AppError,
    Component,
    ConflictError,
    InvalidArgumentError,
    InvalidIdError,
    InvalidValueError,
    MutationCtx,
    QueryCtx,
    SchedulerConfig,
    Schema,
    Table,
    UserError,
)
from core.scheduler import runner_is_dead, scheduler_of
from core.storage import open_storage
from core.storage.base import Storage
from core.testing import ManualClock, TestApp

app = App(
    Schema(
        counters=Table({"key": str, "value": int}).index("by_key", ["key"]),
        seen=Table({"who": str | None}),
    )
)

race_barrier: threading.Barrier | None = None
_local = threading.local()


def _bump(ctx: MutationCtx, key: str) -> None:
    doc = ctx.db.query("counters").with_index("by_key", lambda q: q.eq("key", key)).unique()
    if doc is None:
        ctx.db.insert("counters", {"key": key, "value": 1})
    else:
        ctx.db.patch(doc["_id"], {"value": doc["value"] + 1})


@app.internal_mutation
def bump(ctx: MutationCtx, key: str) -> None:
    barrier = race_barrier
    if barrier is not None and not getattr(_local, "waited", False):
        # Both racing runners reach this point before either commits.
        _local.waited = True
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=5)
    _bump(ctx, key)


@app.query
def count(ctx: QueryCtx, key: str) -> int:
    doc = ctx.db.query("counters").with_index("by_key", lambda q: q.eq("key", key)).unique()
    return 0 if doc is None else int(doc["value"])


@app.query
def job(ctx: QueryCtx, id: str) -> dict[str, Any] | None:
    return ctx.db.system.get(id)


@app.query
def jobs(ctx: QueryCtx) -> list[dict[str, Any]]:
    return ctx.db.system.query("_scheduled_functions").collect()


@app.mutation
def schedule(ctx: MutationCtx, key: str, delay: float = 0.0) -> str:
    job_id: str = ctx.scheduler.run_after(delay, bump, {"key": key})
    return job_id


@app.mutation
def schedule_then_fail(ctx: MutationCtx, key: str) -> None:
    ctx.scheduler.run_after(0, bump, {"key": key})
    raise AppError({"reason": "changed my mind"})


@app.mutation
def cancel(ctx: MutationCtx, id: str) -> None:
    ctx.scheduler.cancel(id)


@app.action
async def schedule_from_action(ctx: ActionCtx, key: str, delay: float) -> str:
    job_id: str = await ctx.scheduler.run_after(delay, bump, {"key": key})
    return job_id


@app.action
async def cancel_from_action(ctx: ActionCtx, id: str) -> None:
    await ctx.scheduler.cancel(id)


@app.internal_mutation
def record_identity(ctx: MutationCtx) -> None:
    identity = ctx.auth.get_user_identity()
    ctx.db.insert("seen", {"who": None if identity is None else identity.subject})


@app.mutation
def schedule_identity_check(ctx: MutationCtx) -> None:
    ctx.scheduler.run_after(0, record_identity, {})


@app.internal_mutation
def failing(ctx: MutationCtx) -> None:
    _bump(ctx, "failing")
    raise AppError("boom")


@app.mutation
def schedule_failing(ctx: MutationCtx) -> str:
    job_id: str = ctx.scheduler.run_after(0, failing, {})
    return job_id


# An action that blocks until the test lets it go (for running-action tests).
action_started = threading.Event()
action_release = threading.Event()


@app.internal_action
async def held_action(ctx: ActionCtx, key: str) -> None:
    action_started.set()
    await anyio.to_thread.run_sync(action_release.wait, 10)
    await ctx.scheduler.run_after(0, bump, {"key": key})
    await ctx.run_mutation(schedule, {"key": key})


@app.mutation
def schedule_held(ctx: MutationCtx, key: str) -> str:
    job_id: str = ctx.scheduler.run_after(0, held_action, {"key": key})
    return job_id


@app.mutation
def at(ctx: MutationCtx, when: float, aware: bool) -> str:
    stamp: Any = datetime.fromtimestamp(when, UTC) if aware else when
    job_id: str = ctx.scheduler.run_at(stamp, bump, {"key": "at"})
    return job_id


@app.mutation
def bad(ctx: MutationCtx, case: str) -> None:
    if case == "query":
        ctx.scheduler.run_after(0, count, {"key": "x"})
    elif case == "args":
        ctx.scheduler.run_after(0, bump, {"key": 5})
    elif case == "delay":
        ctx.scheduler.run_after(-1, bump, {"key": "x"})
    elif case == "naive":
        ctx.scheduler.run_at(datetime(2030, 1, 1), bump, {"key": "x"})


@app.mutation
def meddle(ctx: MutationCtx, how: str, id: str = "") -> Any:
    if how == "system_insert":
        return ctx.db.system.insert("_scheduled_functions", {})
    if how == "app_insert":
        return ctx.db.insert("_scheduled_functions", {})
    return ctx.db.get(id)


@app.internal_mutation
def chain(ctx: MutationCtx, left: int) -> None:
    _bump(ctx, "chain")
    if left:
        ctx.scheduler.run_after(0, chain, {"left": left - 1})


@app.mutation
def start_chain(ctx: MutationCtx, left: int) -> None:
    ctx.scheduler.run_after(0, chain, {"left": left})


@pytest.fixture(autouse=True)
def _reset_events() -> Iterator[None]:
    global race_barrier
    action_started.clear()
    action_release.clear()
    race_barrier = None
    yield
    action_release.set()
    race_barrier = None


def twin(storage: Storage) -> Storage:
    """A second storage object on the same database (as another process would open)."""
    return open_storage(storage.url)


# -- acceptance ------------------------------------------------------------------------------


def test_a_mutation_scheduled_by_a_mutation_that_raises_never_runs(storage: Storage) -> None:
    with TestApp(app, storage=storage) as t:
        with pytest.raises(AppError):
            t.mutation(schedule_then_fail, {"key": "k"})
        t.advance_time(3600)
        assert t.finish_scheduled() == 0
        assert t.query(count, {"key": "k"}) == 0
        assert t.query(jobs) == []


def test_a_mutation_scheduled_for_60_seconds_runs_exactly_once(storage: Storage) -> None:
    with TestApp(app, storage=storage) as t:
        job_id = t.mutation(schedule, {"key": "k", "delay": 60})
        assert t.query(job, {"id": job_id})["state"] == "pending"
        t.advance_time(59)
        assert t.finish_scheduled() == 0
        assert t.query(count, {"key": "k"}) == 0
        t.advance_time(1)
        assert t.finish_scheduled() == 1
        t.advance_time(3600)
        assert t.finish_scheduled() == 0
        assert t.query(count, {"key": "k"}) == 1
        done = t.query(job, {"id": job_id})
        assert done["state"] == "success"
        assert done["completed_time"] == pytest.approx(t.clock.time() - 3600)


def test_two_runners_racing_for_one_mutation_job_run_it_once(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    global race_barrier
    caplog.set_level(logging.DEBUG, logger="capsule")
    clock = ManualClock()
    with (
        TestApp(app, storage=storage, clock=clock) as t1,
        TestApp(app, storage=twin(storage), clock=clock) as t2,
    ):
        job_id = t1.mutation(schedule, {"key": "race", "delay": 60})
        t1.advance_time(60)
        s1, s2 = scheduler_of(t1.runtime), scheduler_of(t2.runtime)
        # Both runners see the job pending, and both run the mutation at the same time.
        due1, due2 = s1.due_jobs(clock.time(), 10), s2.due_jobs(clock.time(), 10)
        assert [j["_id"] for j in due1] == [j["_id"] for j in due2] == [job_id]
        race_barrier = threading.Barrier(2)
        threads = [
            threading.Thread(target=s1.run_mutation_job, args=(due1[0],)),
            threading.Thread(target=s2.run_mutation_job, args=(due2[0],)),
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=30)
        assert t1.query(count, {"key": "race"}) == 1
        assert t2.query(job, {"id": job_id})["state"] == "success"
    # The loser's attempt was abandoned on purpose: not a failure (issue 11, defect 7).
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_lost_scheduling_race_is_not_logged_as_a_failure(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 11, defect 7: a runner that finds its job already done logs no warning."""
    clock = ManualClock()
    caplog.set_level(logging.DEBUG, logger="capsule")
    with TestApp(app, storage=storage, clock=clock) as t:
        job_id = t.mutation(schedule, {"key": "late", "delay": 60})
        t.advance_time(60)
        runner = scheduler_of(t.runtime)
        stale = runner.due_jobs(clock.time(), 10)  # still pending in this copy
        assert t.finish_scheduled() == 1
        caplog.clear()
        runner.run_mutation_job(stale[0])  # loses the race: the job is already done
        assert t.query(count, {"key": "late"}) == 1
        assert t.query(job, {"id": job_id})["state"] == "success"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert any("abandoned (lost race)" in r.getMessage() for r in caplog.records)


def test_two_runtimes_finishing_at_once_run_each_job_once(storage: Storage) -> None:
    clock = ManualClock()
    with (
        TestApp(app, storage=storage, clock=clock) as t1,
        TestApp(app, storage=twin(storage), clock=clock) as t2,
    ):
        for _ in range(5):
            t1.mutation(schedule, {"key": "both", "delay": 60})
        t1.advance_time(60)
        start = threading.Barrier(2)

        def drive(t: TestApp) -> None:
            start.wait(timeout=10)
            t.finish_scheduled()

        threads = [threading.Thread(target=drive, args=(t,)) for t in (t1, t2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=30)
        assert t1.query(count, {"key": "both"}) == 5
        assert {j["state"] for j in t1.query(jobs)} == {"success"}


# -- scheduling ------------------------------------------------------------------------------


def test_actions_schedule_in_their_own_transaction() -> None:
    with TestApp(app) as t:
        job_id = t.action(schedule_from_action, {"key": "a", "delay": 5})
        assert t.query(job, {"id": job_id})["scheduled_time"] == pytest.approx(t.clock.time() + 5)
        t.advance_time(5)
        assert t.finish_scheduled() == 1
        assert t.query(count, {"key": "a"}) == 1


def test_run_at_takes_a_timestamp_or_an_aware_datetime() -> None:
    with TestApp(app) as t:
        when = t.clock.time() + 30
        for aware in (False, True):
            job_id = t.mutation(at, {"when": when, "aware": aware})
            assert t.query(job, {"id": job_id})["scheduled_time"] == pytest.approx(when)
        t.advance_time(31)  # a datetime holds microseconds: it may round up
        assert t.finish_scheduled() == 2


def test_scheduling_refuses_queries_bad_arguments_and_bad_delays() -> None:
    with TestApp(app) as t:
        with pytest.raises(UserError, match="Only mutations and actions"):
            t.mutation(bad, {"case": "query"})
        with pytest.raises(InvalidArgumentError, match='"key"'):
            t.mutation(bad, {"case": "args"})
        with pytest.raises(InvalidArgumentError, match="at least 0"):
            t.mutation(bad, {"case": "delay"})
        with pytest.raises(InvalidArgumentError, match="timezone-aware"):
            t.mutation(bad, {"case": "naive"})
        assert t.query(jobs) == []


def test_scheduled_functions_run_with_no_identity() -> None:
    with TestApp(app) as t:
        t.with_identity({"subject": "ada"}).mutation(schedule_identity_check)
        t.finish_scheduled()
        assert t.run(lambda ctx: [d["who"] for d in ctx.db.query("seen").collect()]) == [None]


def test_a_failing_mutation_job_is_marked_failed_and_its_writes_discarded() -> None:
    with TestApp(app) as t:
        job_id = t.mutation(schedule_failing)
        assert t.finish_scheduled() == 1
        failed = t.query(job, {"id": job_id})
        assert failed["state"] == "failed"
        assert "boom" in failed["error"]
        assert t.query(count, {"key": "failing"}) == 0
        assert t.finish_scheduled() == 0


def test_system_tables_are_read_only_and_separate_from_app_tables() -> None:
    with TestApp(app) as t:
        job_id = t.mutation(schedule, {"key": "k", "delay": 1})
        with pytest.raises(UserError, match="read-only"):
            t.mutation(meddle, {"how": "system_insert"})
        with pytest.raises(InvalidValueError):
            t.mutation(meddle, {"how": "app_insert"})
        with pytest.raises(InvalidIdError):
            t.mutation(meddle, {"how": "get", "id": job_id})


# -- cancel ----------------------------------------------------------------------------------


def test_cancelling_a_pending_job_prevents_it() -> None:
    with TestApp(app) as t:
        first = t.mutation(schedule, {"key": "c", "delay": 10})
        second = t.mutation(schedule, {"key": "c", "delay": 10})
        t.mutation(cancel, {"id": first})
        t.action(cancel_from_action, {"id": second})
        t.advance_time(10)
        assert t.finish_scheduled() == 0
        assert t.query(count, {"key": "c"}) == 0
        assert t.query(job, {"id": first})["state"] == "canceled"
        # Cancelling a finished or canceled job is a no-op.
        t.mutation(cancel, {"id": first})


def test_cancel_refuses_ids_that_are_not_jobs() -> None:
    with TestApp(app) as t:
        doc_id = t.run(lambda ctx: ctx.db.insert("counters", {"key": "x", "value": 0}))
        with pytest.raises(InvalidIdError):
            t.mutation(cancel, {"id": doc_id})


def test_a_canceled_running_action_finishes_but_what_it_schedules_is_canceled() -> None:
    with TestApp(app) as t:
        job_id = t.mutation(schedule_held, {"key": "child"})
        runner = threading.Thread(target=t.finish_scheduled)
        runner.start()
        assert action_started.wait(10)
        assert t.query(job, {"id": job_id})["state"] == "in_progress"
        t.mutation(cancel, {"id": job_id})
        action_release.set()
        runner.join(timeout=30)
        t.finish_scheduled()
        states = {j["_id"]: j["state"] for j in t.query(jobs)}
        assert states.pop(job_id) == "canceled"
        # One job from the action itself, one from the mutation it called: both canceled.
        assert sorted(states.values()) == ["canceled", "canceled"]
        assert t.query(count, {"key": "child"}) == 0


# -- actions: at most once ---------------------------------------------------------------------


def test_a_live_runners_action_is_never_failed_and_a_stopped_ones_never_rerun() -> None:
    clock = ManualClock()
    lease_clock = ManualClock()
    with TestApp(app, clock=clock) as t:
        storage = open_storage(t.runtime.storage.url)
        with TestApp(app, storage=storage, clock=clock) as other:
            mine, theirs = scheduler_of(t.runtime), scheduler_of(other.runtime)
            mine.lease_clock = theirs.lease_clock = lease_clock.time
            mine.renew_every = 0.01
            job_id = t.mutation(schedule_held, {"key": "lease"})
            runner = threading.Thread(target=t.finish_scheduled)
            runner.start()
            assert action_started.wait(10)
            # Time passes beyond the first lease; the live runner renews it.
            lease_clock.advance(mine.config.lease + 1)
            deadline = time.monotonic() + 10
            while t.query(job, {"id": job_id})["lease_expires"] <= lease_clock.time():
                assert time.monotonic() < deadline, "the lease was not renewed"
                time.sleep(0.01)
            theirs.sweep(clock.time())
            assert t.query(job, {"id": job_id})["state"] == "in_progress"
            # Now the runner hangs: whatever it renews from here on is at a frozen time, so
            # its lease runs out and the other runner fails the job.
            frozen = lease_clock.time()
            mine.lease_clock = lambda: frozen
            lease_clock.advance(mine.config.lease * 3)
            theirs.sweep(clock.time())
            failed = t.query(job, {"id": job_id})
            assert failed["state"] == "failed"
            assert "not re-run" in failed["error"]
            action_release.set()
            runner.join(timeout=30)
            # The action's own ending does not resurrect it, and nobody runs it again.
            assert t.query(job, {"id": job_id})["state"] == "failed"
            assert other.finish_scheduled() == 0


def test_runner_liveness_is_judged_by_host_and_process() -> None:
    import os
    import socket

    assert not runner_is_dead(f"{socket.gethostname()}:{os.getpid()}:abcd")
    assert not runner_is_dead("some-other-host:1:abcd")
    assert not runner_is_dead("garbage")


# -- retention -------------------------------------------------------------------------------


def test_finished_jobs_are_deleted_after_the_retention_period() -> None:
    with TestApp(app) as t:
        job_id = t.mutation(schedule, {"key": "r"})
        t.finish_scheduled()
        retention = SchedulerConfig().retention
        t.advance_time(retention - 120)
        t.finish_scheduled()
        assert t.query(job, {"id": job_id}) is not None
        t.advance_time(240)
        t.finish_scheduled()
        assert t.query(job, {"id": job_id}) is None


def test_retention_is_configurable() -> None:
    short = App(Schema(counters=Table({"key": str, "value": int})))
    short.scheduler_config = SchedulerConfig(retention=60, sweep_interval=1)

    @short.internal_mutation
    def noop(ctx: MutationCtx) -> None:
        pass

    @short.mutation
    def go(ctx: MutationCtx) -> str:
        job_id: str = ctx.scheduler.run_after(0, noop, {})
        return job_id

    with TestApp(short) as t:
        job_id = t.mutation(go)
        t.finish_scheduled()
        t.advance_time(61)
        t.finish_scheduled()
        assert t.run(lambda ctx: ctx.db.system.get(job_id)) is None


# -- finish_scheduled ------------------------------------------------------------------------


def test_finish_scheduled_runs_what_jobs_schedule_and_stops_runaway_chains() -> None:
    with TestApp(app) as t:
        t.mutation(start_chain, {"left": 4})
        assert t.finish_scheduled() == 5
        assert t.query(count, {"key": "chain"}) == 5
        t.mutation(start_chain, {"left": 100})
        with pytest.raises(UserError, match="schedules itself"):
            t.finish_scheduled(max_jobs=10)


# -- components ------------------------------------------------------------------------------

ticker = Component("ticker", schema=Schema(ticks=Table({"n": int})))


@ticker.internal_mutation
def tick(ctx: MutationCtx, n: int) -> None:
    ctx.db.insert("ticks", {"n": n})


@ticker.mutation
def start_ticking(ctx: MutationCtx, n: int, then: str | None = None) -> str:
    if then is not None:
        ctx.scheduler.run_after(0, then, {"key": "callback"})
    job_id: str = ctx.scheduler.run_after(1, tick, {"n": n})
    return job_id


@ticker.query
def tick_count(ctx: QueryCtx) -> int:
    return len(ctx.db.query("ticks").collect())


def test_components_schedule_their_own_functions_and_app_callbacks() -> None:
    mounted = App(Schema(counters=Table({"key": str, "value": int}).index("by_key", ["key"])))
    first = mounted.use(ticker, name="first")
    second = mounted.use(ticker, name="second")

    @mounted.internal_mutation
    def callback(ctx: MutationCtx, key: str) -> None:
        _bump(ctx, key)

    @mounted.mutation
    def go(ctx: MutationCtx) -> str:
        ctx.run_mutation(second.start_ticking, {"n": 2})
        job_id: str = ctx.run_mutation(first.start_ticking, {"n": 1, "then": callback})
        return job_id

    @mounted.mutation
    def cancel_it(ctx: MutationCtx, id: str) -> None:
        ctx.scheduler.cancel(id)

    @mounted.query
    def ticks(ctx: QueryCtx) -> list[int]:
        return [ctx.run_query(first.tick_count), ctx.run_query(second.tick_count)]

    @mounted.query
    def callbacks(ctx: QueryCtx) -> int:
        doc = ctx.db.query("counters").first()
        return 0 if doc is None else int(doc["value"])

    with TestApp(mounted) as t:
        component_job = t.mutation(go)
        with pytest.raises(InvalidIdError, match="not a job scheduled by the app"):
            t.mutation(cancel_it, {"id": component_job})
        t.advance_time(1)
        assert t.finish_scheduled() == 3
        assert t.query(ticks) == [1, 1]
        assert t.query(callbacks) == 1


# -- the runner service ------------------------------------------------------------------------


def test_the_runner_service_runs_due_jobs_while_a_client_is_open(tmp_path: Any) -> None:
    served = App(
        Schema(counters=Table({"key": str, "value": int}).index("by_key", ["key"])),
        storage=f"sqlite:///{tmp_path / 'served.db'}",
    )

    @served.internal_mutation
    def hit(ctx: MutationCtx) -> None:
        _bump(ctx, "served")

    @served.mutation
    def go(ctx: MutationCtx) -> None:
        ctx.scheduler.run_after(0, hit, {})

    @served.query
    def hits(ctx: QueryCtx) -> int:
        doc = ctx.db.query("counters").first()
        return 0 if doc is None else int(doc["value"])

    with served.sync_client() as client:
        for _ in range(3):
            client.mutation(go)
        deadline = time.monotonic() + 10
        while client.query(hits) < 3:
            assert time.monotonic() < deadline, "the runner did not run the jobs"
            time.sleep(0.01)


async def test_the_runner_picks_up_jobs_another_process_scheduled(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    shared = App(
        Schema(counters=Table({"key": str, "value": int}).index("by_key", ["key"])), storage=url
    )

    @shared.internal_mutation
    def hit(ctx: MutationCtx) -> None:
        _bump(ctx, "shared")

    @shared.mutation
    def go(ctx: MutationCtx) -> None:
        ctx.scheduler.run_after(0, hit, {})

    @shared.query
    def hits(ctx: QueryCtx) -> int:
        doc = ctx.db.query("counters").first()
        return 0 if doc is None else int(doc["value"])

    async with shared.client() as client:
        # A runtime without a runner (another process, as far as the runner can tell).
        other = shared.make_runtime(open_storage(url))
        other.open()
        try:
            other.executor.mutation(go)
        finally:
            other.close()
        with anyio.fail_after(10):
            while await client.query(hits) < 1:  # noqa: ASYNC110 - polling state, bounded
                await anyio.sleep(0.01)


# -- failures, interruptions, transient errors --------------------------------------------------


@app.internal_action
async def broken_action(ctx: ActionCtx) -> None:
    raise RuntimeError("the API is down")


@app.internal_action
async def endless_action(ctx: ActionCtx) -> None:
    action_started.set()
    await anyio.sleep_forever()


conflicts_left = [0]


@app.internal_mutation
def contended(ctx: MutationCtx) -> None:
    if conflicts_left[0] > 0:
        conflicts_left[0] -= 1
        raise ConflictError(["counters"])
    _bump(ctx, "contended")


@app.mutation
def schedule_ref(ctx: MutationCtx, name: str, count: int = 1) -> str:
    ref = {"broken": broken_action, "endless": endless_action, "contended": contended}[name]
    ids = [ctx.scheduler.run_after(0, ref, {}) for _ in range(count)]
    return str(ids[0])


@app.action
async def schedule_at_from_action(ctx: ActionCtx, when: float) -> str:
    job_id: str = await ctx.scheduler.run_at(when, bump, {"key": "action_at"})
    return job_id


def test_a_failing_action_job_is_marked_failed() -> None:
    with TestApp(app) as t:
        job_id = t.mutation(schedule_ref, {"name": "broken"})
        assert t.finish_scheduled() == 1
        failed = t.query(job, {"id": job_id})
        assert failed["state"] == "failed"
        assert failed["error"] == "RuntimeError: the API is down"
        assert t.finish_scheduled() == 0


def test_stopping_the_runner_fails_a_running_action_instead_of_rerunning_it(
    tmp_path: Any,
) -> None:
    url = f"sqlite:///{tmp_path / 'stop.db'}"
    stopped = App(app.schema, storage=url)
    stopped.registry = app.registry  # the same functions, on a database of its own
    with stopped.sync_client() as client:
        job_id = client.mutation(schedule_ref, {"name": "endless"})
        assert action_started.wait(10)
    with TestApp(app, storage=open_storage(url)) as t:
        interrupted = t.query(job, {"id": job_id})
        assert interrupted["state"] == "failed"
        assert "Interrupted" in interrupted["error"]
        assert t.finish_scheduled() == 0


def test_a_conflicting_mutation_job_stays_pending_and_is_retried_until_it_commits() -> None:
    conflicts_left[0] = 2
    with TestApp(app) as t:
        job_id = t.mutation(schedule_ref, {"name": "contended"})
        deadline = time.monotonic() + 10
        while t.query(count, {"key": "contended"}) == 0:
            assert time.monotonic() < deadline, "the job was not retried"
            t.finish_scheduled()
            assert t.query(job, {"id": job_id})["state"] in ("pending", "success")
        assert t.query(job, {"id": job_id})["state"] == "success"
        assert t.query(count, {"key": "contended"}) == 1


def test_actions_schedule_at_a_time_and_mutations_schedule_at_most_1000() -> None:
    with TestApp(app) as t:
        job_id = t.action(schedule_at_from_action, {"when": t.clock.time() + 3})
        assert t.query(job, {"id": job_id})["scheduled_time"] == pytest.approx(t.clock.time() + 3)
        with pytest.raises(UserError, match="at most 1,000"):
            t.mutation(schedule_ref, {"name": "broken", "count": 1001})
