"""Owns the workflow component: its tables and exported functions, over a mounted work pool.

Tables: ``workflows`` (one row per run: name, args, state, result, generation), ``steps`` (the
journal), ``events`` (sent-but-unconsumed and awaited events) and ``on_complete_failures``.
Query and mutation steps run as scheduler jobs (``run_step``): one transaction runs the function,
records its result in the journal and, when no other step of the workflow is still running,
replays the workflow, which dispatches the next step, so the next step is scheduled by the
commit that finishes the previous one (the scheduler's runner wakes on that commit, no polling).
A mutation step runs exactly once because the scheduler runs a mutation job exactly once and
its writes commit with its journal entry. Action steps run as jobs of the child work pool
(mounted as ``pool``: bounded parallelism, retries, recovery of attempts whose runner died),
whose ``on_complete`` is ``step_done`` here and does the same recording and replay.

A ``generation`` on each workflow fences late results: cancel and restart bump it, and a step
result from an older generation is dropped.
"""

from __future__ import annotations

import logging
from typing import Any

from components.workflow import pool as pool_module
from components.workflow.errors import WorkflowStateError
from components.workflow.pool import CANCELED, error_text, failed, success
from components.workflow.steps import Engine, check_size, handler_of, load_journal
from core import Component, Crons, InvalidIdError, MutationCtx, QueryCtx, Schema, Table

logger = logging.getLogger("capsule.workflow")

TERMINAL = ("success", "failed", "canceled")

component = Component(
    "workflow",
    schema=Schema(
        workflows=Table()
        .index("by_key", ["key"])
        .index("by_state", ["state", "completed_at"])
        .index("by_parent", ["parent_id"]),
        steps=Table()
        .index("by_workflow", ["workflow_id", "number"])
        .index("by_progress", ["in_progress", "workflow_id"]),
        events=Table().index("by_workflow", ["workflow_id", "name", "state"]),
        on_complete_failures=Table(),
    ),
)
pool = component.use(pool_module.component, name="pool")


# -- dispatch: how new steps start ----------------------------------------------------------


class _Dispatch:
    """Starts the steps a replay pass journals."""

    def schedule_step(self, ctx: MutationCtx, wf: dict[str, Any], number: int) -> str:
        """Schedule the query or mutation step ``number`` (not yet journaled); its job id."""
        args = {"workflow_id": wf["_id"], "number": number, "generation": wf["generation"]}
        return str(ctx.scheduler.run_after(0, run_step, args))

    def action(
        self, ctx: MutationCtx, wf: dict[str, Any], entry: dict[str, Any], retry: Any
    ) -> None:
        if retry is None or retry is True:
            retry = wf["retry"] if retry is None else (wf["retry"] or DEFAULT_RETRY)
        elif retry is False:
            retry = None
        elif not isinstance(retry, dict):
            retry = retry.to_dict()
        work_id = ctx.run_mutation(
            pool.enqueue,
            {
                "fn": entry["fn"],
                "fn_type": entry["kind"],
                "args": entry["args"],
                "on_complete": step_done,
                "context": _context(wf, entry),
                "retry": retry,
                "max_parallelism": wf["max_parallelism"],
                "name": entry["name"],
            },
        )
        _patch_entry(ctx, entry, {"work_id": work_id})

    def sleep(self, ctx: MutationCtx, entry: dict[str, Any], seconds: float) -> None:
        ctx.scheduler.run_after(seconds, wake_step, _context(None, entry))

    def event(
        self, ctx: MutationCtx, wf: dict[str, Any], entry: dict[str, Any], timeout: float | None
    ) -> None:
        sent = _events(ctx, wf["_id"], entry["name"], "sent").first()
        if sent is not None:
            ctx.db.patch(sent["_id"], {"state": "consumed", "step_id": entry["_id"]})
            _patch_entry(ctx, entry, _done(ctx, success(sent["value"])))
            return
        ctx.db.insert(
            "events",
            {
                "workflow_id": wf["_id"],
                "name": entry["name"],
                "state": "waiting",
                "value": None,
                "step_id": entry["_id"],
            },
        )
        if timeout is not None:
            ctx.scheduler.run_after(timeout, event_timeout, _context(None, entry))

    def child(
        self,
        ctx: MutationCtx,
        wf: dict[str, Any],
        entry: dict[str, Any],
        name: str,
        args: dict[str, Any],
    ) -> None:
        child_id = _create(
            ctx,
            name=name,
            args=args,
            on_complete=None,
            context=None,
            key=None,
            max_parallelism=wf["max_parallelism"],
            retry=wf["retry"],
            retention=wf["retention"],
            parent_id=wf["_id"],
            parent_step=entry["_id"],
        )
        _patch_entry(ctx, entry, {"child_id": child_id})
        ctx.scheduler.run_after(0, run_workflow, {"workflow_id": child_id, "generation": 0})


