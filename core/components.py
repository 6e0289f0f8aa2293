"""Owns components: ``Component`` definitions, mounting (``app.use``), handles and call rules.

A component is a schema plus functions, mounted into an app under a name. Each mounted
instance gets its own table space (its namespace is the mount path, e.g. ``"views"`` or
``"workflow/pool"`` for a component mounted inside another), so two instances of one component
keep separate data, and inside a component ``ctx.db`` sees only that instance's tables.

Call rules:

* clients call only the app's public functions;
* a component's exported functions are callable from the namespace that mounted it (the app,
  or the parent component) and from the component itself;
* its internal functions only from the component itself;
* a function handle (``"fn:<namespace>|<path>"``) is a capability: any function may call it.
  App function references passed to a component as arguments travel as handles. Only the core
  parses handles (``is_handle``, ``handle_path``, ``handle.function``).

Client classes call their component with ``call(ctx, ref, args)``: the value inside a query or
mutation (same transaction), an awaitable of it from an action (its own transaction). Python
objects that are not values (workflow handlers, models, tools) are bound to one instance with
``handle.bind(name, obj)`` and read in that instance's functions as ``ctx.bindings[name]``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar, overload

import pydantic

from core.context import ActionCtx, MutationCtx, QueryCtx
from core.errors import BindingExistsError, BindingNotFoundError, FunctionNotFoundError, UserError
from core.execution import Target
from core.functions import FunctionDecorators, FunctionRef, FunctionRegistry
from core.handles import Handle
from core.migrations import MigrationDecorators
from core.schema import Schema

ReturnT = TypeVar("ReturnT")
ResultT = TypeVar("ResultT")

_MOUNT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")


class Component(FunctionDecorators, MigrationDecorators):
    """A reusable unit: its own tables and the functions that are the only way in.

    Args:
        name: the component's name (used in messages and as the default mount name).
        schema: its tables.
        config: names and types of the configuration values an app passes at ``use``.
    """

    def __init__(
        self,
        name: str,
        *,
        schema: Schema | None = None,
        config: Mapping[str, Any] | None = None,
    ):
        if not isinstance(name, str) or not _MOUNT_NAME.match(name):
            raise UserError(f"Component name {name!r} must match [A-Za-z][A-Za-z0-9_]*.")
        self.name = name
        self.schema = schema if schema is not None else Schema()
        self.registry = FunctionRegistry(f'component "{name}"')
        self.children: dict[str, tuple[Component, dict[str, Any]]] = {}
        self._config_model = _config_model(name, config or {})
        self.setup: list[Callable[[ComponentInstance], None]] = []
        """Called with each mounted instance (e.g. to declare the instance's crons)."""

    def __repr__(self) -> str:
        return f"<Component {self.name}>"

    def use(
        self, child: Component, *, name: str | None = None, config: Mapping[str, Any] | None = None
    ) -> ChildHandle:
        """Mount another component inside this one; returns a handle usable in its code."""
        name = name or child.name
        _check_mount_name(name)
        if name in self.children:
            raise UserError(f'Component "{self.name}" already mounts a child named "{name}".')
        self.children[name] = (child, dict(config or {}))
        return ChildHandle(child, name)

    def validate_config(self, config: Mapping[str, Any] | None) -> dict[str, Any]:
        """Check the configuration an app passes at ``use``."""
        try:
            obj = self._config_model.model_validate(dict(config or {}), strict=True)
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "(config)"
            raise UserError(
                f'Configuration "{loc}" of component "{self.name}" is not valid: {err["msg"]}.'
            ) from None
        return obj.model_dump()

    def function(self, attr: str) -> FunctionRef[Any, Any] | None:
        """The function registered under a Python name (``handle.<attr>``)."""
        for ref in self.registry.functions.values():
            if getattr(ref, "__name__", None) == attr or ref.path.rpartition(":")[2] == attr:
                return ref
        return None


def _config_model(name: str, spec: Mapping[str, Any]) -> type[pydantic.BaseModel]:
    fields = {k: (tp, ...) for k, tp in spec.items()}
    return pydantic.create_model(  # type: ignore[call-overload,no-any-return]
        f"{name}_config", __config__=pydantic.ConfigDict(extra="forbid"), **fields
    )


def _check_mount_name(name: str) -> None:
    if not isinstance(name, str) or not _MOUNT_NAME.match(name):
        raise UserError(f"Mount name {name!r} must match [A-Za-z][A-Za-z0-9_]*.")


class BoundRef(FunctionRef[Any, Any]):
    """A component function bound to one mounted instance (what ``handle.add`` returns)."""

    def __init__(self, ref: FunctionRef[Any, Any], namespace: str):
        self.__dict__.update(ref.__dict__)
        self.unbound = ref
        self.namespace = namespace

    def __repr__(self) -> str:
        return f"<{self.kind.value} {self.path} of component instance {self.namespace!r}>"


class GrantedRef(BoundRef):
    """A component function the app granted with ``handle.function(ref)``: a capability.

    Like a handle string, it is callable from any table space (a workflow step, another
    component) but never by a client; unlike one, it is a Python object, so it needs no
    database key to make. Passed between table spaces as an argument it travels as a signed
    handle; ``function_handle(ctx, granted)`` gives that string.
    """

    def __repr__(self) -> str:
        return f"<granted {self.kind.value} {self.path} of component instance {self.namespace!r}>"


class ChildHandle:
    """Inside a component's code: a child component mounted with ``component.use``.

    ``child.fn`` resolves relative to the calling instance, so each instance of the parent
    reaches its own instance of the child.
    """

    def __init__(self, component: Component, name: str):
        self.component = component
        self.name = name

    def __getattr__(self, attr: str) -> ChildRef:
        ref = self.component.function(attr)
        if ref is None:
            raise AttributeError(f'Component "{self.component.name}" has no function "{attr}".')
        return ChildRef(ref, self.name)


class ChildRef(FunctionRef[Any, Any]):
    """A child component's function, resolved against the caller's namespace."""

    def __init__(self, ref: FunctionRef[Any, Any], child: str):
        self.__dict__.update(ref.__dict__)
        self.unbound = ref
        self.child = child


class Bindings(Mapping[str, object]):
    """``ctx.bindings``: a read-only, live view of the objects bound to one instance."""

    __slots__ = ("_namespace", "_objects")

    def __init__(self, namespace: str, objects: Mapping[str, object]):
        self._namespace = namespace
        self._objects = objects

    def __getitem__(self, name: str) -> object:
        try:
            return self._objects[name]
        except KeyError:
            raise BindingNotFoundError(self._namespace, name, list(self._objects)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._objects

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._objects))

    def __len__(self) -> int:
        return len(self._objects)

    def __repr__(self) -> str:
        where = f"component instance {self._namespace!r}" if self._namespace else "the app"
        return f"<Bindings of {where}: {sorted(self._objects)}>"


