"""Owns the scheduler: ``ctx.scheduler`` (run_after / run_at / cancel) and the runner of due jobs.

Jobs are documents of the ``_scheduled_functions`` system table, so they survive restarts and
are readable through ``ctx.db.system``. A job stores its function as a handle string
(``"fn:<namespace>|<path>"``), never a Python object.

Invariants:

* Scheduling from a mutation inserts the job in that mutation's transaction: the job exists
  exactly when the mutation committed. From an action it is its own small transaction.
* A scheduled mutation runs exactly once: its job is checked to be pending and marked
  ``success`` inside the transaction that runs the mutation, so of two runners racing for it
  only one commits (the other conflicts on the job document, re-runs, and finds it done).
  Conflicts and storage errors leave it pending, to be retried; an error raised by the
  mutation discards its writes and marks the job ``failed`` in a new transaction.
* A scheduled action runs at most once: it is claimed (``pending`` -> ``in_progress``, with
  the runner's id and a lease) in a transaction of its own before it starts, and nothing ever
  moves a job back to ``pending``. The runner renews the lease while the action runs; a job
  whose runner stopped (lease expired, or its process is gone from this host) is marked
  ``failed``, never re-run.
* Scheduled functions run with no identity.
* Cancelling a pending job prevents it; cancelling a running action lets it finish, but what it
  schedules from then on is inserted already ``canceled`` (the new job reads its parent job in
  the same transaction, so a concurrent cancel conflicts rather than slipping past).

The runner is a runtime service on the runtime's loop thread. It wakes when a commit touches a
system table (this process's commits, and other processes' as the database catches up with
them), at the next due time, and at least every ``poll_interval`` seconds to see work other
processes scheduled. ``TestApp.finish_scheduled`` drives the same passes deterministically.
"""

from __future__ import annotations

import contextvars
import logging
import math
import os
import random
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from core.database.query import Query
from core.errors import ConflictError, InvalidArgumentError, InvalidIdError, UserError
from core.execution import Abandoned
from core.ids import Id
from core.services import Service
from core.system_tables import (
    CANCELED,
    FAILED,
    FINISHED_STATES,
    IN_PROGRESS,
    PENDING,
    SCHEDULED_FUNCTIONS,
    SCHEDULED_FUNCTIONS_TABLE,
    SUCCESS,
    SYSTEM_NAMESPACE,
)
from core.values import check_value

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from core.database.catalog import TableSpace
    from core.database.readsets import WriteSet
    from core.database.transaction import Transaction
    from core.execution import Frame, Target
    from core.runtime import Runtime

logger = logging.getLogger("capsule.scheduler")

MAX_SCHEDULED_PER_MUTATION = 1000
"""Jobs one mutation may schedule (Convex's limit)."""
_HOST = socket.gethostname()
_RETENTION_BATCH = 256
_MAX_BACKOFF = 60.0

_current_job: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "capsule_current_job", default=None
)
"""The job whose function is running in this context (its children record it as parent)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerConfig:
    """How an app's scheduler behaves: set ``app.scheduler_config`` before opening it."""

    retention: float = 7 * 24 * 3600.0
    """Seconds a finished job's record is kept, then deleted (default 7 days)."""
    lease: float = 30.0
    """Seconds a runner's claim on a running action lasts unless renewed (every third)."""
    parallelism: int = 8
    """Jobs one process runs at the same time."""
    poll_interval: float = 1.0
    """Longest wait between looks for work that other processes scheduled."""
    sweep_interval: float = 60.0
    """Seconds (of the app's clock) between retention sweeps."""


class _AlreadyHandled(Abandoned):
    """Internal: the job was no longer pending when its mutation was about to commit."""


def new_runner_id() -> str:
    """A runner id: ``<host>:<pid>:<random>`` (host and pid let a restart see it is dead)."""
    return f"{_HOST}:{os.getpid()}:{secrets.token_hex(4)}"


