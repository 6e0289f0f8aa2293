"""Owns the work pool: a queue of actions, mutations and queries run through the scheduler.

State machine of a job (one ``work`` row, deleted when it finishes)::

    pending --start--> running --success / final failure / cancel--> (deleted, on_complete)
       ^                  |
       +-- retry backoff -+   (failed action attempt, attempts left, not canceled)

Invariants:

* at most ``max_parallelism`` jobs run: a running job holds a slot, a ``slots`` row whose
  ``number`` is below the limit and unique (a starter reads that number's index range before
  inserting it, so two starters taking one number conflict and one retries). Starters probe
  numbers from a random one with point reads rather than counting running rows, so jobs
  starting and finishing in parallel do not conflict with each other; a finishing job hands
  its slot to the oldest ready pending job or, when none is waiting, to the job its
  ``on_complete`` enqueues in the same transaction (a workflow's next action step).
  Lowering the limit lets running jobs finish; slots above the new limit are then deleted,
  not reused;
* ``on_complete`` runs exactly once per job, in the transaction that deletes its row: for a
  mutation job that is the transaction of the user's mutation itself, so its writes and its
  completion commit together (exactly once); attempts are fenced by ``(work_id, attempt)``;
* a job waiting out a retry backoff holds no slot; a ``kick`` scheduled for the end of its
  backoff starts it again (promptly, not on a polling tick).

``max_parallelism`` 0 pauses starting; cancel prevents a start or the next retry, an attempt
already running reports its own outcome. Retries apply to actions only.

Recovery: an attempt runs as a scheduler job whose id the row keeps (``scheduled_id``). If its
runner dies mid-action, the scheduler marks that job ``failed`` but nothing reports to the
pool, so a component cron (``recover``, every ``RECOVERY_INTERVAL`` seconds) compares each
running row with its scheduler job: a job that failed, was canceled, vanished (retention) or
ended without reporting counts as a failed attempt, retried per policy or finished. Action jobs
are therefore at most once without retries and at least once with them.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from components.workflow.errors import NonRetryableError, ParallelismError, WorkflowStateError
from core import (
    ActionCtx,
    Component,
    Crons,
    InvalidArgumentError,
    InvalidIdError,
    MutationCtx,
    QueryCtx,
    Schema,
    Table,
)

logger = logging.getLogger("capsule.workflow.pool")

MAX_PARALLELISM = 200
RECOVERY_INTERVAL = 10.0
"""Seconds between checks of running jobs against the scheduler's records (``recover``)."""

component = Component(
    "workpool",
    schema=Schema(
        work=Table().index("by_state_ready", ["state", "ready_at"]),
        slots=Table().index("by_number", ["number"]),
        config=Table().index("by_name", ["name"]),
        on_complete_failures=Table(),
    ),
)


def success(value: Any) -> dict[str, Any]:
    """A successful result record."""
    return {"kind": "success", "value": value}


def failed(error: str, **extra: Any) -> dict[str, Any]:
    """A failed result record."""
    return {"kind": "failed", "error": error, **extra}


CANCELED: dict[str, Any] = {"kind": "canceled"}

_handoff: ContextVar[dict[str, Any] | None] = ContextVar("workpool_handoff", default=None)
"""While a finished job's ``on_complete`` runs: ``{"slot": its slot id, or None once taken}``."""


def error_text(exc: BaseException) -> str:
    """How an exception is recorded in a result."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_parallelism(value: int) -> int:
    """Refuse a ``max_parallelism`` outside 0..200."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PARALLELISM:
        raise ParallelismError(value, MAX_PARALLELISM)
    return value


def _config(ctx: QueryCtx) -> dict[str, Any] | None:
    return ctx.db.query("config").with_index("by_name", lambda q: q.eq("name", "pool")).first()


def _max_parallelism(ctx: QueryCtx) -> int:
    cfg = _config(ctx)
    return 10 if cfg is None else int(cfg["max_parallelism"])


def _set_parallelism(ctx: MutationCtx, value: int) -> None:
    cfg = _config(ctx)
    if cfg is None:
        ctx.db.insert("config", {"name": "pool", "max_parallelism": value})
    elif cfg["max_parallelism"] != value:
        ctx.db.patch(cfg["_id"], {"max_parallelism": value})


