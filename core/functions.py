"""Owns function definitions: kinds, ``FunctionRef``, paths, and argument validation.

A function's path is ``"<module>:<qualname>"`` (a script run as ``__main__`` uses its file's
stem). Arguments are validated from the handler's type hints, strictly (no coercion), before
the handler runs; a bad argument is refused with an error naming it.
"""

from __future__ import annotations

import enum
import functools
import inspect
import os
import sys
import typing
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

import pydantic
from pydantic import BaseModel, ConfigDict

from core.errors import InvalidArgumentError, InvalidValueError, UserError
from core.schema import PlainField, plain_field, plain_id, plain_list
from core.values import check_value

ArgsT = ParamSpec("ArgsT")
"""A function's parameters after ``ctx`` (what its arguments dict holds)."""
ReturnT = TypeVar("ReturnT")
"""What a function returns (an action: what it returns once awaited)."""
ParamsT = ParamSpec("ParamsT")
ResultT = TypeVar("ResultT")


class FunctionKind(str, enum.Enum):  # noqa: UP042 - str(kind) stays the enum's name
    """What a function is allowed to do."""

    QUERY = "query"
    MUTATION = "mutation"
    ACTION = "action"
    HTTP = "http"


KIND_VALUE = {k: k.value for k in FunctionKind}
"""A kind's string by the kind (``FunctionKind.value`` is a descriptor: slower per call)."""


def module_name(handler: Callable[..., Any]) -> str:
    """The module part of a function path (``__main__`` becomes the script's stem)."""
    module = getattr(handler, "__module__", None) or "__main__"
    if module == "__main__":
        main = sys.modules.get("__main__")
        path = getattr(main, "__file__", None)
        return os.path.splitext(os.path.basename(path))[0] if path else "__main__"
    return module


class FunctionRef(Generic[ArgsT, ReturnT]):
    """A registered function: what clients, contexts and the scheduler call.

    It keeps the handler's ``__name__``, ``__qualname__`` and ``__doc__``; calling it directly
    calls the handler (handy in unit tests of pure logic).
    """

    def __init__(
        self,
        handler: Callable[..., Any],
        *,
        kind: FunctionKind,
        internal: bool,
        name: str | None = None,
        owner: Any = None,
    ):
        if kind in (FunctionKind.QUERY, FunctionKind.MUTATION):
            if inspect.iscoroutinefunction(handler):
                raise UserError(
                    f"{kind.value} {handler.__qualname__!r} must be a plain def: queries and "
                    "mutations only touch the database, so they stay deterministic. Use an "
                    "action for I/O."
                )
        elif not inspect.iscoroutinefunction(handler):
            raise UserError(f"{kind.value} {handler.__qualname__!r} must be an async def.")
        self.handler = handler
        self.kind = kind
        self.internal = internal
        self.owner = owner
        self.path = f"{module_name(handler)}:{name or handler.__qualname__}"
        functools.update_wrapper(self, handler)
        self._model: type[BaseModel] | None = None
        self._params: list[str] = []
        self._plain: PlainArgs | None | bool = False
        """``_plain_args``'s compiled form (``None``: none; ``False``: not compiled yet)."""

    def __repr__(self) -> str:
        internal = "internal " if self.internal else ""
        return f"<{internal}{self.kind.value} {self.path}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the handler directly (handy for unit tests of pure logic)."""
        return self.handler(*args, **kwargs)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        return self

    # -- arguments -----------------------------------------------------------------------

    @property
    def args_model(self) -> type[BaseModel]:
        """The pydantic model arguments are validated with (built on first use).

        An HTTP route's arguments are the parameters after ``request``: filled from the
        URL's path parameters and query string, so they are validated in lax mode (``"5"``
        is a valid ``int``), where every other function's are strict.
        """
        if self._model is None:
            skip = 2 if self.kind is FunctionKind.HTTP else 1
            self._model = _args_model(self.handler, self.path, skip)
        return self._model

    def validate_args(self, args: Any, context: Any = None) -> dict[str, Any]:
        """Validate an args dict; return the values to pass as keyword arguments.

        Raises:
            InvalidArgumentError: naming the first bad argument.
        """
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise InvalidArgumentError(
                f'Arguments to "{self.path}" must be a dict, not {type(args).__name__}.',
                function=self.path,
            )
        plain = self._plain
        if plain is False:
            plain = self._plain = _plain_args(self)
        if callable(plain):
            kwargs = plain(args, context)
            if kwargs is not None:
                return kwargs
        model = self.args_model
        try:
            obj = model.__pydantic_validator__.validate_python(
                args, strict=self.kind is not FunctionKind.HTTP, context=context
            )
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "(arguments)"
            arg = str(err["loc"][0]) if err["loc"] else None
            raise InvalidArgumentError(
                f'Argument "{loc}" of "{self.path}" is not valid: {_msg(err["msg"])}.',
                function=self.path,
                argument=arg,
            ) from None
        # pydantic keeps a model's field values, and only those, in its __dict__.
        return dict(obj.__dict__)

    def check_result(self, result: Any) -> Any:
        """Check a handler's return value is a value (models are dumped to dicts).

        Raises:
            UserError: the handler returned something that is not a value (a mistake in
                the function, so never a client error).
        """
        if isinstance(result, BaseModel):
            result = result.model_dump(mode="python")
        try:
            check_value(result, what=f'the return value of "{self.path}"')
        except InvalidValueError as exc:
            raise UserError(str(exc)) from None
        return result


