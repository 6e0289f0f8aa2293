"""Owns function call logs: one record per call, with what the handler printed and logged.

While an app's services run (a server, a worker, a client with its runtime), every top-level
call -- client calls, scheduled jobs, crons -- becomes a ``CallRecord``: path, kind,
component, duration, outcome (``"success"``, ``"app_error"`` for an expected ``AppError``,
``"error"``), the error, and the lines the handler wrote with ``print`` or ``logging``
(captured per call through a context variable, so concurrent calls never mix; the lines still
reach the terminal). Records are buffered and written in batches, one transaction every
``FLUSH_SECONDS``, to the ``_function_logs`` system table, so ``capsule logs --follow`` in any
process on the same database sees them. Records older than ``RETENTION_SECONDS`` are deleted.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import anyio
import anyio.to_thread

from core.database.query import Query
from core.errors import Abandoned, AppError
from core.functions import KIND_VALUE
from core.schema import Table
from core.services import Service
from core.system_tables import SYSTEM_NAMESPACE

if TYPE_CHECKING:
    from core.database.transaction import Transaction
    from core.execution import Executor, Target
    from core.runtime import Runtime

LOGS_TABLE = "_function_logs"
"""One document per logged call."""

# One document per flush of one process: a batch of call records (far cheaper to write than a
# document per call). ``ts`` is the flush time.
LOGS_TABLE_SHAPE = Table({"ts": float, "process": str, "records": list[dict[str, Any]]}).index(
    "by_ts", ["ts"]
)
"""The ``_function_logs`` table (declared by ``CallLogService``)."""

FLUSH_SECONDS = 0.2
"""How often buffered records are written."""
RETENTION_SECONDS = 24 * 3600.0
"""Records older than this are deleted."""
MAX_LINES = 200
"""Lines kept per call (the rest are counted in one last line)."""
MAX_LINE_CHARS = 2000
"""Characters kept per line."""
MAX_CALL_CHARS = 16_000
"""Characters of output kept per call (the rest are counted in one last line)."""
BATCH_CHARS = 400_000
"""Roughly the most output one stored batch holds (documents are limited to 1 MiB)."""
BATCH_RECORDS = 2000
"""The most records one stored batch holds."""
MAX_BUFFERED = 10_000
"""Records kept in memory when writes fall behind (the oldest are dropped)."""

SUCCESS, APP_ERROR, ERROR = "success", "app_error", "error"
"""Call outcomes."""

logger = logging.getLogger("capsule.logs")
_PROCESS = f"{socket.gethostname()}:{os.getpid()}"


@dataclass(slots=True, kw_only=True)
class CallRecord:
    """One logged call."""

    ts: float
    """Wall-clock time the call ended (seconds since the epoch)."""
    path: str
    kind: str
    component: str
    """The component instance's mount path (``""``: the app's own function)."""
    duration_ms: float
    outcome: str
    """``"success"``, ``"app_error"`` (an ``AppError``: an expected outcome) or ``"error"``."""
    error: str | None
    lines: list[str]
    """What the handler printed or logged, one entry per line."""
    process: str = _PROCESS

    def as_value(self) -> dict[str, Any]:
        """The record as stored in a ``_function_logs`` batch."""
        return {
            "ts": self.ts,
            "path": self.path,
            "kind": self.kind,
            "component": self.component,
            "duration_ms": self.duration_ms,
            "outcome": self.outcome,
            "error": self.error,
            "lines": self.lines,
            "process": self.process,
        }


@dataclass(slots=True)
class _Capture:
    lines: list[str] = field(default_factory=list)
    partial: str = ""
    dropped: int = 0
    chars: int = 0

    def add(self, line: str) -> None:
        if len(self.lines) < MAX_LINES and self.chars < MAX_CALL_CHARS:
            line = line[:MAX_LINE_CHARS]
            self.chars += len(line)
            self.lines.append(line)
        else:
            self.dropped += 1

    def write(self, text: str) -> None:
        parts = (self.partial + text).split("\n")
        self.partial = parts.pop()
        for line in parts:
            self.add(line)

    def finish(self) -> list[str]:
        if self.partial:
            self.add(self.partial)
            self.partial = ""
        if self.dropped:
            self.lines.append(f"... {self.dropped:,} more line(s)")
        return self.lines


_current: contextvars.ContextVar[_Capture | None] = contextvars.ContextVar(
    "capsule_call_capture", default=None
)


class _TeeStream:
    """``sys.stdout`` while call logs are on: a copy of each call's output goes to its record.

    A plain object delegating to the stream it wraps (not an ``io`` subclass, whose finalizer
    would flush and close the wrapped stream).
    """

    def __init__(self, target: TextIO):
        self.target = target

    def write(self, text: str) -> int:
        capture = _current.get()
        if capture is not None:
            capture.write(text)
        return self.target.write(text)

    def flush(self) -> None:
        self.target.flush()

    def __getattr__(self, name: str) -> Any:
        if name == "target":  # not set yet: never recurse
            raise AttributeError(name)
        return getattr(self.target, name)


class _CaptureHandler(logging.Handler):
    """Copies log records made inside a call into that call's record."""

    def emit(self, record: logging.LogRecord) -> None:
        capture = _current.get()
        if capture is None or record.name.startswith("capsule."):
            return
        try:
            capture.add(f"{record.levelname} {record.name}: {record.getMessage()}")
        except Exception:  # a bad log call must not break the function
            self.handleError(record)


