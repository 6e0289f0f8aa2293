"""Pure arithmetic of the rate limiter (reference cases 2, 10, 12, 14 and config checks)."""

from __future__ import annotations

from random import Random

import pytest

from components.rate_limiter import (
    MINUTE,
    SECOND,
    FixedWindow,
    RateLimitConfigError,
    RateLimitCountError,
    TokenBucket,
)
from components.rate_limiter.algorithms import (
    LimitState,
    calculate,
    check_count,
    config_from_dict,
    config_to_dict,
    decide,
    shard_config,
)

NOW = 1_700_000_000.0


def test_token_bucket_refill_is_exact() -> None:
    # Reference case 12 (token bucket).
    config = TokenBucket(10, MINUTE, capacity=10)
    existing = LimitState(value=5, ts=NOW - 30)
    assert calculate(existing, config, NOW, 0) == (LimitState(value=10, ts=NOW), None)
    assert calculate(existing, config, NOW, 8)[0].value == 2
    state, retry = calculate(existing, config, NOW, 15)
    assert state.value == -5
    assert retry == 30


def test_fixed_window_adds_rate_per_whole_window() -> None:
    # Reference case 12 (fixed window).
    config = FixedWindow(10, MINUTE)
    ws = NOW
    existing = LimitState(value=5, ts=ws)
    assert calculate(existing, config, ws + 45, 0) == (LimitState(value=5, ts=ws), None)
    assert calculate(existing, config, ws + 90, 0) == (LimitState(value=10, ts=ws + 60), None)
    assert calculate(existing, config, ws + 45, 3)[0].value == 2
    state, retry = calculate(existing, config, ws + 45, 16)
    assert state.value == -11
    assert retry == 60 * 2 - 45  # two more windows are needed


def test_count_that_never_fits_raises() -> None:
    # Reference cases 2 and 10.
    with pytest.raises(RateLimitCountError, match=r'"simple" count 2 exceeds 1\b'):
        check_count("simple", FixedWindow(1, SECOND), 2, reserve=False)
    with pytest.raises(RateLimitCountError, match="count 4 exceeds 3"):
        check_count("r", FixedWindow(1, SECOND, max_reserved=2), 4, reserve=True)
    check_count("r", FixedWindow(1, SECOND, max_reserved=2), 3, reserve=True)
    check_count("r", FixedWindow(1, SECOND), 1000, reserve=True)  # unbounded reservations
    with pytest.raises(RateLimitCountError, match="zero or more"):
        check_count("r", FixedWindow(1, SECOND), -1, reserve=False)
    # Sharded (>= 3): two shards may combine, so half the shards' capacity is the bound.
    check_count("s", TokenBucket(1, SECOND, capacity=40, shards=4), 20, reserve=False)
    with pytest.raises(RateLimitCountError, match="per 4 shards"):
        check_count("s", TokenBucket(1, SECOND, capacity=40, shards=4), 21, reserve=False)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TokenBucket(0, SECOND), "rate must be positive"),
        (lambda: TokenBucket(-1, SECOND), "rate must be positive"),
        (lambda: TokenBucket(1, 0), "period"),
        (lambda: FixedWindow(1, -5), "period"),
        (lambda: TokenBucket(1, SECOND, capacity=0), "capacity must be positive"),
        (lambda: TokenBucket(1, SECOND, shards=0), "shards must be a positive integer"),
        (lambda: TokenBucket(1, SECOND, shards=2.5), "shards must be a positive integer"),  # type: ignore[arg-type]
        (lambda: TokenBucket(1, SECOND, max_reserved=-1), "max_reserved"),
        (lambda: TokenBucket("1", SECOND), "finite number"),  # type: ignore[arg-type]
        (lambda: FixedWindow(1, SECOND, start=float("nan")), "start"),
        (lambda: TokenBucket(float("inf"), SECOND), "finite number"),
    ],
)
def test_bad_configs_are_refused_at_construction(build: object, message: str) -> None:
    with pytest.raises(RateLimitConfigError, match=message):
        build()  # type: ignore[operator]


def test_config_round_trips_and_fills_defaults() -> None:
    bucket = TokenBucket(10, SECOND)
    assert bucket.capacity == 10 and bucket.shards == 1
    window = FixedWindow(5, MINUTE, capacity=7, start=3, shards=2, max_reserved=4)
    for config in (bucket, window):
        assert config_from_dict(config_to_dict(config)) == config
    with pytest.raises(RateLimitConfigError, match="kind"):
        config_from_dict({"kind": "leaky bucket", "rate": 1, "period": 1})
    half = shard_config(window)
    assert (half.rate, half.capacity, half.max_reserved) == (2.5, 3.5, 2)


def _shards(n: int, value: float) -> dict[int, LimitState]:
    return {i: LimitState(value=value, ts=NOW) for i in range(n)}


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_sharding_reference_case_14(n: int) -> None:
    config = TokenBucket(1, SECOND, capacity=10 * n, shards=n)
    rng = Random(n)

    full = _shards(n, 1)
    decision = decide(config, full.get, now=NOW, count=1, reserve=False, rng=rng)
    assert decision.ok and decision.retry_after is None
    assert len(decision.updates) == 1 and decision.updates[0].state.value == 0

    empty = _shards(n, 0)
    decision = decide(config, empty.get, now=NOW, count=1, reserve=True, rng=rng)
    assert decision.ok
    assert decision.retry_after is not None and decision.retry_after >= 1
    assert [u.state.value for u in decision.updates] == [-1]

    refused = decide(config, empty.get, now=NOW, count=1, reserve=False, rng=rng)
    assert not refused.ok and refused.updates == () and refused.retry_after

    if n >= 3:
        halves = _shards(n, 0.5)
        decision = decide(config, halves.get, now=NOW, count=1, reserve=False, rng=rng)
        assert decision.ok and decision.retry_after is None
        assert len(decision.updates) == 2
        assert {u.state.value for u in decision.updates} == {0}
        assert len({u.shard for u in decision.updates}) == 2


def test_two_choices_prefer_the_fuller_shard() -> None:
    config = TokenBucket(1, SECOND, capacity=40, shards=4)
    states = {
        0: LimitState(value=2, ts=NOW),
        1: LimitState(value=8, ts=NOW),
        2: LimitState(value=2, ts=NOW),
        3: LimitState(value=8, ts=NOW),
    }
    for seed in range(20):
        decision = decide(config, states.get, now=NOW, count=1, reserve=False, rng=Random(seed))
        (update,) = decision.updates
        other_values = {states[s].value for s in states if s != update.shard}
        assert update.state.value == states[update.shard].value - 1
        if states[update.shard].value == 2:
            # Only when both picks were the emptier shards.
            assert 2 in other_values


def test_sharded_grants_never_exceed_the_global_limit() -> None:
    config = TokenBucket(1, MINUTE, capacity=100, shards=4)
    states: dict[int, LimitState] = {}
    rng = Random(7)
    granted = 0
    for _ in range(400):
        decision = decide(config, states.get, now=NOW, count=1, reserve=False, rng=rng)
        if decision.ok:
            granted += 1
            for update in decision.updates:
                states[update.shard] = update.state
    assert 90 <= granted <= 100
    assert all(state.value >= -1e-9 for state in states.values())
