"""Owns the replay engine: the ``Step`` API workflow handlers use, and one replay pass.

Execution model: **re-run the handler from the top on each wake, replaying the journal** (as
Convex does), rather than keeping a live coroutine (as DBOS does). Each pass is one mutation of
the workflow component: the handler's coroutine is driven by hand; a step already in the
journal resolves at once from its recorded result, and the first unrecorded steps are journaled
and dispatched (through the work pool, the scheduler or the events table) in that same
transaction, after which the pass ends. Why: a pass is a plain transaction, so a crash at any
point leaves either the previous state or the next one, never a half-started step; nothing
lives only in memory, so any process (or a restart) can resume a workflow, and action steps run
on the scheduler like any other job. The cost is re-running the handler's code up to the
frontier on each wake, which is cheap because recorded steps resolve without I/O.

Determinism: steps are matched by position; a step whose kind, name or arguments differ from
its journal entry fails the workflow naming the step (``unstable=True`` skips the argument
check). ``step.now`` is the recorded start time of the next journal entry (the pass's time at
the frontier) and ``step.random`` is seeded by the workflow id, so replays see the same values.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Awaitable, Callable, Generator, Iterable
from typing import Any, Generic, TypeVar, overload

import msgpack

from components.workflow.errors import (
    EventTimeoutError,
    JournalMismatchError,
    StepFailedError,
)
from core import (
    FunctionRef,
    InvalidValueError,
    LimitExceededError,
    MutationCtx,
    QueryCtx,
    UserError,
    function_handle,
    handle_path,
)

ReturnT = TypeVar("ReturnT")

MAX_STEP_VALUE_BYTES = 800 * 1024
"""The largest journaled step argument or result (a bigger result fails the step)."""


def binding_name(workflow: str) -> str:
    """The name a workflow's handler is bound under on its instance (``@manager.define``)."""
    return f"workflow:{workflow}"


def handler_of(ctx: QueryCtx, workflow: str) -> Callable[..., Awaitable[Any]] | None:
    """The handler of ``workflow`` defined on the calling instance, if any."""
    handler = ctx.bindings.get(binding_name(workflow))
    return handler if callable(handler) else None


class _Blocked:
    """Yielded by an unfinished step: the pass ends here."""


_BLOCK = _Blocked()


def check_size(value: Any, what: str) -> int:
    """Refuse a journaled value over ``MAX_STEP_VALUE_BYTES`` (or not a value at all).

    The size is that of the value's binary form; the database checks the value model itself
    when the journal entry is written.
    """
    try:
        size = len(msgpack.packb(value, use_bin_type=True))
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidValueError(
            f"{what[0].upper()}{what[1:]} is not a storable value: {exc}."
        ) from None
    if size > MAX_STEP_VALUE_BYTES:
        raise LimitExceededError(
            f"{what[0].upper()}{what[1:]} is {size:,} bytes; the limit for a journaled value is "
            f"{MAX_STEP_VALUE_BYTES:,} bytes. Store large data in a table and pass its id.",
            limit="journaled value",
            actual=size,
            maximum=MAX_STEP_VALUE_BYTES,
        )
    return size


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


class StepCall(Generic[ReturnT]):
    """One step of a workflow: ``await`` it for its result (or use it in ``step.all``).

    Typed by the function the step runs: ``await step.run_query(ref)`` is ``ref``'s result.
    """

    def __init__(self, entry: dict[str, Any]):
        self.entry = entry

    def __await__(self) -> Generator[Any, None, ReturnT]:
        if self.entry["in_progress"]:
            yield _BLOCK
        value: ReturnT = unwrap(self.entry)
        return value


def unwrap(entry: dict[str, Any]) -> Any:
    """A finished step's value, or its failure raised."""
    result = entry["result"]
    if result["kind"] == "success":
        return result["value"]
    if result.get("timeout") is not None:
        raise EventTimeoutError(entry["name"], result["timeout"])
    if result["kind"] == "canceled":
        raise StepFailedError(entry["name"], "Canceled")
    raise StepFailedError(entry["name"], result["error"])


