from __future__ import annotations

from typing import Any

import pytest

from components.workflow import (
    NonRetryableError,
    ParallelismError,
    RetryPolicy,
    WorkPool,
    pool_component,
)
from components.workflow.pool import RECOVERY_INTERVAL
from core import ActionCtx, App, MutationCtx, QueryCtx
from core.scheduler import scheduler_of

app = App()
handle = app.use(pool_component, name="pool")
pool = WorkPool(handle, max_parallelism=2)
events: list[Any] = []
running_now: list[int] = [0, 0]  # current, peak


@app.action
async def job(ctx: ActionCtx, key: str, fail_times: int = 0, fatal: bool = False) -> str:
    n = sum(1 for e in events if e == ("attempt", key)) + 1
    events.append(("attempt", key))
    running_now[0] += 1
    running_now[1] = max(running_now[1], running_now[0])
    for _ in range(5):  # let other running jobs overlap with this one
        await ctx.run_query(peek, {})
    running_now[0] -= 1
    if fatal:
        raise NonRetryableError("work failed")
    if n <= fail_times:
        raise RuntimeError("boom")
    return key


@app.query
def peek(ctx: QueryCtx) -> None:
    return None


@app.mutation
def done(ctx: MutationCtx, work_id: str, context: Any, result: dict[str, Any]) -> None:
    events.append(("callback", context, result["kind"]))
    ctx.db.insert(
        "done", {"context": context, "kind": result["kind"], "error": result.get("error")}
    )


@app.mutation
def bad_callback(ctx: MutationCtx, work_id: str, context: Any, result: dict[str, Any]) -> None:
    raise RuntimeError("callback broke")


@app.mutation
def write(ctx: MutationCtx, key: str) -> str:
    ctx.db.insert("done", {"context": key, "kind": "mutation"})
    return key


@app.mutation
def enqueue(
    ctx: MutationCtx,
    key: str,
    fail_times: int = 0,
    fatal: bool = False,
    retry: bool = True,
    run_after: float = 0.0,
    backoff: float = 1.0,
    attempts: int = 3,
    callback: str = "done",
) -> str:
    policy = RetryPolicy(max_attempts=attempts, initial_backoff=backoff) if retry else False
    cb = done if callback == "done" else bad_callback
    return str(
        pool.enqueue_action(
            ctx,
            job,
            {"key": key, "fail_times": fail_times, "fatal": fatal},
            on_complete=cb,
            context=key,
            retry=policy,
            run_after=run_after,
        )
    )


@app.mutation
def enqueue_write(ctx: MutationCtx, key: str) -> str:
    return str(pool.enqueue_mutation(ctx, write, {"key": key}, on_complete=done, context=key))


@app.query
def status(ctx: QueryCtx, id: str) -> Any:
    s = pool.status(ctx, id)
    return [s.state, s.previous_attempts]


@app.mutation
def cancel(ctx: MutationCtx, id: str) -> None:
    pool.cancel(ctx, id)


@pytest.fixture
def t(make_test_app: Any) -> Any:
    events.clear()
    running_now[:] = [0, 0]
    return make_test_app(app)


def _attempts(key: str) -> int:
    return sum(1 for e in events if e == ("attempt", key))


def test_always_failing_action_retries_then_fails_once(t: Any) -> None:  # case 22
    t.mutation(enqueue, {"key": "a", "fail_times": 99})
    for _ in range(6):
        t.finish_scheduled()
        t.advance_time(10)
    assert events == [("attempt", "a")] * 3 + [("callback", "a", "failed")]


def test_fails_twice_then_succeeds_has_no_failure_callback(t: Any) -> None:  # case 22
    t.mutation(enqueue, {"key": "b", "fail_times": 2})
    for _ in range(6):
        t.finish_scheduled()
        t.advance_time(10)
    assert events == [("attempt", "b")] * 3 + [("callback", "b", "success")]


def test_non_retryable_error_stops_retries(t: Any) -> None:  # case 22
    t.mutation(enqueue, {"key": "c", "fatal": True})
    t.finish_scheduled()
    assert events == [("attempt", "c"), ("callback", "c", "failed")]


def test_cancel_before_start(t: Any) -> None:  # case 23
    wid = t.mutation(enqueue, {"key": "d", "run_after": 60.0})
    assert t.query(status, {"id": wid}) == ["pending", 0]
    t.mutation(cancel, {"id": wid})
    t.advance_time(61)
    t.finish_scheduled()
    assert events == [("callback", "d", "canceled")]
    assert t.query(status, {"id": wid}) == ["finished", 0]


