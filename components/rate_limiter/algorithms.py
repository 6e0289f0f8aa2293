"""Owns the rate-limit arithmetic: ``TokenBucket`` / ``FixedWindow`` and the shard decision.

Everything here is pure: a limit's state is ``LimitState(value, ts)`` (tokens left, which may
be negative under a reservation, and the time of the last refill or the current window
start); ``calculate`` moves a state to ``now`` and takes ``count`` tokens; ``decide`` applies
the accept/refuse rule over the shards of one ``(name, key)``, reading them through a
callback. Times and periods are seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from components.rate_limiter.errors import RateLimitConfigError, RateLimitCountError

SECOND = 1.0
MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
WEEK = 7 * DAY

TOKEN_BUCKET = "token bucket"
FIXED_WINDOW = "fixed window"


class RandomSource(Protocol):
    """The randomness a decision draws on (``random.Random`` is one)."""

    def random(self) -> float:
        """A float in ``[0, 1)``."""
        ...

    def randrange(self, stop: int, /) -> int:
        """An int in ``[0, stop)``."""
        ...


MIN_CHOOSE_TWO = 3
"""With fewer shards, a second read would depend on (nearly) every shard anyway."""


def _positive(kind: str, what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RateLimitConfigError(f"{kind} {what} must be a finite number, not {value!r}.")
    if value <= 0:
        raise RateLimitConfigError(f"{kind} {what} must be positive, not {value!r}.")
    return float(value)


def _check_common(
    kind: str, rate: Any, period: Any, capacity: Any, shards: Any, max_reserved: Any
) -> tuple[float, float, float, int, float | None]:
    rate_f = _positive(kind, "rate", rate)
    period_f = _positive(kind, "period (seconds)", period)
    capacity_f = rate_f if capacity is None else _positive(kind, "capacity", capacity)
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise RateLimitConfigError(f"{kind} shards must be a positive integer, not {shards!r}.")
    reserved: float | None = None
    if max_reserved is not None:
        if isinstance(max_reserved, bool) or not isinstance(max_reserved, int | float):
            raise RateLimitConfigError(
                f"{kind} max_reserved must be a number, not {max_reserved!r}."
            )
        if not math.isfinite(max_reserved) or max_reserved < 0:
            raise RateLimitConfigError(
                f"{kind} max_reserved must be zero or more, not {max_reserved!r}."
            )
        reserved = float(max_reserved)
    return rate_f, period_f, capacity_f, shards, reserved


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class TokenBucket:
    """A token bucket: ``rate`` tokens per ``period`` seconds refill continuously.

    Up to ``capacity`` tokens (default ``rate``) accumulate, so bursts up to the capacity pass.
    """

    rate: float
    """Tokens added per period."""
    period: float
    """The period, in seconds (``SECOND``, ``MINUTE``, ``HOUR``, ``DAY``)."""
    capacity: float
    """The most tokens the bucket holds (defaults to ``rate``)."""
    shards: int
    """Documents the limit is split over, for throughput (each holds 1/shards)."""
    max_reserved: float | None
    """How far below zero reservations may take the value (``None``: no bound)."""

    def __init__(
        self,
        rate: float,
        period: float,
        *,
        capacity: float | None = None,
        shards: int = 1,
        max_reserved: float | None = None,
    ):
        values = _check_common("TokenBucket", rate, period, capacity, shards, max_reserved)
        for field, value in zip(
            ("rate", "period", "capacity", "shards", "max_reserved"), values, strict=True
        ):
            object.__setattr__(self, field, value)

    @property
    def kind(self) -> str:
        """``"token bucket"``."""
        return TOKEN_BUCKET

    @property
    def start(self) -> float | None:
        """Token buckets have no window alignment."""
        return None


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class FixedWindow:
    """A fixed window: ``rate`` tokens are granted at the start of each ``period``.

    Windows are aligned to ``start`` (seconds since the epoch) or, when it is ``None``, to a
    random phase chosen when the limit is first used (and again after a reset).
    """

    rate: float
    """Tokens granted per window."""
    period: float
    """The window length, in seconds."""
    capacity: float
    """The most tokens that carry over (defaults to ``rate``)."""
    start: float | None
    """Window alignment, seconds since the epoch (``None``: random phase)."""
    shards: int
    """Documents the limit is split over, for throughput (each holds 1/shards)."""
    max_reserved: float | None
    """How far below zero reservations may take the value (``None``: no bound)."""

    def __init__(
        self,
        rate: float,
        period: float,
        *,
        capacity: float | None = None,
        start: float | None = None,
        shards: int = 1,
        max_reserved: float | None = None,
    ):
        values = _check_common("FixedWindow", rate, period, capacity, shards, max_reserved)
        for field, value in zip(
            ("rate", "period", "capacity", "shards", "max_reserved"), values, strict=True
        ):
            object.__setattr__(self, field, value)
        if start is not None and (
            isinstance(start, bool)
            or not isinstance(start, int | float)
            or not math.isfinite(start)
        ):
            raise RateLimitConfigError(f"FixedWindow start must be a finite number, not {start!r}.")
        object.__setattr__(self, "start", None if start is None else float(start))

    @property
    def kind(self) -> str:
        """``"fixed window"``."""
        return FIXED_WINDOW


LimitConfig = TokenBucket | FixedWindow


def config_to_dict(config: LimitConfig) -> dict[str, Any]:
    """The wire form of a config (what the component functions receive)."""
    return {
        "kind": config.kind,
        "rate": config.rate,
        "period": config.period,
        "capacity": config.capacity,
        "shards": config.shards,
        "max_reserved": config.max_reserved,
        "start": config.start,
    }


def config_from_dict(data: Mapping[str, Any]) -> LimitConfig:
    """Rebuild (and re-validate) a config from its wire form."""
    options = {
        "capacity": data.get("capacity"),
        "shards": data.get("shards", 1),
        "max_reserved": data.get("max_reserved"),
    }
    kind = data.get("kind")
    if kind == TOKEN_BUCKET:
        return TokenBucket(data.get("rate"), data.get("period"), **options)  # type: ignore[arg-type]
    if kind == FIXED_WINDOW:
        return FixedWindow(
            data.get("rate"),  # type: ignore[arg-type]
            data.get("period"),  # type: ignore[arg-type]
            start=data.get("start"),
            **options,
        )
    raise RateLimitConfigError(
        f'Rate limit kind {kind!r} is unknown; expected "{TOKEN_BUCKET}" or "{FIXED_WINDOW}".'
    )


def shard_config(config: LimitConfig) -> LimitConfig:
    """The config one shard enforces: rate, capacity and max_reserved divided by ``shards``."""
    n = config.shards
    if n == 1:
        return config
    reserved = None if config.max_reserved is None else config.max_reserved / n
    if isinstance(config, TokenBucket):
        return TokenBucket(
            config.rate / n, config.period, capacity=config.capacity / n, max_reserved=reserved
        )
    return FixedWindow(
        config.rate / n,
        config.period,
        capacity=config.capacity / n,
        start=config.start,
        max_reserved=reserved,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitState:
    """One shard's stored state."""

    value: float
    """Tokens left (negative while reservations are outstanding)."""
    ts: float
    """Token bucket: time of the last refill. Fixed window: start of the current window."""


