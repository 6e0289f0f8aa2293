"""Owns one generation's link to the component: the loop's ``Persistence`` over ``ctx``.

``ComponentPersistence`` runs in the generating action. Stream parts are buffered and
written as delta rows at most every ``throttle`` seconds (a timer flushes a tail that waits,
and one write is in flight at a time); each step's save carries the buffered parts, so the
final message and the stream's end commit together. A write that finds the generation
aborted makes the next ``emit`` or ``save_step`` raise ``GenerationAbortedError``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio

from components.agent.errors import GenerationAbortedError
from components.agent.parts import Part, PartEncoder, compress
from core import call


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSettings:
    """How a generation writes."""

    stream: bool = False
    """Whether stream parts are persisted."""
    throttle: float = 0.25
    """Seconds between delta writes (0: write every part as soon as possible)."""
    lease: float = 600.0
    """Seconds a pending message may go without a write before the sweeper fails it."""
    cleanup_delay: float = 300.0
    """Seconds an ended stream's deltas are kept."""


class ComponentPersistence:
    """The loop's ``Persistence`` for one generation, through the component's mutations.

    Use it as ``async with ComponentPersistence(...) as store:`` (the context owns the
    flush timer).
    """

    def __init__(
        self,
        ctx: Any,
        handle: Any,
        *,
        start: dict[str, Any],
        thread_id: str,
        agent_name: str | None,
        model_name: str | None,
        settings: RunSettings,
        costs: Callable[[dict[str, Any]], float | None] | None = None,
    ):
        self._ctx = ctx
        self._handle = handle
        self.pending_id: str | None = start["pending_id"]
        self._create = {
            "thread_id": thread_id,
            "user_id": start.get("user_id"),
            "order": start["order"],
            "step_order": start["step_order"],
            "agent_name": agent_name,
            "model": model_name,
        }
        self._settings = settings
        self._costs = costs
        self.stream_id: str | None = None
        self._cursor = 0
        self._buffer: list[Part] = []
        self._last_write = 0.0
        self._lock = anyio.Lock()
        self._aborted = False
        self._timer = False
        self._error: Exception | None = None
        self._group: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> ComponentPersistence:
        if self._settings.stream and self._settings.throttle > 0:  # only timers need a group
            self._group = anyio.create_task_group()
            await self._group.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        group, self._group = self._group, None
        if group is not None:
            # The body's exception is not the timers' business: it propagates as it is.
            group.cancel_scope.cancel()
            await group.__aexit__(None, None, None)
        return None

    def _call(self, name: str, args: dict[str, Any]) -> Any:
        return call(self._ctx, getattr(self._handle, name), args)

    def _check(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._aborted:
            raise GenerationAbortedError("stopped by another client")

    def _take_delta(
        self, extra: Sequence[Part] = (), *, final: bool = False
    ) -> dict[str, Any] | None:
        parts = compress([*self._buffer, *extra])
        self._buffer = []
        if not parts and not (final and self.stream_id is not None):
            return None
        delta = {"stream_id": self.stream_id, "start": self._cursor, "parts": parts}
        self._cursor += len(parts)
        return delta

    def _create_args(self) -> dict[str, Any] | None:
        return self._create if self.stream_id is None else None

    async def emit(self, parts: list[Part]) -> None:
        """Buffer parts; write them when the throttle allows (or soon after, by a timer)."""
        self._check()
        if not self._settings.stream or not parts:
            return
        self._buffer.extend(parts)
        wait = self._last_write + self._settings.throttle - time.monotonic()
        if wait <= 0 and not self._lock.locked():
            await self._flush()
            self._check()
        elif not self._timer and self._group is not None:
            self._timer = True
            self._group.start_soon(self._flush_later, max(wait, 0.0))

    async def _flush_later(self, wait: float) -> None:
        await anyio.sleep(wait)
        self._timer = False
        try:
            await self._flush()
        except Exception as exc:  # the loop's next write reports it
            self._error = exc

    async def _flush(self) -> None:
        async with self._lock:
            delta = self._take_delta()
            if delta is None or self._aborted:
                return
            self._last_write = time.monotonic()
            result = await self._call(
                "add_delta",
                {
                    "delta": delta,
                    "create_stream": self._create_args(),
                    "pending_id": self.pending_id,
                    "lease": self._settings.lease,
                },
            )
            self.stream_id = result["stream_id"] or self.stream_id
            if not result["ok"]:
                self._aborted = True

    async def save_step(self, messages: list[dict[str, Any]], *, more: bool) -> list[str]:
        """Save a step (with the buffered parts) in place of the pending placeholder."""
        self._check()
        async with self._lock:
            delta = self._take_delta(final=True) if self._settings.stream else None
            costs = [self._costs(m) if self._costs else None for m in messages]
            result = await self._call(
                "save_step",
                {
                    "pending_id": self.pending_id,
                    "messages": messages,
                    "more": more,
                    "lease": self._settings.lease,
                    "delta": delta,
                    "create_stream": self._create_args() if delta else None,
                    "costs": costs,
                    "cleanup_delay": self._settings.cleanup_delay,
                },
            )
            self._last_write = time.monotonic()
            if result.get("stream_id"):
                self.stream_id = result["stream_id"]
        if result["aborted"]:
            self._aborted = True
            raise GenerationAbortedError("stopped by another client")
        self.pending_id = result.get("pending_id")
        ids: list[str] = result["ids"]
        return ids

    async def fail(self, error: str, *, partial_text: str, aborted: bool = False) -> None:
        """Fail the placeholder (keeping the partial text) and end the stream."""
        async with self._lock:
            extra = PartEncoder.error(error) if self._settings.stream and not aborted else []
            delta = self._take_delta(extra, final=True) if self._settings.stream else None
            await self._call(
                "fail_generation",
                {
                    "pending_id": self.pending_id,
                    "error": error,
                    "partial_text": partial_text,
                    "aborted": aborted,
                    "delta": delta,
                    "create_stream": self._create_args() if delta else None,
                    "cleanup_delay": self._settings.cleanup_delay,
                },
            )
            self.pending_id = None