NO_BINDINGS = Bindings("", {})
"""The app's functions' ``ctx.bindings``: always empty."""


class ComponentInstance:
    """One mounted instance: the component, its namespace, configuration and bindings."""

    def __init__(self, component: Component, namespace: str, config: dict[str, Any]):
        self.component = component
        self.namespace = namespace
        self.config = config
        # Bindings belong to the instance, which belongs to the App definition, so every
        # runtime, client and TestApp of the app in this process sees the same ones.
        self._bound: dict[str, object] = {}
        self._lock = threading.Lock()
        self.bindings = Bindings(namespace, self._bound)
        """The objects bound with ``bind`` (what ``ctx.bindings`` shows its functions)."""

    def bind(self, name: str, obj: object) -> None:
        """Bind ``obj`` under ``name`` (once per name)."""
        if not isinstance(name, str) or not name:
            raise UserError(f"A binding name is a non-empty string, not {name!r}.")
        with self._lock:
            if name in self._bound:
                raise BindingExistsError(self.namespace, name)
            self._bound[name] = obj

    @property
    def parent(self) -> str:
        """The namespace that mounted this instance (``""`` for the app)."""
        return self.namespace.rpartition("/")[0]


class ComponentHandle:
    """What ``app.use`` returns: ``handle.<function>`` is a function reference."""

    def __init__(self, instance: ComponentInstance, *, owner: Any = None):
        self._instance = instance
        self.owner = owner
        """The ``App`` that mounted this instance (``agent.expose()`` finds the app here)."""

    @property
    def namespace(self) -> str:
        """The instance's namespace (its mount path)."""
        return self._instance.namespace

    @property
    def component(self) -> Component:
        """The mounted component."""
        return self._instance.component

    @property
    def bindings(self) -> Mapping[str, object]:
        """What is bound to this instance (the same view its functions get as ``ctx.bindings``)."""
        return self._instance.bindings

    def bind(self, name: str, obj: object) -> None:
        """Bind a Python object to this instance; its functions read it as ``ctx.bindings[name]``.

        Bindings hold what is not a value (a workflow handler, a chat model, an embedder,
        tools); only this instance's functions see them. Client classes bind in their
        constructor.

        Raises:
            BindingExistsError: ``name`` is already bound on this instance.
        """
        self._instance.bind(name, obj)

    def function(self, ref: FunctionRef[Any, Any] | str) -> GrantedRef:
        """Grant one of this instance's functions: a reference callable from anywhere.

        ``ref`` is the component's function (``component_module.fn``), ``handle.fn``, or its
        Python name. The result works where a handle does (a workflow step, a scheduler, an
        argument to another component); ``function_handle(ctx, granted)`` gives its handle
        string, signed with the database's key, to store.

        Raises:
            FunctionNotFoundError: the component has no such function, or ``ref`` is a
                function of another instance.
        """
        instance = self._instance
        if isinstance(ref, BoundRef):
            if ref.namespace != instance.namespace:
                raise FunctionNotFoundError(
                    ref.path,
                    detail=f'it is a function of component instance "{ref.namespace}", not '
                    f'"{instance.namespace}"',
                )
            ref = ref.unbound
        found = (
            instance.component.function(ref)
            if isinstance(ref, str)
            else instance.component.registry.get(ref.path)
        )
        if found is None or (not isinstance(ref, str) and found.handler is not ref.handler):
            name = ref if isinstance(ref, str) else ref.path
            raise FunctionNotFoundError(
                name, detail=f'component "{instance.component.name}" has no such function'
            )
        return GrantedRef(found, instance.namespace)

    def __getattr__(self, attr: str) -> BoundRef:
        if attr.startswith("_"):
            raise AttributeError(attr)
        ref = self._instance.component.function(attr)
        if ref is None:
            raise AttributeError(
                f'Component "{self._instance.component.name}" (mounted as '
                f'"{self._instance.namespace}") has no function "{attr}".'
            )
        return BoundRef(ref, self._instance.namespace)

    def __repr__(self) -> str:
        return f"<ComponentHandle {self._instance.namespace!r} of {self._instance.component!r}>"