def initial_state(config: LimitConfig, now: float, rng: RandomSource) -> LimitState:
    """The state of a limit nobody has used yet: full, at ``now`` (or a window start)."""
    if isinstance(config, TokenBucket):
        return LimitState(value=config.capacity, ts=now)
    start = config.start if config.start is not None else now - rng.random() * config.period
    return LimitState(value=config.capacity, ts=start)


def calculate(
    state: LimitState, config: LimitConfig, now: float, count: float
) -> tuple[LimitState, float | None]:
    """Move ``state`` to ``now``, take ``count``; return the new state and ``retry_after``.

    ``retry_after`` (seconds) is set when the value went below zero: the wait until enough
    tokens will have accrued for this request.
    """
    if isinstance(config, TokenBucket):
        # Multiply before dividing so whole-second inputs give exact results.
        elapsed = max(0.0, now - state.ts)
        value = min(state.value + elapsed * config.rate / config.period, config.capacity) - count
        ts = max(now, state.ts)
        retry = -value * config.period / config.rate if value < 0 else None
        return LimitState(value=value, ts=ts), retry
    windows = max(0, math.floor((now - state.ts) / config.period))
    value = min(state.value + config.rate * windows, config.capacity) - count
    ts = state.ts + windows * config.period
    retry = None
    if value < 0:
        retry = ts + config.period * math.ceil(-value / config.rate) - now
    return LimitState(value=value, ts=ts), retry


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardUpdate:
    """A state to write to one shard."""

    shard: int
    state: LimitState


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The outcome of one request over a limit's shards."""

    ok: bool
    retry_after: float | None
    updates: tuple[ShardUpdate, ...] = ()
    """What to write when ``ok`` (nothing is written on a refusal)."""


