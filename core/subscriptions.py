"""Owns subscriptions: a query's result now and again whenever a commit changes it.

``subscribe(runtime, ref, args, identity)`` is an async iterator (``subscribe_sync`` a blocking
one). Each run of the query keeps its read set and snapshot timestamp; the runtime's
``SubscriptionHub`` matches every commit's write set against the read sets of the live
subscriptions (indexed by document id and by index), and only the subscriptions a commit
touches run again. A result equal to the last one yielded is not yielded again, and commits
that land while a query re-runs are coalesced into the next run.

Invariants:

* After a run at snapshot ``S``, every commit with a timestamp above ``S`` is matched against
  the new read set: either it was already dispatched (it is in the recent history, checked when
  the read set is registered) or it is dispatched later (against the registered read set).
  History that no longer reaches back to ``S`` counts as a change.
* The database's commit listener only queues write sets (it runs under the commit lock); the
  hub's dispatcher thread does the matching and wakes subscribers, so commits never wait for
  subscribers.
* Other processes' commits reach the listener when the database catches up with the storage
  log. While subscriptions are live, a watcher thread checks for them: cheaply (the newest
  commit timestamp, read without the write lock) every ``poll_interval`` seconds, or as soon as
  the storage announces one (``Storage.wait_for_commit``, LISTEN/NOTIFY on PostgreSQL).

For a server (SSE), iterate ``subscribe(...)`` inside ``contextlib.aclosing`` and cancel it on
disconnect: closing the iterator unregisters the subscription.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from core.auth import UserIdentity
from core.errors import UserError
from core.services import Service

if TYPE_CHECKING:
    from core.database.readsets import KeyRange, ReadSet, WriteSet
    from core.database.transaction import Transaction
    from core.runtime import Runtime

logger = logging.getLogger("capsule.subscriptions")

POLL_INTERVAL = 0.05
"""Seconds between checks for other processes' commits while subscriptions are live."""
HISTORY = 4096
"""Recent commits kept to check a fresh read set against what landed while it ran."""
HISTORY_KEYS = 500_000
"""At most this many written ids and index keys are kept in that history (big commits)."""

_NOTHING = object()


class _Subscription:
    """One live subscription's registration: its read set, snapshot and wake-up."""

    __slots__ = ("reads", "ts", "dirty", "waker")

    def __init__(self) -> None:
        self.reads: ReadSet | None = None
        self.ts = 0
        self.dirty = False
        self.waker: tuple[Any, Any] | None = None
        """``(loop token, anyio.Event)`` or ``(None, threading.Event)`` while waiting."""


