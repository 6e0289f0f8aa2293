"""Owns the errors of the model plumbing: provider failures, bad answers, scripts, embeddings.

The tree::

    CapsuleError
    └── ModelError                    a chat model or embedder failed, 502
        ├── ModelAPIError             the provider answered with an error status, 502
        │   └── ModelRateLimitError   the provider kept answering 429 (after the retries), 503
        ├── ModelConnectionError      the provider could not be reached (after the retries), 502
        ├── ModelResponseError        the provider's answer cannot be used (bad JSON, ...), 502
        ├── ModelConfigError          a model or embedder is set up wrongly (key, extra, ...), 500
        ├── ScriptExhaustedError      a ScriptedChatModel was called more often than scripted, 500
        ├── ScriptNotConsumedError    assert_consumed() found unused scripted turns, 500
        └── EmbeddingError            texts cannot be embedded, or vectors came back wrong, 502

Every error keeps the facts its message states as attributes (``model``, ``status``, ...).
"""

from __future__ import annotations

from typing import Any

from core import CapsuleError


def _restore(cls: type[ModelError], message: str, facts: dict[str, Any]) -> ModelError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(facts)
    return error


class ModelError(CapsuleError):
    """Raised when a chat model or an embedder fails; the root of this package's errors."""

    code = "model_error"
    http_status = 502

    def __init__(self, message: str, *, model: str | None = None):
        super().__init__(message)
        self.model = model

    def __reduce__(self) -> tuple[Any, ...]:
        # The constructors take facts, not the message: rebuild from the message and facts.
        return (_restore, (type(self), str(self), dict(self.__dict__)))


class ModelAPIError(ModelError):
    """Raised when the provider answers a request with an error status it will not get past.

    Either the status is not worth retrying (400, 401, 403, 404, 422, ...) or the retries
    for a 5xx (or 408/409) ran out. ``status`` is the HTTP status, ``attempts`` how many
    requests were made.
    """

    code = "model_api_error"

    def __init__(self, *, model: str, status: int, detail: str, attempts: int = 1):
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(
            f'Model "{model}": the provider answered HTTP {status}{tries}: {detail}', model=model
        )
        self.status = status
        self.detail = detail
        self.attempts = attempts


class ModelRateLimitError(ModelAPIError):
    """Raised when the provider keeps refusing with 429 (rate limit or quota) past the retries.

    ``retry_after`` is the provider's Retry-After in seconds, when it sent one.
    """

    code = "model_rate_limited"
    http_status = 503

    def __init__(
        self, *, model: str, detail: str, attempts: int = 1, retry_after: float | None = None
    ):
        super().__init__(model=model, status=429, detail=detail, attempts=attempts)
        self.retry_after = retry_after
        if retry_after is not None:
            self.args = (f"{self.args[0]} (retry after {retry_after:g} s)",)


class ModelConnectionError(ModelError):
    """Raised when the provider cannot be reached (connection refused, timeouts) after retries."""

    code = "model_unreachable"

    def __init__(self, *, model: str, detail: str, attempts: int = 1):
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(
            f'Model "{model}": the provider could not be reached{tries}: {detail}', model=model
        )
        self.detail = detail
        self.attempts = attempts


class ModelResponseError(ModelError):
    """Raised when a provider's answer cannot be used: malformed, cut short, or not valid JSON."""

    code = "model_bad_response"

    def __init__(self, detail: str, *, model: str | None = None):
        name = f'Model "{model}"' if model else "The model"
        super().__init__(f"{name} sent an answer that cannot be used: {detail}", model=model)
        self.detail = detail


class ModelConfigError(ModelError):
    """Raised when a model or embedder is set up wrongly: a missing key or extra, a bad option."""

    code = "model_config"
    http_status = 500


class ScriptExhaustedError(ModelError):
    """Raised when a ``ScriptedChatModel`` gets a request after its scripted turns ran out."""

    code = "script_exhausted"
    http_status = 500

    def __init__(self, *, model: str, scripted: int, last_message: str | None):
        seen = f"; the unexpected request ends with {last_message}" if last_message else ""
        super().__init__(
            f'ScriptedChatModel "{model}" got request {scripted + 1}, but only {scripted} '
            f"turn(s) were scripted{seen}. Script one more turn, or find the extra call.",
            model=model,
        )
        self.scripted = scripted


class ScriptNotConsumedError(ModelError):
    """Raised when ``ScriptedChatModel.assert_consumed()`` finds scripted turns never used."""

    code = "script_not_consumed"
    http_status = 500

    def __init__(self, *, model: str, scripted: int, remaining: list[str]):
        used = scripted - len(remaining)
        super().__init__(
            f'ScriptedChatModel "{model}" used {used} of {scripted} scripted turn(s); '
            f"{len(remaining)} never ran: {', '.join(remaining)}.",
            model=model,
        )
        self.scripted = scripted
        self.remaining = remaining


class EmbeddingError(ModelError):
    """Raised when texts cannot be embedded (empty, too long) or the vectors came back wrong."""

    code = "embedding_error"

    def __init__(self, message: str, *, model: str | None = None, index: int | None = None):
        super().__init__(message, model=model)
        self.index = index


__all__ = [
    "EmbeddingError",
    "ModelAPIError",
    "ModelConfigError",
    "ModelConnectionError",
    "ModelError",
    "ModelRateLimitError",
    "ModelResponseError",
    "ScriptExhaustedError",
    "ScriptNotConsumedError",
]
