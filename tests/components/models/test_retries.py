"""Backoff arithmetic and Retry-After parsing."""

from __future__ import annotations

import email.utils

import pytest

from components.models import Backoff, ModelConfigError
from components.models.retries import retry_after_seconds


def test_delays_grow_exponentially_up_to_the_cap() -> None:
    backoff = Backoff(max_attempts=6, initial_delay=0.5, multiplier=2, max_delay=3, jitter=0)
    assert [backoff.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, None]


def test_attempts_are_bounded() -> None:
    assert Backoff(max_attempts=1).delay(1) is None
    assert Backoff(max_attempts=2, jitter=0).delay(1) == 0.5
    assert Backoff(max_attempts=2).delay(2) is None


def test_jitter_only_shortens() -> None:
    backoff = Backoff(initial_delay=1.0, jitter=0.5, max_attempts=3)
    delays = [backoff.delay(1) for _ in range(200)]
    assert all(d is not None and 0.5 <= d <= 1.0 for d in delays)
    assert len(set(delays)) > 1


def test_retry_after_is_honoured_unless_too_long() -> None:
    backoff = Backoff(max_delay=10, jitter=0.5)
    assert backoff.delay(1, retry_after=7) == 7
    assert backoff.delay(1, retry_after=0) == 0
    assert backoff.delay(1, retry_after=11) is None
    assert Backoff(max_attempts=1).delay(1, retry_after=1) is None


def test_retry_after_headers() -> None:
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"Retry-After": "3"}) == 3
    assert retry_after_seconds({"retry-after": "1.5"}) == 1.5
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "-4"}) == 0
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert retry_after_seconds({"retry-after": date}, now=1_000_000) == 30
    assert retry_after_seconds({"retry-after": "soon"}) is None


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"max_attempts": 1.5},
        {"initial_delay": -1},
        {"multiplier": 0.5},
        {"jitter": 2},
    ],
)
def test_bad_settings_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ModelConfigError):
        Backoff(**options)  # type: ignore[arg-type]
