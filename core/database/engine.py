"""Owns ``Database``: the open catalog, snapshots, the commit step and the in-memory commit log.

Commits are validated and applied by whichever thread holds the commit lock; threads that
arrive while it is busy queue their transactions, and the next holder validates and applies
the whole queue in one storage transaction, so waiting commits share one fsync (group
commit).

Invariants:

* A transaction commits only if no commit with a timestamp above its snapshot wrote anything
  its read set covers (checked against the in-memory log, which first takes in the commits
  other processes appended to the storage log).
* A commit's write set is appended to the in-memory log, and listeners are told, only after
  storage made it durable; a batch that fails in storage leaves the log as it was.
* Commit timestamps are strictly increasing nanoseconds, unique across processes because they
  are assigned inside the storage's exclusive commit step.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from _thread import allocate_lock as _allocate_lock
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from core import config
from core.database import catalog as catalog_module
from core.database.catalog import Catalog, PendingFixes, ShapeReport, TableSpace
from core.database.readsets import WriteSet
from core.database.transaction import Transaction
from core.errors import Conflict as Conflict  # re-exported: the engine raises it
from core.errors import ConflictError, UserError
from core.schema import Schema
from core.storage.base import (
    CommitBatchItem,
    DocumentWrite,
    RetryableStorageError,
    Snapshot,
    StaleLatest,
    Storage,
    WriteSession,
)

logger = logging.getLogger("capsule.database")

PRUNE_EVERY = 512
"""The log is pruned once every this many commit batches."""

PRESUME_PAUSE = 256
"""Commit batches that read the newest timestamp after another process was seen committing."""

LOG_SLACK = 4096
"""In-memory records beyond which the log is pruned at the next batch, whatever the count."""

CommitListener = Callable[[int, WriteSet], None]


class _Request:
    """One transaction waiting to be committed (by its own thread or by the current leader)."""

    __slots__ = ("txn", "ts", "error", "item", "write_set", "wake", "lead")

    def __init__(self, txn: Transaction):
        self.txn = txn
        self.ts = 0
        self.error: BaseException | None = None
        writes, self.write_set = txn.commit_writes()
        # Built and encoded by the committing thread, before it queues: the leader, whose
        # batch every queued thread waits for, only stamps the timestamp.
        self.item = CommitBatchItem(ts=0, writes=writes, log_record=self.write_set.dump())
        self.wake: Any = None
        """A follower's wait, a lock its thread blocks on until released: when the request is
        done, or when it is handed the lead (a bare lock: an ``Event`` costs a condition, its
        lock and a waiter lock per wait, and contends for them under the GIL)."""
        self.lead = False

    def finish(self) -> None:
        """Mark the request done (its ``ts`` or ``error`` set): wake its thread if it waits."""
        if self.wake is not None:
            self.wake_up()

    def wake_up(self) -> None:
        """Release a follower's thread (once: it waits only once)."""
        try:
            self.wake.release()
        except RuntimeError:
            # Woken already: handed the lead, then committed by an exclusive attempt that
            # drained the queue before the follower ran.
            pass


