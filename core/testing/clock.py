"""Owns ``ManualClock``: time that moves only when a test says so."""

from __future__ import annotations

import threading
import time

from core.errors import UserError


class ManualClock:
    """A clock for tests: ``time()`` stays put until ``advance(seconds)``."""

    def __init__(self, start: float | None = None):
        self._now = time.time() if start is None else float(start)
        self._lock = threading.Lock()

    def time(self) -> float:
        """The current manual time, in seconds since the epoch."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward; return the new time."""
        if seconds < 0:
            raise UserError(f"A manual clock cannot go back in time ({seconds} s).")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, timestamp: float) -> None:
        """Jump to an absolute time (not before the current one)."""
        if timestamp < self._now:
            raise UserError("A manual clock cannot go back in time.")
        self._now = float(timestamp)
