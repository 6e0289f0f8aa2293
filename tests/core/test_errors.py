from __future__ import annotations

import inspect
import pickle

import pytest

import core.errors as errors_module
from core.errors import (
    AppError,
    CapsuleError,
    ConflictError,
    FunctionNotFoundError,
    InvalidArgumentError,
    LimitExceededError,
    SchemaMismatchError,
)

ERRORS = [
    obj
    for _, obj in inspect.getmembers(errors_module, inspect.isclass)
    if issubclass(obj, CapsuleError)
]


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_every_error_has_a_code_a_status_and_a_raised_docstring(
    cls: type[CapsuleError],
) -> None:
    assert cls.__name__.endswith("Error")
    assert isinstance(cls.code, str) and cls.code
    assert 400 <= cls.http_status <= 599
    assert (cls.__doc__ or "").startswith(("Raised when", "Raised by"))


def test_codes_are_unique() -> None:
    codes = [cls.code for cls in ERRORS]
    assert len(codes) == len(set(codes))


def test_errors_keep_their_facts() -> None:
    conflict = ConflictError(["b", "a", "a"], detail="the lock was busy")
    assert conflict.tables == ["a", "b"]
    assert '"a", "b"' in str(conflict) and "the lock was busy" in str(conflict)
    assert "(unknown)" in str(ConflictError([]))
    mismatch = SchemaMismatchError(table="t", document_id="d1", field="n", detail="bad")
    assert (mismatch.table, mismatch.document_id, mismatch.field) == ("t", "d1", "n")
    limit = LimitExceededError("too big", limit="document_size", maximum=10, actual=11, table="t")
    assert (limit.limit, limit.maximum, limit.actual, limit.table) == ("document_size", 10, 11, "t")
    missing = FunctionNotFoundError("a:b", detail="it is internal")
    assert missing.path == "a:b" and str(missing).endswith("; it is internal")
    bad = InvalidArgumentError("no", function="f", argument="x")
    assert (bad.function, bad.argument) == ("f", "x")


def test_app_errors_carry_their_data_and_survive_pickling() -> None:
    err = AppError({"code": "x", "n": [1, 2]})
    assert err.data == {"code": "x", "n": [1, 2]} and err.http_status == 422
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is AppError and back.data == err.data and str(back) == str(err)
    assert str(AppError("d", message="custom")) == "custom"
