"""Owns crons: ``app.crons`` (interval / cron / hourly / daily / weekly) and their dispatch.

A cron is declared in code and mirrored in the ``_crons`` system table: its schedule, the next
time it is due and the job of its latest run. The scheduler's runner dispatches it: when due,
one transaction schedules a job for it and moves ``next_time`` on, so a restart (or a second
process) never runs one occurrence twice. All times are UTC.

Invariants:

* A cron whose previous run has not finished (its job is pending or running) when the next
  is due skips that occurrence: runs are never stacked.
* Occurrences missed while nothing was running the app are coalesced into one run; a test that
  wants every occurrence moves its clock one interval at a time.
* An interval cron first runs one interval after the app first starts with it; an unchanged
  cron keeps its ``next_time`` across restarts, a changed schedule starts afresh.

Components declare crons with ``Crons.of(component)``; each mounted instance gets its own.
"""

from __future__ import annotations

import functools
import logging
import math
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from croniter import croniter

from core.database.query import Query
from core.errors import UserError
from core.scheduler import Scheduler
from core.services import Service
from core.system_tables import CRONS, CRONS_TABLE, IN_PROGRESS, PENDING

if TYPE_CHECKING:
    from core.database.transaction import Transaction
    from core.execution import Target
    from core.runtime import Runtime

logger = logging.getLogger("capsule.crons")