class Components:
    """``app.components``: mounted instances by name (``app.components.views.add``)."""

    def __init__(self) -> None:
        self._handles: dict[str, ComponentHandle] = {}
        self.instances: dict[str, ComponentInstance] = {}

    def __getattr__(self, name: str) -> ComponentHandle:
        try:
            return self._handles[name]
        except KeyError:
            raise AttributeError(f'No component is mounted as "{name}".') from None

    def __getitem__(self, name: str) -> ComponentHandle:
        return self.__getattr__(name)

    def __iter__(self) -> Any:
        return iter(self._handles)

    def mount(
        self,
        component: Component,
        name: str,
        config: Mapping[str, Any] | None,
        *,
        owner: Any = None,
    ) -> ComponentHandle:
        """Mount ``component`` (and, recursively, its children) at ``name``."""
        if not isinstance(component, Component):
            raise UserError(f"app.use() takes a Component, not {type(component).__name__}.")
        _check_mount_name(name)
        if name in self._handles:
            raise UserError(f'A component is already mounted as "{name}".')
        instance = self._mount(component, name, config)
        handle = ComponentHandle(instance, owner=owner)
        self._handles[name] = handle
        return handle

    def _mount(
        self, component: Component, namespace: str, config: Mapping[str, Any] | None
    ) -> ComponentInstance:
        instance = ComponentInstance(component, namespace, component.validate_config(config))
        self.instances[namespace] = instance
        for child_name, (child, child_config) in component.children.items():
            self._mount(child, f"{namespace}/{child_name}", child_config)
        for fn in component.setup:
            fn(instance)
        return instance

    def schemas(self) -> dict[str, Schema]:
        """Each instance's schema, by namespace."""
        return {ns: inst.component.schema for ns, inst in self.instances.items()}

    # -- resolution ---------------------------------------------------------------------------

    def resolve_handle(self, handle: Handle) -> Target:
        """The function a verified handle names in a component instance."""
        instance = self.instances.get(handle.namespace)
        found = None if instance is None else instance.component.registry.get(handle.path)
        if found is None:
            raise FunctionNotFoundError(
                handle.path, detail=f'the handle names no function of "{handle.namespace}"'
            )
        return Target(found, handle.namespace)

    def resolve_path(self, path: str, caller: str) -> Target:
        """A path string called from component instance ``caller``: its own functions only.

        Raises:
            FunctionNotFoundError: ``caller``'s component has no function at ``path`` (the
                app's and other instances' functions are reached through handles or
                references, never by path).
        """
        instance = self.instances.get(caller)
        found = None if instance is None else instance.component.registry.get(path)
        if found is None:
            raise FunctionNotFoundError(
                path,
                detail=f'component instance "{caller}" resolves paths only among its own '
                "functions; the app's functions are reached through a handle or reference "
                "the app passes to it",
            )
        return Target(found, caller)

    def resolve(self, ref: Any, caller: str | None) -> Target | None:
        """Resolve a component function reference; ``None`` if ``ref`` is not one."""
        if isinstance(ref, GrantedRef):
            instance = self.instances.get(ref.namespace)
            if instance is None or instance.component.registry.get(ref.path) is None:
                raise FunctionNotFoundError(
                    ref.path, detail=f'no component instance "{ref.namespace}"'
                )
            if caller is None:
                raise FunctionNotFoundError(
                    ref.path, detail="granted component functions are not callable by clients"
                )
            return Target(ref.unbound, ref.namespace)
        if isinstance(ref, BoundRef):
            return self._checked(ref.unbound, ref.namespace, caller)
        if isinstance(ref, ChildRef):
            if caller is None:
                raise FunctionNotFoundError(ref.path, detail="component functions are not public")
            return self._checked(
                ref.unbound, f"{caller}/{ref.child}" if caller else ref.child, caller
            )
        if isinstance(ref, FunctionRef) and isinstance(ref.owner, Component):
            # An unbound component function: it runs in the calling instance.
            if caller is None or not caller:
                raise FunctionNotFoundError(
                    ref.path,
                    detail=f'it belongs to component "{ref.owner.name}"; call it through '
                    "app.components.<mount name>",
                )
            instance = self.instances.get(caller)
            if instance is None or instance.component is not ref.owner:
                raise FunctionNotFoundError(
                    ref.path, detail=f'it belongs to component "{ref.owner.name}"'
                )
            return Target(ref, caller)
        return None

    def _checked(self, ref: FunctionRef[Any, Any], namespace: str, caller: str | None) -> Target:
        instance = self.instances.get(namespace)
        if instance is None or instance.component.registry.get(ref.path) is None:
            raise FunctionNotFoundError(ref.path, detail=f'no component instance "{namespace}"')
        if caller is None:
            raise FunctionNotFoundError(
                ref.path, detail="component functions are reached from app functions, not clients"
            )
        if caller != namespace:
            if ref.internal:
                raise FunctionNotFoundError(
                    ref.path, detail=f'it is internal to component instance "{namespace}"'
                )
            if caller != instance.parent:
                raise FunctionNotFoundError(
                    ref.path,
                    detail=f'component instance "{namespace}" is not mounted by '
                    f'"{caller or "the app"}"',
                )
        return Target(ref, namespace)


