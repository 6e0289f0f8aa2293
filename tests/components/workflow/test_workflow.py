from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from components.workflow import (
    EventTimeoutError,
    NonRetryableError,
    RetryPolicy,
    StepFailedError,
    WorkflowManager,
    component,
)
from components.workflow.pool import RECOVERY_INTERVAL
from core import ActionCtx, App, MutationCtx, QueryCtx
from core.scheduler import scheduler_of
from core.subscriptions import subscribe_sync

app = App()
handle = app.use(component, name="workflow")
manager = WorkflowManager(handle, retry=None)
serial = WorkflowManager(app.use(component, name="serial"), max_parallelism=1)
calls: dict[str, int] = {}


def _count(ctx: QueryCtx, name: str) -> int:
    doc = ctx.db.query("counters").filter(lambda d: d["name"] == name).first()
    return 0 if doc is None else int(doc["n"])


@app.mutation
def incr(ctx: MutationCtx, name: str) -> int:
    doc = ctx.db.query("counters").filter(lambda d: d["name"] == name).first()
    if doc is None:
        ctx.db.insert("counters", {"name": name, "n": 1})
        return 1
    ctx.db.patch(doc["_id"], {"n": doc["n"] + 1})
    return int(doc["n"]) + 1


@app.query
def count(ctx: QueryCtx, name: str) -> int:
    return _count(ctx, name)


@app.action
async def flaky(ctx: ActionCtx, key: str, fail_times: int, fatal: bool = False) -> str:
    calls[key] = calls.get(key, 0) + 1
    if fatal:
        raise NonRetryableError("work failed")
    if calls[key] <= fail_times:
        raise RuntimeError(f"attempt {calls[key]} failed")
    return f"ok after {calls[key]}"


@manager.define
async def three_steps(step: Any, name: str) -> int:
    a = await step.run_mutation(incr, {"name": name})
    b = await step.run_mutation(incr, {"name": name})
    c = await step.run_query(count, {"name": name})
    return int(a + b + c)


@manager.define
async def with_action(step: Any, key: str, fail_times: int, fatal: bool, retry: bool) -> str:
    policy = RetryPolicy(max_attempts=5, initial_backoff=1.0) if retry else False
    return str(
        await step.run_action(
            flaky, {"key": key, "fail_times": fail_times, "fatal": fatal}, retry=policy
        )
    )


@manager.define
async def waits(step: Any, timeout: float | None) -> Any:  # noqa: ASYNC109
    try:
        return await step.await_event("approve", timeout=timeout)
    except EventTimeoutError as exc:
        return f"timeout {exc.timeout:g}"


@manager.define
async def parallel(step: Any, name: str) -> Any:
    results = await step.all([step.run_mutation(incr, {"name": name}) for _ in range(3)])
    await step.sleep(10)
    return sorted(results)


@manager.define
async def deterministic(step: Any) -> Any:
    before = (step.now, step.random.random())
    await step.run_query(count, {"name": "x"})
    return [before[0], before[1], step.now]


@manager.define
async def catches(step: Any) -> str:
    try:
        await step.run_action(flaky, {"key": "c", "fail_times": 0, "fatal": True})
    except StepFailedError as exc:
        return f"caught {exc.error}"
    return "no"


@manager.define
async def child(step: Any, name: str) -> int:
    return int(await step.run_mutation(incr, {"name": name}))


@manager.define
async def parent(step: Any, name: str) -> int:
    r = await step.run_workflow(child, {"name": name})
    return int(r) * 10


@manager.define
async def stepwise(step: Any, name: str) -> str:
    for _ in range(3):
        await step.run_mutation(incr, {"name": name})
        await step.sleep(10)
    return "done"


@manager.define
async def two_attempts(step: Any, key: str) -> str:  # reference case 37
    policy = RetryPolicy(max_attempts=2, initial_backoff=5.0)
    return str(await step.run_action(flaky, {"key": key, "fail_times": 99}, retry=policy))