PlainArgs = Callable[[dict[str, Any], Any], "dict[str, Any] | None"]
"""``(args, context) -> kwargs`` or ``None``: ``validate_args`` in one pass, for plain types.

It accepts only what the argument model accepts, returning what the model returns; ``None``
sends the call through the model (which accepts it or words the error).
"""


def _plain_args(ref: FunctionRef[Any, Any]) -> PlainArgs | None:
    """Compile the one-pass argument check of a function whose parameters all have plain types.

    Plain types are those ``schema.plain_field`` settles. A parameter left out takes its
    default only when that is an immutable scalar (the model hands out the default object).
    """
    if ref.kind is FunctionKind.HTTP:
        return None  # lax validation: "5" is an int there
    params: list[tuple[str, PlainField, bool, Any]] = []
    for name, info in ref.args_model.model_fields.items():
        tp: Any = info.annotation
        if info.metadata:
            tp = typing.Annotated[(tp, *info.metadata)]
        f = _ARG_KINDS.get(tp) if _hashable(tp) else None
        if f is None:
            f = plain_field(tp)
        if f is None:
            return None
        default = None
        if not info.is_required():
            default = info.get_default(call_default_factory=False)
            if type(default) not in _IMMUTABLE or info.default_factory is not None:
                return None
        params.append((name, f, not info.is_required(), default))
    declared = {p[0] for p in params}

    def check(args: dict[str, Any], context: Any) -> dict[str, Any] | None:
        for key in args:
            if type(key) is not str or key not in declared:
                return None
        out: dict[str, Any] = {}
        for name, f, has_default, default in params:
            if name not in args:
                if not has_default:
                    return None
                out[name] = default
                continue
            v = _plain_arg(args[name], f, context)
            if v is _REFUSED:
                return None
            out[name] = v
        return out

    return check


_IMMUTABLE = (str, int, float, bool, type(None), bytes)
_REFUSED: Any = object()
_ANY = PlainField(types=(), optional=True)
"""An ``Any`` argument: the model passes any value through as it is."""
_STR_DICT = PlainField(types=(dict,), optional=False)
"""A ``dict[str, Any]`` argument: the model takes a dict whose keys are all ``str`` (as a
copy, values as they are)."""
_ARG_KINDS: dict[Any, PlainField] = {Any: _ANY, dict[str, Any]: _STR_DICT}
"""Argument types the one-pass check settles beyond ``plain_field``'s (argument models pass
these values through, where a document's shape would check and size them)."""


def _hashable(tp: Any) -> bool:
    try:
        hash(tp)
    except TypeError:
        return False
    return True


def _plain_arg(v: Any, f: PlainField, context: Any) -> Any:
    """An argument as the model validates it, or ``_REFUSED``: the model must decide."""
    if f is _ANY:
        return v
    if f is _STR_DICT:
        if type(v) is not dict:
            return _REFUSED
        for key in v:
            if type(key) is not str:
                return _REFUSED
        return dict(v)
    if v is None:
        return v if f.optional else _REFUSED
    if type(v) not in f.types:
        return _REFUSED
    if f.is_id:
        valid = plain_id(v, f.table, context)
        return _REFUSED if valid is None else valid
    if f.item is not None:
        # Sizes do not matter here, only that the model takes the items as they are.
        return _REFUSED if plain_list(v, f.item) is None else list(v)
    return v


def _args_model(handler: Callable[..., Any], path: str, skip: int = 1) -> type[BaseModel]:
    sig = inspect.signature(handler)
    params = list(sig.parameters.values())
    if len(params) < skip:
        first = "the context as its first parameter" if skip == 1 else "(ctx, request) first"
        raise UserError(f'Function "{path}" must take {first}.')
    try:
        hints = typing.get_type_hints(handler, include_extras=True)
    except Exception as exc:
        raise UserError(f'Function "{path}": its type hints cannot be resolved: {exc}') from None
    fields: dict[str, Any] = {}
    for p in params[skip:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise UserError(
                f'Function "{path}": parameter "{p.name}" must be a plain named parameter '
                "(no *args, **kwargs or positional-only)."
            )
        if p.name.startswith(("_", "$")):
            raise UserError(f'Function "{path}": argument "{p.name}" may not start with _ or $.')
        tp = hints.get(p.name, Any)
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (tp, default)
    try:
        return pydantic.create_model(
            f"{path.replace(':', '_').replace('.', '_')}_args",
            __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=False),
            **fields,
        )
    except (pydantic.PydanticSchemaGenerationError, TypeError, NameError) as exc:
        raise UserError(f'Function "{path}": unsupported argument type: {exc}') from None


