"""Owns the ``Storage`` interface: documents, index entries, the commit log and the catalog.

Storage is deliberately small and knows nothing of schemas or conflicts. The database layer
(``core.database``) decides what to write and validates transactions; storage gives it:

* snapshot reads (``begin_read``): every read of one ``Snapshot`` sees the state as of one
  commit timestamp;
* an exclusive, durable commit step (``begin_write``): inside it the database reads the commits
  other processes made since it last looked, validates, and applies a batch of commits, each
  with its own timestamp, in one durable transaction;
* the catalog: table numbers and index ids, persisted so ids stay valid across restarts.

Invariant: commit timestamps are strictly increasing, and a snapshot at ``ts`` sees exactly the
commits with timestamps ``<= ts``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.errors import RetryableStorageError as RetryableStorageError  # re-exported
from core.errors import StaleLatest as StaleLatest  # re-exported


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentRow:
    """A stored document: id, table number, creation time and the serialized body."""

    id: str
    table: int
    creation_time: float
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexRow:
    """One index entry joined with its document."""

    key: bytes
    value: bytes
    doc: DocumentRow


@dataclass(slots=True, kw_only=True)
class DocumentWrite:
    """The new state of one document in a commit (``data`` is ``None`` for a delete)."""

    id: str
    table: int
    creation_time: float
    data: bytes | None
    removed_entries: list[tuple[int, bytes]] = field(default_factory=list)
    """(index id, key) pairs to delete."""
    added_entries: list[tuple[int, bytes, bytes]] = field(default_factory=list)
    """(index id, key, value) triples to insert."""


@dataclass(slots=True, kw_only=True)
class CommitBatchItem:
    """One transaction's effect, with the timestamp it commits at."""

    ts: int
    writes: Sequence[DocumentWrite]
    log_record: bytes
    """The serialized write set, stored in the commit log for other processes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CatalogTable:
    """A table known to the database: its number, table space and shape digest."""

    number: int
    namespace: str
    name: str
    fingerprint: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CatalogIndex:
    """An index known to the database."""

    id: int
    table: int
    name: str
    spec: str


class Snapshot(ABC):
    """Reads at one commit timestamp; close it when done."""

    ts: int
    catalog_version: int = 0
    """The catalog's version at the snapshot: ``put_catalog`` raises it whenever it changes
    anything, so a process notices indexes another process added or dropped."""

    @abstractmethod
    def get(self, doc_id: str) -> DocumentRow | None:
        """The document with this id, or ``None``."""

    @abstractmethod
    def scan(
        self, index_id: int, lo: bytes, hi: bytes | None, *, reverse: bool, limit: int
    ) -> list[IndexRow]:
        """Up to ``limit`` entries of an index with ``lo <= key < hi``, in key order."""

    @abstractmethod
    def scan_documents(self, lo: str, hi: str, *, reverse: bool, limit: int) -> list[DocumentRow]:
        """Up to ``limit`` documents with ``lo <= id < hi``, in id order.

        Ids begin with their table number, so a table's documents are one range of ids
        (``core.indexes.creation`` reads the creation order this way).
        """

    @abstractmethod
    def scan_entries(
        self, index_id: int, lo: bytes, hi: bytes | None, *, limit: int
    ) -> list[tuple[bytes, bytes, str]]:
        """Up to ``limit`` raw (key, value, doc id) entries, ascending, without documents."""

    @abstractmethod
    def close(self) -> None:
        """End the snapshot (release the read transaction)."""


class WriteSession(ABC):
    """The exclusive commit step: see other processes' commits, then apply a batch durably."""

    @abstractmethod
    def latest_ts(self) -> int:
        """The newest committed timestamp, including other processes' commits."""

    def presume_latest(self, ts: int) -> bool:
        """Take ``ts`` as the newest committed timestamp instead of reading it.

        A backend that can verify the guess as part of ``apply`` (at no extra statement)
        returns ``True``; ``apply`` then raises ``StaleLatest``, applying nothing, if another
        process committed meanwhile. The default returns ``False``: call ``latest_ts``.
        """
        return False

    @abstractmethod
    def read_log(self, after_ts: int) -> list[tuple[int, bytes]]:
        """Commit-log records with ``ts > after_ts``, oldest first."""

    @abstractmethod
    def snapshot(self) -> Snapshot:
        """A reader that sees the latest state and whatever this session applied."""

    @abstractmethod
    def apply(self, items: Sequence[CommitBatchItem]) -> None:
        """Write documents, index entries and log records for each item."""

    @abstractmethod
    def put_catalog(
        self, tables: Sequence[CatalogTable], indexes: Sequence[CatalogIndex], drop: Sequence[int]
    ) -> None:
        """Insert or update catalog rows; delete the entries of the index ids in ``drop``.

        Raises the catalog version when it changes anything.
        """

    @abstractmethod
    def prune_log(self, before_ts: int) -> None:
        """Delete commit-log records older than ``before_ts`` (keeping the newest)."""


