"""Owns ``PostgresStorage``: one PostgreSQL database shared by many app processes.

Tables are the SQLite backend's (documents, index entries, the commit log, the catalog), so
the database layer above behaves identically on both.

How commits are ordered (and why the result is serializable):

* The commit step -- read the other processes' new log records, validate the batch against the
  log, apply it, append its records -- runs in one READ COMMITTED transaction that first takes
  ``pg_advisory_xact_lock(COMMIT_LOCK)``. Only one commit step in the whole cluster of app
  processes runs at a time, and the lock is released only after the transaction committed (and
  became visible), so the next holder's statements see every earlier commit. Timestamps are
  assigned inside the step, after reading the newest one, so they form one strictly increasing
  total order that is also the order in which commits become visible.
* A snapshot is a REPEATABLE READ, READ ONLY transaction whose first statement reads
  ``max(ts)`` from the log. PostgreSQL fixes the transaction's snapshot at that statement, and a
  commit's log row and data rows become visible atomically, so the snapshot sees exactly the
  commits with ``ts <= max(ts)``: a later commit is invisible (its log row would raise the max),
  and an earlier one is visible because it finished before the later one could take the lock.
* Together this is optimistic concurrency control with one serial validator: each transaction
  reads a consistent prefix of the commit order and commits only if nothing after that prefix
  touched its read set, which is serializable. Handlers run in parallel in every process; only
  the short commit step (a handful of round trips and one WAL flush) is serialized.

The step allows roughly 1/(lock hold time) commit batches per second (``bench/postgres.py``
measures it). The hold time is a few round trips plus the commit's WAL flush, because the lock
is released only when the commit is durable and visible: a commit is never visible to another
process before it is durable. So across processes the flush latency of the server's disk bounds
the commit rate, while each process's group commit puts many transactions in one step.
``flush="after_step"`` trades that guarantee for overlapping flushes: the step commits without
waiting for its flush (releasing the lock), then waits for it before returning, so commits are
still acknowledged only once durable, but another process may see one during its flush.
SQLSTATE 40001 and 40P01 (which this scheme should not produce, but a server may) raised in the
commit step become ``RetryableStorageError``, which the database turns into a retry.

New commits are announced with ``NOTIFY capsule_commit, '<ts>'`` inside the commit step; other
processes ``LISTEN`` on one connection each (``wait_for_commit``). The notification is only a
wake-up: the commit log stays the truth, so a lost notification delays an update but never
loses it.

Index keys can be longer than a B-tree entry may be, so each entry is keyed by a prefix of its
key (``kp``) plus a digest of the whole key for long keys (``kh``, empty for short ones). Ordering
by ``(kp, key)`` equals ordering by ``key``, because ``kp`` is a prefix of ``key``.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from core.errors import DatabaseUnavailableError, UserError
from core.storage.base import (
    CatalogIndex,
    CatalogTable,
    CommitBatchItem,
    DocumentRow,
    IndexRow,
    RetryableStorageError,
    Snapshot,
    Storage,
    WriteSession,
    WriteSessionContext,
)

COMMIT_LOCK = 0x43415053554C45
"""The advisory lock key (``"CAPSULE"``) serializing commit steps across processes."""
_DDL_LOCK = COMMIT_LOCK + 1
CHANNEL = "capsule_commit"
"""The NOTIFY channel carrying new commit timestamps."""
KEY_PREFIX = 1024
"""Index keys longer than this are stored under their prefix plus a SHA-256 digest."""
_RETRYABLE = ("40001", "40P01")
FLUSH_MODES = ("in_step", "after_step")

_DDL = """
CREATE TABLE IF NOT EXISTS documents(
    id text COLLATE "C" PRIMARY KEY, tbl integer NOT NULL, ct double precision NOT NULL,
    data bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS index_entries(
    idx integer NOT NULL, kp bytea NOT NULL, kh bytea NOT NULL, key bytea NOT NULL,
    doc text COLLATE "C" NOT NULL, value bytea NOT NULL,
    PRIMARY KEY(idx, kp, kh)
);
CREATE TABLE IF NOT EXISTS commits(ts bigint PRIMARY KEY, data bytea NOT NULL);
CREATE TABLE IF NOT EXISTS catalog_tables(
    number integer PRIMARY KEY, namespace text NOT NULL, name text NOT NULL,
    fingerprint text NOT NULL, UNIQUE(namespace, name)
);
CREATE TABLE IF NOT EXISTS catalog_indexes(
    id integer PRIMARY KEY, tbl integer NOT NULL, name text NOT NULL, spec text NOT NULL,
    UNIQUE(tbl, name)
);
CREATE TABLE IF NOT EXISTS catalog_meta(key text PRIMARY KEY, value bigint NOT NULL);
"""

_LATEST = "SELECT coalesce(max(ts), 0) FROM commits"
_HEAD = (
    "SELECT coalesce(max(ts), 0), "
    "(SELECT value FROM catalog_meta WHERE key = 'version') FROM commits"
)
"""A snapshot's first statement: its commit timestamp and catalog version."""
_BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; " + _HEAD
_BUMP_CATALOG = (
    "INSERT INTO catalog_meta(key, value) VALUES ('version', 1) "
    "ON CONFLICT (key) DO UPDATE SET value = catalog_meta.value + 1"
)
_SCAN = (
    "SELECT e.key, e.value, d.id, d.tbl, d.ct, d.data FROM index_entries e "
    "JOIN documents d ON d.id = e.doc WHERE e.idx = %s AND e.kp >= %s AND e.key >= %s{hi} "
    "ORDER BY e.kp {order}, e.key {order} LIMIT %s"
)
_SCAN_ENTRIES = (
    "SELECT key, value, doc FROM index_entries WHERE idx = %s AND kp >= %s AND key >= %s{hi} "
    "ORDER BY kp, key LIMIT %s"
)
_HI = " AND {p}kp <= %s AND {p}key < %s"
_SCAN_IDS = (
    "SELECT id, tbl, ct, data FROM documents WHERE id >= %s AND id < %s ORDER BY id LIMIT %s"
)
_SCAN_DESC_IDS = _SCAN_IDS.replace("ORDER BY id", "ORDER BY id DESC")


# One statement (one round trip) applies a whole batch. Its data-modifying parts all run, and
# NOTIFY is delivered when (and only if) the transaction commits.
_APPLY = """
WITH del_entries AS (
    DELETE FROM index_entries e
    USING unnest(%(ri)s::int[], %(rkp)s::bytea[], %(rkh)s::bytea[]) AS r(idx, kp, kh)
    WHERE e.idx = r.idx AND e.kp = r.kp AND e.kh = r.kh
), del_docs AS (
    DELETE FROM documents WHERE id = ANY(%(dd)s::text[])
), put_docs AS (
    INSERT INTO documents(id, tbl, ct, data)
    SELECT * FROM unnest(%(di)s::text[], %(dt)s::int[], %(dc)s::float8[], %(dx)s::bytea[])
    ON CONFLICT (id) DO UPDATE SET tbl = excluded.tbl, ct = excluded.ct, data = excluded.data
), put_entries AS (
    INSERT INTO index_entries(idx, kp, kh, key, doc, value)
    SELECT * FROM unnest(%(ai)s::int[], %(akp)s::bytea[], %(akh)s::bytea[], %(ak)s::bytea[],
                         %(ad)s::text[], %(av)s::bytea[])
    ON CONFLICT (idx, kp, kh) DO UPDATE
    SET key = excluded.key, doc = excluded.doc, value = excluded.value
), log AS (
    INSERT INTO commits(ts, data) SELECT * FROM unnest(%(ts)s::bigint[], %(log)s::bytea[])
)
SELECT pg_notify(%(channel)s, %(newest)s)
"""


def split_key(key: bytes) -> tuple[bytes, bytes]:
    """The stored ``(kp, kh)`` of an index key: itself, or its prefix and digest if long."""
    if len(key) <= KEY_PREFIX:
        return key, b""
    return key[:KEY_PREFIX], hashlib.sha256(key).digest()


def _range_params(lo: bytes, hi: bytes | None) -> tuple[Any, ...]:
    # kp >= lo[:P] is implied by key >= lo; it is there so the B-tree range applies.
    if hi is None:
        return (lo[:KEY_PREFIX], lo)
    return (lo[:KEY_PREFIX], lo, hi[:KEY_PREFIX], hi)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, psycopg.Error) and getattr(exc, "sqlstate", None) in _RETRYABLE


