"""Owns ``FaultyStorage``: a ``Storage`` wrapper that fails or observes chosen points in tests.

Fault injection wraps the real backend instead of mocking it, so the database above runs its
production code paths: ``FaultyStorage(SQLiteStorage(...))`` behaves exactly like the storage
it wraps until told to fail the next commit steps, and counts the index rows snapshots return
(to check that a query read only what it needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.storage.base import (
    CatalogIndex,
    CatalogTable,
    CommitBatchItem,
    IndexRow,
    Snapshot,
    Storage,
    WriteSession,
    WriteSessionContext,
)


class FaultyStorage(Storage):
    """Wraps a storage; ``fail_commits(n)`` makes the next ``n`` commit steps raise."""

    def __init__(self, inner: Storage):
        self.inner = inner
        self.url = inner.url
        self.inline_reads = inner.inline_reads
        self.rows_scanned = 0
        """Index rows returned by ``Snapshot.scan`` so far (reset it freely)."""
        self._failures: list[BaseException] = []

    def fail_commits(self, count: int = 1, error: BaseException | None = None) -> None:
        """Make the next ``count`` commit steps raise ``error`` after applying (rolled back)."""
        self._failures += [error or OSError("injected storage fault")] * count

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

    def __enter__(self) -> WriteSession:
        return _FaultySession(self._owner, self._inner.__enter__())

    def __exit__(self, *exc: Any) -> None:
        self._inner.__exit__(*exc)


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
        self._inner.apply(items)
        if self._owner._failures:
            raise self._owner._failures.pop(0)

    def put_catalog(
        self, tables: Sequence[CatalogTable], indexes: Sequence[CatalogIndex], drop: Sequence[int]
    ) -> None:
        self._inner.put_catalog(tables, indexes, drop)

    def prune_log(self, before_ts: int) -> None:
        self._inner.prune_log(before_ts)