def _ensure_tee() -> None:
    """Put the tee in front of ``sys.stdout`` (again, if something replaced it since)."""
    out = sys.stdout
    if out is not None and not isinstance(out, _TeeStream):
        sys.stdout = _TeeStream(out)


class _Installed:
    """The process-wide hooks (stdout tee, root log handler), shared by every call log."""

    lock = threading.Lock()
    users = 0
    handler = _CaptureHandler()

    @classmethod
    def acquire(cls) -> None:
        with cls.lock:
            cls.users += 1
            if cls.users == 1:
                _ensure_tee()
                logging.getLogger().addHandler(cls.handler)

    @classmethod
    def release(cls) -> None:
        with cls.lock:
            cls.users -= 1
            if cls.users == 0:
                out = sys.stdout
                if isinstance(out, _TeeStream):
                    sys.stdout = out.target
                logging.getLogger().removeHandler(cls.handler)


class CallLog:
    """The call log of one runtime: records calls while its services run, stored in batches."""

    def __init__(self, executor: Executor):
        self.executor = executor
        self.capturing = False
        """Whether calls are recorded, with their output (while the services run)."""
        self.recent: collections.deque[CallRecord] = collections.deque(maxlen=1000)
        """The latest records of this process (for in-process viewers)."""
        self.listeners: list[Callable[[CallRecord], None]] = []
        """Called with each new record (in the calling thread; keep it quick)."""
        self._pending: collections.deque[CallRecord] = collections.deque(maxlen=MAX_BUFFERED)
        self._last_prune = 0.0

    def span(self, target: Target) -> contextlib.AbstractContextManager[None]:
        """A block recording the call run inside it (a no-op unless the services run)."""
        if not self.capturing:
            return _NO_SPAN
        return _Span(self, target)

    def add(self, record: CallRecord) -> None:
        """Keep a record: in memory now, in the database at the next flush."""
        self.recent.append(record)
        self._pending.append(record)
        for fn in list(self.listeners):
            try:
                fn(record)
            except Exception:
                logger.exception("a call log listener failed")

    def _batch(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        chars = 0
        while self._pending and len(batch) < BATCH_RECORDS and chars < BATCH_CHARS:
            record = self._pending.popleft()
            chars += sum(map(len, record.lines)) + len(record.error or "") + 200
            batch.append(record.as_value())
        return batch

    def flush(self) -> int:
        """Write the buffered records (one document per batch) and prune old ones; how many."""
        written = 0
        while True:
            batch = self._batch()
            now = time.time()
            prune = now - self._last_prune > 60.0
            if not batch and not prune:
                return written
            self._write(batch, now - RETENTION_SECONDS if prune else None)
            written += len(batch)
            if prune:
                self._last_prune = now
            if not batch:
                return written

    def _write(self, batch: list[dict[str, Any]], prune_before: float | None) -> None:
        ex = self.executor
        space = ex.db.catalog.space(SYSTEM_NAMESPACE)

        def attempt(txn: Transaction) -> None:
            if batch:
                doc = {"ts": time.time(), "process": _PROCESS, "records": batch}
                txn.insert(space, LOGS_TABLE, doc)
            if prune_before is not None:
                old = (
                    Query(txn, space, space.table(LOGS_TABLE))
                    .with_index("by_ts", lambda q: q.lt("ts", prune_before))
                    .take(200)
                )
                for stale in old:
                    txn.delete(space, stale["_id"])

        ex.run_transaction(attempt, label="call logs")


_NO_SPAN = contextlib.nullcontext()


class _Span:
    """One recorded call: output captured through a context variable, timed, outcome kept."""

    __slots__ = ("log", "target", "capture", "token", "start")

    def __init__(self, log: CallLog, target: Target):
        self.log = log
        self.target = target

    def __enter__(self) -> None:
        _ensure_tee()
        self.capture = _Capture()
        self.token = _current.set(self.capture)
        self.start = time.perf_counter()

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        duration = time.perf_counter() - self.start
        _current.reset(self.token)
        if isinstance(exc, Abandoned):
            return  # a lost race, given up on purpose: another runner made (and logs) the call
        outcome, error = SUCCESS, None
        if exc is not None:
            outcome = APP_ERROR if isinstance(exc, AppError) else ERROR
            error = f"{type(exc).__name__}: {exc}"
        ref = self.target.ref
        self.log.add(
            CallRecord(
                ts=time.time(),
                path=ref.path,
                kind=KIND_VALUE[ref.kind],
                component=self.target.namespace,
                # Whole microseconds: ``round(x, 3)`` formats the float, ~2 µs a call.
                duration_ms=int(duration * 1_000_000 + 0.5) / 1000,
                outcome=outcome,
                error=error,
                lines=self.capture.finish(),
            )
        )


class CallLogService(Service):
    """Keeps ``_function_logs``: records calls while the services run.

    Records are flushed every ``FLUSH_SECONDS``, and once more as the services stop.
    """

    tables = {LOGS_TABLE: LOGS_TABLE_SHAPE}

    def __init__(self, runtime: Runtime):
        super().__init__(runtime)
        self.log = CallLog(runtime.executor)
        """The runtime's call log."""

    async def run(self) -> None:
        """Record calls and flush them every ``FLUSH_SECONDS`` until cancelled."""
        log = self.log
        _Installed.acquire()
        log.capturing = True
        try:
            while True:
                await anyio.sleep(FLUSH_SECONDS)
                try:
                    await anyio.to_thread.run_sync(log.flush)
                except Exception:
                    logger.exception("writing call logs failed")
        finally:
            log.capturing = False
            _Installed.release()
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await anyio.to_thread.run_sync(log.flush)


def call_log_of(runtime: Runtime) -> CallLog:
    """The call log of an open runtime (``CallLogService``, which every app runs)."""
    return runtime.service(CallLogService).log


# -- reading -------------------------------------------------------------------------------------


def read_records(
    executor: Executor, *, since: float | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Stored call records, oldest first (``_id`` names each one).

    With ``since``: those of batches written at or after it; else about the latest ``limit``.
    """
    space = executor.db.catalog.space(SYSTEM_NAMESPACE)
    txn = executor.db.transaction(now=executor.clock.time())
    try:
        query = Query(txn, space, space.table(LOGS_TABLE))
        if since is None:
            batches: list[dict[str, Any]] = []
            count = 0
            for doc in query.with_index("by_ts").order("desc"):
                batches.append(doc)
                count += len(doc["records"])
                if count >= limit:
                    break
            batches.reverse()
        else:
            batches = query.with_index("by_ts", lambda q: q.gte("ts", since)).collect()
    finally:
        txn.close()
    out = [
        {**rec, "_id": f"{doc['_id']}/{n}"}
        for doc in batches
        for n, rec in enumerate(doc["records"])
    ]
    return out if since is not None else out[-limit:] if limit > 0 else []


__all__ = [
    "APP_ERROR",
    "ERROR",
    "LOGS_TABLE",
    "LOGS_TABLE_SHAPE",
    "SUCCESS",
    "CallLog",
    "CallLogService",
    "CallRecord",
    "call_log_of",
    "read_records",
]