class Storage(ABC):
    """A storage backend. Implementations: ``SQLiteStorage``, ``PostgresStorage``."""

    url: str = ""
    inline_reads: bool = False
    """Whether ``begin_read`` and snapshot reads never wait on a pool or a lock, so a server
    may run quick queries on its event loop; otherwise they run in worker threads."""

    @abstractmethod
    def open(self) -> None:
        """Create the backing tables if needed and connect."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    @abstractmethod
    def begin_read(self) -> Snapshot:
        """Start a snapshot at the newest committed timestamp."""

    @abstractmethod
    def begin_write(self, *, timeout: float | None = None) -> WriteSessionContext:
        """Enter the exclusive commit step (a context manager yielding a ``WriteSession``).

        Leaving it normally makes everything applied durable; an exception rolls it back.
        Raises ``TimeoutError`` when the lock cannot be had within ``timeout`` seconds.
        """

    def begin_write_from(self, snapshot: Snapshot) -> WriteSessionContext | None:
        """The commit step continuing an open snapshot's read transaction, if this backend can.

        Called by a commit that finds no other commit in progress: where the snapshot's read
        transaction can become the write transaction (nothing was committed since it began),
        that saves ending it and beginning another. The returned context owns the snapshot
        from then on (closing the snapshot afterwards does nothing); when the snapshot is no
        longer the newest state, the context ends it and begins the commit step as
        ``begin_write`` does. ``None`` (the default): the caller closes the snapshot and calls
        ``begin_write``.
        """
        return None

    @abstractmethod
    def load_catalog(self) -> tuple[list[CatalogTable], list[CatalogIndex]]:
        """All catalog rows."""

    def read_commits(self, after_ts: int) -> list[tuple[int, bytes]]:
        """Commit-log records with ``ts > after_ts``, oldest first, for catching up.

        A gap-free run of the log. Backends that can read it without the exclusive commit step
        override this; the default enters the commit step.
        """
        with self.begin_write() as w:
            return w.read_log(after_ts)

    def wait_for_commit(self, after_ts: int, timeout: float) -> bool:
        """Block until a commit newer than ``after_ts`` may exist (another process's).

        Returns True if woken by a notification. The default polls nothing and just reports
        False after the timeout; backends with a notification channel override it.
        """
        return False

    def files_dir(self) -> str | None:
        """A folder for file blobs beside the database, or ``None`` to keep them in it."""
        return None

    def is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc``, raised by this storage, may pass if the work is tried again.

        The scheduler retries a job that failed this way instead of failing it. The base
        knows the backend-neutral cases (``RetryableStorageError``, a lock ``TimeoutError``);
        each backend adds its driver's errors.
        """
        return isinstance(exc, RetryableStorageError | TimeoutError)


class WriteSessionContext(ABC):
    """Context manager returned by ``Storage.begin_write``."""

    @abstractmethod
    def __enter__(self) -> WriteSession: ...

    @abstractmethod
    def __exit__(self, *exc: Any) -> None: ...


def iter_batches(rows: list[IndexRow]) -> Iterator[IndexRow]:
    """Iterate a fetched batch (a seam for backends that stream)."""
    return iter(rows)