def function_handle(ctx: QueryCtx | ActionCtx, ref: FunctionRef[Any, Any] | str) -> str:
    """The handle string of a function as ``ctx``'s function sees it (to pass or store).

    ``ref`` is a reference, a path, or already a handle (returned as the core resolves it).
    """
    return ctx._frame.handle(ref)


@overload
def call(
    ctx: ActionCtx,
    ref: FunctionRef[Any, ReturnT],
    args: Mapping[str, Any] | None = None,
    *,
    then: None = None,
) -> Awaitable[ReturnT]: ...
@overload
def call(
    ctx: ActionCtx,
    ref: FunctionRef[Any, ReturnT],
    args: Mapping[str, Any] | None = None,
    *,
    then: Callable[[ReturnT], ResultT],
) -> Awaitable[ResultT]: ...
@overload
def call(
    ctx: ActionCtx, ref: str, args: Mapping[str, Any] | None = None, *, then: None = None
) -> Awaitable[Any]: ...
@overload
def call(
    ctx: ActionCtx,
    ref: str,
    args: Mapping[str, Any] | None = None,
    *,
    then: Callable[[Any], ResultT],
) -> Awaitable[ResultT]: ...
@overload
def call(
    ctx: QueryCtx,
    ref: FunctionRef[Any, ReturnT],
    args: Mapping[str, Any] | None = None,
    *,
    then: None = None,
) -> ReturnT: ...
@overload
def call(
    ctx: QueryCtx,
    ref: FunctionRef[Any, ReturnT],
    args: Mapping[str, Any] | None = None,
    *,
    then: Callable[[ReturnT], ResultT],
) -> ResultT: ...
@overload
def call(
    ctx: QueryCtx, ref: str, args: Mapping[str, Any] | None = None, *, then: None = None
) -> Any: ...
@overload
def call(
    ctx: QueryCtx,
    ref: str,
    args: Mapping[str, Any] | None = None,
    *,
    then: Callable[[Any], ResultT],
) -> ResultT: ...
def call(
    ctx: QueryCtx | ActionCtx,
    ref: FunctionRef[Any, Any] | str,
    args: Mapping[str, Any] | None = None,
    *,
    then: Callable[[Any], Any] | None = None,
) -> Any:
    """Call a function from any context, as that context allows: how client classes call.

    From a query or mutation context (``MutationCtx`` is a ``QueryCtx``) the call runs in
    the caller's transaction and returns the value (a mutation as a nested unit; a query
    context may call only queries). From an action context it returns an awaitable of the
    value, and the call is its own transaction. The kind of call follows from ``ref``.
    ``then(value)``, when given, converts the value (after the await, from an action).

    Example::

        def count(self, ctx: QueryCtx | ActionCtx, name: str) -> int | Awaitable[int]:
            return call(ctx, self.handle.count, {"name": name}, then=int)

    Raises:
        UserError: the context may not call a function of ``ref``'s kind (a mutation from a
            query, an action from a query or mutation), or ``ctx`` is not a context.
        FunctionNotFoundError: ``ref`` does not resolve from the caller.
    """
    return _dispatch(ctx, ref, args, None, then)