class FunctionRegistry:
    """Functions by path, for one app or component; paths are unique within it."""

    def __init__(self, owner_label: str):
        self._label = owner_label
        self.functions: dict[str, FunctionRef[Any, Any]] = {}

    def add(self, ref: FunctionRef[Any, Any]) -> None:
        """Register a function; a second function with the same path is a ``UserError``."""
        existing = self.functions.get(ref.path)
        if existing is not None and existing.handler is not ref.handler:
            raise UserError(
                f'Function path "{ref.path}" is registered twice in {self._label}; give one of '
                'them another name with name="...".'
            )
        self.functions[ref.path] = ref

    def get(self, path: str) -> FunctionRef[Any, Any] | None:
        """The function at ``path``, or ``None``."""
        return self.functions.get(path)


class _Register(Protocol):
    """What the called form of a query or mutation decorator returns."""

    def __call__(
        self, fn: Callable[Concatenate[Any, ParamsT], ResultT], /
    ) -> FunctionRef[ParamsT, ResultT]: ...


class _RegisterAction(Protocol):
    """What the called form of an action decorator returns."""

    def __call__(
        self, fn: Callable[Concatenate[Any, ParamsT], Awaitable[ResultT]], /
    ) -> FunctionRef[ParamsT, ResultT]: ...


class FunctionDecorators:
    """The registering decorators an ``App`` and a ``Component`` share.

    Each accepts the bare and the called form: ``@app.query`` and ``@app.query(name="...")``.
    The reference they return is typed from the handler: ``FunctionRef[P, R]`` where ``P`` is
    the parameters after ``ctx`` and ``R`` the return type (an action's awaited result), so
    ``client.query(ref, ...)`` and ``ctx.run_query(ref, ...)`` return ``R`` to a type checker.
    Subclasses provide ``registry`` (a ``FunctionRegistry``).
    """

    registry: FunctionRegistry

    def _decorate(
        self, kind: FunctionKind, internal: bool, fn: Callable[..., Any] | None, name: str | None
    ) -> Any:
        def wrap(handler: Callable[..., Any]) -> FunctionRef[Any, Any]:
            ref: FunctionRef[Any, Any] = FunctionRef(
                handler, kind=kind, internal=internal, name=name, owner=self
            )
            self.registry.add(ref)
            return ref

        return wrap if fn is None else wrap(fn)

    @overload
    def query(
        self, fn: Callable[Concatenate[Any, ParamsT], ResultT], /
    ) -> FunctionRef[ParamsT, ResultT]: ...
    @overload
    def query(self, fn: None = None, /, *, name: str | None = None) -> _Register: ...
    def query(self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None) -> Any:
        """Register a public query (a plain ``def`` that only reads)."""
        return self._decorate(FunctionKind.QUERY, False, fn, name)

    @overload
    def mutation(
        self, fn: Callable[Concatenate[Any, ParamsT], ResultT], /
    ) -> FunctionRef[ParamsT, ResultT]: ...
    @overload
    def mutation(self, fn: None = None, /, *, name: str | None = None) -> _Register: ...
    def mutation(self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None) -> Any:
        """Register a public mutation (a plain ``def``; one serializable transaction)."""
        return self._decorate(FunctionKind.MUTATION, False, fn, name)

    @overload
    def action(
        self, fn: Callable[Concatenate[Any, ParamsT], Awaitable[ResultT]], /
    ) -> FunctionRef[ParamsT, ResultT]: ...
    @overload
    def action(self, fn: None = None, /, *, name: str | None = None) -> _RegisterAction: ...
    def action(self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None) -> Any:
        """Register a public action (``async def``; any I/O)."""
        return self._decorate(FunctionKind.ACTION, False, fn, name)

    @overload
    def internal_query(
        self, fn: Callable[Concatenate[Any, ParamsT], ResultT], /
    ) -> FunctionRef[ParamsT, ResultT]: ...
    @overload
    def internal_query(self, fn: None = None, /, *, name: str | None = None) -> _Register: ...
    def internal_query(
        self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None
    ) -> Any:
        """Register a query callable only from other functions, the scheduler and crons."""
        return self._decorate(FunctionKind.QUERY, True, fn, name)

    @overload
    def internal_mutation(
        self, fn: Callable[Concatenate[Any, ParamsT], ResultT], /
    ) -> FunctionRef[ParamsT, ResultT]: ...
    @overload
    def internal_mutation(self, fn: None = None, /, *, name: str | None = None) -> _Register: ...
    def internal_mutation(
        self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None
    ) -> Any:
        """Register an internal mutation."""
        return self._decorate(FunctionKind.MUTATION, True, fn, name)

    @overload
    def internal_action(
        self, fn: Callable[Concatenate[Any, ParamsT], Awaitable[ResultT]], /
    ) -> FunctionRef[ParamsT, ResultT]: ...
    @overload
    def internal_action(
        self, fn: None = None, /, *, name: str | None = None
    ) -> _RegisterAction: ...
    def internal_action(
        self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None
    ) -> Any:
        """Register an internal action."""
        return self._decorate(FunctionKind.ACTION, True, fn, name)


def _msg(text: str) -> str:
    """Pydantic's message without its "Value error, " prefix and final period."""
    return text.removeprefix("Value error, ").rstrip(".")
