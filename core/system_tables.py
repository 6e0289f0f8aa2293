"""Owns the definitions of the system tables (the ``_system`` table space) and their indexes.

System tables hold the core's own durable state: scheduled jobs (``_scheduled_functions``) and
cron state (``_crons``). Functions read them through ``ctx.db.system``; only the core writes
them, through the same transactions as everything else, so a job scheduled by a mutation exists
exactly when that mutation committed.

Other services add their tables with ``register_system_table`` (a table name starts with
``_``); ``system_schema()`` is what the app registers as its ``"_system"`` table space.
"""

from __future__ import annotations

from typing import Any

from core.errors import UserError
from core.schema import Schema, Table

SYSTEM_NAMESPACE = "_system"
"""The table space holding the system tables."""

SCHEDULED_FUNCTIONS = "_scheduled_functions"
"""Scheduled jobs: one document per ``run_after`` / ``run_at`` / cron run."""

CRONS = "_crons"
"""One document per declared cron: its schedule, next due time and latest job."""

FUNCTION_KEYS = "_function_keys"
"""The database's secret for signing function handles (one document, made at first open)."""

PENDING = "pending"
"""A job that has not started (or a mutation job whose transaction has not committed)."""
IN_PROGRESS = "in_progress"
"""An action job claimed by a runner, which holds a lease on it while it runs."""
SUCCESS = "success"
"""A job that ran to completion."""
FAILED = "failed"
"""A job whose function raised, or an action whose runner died while it ran."""
CANCELED = "canceled"
"""A job canceled before it started, or a running action whose schedules are canceled."""

JOB_STATES = (PENDING, IN_PROGRESS, SUCCESS, FAILED, CANCELED)
"""Every state a ``_scheduled_functions`` document may be in."""
FINISHED_STATES = (SUCCESS, FAILED, CANCELED)
"""States a job never leaves (their records are deleted after the retention period)."""

_TABLES: dict[str, Table] = {
    SCHEDULED_FUNCTIONS: Table(
        {
            "name": str,
            "handle": str,
            "namespace": str,
            "kind": str,
            "args": dict[str, Any],
            "scheduled_time": float,
            "state": str,
            "started_time": float | None,
            "completed_time": float | None,
            "error": str | None,
            "parent": str | None,
            "cron": str | None,
            "runner": str | None,
            "lease_expires": float | None,
        }
    )
    .index("by_state_time", ["state", "scheduled_time"])
    .index("by_completed_time", ["completed_time"])
    .index("by_parent", ["parent"]),
    CRONS: Table(
        {
            "namespace": str,
            "name": str,
            "function": str,
            "handle": str,
            "kind": str,
            "args": dict[str, Any],
            "schedule": str,
            "next_time": float,
            "last_time": float | None,
            "job": str | None,
        }
    )
    .index("by_name", ["namespace", "name"])
    .index("by_next_time", ["next_time"]),
    FUNCTION_KEYS: Table({"secret": bytes}),
}


def register_system_table(name: str, table: Table) -> None:
    """Add a table to the ``_system`` table space of every app opened from now on.

    Raises:
        UserError: the name does not start with ``_`` or is taken by another table.
    """
    if not isinstance(name, str) or not name.startswith("_") or len(name) < 2:
        raise UserError(f"System table names start with '_': {name!r}.")
    existing = _TABLES.get(name)
    if existing is not None and existing is not table:
        raise UserError(f'System table "{name}" is already defined.')
    _TABLES[name] = table


def system_schema() -> Schema:
    """The schema of the ``_system`` table space (built fresh: callers may extend it)."""
    schema = Schema(strict=True)
    # Schema(**tables) refuses names starting with "_", which only system tables may use.
    schema.tables = dict(_TABLES)
    return schema


def system_tables() -> dict[str, Table]:
    """Every system table by name."""
    return dict(_TABLES)