def runner_is_dead(runner: str) -> bool:
    """Whether ``runner`` certainly stopped: it ran on this host in a process that is gone.

    A runner on another host (or one whose process still exists) is judged by its lease.
    """
    host, _, rest = runner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != _HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _check_delay(seconds: Any) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidArgumentError(
            f"run_after() takes a delay in seconds (a number), not {type(seconds).__name__}."
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidArgumentError(
            f"run_after() needs a finite delay of at least 0 seconds, not {seconds!r}."
        )
    return float(seconds)


def _check_time(timestamp: Any) -> float:
    if isinstance(timestamp, datetime):
        if timestamp.tzinfo is None:
            raise InvalidArgumentError(
                "run_at() needs a timezone-aware datetime (e.g. datetime.now(timezone.utc)) "
                "or seconds since the epoch."
            )
        return timestamp.timestamp()
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        raise InvalidArgumentError(
            f"run_at() takes seconds since the epoch or a datetime, not {type(timestamp).__name__}."
        )
    if not math.isfinite(timestamp):
        raise InvalidArgumentError(f"run_at() needs a finite time, not {timestamp!r}.")
    return float(timestamp)


class Scheduler(Service):
    """The scheduler of one runtime: schedules, cancels and runs jobs.

    Args:
        runtime: the open runtime whose database holds the jobs.
        config: retention, lease, parallelism and polling settings (default: the app's
            ``scheduler_config``).
    """

    tables = {SCHEDULED_FUNCTIONS: SCHEDULED_FUNCTIONS_TABLE}

    def __init__(self, runtime: Runtime, config: SchedulerConfig | None = None):
        super().__init__(runtime)
        self.db = runtime.db
        self.executor = runtime.executor
        self.config = config or runtime.app.scheduler_config
        self.runner_id = new_runner_id()
        """This runner's id, recorded on the action jobs it claims."""
        self.lease_clock: Callable[[], float] = time.time
        """Wall-clock time for leases (never the app's manual clock, which tests move)."""
        self.renew_every: float = self.config.lease / 3
        """Real seconds between lease renewals while actions run."""
        self.tick_hooks: list[Callable[[float], None]] = []
        """Called with the app-clock time at the start of each pass (crons dispatch here)."""
        self.due_hooks: list[Callable[[], float | None]] = []
        """Each returns the next app-clock time it has work, or ``None``."""
        self.jobs_run = 0
        """Jobs this runner started (mutations and actions)."""
        self._running: set[str] = set()
        self._leases: set[str] = set()
        self._retry_at: dict[str, tuple[float, int]] = {}
        self._wake = threading.Event()
        self._last_retention = -math.inf
        self._scheduled_in: weakref.WeakKeyDictionary[Transaction, int] = (
            weakref.WeakKeyDictionary()
        )
        """Jobs each open transaction scheduled (nested calls share their caller's)."""
        system = self.space
        self._tables = {info.number for info in system.tables.values()}
        self._remove_listener = self.db.add_listener(self._on_commit)

    # -- plumbing ------------------------------------------------------------------------

    @property
    def space(self) -> TableSpace:
        """The ``_system`` table space."""
        return self.db.catalog.space(SYSTEM_NAMESPACE)

    @property
    def clock(self) -> Any:
        """The app's clock (scheduled times are in its seconds)."""
        return self.executor.clock

    def wake(self) -> None:
        """Ask the runner for a pass now (thread-safe)."""
        self._wake.set()

    def _on_commit(self, ts: int, ws: WriteSet) -> None:
        # Called under the database's commit lock: only set a flag.
        if not self._tables.isdisjoint(ws.tables):
            self._wake.set()

    def close(self) -> None:
        """Detach from the database (the runtime is closing)."""
        self._remove_listener()
        self._wake.set()

    def transact(self, body: Callable[[Transaction], Any], label: str) -> Any:
        """Run ``body`` in its own transaction, retried on conflicts until it commits."""
        return self.executor.run_transaction(body, label=f"scheduler: {label}")

    @contextmanager
    def _reading(self) -> Iterator[Transaction]:
        txn = self.db.transaction(now=self.clock.time())
        try:
            yield txn
        finally:
            txn.close()

    def _jobs(self, txn: Transaction) -> Query:
        return Query(txn, self.space, self.space.table(SCHEDULED_FUNCTIONS))

    # -- scheduling ----------------------------------------------------------------------

    def for_frame(self, frame: Frame) -> MutationScheduler | ActionScheduler:
        """``ctx.scheduler`` for a function invocation."""
        if frame.kind == "action":
            return ActionScheduler(self, frame)
        if frame.kind == "mutation":
            return MutationScheduler(self, frame)
        raise UserError(
            f"ctx.scheduler is not available in a {frame.kind}: schedule from a mutation or "
            "an action."
        )

    def schedule(self, txn: Transaction, *, namespace: str, when: float, ref: Any, args: Any) -> Id:
        """Insert a job for ``ref(args)`` at ``when`` in ``txn``, as ``namespace`` sees ``ref``.

        Raises:
            UserError: ``ref`` is a query (only mutations and actions can be scheduled).
            InvalidArgumentError: ``args`` do not fit the function.
        """
        target = self.executor.resolve(ref, caller=namespace)
        args = self.check_args(target, args, namespace)
        return self.insert_job(
            txn,
            target=target,
            namespace=namespace,
            when=when,
            args=args,
            parent=_current_job.get(),
        )

    def check_args(self, target: Target, args: Any, namespace: str) -> dict[str, Any]:
        """Check a schedulable target and its arguments; return the arguments to store.

        Raises:
            UserError: the target is a query.
            InvalidArgumentError: ``args`` do not fit the function.
        """
        kind = target.ref.kind.value
        if kind not in ("mutation", "action"):
            raise UserError(
                f'Only mutations and actions can be scheduled; "{target.ref.path}" is a {kind}.'
            )
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise InvalidArgumentError(
                f'Arguments to "{target.ref.path}" must be a dict, not {type(args).__name__}.',
                function=target.ref.path,
            )
        # Function references among the arguments travel as handles, as in ctx.run_*.
        args = self.executor._handles_in(args, namespace)
        space = self.db.catalog.spaces.get(target.namespace)
        target.ref.validate_args(args, space.validation_context() if space else None)
        check_value(args, what=f'the arguments of "{target.ref.path}"')
        return dict(args)

    def insert_job(
        self,
        txn: Transaction,
        *,
        target: Target,
        namespace: str,
        when: float,
        args: dict[str, Any],
        parent: str | None = None,
        cron: str | None = None,
    ) -> Id:
        """Insert a job document in ``txn`` (checked arguments); wake the runner on commit."""
        space = self.space
        state: str = PENDING
        completed: float | None = None
        if parent is not None:
            # Read in this transaction: a cancel of the parent racing with this insert
            # conflicts, so the child cannot be inserted pending after its parent was canceled.
            found = txn.get(space, parent)
            if found is not None and found["state"] == CANCELED:
                state, completed = CANCELED, txn.now
        job_id = txn.insert(
            space,
            SCHEDULED_FUNCTIONS,
            {
                "name": target.ref.path,
                "handle": self.executor.handle(target),
                "namespace": namespace,
                "kind": target.ref.kind.value,
                "args": args,
                "scheduled_time": float(when),
                "state": state,
                "completed_time": completed,
                "parent": parent,
                "cron": cron,
            },
        )
        if self.wake not in txn.after_commit:
            txn.after_commit.append(self.wake)
        return job_id

    def cancel(self, txn: Transaction, *, namespace: str, job_id: Any) -> None:
        """Cancel a job in ``txn`` (and, recursively, the jobs it scheduled).

        Raises:
            InvalidIdError: ``job_id`` is not a job, or a job another table space scheduled.
        """
        if not isinstance(job_id, str):
            raise InvalidArgumentError(f"cancel() takes a job id, not {type(job_id).__name__}.")
        space = self.space
        job_id = space.resolve_id(job_id, SCHEDULED_FUNCTIONS)
        job = txn.get(space, job_id)
        if job is None:
            return
        if job["namespace"] != namespace:
            owner = f'component "{namespace}"' if namespace else "the app"
            raise InvalidIdError(
                f'"{job_id}" is not a job scheduled by {owner}.', table=SCHEDULED_FUNCTIONS
            )
        self._cancel(txn, job)

    def _cancel(self, txn: Transaction, job: dict[str, Any]) -> None:
        if job["state"] not in (PENDING, IN_PROGRESS):
            return
        txn.patch(self.space, job["_id"], {"state": CANCELED, "completed_time": txn.now})
        children = (
            self._jobs(txn).with_index("by_parent", lambda r: r.eq("parent", job["_id"])).collect()
        )
        for child in children:
            self._cancel(txn, child)

    # -- finding work --------------------------------------------------------------------

    def due_jobs(self, now: float, limit: int) -> list[dict[str, Any]]:
        """Pending jobs due at ``now`` that this process is not already running."""
        if limit <= 0:
            return []
        skip = self._skipped()
        with self._reading() as txn:
            rows = self._jobs(txn).with_index(
                "by_state_time", lambda r: r.eq("state", PENDING).lte("scheduled_time", now)
            )
            out: list[dict[str, Any]] = []
            for job in rows:
                if job["_id"] in skip:
                    continue
                out.append(job)
                if len(out) >= limit:
                    break
            return out

    def next_due(self) -> float | None:
        """The app-clock time of the earliest job or other timed work this runner could start.

        Jobs this process is running, or is backing off from, do not count (a finishing job
        wakes the runner, and ``wait_time`` covers backoffs).
        """
        skip = self._skipped()
        first = None
        with self._reading() as txn:
            pending = self._jobs(txn).with_index("by_state_time", lambda r: r.eq("state", PENDING))
            for job in pending:
                if job["_id"] not in skip:
                    first = job
                    break
        times = [] if first is None else [float(first["scheduled_time"])]
        for hook in self.due_hooks:
            t = hook()
            if t is not None:
                times.append(t)
        return min(times, default=None)

    def _skipped(self) -> set[str]:
        """Jobs not to start now: running in this process, or backing off after an error."""
        mono = time.monotonic()
        skip = set(self._running)
        for job_id, (at, _) in list(self._retry_at.items()):
            if at > mono:
                skip.add(job_id)
            elif mono - at > 2 * _MAX_BACKOFF:
                del self._retry_at[job_id]  # long settled (perhaps by another runner)
        return skip

    def wait_time(self, next_due: float | None) -> float:
        """Real seconds the runner may sleep before its next pass (woken sooner by commits)."""
        delay = self.config.poll_interval
        if len(self._running) >= self.config.parallelism:
            return delay  # no free slot: a finishing job wakes the runner
        if next_due is not None:
            delay = min(delay, next_due - self.clock.time())
        mono = time.monotonic()
        backoffs = [at - mono for at, _ in list(self._retry_at.values()) if at > mono]
        if backoffs:
            delay = min(delay, min(backoffs))
        return max(delay, 0.005)

    # -- housekeeping --------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """Fail action jobs whose runner stopped; delete finished jobs past retention."""
        with self._reading() as txn:
            running = (
                self._jobs(txn)
                .with_index("by_state_time", lambda r: r.eq("state", IN_PROGRESS))
                .take(1000)
            )
        lease_now = self.lease_clock()
        for job in running:
            runner = job["runner"] or ""
            if runner == self.runner_id:
                continue
            expires = job["lease_expires"]
            if expires is None or expires < lease_now or runner_is_dead(runner):
                self._fail_abandoned(job["_id"], runner)
        if now - self._last_retention >= self.config.sweep_interval:
            self._last_retention = now
            self._delete_expired(now - self.config.retention)

    def _fail_abandoned(self, job_id: str, runner: str) -> None:
        space = self.space

        def attempt(txn: Transaction) -> None:
            job = txn.get(space, job_id)
            if job is None or job["state"] != IN_PROGRESS or job["runner"] != runner:
                return
            expires = job["lease_expires"]
            if expires is not None and expires >= self.lease_clock() and not runner_is_dead(runner):
                return  # renewed meanwhile: its runner is alive
            txn.patch(
                space,
                job_id,
                {
                    "state": FAILED,
                    "completed_time": txn.now,
                    "lease_expires": None,
                    "error": "Transient error while executing action: its runner stopped "
                    "before it finished; actions run at most once, so it is not re-run.",
                },
            )
            logger.warning("scheduled action %s failed: its runner %s stopped", job_id, runner)

        self.transact(attempt, "fail abandoned action")

    def _delete_expired(self, cutoff: float) -> None:
        space = self.space

        def attempt(txn: Transaction) -> int:
            rows = (
                self._jobs(txn)
                .with_index(
                    "by_completed_time",
                    lambda r: r.gt("completed_time", None).lt("completed_time", cutoff),
                )
                .take(_RETENTION_BATCH)
            )
            for job in rows:
                if job["state"] in FINISHED_STATES:
                    txn.delete(space, job["_id"])
            return len(rows)

        while self.transact(attempt, "retention") >= _RETENTION_BATCH:
            pass

    # -- running jobs --------------------------------------------------------------------

    def run_mutation_job(self, job: dict[str, Any]) -> None:
        """Run a mutation job exactly once (blocking; call it from a worker thread)."""
        job_id = job["_id"]
        space = self.space
        token = _current_job.set(job_id)

        def before_commit(txn: Transaction, result: Any) -> None:
            # Invariant: the job turns from pending to success in the transaction that ran
            # the mutation; a second runner's attempt conflicts here and then sees it done.
            current = txn.get(space, job_id)
            if current is None or current["state"] != PENDING:
                raise _AlreadyHandled
            txn.patch(
                space,
                job_id,
                {"state": SUCCESS, "started_time": txn.now, "completed_time": txn.now},
            )

        try:
            self.executor.mutation(
                job["handle"],
                job["args"],
                None,
                caller=job["namespace"],
                before_commit=before_commit,
            )
            self._retry_at.pop(job_id, None)
        except _AlreadyHandled:
            self._retry_at.pop(job_id, None)
        except Exception as exc:
            if self._transient(exc):
                self._back_off(job_id, exc)
            else:
                self._retry_at.pop(job_id, None)
                self._fail_pending(job_id, _describe(exc))
        finally:
            _current_job.reset(token)

    def _transient(self, exc: BaseException) -> bool:
        """Errors that say nothing about the function (retry the job later, do not fail it).

        Whether a storage error is transient is the storage backend's call.
        """
        return isinstance(exc, ConflictError) or self.db.storage.is_transient(exc)

    def _back_off(self, job_id: str, exc: BaseException) -> None:
        _, n = self._retry_at.get(job_id, (0.0, 0))
        delay = min(0.05 * 2**n, _MAX_BACKOFF) * random.uniform(0.5, 1.0)
        self._retry_at[job_id] = (time.monotonic() + delay, n + 1)
        logger.info("scheduled job %s will be retried in %.2f s: %s", job_id, delay, exc)

    def _fail_pending(self, job_id: str, error: str) -> None:
        space = self.space

        def attempt(txn: Transaction) -> None:
            job = txn.get(space, job_id)
            if job is not None and job["state"] == PENDING:
                txn.patch(
                    space, job_id, {"state": FAILED, "error": error, "completed_time": txn.now}
                )

        self.transact(attempt, "fail mutation job")

    def _claim(self, job_id: str) -> bool:
        space = self.space

        def attempt(txn: Transaction) -> bool:
            job = txn.get(space, job_id)
            if job is None or job["state"] != PENDING:
                return False
            txn.patch(
                space,
                job_id,
                {
                    "state": IN_PROGRESS,
                    "runner": self.runner_id,
                    "started_time": txn.now,
                    "lease_expires": self.lease_clock() + self.config.lease,
                },
            )
            return True

        return bool(self.transact(attempt, "claim action"))

    def _finish_action(self, job_id: str, state: str, error: str | None) -> None:
        space = self.space

        def attempt(txn: Transaction) -> None:
            job = txn.get(space, job_id)
            if job is None or job["runner"] != self.runner_id:
                return
            if job["state"] == IN_PROGRESS:
                txn.patch(
                    space,
                    job_id,
                    {
                        "state": state,
                        "error": error,
                        "completed_time": txn.now,
                        "lease_expires": None,
                    },
                )
            elif job["state"] == CANCELED:
                txn.patch(space, job_id, {"error": error, "lease_expires": None})

        try:
            self.transact(attempt, "finish action")
        except Exception:
            logger.exception("could not record the end of scheduled action %s", job_id)

    def renew_leases(self) -> None:
        """Extend the lease of every action this runner is running."""
        held = list(self._leases)
        if not held:
            return
        space = self.space

        def attempt(txn: Transaction) -> None:
            for job_id in held:
                job = txn.get(space, job_id)
                if (
                    job is not None
                    and job["state"] == IN_PROGRESS
                    and (job["runner"] == self.runner_id)
                ):
                    txn.patch(
                        space, job_id, {"lease_expires": self.lease_clock() + self.config.lease}
                    )

        self.transact(attempt, "renew leases")

    async def run_action_job(self, job: dict[str, Any]) -> None:
        """Claim an action job and run it (at most once)."""
        job_id = job["_id"]
        if not await anyio.to_thread.run_sync(self._claim, job_id):
            return
        self._leases.add(job_id)
        token = _current_job.set(job_id)
        try:
            await self.executor.action(job["handle"], job["args"], None, caller=job["namespace"])
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(
                    self._finish_action,
                    job_id,
                    FAILED,
                    "Interrupted: the runner stopped while the action ran; it is not re-run.",
                )
            raise
        except Exception as exc:
            await anyio.to_thread.run_sync(self._finish_action, job_id, FAILED, _describe(exc))
        else:
            await anyio.to_thread.run_sync(self._finish_action, job_id, SUCCESS, None)
        finally:
            _current_job.reset(token)
            self._leases.discard(job_id)

    async def _run_job(self, job: dict[str, Any], done: Callable[[], None]) -> None:
        try:
            if job["kind"] == "mutation":
                await anyio.to_thread.run_sync(self.run_mutation_job, job)
            else:
                await self.run_action_job(job)
        except Exception:
            logger.exception("scheduled job %s (%s) could not run", job["_id"], job["name"])
        finally:
            self._running.discard(job["_id"])
            done()

    # -- passes --------------------------------------------------------------------------

    def _prepare(self, now: float, capacity: int) -> list[dict[str, Any]]:
        for hook in self.tick_hooks:
            try:
                hook(now)
            except Exception:
                logger.exception("scheduler tick hook failed")
        try:
            self.sweep(now)
        except Exception:
            logger.exception("scheduler sweep failed")
        return self.due_jobs(now, capacity)

    async def run_pass(
        self, tg: TaskGroup, done: Callable[[], None], *, limit: int | None = None
    ) -> int:
        """One pass: dispatch crons, sweep, and start due jobs in ``tg``; returns how many.

        At most ``parallelism`` jobs run at once in this process (and at most ``limit`` are
        started by this pass); ``done()`` is called as each one ends.
        """
        capacity = self.config.parallelism - len(self._running)
        if limit is not None:
            capacity = min(capacity, limit)
        jobs = await anyio.to_thread.run_sync(self._prepare, self.clock.time(), capacity)
        started = 0
        for job in jobs:
            # Another pass on this loop may have started it while we were in the thread.
            if job["_id"] in self._running:
                continue
            self._running.add(job["_id"])
            self.jobs_run += 1
            started += 1
            tg.start_soon(self._run_job, job, done)
        return started

    async def _renew_loop(self) -> None:
        while True:
            await anyio.sleep(self.renew_every)
            if self._leases:
                try:
                    await anyio.to_thread.run_sync(self.renew_leases)
                except Exception:
                    logger.exception("could not renew the leases of running actions")

    async def finish(self, *, max_jobs: int = 10_000) -> int:
        """Run everything due now, including what those jobs schedule, until nothing is due.

        Deterministic: due crons are dispatched, then jobs run one at a time, earliest
        scheduled first (so tests see no conflicts between jobs). Returns the number of jobs
        started. Jobs other callers are running are neither started again nor waited for.

        Raises:
            UserError: more than ``max_jobs`` ran (a function probably reschedules itself).
        """
        total = 0
        finished = anyio.Event()

        def done() -> None:
            finished.set()

        error: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._renew_loop)
            while total <= max_jobs:
                finished = anyio.Event()
                try:
                    started = await self.run_pass(tg, done, limit=1)
                except Exception as exc:  # raised below, not wrapped in an ExceptionGroup
                    error = exc
                    break
                if not started:
                    break
                total += 1
                await finished.wait()
            tg.cancel_scope.cancel()
        if error is not None:
            raise error
        if total > max_jobs:
            raise UserError(
                f"finish_scheduled() started more than {max_jobs:,} jobs and work is still due: "
                "a function probably schedules itself without end."
            )
        return total

    async def run(self) -> None:
        """The runtime's background loop: ``serve``."""
        await self.serve()

    async def serve(self) -> None:
        """The runner: a pass on each wake-up, due time and ``poll_interval``, until cancelled."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._renew_loop)
                while True:
                    self._wake.clear()
                    try:
                        await self.run_pass(tg, self.wake)
                        next_due = await anyio.to_thread.run_sync(self.next_due)
                    except Exception:
                        logger.exception("scheduler pass failed")
                        next_due = None
                    delay = self.wait_time(next_due)
                    await anyio.to_thread.run_sync(self._wake.wait, delay, abandon_on_cancel=True)
        finally:
            self._wake.set()


class MutationScheduler:
    """``ctx.scheduler`` in a mutation: jobs are part of the mutation's transaction."""

    __slots__ = ("_scheduler", "_frame")

    def __init__(self, scheduler: Scheduler, frame: Frame):
        self._scheduler = scheduler
        self._frame = frame

    def _txn(self) -> Transaction:
        txn = self._frame.txn
        if txn is None:  # pragma: no cover - a mutation frame always has one
            raise UserError("ctx.scheduler needs the mutation's transaction.")
        return txn

    def run_after(self, seconds: float, ref: Any, args: dict[str, Any] | None = None) -> Id:
        """Run ``ref(args)`` ``seconds`` after this mutation's ``ctx.now``, if it commits."""
        return self.run_at(self._frame.now + _check_delay(seconds), ref, args)

    def run_at(self, timestamp: Any, ref: Any, args: dict[str, Any] | None = None) -> Id:
        """Run ``ref(args)`` at ``timestamp`` (seconds since the epoch or an aware datetime)."""
        when = _check_time(timestamp)
        txn = self._txn()
        counts = self._scheduler._scheduled_in
        counts[txn] = counts.get(txn, 0) + 1
        if counts[txn] > MAX_SCHEDULED_PER_MUTATION:
            raise UserError(
                f"A mutation may schedule at most {MAX_SCHEDULED_PER_MUTATION:,} functions."
            )
        return self._scheduler.schedule(
            txn, namespace=self._frame.namespace, when=when, ref=ref, args=args
        )

    def cancel(self, id: str) -> None:
        """Cancel a job (if this mutation commits): pending ones never run."""
        self._scheduler.cancel(self._txn(), namespace=self._frame.namespace, job_id=id)


