"""Owns ``App``: the schema, the function registry, mounted components, and opening a runtime.

``App`` is a definition: decorators register functions on it at import time. Entering a client
(or ``TestApp``) opens a ``Runtime`` for it on a storage; the runtime is shared by every client
open at once and closed when the last one leaves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from core.client import Client, SyncClient
from core.components import NO_BINDINGS, Component, ComponentHandle, Components
from core.config import database_url, environment
from core.crons import Crons, CronService
from core.errors import FunctionNotFoundError, InvalidHandleError, UserError
from core.execution import Clock, Target
from core.files import FileService
from core.functions import FunctionDecorators, FunctionKind, FunctionRef, FunctionRegistry
from core.handles import Handle, is_handle
from core.migrations import MigrationDecorators, pending_fixes, planned
from core.runtime import Runtime
from core.scheduler import Scheduler, SchedulerConfig
from core.schema import Schema
from core.services import Service
from core.storage import open_storage
from core.storage.base import Storage

F = TypeVar("F", bound=Callable[..., Any])


class App(FunctionDecorators, MigrationDecorators):
    """A Capsule app: ``app = App(schema)``; storage comes from ``CAPSULE_DB_URL`` when opened.

    Args:
        schema: the app's tables (default: schemaless).
        storage: a ``Storage`` or a database URL; when omitted, ``CAPSULE_DB_URL`` is read
            as the first client opens (default ``sqlite:///capsule.db``).
    """

    def __init__(self, schema: Schema | None = None, *, storage: Storage | str | None = None):
        if schema is not None and not isinstance(schema, Schema):
            raise UserError(f"App(schema) takes a Schema, not {type(schema).__name__}.")
        self.schema = schema if schema is not None else Schema(strict=False)
        self.registry = FunctionRegistry("the app")
        self._storage = storage
        self._runtime: Runtime | None = None
        self._users = 0
        self._lock = threading.Lock()
        self.services: list[type[Service]] = [FileService, Scheduler, CronService]
        """The services every runtime of this app runs, in order (``add_service`` adds one)."""
        self.components = Components()
        """Mounted component instances: ``app.components.<name>.<function>``."""
        self.http_routes: list[tuple[str, str, FunctionRef[Any, Any]]] = []
        """``(path, method, handler)`` of each ``@app.http_route``, served under ``/http``."""
        self.server_routes: list[Callable[[Any], list[Any]]] = []
        """Route factories: each is called with the ``CapsuleServer`` as the ASGI app is built
        and returns Starlette routes to serve (``agent.expose()`` adds one)."""
        self.scheduler_config = SchedulerConfig()
        """Scheduler settings (job retention, action leases, parallelism, polling)."""
        self.crons = Crons()
        """The app's crons: ``app.crons.interval(...)``, ``.cron(...)``, ``.daily(...)`` ..."""

    # -- registration -------------------------------------------------------------------------

    def http_route(self, path: str, *, method: str = "GET") -> Callable[[F], FunctionRef[Any, Any]]:
        """Register ``async def (ctx: ActionCtx, request) -> Response`` at ``/http{path}``.

        The handler gets an ``ActionCtx`` (data through ``ctx.run_*``) and the Starlette
        ``Request``, and returns a Starlette ``Response``. ``path`` may hold Starlette path
        parameters (``/items/{id}``), read from ``request.path_params``.
        """
        if not isinstance(path, str) or not path.startswith("/"):
            raise UserError(f"An HTTP route path must start with '/', not {path!r}.")
        verb = method.upper()
        if any(p == path and m == verb for p, m, _ in self.http_routes):
            raise UserError(f"HTTP route {verb} {path} is registered twice.")

        def register(fn: F) -> FunctionRef[Any, Any]:
            ref: FunctionRef[Any, Any] = FunctionRef(
                fn, kind=FunctionKind.HTTP, internal=True, owner=self
            )
            self.http_routes.append((path, verb, ref))
            return ref

        return register

    # -- resolution ----------------------------------------------------------------------------

    def resolve(self, ref: Any, *, caller: str | None) -> Target:
        """Find the function a reference, path or verified handle names, as ``caller`` sees it.

        ``caller`` is ``None`` for clients (which reach only public app functions), ``""`` for
        the app's own functions, or a component's namespace. A path string names a function
        of the caller's own table space: the app's for clients and app functions, the
        instance's own for a component, which reaches the app's functions only through what
        the app hands it (a handle, or a reference object bound or passed to it).
        """
        if isinstance(ref, Handle):
            return self._resolve_handle(ref)
        if isinstance(ref, FunctionRef):
            found = self.registry.get(ref.path)
            if found is not ref and (found is None or found.handler is not ref.handler):
                resolved = self._resolve_foreign(ref, caller)
                if resolved is not None:
                    return resolved
                raise FunctionNotFoundError(ref.path, detail="it is not registered on this app")
            target = Target(found, "")
        elif isinstance(ref, str):
            if is_handle(ref):
                # The executor verifies handle strings before resolving; one that reaches
                # here came around it, so it is refused rather than trusted.
                raise InvalidHandleError(ref[:80], "it was not verified by the executor")
            if caller:
                return self.components.resolve_path(ref, caller)
            found = self.registry.get(ref)
            if found is None:
                raise FunctionNotFoundError(ref)
            target = Target(found, "")
        else:
            raise UserError(
                f"Expected a function reference or a path string, not {type(ref).__name__}."
            )
        if caller is None and target.ref.internal:
            raise FunctionNotFoundError(
                target.ref.path, detail="it is internal (callable only from other functions)"
            )
        return target

    def _resolve_handle(self, handle: Handle) -> Target:
        if not handle.namespace:
            found = self.registry.get(handle.path)
            if found is None:
                raise FunctionNotFoundError(handle.path, detail="the handle names no app function")
            return Target(found, "")
        return self.components.resolve_handle(handle)

    def _resolve_foreign(self, ref: Any, caller: str | None) -> Target | None:
        """Component functions and component handles (``None``: not a component reference)."""
        return self.components.resolve(ref, caller)

    def bindings(self, namespace: str) -> Mapping[str, object]:
        """What ``ctx.bindings`` shows the functions of ``namespace`` (empty for the app)."""
        instance = self.components.instances.get(namespace)
        return NO_BINDINGS if instance is None else instance.bindings

    def component_config(self, namespace: str) -> dict[str, Any]:
        """The configuration a component instance was mounted with (``{}`` for the app)."""
        instance = self.components.instances.get(namespace)
        return {} if instance is None else dict(instance.config)

    # -- components --------------------------------------------------------------------------

    def use(
        self,
        component: Component,
        *,
        name: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> ComponentHandle:
        """Mount a component instance under ``name``; returns its handle.

        Mount before the first client opens. The same component may be mounted several
        times under different names, each with its own tables.
        """
        if self._runtime is not None:
            raise UserError("Mount components before the first client opens.")
        return self.components.mount(component, name or component.name, config, owner=self)

    # -- runtime --------------------------------------------------------------------------------

    def add_service(self, cls: type[Service]) -> None:
        """Run a service (a ``core.Service`` subclass) in every runtime of this app.

        Its system tables join the ``_system`` table space. Add services before the first
        client opens; adding one twice is a no-op.

        Raises:
            UserError: ``cls`` is not a ``Service`` subclass, or a runtime is already open.
        """
        if not (isinstance(cls, type) and issubclass(cls, Service)):
            raise UserError(f"app.add_service() takes a Service subclass, not {cls!r}.")
        if self._runtime is not None:
            raise UserError("Add services before the first client opens.")
        if cls not in self.services:
            self.services.append(cls)

    def schemas(self) -> dict[str, Schema]:
        """The app's and its component instances' schemas, by namespace (``""`` is the app's).

        The runtime adds the ``_system`` table space, assembled from the services.
        """
        return {"": self.schema, **self.components.schemas()}

    def make_runtime(
        self, storage: Storage | str | None = None, *, clock: Clock | None = None
    ) -> Runtime:
        """A runtime of this app on ``storage`` (not yet open)."""
        chosen = storage if storage is not None else self._storage
        if chosen is None:
            chosen = database_url()
        if isinstance(chosen, str):
            chosen = open_storage(chosen)
        runtime = Runtime(app=self, storage=chosen, clock=clock, env=environment())
        runtime.pending = pending_fixes(runtime.db.catalog, planned(self))
        return runtime

    def _acquire_runtime(self) -> Runtime:
        with self._lock:
            if self._runtime is None:
                rt = self.make_runtime()
                rt.open()
                self._runtime = rt
            self._users += 1
            return self._runtime

    def _release_runtime(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._runtime is not None:
                rt, self._runtime = self._runtime, None
                rt.close()

    def client(self, identity: Any = None, *, runtime: bool = True) -> Client:
        """The async in-process client: ``async with app.client() as client``."""
        return Client(self, identity=identity, runtime=runtime)

    def sync_client(self, identity: Any = None, *, runtime: bool = True) -> SyncClient:
        """The blocking client: ``with app.sync_client() as client``."""
        return SyncClient(self, identity=identity, runtime=runtime)