def _ready(ctx: MutationCtx, n: int) -> list[dict[str, Any]]:
    """The ``n`` oldest pending jobs whose time has come."""
    now = ctx.now
    return (
        ctx.db.query("work")
        .with_index("by_state_ready", lambda q: q.eq("state", "pending").lte("ready_at", now))
        .take(n)
    )


def _launch(ctx: MutationCtx, work: dict[str, Any], slot_id: Any) -> None:
    """Schedule the job's next attempt in the slot it now holds."""
    job = run_action_job if work["fn_type"] == "action" else run_mutation_job
    scheduled = ctx.scheduler.run_after(
        0, job, {"work_id": work["_id"], "attempt": work["attempts"]}
    )
    fields = {"state": "running", "scheduled_id": str(scheduled), "slot": slot_id}
    work.update(fields)
    ctx.db.patch(work["_id"], fields)


def _take_free_slot(ctx: MutationCtx, limit: int) -> Any:
    """Take a free slot (its new row's id), probing numbers from a random one on; or ``None``.

    Each probe is a point read, so two starters conflict only when they pick the same number.
    """
    if limit == 0:
        return None
    first = ctx.random.randrange(limit)
    for k in range(limit):
        number = (first + k) % limit
        if _slot(ctx, number) is None:
            return ctx.db.insert("slots", {"number": number})
    return None


def _slot(ctx: QueryCtx, number: int) -> dict[str, Any] | None:
    return ctx.db.query("slots").with_index("by_number", lambda q: q.eq("number", number)).first()


def _release(ctx: MutationCtx, slot_id: Any) -> None:
    """Free a slot: hand it to the oldest ready pending job, or delete it."""
    slot = None if slot_id is None else ctx.db.get(slot_id)
    if slot is None:
        return
    if slot["number"] < _max_parallelism(ctx):
        for work in _ready(ctx, 1):
            _launch(ctx, work, slot_id)  # the slot row is left as is: probers read it
            return
    ctx.db.delete(slot_id)


def _fill(ctx: MutationCtx) -> None:
    """Start ready jobs in every free slot (reads all slots: for kicks and limit changes)."""
    limit = _max_parallelism(ctx)
    if limit == 0:
        return
    taken = {
        s["number"]
        for s in ctx.db.query("slots")
        .with_index("by_number", lambda q: q.lt("number", limit))
        .collect()
    }
    free = [n for n in range(limit) if n not in taken]
    if not free:
        return
    for number, work in zip(free, _ready(ctx, len(free)), strict=False):
        _launch(ctx, work, ctx.db.insert("slots", {"number": number}))


@component.mutation
def enqueue(
    ctx: MutationCtx,
    fn: str,
    fn_type: str,
    args: dict[str, Any],
    on_complete: str | None = None,
    context: Any = None,
    retry: dict[str, Any] | None = None,
    max_parallelism: int = 10,
    run_after: float = 0.0,
    name: str = "",
) -> str:
    """Add a job; it starts as soon as a slot is free (and ``run_after`` has passed)."""
    check_parallelism(max_parallelism)
    if fn_type not in ("action", "mutation", "query"):
        raise InvalidArgumentError(
            f'fn_type is "{fn_type}"; expected "action", "mutation" or "query".',
            argument="fn_type",
        )
    _set_parallelism(ctx, max_parallelism)
    # Before the insert: the new job must not count as an older job waiting for a slot.
    inherited = _inherit(ctx, max_parallelism) if run_after <= 0 else None
    work_id = ctx.db.insert(
        "work",
        {
            "fn": fn,
            "fn_type": fn_type,
            "name": name or fn,
            "args": args,
            "on_complete": on_complete,
            "context": context,
            "retry": retry if fn_type == "action" else None,
            "attempts": 0,
            "state": "pending",
            "ready_at": ctx.now + max(run_after, 0.0),
            "canceled": False,
            "scheduled_id": None,
            "slot": None,
        },
    )
    if run_after > 0:
        ctx.scheduler.run_after(run_after, kick, {})
        return str(work_id)
    slot_id = inherited if inherited is not None else _take_free_slot(ctx, max_parallelism)
    if slot_id is not None:
        _launch(ctx, _require(ctx, work_id), slot_id)
    return str(work_id)


