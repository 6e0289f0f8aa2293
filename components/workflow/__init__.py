"""Durable workflows, and the work pool under them.

``app.use(component, name="workflow")`` then ``WorkflowManager(handle)``; for a standalone
queue, ``app.use(pool_component, name="pool")`` then ``WorkPool(handle)``.
"""

from __future__ import annotations

from components.workflow.client import (
    RetryPolicy,
    StepStatus,
    Workflow,
    WorkflowManager,
    WorkflowPage,
    WorkflowStatus,
    WorkPool,
    WorkStatus,
)
from components.workflow.component import component
from components.workflow.errors import (
    EventTimeoutError,
    JournalMismatchError,
    NonRetryableError,
    ParallelismError,
    StepFailedError,
    WorkflowStateError,
)
from components.workflow.pool import component as pool_component
from components.workflow.steps import MAX_STEP_VALUE_BYTES, Step

__all__ = [
    "EventTimeoutError",
    "JournalMismatchError",
    "MAX_STEP_VALUE_BYTES",
    "NonRetryableError",
    "ParallelismError",
    "RetryPolicy",
    "Step",
    "StepFailedError",
    "StepStatus",
    "WorkPool",
    "WorkStatus",
    "Workflow",
    "WorkflowManager",
    "WorkflowPage",
    "WorkflowStateError",
    "WorkflowStatus",
    "component",
    "pool_component",
]
