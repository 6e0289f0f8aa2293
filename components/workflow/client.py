"""Owns the classes app code uses: ``WorkPool``, ``WorkflowManager`` and their records.

Methods take the caller's ``ctx`` first: from a query or mutation they run inside that
transaction and return the value; from an action they return an awaitable.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, overload

from components.workflow.pool import check_parallelism
from components.workflow.steps import binding_name
from core import (
    ActionCtx,
    ComponentHandle,
    FunctionRef,
    Id,
    MutationCtx,
    QueryCtx,
    UserError,
    Value,
    call,
    function_handle,
)

Handler = Callable[..., Awaitable[Any]]
"""A workflow handler: ``async def handler(step, **args)``."""

Target = FunctionRef[Any, Any] | str
"""A function to run or call back: a reference, a path or a handle string."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How a failed action is retried: ``initial_backoff * base**(attempt-1)``, jittered ±50 %."""

    max_attempts: int = 5
    """Attempts in all, the first included."""
    initial_backoff: float = 0.25
    """Seconds before the first retry (before jitter)."""
    base: float = 2.0
    """Growth factor of the backoff."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.initial_backoff < 0 or self.base < 1:
            raise UserError(
                "RetryPolicy needs max_attempts >= 1, initial_backoff >= 0 and base >= 1; got "
                f"{self.max_attempts}, {self.initial_backoff}, {self.base}."
            )

    def to_dict(self) -> dict[str, Any]:
        """The stored form."""
        return {
            "max_attempts": self.max_attempts,
            "initial_backoff": self.initial_backoff,
            "base": self.base,
        }


def _retry_dict(retry: RetryPolicy | bool | None, default: RetryPolicy | None) -> Any:
    if retry is None:
        return None if default is None else default.to_dict()
    if retry is True:
        return (default or RetryPolicy()).to_dict()
    if retry is False:
        return None
    if isinstance(retry, RetryPolicy):
        return retry.to_dict()
    raise UserError(f"retry must be a RetryPolicy, True, False or None, not {retry!r}.")


def _module_name(handler: Callable[..., Any]) -> str:
    """The module part of a workflow's name, as function paths spell it (a script: its stem)."""
    module = getattr(handler, "__module__", None) or "__main__"
    if module == "__main__":
        path = getattr(sys.modules.get("__main__"), "__file__", None)
        return os.path.splitext(os.path.basename(path))[0] if path else "__main__"
    return str(module)


def _handle(ctx: QueryCtx | ActionCtx, ref: Target | None) -> str | None:
    return None if ref is None else function_handle(ctx, ref)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkStatus:
    """Where a work-pool job is."""

    state: str
    """``"pending"``, ``"running"`` or ``"finished"`` (also for unknown ids)."""
    previous_attempts: int = 0
    """Attempts already made (a job waiting out a retry backoff is pending)."""