@serial.define
async def two_actions(step: Any, key: str) -> list[str]:
    first = await step.run_action(flaky, {"key": f"{key}1", "fail_times": 0})
    return [str(first), str(await step.run_action(flaky, {"key": f"{key}2", "fail_times": 0}))]


@app.mutation
def start_serial(ctx: MutationCtx, key: str) -> str:
    return str(serial.start(ctx, two_actions, {"key": key}))


@app.query
def serial_status(ctx: QueryCtx, id: str) -> Any:
    s = serial.status(ctx, id)
    return None if s is None else [s.state, s.result, [st.state for st in s.steps]]


@app.query
def brief(ctx: QueryCtx, id: str) -> Any:
    s = manager.status(ctx, id, steps=False)
    assert s is not None
    return [s.state, s.result, s.steps, manager.result(ctx, id)]


@app.query
def progress(ctx: QueryCtx, id: str, name: str) -> Any:
    s = manager.status(ctx, id)
    assert s is not None
    return {
        "state": s.state,
        "count": _count(ctx, name),
        "steps": [f"{st.kind} {st.state}" for st in s.steps],
    }


@app.mutation
def start(ctx: MutationCtx, wf: str, args: dict[str, Any], id: str | None = None) -> str:
    return str(manager.start(ctx, wf, args, id=id))


@app.query
def status(ctx: QueryCtx, id: str) -> Any:
    s = manager.status(ctx, id)
    return (
        None
        if s is None
        else {
            "state": s.state,
            "result": s.result,
            "error": s.error,
            "steps": [st.state for st in s.steps],
        }
    )


@app.mutation
def send(ctx: MutationCtx, id: str, value: Any) -> None:
    manager.send_event(ctx, id, "approve", value)


@pytest.fixture
def t(make_test_app: Any) -> Any:
    calls.clear()
    return make_test_app(app)


def test_three_mutation_steps_complete(t: Any) -> None:
    wid = t.mutation(start, {"wf": three_steps.name, "args": {"name": "a"}})
    assert t.query(status, {"id": wid})["state"] == "running"
    t.finish_scheduled()
    s = t.query(status, {"id": wid})
    assert s == {
        "state": "success",
        "result": 5,
        "error": None,
        "steps": ["success", "success", "success"],
    }
    assert t.query(count, {"name": "a"}) == 2


def test_action_fails_twice_then_succeeds_with_retry(t: Any) -> None:
    wid = t.mutation(
        start,
        {
            "wf": with_action.name,
            "args": {"key": "k", "fail_times": 2, "fatal": False, "retry": True},
        },
    )
    for _ in range(10):
        t.finish_scheduled()
        t.advance_time(5)
    s = t.query(status, {"id": wid})
    assert s["state"] == "success" and s["result"] == "ok after 3"
    assert calls["k"] == 3


def test_action_without_retry_fails_at_once(t: Any) -> None:
    wid = t.mutation(
        start,
        {
            "wf": with_action.name,
            "args": {"key": "n", "fail_times": 2, "fatal": False, "retry": False},
        },
    )
    t.finish_scheduled()
    s = t.query(status, {"id": wid})
    assert s["state"] == "failed" and "attempt 1 failed" in s["error"]
    assert calls["n"] == 1


def test_non_retryable_error_fails_at_once(t: Any) -> None:
    wid = t.mutation(
        start,
        {
            "wf": with_action.name,
            "args": {"key": "f", "fail_times": 0, "fatal": True, "retry": True},
        },
    )
    t.finish_scheduled()
    s = t.query(status, {"id": wid})
    assert s["state"] == "failed" and "work failed" in s["error"]
    assert calls["f"] == 1


def test_await_event_timeout(t: Any) -> None:
    wid = t.mutation(start, {"wf": waits.name, "args": {"timeout": 30.0}})
    t.finish_scheduled()
    assert t.query(status, {"id": wid})["state"] == "running"
    t.advance_time(31)
    t.finish_scheduled()
    assert t.query(status, {"id": wid})["result"] == "timeout 30"


