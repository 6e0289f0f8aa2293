"""Application-level rate limiting: token buckets and fixed windows, transactional and sharded.

Mount the component and describe the limits::

    from components.rate_limiter import MINUTE, RateLimiter, TokenBucket, component

    limits = app.use(component, name="limits")
    limiter = RateLimiter(limits, {"send": TokenBucket(10, MINUTE, capacity=3)})
"""

from __future__ import annotations

from components.rate_limiter.algorithms import (
    DAY,
    HOUR,
    MINUTE,
    SECOND,
    WEEK,
    FixedWindow,
    TokenBucket,
)
from components.rate_limiter.client import RateLimiter, RateLimitStatus, RateLimitValue
from components.rate_limiter.component import component
from components.rate_limiter.errors import (
    RateLimitConfigError,
    RateLimitCountError,
    RateLimitError,
)

__all__ = [
    "DAY",
    "FixedWindow",
    "HOUR",
    "MINUTE",
    "RateLimitConfigError",
    "RateLimitCountError",
    "RateLimitError",
    "RateLimitStatus",
    "RateLimitValue",
    "RateLimiter",
    "SECOND",
    "TokenBucket",
    "WEEK",
    "component",
]