def _inherit(ctx: MutationCtx, limit: int) -> Any:
    """The slot of the job whose ``on_complete`` is enqueueing, if it may pass on (or ``None``).

    It passes only when no older job is ready and waiting, so a workflow's next step starts
    without a slot changing hands (no slot row written or probed).
    """
    handoff = _handoff.get()
    if handoff is None or handoff["slot"] is None:
        return None
    slot_id = handoff["slot"]
    try:
        slot = ctx.db.get(slot_id)
    except InvalidIdError:  # a slot of another pool instance: not ours to take
        return None
    if slot is None or slot["number"] >= limit or _ready(ctx, 1):
        return None
    handoff["slot"] = None
    return slot_id


@component.mutation
def set_max_parallelism(ctx: MutationCtx, max_parallelism: int) -> None:
    """Change the limit (0 pauses); raising it starts waiting jobs at once."""
    _set_parallelism(ctx, check_parallelism(max_parallelism))
    _fill(ctx)


@component.query
def status(ctx: QueryCtx, work_id: str) -> dict[str, Any]:
    """``{"state": "pending" | "running" | "finished", "previous_attempts": n}``."""
    work = _get(ctx, work_id)
    if work is None:
        return {"state": "finished", "previous_attempts": 0}
    return {"state": work["state"], "previous_attempts": work["attempts"]}


@component.mutation
def cancel(ctx: MutationCtx, work_id: str) -> None:
    """Cancel a job: a pending one never starts; a running one gets no further retry."""
    work = _get(ctx, work_id)
    if work is None or work["canceled"]:
        return
    if work["state"] == "pending":
        _finish(ctx, work, CANCELED)
    else:
        ctx.db.patch(work["_id"], {"canceled": True})


@component.internal_mutation
def kick(ctx: MutationCtx) -> None:
    """Start whatever is ready (scheduled for the end of a backoff or a delayed start)."""
    _fill(ctx)


@component.internal_query
def get_work(ctx: QueryCtx, work_id: str) -> dict[str, Any] | None:
    """The job row (for the action runner)."""
    return _get(ctx, work_id)


@component.internal_mutation
def run_mutation_job(ctx: MutationCtx, work_id: str, attempt: int) -> None:
    """Run a mutation or query job and complete it in the same transaction (exactly once)."""
    work = _current(ctx, work_id, attempt)
    if work is None:
        return
    try:
        if work["fn_type"] == "mutation":
            value = ctx.run_mutation(work["fn"], work["args"])
        else:
            value = ctx.run_query(work["fn"], work["args"])
        result = success(value)
    except Exception as exc:
        result = failed(error_text(exc))
    _complete(ctx, work, result)


@component.internal_action
async def run_action_job(ctx: ActionCtx, work_id: str, attempt: int) -> None:
    """Run one attempt of an action job, then record its outcome."""
    work = await ctx.run_query(get_work, {"work_id": work_id})
    if work is None or work["attempts"] != attempt or work["state"] != "running":
        return
    try:
        result = success(await ctx.run_action(work["fn"], work["args"]))
    except NonRetryableError as exc:
        result = failed(error_text(exc), non_retryable=True)
    except Exception as exc:
        result = failed(error_text(exc))
    await ctx.run_mutation(complete, {"work_id": work_id, "attempt": attempt, "result": result})


@component.internal_mutation
def complete(ctx: MutationCtx, work_id: str, attempt: int, result: dict[str, Any]) -> None:
    """Record an attempt's outcome: retry after a backoff, or finish (idempotent per attempt)."""
    work = _current(ctx, work_id, attempt)
    if work is not None:
        _complete(ctx, work, result)