def _dispatch(
    ctx: QueryCtx | ActionCtx,
    ref: Any,
    args: Mapping[str, Any] | None,
    kind: str | None,
    then: Callable[[Any], Any] | None,
) -> Any:
    if isinstance(ctx, ActionCtx):
        pending = ctx._frame.call_async(ref, args, kind)
        if then is None:
            return pending
        convert = then

        async def converted() -> Any:
            return convert(await pending)

        return converted()
    if not isinstance(ctx, QueryCtx):
        raise UserError(
            "call() takes the caller's QueryCtx, MutationCtx or ActionCtx first, not "
            f"{type(ctx).__name__}."
        )
    frame = ctx._frame
    if kind == "action":
        raise UserError(f"{ref!r} is an action; a {frame.kind} cannot call it.")
    if kind == "mutation" and frame.kind != "mutation":
        raise UserError(
            f"{ref!r} is a mutation; it cannot run inside a {frame.kind} (queries are read-only)."
        )
    value = frame.call(ref, args, kind)
    return value if then is None else then(value)


def run_function(
    ctx: QueryCtx | MutationCtx | ActionCtx, kind: str, ref: Any, args: Mapping[str, Any] | None
) -> Any:
    """Call ``ref``, which must be a ``kind``, from any context (deprecated: use ``call``).

    The same as ``call(ctx, ref, args)``, except that it also checks ``ref`` is a ``kind``.
    """
    return _dispatch(ctx, ref, args, kind, None)
