"""Owns retrying provider calls: ``Backoff`` (exponential, Retry-After aware) and error mapping.

``with_retries`` runs one call of the ``openai`` client, retrying a 429, a 408/409, a 5xx or a
connection failure with exponential backoff, and turns what is left into this package's
errors (``ModelAPIError``, ``ModelRateLimitError``, ``ModelConnectionError``,
``ModelResponseError``), each naming the model and status.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import anyio

from components.models.errors import (
    ModelAPIError,
    ModelConfigError,
    ModelConnectionError,
    ModelError,
    ModelRateLimitError,
    ModelResponseError,
)

logger = logging.getLogger("capsule.models")

ResultT = TypeVar("ResultT")

_RETRYABLE_STATUSES = frozenset((408, 409, 429))
# A 429 for an exhausted quota will not clear by waiting: retrying only burns time.
_NOT_TRANSIENT_CODES = frozenset(("insufficient_quota",))


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """How provider calls are retried: bounded attempts, exponential delays with jitter.

    The n-th retry waits ``initial_delay * multiplier ** (n - 1)`` seconds, at most
    ``max_delay``, less up to ``jitter`` of it at random. A Retry-After from the provider
    is waited exactly; one longer than ``max_delay`` ends the retries at once (the error
    carries ``retry_after`` so the caller can schedule a later try).
    """

    max_attempts: int = 4
    """Requests made at most, the first included (1 turns retries off)."""
    initial_delay: float = 0.5
    """Seconds before the first retry."""
    multiplier: float = 2.0
    """Growth of the delay per retry."""
    max_delay: float = 20.0
    """The longest wait between two attempts, in seconds."""
    jitter: float = 0.25
    """Up to this fraction of each computed delay is taken off at random (0 turns it off)."""

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ModelConfigError(f"max_attempts must be an integer, got {self.max_attempts!r}.")
        if self.max_attempts < 1:
            raise ModelConfigError(f"max_attempts must be at least 1, got {self.max_attempts}.")
        if self.initial_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise ModelConfigError(
                "Backoff delays must be zero or more seconds and multiplier at least 1; got "
                f"initial_delay={self.initial_delay!r}, max_delay={self.max_delay!r}, "
                f"multiplier={self.multiplier!r}."
            )
        if not 0 <= self.jitter <= 1:
            raise ModelConfigError(f"jitter must be between 0 and 1, got {self.jitter!r}.")

    def delay(self, retry: int, *, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry number ``retry`` (1-based); ``None``: do not retry."""
        if retry >= self.max_attempts:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_delay else None
        computed = min(self.initial_delay * self.multiplier ** (retry - 1), self.max_delay)
        return computed * (1 - self.jitter * random.random())


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The wait a response asks for: ``retry-after-ms``, else ``retry-after`` (seconds or date)."""
    lowered = {key.lower(): value for key, value in headers.items()}
    milliseconds = lowered.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _detail(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return str(message)


def map_error(error: Exception, *, model: str, attempts: int = 1) -> ModelError:
    """This package's error for an exception of the ``openai`` client."""
    import openai

    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        if status == 429:
            return ModelRateLimitError(
                model=model,
                detail=_detail(error),
                attempts=attempts,
                retry_after=retry_after_seconds(error.response.headers),
            )
        return ModelAPIError(model=model, status=status, detail=_detail(error), attempts=attempts)
    if isinstance(error, openai.APIConnectionError):
        return ModelConnectionError(model=model, detail=_detail(error), attempts=attempts)
    if isinstance(error, openai.APIResponseValidationError):
        return ModelResponseError(_detail(error), model=model)
    if isinstance(error, openai.APIError):
        # An error event inside a stream (the body of ``data: {"error": ...}``).
        return ModelResponseError(_detail(error), model=model)
    return ModelError(f'Model "{model}" failed: {type(error).__name__}: {error}', model=model)


def _should_retry(error: Exception) -> tuple[bool, float | None]:
    import openai

    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        if status == 429 and getattr(error, "code", None) in _NOT_TRANSIENT_CODES:
            return False, None
        if status in _RETRYABLE_STATUSES or status >= 500:
            return True, retry_after_seconds(error.response.headers)
        return False, None
    return isinstance(error, openai.APIConnectionError), None


async def with_retries(
    call: Callable[[], Awaitable[ResultT]], *, model: str, backoff: Backoff
) -> ResultT:
    """Run ``call`` (one request of the ``openai`` client), retrying what may pass.

    Raises:
        ModelRateLimitError: 429 until the attempts (or the patience) ran out.
        ModelAPIError: another error status.
        ModelConnectionError: the provider could not be reached.
        ModelResponseError: the answer did not match the API's shape.
    """
    import openai

    attempt = 1
    while True:
        try:
            return await call()
        except openai.OpenAIError as error:
            retry, retry_after = _should_retry(error)
            wait = backoff.delay(attempt, retry_after=retry_after) if retry else None
            if wait is None:
                raise map_error(error, model=model, attempts=attempt) from error
            logger.warning(
                'Model "%s": attempt %d failed (%s); retrying in %.2f s.',
                model,
                attempt,
                _detail(error),
                wait,
            )
        await anyio.sleep(wait)
        attempt += 1
