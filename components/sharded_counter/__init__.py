"""A counter for hot names: writes go to one of N shard documents, reads sum them.

Mount the component and count::

    from components.sharded_counter import ShardedCounter, component

    counts = app.use(component, name="counts")
    counter = ShardedCounter(counts, shards={"likes": 32}, default_shards=16)
"""

from __future__ import annotations

from components.sharded_counter.client import ShardedCounter
from components.sharded_counter.component import component
from components.sharded_counter.errors import CounterConfigError

__all__ = ["CounterConfigError", "ShardedCounter", "component"]
