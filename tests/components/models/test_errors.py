"""The model errors: codes, statuses, messages naming the facts, and pickling."""

from __future__ import annotations

import pickle

import pytest

from components.models import (
    EmbeddingError,
    ModelAPIError,
    ModelConfigError,
    ModelConnectionError,
    ModelError,
    ModelRateLimitError,
    ModelResponseError,
    ScriptExhaustedError,
    ScriptNotConsumedError,
)
from core import CapsuleError

ERRORS: list[ModelError] = [
    ModelError("failed", model="m"),
    ModelAPIError(model="m", status=400, detail="bad", attempts=1),
    ModelRateLimitError(model="m", detail="slow down", attempts=3, retry_after=2.5),
    ModelConnectionError(model="m", detail="refused", attempts=2),
    ModelResponseError("no choices", model="m"),
    ModelConfigError("no key", model="m"),
    ScriptExhaustedError(model="scripted", scripted=2, last_message="user: 'hi'"),
    ScriptNotConsumedError(model="scripted", scripted=3, remaining=["text 'a'"]),
    EmbeddingError("empty text", model="e", index=4),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_each_error_has_a_code_a_status_and_survives_pickling(error: ModelError) -> None:
    assert isinstance(error, CapsuleError)
    assert type(error).__doc__ and type(error).__doc__.startswith("Raised when")
    assert error.code and error.code != "internal"
    assert error.http_status in (500, 502, 503)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__


def test_codes_are_distinct() -> None:
    codes = [type(e).code for e in ERRORS]
    assert len(set(codes)) == len(codes)


def test_messages_name_the_facts() -> None:
    api = ModelAPIError(model="gpt-4o", status=500, detail="boom", attempts=4)
    assert str(api) == 'Model "gpt-4o": the provider answered HTTP 500 after 4 attempts: boom'
    limited = ModelRateLimitError(model="gpt-4o", detail="slow", retry_after=2.5)
    assert str(limited).endswith("(retry after 2.5 s)")
    assert (limited.status, limited.retry_after) == (429, 2.5)
    assert isinstance(limited, ModelAPIError)