DEFAULT_RETRY = {"max_attempts": 5, "initial_backoff": 0.25, "base": 2.0}


def _context(wf: dict[str, Any] | None, entry: dict[str, Any]) -> dict[str, Any]:
    return {"step_id": str(entry["_id"]), "generation": entry["generation"]}


def _patch_entry(ctx: MutationCtx, entry: dict[str, Any], fields: dict[str, Any]) -> None:
    entry.update(fields)
    ctx.db.patch(entry["_id"], fields)


def _done(ctx: MutationCtx, result: dict[str, Any]) -> dict[str, Any]:
    return {"in_progress": False, "result": result, "completed_at": ctx.now}


def _events(ctx: QueryCtx, workflow_id: Any, name: str, state: str) -> Any:
    return ctx.db.query("events").with_index(
        "by_workflow",
        lambda q: q.eq("workflow_id", workflow_id).eq("name", name).eq("state", state),
    )


# -- creating, replaying and finishing workflows ----------------------------------------------


def _create(ctx: MutationCtx, **fields: Any) -> Any:
    check_size(fields["args"], "the workflow's arguments")
    return ctx.db.insert(
        "workflows",
        {
            **fields,
            "state": "running",
            "result": None,
            "error": None,
            "generation": 0,
            "completed_at": None,
            "started_at": ctx.now,
        },
    )


def _replay(
    ctx: MutationCtx, wf: dict[str, Any], journal: list[dict[str, Any]] | None = None
) -> None:
    """One pass of the handler; finishes the workflow when the handler returns or raises."""
    result = Engine(ctx, wf, _DISPATCH, journal).run()
    if result is not None:
        _finish(ctx, wf, result)


def _wake(ctx: MutationCtx, workflow_id: Any) -> None:
    """Replay a running workflow if none of its steps is still in progress (the barrier)."""
    wf = ctx.db.get(workflow_id)
    if wf is None or wf["state"] != "running":
        return
    journal = load_journal(ctx, workflow_id)
    if not any(entry["in_progress"] for entry in journal):
        _replay(ctx, wf, journal)


def _finish(ctx: MutationCtx, wf: dict[str, Any], result: dict[str, Any]) -> None:
    """Record the outcome, tell the parent or ``on_complete``, schedule retention cleanup."""
    fields = {
        "state": result["kind"],
        "result": result.get("value"),
        "error": result.get("error"),
        "completed_at": ctx.now,
    }
    wf.update(fields)
    ctx.db.patch(wf["_id"], fields)
    if wf["parent_step"] is not None:
        _record_step(ctx, wf["parent_step"], None, result)
    if wf["on_complete"] is not None:
        args = {"workflow_id": str(wf["_id"]), "result": result, "context": wf["context"]}
        try:
            ctx.run_mutation(wf["on_complete"], args)
        except Exception as exc:
            logger.warning("on_complete of workflow %s failed: %s", wf["_id"], exc)
            ctx.db.insert(
                "on_complete_failures",
                {"workflow_id": str(wf["_id"]), "result": result, "error": error_text(exc)},
            )
    if wf["retention"] is not None and wf["parent_id"] is None:
        ctx.scheduler.run_after(wf["retention"], cleanup_expired, {"workflow_id": str(wf["_id"])})


def _record_step(
    ctx: MutationCtx, step_id: Any, generation: int | None, result: dict[str, Any]
) -> None:
    """Store a step's result (dropped if stale) and wake its workflow."""
    entry = ctx.db.get(step_id)
    if entry is None or not entry["in_progress"]:
        return
    if generation is not None and entry["generation"] != generation:
        return
    if result["kind"] == "success":
        try:
            check_size(result["value"], f'the result of step "{entry["name"]}"')
        except Exception as exc:
            result = failed(error_text(exc))
    ctx.db.patch(entry["_id"], _done(ctx, result))
    _wake(ctx, entry["workflow_id"])