class SubscriptionHub(Service):
    """The subscriptions of one runtime: matches commits to read sets and wakes subscribers."""

    def __init__(self, runtime: Runtime, *, poll_interval: float = POLL_INTERVAL):
        super().__init__(runtime)
        self.db = runtime.db
        self.poll_interval = poll_interval
        self.query_runs = 0
        """Query executions on behalf of subscriptions (first runs and re-runs)."""
        self._cond = threading.Condition()
        self._subs: set[_Subscription] = set()
        self._by_doc: dict[str, set[_Subscription]] = {}
        self._by_index: dict[int, dict[_Subscription, list[KeyRange]]] = {}
        self._pending: list[tuple[int, WriteSet]] = []
        self._recent: deque[tuple[int, WriteSet, int]] = deque()
        self._recent_keys = 0
        self._floor = 0
        """Commits at or below this timestamp may be missing from ``_recent``."""
        self._received = 0
        self._dispatched = 0
        self._closed = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._remove_listener = self.db.add_listener(self._on_commit)

    @property
    def closed(self) -> bool:
        """Whether the runtime closed (live subscriptions then end)."""
        return self._closed

    @property
    def live(self) -> int:
        """How many subscriptions are registered."""
        return len(self._subs)

    @property
    def stale(self) -> int:
        """How many subscriptions a commit touched since their last run (due to re-run)."""
        with self._cond:
            return sum(1 for sub in self._subs if sub.dirty)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every commit seen so far was matched against the subscriptions.

        Returns False on timeout. Tests and benchmarks use it to observe the hub settled. It
        blocks: on an event loop whose subscriptions are waiting for updates, call it through
        ``anyio.to_thread`` (waking them needs that loop).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._received
            while self._dispatched < target and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    # -- registration ----------------------------------------------------------------------

    def add(self) -> _Subscription:
        """Register a new subscription (it matches nothing until its first run)."""
        sub = _Subscription()
        with self._cond:
            if self._closed:
                raise UserError("The runtime is closed: open a client to subscribe.")
            self._subs.add(sub)
            if not self._threads:
                self._start_threads()
            self._cond.notify_all()
        return sub

    def remove(self, sub: _Subscription) -> None:
        """Unregister a subscription."""
        with self._cond:
            self._unindex(sub)
            self._subs.discard(sub)
            sub.waker = None

    def _index(self, sub: _Subscription) -> None:
        reads = sub.reads
        if reads is None:
            return
        for doc in reads.docs:
            self._by_doc.setdefault(doc, set()).add(sub)
        for index, ranges in reads.ranges.items():
            self._by_index.setdefault(index, {})[sub] = ranges

    def _unindex(self, sub: _Subscription) -> None:
        reads = sub.reads
        if reads is None:
            return
        for doc in reads.docs:
            subs = self._by_doc.get(doc)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_doc[doc]
        for index in reads.ranges:
            by_sub = self._by_index.get(index)
            if by_sub is not None:
                by_sub.pop(sub, None)
                if not by_sub:
                    del self._by_index[index]

    def _register(self, sub: _Subscription, reads: ReadSet, ts: int) -> None:
        """Adopt the read set of a run at snapshot ``ts``; mark it dirty if already stale."""
        with self._cond:
            if sub not in self._subs:
                return
            self._unindex(sub)
            sub.reads, sub.ts = reads, ts
            self._index(sub)
            if ts < self._floor:
                sub.dirty = True
            else:
                sub.dirty = False
                for commit_ts, ws, _ in reversed(self._recent):
                    if commit_ts <= ts:
                        break
                    if reads.touched_by(ws):
                        sub.dirty = True
                        break

    # -- running ---------------------------------------------------------------------------

    def execute(
        self,
        sub: _Subscription,
        ref: Any,
        args: Any,
        identity: UserIdentity | None,
        caller: str | None = None,
    ) -> Any:
        """Run the query for ``sub`` (blocking) and register what it read.

        ``caller`` is as for ``Executor.query``: ``None`` for clients (public functions only),
        ``""`` for the app's own server-side code, which may reach internal queries.
        """
        seen: dict[str, Any] = {}

        def observe(txn: Transaction) -> None:
            seen["reads"] = txn.reads
            seen["ts"] = txn.snapshot_ts

        with self._cond:
            self.query_runs += 1
        result = self.runtime.executor.query(ref, args, identity, caller=caller, observe=observe)
        ts = seen.get("ts")
        self._register(sub, seen["reads"], self.db.latest_ts if ts is None else ts)
        return result

    def _arm(self, sub: _Subscription, waker: tuple[Any, Any]) -> bool:
        """Install a waker unless ``sub`` is already dirty; False means: run again now."""
        with self._cond:
            if sub.dirty or self._closed:
                return False
            sub.waker = waker
            return True

    async def wait(self, sub: _Subscription) -> None:
        """Wait (async) until a commit touches ``sub``'s read set or the hub closes."""
        event = anyio.Event()
        if self._arm(sub, (anyio.lowlevel.current_token(), event)):
            await event.wait()

    def wait_blocking(self, sub: _Subscription) -> None:
        """Wait (blocking) until a commit touches ``sub``'s read set or the hub closes."""
        event = threading.Event()
        if self._arm(sub, (None, event)):
            event.wait()

    # -- commits ---------------------------------------------------------------------------

    def _on_commit(self, ts: int, ws: WriteSet) -> None:
        # Runs under the database's commit lock: queue and return.
        with self._cond:
            if self._subs:
                self._pending.append((ts, ws))
                self._received += 1
                self._cond.notify_all()
            else:
                self._remember(ts, ws)

    def _remember(self, ts: int, ws: WriteSet) -> None:
        weight = len(ws.docs) + sum(len(keys) for keys in ws.keys.values())
        self._recent.append((ts, ws, weight))
        self._recent_keys += weight
        while len(self._recent) > HISTORY or (
            self._recent_keys > HISTORY_KEYS and len(self._recent) > 1
        ):
            old_ts, _, old_weight = self._recent.popleft()
            self._recent_keys -= old_weight
            self._floor = max(self._floor, old_ts)

    def _matching(self, ws: WriteSet) -> set[_Subscription]:
        found: set[_Subscription] = set()
        by_doc = self._by_doc
        for doc in ws.docs:
            subs = by_doc.get(doc)
            if subs:
                found.update(subs)
        for index, keys in ws.keys.items():
            by_sub = self._by_index.get(index)
            if not by_sub:
                continue
            for sub, ranges in by_sub.items():
                if sub in found:
                    continue
                if any(r.lo <= k and (r.hi is None or k < r.hi) for r in ranges for k in keys):
                    found.add(sub)
        return found

    def _dispatch_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                batch, self._pending = self._pending, []
                wakers: list[tuple[Any, Any]] = []
                for ts, ws in batch:
                    self._remember(ts, ws)
                    for sub in self._matching(ws):
                        if ts > sub.ts and not sub.dirty:
                            sub.dirty = True
                            if sub.waker is not None:
                                wakers.append(sub.waker)
                                sub.waker = None
                self._dispatched += len(batch)
                self._cond.notify_all()
            _fire(wakers)

    def _other_process_committed(self) -> bool:
        snap = self.db.storage.begin_read()
        try:
            return bool(snap.ts > self.db.latest_ts)
        finally:
            snap.close()

    def _watch_loop(self) -> None:
        storage = self.db.storage
        while True:
            with self._cond:
                while not self._subs and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
            start = time.monotonic()
            try:
                notified = storage.wait_for_commit(self.db.latest_ts, self.poll_interval)
            except Exception:
                notified = False
            if not notified:
                self._stop.wait(max(0.0, self.poll_interval - (time.monotonic() - start)))
            if self._closed:
                return
            try:
                if self._other_process_committed():
                    # Catching up tells the listeners (this hub, the scheduler) about them.
                    self.db.poll_other_processes()
            except Exception:
                if self._closed:
                    return
                logger.exception("could not look for other processes' commits")
                self._stop.wait(self.poll_interval)

    def _start_threads(self) -> None:
        for name, target in (("dispatch", self._dispatch_loop), ("watch", self._watch_loop)):
            thread = threading.Thread(
                target=target, name=f"capsule-subscriptions-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """End every subscription and stop the hub's threads (the runtime is closing)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._remove_listener()
            wakers = [s.waker for s in self._subs if s.waker is not None]
            for sub in self._subs:
                sub.waker = None
            self._cond.notify_all()
        self._stop.set()
        _fire(wakers)
        for thread in self._threads:
            thread.join(timeout=5)


def _set_all(events: list[anyio.Event]) -> None:
    for event in events:
        event.set()


def _fire(wakers: list[tuple[Any, Any]]) -> None:
    """Wake waiting subscribers: threading events directly, anyio events on their loops."""
    by_loop: dict[Any, list[anyio.Event]] = {}
    for token, event in wakers:
        if token is None:
            event.set()
        else:
            by_loop.setdefault(token, []).append(event)
    for token, events in by_loop.items():
        try:
            anyio.from_thread.run_sync(_set_all, events, token=token)
        except RuntimeError:
            pass  # that event loop has ended; so have its subscriptions


def subscription_hub(runtime: Runtime) -> SubscriptionHub:
    """The runtime's hub (a service without tables: made on first use, closed with it)."""
    return runtime.service(SubscriptionHub)


def same_value(a: Any, b: Any) -> bool:
    """Whether two values are identical, types included (``1`` is not ``1.0`` nor ``True``)."""
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_value(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b or (a != a and b != b)
    return bool(a == b)


async def subscribe(
    runtime: Runtime,
    ref: Any,
    args: dict[str, Any] | None = None,
    identity: UserIdentity | None = None,
    *,
    caller: str | None = None,
) -> AsyncGenerator[Any, None]:
    """Yield a public query's result now and again whenever a commit changes it.

    The iterator ends when the runtime closes; an error raised by the query ends it with that
    error. Close it (``aclosing``, or breaking out of ``async for``) to unsubscribe.
    ``caller=""`` lets the server's own code follow an internal query.
    """
    hub = subscription_hub(runtime)
    sub = hub.add()
    try:
        last: Any = _NOTHING
        while True:
            result = await anyio.to_thread.run_sync(hub.execute, sub, ref, args, identity, caller)
            if last is _NOTHING or not same_value(result, last):
                last = result
                yield result
            await hub.wait(sub)
            if hub.closed:
                return
    finally:
        hub.remove(sub)


def subscribe_sync(
    runtime: Runtime,
    ref: Any,
    args: dict[str, Any] | None = None,
    identity: UserIdentity | None = None,
) -> Generator[Any, None, None]:
    """The blocking form of ``subscribe`` (for the sync client and scripts)."""
    hub = subscription_hub(runtime)
    sub = hub.add()
    try:
        last: Any = _NOTHING
        while True:
            result = hub.execute(sub, ref, args, identity)
            if last is _NOTHING or not same_value(result, last):
                last = result
                yield result
            hub.wait_blocking(sub)
            if hub.closed:
                return
    finally:
        hub.remove(sub)