def test_event_delivered_before_timeout(t: Any) -> None:
    wid = t.mutation(start, {"wf": waits.name, "args": {"timeout": 30.0}})
    t.mutation(send, {"id": wid, "value": {"ok": True}})
    t.advance_time(31)
    t.finish_scheduled()
    assert t.query(status, {"id": wid})["result"] == {"ok": True}


@manager.define
async def late_waiter(step: Any) -> Any:
    await step.sleep(5)
    return await step.await_event("approve")


def test_send_event_before_await_is_not_lost(t: Any) -> None:
    wid = t.mutation(start, {"wf": late_waiter.name, "args": {}})
    t.mutation(send, {"id": wid, "value": 7})
    t.advance_time(6)
    t.finish_scheduled()
    assert t.query(status, {"id": wid})["result"] == 7


def test_start_twice_with_same_id_runs_once(t: Any) -> None:
    a = t.mutation(start, {"wf": three_steps.name, "args": {"name": "i"}, "id": "order-1"})
    b = t.mutation(start, {"wf": three_steps.name, "args": {"name": "i"}, "id": "order-1"})
    assert a == b
    t.finish_scheduled()
    c = t.mutation(start, {"wf": three_steps.name, "args": {"name": "i"}, "id": "order-1"})
    assert c == a
    t.finish_scheduled()
    assert t.query(count, {"name": "i"}) == 2
    assert t.query(status, {"id": "order-1"})["result"] == 5


def test_parallel_steps_and_sleep(t: Any) -> None:
    wid = t.mutation(start, {"wf": parallel.name, "args": {"name": "p"}})
    t.finish_scheduled()
    assert t.query(status, {"id": wid})["steps"] == ["success"] * 3 + ["running"]
    t.advance_time(10)
    t.finish_scheduled()
    assert t.query(status, {"id": wid})["result"] == [1, 2, 3]


def test_now_and_random_are_replayed(t: Any) -> None:
    wid = t.mutation(start, {"wf": deterministic.name, "args": {}})
    t0 = t.clock.time()
    t.advance_time(100)
    t.finish_scheduled()
    now0, rnd, now1 = t.query(status, {"id": wid})["result"]
    assert now0 == t0 and now1 == t0 + 100
    import random

    assert rnd == random.Random(wid).random()


def test_step_failure_is_catchable(t: Any) -> None:
    wid = t.mutation(start, {"wf": catches.name, "args": {}})
    t.finish_scheduled()
    assert t.query(status, {"id": wid})["result"] == "caught NonRetryableError: work failed"


def test_nested_workflow(t: Any) -> None:
    wid = t.mutation(start, {"wf": parent.name, "args": {"name": "n"}})
    t.finish_scheduled()
    s = t.query(status, {"id": wid})
    assert s["state"] == "success" and s["result"] == 10


def _next(updates: Iterator[Any], timeout: float = 10.0) -> Any:
    """The subscription's next value, or a failure after ``timeout`` seconds."""
    box: queue.Queue[Any] = queue.Queue()
    threading.Thread(target=lambda: box.put(next(updates)), daemon=True).start()
    return box.get(timeout=timeout)


def test_progress_is_visible_through_a_subscription(t: Any) -> None:
    wid = t.mutation(start, {"wf": stepwise.name, "args": {"name": "sub"}})
    updates = subscribe_sync(t.runtime, progress, {"id": wid, "name": "sub"})
    seen = [_next(updates)]
    for _ in range(3):
        t.finish_scheduled()
        seen.append(_next(updates))
        t.advance_time(10)
    t.finish_scheduled()
    seen.append(_next(updates))
    updates.close()
    assert [v["count"] for v in seen] == [0, 1, 2, 3, 3]
    assert seen[1]["steps"] == ["mutation success", "sleep running"]
    assert seen[-1]["state"] == "success"
    for v in seen:  # a step's writes and its journal entry commit together (no lag, #74)
        assert v["count"] == v["steps"].count("mutation success")


