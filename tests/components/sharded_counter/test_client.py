"""ShardedCounter end to end on every backend: reference cases 16-20 and concurrency."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from components.sharded_counter import CounterConfigError, ShardedCounter, component
from core import ActionCtx, App, MutationCtx, QueryCtx
from core.testing import TestApp

app = App()
counts = app.use(component, name="counts")
second = app.use(component, name="second")
counters = {
    "counts": ShardedCounter(counts, shards={"beans": 1, "users": 3}),
    "second": ShardedCounter(second, default_shards=4),
}


@app.mutation
def add(
    ctx: MutationCtx,
    name: str,
    count: int | float = 1,
    which: str = "counts",
    shard: int | None = None,
) -> int:
    return int(counters[which].add(ctx, name, count, shard=shard))


@app.mutation
def bump(ctx: MutationCtx, name: str, up: bool) -> None:
    counter = counters["counts"]
    if up:
        counter.inc(ctx, name)
    else:
        counter.dec(ctx, name)


@app.query
def total(ctx: QueryCtx, name: str, which: str = "counts") -> Any:
    return counters[which].count(ctx, name)


@app.query
def estimate(ctx: QueryCtx, name: str, read_shards: int) -> Any:
    return counters["counts"].estimate_count(ctx, name, read_shards=read_shards)


@app.query
def shards(ctx: QueryCtx, name: str) -> Any:
    return {str(k): v for k, v in counters["counts"].shard_values(ctx, name).items()}


@app.mutation
def rebalance(ctx: MutationCtx, name: str) -> None:
    counters["counts"].rebalance(ctx, name)


@app.mutation
def reset(ctx: MutationCtx, name: str) -> None:
    counters["counts"].reset(ctx, name)


@app.action
async def from_action(ctx: ActionCtx, name: str) -> Any:
    counter = counters["counts"]
    await counter.add(ctx, name, 5)
    await counter.inc(ctx, name)
    seen = [await counter.count(ctx, name), await counter.estimate_count(ctx, name)]
    await counter.rebalance(ctx, name)
    values = await counter.shard_values(ctx, name)
    await counter.reset(ctx, name)
    return [*seen, len(values), await counter.count(ctx, name)]


@pytest.fixture
def t(storage: Any) -> Iterator[TestApp]:
    with TestApp(app, storage=storage) as harness:
        yield harness


def test_case16_add_and_subtract(t: TestApp) -> None:
    assert t.query(total, {"name": "friends"}) == 0
    t.mutation(add, {"name": "beans", "count": 10})
    t.mutation(add, {"name": "beans", "count": 5})
    assert t.query(total, {"name": "beans"}) == 15
    t.mutation(add, {"name": "beans", "count": -5})
    assert t.query(total, {"name": "beans"}) == 10
    t.mutation(bump, {"name": "beans", "up": True})
    t.mutation(bump, {"name": "beans", "up": True})
    t.mutation(bump, {"name": "beans", "up": False})
    assert t.query(total, {"name": "beans"}) == 11
    assert t.query(total, {"name": "friends"}) == 0


def test_case17_mixed_shard_counts_sum(t: TestApp) -> None:
    t.mutation(add, {"name": "mixed", "count": 6, "shard": 0})
    t.mutation(add, {"name": "mixed", "count": 2, "shard": 0})
    for shard in (3, 7, 12):
        t.mutation(add, {"name": "mixed", "shard": shard})
    assert t.query(total, {"name": "mixed"}) == 11


def test_case18_explicit_shard(t: TestApp) -> None:
    assert t.mutation(add, {"name": "users", "count": 10, "shard": 1}) == 1
    assert t.mutation(add, {"name": "users", "count": 5, "shard": 2}) == 2
    assert t.query(shards, {"name": "users"}) == {"1": 10, "2": 5}
    with pytest.raises(CounterConfigError, match="out of range 0..2"):
        t.mutation(add, {"name": "users", "shard": 3})


def test_case19_reset(t: TestApp) -> None:
    t.mutation(add, {"name": "gone", "count": 4})
    t.mutation(reset, {"name": "gone"})
    assert t.query(total, {"name": "gone"}) == 0


def test_a_write_touches_one_shard(t: TestApp) -> None:
    for _ in range(5):
        t.mutation(add, {"name": "spread"})
        assert sum(t.query(shards, {"name": "spread"}).values()) == t.query(
            total, {"name": "spread"}
        )
    values = t.query(shards, {"name": "spread"})
    assert 1 <= len(values) <= 5 and all(0 <= int(s) < 16 for s in values)


def test_case20_counts_match_and_rebalance_makes_estimates_exact(t: TestApp) -> None:
    rng = random.Random(20)
    expected: dict[str, float] = {}
    for _ in range(60):
        name = rng.choice(["a", "b", "c"])
        count = rng.choice([1, 2.5, -1, 7])
        t.mutation(add, {"name": name, "count": count})
        expected[name] = expected.get(name, 0) + count
    for name, want in expected.items():
        assert t.query(total, {"name": name}) == pytest.approx(want)
        t.mutation(rebalance, {"name": name})
        assert len(t.query(shards, {"name": name})) == 16
        assert t.query(total, {"name": name}) == pytest.approx(want)
        for k in (1, 4, 16):
            assert t.query(estimate, {"name": name, "read_shards": k}) == pytest.approx(want)


def test_rebalance_drops_shards_beyond_the_count(t: TestApp) -> None:
    t.mutation(add, {"name": "users", "count": 9, "shard": 2})
    t.mutation(add, {"name": "users", "count": 6, "which": "counts", "shard": 0})
    t.mutation(add, {"name": "users", "count": 3, "shard": 1})
    t.mutation(rebalance, {"name": "users"})
    assert t.query(shards, {"name": "users"}) == {"0": 6, "1": 6, "2": 6}


def test_two_mounts_keep_separate_state(t: TestApp) -> None:
    t.mutation(add, {"name": "x", "count": 3, "which": "counts"})
    t.mutation(add, {"name": "x", "count": 40, "which": "second"})
    assert t.query(total, {"name": "x", "which": "counts"}) == 3
    assert t.query(total, {"name": "x", "which": "second"}) == 40


def test_callable_from_actions(t: TestApp) -> None:
    exact, estimated, shard_count, after = t.action(from_action, {"name": "act"})
    assert (exact, shard_count, after) == (6, 16, 0)
    assert estimated in {0, 16, 80, 96}  # one shard of 16, scaled up


def test_concurrent_increments_are_never_lost(t: TestApp) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def writer() -> None:
        try:
            barrier.wait()
            for _ in range(500):
                t.mutation(add, {"name": "hot"})
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert t.query(total, {"name": "hot"}) == 4000


@pytest.mark.parametrize(
    "options",
    [
        {"default_shards": 0},
        {"default_shards": 2.0},
        {"shards": {"x": -1}},
        {"shards": {"x": True}},
    ],
)
def test_bad_shard_counts_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(CounterConfigError, match="positive integer"):
        ShardedCounter(counts, **options)
