"""Owns ``SQLiteStorage``: the embedded default backend (WAL, durable commits, one writer).

Snapshots are SQLite read transactions in WAL mode: every statement of one read transaction
sees the database as of its first statement, which reads the newest commit timestamp, so the
snapshot and its timestamp agree. The commit step is ``BEGIN IMMEDIATE`` (SQLite's single
write lock, shared with other processes on the same file), so commits from every process form
one total order.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlparse

from core.errors import UserError
from core.storage.base import (
    CatalogIndex,
    CatalogTable,
    CommitBatchItem,
    DocumentRow,
    IndexRow,
    Snapshot,
    StaleLatest,
    Storage,
    WriteSession,
    WriteSessionContext,
)

_DDL = """
CREATE TABLE IF NOT EXISTS documents(
    id TEXT PRIMARY KEY, tbl INTEGER NOT NULL, ct REAL NOT NULL, data BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_entries(
    idx INTEGER NOT NULL, key BLOB NOT NULL, doc TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY(idx, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS commits(ts INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS bodies(rid INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TRIGGER IF NOT EXISTS documents_body_replaced AFTER UPDATE OF data ON documents
WHEN typeof(OLD.data) = 'integer' BEGIN DELETE FROM bodies WHERE rid = OLD.data; END;
CREATE TRIGGER IF NOT EXISTS documents_body_deleted AFTER DELETE ON documents
WHEN typeof(OLD.data) = 'integer' BEGIN DELETE FROM bodies WHERE rid = OLD.data; END;
CREATE TRIGGER IF NOT EXISTS entries_value_replaced AFTER UPDATE OF value ON index_entries
WHEN typeof(OLD.value) = 'integer' BEGIN DELETE FROM bodies WHERE rid = OLD.value; END;
CREATE TRIGGER IF NOT EXISTS entries_value_deleted AFTER DELETE ON index_entries
WHEN typeof(OLD.value) = 'integer' BEGIN DELETE FROM bodies WHERE rid = OLD.value; END;
CREATE TABLE IF NOT EXISTS catalog_tables(
    number INTEGER PRIMARY KEY, namespace TEXT NOT NULL, name TEXT NOT NULL,
    fingerprint TEXT NOT NULL, UNIQUE(namespace, name)
);
CREATE TABLE IF NOT EXISTS catalog_indexes(
    id INTEGER PRIMARY KEY, tbl INTEGER NOT NULL, name TEXT NOT NULL, spec TEXT NOT NULL,
    UNIQUE(tbl, name)
);
CREATE TABLE IF NOT EXISTS catalog_meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_HEAD = (
    "SELECT coalesce(max(ts), 0), "
    "(SELECT value FROM catalog_meta WHERE key = 'version') FROM commits"
)
"""A snapshot's first statement: its commit timestamp and catalog version."""
_BUMP_CATALOG = (
    "INSERT INTO catalog_meta(key, value) VALUES ('version', 1) "
    "ON CONFLICT(key) DO UPDATE SET value = value + 1"
)

_SYNC_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
DEFAULT_CHECKPOINT_EVERY = 256
"""Commits between background checkpoints."""
DEFAULT_WAL_WRAP_FRAMES = 4096
"""WAL frames (pages) beyond which the writer finishes a checkpoint itself, so the WAL restarts
from its beginning instead of growing (about 16 MB at SQLite's default 4 KB page)."""
_BUSY_TIMEOUT_MS = 30_000
DEFAULT_MAX_IDLE_READERS = 8

INLINE_BODY_MAX = 256
"""Document bodies and index entry values longer than this (bytes) are stored in ``bodies``.

``documents`` is a ``WITHOUT ROWID`` table: its B-tree pages (interior ones too) hold whole
rows, so long rows cut the fan-out, and a row longer than a page's local payload (about 1 KB)
spills into overflow pages that every key comparison against it reads whole. One 300 KB row
made point reads of small documents in the same file 100x slower. Such a document's row
holds the integer ``rid`` of its body's row instead (a body is never an integer: bodies are
bytes), and the triggers above delete a body when its document's row is replaced or
deleted. ``index_entries`` is kept the same way (a vector index's values). Databases written
before keep their long bodies and values inline: a row is read either way."""
_DATA = (
    "CASE WHEN typeof(d.data) = 'integer' THEN (SELECT b.data FROM bodies b WHERE b.rid = d.data) "
    "ELSE d.data END"
)
"""A document row's body, inline or out of line (``d`` is the row)."""
_VALUE = (
    "CASE WHEN typeof(e.value) = 'integer' "
    "THEN (SELECT b.data FROM bodies b WHERE b.rid = e.value) ELSE e.value END"
)
"""An index entry's value, inline or out of line (``e`` is the row): a vector index's entries
hold the vector (1.5 KB at 384 dimensions), and the same rule as documents' applies."""

_SCAN_ASC = (
    "SELECT e.key, " + _VALUE + ", d.id, d.tbl, d.ct, " + _DATA + " FROM index_entries e "
    "JOIN documents d ON d.id = e.doc WHERE e.idx = ? AND e.key >= ? {hi} "
    "ORDER BY e.key {order} LIMIT ?"
)

_SCAN_IDS = (
    "SELECT d.id, d.tbl, d.ct, " + _DATA + " FROM documents d "
    "WHERE d.id >= ? AND d.id < ? ORDER BY d.id LIMIT ?"
)
_SCAN_DESC_IDS = _SCAN_IDS.replace("ORDER BY d.id", "ORDER BY d.id DESC")
_GET = "SELECT d.tbl, d.ct, " + _DATA + " FROM documents d WHERE d.id = ?"


class _SQLiteSnapshot(Snapshot):
    __slots__ = ("_conn", "_release", "_owned", "ts", "catalog_version")

    def __init__(self, conn: sqlite3.Connection, release: Any, owned: bool):
        self._conn = conn
        self._release = release
        self._owned = owned
        if owned:
            conn.execute("BEGIN")
        row = conn.execute(_HEAD).fetchone()
        self.ts = row[0]
        self.catalog_version = row[1] or 0

    def get(self, doc_id: str) -> DocumentRow | None:
        row = self._conn.execute(_GET, (doc_id,)).fetchone()
        if row is None:
            return None
        return DocumentRow(id=doc_id, table=row[0], creation_time=row[1], data=row[2])

    def scan(
        self, index_id: int, lo: bytes, hi: bytes | None, *, reverse: bool, limit: int
    ) -> list[IndexRow]:
        sql = _SCAN_ASC.format(
            hi="" if hi is None else "AND e.key < ?", order="DESC" if reverse else "ASC"
        )
        params: tuple[Any, ...] = (index_id, lo, limit) if hi is None else (index_id, lo, hi, limit)
        return [
            IndexRow(
                key=r[0],
                value=r[1],
                doc=DocumentRow(id=r[2], table=r[3], creation_time=r[4], data=r[5]),
            )
            for r in self._conn.execute(sql, params)
        ]

    def scan_documents(self, lo: str, hi: str, *, reverse: bool, limit: int) -> list[DocumentRow]:
        return [
            DocumentRow(id=r[0], table=r[1], creation_time=r[2], data=r[3])
            for r in self._conn.execute(_SCAN_DESC_IDS if reverse else _SCAN_IDS, (lo, hi, limit))
        ]

    def scan_entries(
        self, index_id: int, lo: bytes, hi: bytes | None, *, limit: int
    ) -> list[tuple[bytes, bytes, str]]:
        if hi is None:
            cur = self._conn.execute(
                "SELECT e.key, " + _VALUE + ", e.doc FROM index_entries e "
                "WHERE e.idx = ? AND e.key >= ? ORDER BY e.key LIMIT ?",
                (index_id, lo, limit),
            )
        else:
            cur = self._conn.execute(
                "SELECT e.key, " + _VALUE + ", e.doc FROM index_entries e "
                "WHERE e.idx = ? AND e.key >= ? AND e.key < ? ORDER BY e.key LIMIT ?",
                (index_id, lo, hi, limit),
            )
        return cur.fetchall()

    def close(self) -> None:
        """End the read transaction and hand the connection back."""
        if self._owned:
            self._owned = False
            try:
                self._conn.execute("COMMIT")
            finally:
                self._release(self._conn)

    def detach(self) -> sqlite3.Connection | None:
        """Take over the connection, still in its read transaction (``None``: not owned).

        Closing the snapshot afterwards does nothing: whoever detached it ends the read
        transaction and hands the connection back.
        """
        if not self._owned:
            return None
        self._owned = False
        return self._conn


def _catalog(conn: sqlite3.Connection) -> tuple[list[CatalogTable], list[CatalogIndex]]:
    tables = [
        CatalogTable(number=r[0], namespace=r[1], name=r[2], fingerprint=r[3])
        for r in conn.execute("SELECT number, namespace, name, fingerprint FROM catalog_tables")
    ]
    indexes = [
        CatalogIndex(id=r[0], table=r[1], name=r[2], spec=r[3])
        for r in conn.execute("SELECT id, tbl, name, spec FROM catalog_indexes")
    ]
    return tables, indexes


class _SQLiteWriteSession(WriteSession):
    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self._presumed: int | None = None

    def latest_ts(self) -> int:
        return int(self._conn.execute("SELECT coalesce(max(ts), 0) FROM commits").fetchone()[0])

    def presume_latest(self, ts: int) -> bool:
        # Verified by the commit-log insert itself (``apply``): one statement fewer a commit.
        self._presumed = ts
        return True

    def read_log(self, after_ts: int) -> list[tuple[int, bytes]]:
        return self._conn.execute(
            "SELECT ts, data FROM commits WHERE ts > ? ORDER BY ts", (after_ts,)
        ).fetchall()

    def snapshot(self) -> Snapshot:
        return _SQLiteSnapshot(self._conn, None, owned=False)

    def apply(self, items: Sequence[CommitBatchItem]) -> None:
        conn = self._conn
        removed: list[tuple[int, bytes]] = []
        added: list[tuple[int, bytes, str, bytes]] = []
        upserts: list[tuple[str, int, float, bytes]] = []
        deletes: list[tuple[str]] = []
        for item in items:
            for w in item.writes:
                if w.removed_entries:
                    removed.extend(w.removed_entries)
                doc_id = w.id
                for i, k, v in w.added_entries:
                    added.append((i, k, doc_id, v))
                if w.data is None:
                    deletes.append((doc_id,))
                else:
                    upserts.append((doc_id, w.table, w.creation_time, w.data))
        # Invariant: no document is written by two items of one batch (the second would have
        # read it and conflicted with the first), and index keys end with the document id, so
        # the statements below touch disjoint rows and their order does not matter.
        _each(conn, _DELETE_ENTRIES, removed)
        _each(conn, _DELETE_DOCUMENTS, deletes)
        _each(conn, _UPSERT_DOCUMENTS, _out_of_line(conn, upserts))
        if len(added) > 1:
            # In key order, consecutive rows land on the same B-tree pages: a bulk write with
            # many keys per document (a search index) inserts about 1.5x faster.
            added.sort()
        _each(conn, _UPSERT_ENTRIES, _out_of_line(conn, added))
        records = [(item.ts, item.log_record) for item in items]
        presumed, self._presumed = self._presumed, None
        if presumed is not None and len(records) > _GUARDED_MAX:
            if self.latest_ts() != presumed:
                raise StaleLatest(presumed)
            presumed = None
        if presumed is None:
            _each(conn, _INSERT_COMMITS, records)
            return
        # Invariant: the log records are inserted only if the newest one is still the one
        # presumed, checked inside this write transaction (which holds SQLite's write lock):
        # had another process committed since, nothing is inserted, and raising rolls back
        # every write above, so the commit step can be redone after reading what it missed.
        cur = conn.execute(
            _GUARDED_COMMITS.sql(len(records)),
            [value for row in records for value in row] + [presumed],
        )
        if cur.rowcount != len(records):
            raise StaleLatest(presumed)

    def put_catalog(
        self, tables: Sequence[CatalogTable], indexes: Sequence[CatalogIndex], drop: Sequence[int]
    ) -> None:
        conn = self._conn
        if tables or indexes or drop:
            conn.execute(_BUMP_CATALOG)
        conn.executemany(
            "INSERT OR REPLACE INTO catalog_tables(number, namespace, name, fingerprint) "
            "VALUES (?, ?, ?, ?)",
            [(t.number, t.namespace, t.name, t.fingerprint) for t in tables],
        )
        conn.executemany(
            "INSERT OR REPLACE INTO catalog_indexes(id, tbl, name, spec) VALUES (?, ?, ?, ?)",
            [(i.id, i.table, i.name, i.spec) for i in indexes],
        )
        for index_id in drop:
            conn.execute("DELETE FROM index_entries WHERE idx = ?", (index_id,))
            conn.execute("DELETE FROM catalog_indexes WHERE id = ?", (index_id,))

    def prune_log(self, before_ts: int) -> None:
        self._conn.execute(
            "DELETE FROM commits WHERE ts < ? AND ts < (SELECT max(ts) FROM commits)",
            (before_ts,),
        )


class _Many:
    """One statement over many rows, as few statements as possible.

    Each statement is a round trip through the sqlite3 module that releases and retakes the
    GIL; with several threads running handlers, retaking it can wait behind them, so a commit
    batch costs a handful of statements however many rows it writes.
    """

    __slots__ = ("head", "each", "join", "tail", "max_rows", "_sql")

    def __init__(self, head: str, each: str, join: str, tail: str = "", *, max_rows: int = 200):
        self.head, self.each, self.join, self.tail = head, each, join, tail
        self.max_rows = max_rows
        self._sql: dict[int, str] = {}

    def sql(self, n: int) -> str:
        text = self._sql.get(n)
        if text is None:
            text = self._sql[n] = self.head + self.join.join([self.each] * n) + self.tail
        return text


_DELETE_ENTRIES = _Many(
    "DELETE FROM index_entries WHERE ", "(idx = ? AND key = ?)", " OR ", max_rows=100
)
_DELETE_DOCUMENTS = _Many("DELETE FROM documents WHERE id IN (", "?", ", ", ")")
_UPSERT_DOCUMENTS = _Many(
    "INSERT INTO documents(id, tbl, ct, data) VALUES ",
    "(?, ?, ?, ?)",
    ", ",
    # An upsert, not INSERT OR REPLACE: a replacing delete would not fire the trigger that
    # deletes an out-of-line body.
    " ON CONFLICT(id) DO UPDATE SET tbl = excluded.tbl, ct = excluded.ct, data = excluded.data",
)
_UPSERT_ENTRIES = _Many(
    "INSERT INTO index_entries(idx, key, doc, value) VALUES ",
    "(?, ?, ?, ?)",
    ", ",
    " ON CONFLICT(idx, key) DO UPDATE SET doc = excluded.doc, value = excluded.value",
)
_INSERT_COMMITS = _Many("INSERT INTO commits(ts, data) VALUES ", "(?, ?)", ", ")
_GUARDED_COMMITS = _Many(
    "INSERT INTO commits(ts, data) SELECT column1, column2 FROM (VALUES ",
    "(?, ?)",
    ", ",
    ") WHERE (SELECT coalesce(max(ts), 0) FROM commits) = ?",
    max_rows=1 << 30,
)
_GUARDED_MAX = 500
"""The log records of a batch, inserted only if the newest record is the presumed one."""


def _out_of_line(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rows to write, each long payload (a row's last column) first written to ``bodies``.

    A document's body or an index entry's value longer than ``INLINE_BODY_MAX`` is replaced by
    the ``rid`` of its row in ``bodies``.
    """
    out: list[tuple[Any, ...]] = []
    for row in rows:
        payload = row[-1]
        if len(payload) > INLINE_BODY_MAX:
            rid = conn.execute(_INSERT_BODY, (payload,)).lastrowid
            out.append((*row[:-1], rid))
        else:
            out.append(row)
    return out


_INSERT_BODY = "INSERT INTO bodies(data) VALUES (?)"
_TAKE_WRITE_LOCK = "UPDATE catalog_meta SET value = value WHERE 0"
"""A write that changes nothing: inside a read transaction, it takes SQLite's write lock."""


def _each(conn: sqlite3.Connection, many: _Many, rows: list[Any]) -> None:
    """Apply ``many`` to every row, in chunks of at most ``many.max_rows`` rows."""
    if len(rows) == 1:
        conn.execute(many.sql(1), rows[0])
        return
    step = many.max_rows
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        conn.execute(many.sql(len(chunk)), [value for row in chunk for value in row])


class _WriteContext(WriteSessionContext):
    """The commit step: the process's one writer connection inside ``BEGIN IMMEDIATE``."""

    def __init__(
        self, storage: SQLiteStorage, timeout: float | None, snapshot: _SQLiteSnapshot | None = None
    ):
        self._storage = storage
        self._timeout = timeout
        self._snapshot = snapshot
        self._conn: sqlite3.Connection | None = None

    def __enter__(self) -> WriteSession:
        storage = self._storage
        timeout = self._timeout
        # Invariant: one thread at a time is in a write session, the one holding the writer
        # lock (re-entrant, for a thread that reads the catalog inside its session).
        if not storage._writer_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError("the SQLite writer connection was busy")
        try:
            conn = None if self._snapshot is None else self._continue(self._snapshot)
            if conn is not None:
                storage._writing = threading.get_ident()
                self._conn = conn
                return _SQLiteWriteSession(conn)
            conn = storage._take_writer()
        except BaseException:
            storage._writer_lock.release()
            raise
        try:
            if timeout is None:
                conn.execute("BEGIN IMMEDIATE")
            else:
                # SQLite's busy handler waits for other processes' writers; bound it here.
                conn.execute(f"PRAGMA busy_timeout={max(int(timeout * 1000), 1)}")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    raise TimeoutError("the SQLite write lock was not available") from exc
                finally:
                    conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        except BaseException:
            storage._warm_free = True
            storage._writer_lock.release()
            raise
        storage._writing = threading.get_ident()
        self._conn = conn
        return _SQLiteWriteSession(conn)

    def _continue(self, snapshot: _SQLiteSnapshot) -> sqlite3.Connection | None:
        """Make the snapshot's read transaction the write transaction; ``None`` if it cannot.

        Only a snapshot on the warm connection continues (it is lent to the snapshot, so no
        other session uses it). SQLite makes a read transaction a write one at its first
        write, provided no other connection has committed since it began
        (``SQLITE_BUSY_SNAPSHOT`` otherwise, or ``SQLITE_BUSY`` while another writer holds
        the lock): a write that changes nothing takes the lock now. Otherwise the read
        transaction ends and the caller begins the commit step as usual.
        """
        storage = self._storage
        if snapshot._conn is not storage._writer_conn:  # a commit meanwhile made another warm
            snapshot.close()
            return None
        conn = snapshot.detach()
        if conn is None:
            return None
        try:
            conn.execute(_TAKE_WRITE_LOCK)
        except sqlite3.Error:
            # Not the newest state any more (or another process is writing): begin afresh.
            try:
                conn.rollback()
            finally:
                storage._warm_free = True
            return None
        return conn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        storage = self._storage
        try:
            if exc_type is None:
                conn.execute("COMMIT")
                storage._committed(conn)
            elif conn.in_transaction:
                # After some errors (SQLITE_FULL, an I/O error) SQLite has rolled the
                # transaction back itself: a second ROLLBACK would raise, hiding that error.
                conn.execute("ROLLBACK")
        finally:
            storage._writing = None
            storage._warm_free = True
            storage._writer_lock.release()


class SQLiteStorage(Storage):
    """The embedded backend: one SQLite file in WAL mode, durable commits by default.

    Checkpoints run off the commit path: the writer connection never checkpoints on its own
    (``wal_autocheckpoint=0``); every ``checkpoint_every`` commits a background thread copies
    the WAL into the database (``PASSIVE``: writers carry on meanwhile). A background
    checkpoint alone never lets the WAL restart under a steady write load (new frames keep
    arriving while it copies), so once the WAL holds more than ``wal_wrap_frames`` frames the
    writer, between two commits, copies the few frames left itself; the next commit then
    writes from the WAL's start (unless a reader still uses old frames: then a later
    attempt does).

    Args:
        path: the database file.
        synchronous: SQLite's ``synchronous`` setting; ``"FULL"`` makes every commit durable
            across power loss, ``"NORMAL"`` across process crashes only.
        max_idle_readers: reader connections kept open between reads; readers returned
            beyond it are closed (each holds file descriptors for the database and its WAL).
        checkpoint_every: commits between background checkpoints.
        wal_wrap_frames: WAL size, in frames, beyond which the writer completes a checkpoint
            so the WAL restarts (bounds the WAL under an endless write load).
    """

    inline_reads = True
    """Reads never wait on a pool or a lock (WAL readers), so servers may run them inline."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        max_idle_readers: int = DEFAULT_MAX_IDLE_READERS,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        wal_wrap_frames: int = DEFAULT_WAL_WRAP_FRAMES,
    ):
        self.path = os.fspath(path)
        if max_idle_readers < 0:
            raise UserError(f"max_idle_readers={max_idle_readers!r} is negative; use 0 or more.")
        self.max_idle_readers = max_idle_readers
        if checkpoint_every < 1:
            raise UserError(f"checkpoint_every={checkpoint_every!r} must be 1 or more.")
        if wal_wrap_frames < 1:
            raise UserError(f"wal_wrap_frames={wal_wrap_frames!r} must be 1 or more.")
        self.checkpoint_every = checkpoint_every
        self.wal_wrap_frames = wal_wrap_frames
        self._since_checkpoint = 0
        self._wrap_due = False
        """The last checkpoint left more than ``wal_wrap_frames`` frames: finish it inline."""
        self._checkpointer: threading.Thread | None = None
        self._checkpoint_wanted = threading.Event()
        self._stopping = False
        self._checkpointing = False
        """A background checkpoint was asked for and has not finished."""
        self.checkpoints = 0
        """Checkpoints run (background and inline), for tests and benchmarks."""
        self.wal_restarts = 0
        """Times the writer completed a checkpoint so the WAL could restart."""
        synchronous = synchronous.upper()
        if synchronous not in _SYNC_MODES:
            raise UserError(
                f"synchronous={synchronous!r} is not valid; use one of {', '.join(_SYNC_MODES)}."
            )
        self.synchronous = synchronous
        self.url = f"sqlite:///{self.path}?synchronous={synchronous}"
        # Invariant: every open connection is in ``_all``; idle readers are also in ``_idle``.
        # Readers are pooled by the storage, not per thread: a thread that ends (servers
        # retire idle worker threads) must not strand its connections and their descriptors.
        self._all: set[sqlite3.Connection] = set()
        self._idle: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._opened = False
        # The warm connection: the one that made the last commit. SQLite empties a
        # connection's page cache whenever another connection has written, so every pooled
        # reader starts cold after each commit, except this one. Commits are serialized
        # anyway (by the database's commit lock and SQLite's write lock), so they all use it;
        # between commits it is lent to snapshots too (a read-modify-write mutation then
        # reads warm pages, about 12 µs less per snapshot). If a snapshot still holds it when
        # a commit starts, the commit takes another connection, which becomes the warm one.
        # Invariant: the warm connection, when not free, is used by exactly one holder: the
        # thread in a write session, or one snapshot.
        self._writer_conn: sqlite3.Connection | None = None
        self._warm_free = True
        """The warm connection is in neither a write session nor a snapshot."""
        self._writer_lock = threading.RLock()
        self._writing: int | None = None
        """The thread inside a write session, if any."""

    @classmethod
    def from_url(cls, url: str) -> SQLiteStorage:
        """Build from ``sqlite:///path?synchronous=NORMAL`` (``sqlite:///rel`` or ``////abs``)."""
        parsed = urlparse(url)
        path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
        if parsed.netloc:
            path = parsed.netloc + "/" + path
        if not path:
            raise UserError(f"SQLite URL {url!r} names no file; use sqlite:///path/to/file.db")
        query = parse_qs(parsed.query)
        sync = query.get("synchronous", ["FULL"])[0]
        return cls(path, synchronous=sync)

    # -- connections ----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=_BUSY_TIMEOUT_MS / 1000,
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA cache_size=-32000")
        # Any connection may become the writer (see ``_take_writer``).
        conn.execute("PRAGMA wal_autocheckpoint=0")  # see the class docstring
        conn.execute(f"PRAGMA journal_size_limit={self.wal_wrap_frames * 4096}")
        with self._all_lock:
            self._all.add(conn)
        return conn

    def _writer(self) -> sqlite3.Connection:
        """The warm connection, made if there is none (the caller holds ``_writer_lock``)."""
        conn = self._writer_conn
        if conn is None:
            conn = self._connect()
            with self._all_lock:
                self._writer_conn, self._warm_free = conn, True
        return conn

    def _take_writer(self) -> sqlite3.Connection:
        """The connection for a write session (the caller holds ``_writer_lock``).

        The warm one if no snapshot holds it; otherwise an idle or new connection, which
        becomes the warm one (the snapshot hands the old one to the pool when it closes).
        """
        warm = self._writer()
        with self._all_lock:
            if self._warm_free:
                self._warm_free = False
                return warm
            # Invariant: from here the lent one is no longer the warm one (in the same lock
            # as the check), so its snapshot hands it to the pool, never back as warm.
            conn = self._idle.pop() if self._idle else None
            self._writer_conn = conn
        if conn is None:
            conn = self._connect()
            with self._all_lock:
                self._writer_conn = conn
        return conn

    # -- checkpoints ----------------------------------------------------------------------

    def _committed(self, conn: sqlite3.Connection) -> None:
        """After each commit, holding the writer: signal or finish a checkpoint when due."""
        if self._wrap_due:
            # Nothing of this process writes meanwhile, so this copies every frame (the
            # background thread copied most of them already) and the next commit can
            # restart the WAL from its beginning.
            self._wrap_due = False
            self._since_checkpoint = 0
            self._checkpoint(conn, inline=True)
            return
        self._since_checkpoint += 1
        if self._since_checkpoint < self.checkpoint_every:
            return
        self._since_checkpoint = 0
        thread = self._checkpointer
        if thread is not None and not thread.is_alive():  # e.g. lost in a fork
            thread = self._checkpointer = None
            self._checkpointing = False
        try:
            size = os.stat(self.path + "-wal").st_size
        except OSError:
            size = 0
        if size > 4 * self.wal_wrap_frames * 4096:
            # The WAL outgrew its bound (the background thread fell behind, or its last
            # attempts could not finish): finish a checkpoint here, at the next commit.
            self._wrap_due = True
            return
        if self._checkpointing:
            return  # the last one is still copying; never two at once
        self._checkpointing = True
        if thread is None:
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, name="capsule-sqlite-checkpoint", daemon=True
            )
            self._checkpointer.start()
        self._checkpoint_wanted.set()

    def _checkpoint(self, conn: sqlite3.Connection, *, inline: bool = False) -> None:
        try:
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            return  # a checkpoint is an optimisation: the next one catches up
        self.checkpoints += 1
        if inline:
            if busy:
                self._wrap_due = True  # another checkpointer held the lock: try again
            elif copied == frames:
                self.wal_restarts += 1
        elif frames > self.wal_wrap_frames:
            # Copied while the writer kept appending: never done by itself under load.
            self._wrap_due = True

    def _checkpoint_loop(self) -> None:
        while True:
            self._checkpoint_wanted.wait()
            self._checkpoint_wanted.clear()
            if self._stopping:
                return
            try:
                # Never the warm connection: a commit meanwhile would have to take another.
                conn = self._take_reader(warm=False)
                try:
                    self._checkpoint(conn)
                finally:
                    self._give_reader(conn)
            except sqlite3.Error:
                pass  # the next signal tries again
            finally:
                self._checkpointing = False

    def _stop_checkpointer(self) -> None:
        thread, self._checkpointer = self._checkpointer, None
        if thread is not None:
            self._stopping = True
            self._checkpoint_wanted.set()
            thread.join()
            self._stopping = False
            self._checkpoint_wanted.clear()

    def _take_reader(self, *, warm: bool = True) -> sqlite3.Connection:
        """A connection for reading: the warm one if it is free (and ``warm``), else pooled."""
        with self._all_lock:
            if warm and self._warm_free and self._writer_conn is not None:
                self._warm_free = False
                return self._writer_conn
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _give_reader(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:  # a snapshot whose COMMIT failed: never pool an open read
            try:
                conn.rollback()
            except sqlite3.Error:
                pass
        with self._all_lock:
            if conn is self._writer_conn:
                self._warm_free = True
                return
            if conn in self._all and len(self._idle) < self.max_idle_readers:
                self._idle.append(conn)
                return
            # Beyond the bound, or the storage was closed meanwhile: close it.
            self._all.discard(conn)
        try:
            conn.close()
        except sqlite3.Error:
            pass

    def open_connections(self) -> int:
        """How many connections this storage holds open (readers in use or idle, the writer)."""
        with self._all_lock:
            return len(self._all)

    # -- Storage --------------------------------------------------------------------------

    def open(self) -> None:
        """Create the tables if needed."""
        if self._opened:
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            # Never create folders: a URL's slash count decides relative vs absolute, and a
            # typo would otherwise quietly put the database somewhere new.
            raise UserError(
                f'Cannot open the SQLite database "{self.path}": folder "{directory}" does not '
                "exist; create it first (sqlite:///relative/x.db is relative to the working "
                "directory, sqlite:////absolute/x.db is absolute)."
            )
        with self._writer_lock:
            self._writer().executescript(_DDL)
        self._opened = True

    def close(self) -> None:
        """Close every connection; ``open`` may be called again."""
        self._stop_checkpointer()
        with self._all_lock:
            conns, self._all, self._idle = self._all, set(), []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._writer_conn = None
        self._warm_free = True
        self._opened = False

    def begin_read(self) -> Snapshot:
        """A read transaction at the newest commit."""
        return _SQLiteSnapshot(self._take_reader(), self._give_reader, owned=True)

    def begin_write(self, *, timeout: float | None = None) -> WriteSessionContext:
        """The commit step: ``BEGIN IMMEDIATE`` on the writer connection."""
        return _WriteContext(self, timeout)

    def begin_write_from(self, snapshot: Snapshot) -> WriteSessionContext | None:
        """The commit step in the snapshot's own transaction, when it holds the warm connection.

        A read-modify-write mutation alone then runs ``BEGIN``, its reads, its writes and one
        ``COMMIT`` on one connection, as a hand-written SQLite transaction would, instead of
        ending its read transaction and beginning ``BEGIN IMMEDIATE``.
        """
        if isinstance(snapshot, _SQLiteSnapshot) and snapshot._owned:
            return _WriteContext(self, None, snapshot)
        return None

    def load_catalog(self) -> tuple[list[CatalogTable], list[CatalogIndex]]:
        """Every catalog row."""
        # Inside a write session, read through it (it sees its own catalog changes); anywhere
        # else, through a reader, so a long exclusive attempt never blocks a lookup.
        if self._writing == threading.get_ident():
            return _catalog(self._writer())
        conn = self._take_reader()
        try:
            return _catalog(conn)
        finally:
            self._give_reader(conn)

    def read_commits(self, after_ts: int) -> list[tuple[int, bytes]]:
        """Commit-log records after ``after_ts``, read in one read transaction (no write lock)."""
        conn = self._take_reader()
        try:
            return conn.execute(
                "SELECT ts, data FROM commits WHERE ts > ? ORDER BY ts", (after_ts,)
            ).fetchall()
        finally:
            self._give_reader(conn)

    def is_transient(self, exc: BaseException) -> bool:
        """A busy or locked database, or a failed I/O step, may pass on a retry."""
        return super().is_transient(exc) or isinstance(exc, sqlite3.OperationalError)

    def files_dir(self) -> str | None:
        """``<database file>-files``."""
        return self.path + "-files"
