"""Owns ``FaultyStorage``: a ``Storage`` wrapper that fails or observes chosen points in tests.

Fault injection wraps the real backend instead of mocking it, so the database above runs its
production code paths: ``FaultyStorage(SQLiteStorage(...))`` behaves exactly like the storage
it wraps until told to fail the next commit steps, and counts the index rows snapshots return
(to check that a query read only what it needed).

``fail_at(point)`` fails one named point of the commit path (``COMMIT_POINTS``, in order):
raising an error, killing the process with SIGKILL (``kill=True``), or calling a hook there
(to drop a connection, say). Whatever happens at a point, a reopened database must hold the
state before the transaction or after it, never a mix.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

from core.errors import UserError
from core.storage.base import (
    CatalogIndex,
    CatalogTable,
    CommitBatchItem,
    DocumentRow,
    DocumentWrite,
    IndexRow,
    Snapshot,
    Storage,
    WriteSession,
    WriteSessionContext,
)

COMMIT_POINTS = ("begin", "documents", "entries", "apply", "commit", "committed")
"""The commit path's fault points, in order:

* ``begin``: entering the commit step, before the database reads the log and validates;
* ``documents``: the batch's documents written, none of their index entries;
* ``entries``: documents and index entries of the first half of each transaction's writes;
* ``apply``: the whole batch applied (documents, entries, log records), not yet committed;
* ``commit``: at the storage commit (the fsync), which then does not happen;
* ``committed``: just after the durable commit, before the database hears of it.
"""


class FaultyStorage(Storage):
    """Wraps a storage; ``fail_commits(n)`` makes the next ``n`` commit steps raise."""

    def __init__(self, inner: Storage):
        self.inner = inner
        self.url = inner.url
        self.inline_reads = inner.inline_reads
        self.rows_scanned = 0
        """Index rows returned by ``Snapshot.scan`` so far (reset it freely)."""
        self._failures: list[BaseException] = []
        self._points: dict[str, list[Callable[[Any], None]]] = {}
        self.faults = 0
        """Faults injected so far (by ``fail_at`` and ``fail_commits``)."""

    def fail_commits(self, count: int = 1, error: BaseException | None = None) -> None:
        """Make the next ``count`` commit steps raise ``error`` after applying (rolled back)."""
        self._failures += [error or OSError("injected storage fault")] * count

    def fail_at(
        self,
        point: str,
        *,
        times: int = 1,
        error: BaseException | None = None,
        kill: bool = False,
        hook: Callable[[Any], None] | None = None,
    ) -> None:
        """Fail the next ``times`` passes through ``point`` (one of ``COMMIT_POINTS``).

        By default with ``error`` (an ``OSError``); ``kill=True`` sends the process SIGKILL
        there; ``hook(session)`` is called with the wrapped storage's write session (or
        ``None`` at ``begin``) and may raise or break its connection.

        Raises:
            UserError: ``point`` is not a commit point.
        """
        if point not in COMMIT_POINTS:
            raise UserError(f"{point!r} is not a commit point; use one of {COMMIT_POINTS}.")
        if hook is None:
            failure = error or OSError(f"injected storage fault at {point}")

            def hook(_: Any) -> None:
                if kill:
                    os.kill(os.getpid(), signal.SIGKILL)
                raise failure

        self._points.setdefault(point, []).extend([hook] * times)

    def armed(self, point: str) -> bool:
        """Whether the next pass through ``point`` fails."""
        return bool(self._points.get(point))

    def _fire(self, point: str, session: Any) -> None:
        hooks = self._points.get(point)
        if hooks:
            self.faults += 1
            hooks.pop(0)(session)

    # -- Storage ----------------------------------------------------------------------------

    def open(self) -> None:
        """Open the wrapped storage."""
        self.inner.open()

    def close(self) -> None:
        """Close the wrapped storage."""
        self.inner.close()

    def begin_read(self) -> Snapshot:
        """A counting snapshot of the wrapped storage."""
        return _CountingSnapshot(self, self.inner.begin_read())

    def begin_write(self, *, timeout: float | None = None) -> WriteSessionContext:
        """The wrapped commit step, failing when told to."""
        return _FaultyWrite(self, self.inner.begin_write(timeout=timeout))

    def load_catalog(self) -> tuple[list[CatalogTable], list[CatalogIndex]]:
        """The wrapped catalog."""
        return self.inner.load_catalog()

    def read_commits(self, after_ts: int) -> list[tuple[int, bytes]]:
        """The wrapped commit log."""
        return self.inner.read_commits(after_ts)

    def wait_for_commit(self, after_ts: int, timeout: float) -> bool:
        """The wrapped notification channel."""
        return self.inner.wait_for_commit(after_ts, timeout)

    def files_dir(self) -> str | None:
        """The wrapped blob folder."""
        return self.inner.files_dir()

    def is_transient(self, exc: BaseException) -> bool:
        """The wrapped backend's judgement."""
        return self.inner.is_transient(exc)


