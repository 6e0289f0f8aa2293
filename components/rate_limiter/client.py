"""Owns ``RateLimiter``, the class app code uses, and its result records.

Methods take the caller's ``ctx`` first. From a query or mutation they run inside the
caller's transaction (a ``limit`` in a mutation that later fails is undone with it); from an
action each call is its own transaction and the method returns an awaitable.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, overload

from components.rate_limiter.algorithms import (
    FixedWindow,
    LimitConfig,
    TokenBucket,
    config_from_dict,
    config_to_dict,
)
from components.rate_limiter.errors import RateLimitConfigError
from core import ActionCtx, ComponentHandle, MutationCtx, QueryCtx, call


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitStatus:
    """The answer to ``limit`` / ``check``."""

    ok: bool
    """Whether the request is (or would be) granted."""
    retry_after: float | None
    """Seconds to wait: before retrying when refused, before running a reservation when ok."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitValue:
    """A limit's current state, for UIs (``get_value``)."""

    value: float
    """Tokens available at ``ctx.now`` (summed over shards)."""
    ts: float | None
    """Token bucket: time of the evaluation. Fixed window: the current window's start."""
    config: LimitConfig
    """The configuration, with defaults filled in (a window's ``start`` included)."""


def _status(raw: Mapping[str, Any]) -> RateLimitStatus:
    return RateLimitStatus(ok=bool(raw["ok"]), retry_after=raw["retry_after"])


def _value(raw: Mapping[str, Any]) -> RateLimitValue:
    return RateLimitValue(value=raw["value"], ts=raw["ts"], config=config_from_dict(raw["config"]))


class RateLimiter:
    """Named rate limits over one mounted ``rate_limiter`` component.

    Example::

        limits = app.use(rate_limiter.component, name="limits")
        limiter = RateLimiter(limits, {"send": TokenBucket(10, MINUTE, capacity=3)})

        @app.mutation
        def send(ctx: MutationCtx, user: str) -> bool:
            return limiter.limit(ctx, "send", key=user).ok

    Args:
        handle: what ``app.use(component)`` returned.
        limits: configurations by limit name.
        jitter: when above zero, a refusal's ``retry_after`` gets up to ``jitter`` periods of
            random extra wait, so refused clients do not all come back at once.

    Raises:
        RateLimitConfigError: a limit is not a ``TokenBucket`` / ``FixedWindow``, or the
            jitter is negative.
    """

    def __init__(
        self,
        handle: ComponentHandle,
        limits: Mapping[str, LimitConfig],
        *,
        jitter: float = 0.0,
    ):
        if not isinstance(jitter, int | float) or not math.isfinite(jitter) or jitter < 0:
            raise RateLimitConfigError(f"RateLimiter jitter must be zero or more, not {jitter!r}.")
        configs: dict[str, dict[str, Any]] = {}
        for name, config in limits.items():
            if not isinstance(name, str) or not name:
                raise RateLimitConfigError(f"Rate limit names are non-empty strings, not {name!r}.")
            if not isinstance(config, TokenBucket | FixedWindow):
                raise RateLimitConfigError(
                    f'Rate limit "{name}" must be a TokenBucket or a FixedWindow, not '
                    f"{type(config).__name__}."
                )
            configs[name] = config_to_dict(config)
        self.handle = handle
        self.limits: dict[str, LimitConfig] = dict(limits)
        self.jitter = float(jitter)
        self._wire = configs
        # Resolved once: a handle makes a new reference object at every attribute access.
        self._limit = handle.limit
        self._check = handle.check

    def _config(self, name: str) -> dict[str, Any]:
        try:
            return self._wire[name]
        except KeyError:
            known = ", ".join(f'"{n}"' for n in sorted(self._wire)) or "none"
            raise RateLimitConfigError(
                f'Rate limit "{name}" is not configured on this RateLimiter (known: {known}).'
            ) from None

    def _request(
        self, name: str, key: str | None, count: float, reserve: bool, throws: bool
    ) -> dict[str, Any]:
        return {
            "name": name,
            "config": self._config(name),
            "key": key,
            "count": float(count),
            "reserve": reserve,
            "throws": throws,
            "jitter": self.jitter,
        }

    @overload
    def limit(
        self,
        ctx: ActionCtx,
        name: str,
        *,
        key: str | None = None,
        count: float = 1,
        reserve: bool = False,
        throws: bool = False,
    ) -> Awaitable[RateLimitStatus]: ...
    @overload
    def limit(
        self,
        ctx: MutationCtx,
        name: str,
        *,
        key: str | None = None,
        count: float = 1,
        reserve: bool = False,
        throws: bool = False,
    ) -> RateLimitStatus: ...
    def limit(
        self,
        ctx: MutationCtx | ActionCtx,
        name: str,
        *,
        key: str | None = None,
        count: float = 1,
        reserve: bool = False,
        throws: bool = False,
    ) -> RateLimitStatus | Awaitable[RateLimitStatus]:
        """Take ``count`` tokens from ``(name, key)`` if the limit allows it.

        With ``reserve=True`` the value may go below zero (down to ``-max_reserved``): the
        request is granted and ``retry_after`` says when it may run.

        Raises:
            RateLimitError: refused and ``throws=True``.
            RateLimitCountError: ``count`` can never be granted.
        """
        args = self._request(name, key, count, reserve, throws)
        return call(ctx, self._limit, args, then=_status)

    @overload
    def check(
        self,
        ctx: ActionCtx,
        name: str,
        *,
        key: str | None = None,
        count: float = 1,
        reserve: bool = False,
        throws: bool = False,
    ) -> Awaitable[RateLimitStatus]: ...
    @overload
    def check(
        self,
        ctx: QueryCtx,
        name: str,
        *,
        key: str | None = None,
        count: float = 1,
        reserve: bool = False,
        throws: bool = False,
    ) -> RateLimitStatus: ...
    def check(
        self,
        ctx: QueryCtx | ActionCtx,
        name: str,
        *,
        key: str | None = None,
        count: float = 1,
        reserve: bool = False,
        throws: bool = False,
    ) -> RateLimitStatus | Awaitable[RateLimitStatus]:
        """What ``limit`` would answer now; writes nothing (usable in queries)."""
        args = self._request(name, key, count, reserve, throws)
        return call(ctx, self._check, args, then=_status)

    def reset(self, ctx: MutationCtx | ActionCtx, name: str, *, key: str | None = None) -> Any:
        """Make ``(name, key)`` full again (a fixed window gets a new random phase)."""
        self._config(name)
        return call(ctx, self.handle.reset, {"name": name, "key": key})

    @overload
    def get_value(
        self, ctx: ActionCtx, name: str, *, key: str | None = None
    ) -> Awaitable[RateLimitValue]: ...
    @overload
    def get_value(self, ctx: QueryCtx, name: str, *, key: str | None = None) -> RateLimitValue: ...
    def get_value(
        self, ctx: QueryCtx | ActionCtx, name: str, *, key: str | None = None
    ) -> RateLimitValue | Awaitable[RateLimitValue]:
        """The tokens available at ``ctx.now``, with the time and the config."""
        args = {"name": name, "config": self._config(name), "key": key}
        return call(ctx, self.handle.get_value, args, then=_value)