def test_cancel_during_backoff(t: Any) -> None:  # case 24, 25
    wid = t.mutation(enqueue, {"key": "e", "fail_times": 99, "backoff": 60.0})
    assert t.query(status, {"id": wid}) == ["running", 0]
    t.finish_scheduled()
    assert t.query(status, {"id": wid}) == ["pending", 1]
    t.mutation(cancel, {"id": wid})
    t.mutation(cancel, {"id": wid})
    t.advance_time(200)
    t.finish_scheduled()
    assert events == [("attempt", "e"), ("callback", "e", "canceled")]
    assert t.query(status, {"id": "nonexistent"}) == ["finished", 0]


def test_never_more_than_max_parallelism_running(t: Any) -> None:  # case 21
    ids = [t.mutation(enqueue, {"key": f"k{i}"}) for i in range(5)]
    states = [t.query(status, {"id": i})[0] for i in ids]
    assert states == ["running", "running", "pending", "pending", "pending"]
    t.finish_scheduled()
    assert sorted(e[1] for e in events if e[0] == "callback") == [f"k{i}" for i in range(5)]
    assert running_now[1] <= 2  # the scheduler may run 8 at once; the pool allows 2


@app.mutation
def pause(ctx: MutationCtx, n: int) -> None:
    pool.set_max_parallelism(ctx, n)


def test_zero_parallelism_pauses(t: Any) -> None:
    t.mutation(pause, {"n": 0})
    wid = t.mutation(enqueue, {"key": "z"})
    t.finish_scheduled()
    assert events == [] and t.query(status, {"id": wid}) == ["pending", 0]
    t.mutation(pause, {"n": 2})
    t.finish_scheduled()
    assert events == [("attempt", "z"), ("callback", "z", "success")]


def test_parallelism_bounds() -> None:  # case 27
    with pytest.raises(ParallelismError, match="200"):
        WorkPool(handle, max_parallelism=201)
    with pytest.raises(ParallelismError, match="200"):
        WorkPool(handle, max_parallelism=-1)


def test_throwing_callback_is_recorded_and_not_retried(t: Any) -> None:  # case 28
    t.mutation(enqueue, {"key": "f", "fail_times": 99, "retry": False, "callback": "bad"})
    t.finish_scheduled()
    assert _attempts("f") == 1
    failures = t.runtime.executor.query(handle.on_complete_failures, {}, caller="")
    assert len(failures) == 1 and "callback broke" in failures[0]["error"]


def test_mutation_job_writes_and_completes_together(t: Any) -> None:
    t.mutation(enqueue_write, {"key": "m"})
    t.finish_scheduled()
    rows = t.run(lambda ctx: sorted(d["kind"] for d in ctx.db.query("done").collect()))
    assert rows == ["mutation", "success"]


def _abandon_pending_action(t: Any) -> None:
    """Make the pending action job look claimed by a runner that then died (lease long gone)."""
    sched = scheduler_of(t.runtime)
    jobs = t.run(lambda ctx: ctx.db.system.query("_scheduled_functions").collect())
    (job,) = [j for j in jobs if j["state"] == "pending" and "run_action_job" in j["name"]]
    patch = {"state": "in_progress", "runner": "elsewhere:1:dead", "lease_expires": 0.0}
    sched.transact(lambda txn: txn.patch(sched.space, job["_id"], patch), "test")


@pytest.mark.parametrize("retry", [True, False])
def test_an_attempt_whose_runner_died_is_recovered(t: Any, retry: bool) -> None:
    wid = t.mutation(enqueue, {"key": "r", "retry": retry})
    _abandon_pending_action(t)
    t.finish_scheduled()  # the scheduler fails the abandoned job; the pool does not know yet
    assert t.query(status, {"id": wid}) == ["running", 0]
    for _ in range(4):
        t.advance_time(RECOVERY_INTERVAL)
        t.finish_scheduled()  # the recover cron counts it as a failed attempt
    done = t.run(lambda ctx: ctx.db.query("done").collect())
    assert t.query(status, {"id": wid}) == ["finished", 0]
    if retry:  # attempt 1 was lost, attempt 2 ran
        assert events == [("attempt", "r"), ("callback", "r", "success")]
    else:  # at most once: it never ran, and the job failed naming the cause
        assert events == [("callback", "r", "failed")]
        assert "was lost" in done[0]["error"] and "runner stopped" in done[0]["error"]