_DISPATCH = _Dispatch()


# -- internal callbacks ---------------------------------------------------------------------


@component.internal_mutation
def step_done(
    ctx: MutationCtx, work_id: str, context: dict[str, Any], result: dict[str, Any]
) -> None:
    """The work pool's ``on_complete`` for a step job."""
    _record_step(ctx, context["step_id"], context["generation"], result)


@component.internal_mutation
def run_step(ctx: MutationCtx, workflow_id: str, number: int, generation: int) -> None:
    """Run a query or mutation step; its result is journaled in the same transaction."""
    entry = (
        ctx.db.query("steps")
        .with_index("by_workflow", lambda q: q.eq("workflow_id", workflow_id).eq("number", number))
        .first()
    )
    if entry is None or not entry["in_progress"] or entry["generation"] != generation:
        return  # canceled, restarted or cleaned up meanwhile: the function does not run
    try:
        if entry["kind"] == "mutation":
            result = success(ctx.run_mutation(entry["fn"], entry["args"]))
        else:
            result = success(ctx.run_query(entry["fn"], entry["args"]))
    except Exception as exc:  # its writes were undone; the workflow sees the failure
        result = failed(error_text(exc))
    _record_step(ctx, entry["_id"], generation, result)


@component.internal_mutation
def recover(ctx: MutationCtx) -> int:
    """Fail the steps whose scheduler job ended without recording them; returns how many.

    A query or mutation step's job records its result in its own transaction, so this only
    finds one whose transaction itself failed (or whose job record is gone).
    """
    lost = 0
    running = (
        ctx.db.query("steps")
        .with_index("by_progress", lambda q: q.eq("in_progress", True))
        .take(1000)
    )
    for entry in running:
        if entry.get("job_id") is None:
            continue
        try:
            job = ctx.db.system.get(entry["job_id"])
        except Exception:
            job = None
        if job is not None and job["state"] in ("pending", "in_progress"):
            continue
        why = "its scheduled job is gone" if job is None else job.get("error") or job["state"]
        logger.warning("workflow step %s was lost: %s", entry["_id"], why)
        _record_step(ctx, entry["_id"], entry["generation"], failed(f"Step lost: {why}"))
        lost += 1
    return lost


Crons.of(component).interval("recover", recover, seconds=pool_module.RECOVERY_INTERVAL)


@component.internal_mutation
def wake_step(ctx: MutationCtx, step_id: str, generation: int) -> None:
    """A sleep step's time has come."""
    _record_step(ctx, step_id, generation, success(None))


@component.internal_mutation
def event_timeout(ctx: MutationCtx, step_id: str, generation: int) -> None:
    """An awaited event's timeout: the step fails with ``EventTimeoutError`` (if still waiting)."""
    entry = ctx.db.get(step_id)
    if entry is None or not entry["in_progress"] or entry["generation"] != generation:
        return
    for ev in _events(ctx, entry["workflow_id"], entry["name"], "waiting").collect():
        if ev["step_id"] == entry["_id"]:
            ctx.db.delete(ev["_id"])
    timeout = entry["args"]["timeout"]
    _record_step(ctx, step_id, generation, failed("timeout", timeout=timeout))


@component.internal_mutation
def run_workflow(ctx: MutationCtx, workflow_id: str, generation: int) -> None:
    """Run a pass of a workflow started asynchronously (a child, a restart)."""
    wf = ctx.db.get(workflow_id)
    if wf is not None and wf["generation"] == generation:
        _wake(ctx, wf["_id"])


@component.internal_mutation
def cleanup_expired(ctx: MutationCtx, workflow_id: str) -> None:
    """Retention: delete a finished workflow once its retention period is over."""
    wf = ctx.db.get(workflow_id)
    if wf is not None and wf["state"] in TERMINAL:
        _delete(ctx, wf)


# -- exported functions ----------------------------------------------------------------------


def _find(ctx: QueryCtx, workflow_id: str) -> dict[str, Any] | None:
    found = (
        ctx.db.query("workflows").with_index("by_key", lambda q: q.eq("key", workflow_id)).first()
    )
    if found is not None:
        return found
    try:
        return ctx.db.get(workflow_id)
    except InvalidIdError:
        return None


def _require(ctx: QueryCtx, workflow_id: str) -> dict[str, Any]:
    wf = _find(ctx, workflow_id)
    if wf is None:
        raise WorkflowStateError(f'No workflow "{workflow_id}".')
    return wf