def _lost(exc: BaseException) -> bool:
    """Whether ``exc`` is a lost, refused or terminated connection (a restart, a pool timeout).

    The statement on it did not run, and its transaction is gone.
    """
    return isinstance(exc, psycopg.OperationalError) and not _retryable(exc)


def _translated(storage: PostgresStorage | None, exc: BaseException) -> BaseException:
    """What a lost connection becomes: unavailable if no connection came, else retryable."""
    if storage is None:
        return RetryableStorageError(f"the connection to PostgreSQL was lost: {exc}")
    if isinstance(exc, PoolTimeout):
        return DatabaseUnavailableError(
            redact(storage._conninfo),
            reason=f"no connection to the server could be made ({exc})",
            fix="Is PostgreSQL running? The runtime reconnects by itself once it is back.",
        )
    # Idle connections of the pools died with this one: replace them now, not one per call.
    storage._check_pools()
    return RetryableStorageError(f"the connection to PostgreSQL was lost: {exc}")


def _reset(conn: psycopg.Connection[Any], *, commit: bool = False) -> None:
    """End ``conn``'s transaction, if any; a dead connection has none left to end."""
    if conn.closed or conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return
    try:
        conn.execute("COMMIT" if commit else "ROLLBACK")
    except psycopg.OperationalError:
        if commit or not conn.closed and not conn.broken:
            raise


