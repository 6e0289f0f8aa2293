from __future__ import annotations

import sys
import types
from typing import Any, Literal

import pydantic
import pytest

from core import (
    App,
    AppError,
    FunctionNotFoundError,
    FunctionRef,
    Id,
    InvalidArgumentError,
    MutationCtx,
    QueryCtx,
    Schema,
    Table,
    UserError,
)
from core.functions import FunctionKind, FunctionRegistry, module_name
from core.testing import TestApp

app = App(Schema(tasks=Table({"text": str}), users=Table({"name": str})))


class Filter(pydantic.BaseModel):
    owner: Id[Literal["users"]]
    tags: list[str] = []


@app.query
def echo(
    ctx: QueryCtx, n: int, text: str = "x", ratio: float = 1.0, flag: bool = False
) -> dict[str, Any]:
    """Returns its arguments."""
    return {"n": n, "text": text, "ratio": ratio, "flag": flag}


@app.query
def by_filter(ctx: QueryCtx, f: Filter, others: list[Id[Literal["users"]]] = []) -> str:  # noqa: B006
    return f.owner


@app.query(name="renamed")
def original_name(ctx: QueryCtx) -> str:
    return "renamed"


@app.internal_query
def secret(ctx: QueryCtx) -> str:
    return "secret"


@app.query
def returns_model(ctx: QueryCtx) -> Filter:
    return Filter(owner=ctx.db.query("users").first()["_id"])


@app.query
def returns_set(ctx: QueryCtx) -> Any:
    return {1, 2}


@app.mutation
def fails_with_data(ctx: MutationCtx) -> None:
    ctx.db.insert("tasks", {"text": "rolled back"})
    raise AppError({"code": "nope", "items": [1, b"\x00", None]})


@app.mutation
def fails_plainly(ctx: MutationCtx) -> None:
    raise KeyError("plain")


@app.mutation
def add_user(ctx: MutationCtx, name: str) -> str:
    return ctx.db.insert("users", {"name": name})


def test_references_keep_the_handler_identity_and_a_path() -> None:
    assert echo.__name__ == "echo" and echo.__doc__ == "Returns its arguments."  # type: ignore[attr-defined]
    assert echo.path == f"{__name__}:echo"
    assert original_name.path == f"{__name__}:renamed"
    assert echo.kind is FunctionKind.QUERY and not echo.internal and secret.internal
    assert repr(secret) == f"<internal query {__name__}:secret>"
    assert echo(None, n=1)["n"] == 1  # calling the reference calls the handler