def test_step_retries_stop_at_max_attempts_without_a_last_backoff(t: Any) -> None:  # case 37
    wid = t.mutation(start, {"wf": two_attempts.name, "args": {"key": "r37"}})
    t.finish_scheduled()
    assert calls["r37"] == 1 and t.query(status, {"id": wid})["state"] == "running"
    t.advance_time(7.5)  # the longest jittered backoff: 5 s x 1.5
    t.finish_scheduled()
    s = t.query(status, {"id": wid})
    assert calls["r37"] == 2
    assert s["state"] == "failed" and "attempt 2 failed (after 2 attempts)" in s["error"]


def test_a_step_whose_job_failed_outside_the_step_is_recovered(t: Any) -> None:
    wid = t.mutation(start, {"wf": three_steps.name, "args": {"name": "lost"}})
    # The step's job fails without running it (as when its transaction itself cannot commit).
    sched = scheduler_of(t.runtime)
    jobs = t.run(lambda ctx: ctx.db.system.query("_scheduled_functions").collect())
    (job,) = [j for j in jobs if j["state"] == "pending" and "run_step" in j["name"]]
    patch = {"state": "failed", "error": "storage went away"}
    sched.transact(lambda txn: txn.patch(sched.space, job["_id"], patch), "test")
    t.finish_scheduled()
    assert t.query(status, {"id": wid})["state"] == "running"
    t.advance_time(RECOVERY_INTERVAL)
    t.finish_scheduled()  # the recover cron fails the step, and so the workflow
    s = t.query(status, {"id": wid})
    assert s["state"] == "failed" and "Step lost: storage went away" in s["error"]
    assert t.query(count, {"name": "lost"}) == 0


def test_action_steps_share_one_slot(t: Any) -> None:
    a, b = (t.mutation(start_serial, {"key": k}) for k in "ab")
    # One slot: a's first action runs, b's waits; each finishing step passes the slot on.
    assert t.query(serial_status, {"id": b}) == ["running", None, ["running"]]
    t.finish_scheduled()
    assert t.query(serial_status, {"id": a}) == ["success", ["ok after 1"] * 2, ["success"] * 2]
    assert t.query(serial_status, {"id": b}) == ["success", ["ok after 1"] * 2, ["success"] * 2]


def test_status_without_the_journal(t: Any) -> None:
    wid = t.mutation(start, {"wf": stepwise.name, "args": {"name": "brief"}})
    updates = subscribe_sync(t.runtime, brief, {"id": wid})
    assert _next(updates) == ["running", None, [], None]
    for _ in range(3):
        t.finish_scheduled()
        t.advance_time(10)
    t.finish_scheduled()
    # Three steps committed in between; the next value this subscription yields is the end.
    assert _next(updates) == ["success", "done", [], "done"]
    updates.close()


@manager.define
async def sleepy_retry(step: Any, name: str, key: str) -> str:
    await step.run_mutation(incr, {"name": name})
    await step.sleep(60)
    await step.sleep(3600)
    policy = RetryPolicy(max_attempts=4, initial_backoff=30.0)
    out = await step.run_action(flaky, {"key": key, "fail_times": 2}, retry=policy)
    await step.sleep(86_400)
    return str(out)


def test_run_until_idle_completes_sleeps_and_retries_in_one_call(t: Any) -> None:
    start_time = t.clock.time()
    wid = t.mutation(start, {"wf": sleepy_retry.name, "args": {"name": "u", "key": "u"}})
    assert t.run_until_idle() > 0
    s = t.query(status, {"id": wid})
    assert s["state"] == "success" and s["result"] == "ok after 3"
    assert calls["u"] == 3
    assert t.clock.time() - start_time >= 60 + 3600 + 86_400
