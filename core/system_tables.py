"""Owns the definitions of the system tables (the ``_system`` table space) and their indexes.

System tables hold the core's own durable state: scheduled jobs (``_scheduled_functions``),
cron state (``_crons``), the handle key (``_function_keys``), the server's idempotency keys.
Functions read them through ``ctx.db.system``; only the core writes them, through the same
transactions as everything else, so a job scheduled by a mutation exists exactly when that
mutation committed.

Services declare the tables they keep (``Service.tables``); ``core.services.system_schema``
assembles the ``"_system"`` table space from those and ``core_tables()``.
"""

from __future__ import annotations

from typing import Any

from core.schema import Table

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

SCHEDULED_FUNCTIONS_TABLE = (
    Table(
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
    .index("by_parent", ["parent"])
)
"""The scheduler's table (declared by the ``Scheduler`` service)."""

CRONS_TABLE = (
    Table(
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
    .index("by_next_time", ["next_time"])
)
"""The crons' table (declared by the ``CronService``)."""

IDEMPOTENCY_KEYS = "_idempotency_keys"
"""The server's kept mutation results, by ``Idempotency-Key`` (see ``core.server``)."""

MIGRATIONS = "_migrations"
"""One document per migration that has started: its state, cursor and counts."""

_CORE_TABLES: dict[str, Table] = {
    MIGRATIONS: Table(
        {
            "namespace": str,
            "name": str,
            "table": str,
            "state": str,
            "cursor": str | None,
            "processed": int,
            "changed": int,
            "started_time": float,
            "completed_time": float | None,
        }
    ).index("by_name", ["namespace", "name"]),
    FUNCTION_KEYS: Table({"secret": bytes}),
    # Every runtime has it (not only served ones), so a runtime opened before its server
    # (``create_asgi_app(app, runtime=...)``) still has the table.
    IDEMPOTENCY_KEYS: Table(
        {"key": str, "request": str, "result": str | None, "size": int, "created": float}
    )
    .index("by_key", ["key"])
    .index("by_created", ["created"]),
}


def core_tables() -> dict[str, Table]:
    """The system tables every runtime has, whatever its services (handle keys, idempotency)."""
    return dict(_CORE_TABLES)