class ActionScheduler:
    """``ctx.scheduler`` in an action: each call is its own small transaction (``await`` it)."""

    __slots__ = ("_scheduler", "_frame")

    def __init__(self, scheduler: Scheduler, frame: Frame):
        self._scheduler = scheduler
        self._frame = frame

    async def run_after(self, seconds: float, ref: Any, args: dict[str, Any] | None = None) -> Id:
        """Run ``ref(args)`` ``seconds`` from now."""
        delay = _check_delay(seconds)
        return await self._schedule(lambda: self._scheduler.clock.time() + delay, ref, args)

    async def run_at(self, timestamp: Any, ref: Any, args: dict[str, Any] | None = None) -> Id:
        """Run ``ref(args)`` at ``timestamp`` (seconds since the epoch or an aware datetime)."""
        when = _check_time(timestamp)
        return await self._schedule(lambda: when, ref, args)

    async def _schedule(self, when: Callable[[], float], ref: Any, args: Any) -> Id:
        sched = self._scheduler
        namespace = self._frame.namespace

        def attempt(txn: Transaction) -> Id:
            return sched.schedule(txn, namespace=namespace, when=when(), ref=ref, args=args)

        result: Id = await anyio.to_thread.run_sync(sched.transact, attempt, "schedule")
        return result

    async def cancel(self, id: str) -> None:
        """Cancel a job: a pending one never runs; a running action's schedules are canceled."""
        sched = self._scheduler
        namespace = self._frame.namespace

        def attempt(txn: Transaction) -> None:
            sched.cancel(txn, namespace=namespace, job_id=id)

        await anyio.to_thread.run_sync(sched.transact, attempt, "cancel")


# -- wiring ------------------------------------------------------------------------------------


def scheduler_of(runtime: Runtime) -> Scheduler:
    """The scheduler of an open runtime (``runtime.service(Scheduler)``).

    Raises:
        UserError: the app runs no scheduler.
    """
    return runtime.service(Scheduler)