class _CountingSnapshot(Snapshot):
    def __init__(self, owner: FaultyStorage, inner: Snapshot):
        self._owner = owner
        self._inner = inner
        self.ts = inner.ts
        self.catalog_version = inner.catalog_version

    def get(self, doc_id: str) -> Any:
        return self._inner.get(doc_id)

    def scan(
        self, index_id: int, lo: bytes, hi: bytes | None, *, reverse: bool, limit: int
    ) -> list[IndexRow]:
        rows = self._inner.scan(index_id, lo, hi, reverse=reverse, limit=limit)
        self._owner.rows_scanned += len(rows)
        return rows

    def scan_documents(self, lo: str, hi: str, *, reverse: bool, limit: int) -> list[DocumentRow]:
        rows = self._inner.scan_documents(lo, hi, reverse=reverse, limit=limit)
        self._owner.rows_scanned += len(rows)
        return rows

    def scan_entries(
        self, index_id: int, lo: bytes, hi: bytes | None, *, limit: int
    ) -> list[tuple[bytes, bytes, str]]:
        return self._inner.scan_entries(index_id, lo, hi, limit=limit)

    def close(self) -> None:
        self._inner.close()


class _FaultyWrite(WriteSessionContext):
    def __init__(self, owner: FaultyStorage, inner: WriteSessionContext):
        self._owner = owner
        self._inner = inner

        self._session: WriteSession | None = None

    def __enter__(self) -> WriteSession:
        self._owner._fire("begin", None)
        self._session = self._inner.__enter__()
        return _FaultySession(self._owner, self._session)

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None and self._owner.armed("commit"):
            try:
                self._owner._fire("commit", self._session)
            except BaseException as failure:
                self._inner.__exit__(type(failure), failure, failure.__traceback__)
                raise
        self._inner.__exit__(*exc)
        if exc[0] is None:
            self._owner._fire("committed", self._session)


class _FaultySession(WriteSession):
    def __init__(self, owner: FaultyStorage, inner: WriteSession):
        self._owner = owner
        self._inner = inner

    def latest_ts(self) -> int:
        return self._inner.latest_ts()

    def read_log(self, after_ts: int) -> list[tuple[int, bytes]]:
        return self._inner.read_log(after_ts)

    def snapshot(self) -> Snapshot:
        return self._inner.snapshot()

    def apply(self, items: Sequence[CommitBatchItem]) -> None:
        owner = self._owner
        if owner.armed("documents"):
            self._inner.apply([_documents_only(item) for item in items])
            owner._fire("documents", self._inner)
        if owner.armed("entries"):
            self._inner.apply([_first_half(item) for item in items])
            owner._fire("entries", self._inner)
        self._inner.apply(items)
        owner._fire("apply", self._inner)
        if owner._failures:
            owner.faults += 1
            raise owner._failures.pop(0)

    def put_catalog(
        self, tables: Sequence[CatalogTable], indexes: Sequence[CatalogIndex], drop: Sequence[int]
    ) -> None:
        self._inner.put_catalog(tables, indexes, drop)

    def prune_log(self, before_ts: int) -> None:
        self._inner.prune_log(before_ts)


def _documents_only(item: CommitBatchItem) -> CommitBatchItem:
    writes = [
        DocumentWrite(id=w.id, table=w.table, creation_time=w.creation_time, data=w.data)
        for w in item.writes
    ]
    return CommitBatchItem(ts=item.ts, writes=writes, log_record=item.log_record)


def _first_half(item: CommitBatchItem) -> CommitBatchItem:
    writes = list(item.writes)
    return CommitBatchItem(ts=item.ts, writes=writes[: (len(writes) + 1) // 2], log_record=b"")