class Step:
    """What a workflow handler receives: ``await step.run_mutation(ref, args)`` and friends.

    Every call becomes a journaled step. Steps created before awaiting (``step.all``) are
    dispatched together and run in parallel.
    """

    def __init__(self, engine: Engine):
        self._engine = engine
        self._random = random.Random(engine.workflow["_id"])

    @property
    def workflow_id(self) -> str:
        """This workflow's id."""
        return str(self._engine.workflow["_id"])

    @property
    def now(self) -> float:
        """The time, as recorded: the start time of the next journaled step during replay."""
        return self._engine.now()

    @property
    def random(self) -> random.Random:
        """A generator seeded by the workflow id: the same sequence on every replay."""
        return self._random

    @overload
    def run_query(
        self,
        ref: FunctionRef[Any, ReturnT],
        args: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        unstable: bool = False,
    ) -> StepCall[ReturnT]: ...
    @overload
    def run_query(
        self,
        ref: str,
        args: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        unstable: bool = False,
    ) -> StepCall[Any]: ...
    def run_query(
        self,
        ref: FunctionRef[Any, Any] | str,
        args: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        unstable: bool = False,
    ) -> StepCall[Any]:
        """A query step (it may re-run after a crash: queries have no effects)."""
        return self._engine.function_step("query", ref, args, name, None, unstable)

    @overload
    def run_mutation(
        self,
        ref: FunctionRef[Any, ReturnT],
        args: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        unstable: bool = False,
    ) -> StepCall[ReturnT]: ...
    @overload
    def run_mutation(
        self,
        ref: str,
        args: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        unstable: bool = False,
    ) -> StepCall[Any]: ...
    def run_mutation(
        self,
        ref: FunctionRef[Any, Any] | str,
        args: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        unstable: bool = False,
    ) -> StepCall[Any]:
        """A mutation step: it runs exactly once (its writes commit with its journal entry)."""
        return self._engine.function_step("mutation", ref, args, name, None, unstable)

    @overload
    def run_action(
        self,
        ref: FunctionRef[Any, ReturnT],
        args: dict[str, Any] | None = None,
        *,
        retry: Any = None,
        name: str | None = None,
        unstable: bool = False,
    ) -> StepCall[ReturnT]: ...
    @overload
    def run_action(
        self,
        ref: str,
        args: dict[str, Any] | None = None,
        *,
        retry: Any = None,
        name: str | None = None,
        unstable: bool = False,
    ) -> StepCall[Any]: ...
    def run_action(
        self,
        ref: FunctionRef[Any, Any] | str,
        args: dict[str, Any] | None = None,
        *,
        retry: Any = None,
        name: str | None = None,
        unstable: bool = False,
    ) -> StepCall[Any]:
        """An action step: at most once, or at least once when ``retry`` is on.

        ``retry`` is ``True`` (the manager's policy, else the default), ``False``, a
        ``RetryPolicy``, or ``None`` for the manager's default.
        """
        return self._engine.function_step("action", ref, args, name, retry, unstable)

    def sleep(self, seconds: float, *, name: str | None = None) -> StepCall[Any]:
        """A step that finishes ``seconds`` from now (durably: it survives restarts)."""
        return self._engine.sleep_step(float(seconds), name or "sleep")

    def await_event(self, name: str, *, timeout: float | None = None) -> StepCall[Any]:
        """Wait for ``send_event(ctx, workflow_id, name, value)``; returns the value.

        An event sent before the workflow gets here is kept and consumed here.

        Raises:
            EventTimeoutError: when ``timeout`` seconds pass first.
        """
        return self._engine.event_step(name, timeout)

    def run_workflow(
        self, workflow: Any, args: dict[str, Any] | None = None, *, name: str | None = None
    ) -> StepCall[Any]:
        """A child workflow as a step: its result (a failure raises here; cancel cascades)."""
        return self._engine.workflow_step(workflow, args or {}, name)

    async def all(self, calls: Iterable[Any]) -> list[Any]:
        """Wait for several steps started together; the first failure raises."""
        calls = list(calls)
        return [await c for c in calls]


def load_journal(ctx: QueryCtx, workflow_id: Any) -> list[dict[str, Any]]:
    """A workflow's journal entries, in step order."""
    return (
        ctx.db.query("steps")
        .with_index("by_workflow", lambda q: q.eq("workflow_id", workflow_id))
        .collect()
    )