@component.internal_mutation
def recover(ctx: MutationCtx) -> int:
    """Fail the attempts whose scheduler job ended without reporting; returns how many."""
    running = (
        ctx.db.query("work")
        .with_index("by_state_ready", lambda q: q.eq("state", "running"))
        .take(MAX_PARALLELISM * 2)
    )
    lost = 0
    for work in running:
        job = _scheduled(ctx, work["scheduled_id"])
        if job is not None and job["state"] in ("pending", "in_progress"):
            continue
        if job is None:
            why = "its scheduled job is gone"
        elif job["state"] == "success":
            why = "it ended without reporting a result"
        else:
            why = job.get("error") or f"its scheduled job was {job['state']}"
        logger.warning("work-pool job %s lost attempt %s: %s", work["_id"], work["attempts"], why)
        _complete(ctx, work, failed(f"Attempt {work['attempts'] + 1} was lost: {why}"))
        lost += 1
    return lost


Crons.of(component).interval("recover", recover, seconds=RECOVERY_INTERVAL)


def _scheduled(ctx: QueryCtx, job_id: str | None) -> dict[str, Any] | None:
    if job_id is None:
        return None
    try:
        return ctx.db.system.get(job_id)
    except InvalidIdError:
        return None


def _get(ctx: QueryCtx, work_id: str) -> dict[str, Any] | None:
    try:
        return ctx.db.get(work_id)
    except InvalidIdError:
        return None


def _require(ctx: QueryCtx, work_id: Any) -> dict[str, Any]:
    work = ctx.db.get(work_id)
    if work is None:  # pragma: no cover - read in the transaction that wrote it
        raise WorkflowStateError(f'No work-pool job "{work_id}".')
    return work


def _current(ctx: QueryCtx, work_id: str, attempt: int) -> dict[str, Any] | None:
    """The job if this attempt is its running one (stale or duplicate completions: ``None``)."""
    work = _get(ctx, work_id)
    if work is None or work["state"] != "running" or work["attempts"] != attempt:
        return None
    return work


def _complete(ctx: MutationCtx, work: dict[str, Any], result: dict[str, Any]) -> None:
    attempts = work["attempts"] + 1
    retry = work["retry"]
    if (
        result["kind"] == "failed"
        and retry is not None
        and not result.get("non_retryable")
        and attempts < retry["max_attempts"]
        and not work["canceled"]
    ):
        delay = retry["initial_backoff"] * retry["base"] ** (attempts - 1)
        delay *= ctx.random.uniform(0.5, 1.5)
        ctx.db.patch(
            work["_id"],
            {
                "state": "pending",
                "attempts": attempts,
                "ready_at": ctx.now + delay,
                "scheduled_id": None,
                "slot": None,
                "last_error": result["error"],
            },
        )
        ctx.scheduler.run_after(delay, kick, {})
        _release(ctx, work["slot"])
        return
    if work["canceled"] and result["kind"] == "failed":
        result = CANCELED
    elif result["kind"] == "failed" and attempts > 1:
        result = {**result, "error": f"{result['error']} (after {attempts} attempts)"}
    _finish(ctx, work, result, work["slot"])


def _finish(
    ctx: MutationCtx, work: dict[str, Any], result: dict[str, Any], slot_id: Any = None
) -> None:
    """Delete the job, call its ``on_complete`` once (a failure is recorded), free its slot.

    A job that ``on_complete`` enqueues in this pool (a workflow's next step) may take the
    slot over directly when no older job is waiting for one (see ``enqueue``).
    """
    ctx.db.delete(work["_id"])
    handoff: dict[str, Any] = {"slot": slot_id}
    if work["on_complete"] is not None:
        args = {"work_id": str(work["_id"]), "context": work["context"], "result": result}
        token = _handoff.set(handoff if slot_id is not None else None)
        try:
            ctx.run_mutation(work["on_complete"], args)
        except Exception as exc:
            handoff["slot"] = slot_id  # the callback's writes were undone, its enqueues too
            logger.warning("on_complete of job %s failed: %s", work["_id"], exc)
            ctx.db.insert(
                "on_complete_failures",
                {"work_id": str(work["_id"]), "result": result, "error": error_text(exc)},
            )
        finally:
            _handoff.reset(token)
    _release(ctx, handoff["slot"])


@component.query
def on_complete_failures(ctx: QueryCtx) -> list[dict[str, Any]]:
    """Callbacks that raised (recorded, never retried)."""
    return ctx.db.query("on_complete_failures").collect()