_DAYS = {
    "sunday": 0,
    "monday": 1,
    "tuesday": 2,
    "wednesday": 3,
    "thursday": 4,
    "friday": 5,
    "saturday": 6,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """When a cron runs: every ``seconds``, or at the times a cron expression names (UTC)."""

    seconds: float | None = None
    """The interval, for interval crons."""
    expression: str | None = None
    """A five-field cron expression (minute hour day-of-month month day-of-week)."""

    def describe(self) -> str:
        """A stable text form, stored to notice changed schedules."""
        if self.seconds is not None:
            return f"interval:{self.seconds:g}"
        return f"cron:{self.expression}"

    def first(self, now: float) -> float:
        """The first due time for a cron that starts at ``now``."""
        if self.seconds is not None:
            return now + self.seconds
        return self._after(now)

    def following(self, due: float, now: float) -> float:
        """The due time after an occurrence ``due`` dispatched (or skipped) at ``now``.

        Occurrences at or before ``now`` are passed over, so missed ones coalesce.
        """
        if self.seconds is not None:
            steps = max(1, math.floor((now - due) / self.seconds) + 1)
            nxt = due + steps * self.seconds
            while nxt <= now:  # guard against float rounding
                nxt += self.seconds
            return nxt
        return self._after(now)

    def _after(self, t: float) -> float:
        start = datetime.fromtimestamp(t, UTC)
        return float(croniter(str(self.expression), start).get_next(float))


@dataclass(frozen=True, slots=True, kw_only=True)
class CronJob:
    """One declared cron: a name, the function it runs, its arguments and its schedule."""

    name: str
    ref: Any
    """A function reference or path (a mutation or an action)."""
    args: dict[str, Any] = field(default_factory=dict)
    schedule: Schedule


def _check_int(what: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UserError(f"{what} must be an int from {low} to {high}, not {value!r}.")
    return value


class Crons:
    """A set of cron declarations: ``app.crons``, or ``Crons.of(component)`` for a component."""

    def __init__(self) -> None:
        self.jobs: dict[str, CronJob] = {}
        """Declared crons by name."""

    def __repr__(self) -> str:
        return f"<Crons {sorted(self.jobs)}>"

    @staticmethod
    def of(component: Any) -> Crons:
        """The crons of a component (every mounted instance of it runs them)."""
        crons = _component_crons.get(component)
        if crons is None:
            crons = _component_crons[component] = Crons()
        return crons

    def _add(self, name: str, ref: Any, args: Any, schedule: Schedule) -> CronJob:
        if not isinstance(name, str) or not name.strip():
            raise UserError(f"A cron needs a non-empty name, not {name!r}.")
        if name in self.jobs:
            raise UserError(f'A cron named "{name}" is already declared.')
        if args is not None and not isinstance(args, dict):
            raise UserError(f'Cron "{name}": args must be a dict, not {type(args).__name__}.')
        job = CronJob(name=name, ref=ref, args=dict(args or {}), schedule=schedule)
        self.jobs[name] = job
        return job

    def interval(
        self,
        name: str,
        ref: Any,
        args: dict[str, Any] | None = None,
        *,
        seconds: float = 0,
        minutes: float = 0,
        hours: float = 0,
    ) -> CronJob:
        """Run ``ref(args)`` every interval; the first run is one interval after the app starts."""
        total = seconds + 60 * minutes + 3600 * hours
        if not isinstance(total, int | float) or not math.isfinite(total) or total <= 0:
            raise UserError(f'Cron "{name}": the interval must be a positive number of seconds.')
        return self._add(name, ref, args, Schedule(seconds=float(total)))

    def cron(
        self, name: str, expression: str, ref: Any, args: dict[str, Any] | None = None
    ) -> CronJob:
        """Run ``ref(args)`` at the times a five-field cron expression names (UTC)."""
        if (
            not isinstance(expression, str)
            or len(expression.split()) != 5
            or not croniter.is_valid(expression)
        ):
            raise UserError(
                f'Cron "{name}": {expression!r} is not a cron expression of five fields '
                '(minute hour day-of-month month day-of-week), e.g. "0 9 * * 1".'
            )
        return self._add(name, ref, args, Schedule(expression=" ".join(expression.split())))

    def hourly(
        self, name: str, ref: Any, args: dict[str, Any] | None = None, *, minute: int = 0
    ) -> CronJob:
        """Run ``ref(args)`` every hour at ``minute`` past (UTC)."""
        minute = _check_int(f'Cron "{name}": minute', minute, 0, 59)
        return self.cron(name, f"{minute} * * * *", ref, args)

    def daily(
        self,
        name: str,
        ref: Any,
        args: dict[str, Any] | None = None,
        *,
        hour: int = 0,
        minute: int = 0,
    ) -> CronJob:
        """Run ``ref(args)`` every day at ``hour:minute`` UTC."""
        hour = _check_int(f'Cron "{name}": hour', hour, 0, 23)
        minute = _check_int(f'Cron "{name}": minute', minute, 0, 59)
        return self.cron(name, f"{minute} {hour} * * *", ref, args)

    def weekly(
        self,
        name: str,
        ref: Any,
        args: dict[str, Any] | None = None,
        *,
        day_of_week: str,
        hour: int = 0,
        minute: int = 0,
    ) -> CronJob:
        """Run ``ref(args)`` weekly on ``day_of_week`` (``"monday"``...) at ``hour:minute`` UTC."""
        day = _DAYS.get(day_of_week.lower()) if isinstance(day_of_week, str) else None
        if day is None:
            day = next(
                (
                    n
                    for d, n in _DAYS.items()
                    if isinstance(day_of_week, str) and d[:3] == day_of_week.lower()
                ),
                None,
            )
        if day is None:
            raise UserError(
                f'Cron "{name}": day_of_week must name a day ("monday" ... "sunday"), '
                f"not {day_of_week!r}."
            )
        hour = _check_int(f'Cron "{name}": hour', hour, 0, 23)
        minute = _check_int(f'Cron "{name}": minute', minute, 0, 59)
        return self.cron(name, f"{minute} {hour} * * {day}", ref, args)


_component_crons: weakref.WeakKeyDictionary[Any, Crons] = weakref.WeakKeyDictionary()


class CronRunner:
    """Keeps the ``_crons`` table in line with the declarations and dispatches due crons."""

    def __init__(self, scheduler: Scheduler, declared: list[tuple[str, CronJob]]):
        self.scheduler = scheduler
        self.entries: dict[tuple[str, str], tuple[CronJob, Target, dict[str, Any]]] = {}
        executor = scheduler.executor
        for namespace, job in declared:
            try:
                target = executor.resolve(job.ref, caller=namespace)
                args = scheduler.check_args(target, job.args, namespace)
            except Exception as exc:
                where = f' of component "{namespace}"' if namespace else ""
                raise UserError(f'Cron "{job.name}"{where} cannot be scheduled: {exc}') from exc
            self.entries[(namespace, job.name)] = (job, target, args)

    def _rows(self, txn: Transaction) -> Query:
        space = self.scheduler.space
        return Query(txn, space, space.table(CRONS))

    def sync(self) -> None:
        """Insert new crons, reset changed ones, delete ones no longer declared."""
        scheduler = self.scheduler
        space = scheduler.space

        def attempt(txn: Transaction) -> None:
            existing = {(r["namespace"], r["name"]): r for r in self._rows(txn).collect()}
            for key, (job, target, args) in self.entries.items():
                row = existing.pop(key, None)
                fields = {
                    "function": target.ref.path,
                    "handle": scheduler.executor.handle(target),
                    "kind": target.ref.kind.value,
                    "args": args,
                    "schedule": job.schedule.describe(),
                }
                if row is None:
                    txn.insert(
                        space,
                        CRONS,
                        {
                            "namespace": key[0],
                            "name": key[1],
                            **fields,
                            "next_time": job.schedule.first(txn.now),
                            "last_time": None,
                            "job": None,
                        },
                    )
                elif row["schedule"] != fields["schedule"]:
                    txn.patch(
                        space, row["_id"], {**fields, "next_time": job.schedule.first(txn.now)}
                    )
                elif any(row[k] != v for k, v in fields.items()):
                    txn.patch(space, row["_id"], fields)
            for row in existing.values():
                txn.delete(space, row["_id"])

        scheduler.transact(attempt, "sync crons")

    def dispatch(self, now: float) -> None:
        """Schedule a run of every cron due at ``now`` (or skip it if its last run is going)."""
        scheduler = self.scheduler
        txn = scheduler.db.transaction(now=now)
        try:
            due = [
                r["_id"]
                for r in self._rows(txn).with_index(
                    "by_next_time", lambda q: q.lte("next_time", now)
                )
            ]
        finally:
            txn.close()
        for row_id in due:
            scheduler.transact(
                functools.partial(self._dispatch_one, row_id=row_id, now=now), "cron"
            )

    def _dispatch_one(self, txn: Transaction, *, row_id: str, now: float) -> None:
        scheduler = self.scheduler
        space = scheduler.space
        row = txn.get(space, row_id)
        if row is None or row["next_time"] > now:
            return  # another runner dispatched it first
        entry = self.entries.get((row["namespace"], row["name"]))
        if entry is None:
            return  # declared by a newer version of the app than this process runs
        job, target, args = entry
        due = float(row["next_time"])
        fields: dict[str, Any] = {"next_time": job.schedule.following(due, now)}
        last = txn.get(space, row["job"]) if row["job"] else None
        if last is not None and last["state"] in (PENDING, IN_PROGRESS):
            logger.info(
                'cron "%s" skipped the run due at %s: its previous run has not finished',
                row["name"],
                datetime.fromtimestamp(due, UTC).isoformat(),
            )
        else:
            fields["job"] = scheduler.insert_job(
                txn,
                target=target,
                namespace=row["namespace"],
                when=due,
                args=args,
                cron=row["name"],
            )
            fields["last_time"] = now
        txn.patch(space, row_id, fields)

    def next_due(self) -> float | None:
        """The earliest ``next_time`` of any cron."""
        txn = self.scheduler.db.transaction(now=self.scheduler.clock.time())
        try:
            first = self._rows(txn).with_index("by_next_time").first()
        finally:
            txn.close()
        return None if first is None else float(first["next_time"])


def declared_crons(app: Any) -> list[tuple[str, CronJob]]:
    """Every cron of an app and of its mounted component instances, with its namespace."""
    out = [("", job) for job in app.crons.jobs.values()]
    components = getattr(app, "components", None)
    for namespace, instance in getattr(components, "instances", {}).items():
        crons = _component_crons.get(instance.component)
        if crons is not None:
            out.extend((namespace, job) for job in crons.jobs.values())
    return out


class CronService(Service):
    """Keeps the ``_crons`` table in line with the declarations; dispatches due crons.

    Crons run as scheduled jobs, so this service needs the runtime's ``Scheduler`` (listed
    before it); the scheduler's passes call its ``dispatch`` and ask its ``next_due``.
    """

    tables = {CRONS: CRONS_TABLE}

    def __init__(self, runtime: Runtime):
        super().__init__(runtime)
        self.runner: CronRunner | None = None
        """The runner for the declared crons (made as the runtime opens)."""

    def open(self) -> None:
        """Sync the declared crons and hook their dispatch into the scheduler's passes."""
        scheduler = self.runtime.service(Scheduler)
        runner = CronRunner(scheduler, declared_crons(self.runtime.app))
        runner.sync()
        self.runner = runner
        scheduler.tick_hooks.append(runner.dispatch)
        scheduler.due_hooks.append(runner.next_due)