class WorkPool:
    """A queue of actions and mutations run with bounded parallelism and retries.

    Args:
        handle: a mounted ``components.workflow.pool_component``.
        max_parallelism: jobs running at once (0 pauses; at most 200).
        retry: the default policy for actions (``None``: actions are not retried).
    """

    def __init__(
        self,
        handle: ComponentHandle,
        *,
        max_parallelism: int = 10,
        retry: RetryPolicy | None = None,
    ):
        self.handle = handle
        self.max_parallelism = check_parallelism(max_parallelism)
        self.retry = retry

    def _enqueue(
        self,
        ctx: MutationCtx | ActionCtx,
        fn_type: str,
        ref: Target,
        args: Mapping[str, Any] | None,
        on_complete: Target | None,
        context: Value,
        retry: RetryPolicy | bool | None,
        run_after: float,
    ) -> Id | Awaitable[Id]:
        return call(
            ctx,
            self.handle.enqueue,
            {
                "fn": _handle(ctx, ref),
                "fn_type": fn_type,
                "args": dict(args or {}),
                "on_complete": _handle(ctx, on_complete),
                "context": context,
                "retry": _retry_dict(retry, self.retry) if fn_type == "action" else None,
                "max_parallelism": self.max_parallelism,
                "run_after": run_after,
            },
            then=Id,
        )

    @overload
    def enqueue_action(
        self,
        ctx: ActionCtx,
        ref: Target,
        args: Mapping[str, Any] | None = None,
        *,
        on_complete: Target | None = None,
        context: Value = None,
        retry: RetryPolicy | bool | None = None,
        run_after: float = 0.0,
    ) -> Awaitable[Id]: ...
    @overload
    def enqueue_action(
        self,
        ctx: MutationCtx,
        ref: Target,
        args: Mapping[str, Any] | None = None,
        *,
        on_complete: Target | None = None,
        context: Value = None,
        retry: RetryPolicy | bool | None = None,
        run_after: float = 0.0,
    ) -> Id: ...
    def enqueue_action(
        self,
        ctx: MutationCtx | ActionCtx,
        ref: Target,
        args: Mapping[str, Any] | None = None,
        *,
        on_complete: Target | None = None,
        context: Value = None,
        retry: RetryPolicy | bool | None = None,
        run_after: float = 0.0,
    ) -> Id | Awaitable[Id]:
        """Queue an action; returns its work id.

        ``on_complete`` (a mutation taking ``work_id, context, result``) runs exactly once
        with the final result: ``{"kind": "success", "value"}``, ``{"kind": "failed",
        "error"}`` or ``{"kind": "canceled"}``.
        """
        return self._enqueue(ctx, "action", ref, args, on_complete, context, retry, run_after)

    @overload
    def enqueue_mutation(
        self,
        ctx: ActionCtx,
        ref: Target,
        args: Mapping[str, Any] | None = None,
        *,
        on_complete: Target | None = None,
        context: Value = None,
        retry: RetryPolicy | bool | None = None,
        run_after: float = 0.0,
    ) -> Awaitable[Id]: ...
    @overload
    def enqueue_mutation(
        self,
        ctx: MutationCtx,
        ref: Target,
        args: Mapping[str, Any] | None = None,
        *,
        on_complete: Target | None = None,
        context: Value = None,
        retry: RetryPolicy | bool | None = None,
        run_after: float = 0.0,
    ) -> Id: ...
    def enqueue_mutation(
        self,
        ctx: MutationCtx | ActionCtx,
        ref: Target,
        args: Mapping[str, Any] | None = None,
        *,
        on_complete: Target | None = None,
        context: Value = None,
        retry: RetryPolicy | bool | None = None,
        run_after: float = 0.0,
    ) -> Id | Awaitable[Id]:
        """Queue a mutation: it runs exactly once (``retry`` is ignored)."""
        return self._enqueue(ctx, "mutation", ref, args, on_complete, context, None, run_after)

    @overload
    def enqueue_query(
        self,
        ctx: ActionCtx,
        ref: Target,
        args: Mapping[str, Any] | None = None,
        *,
        on_complete: Target | None = None,
        context: Value = None,
        run_after: float = 0.0,
    ) -> Awaitable[Id]: ...
    @overload
    def enqueue_query(
        self,
        ctx: MutationCtx,
        ref: Target,
        args: Mapping[str, Any] | None = None,
        *,
        on_complete: Target | None = None,
        context: Value = None,
        run_after: float = 0.0,
    ) -> Id: ...
    def enqueue_query(
        self,
        ctx: MutationCtx | ActionCtx,
        ref: Target,
        args: Mapping[str, Any] | None = None,
        *,
        on_complete: Target | None = None,
        context: Value = None,
        run_after: float = 0.0,
    ) -> Id | Awaitable[Id]:
        """Queue a query."""
        return self._enqueue(ctx, "query", ref, args, on_complete, context, None, run_after)

    @overload
    def status(self, ctx: ActionCtx, work_id: str) -> Awaitable[WorkStatus]: ...
    @overload
    def status(self, ctx: QueryCtx, work_id: str) -> WorkStatus: ...
    def status(self, ctx: QueryCtx | ActionCtx, work_id: str) -> WorkStatus | Awaitable[WorkStatus]:
        """A job's ``WorkStatus``."""
        return call(ctx, self.handle.status, {"work_id": work_id}, then=_work_status)

    @overload
    def cancel(self, ctx: ActionCtx, work_id: str) -> Awaitable[None]: ...
    @overload
    def cancel(self, ctx: MutationCtx, work_id: str) -> None: ...
    def cancel(self, ctx: MutationCtx | ActionCtx, work_id: str) -> Awaitable[None] | None:
        """Cancel a job (prevents its start or its next retry)."""
        return call(ctx, self.handle.cancel, {"work_id": work_id})

    @overload
    def set_max_parallelism(self, ctx: ActionCtx, max_parallelism: int) -> Awaitable[None]: ...
    @overload
    def set_max_parallelism(self, ctx: MutationCtx, max_parallelism: int) -> None: ...
    def set_max_parallelism(
        self, ctx: MutationCtx | ActionCtx, max_parallelism: int
    ) -> Awaitable[None] | None:
        """Change the limit at run time (0 pauses)."""
        self.max_parallelism = check_parallelism(max_parallelism)
        return call(ctx, self.handle.set_max_parallelism, {"max_parallelism": max_parallelism})