@component.mutation
def start(
    ctx: MutationCtx,
    name: str,
    args: dict[str, Any],
    on_complete: str | None = None,
    context: Any = None,
    key: str | None = None,
    max_parallelism: int = 10,
    retry: dict[str, Any] | None = None,
    retention: float | None = None,
) -> str:
    """Create a workflow and run its first pass; with a ``key``, an existing run is reused."""
    if handler_of(ctx, name) is None:
        raise WorkflowStateError(
            f'Workflow "{name}" is not defined on this workflow instance (use @manager.define '
            "on the WorkflowManager of this mount)."
        )
    pool_module.check_parallelism(max_parallelism)
    if key is not None:
        existing = _find(ctx, key)
        if existing is not None:
            return str(existing["_id"])
    wf_id = _create(
        ctx,
        name=name,
        args=args,
        on_complete=on_complete,
        context=context,
        key=key,
        max_parallelism=max_parallelism,
        retry=retry,
        retention=retention,
        parent_id=None,
        parent_step=None,
    )
    wf = ctx.db.get(wf_id)
    if wf is not None:  # it is: inserted just above
        _replay(ctx, wf)
    return str(wf_id)


@component.query
def status(ctx: QueryCtx, workflow_id: str, steps: bool = True) -> dict[str, Any] | None:
    """State, result, error and (unless ``steps=False``) the journal (``None`` if unknown).

    Without the journal, a subscription re-runs only when the workflow itself changes (it
    finishes, is canceled or restarted), not at every step.
    """
    wf = _find(ctx, workflow_id)
    if wf is None:
        return None
    if not steps:
        return {**_summary(wf), "steps": []}
    journal = (
        ctx.db.query("steps")
        .with_index("by_workflow", lambda q: q.eq("workflow_id", wf["_id"]))
        .collect()
    )
    return {**_summary(wf), "steps": [_step_summary(s) for s in journal]}


def _summary(wf: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(wf["_id"]),
        "name": wf["name"],
        "key": wf["key"],
        "state": wf["state"],
        "result": wf["result"],
        "error": wf["error"],
        "started_at": wf["started_at"],
        "completed_at": wf["completed_at"],
    }


def _step_summary(s: dict[str, Any]) -> dict[str, Any]:
    result = s["result"] or {}
    return {
        "number": s["number"],
        "name": s["name"],
        "kind": s["kind"],
        "state": "running" if s["in_progress"] else result.get("kind"),
        "result": result.get("value"),
        "error": result.get("error"),
        "started_at": s["started_at"],
        "completed_at": s["completed_at"],
    }


@component.query
def list_workflows(
    ctx: QueryCtx, state: str | None = None, cursor: str | None = None, num_items: int = 100
) -> dict[str, Any]:
    """A page of workflows (newest last), optionally only those in ``state``."""
    q = ctx.db.query("workflows")
    if state is not None:
        q = q.with_index("by_state", lambda r: r.eq("state", state))
    page = q.paginate(cursor, num_items)
    return {
        "page": [_summary(wf) for wf in page.page],
        "continue_cursor": page.continue_cursor,
        "is_done": page.is_done,
    }


@component.mutation
def cancel(ctx: MutationCtx, workflow_id: str) -> None:
    """Cancel a running workflow: late step results are dropped, children are canceled."""
    wf = _require(ctx, workflow_id)
    if wf["state"] != "running":
        return
    _cancel(ctx, wf)


def _cancel(ctx: MutationCtx, wf: dict[str, Any]) -> None:
    ctx.db.patch(wf["_id"], {"generation": wf["generation"] + 1})
    wf["generation"] += 1
    running = (
        ctx.db.query("steps")
        .with_index("by_progress", lambda q: q.eq("in_progress", True).eq("workflow_id", wf["_id"]))
        .collect()
    )
    for entry in running:
        ctx.db.patch(entry["_id"], _done(ctx, CANCELED))
        if entry["work_id"] is not None:
            ctx.run_mutation(pool.cancel, {"work_id": entry["work_id"]})
        if entry.get("job_id") is not None:  # a query or mutation step not yet run
            ctx.scheduler.cancel(entry["job_id"])
        if entry["child_id"] is not None:
            child = ctx.db.get(entry["child_id"])
            if child is not None and child["state"] == "running":
                child["parent_step"] = None  # the parent is finishing itself
                _cancel(ctx, child)
    for ev in (
        ctx.db.query("events")
        .with_index("by_workflow", lambda q: q.eq("workflow_id", wf["_id"]))
        .collect()
    ):
        if ev["state"] == "waiting":
            ctx.db.delete(ev["_id"])
    _finish(ctx, wf, CANCELED)


