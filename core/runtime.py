"""Owns ``Runtime``: one app opened on one storage (database, executor, background services).

Clients, the server and ``TestApp`` all share this: they open a runtime, call through its
executor, and run its background services (scheduler, crons, subscriptions) while open.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import anyio
from anyio.from_thread import BlockingPortal

from core.database.catalog import PendingFixes
from core.database.engine import Database
from core.environment import EnvironmentService
from core.errors import UserError
from core.execution import Clock, Executor, Frame, Target
from core.files import FileService
from core.logs import CallLogService
from core.scheduler import Scheduler
from core.services import Service, ServiceT, system_schema
from core.storage.base import Storage
from core.system_tables import SYSTEM_NAMESPACE

if TYPE_CHECKING:
    from core.app import App

logger = logging.getLogger("capsule.runtime")
SERVICES_STOP_SECONDS = 10.0
"""How long ``stop_services`` waits for the services to wind down."""


class Runtime:
    """An opened app: its database, executor, and its services (scheduler, crons, files ...).

    Args:
        app: the app (it resolves function references and lists the services).
        storage: where the database lives.
        clock: where ``ctx.now`` comes from.
        env: what ``ctx.env`` shows actions.
        system_only: open only the ``_system`` table space and start no service (for commands
            that read or write system tables of a database without its app's code).
    """

    def __init__(
        self,
        *,
        app: App,
        storage: Storage,
        clock: Clock | None = None,
        env: Mapping[str, str] | None = None,
        system_only: bool = False,
    ):
        self.app = app
        self.storage = storage
        self.db = Database(storage)
        self._service_types: list[type[Service]] = list(app.services)
        schemas = {} if system_only else dict(app.schemas())
        schemas[SYSTEM_NAMESPACE] = system_schema(self._service_types)
        if system_only:
            self._service_types = []
        self._schemas = schemas
        self.executor = Executor(self.db, app, clock=clock, env=env, services=self)
        self._services: dict[type[Service], Service] = {}
        self.pending: PendingFixes | None = None
        """Reads the pending migrations of each table (named when a table does not fit)."""
        self._portal_cm: Any = None
        self._portal: BlockingPortal | None = None
        self._services_stop: tuple[BlockingPortal, anyio.CancelScope, threading.Event] | None = None
        self._services_users = 0
        self._lock = threading.Lock()
        self._service_lock = threading.RLock()
        self.on_close: list[Callable[[], None]] = []
        """Called (last added first) when the runtime closes, before storage is closed."""

    # -- services ---------------------------------------------------------------------------

    def service(self, cls: type[ServiceT]) -> ServiceT:
        """The runtime's instance of a service class (``runtime.service(Scheduler)``).

        A service the app lists is made as the runtime opens. One without system tables
        that the app does not list (the subscription hub) is made on first use.

        Raises:
            UserError: the app does not list the service and it keeps system tables, or the
                runtime is not open.
        """
        found = self._services.get(cls)
        if found is None:
            with self._service_lock:
                found = self._services.get(cls)
                if found is None:
                    found = self._start_late(cls)
        if not isinstance(found, cls):  # pragma: no cover - the dict is keyed by class
            raise UserError(f"Service {cls.__name__} is not a {cls.__name__}.")
        return found

    def _start_late(self, cls: type[Service]) -> Service:
        if cls in self._service_types:
            raise UserError(f"Service {cls.__name__} is not running: the runtime is not open.")
        if cls.tables:
            raise UserError(
                f"This app does not run service {cls.__name__}; it keeps system tables, so add "
                "it with app.add_service(...) before the first client opens."
            )
        instance = cls(self)
        instance.open()
        self._services[cls] = instance
        self.on_close.append(instance.close)
        return instance

    def scheduler(self, frame: Frame) -> Any:
        """``ctx.scheduler`` for a function invocation."""
        return self.service(Scheduler).for_frame(frame)

    def files_for(self, frame: Frame) -> Any:
        """``ctx.files`` for a function invocation."""
        return self.files.for_frame(frame)

    def env_for(self, frame: Frame) -> Mapping[str, str]:
        """``ctx.env``: the stored deployment variables first (when the app keeps them)."""
        found = self._services.get(EnvironmentService)
        if isinstance(found, EnvironmentService):
            return found.view
        return self.executor.env

    def call_span(self, target: Target) -> AbstractContextManager[None]:
        """A block around one top-level call, recorded by the call log (when the app keeps it)."""
        found = self._services.get(CallLogService)
        if isinstance(found, CallLogService):
            return found.log.span(target)
        return contextlib.nullcontext()

    @property
    def files(self) -> FileService:
        """File storage (``ctx.files``, and the server's signed file URLs)."""
        return self.service(FileService)

    @property
    def clock(self) -> Clock:
        """The clock ``ctx.now`` reads."""
        return self.executor.clock

    def open(self, *, defer: bool = False, backfill: bool = True) -> None:
        """Open storage and the catalog, then make and open the services, in order.

        ``defer`` opens tables whose documents do not fit their shape yet (to migrate them);
        ``backfill=False`` leaves stored defaults unwritten (to report, changing nothing).
        """
        self.db.open(self._schemas, pending=self.pending, defer=defer, backfill=backfill)
        self.executor.load_handle_key()
        with self._service_lock:
            for cls in self._service_types:
                instance = cls(self)
                self._services[cls] = instance
                self.on_close.append(instance.close)
                instance.open()

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
            if self._services_users > 1 or not self._service_types:
                return
        portal = self.portal
        stopped = threading.Event()
        _, scope = portal.start_task(self._services_task, stopped)
        self._services_stop = (portal, scope, stopped)

    def stop_services(self) -> None:
        """Undo one ``start_services``; the last caller stops them, and waits until they have.

        Waiting matters: a service's ``finally`` (the call log's last flush, removing its
        stdout tee) must be over before the caller goes on to print or close the storage.
        """
        with self._lock:
            self._services_users -= 1
            stop = self._services_stop if self._services_users == 0 else None
            if stop is not None:
                self._services_stop = None
        if stop is None:
            return
        portal, scope, stopped = stop
        try:
            portal.call(scope.cancel)
        except RuntimeError:  # on the portal's own thread, which cannot wait for itself
            scope.cancel()
            return
        if not stopped.wait(timeout=SERVICES_STOP_SECONDS):
            logger.warning("background services still stopping after %s s", SERVICES_STOP_SECONDS)

    async def _services_task(
        self, stopped: threading.Event, *, task_status: Any = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """``run_services`` under a cancel scope handed to ``start_services``; ``stopped`` last."""
        try:
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    await tg.start(self.run_services)
                    task_status.started(scope)
        finally:
            stopped.set()

    async def run_services(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Run every background service until cancelled."""
        async with anyio.create_task_group() as tg:
            for cls in self._service_types:
                tg.start_soon(self._services[cls].run)
            task_status.started()
            await anyio.sleep_forever()