class _PostgresSnapshot(Snapshot):
    """Reads on one connection: its own REPEATABLE READ transaction, or a write session's."""

    __slots__ = ("_conn", "_storage", "ts", "catalog_version")

    def __init__(self, conn: psycopg.Connection[Any], storage: PostgresStorage | None):
        self._conn = conn
        self._storage = storage
        if storage is not None:
            # One round trip: the snapshot is fixed by the SELECT, the first real statement.
            cur = conn.execute(_BEGIN_READ)
            cur.nextset()
        else:
            cur = conn.execute(_HEAD)
        row = cur.fetchone()
        self.ts = int(row[0]) if row else 0
        self.catalog_version = int(row[1] or 0) if row else 0

    def _failed(self, exc: psycopg.OperationalError) -> BaseException:
        # Nothing was written through a snapshot: a lost connection is safe to retry.
        return _translated(self._storage, exc) if _lost(exc) else exc

    def _rows(self, query: Any, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Every row of a read (binary); a lost connection is retryable."""
        try:
            return self._conn.execute(query, params, binary=True).fetchall()
        except psycopg.OperationalError as exc:
            raise self._failed(exc) from exc

    def get(self, doc_id: str) -> DocumentRow | None:
        found = self._rows("SELECT tbl, ct, data FROM documents WHERE id = %s", (doc_id,))
        if not found:
            return None
        row = found[0]
        return DocumentRow(id=doc_id, table=row[0], creation_time=row[1], data=row[2])

    def scan(
        self, index_id: int, lo: bytes, hi: bytes | None, *, reverse: bool, limit: int
    ) -> list[IndexRow]:
        query = _SCAN.format(
            hi="" if hi is None else _HI.format(p="e."), order="DESC" if reverse else "ASC"
        )
        rows = self._rows(query, (index_id, *_range_params(lo, hi), limit))
        return [
            IndexRow(
                key=r[0],
                value=r[1],
                doc=DocumentRow(id=r[2], table=r[3], creation_time=r[4], data=r[5]),
            )
            for r in rows
        ]

    def scan_documents(self, lo: str, hi: str, *, reverse: bool, limit: int) -> list[DocumentRow]:
        rows = self._rows(_SCAN_DESC_IDS if reverse else _SCAN_IDS, (lo, hi, limit))
        return [DocumentRow(id=r[0], table=r[1], creation_time=r[2], data=r[3]) for r in rows]

    def scan_entries(
        self, index_id: int, lo: bytes, hi: bytes | None, *, limit: int
    ) -> list[tuple[bytes, bytes, str]]:
        query = _SCAN_ENTRIES.format(hi="" if hi is None else _HI.format(p=""))
        rows = self._rows(query, (index_id, *_range_params(lo, hi), limit))
        return [(r[0], r[1], r[2]) for r in rows]

    def close(self) -> None:
        storage, self._storage = self._storage, None
        if storage is None:
            return
        try:
            _reset(self._conn, commit=True)
        except psycopg.OperationalError:
            pass  # read only: what was read stands, and the pool drops a dead connection
        finally:
            storage._readers.putconn(self._conn)


class _PostgresWriteSession(WriteSession):
    def __init__(self, conn: psycopg.Connection[Any], latest: int):
        self._conn = conn
        self._latest = latest
        self.wrote = False
        self.newest = 0
        """The newest commit timestamp this session logged."""

    def latest_ts(self) -> int:
        return self._latest

    def read_log(self, after_ts: int) -> list[tuple[int, bytes]]:
        return _read_log(self._conn, after_ts)

    def snapshot(self) -> Snapshot:
        # READ COMMITTED under the commit lock: nobody else can commit, so every statement
        # sees the same state plus what this session applied.
        return _PostgresSnapshot(self._conn, None)

    def apply(self, items: Sequence[CommitBatchItem]) -> None:
        if not items:
            return
        removed: list[tuple[int, bytes, bytes]] = []
        added: dict[tuple[int, bytes, bytes], tuple[bytes, str, bytes]] = {}
        final: dict[str, tuple[int, float, bytes] | None] = {}
        for item in items:
            for w in item.writes:
                for index_id, key in w.removed_entries:
                    removed.append((index_id, *split_key(key)))
                for index_id, key, value in w.added_entries:
                    added[(index_id, *split_key(key))] = (key, w.id, value)
                final[w.id] = None if w.data is None else (w.table, w.creation_time, w.data)
        # Net effect, as in SQLite where every removal precedes every insertion: an entry
        # removed and re-added in one batch ends up added. The sets below are disjoint, so the
        # one statement's parts cannot interfere.
        gone = [k for k in dict.fromkeys(removed) if k not in added]
        upserts = {doc_id: row for doc_id, row in final.items() if row is not None}
        newest = max(item.ts for item in items)
        self._conn.execute(
            _APPLY,
            {
                "ri": [k[0] for k in gone],
                "rkp": [k[1] for k in gone],
                "rkh": [k[2] for k in gone],
                "dd": [doc_id for doc_id, row in final.items() if row is None],
                "di": list(upserts),
                "dt": [r[0] for r in upserts.values()],
                "dc": [r[1] for r in upserts.values()],
                "dx": [r[2] for r in upserts.values()],
                "ai": [k[0] for k in added],
                "akp": [k[1] for k in added],
                "akh": [k[2] for k in added],
                "ak": [v[0] for v in added.values()],
                "ad": [v[1] for v in added.values()],
                "av": [v[2] for v in added.values()],
                "ts": [item.ts for item in items],
                "log": [item.log_record for item in items],
                "channel": CHANNEL,
                "newest": str(newest),
            },
        )
        self._latest = max(self._latest, newest)
        self.newest = max(self.newest, newest)
        self.wrote = True

    def put_catalog(
        self, tables: Sequence[CatalogTable], indexes: Sequence[CatalogIndex], drop: Sequence[int]
    ) -> None:
        with self._conn.pipeline(), self._conn.cursor() as cur:
            if tables or indexes or drop:
                cur.execute(_BUMP_CATALOG)
            if tables:
                cur.executemany(
                    "INSERT INTO catalog_tables(number, namespace, name, fingerprint) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (number) DO UPDATE SET "
                    "namespace = excluded.namespace, name = excluded.name, "
                    "fingerprint = excluded.fingerprint",
                    [(t.number, t.namespace, t.name, t.fingerprint) for t in tables],
                )
            if indexes:
                cur.executemany(
                    "INSERT INTO catalog_indexes(id, tbl, name, spec) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (id) DO UPDATE SET "
                    "tbl = excluded.tbl, name = excluded.name, spec = excluded.spec",
                    [(i.id, i.table, i.name, i.spec) for i in indexes],
                )
            if drop:
                cur.execute("DELETE FROM index_entries WHERE idx = ANY(%s::int[])", (list(drop),))
                cur.execute("DELETE FROM catalog_indexes WHERE id = ANY(%s::int[])", (list(drop),))

    def prune_log(self, before_ts: int) -> None:
        self._conn.execute(
            "DELETE FROM commits WHERE ts < %s AND ts < (SELECT max(ts) FROM commits)",
            (before_ts,),
        )


def _read_log(conn: psycopg.Connection[Any], after_ts: int) -> list[tuple[int, bytes]]:
    rows = conn.execute(
        "SELECT ts, data FROM commits WHERE ts > %s ORDER BY ts", (after_ts,), binary=True
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


class _WriteContext(WriteSessionContext):
    def __init__(self, storage: PostgresStorage, timeout: float | None):
        self._storage = storage
        self._timeout = timeout
        self._conn: psycopg.Connection[Any] | None = None

    def __enter__(self) -> WriteSession:
        storage = self._storage
        try:
            conn = storage._writers.getconn()
        except PoolTimeout as exc:
            raise _translated(storage, exc) from exc
        timeout_ms = 0 if self._timeout is None else max(1, int(self._timeout * 1000))
        try:
            # One round trip. In READ COMMITTED each statement takes a fresh snapshot, so the
            # SELECT after the lock sees every commit made before the lock was granted.
            cur = conn.execute(
                f"BEGIN; SET LOCAL lock_timeout = {timeout_ms}; {storage._step_settings}"
                f"SELECT pg_advisory_xact_lock({COMMIT_LOCK}); {_LATEST}"
            )
            while cur.nextset():
                pass
            row = cur.fetchone()
        except BaseException as exc:
            storage._end(conn, commit=False)
            if isinstance(exc, pg_errors.LockNotAvailable):
                raise TimeoutError(
                    f"the PostgreSQL commit lock was busy for {self._timeout:g} s"
                ) from None
            if _retryable(exc):
                raise RetryableStorageError(str(exc)) from exc
            if _lost(exc):
                raise _translated(storage, exc) from exc
            raise
        self._conn = conn
        storage._local.session = conn
        self._session = _PostgresWriteSession(conn, int(row[0]) if row else 0)
        return self._session

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        storage = self._storage
        storage._local.session = None
        commit = exc_type is None
        try:
            storage._end(conn, commit=commit, wrote=commit and self._session.wrote)
        except psycopg.Error as err:
            if _retryable(err):
                raise RetryableStorageError(str(err)) from err
            if not _lost(err):
                raise
            if commit and self._session.wrote:
                # Lost at COMMIT: it may have happened. Ask the server once it answers.
                committed = storage._committed(self._session.newest)
                if committed:
                    return
                if committed is None:
                    raise DatabaseUnavailableError(
                        redact(storage._conninfo),
                        reason=f"the connection was lost while committing ({err}), and "
                        "whether the commit happened is unknown",
                        fix="Check whether the change is there before repeating it.",
                    ) from err
            raise _translated(storage, err) from err
        if exc is not None and (_retryable(exc) or _lost(exc)):
            raise _translated(storage, exc) from exc


class _Listener:
    """One LISTEN connection per storage; waiters share it (one drains, the others wait)."""

    def __init__(self, conninfo: str):
        self._conninfo = conninfo
        self._cond = threading.Condition()
        self._conn: psycopg.Connection[Any] | None = None
        self._seen = 0
        self._draining = False
        self._closed = False
        self._wake = f"capsule_wake_{uuid.uuid4().hex}"

    def wait(self, after_ts: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                if self._seen > after_ts:
                    return True
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    return False
                if self._draining:
                    self._cond.wait(remaining)
                    continue
                self._draining = True
            failed = False
            try:
                self._drain(remaining)
            except psycopg.Error:
                # The connection broke; reconnect on the next round (the log is the truth).
                self._drop()
                failed = True
            finally:
                with self._cond:
                    self._draining = False
                    self._cond.notify_all()
            if failed:
                with self._cond:
                    self._cond.wait(min(0.5, max(0.0, deadline - time.monotonic())))

    def _drain(self, timeout: float) -> None:
        conn = self._conn
        if conn is None:
            conn = psycopg.connect(
                self._conninfo, autocommit=True, application_name="capsule-listener"
            )
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._wake)))
            self._conn = conn
            # Commits made before we listened are in the log, not in a notification.
            row = conn.execute(_LATEST).fetchone()
            self._saw(int(row[0]) if row else 0)
            return
        for note in conn.notifies(timeout=timeout, stop_after=1):
            if note.channel == CHANNEL:
                self._saw(int(note.payload))

    def _saw(self, ts: int) -> None:
        with self._cond:
            if ts > self._seen:
                self._seen = ts
                self._cond.notify_all()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self, storage: PostgresStorage) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            draining = self._draining
        if draining:
            # Wake the drainer blocked on the socket, then wait for it to let go.
            with storage._writers.connection() as conn:
                conn.execute("SELECT pg_notify(%s, '')", (self._wake,))
            with self._cond:
                self._cond.wait_for(lambda: not self._draining, timeout=5.0)
        self._drop()


class PostgresStorage(Storage):
    """Storage on a PostgreSQL database that several app processes may share.

    Args:
        url: a libpq URL or conninfo string, e.g. ``postgresql://user@host:5432/db``; a URL may
            carry ``capsule_flush=after_step`` to choose ``flush`` (it is not sent to libpq).
        max_readers: connections for snapshots (concurrent queries and mutations).
        max_writers: connections for the commit step and catalog reads; the commit step needs
            one at a time, so a few suffice.
        flush: ``"in_step"`` (default): the commit lock is held through the commit's WAL
            flush, so no process ever sees a commit before it is durable. ``"after_step"``:
            the lock is released before the flush and the step waits for the flush after, so
            flushes of several processes overlap (more commits/s on slow disks); a commit is
            still acknowledged only once durable, but other processes may read it during its
            flush, and a server crash in that window undoes it.
    """

    def __init__(
        self,
        url: str,
        *,
        max_readers: int = 16,
        max_writers: int = 3,
        flush: str | None = None,
    ):
        self.url = url
        self._conninfo, url_flush = _pop_url_option(url, "capsule_flush")
        flush = flush or url_flush or "in_step"
        if flush not in FLUSH_MODES:
            raise UserError(f"flush={flush!r} is not valid; use one of {', '.join(FLUSH_MODES)}.")
        self.flush = flush
        self._step_settings = (
            "SET LOCAL synchronous_commit = off; " if flush == "after_step" else ""
        )
        self.max_readers = max_readers
        self.max_writers = max_writers
        self._readers: ConnectionPool[Any] = self._pool("readers", max_readers)
        self._writers: ConnectionPool[Any] = self._pool("writers", max_writers)
        self._local = threading.local()
        self._listener: _Listener | None = None
        self._listener_lock = threading.Lock()
        self._opened = False
        self._open_lock = threading.Lock()

    def _pool(self, role: str, size: int) -> ConnectionPool[Any]:
        return ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=size,
            kwargs={"autocommit": True, "application_name": f"capsule-{role}"},
            open=False,
            name=f"capsule-{role}",
            num_workers=1,
            timeout=60.0,
        )

    # -- connections ----------------------------------------------------------------------

    def _end(self, conn: psycopg.Connection[Any], *, commit: bool, wrote: bool = False) -> None:
        """Finish a write transaction and give the connection back."""
        try:
            _reset(conn, commit=commit)
            if wrote and self.flush == "after_step":
                # The step committed without waiting for its WAL flush. A transaction that
                # writes WAL commits synchronously, flushing up to its own commit record, which
                # lies after ours: from here on ours is durable and may be acknowledged.
                conn.execute("SELECT pg_logical_emit_message(true, 'capsule', 'flush')")
        finally:
            self._writers.putconn(conn)

    @contextmanager
    def _catalog_conn(self) -> Iterator[psycopg.Connection[Any]]:
        # Inside a write session, read through it: the catalog rows it wrote are uncommitted.
        session = getattr(self._local, "session", None)
        if session is not None:
            yield session
            return
        with self._writers.connection() as conn:
            yield conn

    # -- Storage --------------------------------------------------------------------------

    def open(self) -> None:
        """Open the pools and create the tables if needed (safe from many processes at once)."""
        with self._open_lock:
            if self._opened:
                return
            check_reachable(self._conninfo)
            self._readers.open(wait=True, timeout=30.0)
            self._writers.open(wait=True, timeout=30.0)
            with self._writers.connection() as conn, conn.transaction():
                # Several processes may start at once: CREATE TABLE IF NOT EXISTS alone races.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
                conn.execute(_DDL)
            self._opened = True

    def is_transient(self, exc: BaseException) -> bool:
        """Serialization failures, deadlocks and lost connections may pass on a retry."""
        return (
            super().is_transient(exc)
            or _retryable(exc)
            or isinstance(exc, psycopg.OperationalError)
        )

    def close(self) -> None:
        """Close the listener and the pools; ``open`` may be called again."""
        with self._listener_lock:
            listener, self._listener = self._listener, None
        if listener is not None and self._opened:
            listener.close(self)
        self._readers.close()
        self._writers.close()
        self._opened = False
        # Pools cannot be reopened once closed; fresh ones allow open() after close().
        self._readers = self._pool("readers", self.max_readers)
        self._writers = self._pool("writers", self.max_writers)

    def begin_read(self) -> Snapshot:
        """A REPEATABLE READ snapshot at the newest commit.

        A dead pooled connection (the server restarted) is replaced and the snapshot taken
        on a fresh one: nothing was read yet, so that is transparent.

        Raises:
            DatabaseUnavailableError: no connection could be made within the pool's timeout.
            RetryableStorageError: connections kept failing.
        """
        for _ in range(3):
            try:
                conn = self._readers.getconn()
            except PoolTimeout as exc:
                raise _translated(self, exc) from exc
            try:
                return _PostgresSnapshot(conn, self)
            except BaseException as exc:
                try:
                    _reset(conn)
                finally:
                    self._readers.putconn(conn)  # a dead connection is discarded here
                if not _lost(exc):
                    raise
                failure = exc
                self._check_pools()
        raise _translated(self, failure) from failure

    def _check_pools(self) -> None:
        """Replace the pools' dead idle connections (after a restart all of them are)."""
        for pool in (self._readers, self._writers):
            try:
                pool.check()
            except psycopg.Error:  # pragma: no cover - check() logs and replaces on its own
                pass

    def _committed(self, ts: int) -> bool | None:
        """Whether the step that logged ``ts`` committed; ``None`` if the server cannot say.

        Asked when the step's connection was lost at COMMIT; the server has a few seconds to
        answer (it may be restarting).

        The commit lock is held until that step's transaction ended either way, so taking it
        waits for the outcome. (A log pruned to fewer than the retention's seconds could
        drop the record meanwhile: retention is 60 s by default, far beyond this check.)
        """
        deadline = time.monotonic() + 10.0
        while True:
            try:
                with (
                    psycopg.connect(
                        self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT
                    ) as conn,
                    conn.transaction(),
                ):
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (COMMIT_LOCK,))
                    row = conn.execute("SELECT 1 FROM commits WHERE ts = %s", (ts,)).fetchone()
                    return row is not None
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.2)  # the server is restarting: ask again

    def begin_write(self, *, timeout: float | None = None) -> WriteSessionContext:
        """The commit step: a transaction holding the cluster-wide commit lock."""
        return _WriteContext(self, timeout)

    def load_catalog(self) -> tuple[list[CatalogTable], list[CatalogIndex]]:
        """All catalog rows (including those this thread's open write session wrote)."""
        with self._catalog_conn() as conn:
            tables = [
                CatalogTable(number=r[0], namespace=r[1], name=r[2], fingerprint=r[3])
                for r in conn.execute(
                    "SELECT number, namespace, name, fingerprint FROM catalog_tables"
                )
            ]
            indexes = [
                CatalogIndex(id=r[0], table=r[1], name=r[2], spec=r[3])
                for r in conn.execute("SELECT id, tbl, name, spec FROM catalog_indexes")
            ]
        return tables, indexes

    def read_commits(self, after_ts: int) -> list[tuple[int, bytes]]:
        """Commit-log records with ``ts > after_ts``, read without the commit lock."""
        # One statement, one snapshot: commits become visible in timestamp order, so this is
        # a gap-free run of the log without taking the commit lock.
        with self._catalog_conn() as conn:
            return _read_log(conn, after_ts)

    def wait_for_commit(self, after_ts: int, timeout: float) -> bool:
        """Block until a commit newer than ``after_ts`` was announced (or is in the log).

        Cheap when one is already known: that check is in memory. Every process's commits,
        this one's included, wake waiters.
        """
        with self._listener_lock:
            if not self._opened:
                return False
            listener = self._listener
            if listener is None:
                listener = self._listener = _Listener(self._conninfo)
        return listener.wait(after_ts, timeout)