@dataclass(frozen=True, slots=True, kw_only=True)
class StepStatus:
    """One journal entry."""

    number: int
    name: str
    kind: str
    """``query``, ``mutation``, ``action``, ``sleep``, ``event`` or ``workflow``."""
    state: str
    """``running``, ``success``, ``failed`` or ``canceled``."""
    result: Any = None
    error: str | None = None
    started_at: float = 0.0
    completed_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowStatus:
    """A workflow's state, result, error and steps."""

    state: str
    """``running``, ``success``, ``failed`` or ``canceled``."""
    result: Any = None
    error: str | None = None
    steps: list[StepStatus] = field(default_factory=list)
    id: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowPage:
    """A page of ``list``."""

    page: list[WorkflowStatus]
    continue_cursor: str | None
    is_done: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Workflow:
    """A workflow defined with ``@manager.define``: pass it to ``start``."""

    name: str
    handler: Callable[..., Awaitable[Any]]

    def __call__(self, step: Any, **args: Any) -> Awaitable[Any]:
        """Call the handler (handy in unit tests)."""
        return self.handler(step, **args)


def _work_status(s: dict[str, Any]) -> WorkStatus:
    return WorkStatus(**s)


def _result(s: dict[str, Any] | None) -> Value:
    return None if s is None else s["result"]


def _page(p: dict[str, Any]) -> WorkflowPage:
    return WorkflowPage(
        page=[_status_of(s) for s in p["page"]],
        continue_cursor=p["continue_cursor"],
        is_done=p["is_done"],
    )


def _status(s: dict[str, Any] | None) -> WorkflowStatus | None:
    return None if s is None else _status_of(s)


def _status_of(s: dict[str, Any]) -> WorkflowStatus:
    return WorkflowStatus(
        state=s["state"],
        result=s["result"],
        error=s["error"],
        id=s["id"],
        name=s["name"],
        steps=[StepStatus(**st) for st in s.get("steps", [])],
    )


