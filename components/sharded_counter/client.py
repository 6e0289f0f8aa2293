"""Owns ``ShardedCounter``, the class app code uses to count with many concurrent writers.

Methods take the caller's ``ctx`` first: inside a query or mutation they join the caller's
transaction; from an action each call is its own transaction and returns an awaitable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, overload

from components.sharded_counter.errors import CounterConfigError
from core import ActionCtx, ComponentHandle, MutationCtx, QueryCtx, call

Number = int | float


def _check_shards(what: str, n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise CounterConfigError(f"{what} must be a positive integer, not {n!r}.")
    return n


def _by_shard(raw: Mapping[str, Number]) -> dict[int, Number]:
    return {int(k): v for k, v in raw.items()}


class ShardedCounter:
    """Counters by name, each split over shards so increments rarely conflict.

    Example::

        counts = app.use(sharded_counter.component, name="counts")
        counter = ShardedCounter(counts, shards={"likes": 32})

        @app.mutation
        def like(ctx: MutationCtx, post: str) -> None:
            counter.inc(ctx, f"likes:{post}")

    Args:
        handle: what ``app.use(component)`` returned.
        shards: shard counts for particular names (more shards: more write throughput,
            slower ``count``).
        default_shards: the shard count of every other name.

    Raises:
        CounterConfigError: a shard count is not a positive integer.
    """

    def __init__(
        self,
        handle: ComponentHandle,
        *,
        shards: Mapping[str, int] | None = None,
        default_shards: int = 16,
    ):
        self.handle = handle
        self.default_shards = _check_shards("default_shards", default_shards)
        self.shards = {
            name: _check_shards(f'The shard count of "{name}"', n)
            for name, n in (shards or {}).items()
        }

    def shards_of(self, name: str) -> int:
        """How many shards ``name`` is spread over."""
        return self.shards.get(name, self.default_shards)

    @overload
    def add(
        self, ctx: ActionCtx, name: str, count: Number = 1, *, shard: int | None = None
    ) -> Awaitable[int]: ...
    @overload
    def add(
        self, ctx: MutationCtx, name: str, count: Number = 1, *, shard: int | None = None
    ) -> int: ...
    def add(
        self,
        ctx: MutationCtx | ActionCtx,
        name: str,
        count: Number = 1,
        *,
        shard: int | None = None,
    ) -> int | Awaitable[int]:
        """Add ``count`` (may be negative) to one random shard (or the given ``shard``).

        Returns the shard that was written.
        """
        if shard is not None and not 0 <= shard < self.shards_of(name):
            raise CounterConfigError(
                f'Shard {shard} of "{name}" is out of range 0..{self.shards_of(name) - 1}.'
            )
        args = {"name": name, "count": count, "shards": self.shards_of(name), "shard": shard}
        return call(ctx, self.handle.add, args)

    @overload
    def inc(self, ctx: ActionCtx, name: str) -> Awaitable[int]: ...
    @overload
    def inc(self, ctx: MutationCtx, name: str) -> int: ...
    def inc(self, ctx: MutationCtx | ActionCtx, name: str) -> int | Awaitable[int]:
        """Add one."""
        return self.add(ctx, name, 1)

    @overload
    def dec(self, ctx: ActionCtx, name: str) -> Awaitable[int]: ...
    @overload
    def dec(self, ctx: MutationCtx, name: str) -> int: ...
    def dec(self, ctx: MutationCtx | ActionCtx, name: str) -> int | Awaitable[int]:
        """Subtract one."""
        return self.add(ctx, name, -1)

    @overload
    def count(self, ctx: ActionCtx, name: str) -> Awaitable[Number]: ...
    @overload
    def count(self, ctx: QueryCtx, name: str) -> Number: ...
    def count(self, ctx: QueryCtx | ActionCtx, name: str) -> Number | Awaitable[Number]:
        """The exact count: the sum of every shard (reads them all)."""
        return call(ctx, self.handle.count, {"name": name})

    @overload
    def estimate_count(
        self, ctx: ActionCtx, name: str, *, read_shards: int = 1
    ) -> Awaitable[float]: ...
    @overload
    def estimate_count(self, ctx: QueryCtx, name: str, *, read_shards: int = 1) -> float: ...
    def estimate_count(
        self, ctx: QueryCtx | ActionCtx, name: str, *, read_shards: int = 1
    ) -> float | Awaitable[float]:
        """An estimate from ``read_shards`` random shards (exact after ``rebalance``)."""
        args = {"name": name, "read_shards": read_shards, "shards": self.shards_of(name)}
        return call(ctx, self.handle.estimate_count, args)

    @overload
    def shard_values(self, ctx: ActionCtx, name: str) -> Awaitable[dict[int, Number]]: ...
    @overload
    def shard_values(self, ctx: QueryCtx, name: str) -> dict[int, Number]: ...
    def shard_values(
        self, ctx: QueryCtx | ActionCtx, name: str
    ) -> dict[int, Number] | Awaitable[dict[int, Number]]:
        """Each existing shard's value by shard number (for inspection)."""
        return call(ctx, self.handle.shard_values, {"name": name}, then=_by_shard)

    @overload
    def rebalance(self, ctx: ActionCtx, name: str) -> Awaitable[None]: ...
    @overload
    def rebalance(self, ctx: MutationCtx, name: str) -> None: ...
    def rebalance(self, ctx: MutationCtx | ActionCtx, name: str) -> Awaitable[None] | None:
        """Spread the total evenly over the shards (and drop shards beyond the count)."""
        args = {"name": name, "shards": self.shards_of(name)}
        return call(ctx, self.handle.rebalance, args)

    @overload
    def reset(self, ctx: ActionCtx, name: str) -> Awaitable[None]: ...
    @overload
    def reset(self, ctx: MutationCtx, name: str) -> None: ...
    def reset(self, ctx: MutationCtx | ActionCtx, name: str) -> Awaitable[None] | None:
        """Set the count back to 0."""
        return call(ctx, self.handle.reset, {"name": name})