class _Probe(NamedTuple):
    """One shard evaluated for a request (internal; a tuple: made on every decision)."""

    shard: int
    existed: bool
    ok: bool
    retry_after: float | None
    state: LimitState


def check_count(name: str, config: LimitConfig, count: float, reserve: bool) -> None:
    """Refuse a request that could never be granted.

    Raises:
        RateLimitCountError: ``count`` is negative or above what the limit can ever hold.
    """
    if not math.isfinite(count) or count < 0:
        raise RateLimitCountError(name, count, None)
    shards = config.shards
    # A request may combine two shards when there are enough of them.
    factor = 1.0 if shards < MIN_CHOOSE_TWO else shards / 2
    most = config.capacity / factor
    if reserve:
        if config.max_reserved is not None and count > most + config.max_reserved / factor:
            raise RateLimitCountError(name, count, most + config.max_reserved / factor, shards)
    elif count > most:
        raise RateLimitCountError(name, count, most, shards)


def _probe(
    shard: int,
    stored: LimitState | None,
    config: LimitConfig,
    now: float,
    count: float,
    reserve: bool,
    rng: RandomSource,
) -> _Probe:
    start = stored if stored is not None else initial_state(config, now, rng)
    state, retry = calculate(start, config, now, count)
    ok = not (
        state.value < 0
        and (
            not reserve or (config.max_reserved is not None and -state.value > config.max_reserved)
        )
    )
    return _Probe(shard, stored is not None, ok, retry, state)


def _single(probe: _Probe) -> Decision:
    updates = (ShardUpdate(shard=probe.shard, state=probe.state),) if probe.ok else ()
    return Decision(ok=probe.ok, retry_after=probe.retry_after, updates=updates)


def decide(
    config: LimitConfig,
    read: Callable[[int], LimitState | None],
    *,
    now: float,
    count: float,
    reserve: bool,
    rng: RandomSource,
) -> Decision:
    """Decide one request: pick shards (two random choices, combined if needed).

    Invariant: every shard enforces 1/shards of the limit and a grant only moves tokens that
    its shards hold (or may reserve), so the shards together never grant more than the limit.
    """
    shards = config.shards
    per_shard = shard_config(config)
    # One shard needs no draw (a decision that draws nothing never seeds a generator).
    first = rng.randrange(shards) if shards > 1 else 0
    one = _probe(first, read(first), per_shard, now, count, reserve, rng)
    if not one.existed or shards < MIN_CHOOSE_TWO:
        return _single(one)
    second = (first + 1 + rng.randrange(shards - 1)) % shards
    two = _probe(second, read(second), per_shard, now, count, reserve, rng)
    if one.ok and two.ok:
        return _single(one if one.state.value > two.state.value else two)
    if one.ok or two.ok:
        return _single(one if one.ok else two)
    # Neither alone: split the request so both shards end at the same value.
    balance = one.state.value + two.state.value + count
    split = []
    for probe in (one, two):
        take = probe.state.value + count - balance / 2
        split.append(_probe(probe.shard, read(probe.shard), per_shard, now, take, reserve, rng))
    a, b = split
    if not (a.ok and b.ok):
        retries = [p.retry_after or 0.0 for p in split]
        return Decision(ok=False, retry_after=max(retries))
    retry_after = None
    if a.retry_after is not None or b.retry_after is not None:
        retry_after = max(a.retry_after or 0.0, b.retry_after or 0.0)
    updates = tuple(ShardUpdate(shard=p.shard, state=p.state) for p in split)
    return Decision(ok=True, retry_after=retry_after, updates=updates)
