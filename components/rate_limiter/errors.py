"""Owns the rate limiter's errors: refusals, bad configurations and impossible requests."""

from __future__ import annotations

from core import AppError, InvalidArgumentError, UserError


class RateLimitError(AppError):
    """Raised when ``limit(..., throws=True)`` is refused.

    Its ``data`` is ``{"kind": "RateLimited", "name": ..., "retry_after": seconds}``.
    """

    code = "rate_limited"

    def __init__(self, name: str, retry_after: float | None):
        self.name = name
        self.retry_after = retry_after
        wait = "" if retry_after is None else f"; retry after {retry_after:.3f} s"
        super().__init__(
            {"kind": "RateLimited", "name": name, "retry_after": retry_after},
            f'Rate limit "{name}" exceeded{wait}.',
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.name, self.retry_after))


class RateLimitConfigError(UserError):
    """Raised when a rate limit is configured wrongly or a limit name is not configured."""

    code = "rate_limit_config"


class RateLimitCountError(InvalidArgumentError):
    """Raised when a request asks for more tokens than the limit can ever grant."""

    code = "rate_limit_count"

    def __init__(self, name: str, count: float, maximum: float | None, shards: int = 1):
        self.name = name
        self.count = count
        self.maximum = maximum
        if maximum is None:
            message = f'Rate limit "{name}": count {count:g} must be zero or more.'
        else:
            per = f" per {shards} shards" if shards > 1 else ""
            message = (
                f'Rate limit "{name}" count {count:g} exceeds {maximum:g}{per}: it can never be '
                "granted; raise the capacity (or max_reserved) or split the request."
            )
        super().__init__(message, argument="count")