class Engine:
    """One replay pass of one workflow, inside a mutation of the workflow component."""

    def __init__(
        self,
        ctx: MutationCtx,
        workflow: dict[str, Any],
        dispatch: Any,
        journal: list[dict[str, Any]] | None = None,
    ):
        self.ctx = ctx
        self.workflow = workflow
        self.dispatch = dispatch
        self.journal = load_journal(ctx, workflow["_id"]) if journal is None else journal
        self.position = 0
        self.fatal: BaseException | None = None

    def now(self) -> float:
        """The recorded time at the current position."""
        if self.position < len(self.journal):
            return float(self.journal[self.position]["started_at"])
        return self.ctx.now

    # -- matching ---------------------------------------------------------------------------

    def _next(self, kind: str, name: str, args: Any, unstable: bool) -> dict[str, Any] | None:
        """The journal entry for the next position, checked; ``None`` at the frontier."""
        if self.position >= len(self.journal):
            self.position += 1
            return None
        entry = self.journal[self.position]
        self.position += 1
        what = None
        if entry["kind"] != kind or entry["name"] != name:
            what = "kind or name"
        elif not (unstable or entry["unstable"]) and _canonical(entry["args"]) != _canonical(args):
            what = "arguments"
        if what is not None:
            err = JournalMismatchError(
                entry["number"],
                f'{entry["kind"]} step "{entry["name"]}" with {_canonical(entry["args"])}',
                f'{kind} step "{name}" with {_canonical(args)}',
                what,
            )
            self.fatal = self.fatal or err
            raise err
        return entry

    def _new(
        self,
        kind: str,
        name: str,
        args: Any,
        unstable: bool,
        schedule: Callable[[int], Any] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Journal a new step; ``schedule(number)`` (its job's id) runs first, if given."""
        check_size(args, f'the arguments of step "{name}"')
        wf = self.workflow
        job_id = None if schedule is None else schedule(self.position - 1)
        entry = {
            "workflow_id": wf["_id"],
            "number": self.position - 1,
            "generation": wf["generation"],
            "kind": kind,
            "name": name,
            "args": args,
            "unstable": unstable,
            "in_progress": True,
            "result": None,
            "started_at": self.ctx.now,
            "completed_at": None,
            "work_id": None,
            "child_id": None,
            "job_id": job_id,
            **extra,
        }
        entry["_id"] = self.ctx.db.insert("steps", entry)
        self.journal.append(entry)
        return entry

    # -- step kinds --------------------------------------------------------------------------

    def function_step(
        self,
        kind: str,
        ref: Any,
        args: dict[str, Any] | None,
        name: str | None,
        retry: Any,
        unstable: bool,
    ) -> StepCall[Any]:
        """A query, mutation or action step."""
        handle = function_handle(self.ctx, ref)
        label = name or handle_path(handle)
        args = dict(args or {})
        entry = self._next(kind, label, args, unstable)
        if entry is None and kind != "action":
            # Scheduled before the entry is written, so the entry records its job's id.
            schedule = functools.partial(self.dispatch.schedule_step, self.ctx, self.workflow)
            entry = self._new(kind, label, args, unstable, schedule, fn=handle)
        elif entry is None:
            entry = self._new(kind, label, args, unstable, fn=handle)
            self.dispatch.action(self.ctx, self.workflow, entry, retry)
        return StepCall(entry)

    def sleep_step(self, seconds: float, name: str) -> StepCall[Any]:
        """A sleep step."""
        entry = self._next("sleep", name, {"seconds": seconds}, False)
        if entry is None:
            entry = self._new("sleep", name, {"seconds": seconds}, False)
            self.dispatch.sleep(self.ctx, entry, seconds)
        return StepCall(entry)

    def event_step(self, name: str, timeout: float | None) -> StepCall[Any]:
        """An event wait."""
        args = {"timeout": timeout}
        entry = self._next("event", name, args, False)
        if entry is None:
            entry = self._new("event", name, args, False)
            self.dispatch.event(self.ctx, self.workflow, entry, timeout)
        return StepCall(entry)

    def workflow_step(self, workflow: Any, args: dict[str, Any], name: str | None) -> StepCall[Any]:
        """A child workflow step."""
        wf_name = getattr(workflow, "name", workflow)
        if not isinstance(wf_name, str) or handler_of(self.ctx, wf_name) is None:
            raise UserError(
                "run_workflow takes a workflow defined with @manager.define on this workflow "
                f"instance's manager, not {workflow!r}."
            )
        label = name or wf_name
        entry = self._next("workflow", label, args, False)
        if entry is None:
            entry = self._new("workflow", label, args, False)
            self.dispatch.child(self.ctx, self.workflow, entry, wf_name, args)
        return StepCall(entry)

    # -- the pass -----------------------------------------------------------------------------

    def run(self) -> dict[str, Any] | None:
        """Run the handler up to the frontier: its final result, or ``None`` when blocked."""
        wf = self.workflow
        handler = handler_of(self.ctx, wf["name"])
        if handler is None:
            return {
                "kind": "failed",
                "error": f'Workflow "{wf["name"]}" is not defined on this workflow instance in '
                "this process (import the module that defines it with @manager.define).",
            }
        coro: Any = handler(Step(self), **wf["args"])
        result: dict[str, Any] | None
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            result = self._final({"kind": "success", "value": stop.value})
        except Exception as exc:
            result = {"kind": "failed", "error": _message(exc)}
        else:
            coro.close()
            if yielded is not _BLOCK:
                result = {
                    "kind": "failed",
                    "error": "A workflow handler may only await steps "
                    "(step.run_*, step.sleep, step.await_event, step.all); "
                    f"it awaited {yielded!r}.",
                }
            else:
                result = None
        if self.fatal is not None:
            return {"kind": "failed", "error": _message(self.fatal)}
        return result

    def _final(self, result: dict[str, Any]) -> dict[str, Any]:
        try:
            check_size(result["value"], "the workflow's return value")
        except Exception as exc:
            return {"kind": "failed", "error": _message(exc)}
        return result


def _message(exc: BaseException) -> str:
    if isinstance(exc, StepFailedError):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