@component.mutation
def send_event(ctx: MutationCtx, workflow_id: str, name: str, value: Any = None) -> None:
    """Deliver an event: to the step awaiting it, or kept until the workflow awaits it."""
    wf = _require(ctx, workflow_id)
    if wf["state"] != "running":
        raise WorkflowStateError(
            f'Workflow "{workflow_id}" is {wf["state"]}; it can no longer receive event "{name}".'
        )
    check_size(value, f'the value of event "{name}"')
    waiting = _events(ctx, wf["_id"], name, "waiting").first()
    if waiting is None:
        ctx.db.insert(
            "events",
            {
                "workflow_id": wf["_id"],
                "name": name,
                "state": "sent",
                "value": value,
                "step_id": None,
            },
        )
        return
    ctx.db.patch(waiting["_id"], {"state": "consumed", "value": value})
    _record_step(ctx, waiting["step_id"], None, success(value))


@component.mutation
def restart(ctx: MutationCtx, workflow_id: str, from_step: int | str | None = None) -> None:
    """Re-run a finished workflow from a step (number, or the last step with that name)."""
    wf = _require(ctx, workflow_id)
    if wf["state"] not in TERMINAL:
        raise WorkflowStateError(f'Workflow "{workflow_id}" is still running; cancel it first.')
    steps = (
        ctx.db.query("steps")
        .with_index("by_workflow", lambda q: q.eq("workflow_id", wf["_id"]))
        .collect()
    )
    if from_step is None:
        first = 0
    elif isinstance(from_step, int):
        if from_step < 0:
            raise WorkflowStateError(f"Step number cannot be negative: {from_step}.")
        first = from_step
    else:
        named = [s["number"] for s in steps if s["name"] == from_step]
        if not named:
            raise WorkflowStateError(f'Step "{from_step}" not found.')
        first = named[-1]
    for s in steps:
        if s["number"] >= first:
            _delete_step(ctx, s)
    fields = {
        "state": "running",
        "result": None,
        "error": None,
        "completed_at": None,
        "generation": wf["generation"] + 1,
    }
    ctx.db.patch(wf["_id"], fields)
    wf.update(fields)
    _replay(ctx, wf)


def _delete_step(ctx: MutationCtx, s: dict[str, Any]) -> None:
    if s["kind"] == "event":
        for ev in (
            ctx.db.query("events")
            .with_index(
                "by_workflow", lambda q: q.eq("workflow_id", s["workflow_id"]).eq("name", s["name"])
            )
            .collect()
        ):
            if ev["step_id"] == s["_id"]:
                ctx.db.delete(ev["_id"])
    if s["child_id"] is not None:
        child = ctx.db.get(s["child_id"])
        if child is not None:
            _delete(ctx, child)
    ctx.db.delete(s["_id"])


def _delete(ctx: MutationCtx, wf: dict[str, Any]) -> None:
    if wf["state"] == "running":
        _cancel(ctx, wf)
    for s in (
        ctx.db.query("steps")
        .with_index("by_workflow", lambda q: q.eq("workflow_id", wf["_id"]))
        .collect()
    ):
        _delete_step(ctx, s)
    for ev in (
        ctx.db.query("events")
        .with_index("by_workflow", lambda q: q.eq("workflow_id", wf["_id"]))
        .collect()
    ):
        ctx.db.delete(ev["_id"])
    ctx.db.delete(wf["_id"])


@component.mutation
def cleanup(ctx: MutationCtx, workflow_id: str, force: bool = False) -> bool:
    """Delete a finished workflow, its journal, events and children; ``False`` if running."""
    wf = _find(ctx, workflow_id)
    if wf is None:
        return False
    if wf["state"] not in TERMINAL and not force:
        return False
    _delete(ctx, wf)
    return True


@component.query
def on_complete_failures(ctx: QueryCtx) -> list[dict[str, Any]]:
    """``on_complete`` callbacks that raised (recorded, never retried)."""
    return ctx.db.query("on_complete_failures").collect()
