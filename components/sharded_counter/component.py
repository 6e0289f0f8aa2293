"""Owns the sharded counter component: its table and its exported functions.

A counter is up to ``shards`` documents ``(name, shard, value)``, created lazily. A write
point-reads and patches one random shard, so concurrent writers of one name conflict only when
they pick the same shard; ``count`` reads and sums every shard of the name.
"""

from __future__ import annotations

from random import Random
from typing import Any

from core import Component, MutationCtx, QueryCtx, Schema, Table

Number = int | float

component = Component(
    "sharded_counter",
    schema=Schema(
        counters=Table({"name": str, "shard": int, "value": int | float}).index(
            "by_name", ["name", "shard"]
        ),
    ),
)


def _all_shards(ctx: QueryCtx, name: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = (
        ctx.db.query("counters").with_index("by_name", lambda q: q.eq("name", name)).collect()
    )
    return docs


def _shard(ctx: QueryCtx, name: str, shard: int) -> dict[str, Any] | None:
    doc: dict[str, Any] | None = (
        ctx.db.query("counters")
        .with_index("by_name", lambda q: q.eq("name", name).eq("shard", shard))
        .unique()
    )
    return doc


def _total(docs: list[dict[str, Any]]) -> Number:
    total: Number = 0
    for doc in docs:
        total += doc["value"]
    return total


@component.mutation
def add(
    ctx: MutationCtx, name: str, count: int | float = 1, shards: int = 16, shard: int | None = None
) -> int:
    """Add ``count`` to one shard (random unless ``shard`` is given); return the shard."""
    chosen = ctx.random.randrange(max(1, shards)) if shard is None else shard
    doc = _shard(ctx, name, chosen)
    if doc is None:
        ctx.db.insert("counters", {"name": name, "shard": chosen, "value": count})
    else:
        ctx.db.patch(doc["_id"], {"value": doc["value"] + count})
    return chosen


@component.query
def count(ctx: QueryCtx, name: str) -> int | float:
    """The sum of every shard of ``name`` (0 for a name never written)."""
    return _total(_all_shards(ctx, name))


@component.query
def shard_values(ctx: QueryCtx, name: str) -> dict[str, int | float]:
    """Each existing shard's value, keyed by the shard number as a string."""
    return {str(doc["shard"]): doc["value"] for doc in _all_shards(ctx, name)}


@component.query
def estimate_count(ctx: QueryCtx, name: str, read_shards: int = 1, shards: int = 16) -> float:
    """``sum(sampled) * shards / sampled`` over ``read_shards`` random shards."""
    shards = max(1, shards)
    k = min(max(1, read_shards), shards)
    # Queries have no ctx.random; seeding from the arguments keeps them deterministic.
    picked = Random(f"{name}|{ctx.now!r}").sample(range(shards), k)
    total: Number = 0
    for shard in picked:
        doc = _shard(ctx, name, shard)
        if doc is not None:
            total += doc["value"]
    return total * shards / k


@component.mutation
def rebalance(ctx: MutationCtx, name: str, shards: int = 16) -> None:
    """Spread the total evenly over shards ``0..shards-1``; delete any shard beyond."""
    docs = _all_shards(ctx, name)
    share = _total(docs) / shards
    existing = {int(doc["shard"]): doc for doc in docs}
    for shard, doc in existing.items():
        if shard >= shards:
            ctx.db.delete(doc["_id"])
    for shard in range(shards):
        current = existing.get(shard)
        if current is None:
            ctx.db.insert("counters", {"name": name, "shard": shard, "value": share})
        else:
            ctx.db.patch(current["_id"], {"value": share})


@component.mutation
def reset(ctx: MutationCtx, name: str) -> None:
    """Delete every shard of ``name``: its count is 0 again."""
    for doc in _all_shards(ctx, name):
        ctx.db.delete(doc["_id"])
