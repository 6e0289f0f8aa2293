"""RateLimiter end to end on every backend: reference cases 1-13, concurrency, rollback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from components.rate_limiter import (
    DAY,
    HOUR,
    MINUTE,
    SECOND,
    FixedWindow,
    RateLimitConfigError,
    RateLimitCountError,
    RateLimiter,
    RateLimitError,
    TokenBucket,
    component,
)
from core import ActionCtx, App, AppError, MutationCtx, QueryCtx
from core.testing import ManualClock, TestApp

T0 = 1_700_000_040.0  # a whole minute: windows aligned to T0 give exact figures

CONFIGS: dict[str, TokenBucket | FixedWindow] = {
    "tb_simple": TokenBucket(1, SECOND),
    "fw_simple": FixedWindow(1, SECOND, start=T0),
    "tb_cap3": TokenBucket(1, SECOND, capacity=3),
    "fw_cap3": FixedWindow(1, SECOND, capacity=3, start=T0),
    "tb_minute": TokenBucket(10, MINUTE),
    "fw_minute": FixedWindow(10, MINUTE, start=T0),
    "tb_hour": TokenBucket(1, HOUR),
    "fw_hour": FixedWindow(1, HOUR, start=T0),
    "tb_hour_max1": TokenBucket(1, HOUR, max_reserved=1),
    "fw_hour_max1": FixedWindow(1, HOUR, max_reserved=1, start=T0),
    "fw_max2": FixedWindow(1, SECOND, max_reserved=2),
    "tb_ten": TokenBucket(10, SECOND),
    "fw_ten": FixedWindow(10, SECOND),
    "hundred": TokenBucket(1, DAY, capacity=100),
    "hundred_x4": TokenBucket(1, DAY, capacity=100, shards=4),
}
KINDS = ["tb", "fw"]

app = App()
limits = app.use(component, name="limits")
other = app.use(component, name="other")
limiters = {
    "limits": RateLimiter(limits, CONFIGS),
    "other": RateLimiter(other, CONFIGS),
    "jittered": RateLimiter(limits, CONFIGS, jitter=1.0),
    # One limit name on two mounts, configured differently.
    "narrow": RateLimiter(limits, {"send": TokenBucket(1, MINUTE)}),
    "wide": RateLimiter(other, {"send": TokenBucket(3, MINUTE)}),
}


def _status(status: Any) -> dict[str, Any]:
    return {"ok": status.ok, "retry_after": status.retry_after}


@app.mutation
def take(
    ctx: MutationCtx,
    name: str,
    key: str | None = None,
    count: float = 1,
    reserve: bool = False,
    throws: bool = False,
    which: str = "limits",
) -> dict[str, Any]:
    status = limiters[which].limit(ctx, name, key=key, count=count, reserve=reserve, throws=throws)
    return _status(status)


@app.query
def peek(
    ctx: QueryCtx, name: str, key: str | None = None, count: float = 1, reserve: bool = False
) -> dict[str, Any]:
    return _status(limiters["limits"].check(ctx, name, key=key, count=count, reserve=reserve))


@app.query
def value(ctx: QueryCtx, name: str, key: str | None = None, which: str = "limits") -> Any:
    v = limiters[which].get_value(ctx, name, key=key)
    return {
        "value": v.value,
        "ts": v.ts,
        "capacity": v.config.capacity,
        "shards": v.config.shards,
        "start": v.config.start,
    }


@app.mutation
def clear(ctx: MutationCtx, name: str, key: str | None = None) -> None:
    limiters["limits"].reset(ctx, name, key=key)


@app.mutation
def take_then_fail(ctx: MutationCtx, name: str) -> None:
    assert limiters["limits"].limit(ctx, name, count=3).ok
    raise AppError({"why": "later failure"})


@app.action
async def take_from_action(ctx: ActionCtx, name: str) -> Any:
    limiter = limiters["limits"]
    first = await limiter.limit(ctx, name)
    checked = await limiter.check(ctx, name)
    current = await limiter.get_value(ctx, name)
    await limiter.reset(ctx, name)
    after = await limiter.get_value(ctx, name)
    return [first.ok, checked.ok, current.value, after.value]


@app.action
async def take_in_action(ctx: ActionCtx, which: str, name: str) -> bool:
    return (await limiters[which].limit(ctx, name)).ok


@pytest.fixture
def t(storage: Any) -> Iterator[TestApp]:
    with TestApp(app, storage=storage, clock=ManualClock(T0)) as harness:
        yield harness


OK = {"ok": True, "retry_after": None}


@pytest.mark.parametrize("kind", KINDS)
def test_case1_one_per_second(t: TestApp, kind: str) -> None:
    name = f"{kind}_simple"
    assert t.query(peek, {"name": name}) == OK
    assert t.mutation(take, {"name": name}) == OK
    refused = t.query(peek, {"name": name})
    assert refused["ok"] is False and refused["retry_after"] > 0
    again = t.mutation(take, {"name": name})
    assert again["ok"] is False and again["retry_after"] > 0


def test_case2_count_above_capacity_raises(t: TestApp) -> None:
    with pytest.raises(RateLimitCountError, match='"fw_simple" count 2 exceeds 1'):
        t.mutation(take, {"name": "fw_simple", "count": 2})


@pytest.mark.parametrize("kind", KINDS)
def test_case3_keys_are_independent(t: TestApp, kind: str) -> None:
    assert t.mutation(take, {"name": f"{kind}_simple", "key": "key"})["ok"]
    assert t.mutation(take, {"name": f"{kind}_simple", "key": "key2"})["ok"]
    assert not t.mutation(take, {"name": f"{kind}_simple", "key": "key"})["ok"]


@pytest.mark.parametrize("kind", KINDS)
def test_case4_capacity_allows_a_burst(t: TestApp, kind: str) -> None:
    name = f"{kind}_cap3"
    assert t.query(peek, {"name": name, "count": 3})["ok"]
    assert t.mutation(take, {"name": name, "key": "foo", "count": 3})["ok"]
    assert not t.mutation(take, {"name": name, "key": "foo"})["ok"]


def test_case5_token_bucket_refill(t: TestApp) -> None:
    assert t.mutation(take, {"name": "tb_minute", "count": 5})["ok"]
    assert t.query(value, {"name": "tb_minute"})["value"] == 5
    t.advance_time(6)
    assert t.mutation(take, {"name": "tb_minute", "count": 6}) == OK
    before = t.query(value, {"name": "tb_minute"})
    assert before["value"] == 0
    refused = t.mutation(take, {"name": "tb_minute", "count": 10})
    assert refused == {"ok": False, "retry_after": pytest.approx(60)}
    assert t.query(value, {"name": "tb_minute"}) == before


def test_case5_fixed_window_refill(t: TestApp) -> None:
    assert t.mutation(take, {"name": "fw_minute", "count": 5})["ok"]
    t.advance_time(MINUTE)
    assert t.mutation(take, {"name": "fw_minute", "count": 6}) == OK
    assert t.query(value, {"name": "fw_minute"})["value"] == 4
    refused = t.mutation(take, {"name": "fw_minute", "count": 10})
    assert refused == {"ok": False, "retry_after": pytest.approx(60)}
    assert t.query(value, {"name": "fw_minute"})["value"] == 4


def test_case6_token_bucket_reserve(t: TestApp) -> None:
    assert t.mutation(take, {"name": "tb_minute", "count": 5})["ok"]
    t.advance_time(6)
    first = t.mutation(take, {"name": "tb_minute", "count": 16, "reserve": True})
    assert first == {"ok": True, "retry_after": pytest.approx(60)}
    assert t.query(value, {"name": "tb_minute"})["value"] == pytest.approx(-10)
    t.advance_time(30)
    second = t.mutation(take, {"name": "tb_minute", "count": 5, "reserve": True})
    assert second == {"ok": True, "retry_after": pytest.approx(60)}
    assert t.query(value, {"name": "tb_minute"})["value"] == pytest.approx(-10)


def test_case6_fixed_window_reserve(t: TestApp) -> None:
    assert t.mutation(take, {"name": "fw_minute", "count": 5})["ok"]
    t.advance_time(MINUTE)
    first = t.mutation(take, {"name": "fw_minute", "count": 16, "reserve": True})
    assert first == {"ok": True, "retry_after": 60}
    assert t.query(value, {"name": "fw_minute"})["value"] == -6
    t.advance_time(30)
    second = t.mutation(take, {"name": "fw_minute", "count": 5, "reserve": True})
    assert second == {"ok": True, "retry_after": 90}
    assert t.query(value, {"name": "fw_minute"})["value"] == -11


@pytest.mark.parametrize("kind", KINDS)
def test_case7_reset(t: TestApp, kind: str) -> None:
    name = f"{kind}_simple"
    for key in (None, "k"):
        assert t.mutation(take, {"name": name, "key": key})["ok"]
        assert not t.query(peek, {"name": name, "key": key})["ok"]
        t.mutation(clear, {"name": name, "key": key})
        assert t.query(peek, {"name": name, "key": key})["ok"]


@pytest.mark.parametrize("kind", KINDS)
def test_case8_reservation_pushes_later_callers_back(t: TestApp, kind: str) -> None:
    reserved = t.mutation(take, {"name": f"{kind}_hour", "count": 100, "reserve": True})
    assert reserved["ok"] and reserved["retry_after"] > 0
    later = t.query(peek, {"name": f"{kind}_hour"})
    assert not later["ok"] and later["retry_after"] > reserved["retry_after"]


@pytest.mark.parametrize("kind", KINDS)
def test_case9_max_reserved(t: TestApp, kind: str) -> None:
    name = f"{kind}_hour_max1"
    assert t.query(peek, {"name": name, "count": 2, "reserve": True})["ok"]
    granted = t.mutation(take, {"name": name, "count": 2, "reserve": True})
    assert granted["ok"] and granted["retry_after"] > 0
    assert not t.query(peek, {"name": name})["ok"]
    assert not t.mutation(take, {"name": name, "reserve": True})["ok"]


def test_case10_reservation_beyond_max_reserved_raises(t: TestApp) -> None:
    with pytest.raises(RateLimitCountError, match="count 4 exceeds 3"):
        t.mutation(take, {"name": "fw_max2", "count": 4, "reserve": True})


@pytest.mark.parametrize("kind", KINDS)
def test_case11_retry_after_from_stored_value(t: TestApp, kind: str) -> None:
    name = f"{kind}_simple"
    assert t.mutation(take, {"name": name})["ok"]  # stored value 0 at now
    assert t.mutation(take, {"name": name}) == {"ok": False, "retry_after": pytest.approx(1)}
    assert t.mutation(take, {"name": name, "reserve": True})["ok"]  # stored value -1
    assert t.mutation(take, {"name": name}) == {"ok": False, "retry_after": pytest.approx(2)}
    assert t.mutation(take, {"name": name, "key": "elsewhere"})["ok"]


@pytest.mark.parametrize("kind", KINDS)
def test_case13_get_value(t: TestApp, kind: str) -> None:
    name = f"{kind}_ten"
    unused = t.query(value, {"name": name})
    assert unused["value"] == 10
    assert (unused["capacity"], unused["shards"]) == (10, 1)
    if kind == "fw":
        assert isinstance(unused["start"], float)
    assert t.mutation(take, {"name": name, "count": 4})["ok"]
    assert t.query(value, {"name": name})["value"] == 6


def test_throws_raises_rate_limit_error(t: TestApp) -> None:
    assert t.mutation(take, {"name": "tb_simple", "throws": True}) == OK
    with pytest.raises(RateLimitError) as info:
        t.mutation(take, {"name": "tb_simple", "throws": True})
    assert info.value.data == {
        "kind": "RateLimited",
        "name": "tb_simple",
        "retry_after": pytest.approx(1),
    }
    assert info.value.http_status == 422


def test_limit_in_failed_mutation_is_undone(t: TestApp) -> None:
    with pytest.raises(AppError, match="later failure"):
        t.mutation(take_then_fail, {"name": "tb_cap3"})
    assert t.query(value, {"name": "tb_cap3"})["value"] == 3
    assert t.mutation(take, {"name": "tb_cap3", "count": 3})["ok"]


def test_one_limit_name_on_two_mounts_stays_independent(t: TestApp) -> None:
    assert t.mutation(take, {"name": "send", "which": "narrow"})["ok"]
    assert not t.action(take_in_action, {"name": "send", "which": "narrow"})
    # The other mount's "send" is untouched and keeps its own configuration (3 a minute).
    assert [t.action(take_in_action, {"name": "send", "which": "wide"}) for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    assert t.query(value, {"name": "send", "which": "narrow"})["capacity"] == 1
    assert t.query(value, {"name": "send", "which": "wide"})["capacity"] == 3


def test_two_mounts_keep_separate_state(t: TestApp) -> None:
    assert t.mutation(take, {"name": "tb_simple", "which": "other"})["ok"]
    assert not t.mutation(take, {"name": "tb_simple", "which": "other"})["ok"]
    assert t.query(value, {"name": "tb_simple", "which": "limits"})["value"] == 1
    assert t.mutation(take, {"name": "tb_simple"})["ok"]


def test_callable_from_actions(t: TestApp) -> None:
    assert t.action(take_from_action, {"name": "tb_cap3"}) == [True, True, 2, 3]


def test_jitter_spreads_refusals_within_a_period(t: TestApp) -> None:
    assert t.mutation(take, {"name": "tb_simple"})["ok"]
    waits = [
        t.mutation(take, {"name": "tb_simple", "which": "jittered"})["retry_after"]
        for _ in range(8)
    ]
    assert all(1 <= w <= 2 for w in waits)
    assert len(set(waits)) > 1
    assert t.mutation(take, {"name": "tb_simple"})["retry_after"] == pytest.approx(1)


def test_unknown_name_and_bad_options_are_refused(t: TestApp) -> None:
    with pytest.raises(RateLimitConfigError, match='"nope" is not configured'):
        t.mutation(take, {"name": "nope"})
    with pytest.raises(RateLimitConfigError, match="jitter"):
        RateLimiter(limits, CONFIGS, jitter=-1)
    with pytest.raises(RateLimitConfigError, match="TokenBucket or a FixedWindow"):
        RateLimiter(limits, {"x": {"rate": 1}})  # type: ignore[dict-item]


def _hammer(t: TestApp, name: str, clients: int = 8, each: int = 20) -> int:
    admitted = [0] * clients
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients)

    def client(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(each):
                if t.mutation(take, {"name": name})["ok"]:
                    admitted[i] += 1
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return sum(admitted)


def test_concurrent_clients_get_exactly_the_capacity(t: TestApp) -> None:
    assert _hammer(t, "hundred") == 100
    assert t.query(value, {"name": "hundred"})["value"] == 0


def test_concurrent_clients_on_shards_never_exceed_the_capacity(t: TestApp) -> None:
    admitted = _hammer(t, "hundred_x4")
    assert 50 <= admitted <= 100
    assert t.query(value, {"name": "hundred_x4"})["value"] == pytest.approx(100 - admitted)


_CHILD = """
import importlib.util, sys, threading
spec = importlib.util.spec_from_file_location("limiter_child", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
from core.storage.postgres import PostgresStorage
runtime = module.app.make_runtime(PostgresStorage(sys.argv[2]))
runtime.open()
admitted = []
def client():
    for _ in range(25):
        admitted.append(runtime.executor.mutation(module.take, {"name": "hundred"})["ok"])
threads = [threading.Thread(target=client) for _ in range(2)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
runtime.close()
print(sum(admitted))
"""


def test_clients_in_several_processes_get_exactly_the_capacity(t: TestApp, storage: Any) -> None:
    import subprocess
    import sys

    if type(storage).__name__ != "PostgresStorage":
        pytest.skip("cross-process sharing is exercised on PostgreSQL")
    url = storage.url
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, __file__, url], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outputs = [child.communicate(timeout=120)[0] for child in children]
    assert all(child.returncode == 0 for child in children), outputs
    assert sum(int(out.strip().splitlines()[-1]) for out in outputs) == 100


def test_interleaved_calls_keep_each_instance_and_config_apart(t: TestApp) -> None:
    # Nested calls cache their resolution and the validated config: interleaving two mounts
    # (one limit name, two configs) must still reach each mount with its own config.
    def take_as(which: str) -> bool:
        return bool(t.mutation(take, {"name": "send", "key": "k", "which": which})["ok"])

    decisions = [take_as(w) for w in ("narrow", "wide", "narrow", "wide", "wide", "wide")]
    assert decisions == [True, True, False, True, True, False]
    assert t.query(value, {"name": "send", "which": "narrow"})["capacity"] == 1
    assert t.query(value, {"name": "send", "which": "wide"})["capacity"] == 3
    # A limiter made later on the same mount with another config is obeyed at once: after
    # 7 s the narrow bucket (1/min) holds 0.12 tokens, a 10/min one over the same state 1.17.
    t.advance_time(7)
    assert not take_as("narrow")
    limiters["roomy"] = RateLimiter(limits, {"send": TokenBucket(10, MINUTE)})
    try:
        assert take_as("roomy")
        assert not take_as("narrow")
    finally:
        del limiters["roomy"]
    namespaces = {target.namespace for target in t.runtime.executor._resolved.values()}
    assert {"limits", "other"} <= namespaces