def test_a_script_run_as_main_uses_its_file_stem(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("__main__")
    fake.__file__ = "/somewhere/quickstart.py"
    monkeypatch.setitem(sys.modules, "__main__", fake)

    def handler(ctx: Any) -> None: ...

    handler.__module__ = "__main__"
    assert module_name(handler) == "quickstart"


def test_arguments_are_validated_strictly_naming_the_argument() -> None:
    with TestApp(app) as t:
        assert t.query(echo, {"n": 3}) == {"n": 3, "text": "x", "ratio": 1.0, "flag": False}
        assert t.query(echo.path, {"n": 3, "ratio": 2})["ratio"] == 2.0
        cases = [
            ({"n": "100"}, "n"),  # no coercion
            ({"n": 1.5}, "n"),
            ({"n": True}, "n"),
            ({}, "n"),
            ({"n": 1, "text": 5}, "text"),
            ({"n": 1, "flag": 1}, "flag"),
            ({"n": 1, "bogus": 1}, "bogus"),
        ]
        for args, name in cases:
            with pytest.raises(InvalidArgumentError) as info:
                t.query(echo, args)  # type: ignore[call-overload]
            assert info.value.argument == name and f'"{name}"' in str(info.value), args
            assert info.value.function == echo.path and info.value.http_status == 400
        with pytest.raises(InvalidArgumentError, match="must be a dict"):
            t.query(echo, [1])  # type: ignore[call-overload]


def test_id_arguments_check_their_table_even_inside_models() -> None:
    with TestApp(app) as t:
        user = t.mutation(add_user, {"name": "ann"})
        task = t.run(lambda ctx: ctx.db.insert("tasks", {"text": "x"}))
        assert t.query(by_filter, {"f": {"owner": user}}) == user
        with pytest.raises(InvalidArgumentError, match='"f.owner"') as info:
            t.query(by_filter, {"f": {"owner": task}})
        assert info.value.argument == "f" and 'not of table "users"' in str(info.value)
        with pytest.raises(InvalidArgumentError, match='"others.1"'):
            t.query(by_filter, {"f": {"owner": user}, "others": [user, task]})
        with pytest.raises(InvalidArgumentError, match="not a document id"):
            t.query(by_filter, {"f": {"owner": "nope"}})


def test_unknown_paths_and_unreachable_functions_are_not_found() -> None:
    with TestApp(app) as t:
        for ref, kind in [("nowhere:nothing", "query"), (secret, "query"), (echo, "mutation")]:
            with pytest.raises(FunctionNotFoundError) as info:
                getattr(t, kind)(ref, {"n": 1})
            assert info.value.http_status == 404
        other = App()

        @other.query
        def elsewhere(ctx: QueryCtx) -> None: ...

        with pytest.raises(FunctionNotFoundError, match="not registered on this app"):
            t.query(elsewhere)
        with pytest.raises(UserError, match="function reference or a path"):
            t.query(42)  # type: ignore[call-overload]


def test_app_errors_keep_their_data_and_roll_back() -> None:
    with TestApp(app) as t:
        with pytest.raises(AppError) as info:
            t.mutation(fails_with_data)
        assert info.value.data == {"code": "nope", "items": [1, b"\x00", None]}
        assert info.value.http_status == 422
        with pytest.raises(KeyError, match="plain"):
            t.mutation(fails_plainly)  # any other exception propagates unchanged
        assert t.run(lambda ctx: ctx.db.query("tasks").collect()) == []


def test_return_values_are_checked_and_models_dumped() -> None:
    with TestApp(app) as t:
        user = t.mutation(add_user, {"name": "ann"})
        # A returned model reaches the caller as its dict.
        assert t.query(returns_model) == {"owner": user, "tags": []}  # type: ignore[comparison-overlap]
        with pytest.raises(UserError, match="cannot be stored"):
            t.query(returns_set)


def test_definition_mistakes_are_user_errors() -> None:
    local = App()
    with pytest.raises(UserError, match="plain def"):

        @local.query
        async def q(ctx: QueryCtx) -> None: ...

    with pytest.raises(UserError, match="async def"):

        @local.action  # type: ignore[arg-type]
        def a(ctx: Any) -> None: ...

    def no_ctx() -> None: ...

    with pytest.raises(UserError, match="context as its first parameter"):
        FunctionRef(no_ctx, kind=FunctionKind.QUERY, internal=False).validate_args({})

    def star(ctx: Any, *args: int) -> None: ...

    with pytest.raises(UserError, match="plain named parameter"):
        FunctionRef(star, kind=FunctionKind.QUERY, internal=False).validate_args({})

    def private(ctx: Any, _x: int) -> None: ...

    with pytest.raises(UserError, match="may not start with"):
        FunctionRef(private, kind=FunctionKind.QUERY, internal=False).validate_args({})

    def unresolved(ctx: Any, x: NoSuchType) -> None: ...  # noqa: F821

    with pytest.raises(UserError, match="cannot be resolved"):
        FunctionRef(unresolved, kind=FunctionKind.QUERY, internal=False).validate_args({})


def test_paths_are_unique_within_an_app() -> None:
    registry = FunctionRegistry("the app")

    def f(ctx: Any) -> None: ...

    def g(ctx: Any) -> None: ...

    registry.add(FunctionRef(f, kind=FunctionKind.QUERY, internal=False, name="same"))
    registry.add(
        FunctionRef(f, kind=FunctionKind.QUERY, internal=False, name="same")
    )  # same handler
    with pytest.raises(UserError, match="registered twice"):
        registry.add(FunctionRef(g, kind=FunctionKind.QUERY, internal=False, name="same"))
    assert registry.get(f"{__name__}:same") is not None and registry.get("x:y") is None
