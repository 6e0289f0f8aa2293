"""Owns the workflow component's errors: non-retryable failures, event timeouts, step failures.

The tree::

    CapsuleError
    ├── NonRetryableError       raised by a job or step to stop its retries, 422
    ├── EventTimeoutError       an awaited event did not come in time, 422
    ├── StepFailedError         a journaled step failed; raised into the workflow handler, 422
    ├── JournalMismatchError    replayed code no longer matches the journal, 500
    ├── InvalidArgumentError    (core)
    │   └── ParallelismError    a max_parallelism outside 0..200, 400
    └── WorkflowStateError      an operation the workflow's state does not allow, 409
"""

from __future__ import annotations

from typing import Any

from core import CapsuleError, InvalidArgumentError


class NonRetryableError(CapsuleError):
    """Raised by a work-pool job (or an action step) to fail at once, without retries."""

    code = "non_retryable"
    http_status = 422


class StepFailedError(CapsuleError):
    """Raised into a workflow handler when a step it awaits failed (it may be caught)."""

    code = "step_failed"
    http_status = 422

    def __init__(self, step: str, error: str):
        super().__init__(f'Step "{step}" failed: {error}')
        self.step = step
        self.error = error


class EventTimeoutError(StepFailedError):
    """Raised by ``step.await_event`` when no event came before its timeout."""

    code = "event_timeout"

    def __init__(self, name: str, timeout: float):
        CapsuleError.__init__(self, f'Event "{name}" did not arrive within {timeout:g} s.')
        self.step = name
        self.error = str(self)
        self.name = name
        self.timeout = timeout


class JournalMismatchError(CapsuleError):
    """Raised when a replayed step differs from its journal entry (name, kind or arguments)."""

    code = "journal_mismatch"

    def __init__(self, number: int, recorded: str, called: str, what: str):
        super().__init__(
            f"Journal mismatch at step {number}: the journal recorded {recorded} but the "
            f"workflow now calls {called} ({what} differ). Mark the step unstable=True if its "
            "arguments may change, or restart the workflow."
        )
        self.number = number


class WorkflowStateError(CapsuleError):
    """Raised when a workflow or job is in a state that does not allow the operation."""

    code = "workflow_state"
    http_status = 409


class ParallelismError(InvalidArgumentError):
    """Raised when ``max_parallelism`` is not an int from 0 (paused) to the limit."""

    code = "invalid_parallelism"

    def __init__(self, value: Any, limit: int):
        super().__init__(
            f"max_parallelism is {value!r}; it must be an int from 0 (paused) to {limit}.",
            argument="max_parallelism",
        )
        self.value = value
        self.limit = limit

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.value, self.limit))