CONNECT_TIMEOUT = 5
"""Seconds the first, direct connection may take before the database counts as unreachable."""


def check_reachable(conninfo: str) -> None:
    """Connect once, directly, so a bad URL fails fast with libpq's reason (not a pool timeout).

    Raises:
        DatabaseUnavailableError: the server is unreachable, or refuses the user or database.
    """
    try:
        psycopg.connect(conninfo, connect_timeout=CONNECT_TIMEOUT, autocommit=True).close()
    except psycopg.Error as exc:
        reason = _reason(str(exc))
        raise DatabaseUnavailableError(redact(conninfo), reason=reason, fix=_fix(reason)) from None


def _reason(message: str) -> str:
    """The cause libpq gave, on one line: the last "failed:" part, without "FATAL:"."""
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    cause = first.rpartition(" failed: ")[2] or first
    cause = cause.removeprefix("connection failed: ")
    return " ".join(cause.replace("FATAL:", "").split())


def _fix(reason: str) -> str:
    if reason.startswith("database ") and reason.endswith("does not exist"):
        name = reason.split('"')[1] if reason.count('"') >= 2 else "the database"
        return f"Create it (createdb {name}) or fix the URL (CAPSULE_DB_URL or --db)."
    if "role" in reason or "password" in reason or "authentication" in reason:
        return "Check the user and password in the URL (CAPSULE_DB_URL or --db)."
    if "refused" in reason or "resolve" in reason or "timeout" in reason or "timed out" in reason:
        return (
            "Is PostgreSQL running there? Check the host and port in the URL "
            "(CAPSULE_DB_URL or --db)."
        )
    return "Check the URL (CAPSULE_DB_URL or --db)."


def redact(conninfo: str) -> str:
    """A URL or conninfo string with its password replaced by ``***``."""
    if conninfo.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(conninfo)
        if parts.password is None:
            return conninfo
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    return re.sub(r"(password\s*=\s*)(\S+)", r"\1***", conninfo)


def _pop_url_option(url: str, name: str) -> tuple[str, str | None]:
    """Remove our own ``name=value`` from a URL's query (libpq would refuse it)."""
    if not url.startswith(("postgresql://", "postgres://")) or name not in url:
        return url, None
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    values = [v for k, v in query if k == name]
    rest = urlencode([(k, v) for k, v in query if k != name])
    return urlunsplit(parts._replace(query=rest)), values[-1] if values else None


def _database_url(url: str, name: str) -> str:
    if url.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(url)
        return urlunsplit(parts._replace(path="/" + name))
    return make_conninfo(url, dbname=name)


@contextmanager
def temporary_database(url: str, name: str) -> Iterator[str]:
    """Create database ``name`` on the server ``url`` names; yield its URL; drop it after.

    Connections still open to it when the block ends are terminated first.
    """
    ident = sql.Identifier(name)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    try:
        yield _database_url(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
