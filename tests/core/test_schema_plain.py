"""The one-pass validator of plain mapping shapes agrees with the full validation path."""

from __future__ import annotations

import itertools
from typing import Any, Literal, Optional

import pytest

from core.errors import CapsuleError
from core.ids import Id, new_id
from core.schema import Table
from core.values import check_document

SHAPE: dict[str, Any] = {
    "s": str,
    "i": int,
    "f": float,
    "b": bool,
    "raw": bytes,
    "n": None,
    "opt": int | None,
    "old": Optional[str],  # noqa: UP045 - the typing spelling, too
    "ref": Id["things"],
    "any_ref": Id,
    "maybe_ref": Id["things"] | None,
    "tags": list[str],
    "vec": list[float],
    "ints": list[int],
    "flags": list[bool] | None,
    "blobs": list[bytes] | None,
}
THING = new_id(7, 1.5)
OTHER = new_id(8, 1.5)
BASE: dict[str, Any] = {
    "s": "x",
    "i": 1,
    "f": 1.5,
    "b": True,
    "raw": b"\x00",
    "ref": THING,
    "any_ref": OTHER,
    "tags": ["a"],
    "vec": [0.5],
    "ints": [2],
}


class _SubStr(str):
    __slots__ = ()


VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1 << 63,
    (1 << 63) - 1,
    -(1 << 63),
    2**70,
    1.0,
    float("nan"),
    float("inf"),
    "",
    "plain",
    "héllo",
    "a\udc00b",
    _SubStr("sub"),
    b"",
    b"bytes",
    bytearray(b"x"),
    str(THING),
    THING,
    OTHER,
    "0" * 32,
    [],
    ["a", "é"],
    ["a", 1],
    [1.0, 2.0],
    [1, 2],
    [1, 2**64],
    [True],
    [b"x"],
    ["a\udc00"],
    (1.0,),
    {"k": 1},
]


def _resolver(value: str, table: str | None) -> Id:
    from core.errors import InvalidIdError
    from core.ids import decode_table_number

    number = decode_table_number(value)
    if table == "things" and number != 7:
        raise InvalidIdError(f'"{value}" is not an id of table "things".', table=table)
    return Id(value)


CONTEXT = {"resolve_id": _resolver}


def _full(table: Table, body: dict[str, Any]) -> tuple[dict[str, Any], int] | str:
    try:
        valid = table.validate("t", body, CONTEXT)
        size = check_document(valid, table="t")
    except CapsuleError as exc:
        return str(exc)
    return valid, size - 2


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b or (a != a and b != b)


def _check(table: Table, body: dict[str, Any]) -> None:
    plain = table.plain_validator("t")
    assert plain is not None
    fast = plain(body, CONTEXT)
    if fast is None:
        return
    full = _full(table, body)
    assert not isinstance(full, str), (body, full)
    assert fast[1] == full[1], body
    assert _same(fast[0], full[0]), (body, fast[0], full[0])


@pytest.mark.parametrize("field", list(SHAPE))
def test_every_value_of_every_field_agrees(field: str) -> None:
    table = Table(SHAPE)
    accepted = 0
    for value in VALUES:
        body = {**BASE, field: value}
        _check(table, body)
        accepted += table.plain_validator("t")(body, CONTEXT) is not None  # type: ignore[misc]
    assert accepted  # the pass settles some values of each field


def test_omitted_extra_and_reordered_fields_agree() -> None:
    table = Table(SHAPE)
    plain = table.plain_validator("t")
    assert plain is not None
    for name in SHAPE:
        _check(table, {k: v for k, v in BASE.items() if k != name})
    _check(table, {**BASE, "extra": 1})
    _check(table, {**BASE, "_id": "x"})
    _check(table, {**BASE, "$x": 1})
    _check(table, {**BASE, 3: 1})  # type: ignore[dict-item]
    _check(table, {_SubStr("s"): "x", **{k: v for k, v in BASE.items() if k != "s"}})
    for order in itertools.islice(itertools.permutations(BASE), 50):
        body = {k: BASE[k] for k in order}
        _check(table, body)
        fast = plain(body, CONTEXT)
        assert fast is not None and list(fast[0]) == list(SHAPE)


def test_shapes_it_does_not_settle_have_none() -> None:
    assert Table({"x": int | str}).plain_validator("t") is None
    assert Table({"x": dict[str, int]}).plain_validator("t") is None
    assert Table({"x": Any}).plain_validator("t") is None
    assert Table({"x": list[list[int]]}).plain_validator("t") is None
    assert Table(None).plain_validator("t") is None


def _handler(
    ctx: Any,
    s: str,
    i: int,
    f: float,
    ref: Id[Literal["things"]],
    vec: list[float],
    opt: int | None,
    cfg: dict[str, Any],
    anything: Any,
    b: bool = False,
    n: str | None = None,
    limit: int = 10,
) -> None:
    """A function whose arguments the one-pass check settles."""


ARGS: dict[str, Any] = {
    "s": "x",
    "i": 1,
    "f": 1.5,
    "ref": THING,
    "vec": [1.0],
    "opt": None,
    "cfg": {"rate": 1.0, "kind": "token bucket"},
    "anything": object(),
}
ARG_VALUES: list[Any] = [*VALUES, {}, {1: "x"}, {"a": {"b": [1]}}, {"a": 1, 2: 3}, object()]


def test_plain_arguments_agree_with_the_model() -> None:
    from core.functions import FunctionKind, FunctionRef

    fast_ref: FunctionRef[Any, Any] = FunctionRef(_handler, kind=FunctionKind.QUERY, internal=False)
    full_ref: FunctionRef[Any, Any] = FunctionRef(_handler, kind=FunctionKind.QUERY, internal=False)
    full_ref._plain = None
    assert fast_ref.validate_args(ARGS, CONTEXT) is not None
    assert fast_ref._plain
    settled = 0
    bodies = [ARGS, {**ARGS, "extra": 1}, {k: v for k, v in ARGS.items() if k != "opt"}]
    bodies += [{**ARGS, name: value} for name in (*ARGS, "b", "n", "limit") for value in ARG_VALUES]
    for body in bodies:
        fast = fast_ref._plain(body, CONTEXT)  # type: ignore[operator]
        try:
            full: Any = full_ref.validate_args(body, CONTEXT)
        except CapsuleError as exc:
            assert fast is None, (body, exc)
            continue
        if fast is not None:
            settled += 1
            assert _same(fast, full), (body, fast, full)
            assert [type(v) for v in fast.values()] == [type(v) for v in full.values()]
            assert fast["anything"] is body["anything"]  # passed through as it is
            assert fast["cfg"] is not body["cfg"]  # a copy, as the model makes
    assert settled > 20