class Database:
    """One open database: catalog, snapshots and commits over a ``Storage``."""

    def __init__(self, storage: Storage, *, log_retention: float | None = None):
        self.storage = storage
        if log_retention is None:
            log_retention = config.log_retention_seconds()
        if log_retention < 0:
            raise UserError(f"log_retention={log_retention!r} is negative; use seconds >= 0.")
        self.log_retention = log_retention
        """Seconds a commit-log record is kept (in memory only while a snapshot needs it)."""
        self.catalog = Catalog(storage, ensure=self._ensure_table)
        self._commit_lock = threading.RLock()
        self._exclusive: WriteSession | None = None
        self._queue: list[_Request] = []
        self._queue_lock = threading.Lock()
        self._leading = False
        """Whether some thread leads group commit (see ``commit``)."""
        self._last_batch = 0
        self._log_ts: list[int] = []
        self._log_ws: list[WriteSet] = []
        self.latest_ts = 0
        self._floor = 0
        """Commits at or below this timestamp may be missing from the in-memory log."""
        self._active: dict[int, int] = {}
        self._active_lock = threading.Lock()
        self._listeners: tuple[CommitListener, ...] = ()
        """Replaced, never changed in place: the commit path iterates it without a copy."""
        self._listeners_lock = threading.Lock()
        self._last_ct = 0.0
        self._ct_lock = threading.Lock()
        self._since_prune = 0
        self.commit_count = 0
        self.batch_count = 0
        """Storage transactions that applied commits (``commit_count / batch_count`` is the
        average group-commit size)."""
        self.conflict_count = 0
        self._catalog_stale = False
        """Another process changed the catalog's indexes: reload them in the next commit step."""
        self._read_latest = 0
        """Commit batches left that read the newest timestamp instead of presuming it (set
        when another process is seen committing, so a busy neighbour costs no redone steps)."""
        self.backfilled = 0
        """Documents this process rewrote with the defaults of a changed shape (``settle``)."""
        self.log_gaps = 0
        """Times catching up found other processes' commits already pruned from the storage
        log: listeners never saw those commits, so caches derived from commits must reset."""

    # -- lifecycle -------------------------------------------------------------------------

    def open(
        self,
        schemas: dict[str, Schema],
        *,
        pending: PendingFixes | None = None,
        defer: bool = False,
        backfill: bool = True,
    ) -> None:
        """Open storage and bring the catalog in line with ``schemas``.

        Stored documents that lack defaults of a changed shape get them (``settle``) before
        this returns, unless ``backfill`` is false (to report, changing no document).
        ``pending`` names the migrations that would fix documents that do not fit; with
        ``defer`` their tables stay unsettled instead of refusing to open (to migrate them, or
        replace their documents by an import).

        Raises:
            SchemaMismatchError: stored documents violate a changed table shape (storage is
                closed again, and nothing was changed).
        """
        self.storage.open()
        try:
            with self.storage.begin_write() as w:
                self.latest_ts = self._floor = w.latest_ts()
                self.catalog.open(w, schemas, self._next_ts, pending=pending, defer=defer)
                # The records opening wrote (backfills, a catalog change) are this process's
                # own: the catalog it just loaded already reflects them.
                self._floor = self.latest_ts
            if self.catalog.unsettled and backfill:
                self.settle()
        except BaseException:
            self.storage.close()
            raise

    def settle(self, *, batch: int | None = None) -> list[ShapeReport]:
        """Store the defaults of changed shapes into old documents; return what still misfits.

        Each unsettled table is read in creation order, ``batch`` documents per storage
        transaction (taken like a commit, so other processes and this one's subscribers see
        the rewrites); a document that lacks defaults is rewritten with them, its index
        entries too. When a pass finds every document fitting, the table's new fingerprint
        is stored and it is settled. Safe to run in several processes at once: each batch
        reads inside the exclusive commit step, so a document rewritten by one is seen as
        fitting by the others. A crash loses at most the batch in progress.
        """
        batch = batch or catalog_module.BACKFILL_BATCH
        left: list[ShapeReport] = []
        for number, report in sorted(self.catalog.unsettled.items()):
            info = report.info
            after: bytes | None = b""
            misfits = filled = checked = 0
            while after is not None:
                with self._commit_lock, self.storage.begin_write() as w:
                    self._catch_up(w)
                    snap = w.snapshot()
                    writes, ws, read, bad, after = self.catalog.settle_step(
                        snap, report, after, batch
                    )
                    misfits += bad
                    checked += read
                    commit: list[tuple[int, WriteSet]] = []
                    if writes:
                        commit.append((self._apply_one(w, writes, ws), ws))
                        filled += len(writes)
                    if after is None and not misfits:
                        # Invariant: a table's stored fingerprint is the declared one only
                        # once a whole pass found every document fitting; until then every
                        # open re-checks it, so a crash mid-pass resumes at the next open.
                        w.put_catalog([report.row], [], [])
                self._publish(commit)
                if writes:
                    logger.info(
                        'storing defaults in table "%s": %d of %d documents checked, %d rewritten',
                        info.name,
                        checked,
                        max(checked, report.total),
                        filled,
                    )
            self.backfilled += filled
            if misfits:
                report.misfits = misfits
                left.append(report)
            else:
                del self.catalog.unsettled[number]
                if filled:
                    logger.info(
                        'table "%s" settled: defaults stored in %d documents', info.name, filled
                    )
        return left

    def close(self) -> None:
        """Close the indexes' in-memory state, then storage."""
        for info in list(self.catalog.by_number.values()):
            for index in info.indexes.values():
                index.close()
        self.storage.close()

    def space(self, namespace: str = "") -> TableSpace:
        """The table space of a namespace (``""`` is the app's)."""
        return self.catalog.space(namespace)

    def add_listener(self, fn: CommitListener) -> Callable[[], None]:
        """Call ``fn(ts, write_set)`` after every commit made in this process; returns remover."""
        with self._listeners_lock:
            self._listeners = (*self._listeners, fn)

        def remove() -> None:
            with self._listeners_lock:
                listeners = list(self._listeners)
                if fn in listeners:
                    listeners.remove(fn)
                    self._listeners = tuple(listeners)

        return remove

    def listen(self, fn: CommitListener) -> tuple[int, Callable[[], None]]:
        """``add_listener``, also returning a timestamp through which every commit was published.

        ``fn`` sees, in timestamp order, every commit above the returned timestamp (derived
        caches start from it). Returns ``(ts, remover)``.
        """
        with self._commit_lock:
            return self._known_ts(), self.add_listener(fn)

    # -- time -------------------------------------------------------------------------------

    def creation_time(self, base: float | None = None) -> float:
        """A creation time, strictly increasing within this process.

        ``base`` is the inserting attempt's ``ctx.now`` (so creation times follow the app's
        clock, a ``ManualClock`` in tests); without one, the wall clock.
        """
        with self._ct_lock:
            now = base or time.time()
            if now <= self._last_ct:
                now = self._last_ct + 1e-6
            self._last_ct = now
            return now

    def _next_ts(self) -> int:
        ts = max(self.latest_ts + 1, time.time_ns())
        self.latest_ts = ts
        return ts

    # -- snapshots --------------------------------------------------------------------------

    def begin_read(self) -> Snapshot:
        """A snapshot at the newest commit; registered so the log keeps what it may need."""
        snap = self.storage.begin_read()
        with self._active_lock:
            self._active[id(snap)] = snap.ts
        if snap.catalog_version > self.catalog.version:
            # Another process changed the indexes: reads must never use one it dropped (its
            # entries are gone) nor miss one it added, so reload before this snapshot is used.
            try:
                self.catalog.reload_indexes(snap.catalog_version)
            except BaseException:
                self.end_read(snap)
                raise
        return snap

    def end_read(self, snap: Snapshot) -> None:
        """Close a snapshot taken with ``begin_read``."""
        with self._active_lock:
            self._active.pop(id(snap), None)
        snap.close()

    def transaction(self, *, now: float = 0.0) -> Transaction:
        """A new transaction (its snapshot starts at its first read)."""
        return Transaction(self, now=now)

    # -- commit -----------------------------------------------------------------------------

    def commit(self, txn: Transaction) -> int:
        """Validate and durably apply a transaction's writes; return its commit timestamp.

        Raises:
            Conflict: a newer commit touched the read set (the caller retries).
        """
        if not txn.writes:
            return txn.snapshot_ts or self.latest_ts
        req = _Request(txn)
        snap_ts = txn.snapshot_ts
        pinned = snap_ts is not None and bool(txn.reads.docs or txn.reads.ranges)
        if snap_ts is not None and pinned:
            # Until validated, this request needs the log above its snapshot, which closes
            # now: pin it in place of the snapshot so pruning keeps those records.
            with self._active_lock:
                self._active[id(req)] = snap_ts
        # Group commit, leader/followers: the first thread to queue leads; it drains the queue
        # and commits the whole batch in one storage transaction. Threads that queue meanwhile
        # wait on their request, not on the commit lock, and are woken once: when their commit
        # is done, or when the leader hands them the leadership for the next batch.
        alone = False
        with self._queue_lock:
            if self._leading:
                req.wake = wake = _allocate_lock()
                wake.acquire()
            else:
                self._leading = req.lead = True
                alone = not self._queue
            self._queue.append(req)
        # Release the snapshot first: validation needs only its timestamp and the commit log,
        # and a read transaction held open across the commit stops SQLite from resetting its
        # WAL, which then grows without bound under a read-modify-write load. Except alone:
        # the storage may then make the snapshot's read transaction the write transaction.
        own = txn if alone and txn.open_snapshot is not None else None
        if own is None:
            txn.close()
        try:
            if req.wake is not None:
                req.wake.acquire()
            if req.lead:
                self._lead(own)
        finally:
            txn.close()
            if pinned:
                with self._active_lock:
                    self._active.pop(id(req), None)
        if req.error is not None:
            raise req.error
        self._after_commit(txn)
        return req.ts

    def _lead(self, own: Transaction | None = None) -> None:
        """Commit one batch, then wake its followers and hand the lead to the oldest waiting.

        ``own``: the leader's transaction, its snapshot still open (``_commit_batch``).
        """
        if self._last_batch > 1:
            # Other threads are committing too: let those running a handler right now (they
            # hold or want the GIL) finish and queue, so this batch takes them along instead of
            # the next one. Yielding returns as soon as they block; alone, this is skipped.
            time.sleep(0)
        batch: list[_Request] = []
        successor: _Request | None = None
        try:
            with self._commit_lock:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                if batch:
                    self._commit_batch(batch, own)
                self._last_batch = len(batch)
        finally:
            with self._queue_lock:
                # Invariant: while requests are queued, exactly one thread leads (or is woken
                # to lead); ``_leading`` is false only when the queue is empty.
                if self._queue:
                    successor = self._queue[0]  # a follower: it has a wake
                    successor.lead = True
                else:
                    self._leading = False
            # Woken only now, with the commit lock released: a woken thread (which may preempt
            # this one while it holds the GIL) never finds the lock taken.
            for req in batch:
                req.finish()
            if successor is not None:
                successor.wake_up()

    def _commit_batch(self, batch: list[_Request], own: Transaction | None = None) -> None:
        """Validate and apply a batch in one storage transaction.

        ``own``: a transaction of the batch whose snapshot is still open; the storage may make
        its read transaction the write transaction (``Storage.begin_write_from``), else it is
        closed first.
        """
        snapshot = None if own is None else own.open_snapshot
        session = None if snapshot is None else self.storage.begin_write_from(snapshot)
        if session is None:
            if own is not None:
                own.close()
            session = self.storage.begin_write()
        try:
            with session as w:
                self._catch_up(w, presume=True)
                items: list[CommitBatchItem] = []
                accepted: list[_Request] = []
                generation = self.catalog.generation  # reloaded by ``_catch_up`` only
                for req in batch:
                    txn = req.txn
                    if txn.catalog_gen != generation:
                        # Its index entries were computed for indexes that changed since.
                        req.error = Conflict({"(indexes changed by another process)"})
                        continue
                    reads = txn.reads
                    if reads.docs or reads.ranges:  # a blind write never conflicts
                        tables = self._conflicts(txn, accepted)
                        if tables is not None:
                            req.error = Conflict(tables)
                            continue
                    req.ts = req.item.ts = self._next_ts()
                    accepted.append(req)
                    items.append(req.item)
                if items:
                    w.apply(items)
                    self.batch_count += 1
                self._maybe_prune(w)
        except StaleLatest:
            # Another process committed since this one last looked: nothing was applied.
            # Redo the step reading what it missed (its commits may conflict with the batch).
            self._read_latest = PRESUME_PAUSE
            for req in batch:
                req.error = None
            self._commit_batch(batch)
            return
        except BaseException as exc:
            for req in batch:
                if req.error is None:
                    # A transient storage failure applied nothing: retry like a conflict.
                    retry = isinstance(exc, RetryableStorageError)
                    req.error = Conflict({"(storage serialization failure)"}) if retry else exc
            return
        self._publish([(r.ts, r.write_set) for r in accepted])

    def _conflicts(self, txn: Transaction, accepted: list[_Request]) -> set[str] | None:
        reads = txn.reads
        if not reads.docs and not reads.ranges:
            return None
        snap_ts = txn.snapshot_ts
        if snap_ts is None:
            return None
        if snap_ts < self._floor:
            return {"(commit log pruned)"}
        start = bisect.bisect_right(self._log_ts, snap_ts)
        for ws in self._log_ws[start:]:
            if reads.touched_by(ws):
                return reads.tables_touched_by(ws)
        for req in accepted:
            if reads.touched_by(req.write_set):
                return reads.tables_touched_by(req.write_set)
        return None

    def _known_ts(self) -> int:
        """The newest commit the in-memory log is complete through.

        Not ``latest_ts``: timestamps handed out to a batch that then failed in storage raise
        ``latest_ts`` without any commit behind them, and must not hide later commits.
        """
        return self._log_ts[-1] if self._log_ts else self._floor

    def _catch_up(self, w: WriteSession, *, presume: bool = False) -> None:
        """Take in commits other processes made since this process last looked.

        ``presume``: a commit batch may skip reading the newest timestamp and presume it is
        the newest one known here (the storage verifies that as it applies the batch, and
        raises ``StaleLatest`` otherwise); not while another process is seen committing.
        """
        known = self._known_ts()
        if presume and not self._catalog_stale:
            if self._read_latest:
                self._read_latest -= 1
            elif w.presume_latest(known):
                self.latest_ts = max(self.latest_ts, known)
                return
        latest = w.latest_ts()
        if latest > known:
            if presume:
                self._read_latest = PRESUME_PAUSE
            self._take_in(known, w.read_log(known - 1 if known else 0))
        self.latest_ts = max(self.latest_ts, latest)
        if self._catalog_stale:
            # Inside the commit step, so no other process changes the catalog meanwhile.
            self._catalog_stale = False
            self.catalog.reload_indexes(w.snapshot().catalog_version)

    def _take_in(self, known: int, records: list[tuple[int, bytes]]) -> None:
        # The record at ``known`` is read too: if another process pruned it, records between
        # it and the first one returned may be gone, so older snapshots can no longer be
        # validated and must conflict. With nothing known yet (this process opened on an
        # empty database), records before the first one returned may have been pruned as
        # well: nothing says the first retained record is the first commit ever made.
        # Invariant: a snapshot older than the oldest retained record never passes
        # validation by optimism alone (``_conflicts`` refuses snapshots below the floor).
        if records and records[0][0] > known:
            self._floor = max(self._floor, records[0][0] - 1)
            self.log_gaps += 1
            self._catalog_stale = True  # a pruned record may have changed the catalog
        for ts, data in records:
            if ts > known:
                ws = WriteSet.load(data)
                if ws.catalog_changed:
                    self._catalog_stale = True
                self._log_ts.append(ts)
                self._log_ws.append(ws)
                self._notify(ts, ws)

    def poll_other_processes(self) -> None:
        """Take in other processes' commits now (subscriptions call this while idle)."""
        with self._commit_lock:
            known = self._known_ts()
            records = self.storage.read_commits(known - 1 if known else 0)
            self._take_in(known, records)
            if records:
                self.latest_ts = max(self.latest_ts, records[-1][0])
            if len(self._log_ts) >= LOG_SLACK:
                # A process that only reads never prunes in a commit step: do it here.
                self._prune_memory()

    def _publish(self, commits: list[tuple[int, WriteSet]]) -> None:
        for ts, ws in commits:
            self._log_ts.append(ts)
            self._log_ws.append(ws)
            self.commit_count += 1
        for ts, ws in commits:
            self._notify(ts, ws)

    def _notify(self, ts: int, ws: WriteSet) -> None:
        for fn in self._listeners:
            try:
                fn(ts, ws)
            except Exception:  # a listener must never break the commit path
                logger.exception("commit listener failed")

    def _after_commit(self, txn: Transaction) -> None:
        for fn in txn.after_commit:
            fn()

    def _maybe_prune(self, w: WriteSession) -> None:
        self._since_prune += 1
        if self._since_prune < PRUNE_EVERY and len(self._log_ts) < LOG_SLACK:
            return
        if self._since_prune >= PRUNE_EVERY:
            self._since_prune = 0
            w.prune_log(time.time_ns() - int(self.log_retention * 1_000_000_000))
        self._prune_memory()

    def _prune_memory(self) -> None:
        """Drop in-memory records no open snapshot or queued commit can still need.

        Invariant: memory holds only records above the oldest registered snapshot (pending
        commits pin theirs), so it stays flat however long the process runs; the retention
        period applies to the storage log, which other processes validate against.
        """
        with self._active_lock:
            oldest = min(self._active.values(), default=self.latest_ts)
        n = bisect.bisect_right(self._log_ts, oldest)
        if n:
            self._floor = max(self._floor, self._log_ts[n - 1])
            del self._log_ts[:n]
            del self._log_ws[:n]

    # -- the final attempt ----------------------------------------------------------------------

    def run_exclusive(
        self,
        body: Callable[[Transaction], Any],
        *,
        now: float,
        timeout: float,
        tables: Iterable[str] = (),
    ) -> tuple[Any, int]:
        """Run ``body`` holding the commit lock, so its transaction cannot conflict.

        Raises:
            ConflictError: the lock could not be had within ``timeout`` seconds; it names
                ``tables``, where the earlier attempts conflicted.
        """
        tables = list(tables)
        try:
            with self._exclusive_step(timeout, tables) as w:
                txn = Transaction(self, snapshot=w.snapshot(), now=now)
                result = body(txn)
                ts = self.latest_ts
                if txn.writes:
                    writes, ws = txn.commit_writes()
                    ts = self._apply_one(w, writes, ws)
        except RetryableStorageError as exc:
            # Nothing was applied, and this was the last attempt.
            raise ConflictError(tables, detail=f"the storage refused it: {exc}") from exc
        if txn.writes:
            self._publish([(ts, ws)])
            self._after_commit(txn)
        return result, ts

    def run_exclusive_batches(
        self, bodies: Iterable[Callable[[Transaction], None]], *, now: float, timeout: float
    ) -> int:
        """Run each body in its own transaction; commit them all together or not at all.

        For imports larger than one transaction may be: every batch is applied inside one
        storage transaction, holding the commit lock (as ``run_exclusive`` does), so nothing
        conflicts and an exception from any body leaves the database as it was. Each body sees
        the batches before it. Returns the number of documents written.

        Raises:
            ConflictError: the lock could not be had within ``timeout`` seconds.
        """
        commits: list[tuple[int, WriteSet]] = []
        written = 0
        with self._exclusive_step(timeout, []) as w:
            for body in bodies:
                txn = Transaction(self, snapshot=w.snapshot(), now=now)
                body(txn)
                if txn.writes:
                    writes, ws = txn.commit_writes()
                    commits.append((self._apply_one(w, writes, ws), ws))
                    written += len(writes)
        self._publish(commits)
        return written

    @contextmanager
    def _exclusive_step(self, timeout: float, tables: list[str]) -> Iterator[WriteSession]:
        """The commit step, caught up, holding the commit lock (``run_exclusive``).

        Requests queued meanwhile are committed first. Should the step fail, the timestamps it
        handed out are taken back: nothing of it reached storage.
        """
        if not self._commit_lock.acquire(timeout=timeout):
            raise ConflictError(tables, detail=f"the commit lock was busy for {timeout:g} s")
        try:
            with self._queue_lock:
                batch, self._queue = self._queue, []
            if batch:
                try:
                    self._commit_batch(batch)
                finally:
                    for req in batch:
                        req.finish()
            with ExitStack() as stack:
                try:
                    w = stack.enter_context(self.storage.begin_write(timeout=timeout))
                except TimeoutError:
                    raise ConflictError(tables, detail="the storage write lock was busy") from None
                self._catch_up(w)
                latest = self.latest_ts
                self._exclusive = w
                stack.callback(setattr, self, "_exclusive", None)
                try:
                    yield w
                except BaseException:
                    # Invariant: nothing of this step reached storage, so no timestamp was used.
                    self.latest_ts = latest
                    raise
        finally:
            self._commit_lock.release()

    def _apply_one(self, w: WriteSession, writes: list[DocumentWrite], ws: WriteSet) -> int:
        """Apply one transaction's writes in ``w`` at the next timestamp; return it."""
        ts = self._next_ts()
        w.apply([CommitBatchItem(ts=ts, writes=writes, log_record=ws.dump())])
        return ts

    # -- schemaless tables ----------------------------------------------------------------------

    def _ensure_table(self, space: TableSpace, name: str) -> Any:
        if self._exclusive is not None:
            return self.catalog.add_table(space, self._exclusive, name)
        with self._commit_lock, self.storage.begin_write() as w:
            info = space.tables.get(name)
            if info is not None:
                return info
            return self.catalog.add_table(space, w, name)
