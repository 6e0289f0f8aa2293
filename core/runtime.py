"""Owns ``Runtime``: one app opened on one storage (database, executor, background services).

Clients, the server and ``TestApp`` all share this: they open a runtime, call through its
executor, and run its background services (scheduler, crons, subscriptions) while open.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal

from core.database.catalog import PendingFixes
from core.database.engine import Database
from core.execution import Clock, Executor, Resolver
from core.files import FileService
from core.schema import Schema
from core.storage.base import Storage
from core.system_tables import SYSTEM_NAMESPACE, system_tables

logger = logging.getLogger("capsule.runtime")

Service = Callable[["Runtime"], Coroutine[Any, Any, None]]
"""A background loop: runs until cancelled."""


def _with_system_tables(schemas: Mapping[str, Schema]) -> dict[str, Schema]:
    """``schemas`` with every registered system table in the ``_system`` table space.

    Tables registered after the app was built (file storage, the server's idempotency keys)
    are added here, when a runtime is made.
    """
    out = dict(schemas)
    system = Schema(strict=True)
    existing = out.get(SYSTEM_NAMESPACE)
    system.tables = {**system_tables(), **(existing.tables if existing is not None else {})}
    out[SYSTEM_NAMESPACE] = system
    return out


class Runtime:
    """An opened app: its database, executor, and what runs in the background."""

    def __init__(
        self,
        *,
        storage: Storage,
        schemas: Mapping[str, Schema],
        resolver: Resolver,
        clock: Clock | None = None,
        env: Mapping[str, str] | None = None,
        services: list[Service] | None = None,
        setup: list[Callable[[Runtime], None]] | None = None,
    ):
        self.storage = storage
        self.db = Database(storage)
        self._schemas = _with_system_tables(schemas)
        self.executor = Executor(self.db, resolver, clock=clock, env=env)
        self.files = FileService(self.db, self.executor)
        """File storage (``ctx.files``, and the server's signed file URLs)."""
        self.executor.hooks.files = self.files.for_frame  # type: ignore[method-assign]
        self._services = list(services or [])
        self._setup = list(setup or [])
        self.pending: PendingFixes | None = None
        """Reads the pending migrations of each table (named when a table does not fit)."""
        self._portal_cm: Any = None
        self._portal: BlockingPortal | None = None
        self._services_future: Any = None
        self._services_users = 0
        self._lock = threading.Lock()
        self.state: dict[str, Any] = {}
        """Per-runtime state of plugged-in services (scheduler, subscriptions, ...)."""
        self.on_close: list[Callable[[], None]] = []
        """Called (last added first) when the runtime closes, before storage is closed."""

    @property
    def clock(self) -> Clock:
        """The clock ``ctx.now`` reads."""
        return self.executor.clock

    def open(self, *, defer: bool = False, backfill: bool = True) -> None:
        """Open storage and the catalog, then let services attach (hooks, listeners).

        ``defer`` opens tables whose documents do not fit their shape yet (to migrate them);
        ``backfill=False`` leaves stored defaults unwritten (to report, changing nothing).
        """
        self.db.open(self._schemas, pending=self.pending, defer=defer, backfill=backfill)
        for fn in self._setup:
            fn(self)

    def close(self) -> None:
        """Stop the loop thread (if any) and close storage."""
        while self.on_close:
            try:
                self.on_close.pop()()
            except Exception:
                logger.exception("a runtime close hook failed")
        with self._lock:
            cm, self._portal_cm, self._portal = self._portal_cm, None, None
        if cm is not None:
            cm.__exit__(None, None, None)
        self.db.close()

    @property
    def portal(self) -> BlockingPortal:
        """An event loop in a background thread (for blocking callers' actions and services)."""
        with self._lock:
            if self._portal is None:
                self._portal_cm = anyio.from_thread.start_blocking_portal()
                self._portal = self._portal_cm.__enter__()
            return self._portal

    def start_services(self) -> None:
        """Start the background services (refcounted: the first caller starts them)."""
        with self._lock:
            self._services_users += 1
            if self._services_users > 1 or not self._services:
                return
        portal = self.portal
        self._services_future, _ = portal.start_task(self.run_services)

    def stop_services(self) -> None:
        """Undo one ``start_services``; the last caller stops them."""
        with self._lock:
            self._services_users -= 1
            future = self._services_future if self._services_users == 0 else None
            if future is not None:
                self._services_future = None
        if future is not None:
            future.cancel()
            with contextlib.suppress(BaseException):
                future.result(timeout=10)

    async def run_services(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Run every background service until cancelled."""
        async with anyio.create_task_group() as tg:
            for service in self._services:
                tg.start_soon(service, self)
            task_status.started()
            await anyio.sleep_forever()