class WorkflowManager:
    """Defines and runs durable workflows on a mounted ``components.workflow.component``.

    Every step's arguments and result are journaled; after a crash or restart a workflow
    replays its journal and continues at its first unfinished step. Mutation steps run exactly
    once (their writes commit with their journal entry), query steps may re-run, action steps
    run at most once, or at least once when retries are on (an attempt whose runner died
    counts as failed and is retried). Progress is visible to ``status`` subscribers as each
    step commits.

    Args:
        handle: the mounted workflow component.
        max_parallelism: action steps running at once across this instance's workflows (query
            and mutation steps are short transactions the scheduler runs directly).
        retry: the default retry policy of action steps (``None``: no retries).
        retention: seconds after which finished workflows are deleted (``None``: kept).
    """

    def __init__(
        self,
        handle: ComponentHandle,
        *,
        max_parallelism: int = 10,
        retry: RetryPolicy | None = None,
        retention: float | None = None,
    ):
        self.handle = handle
        self.max_parallelism = check_parallelism(max_parallelism)
        self.retry = retry
        self.retention = retention

    @overload
    def define(self, fn: Handler, /) -> Workflow: ...

    @overload
    def define(
        self, fn: None = None, /, *, name: str | None = None
    ) -> Callable[[Handler], Workflow]: ...

    def define(
        self, fn: Handler | None = None, /, *, name: str | None = None
    ) -> Workflow | Callable[[Handler], Workflow]:
        """Register ``async def handler(step, **args)`` as a workflow."""

        def wrap(handler: Callable[..., Awaitable[Any]]) -> Workflow:
            if not inspect.iscoroutinefunction(handler):
                raise UserError(f"A workflow must be an async def, not {handler!r}.")
            wf_name = name or f"{_module_name(handler)}:{handler.__qualname__}"
            # One handler per name per instance: a second define of the name raises
            # BindingExistsError, and another mount's manager keeps its own handler.
            self.handle.bind(binding_name(wf_name), handler)
            return Workflow(name=wf_name, handler=handler)

        return wrap if fn is None else wrap(fn)

    @overload
    def start(
        self,
        ctx: ActionCtx,
        workflow: Workflow | str,
        args: Mapping[str, Any] | None = None,
        *,
        on_complete: Target | None = None,
        context: Value = None,
        id: str | None = None,
    ) -> Awaitable[Id]: ...
    @overload
    def start(
        self,
        ctx: MutationCtx,
        workflow: Workflow | str,
        args: Mapping[str, Any] | None = None,
        *,
        on_complete: Target | None = None,
        context: Value = None,
        id: str | None = None,
    ) -> Id: ...
    def start(
        self,
        ctx: MutationCtx | ActionCtx,
        workflow: Workflow | str,
        args: Mapping[str, Any] | None = None,
        *,
        on_complete: Target | None = None,
        context: Value = None,
        id: str | None = None,
    ) -> Id | Awaitable[Id]:
        """Start a workflow and return its id; with ``id``, an existing run is returned as is.

        ``on_complete`` (a mutation taking ``workflow_id, result, context``) runs in the
        transaction that finishes the workflow; if it raises, the failure is recorded.
        """
        name = workflow.name if isinstance(workflow, Workflow) else workflow
        if isinstance(workflow, Workflow):
            bound = self.handle.bindings.get(binding_name(name))
            if bound is not workflow.handler:
                raise UserError(
                    f'Workflow "{name}" was not defined by this WorkflowManager (mounted as '
                    f'"{self.handle.namespace}"); define it with this manager\'s @define.'
                )
        return call(
            ctx,
            self.handle.start,
            {
                "name": name,
                "args": dict(args or {}),
                "on_complete": _handle(ctx, on_complete),
                "context": context,
                "key": id,
                "max_parallelism": self.max_parallelism,
                "retry": None if self.retry is None else self.retry.to_dict(),
                "retention": self.retention,
            },
            then=Id,
        )

    @overload
    def status(
        self, ctx: ActionCtx, workflow_id: str, *, steps: bool = True
    ) -> Awaitable[WorkflowStatus | None]: ...
    @overload
    def status(
        self, ctx: QueryCtx, workflow_id: str, *, steps: bool = True
    ) -> WorkflowStatus | None: ...
    def status(
        self, ctx: QueryCtx | ActionCtx, workflow_id: str, *, steps: bool = True
    ) -> WorkflowStatus | None | Awaitable[WorkflowStatus | None]:
        """The ``WorkflowStatus`` (``None`` for an unknown id).

        ``steps=False`` leaves the journal out (``steps == []``): cheaper, and a subscription
        to it re-runs only when the workflow's own state changes.
        """
        args = {"workflow_id": workflow_id, "steps": steps}
        return call(ctx, self.handle.status, args, then=_status)

    @overload
    def result(self, ctx: ActionCtx, workflow_id: str) -> Awaitable[Value]: ...
    @overload
    def result(self, ctx: QueryCtx, workflow_id: str) -> Value: ...
    def result(self, ctx: QueryCtx | ActionCtx, workflow_id: str) -> Value:
        """The recorded result of a finished workflow (``None`` while running)."""
        args = {"workflow_id": workflow_id, "steps": False}
        return call(ctx, self.handle.status, args, then=_result)

    @overload
    def cancel(self, ctx: ActionCtx, workflow_id: str) -> Awaitable[None]: ...
    @overload
    def cancel(self, ctx: MutationCtx, workflow_id: str) -> None: ...
    def cancel(self, ctx: MutationCtx | ActionCtx, workflow_id: str) -> Awaitable[None] | None:
        """Cancel a running workflow and its children."""
        return call(ctx, self.handle.cancel, {"workflow_id": workflow_id})

    @overload
    def send_event(
        self, ctx: ActionCtx, workflow_id: str, name: str, value: Value = None
    ) -> Awaitable[None]: ...
    @overload
    def send_event(
        self, ctx: MutationCtx, workflow_id: str, name: str, value: Value = None
    ) -> None: ...
    def send_event(
        self, ctx: MutationCtx | ActionCtx, workflow_id: str, name: str, value: Value = None
    ) -> Awaitable[None] | None:
        """Deliver an event to ``step.await_event(name)`` (kept if not yet awaited)."""
        return call(
            ctx,
            self.handle.send_event,
            {"workflow_id": workflow_id, "name": name, "value": value},
        )

    @overload
    def list(
        self,
        ctx: ActionCtx,
        *,
        state: str | None = None,
        cursor: str | None = None,
        num_items: int = 100,
    ) -> Awaitable[WorkflowPage]: ...
    @overload
    def list(
        self,
        ctx: QueryCtx,
        *,
        state: str | None = None,
        cursor: str | None = None,
        num_items: int = 100,
    ) -> WorkflowPage: ...
    def list(
        self,
        ctx: QueryCtx | ActionCtx,
        *,
        state: str | None = None,
        cursor: str | None = None,
        num_items: int = 100,
    ) -> WorkflowPage | Awaitable[WorkflowPage]:
        """A page of workflows, optionally only those in ``state``."""
        args = {"state": state, "cursor": cursor, "num_items": num_items}
        return call(ctx, self.handle.list_workflows, args, then=_page)

    @overload
    def restart(
        self, ctx: ActionCtx, workflow_id: str, from_step: int | str | None = None
    ) -> Awaitable[None]: ...
    @overload
    def restart(
        self, ctx: MutationCtx, workflow_id: str, from_step: int | str | None = None
    ) -> None: ...
    def restart(
        self, ctx: MutationCtx | ActionCtx, workflow_id: str, from_step: int | str | None = None
    ) -> Awaitable[None] | None:
        """Re-run a finished workflow from a step number or the last step with a name."""
        return call(
            ctx,
            self.handle.restart,
            {"workflow_id": workflow_id, "from_step": from_step},
        )

    @overload
    def cleanup(
        self, ctx: ActionCtx, workflow_id: str, *, force: bool = False
    ) -> Awaitable[bool]: ...
    @overload
    def cleanup(self, ctx: MutationCtx, workflow_id: str, *, force: bool = False) -> bool: ...
    def cleanup(
        self, ctx: MutationCtx | ActionCtx, workflow_id: str, *, force: bool = False
    ) -> bool | Awaitable[bool]:
        """Delete a finished workflow and its journal; ``False`` if it is still running."""
        return call(ctx, self.handle.cleanup, {"workflow_id": workflow_id, "force": force})
