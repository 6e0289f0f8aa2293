"""Owns the sharded counter's errors."""

from __future__ import annotations

from core import UserError


class CounterConfigError(UserError):
    """Raised when a ``ShardedCounter`` is given a shard count that is not a positive integer."""

    code = "counter_config"
