"""Owns the rate limiter component: its table and its exported functions.

One document per ``(name, key, shard)`` holds ``value`` and ``ts``; nothing grows with the
number of requests. Configurations travel as arguments (the wire form of ``TokenBucket`` /
``FixedWindow``), so the component needs no setup and two mounts never share state.
"""

from __future__ import annotations

from collections.abc import Callable
from random import Random
from typing import Any

from components.rate_limiter.algorithms import (
    LimitConfig,
    LimitState,
    RandomSource,
    calculate,
    check_count,
    config_from_dict,
    config_to_dict,
    decide,
    shard_config,
)
from components.rate_limiter.errors import RateLimitError
from core import Component, MutationCtx, QueryCtx, Schema, Table

component = Component(
    "rate_limiter",
    schema=Schema(
        rate_limits=Table(
            {"name": str, "key": str | None, "shard": int, "value": float, "ts": float}
        ).index("by_name", ["name", "key", "shard"]),
    ),
)


_CONFIGS: dict[tuple[tuple[str, Any], ...], LimitConfig] = {}
"""Validated configurations by their wire form: a limiter sends the same few on every call.

Keyed by the whole wire form and holding immutable configs, so it is shared safely between
instances (two mounts, or two limiters of one mount, each get the config they sent)."""
_CONFIGS_MAX = 256


def _config(config: dict[str, Any]) -> LimitConfig:
    """``config_from_dict``, validated once per distinct wire form."""
    try:
        key = tuple(config.items())
        found = _CONFIGS.get(key)
    except TypeError:  # an unhashable value: not a valid config anyway, let it be refused
        return config_from_dict(config)
    if found is None:
        found = config_from_dict(config)
        if len(_CONFIGS) >= _CONFIGS_MAX:
            _CONFIGS.clear()
        _CONFIGS[key] = found
    return found


class _LazyRandom:
    """A generator made on first use: most decisions (one shard, admitted) draw nothing."""

    __slots__ = ("_make", "_rng")

    def __init__(self, make: Callable[[], Random]):
        self._make = make
        self._rng: Random | None = None

    def _get(self) -> Random:
        rng = self._rng
        if rng is None:
            rng = self._rng = self._make()
        return rng

    def random(self) -> float:
        return self._get().random()

    def randrange(self, stop: int, /) -> int:
        return self._get().randrange(stop)


def _shard_doc(ctx: QueryCtx, name: str, key: str | None, shard: int) -> dict[str, Any] | None:
    found: dict[str, Any] | None = (
        ctx.db.query("rate_limits")
        .with_index("by_name", lambda q: q.eq("name", name).eq("key", key).eq("shard", shard))
        .unique()
    )
    return found


def _evaluate(
    ctx: QueryCtx,
    rng: RandomSource,
    *,
    name: str,
    key: str | None,
    config: dict[str, Any],
    count: float,
    reserve: bool,
    jitter: float,
) -> tuple[dict[str, Any], list[tuple[dict[str, Any] | None, int, LimitState]]]:
    limit_config = _config(config)
    check_count(name, limit_config, count, reserve)
    docs: dict[int, dict[str, Any] | None] = {}

    def read(shard: int) -> LimitState | None:
        if shard not in docs:
            docs[shard] = _shard_doc(ctx, name, key, shard)
        doc = docs[shard]
        return None if doc is None else LimitState(value=doc["value"], ts=doc["ts"])

    decision = decide(limit_config, read, now=ctx.now, count=count, reserve=reserve, rng=rng)
    retry_after = decision.retry_after
    if not decision.ok and retry_after is not None and jitter > 0:
        # Spread refused callers over part of a period so they do not all return together.
        retry_after += rng.random() * jitter * limit_config.period
    status = {"ok": decision.ok, "retry_after": retry_after}
    writes = [(docs.get(u.shard), u.shard, u.state) for u in decision.updates]
    return status, writes


def _query_rng(name: str, key: str | None, now: float) -> RandomSource:
    # Queries have no ctx.random; a seed from the arguments keeps them deterministic.
    return _LazyRandom(lambda: Random(f"{name}|{key}|{now!r}"))


@component.mutation
def limit(
    ctx: MutationCtx,
    name: str,
    config: dict[str, Any],
    key: str | None = None,
    count: float = 1.0,
    reserve: bool = False,
    throws: bool = False,
    jitter: float = 0.0,
) -> dict[str, Any]:
    """Take ``count`` tokens if the limit allows it; refusals write nothing."""
    status, writes = _evaluate(
        ctx,
        _LazyRandom(lambda: ctx.random),
        name=name,
        key=key,
        config=config,
        count=count,
        reserve=reserve,
        jitter=jitter,
    )
    if not status["ok"]:
        if throws:
            raise RateLimitError(name, status["retry_after"])
        return status
    for doc, shard, state in writes:
        fields = {"value": float(state.value), "ts": float(state.ts)}
        if doc is None:
            ctx.db.insert("rate_limits", {"name": name, "key": key, "shard": shard, **fields})
        else:
            ctx.db.patch(doc["_id"], fields)
    return status


@component.query
def check(
    ctx: QueryCtx,
    name: str,
    config: dict[str, Any],
    key: str | None = None,
    count: float = 1.0,
    reserve: bool = False,
    throws: bool = False,
    jitter: float = 0.0,
) -> dict[str, Any]:
    """What ``limit`` would answer now, without taking anything."""
    status, _ = _evaluate(
        ctx,
        _query_rng(name, key, ctx.now),
        name=name,
        key=key,
        config=config,
        count=count,
        reserve=reserve,
        jitter=jitter,
    )
    if throws and not status["ok"]:
        raise RateLimitError(name, status["retry_after"])
    return status


@component.mutation
def reset(ctx: MutationCtx, name: str, key: str | None = None) -> None:
    """Forget the state of ``(name, key)``: the limit is full again."""
    docs = (
        ctx.db.query("rate_limits")
        .with_index("by_name", lambda q: q.eq("name", name).eq("key", key))
        .collect()
    )
    for doc in docs:
        ctx.db.delete(doc["_id"])


@component.query
def get_value(
    ctx: QueryCtx, name: str, config: dict[str, Any], key: str | None = None
) -> dict[str, Any]:
    """The tokens available now (summed over shards), the state's time and the config."""
    full: LimitConfig = config_from_dict(config)
    per_shard = shard_config(full)
    docs = (
        ctx.db.query("rate_limits")
        .with_index("by_name", lambda q: q.eq("name", name).eq("key", key))
        .collect()
    )
    stored = {int(doc["shard"]): LimitState(value=doc["value"], ts=doc["ts"]) for doc in docs}
    # An unused shard is full; a window without ``start`` is then aligned to the epoch.
    unused_ts = ctx.now if full.kind == "token bucket" else (full.start or 0.0)
    value = 0.0
    ts = None
    for shard in range(full.shards):
        start = stored.get(shard) or LimitState(value=per_shard.capacity, ts=unused_ts)
        state, _ = calculate(start, per_shard, ctx.now, 0)
        value += state.value
        ts = state.ts if ts is None else max(ts, state.ts)
    wire = config_to_dict(full)
    if full.kind != "token bucket" and wire["start"] is None:
        wire["start"] = ts
    return {"value": value, "ts": ts, "config": wire}
