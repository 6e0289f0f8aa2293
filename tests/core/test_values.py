from __future__ import annotations

import math
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import InvalidValueError, LimitExceededError
from core.values import (
    INT64_MAX,
    INT64_MIN,
    MAX_ARRAY_ELEMENTS,
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    MAX_FIELDS,
    UNSET,
    check_document,
    check_table_name,
    check_value,
    from_json,
    to_json,
)

# A strategy for every storable value; reused by the round-trip tests of other modules through
# core.testing would be nicer, but tests cannot import each other, so it is repeated there.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(INT64_MIN, INT64_MAX)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.binary()
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text().filter(lambda k: not k.startswith("$")), inner, max_size=4)
    ),
    max_leaves=20,
)


def nested(depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    cur = doc
    for _ in range(depth - 1):
        cur["x"] = {}
        cur = cur["x"]
    return doc


def test_every_value_type_is_accepted() -> None:
    doc = {
        "none": None,
        "bool": True,
        "int": INT64_MAX,
        "neg": INT64_MIN,
        "float": 1.5,
        "nan": math.nan,
        "str": "héllo",
        "bytes": b"\x00\xff",
        "list": [1, "a", [None]],
        "dict": {"nested": {"ok": 1}},
    }
    assert check_document(doc, table="t") > 0


@pytest.mark.parametrize(
    "bad",
    [{1, 2}, 1 + 2j, object(), bytearray(b"x"), INT64_MAX + 1, INT64_MIN - 1, "\ud800"],
    ids=["set", "complex", "object", "bytearray", "int-over", "int-under", "lone-surrogate"],
)
def test_unstorable_values_are_refused_naming_the_field(bad: Any) -> None:
    with pytest.raises(InvalidValueError) as info:
        check_document({"ok": 1, "meta": {"bad": bad}}, table="tasks")
    assert info.value.field == "meta.bad"
    assert '"meta.bad"' in str(info.value) and "tasks" in str(info.value)


def test_a_document_must_be_a_dict() -> None:
    with pytest.raises(InvalidValueError, match="must be a dict"):
        check_document([1, 2], table="t")


def test_document_size_limit_names_the_limit_and_the_table() -> None:
    check_document({"blob": b"x" * (MAX_DOCUMENT_BYTES - 100)}, table="files")
    with pytest.raises(LimitExceededError) as info:
        check_document({"blob": b"x" * MAX_DOCUMENT_BYTES}, table="files")
    err = info.value
    assert err.limit == "document_size" and err.maximum == MAX_DOCUMENT_BYTES
    assert err.table == "files"
    assert "1 MiB" in str(err) and '"files"' in str(err)


def test_nesting_depth_limit() -> None:
    check_document(nested(MAX_DEPTH), table="t")
    with pytest.raises(LimitExceededError) as info:
        check_document(nested(MAX_DEPTH + 1), table="t")
    assert info.value.limit == "nesting_depth" and "16" in str(info.value)
    with pytest.raises(LimitExceededError, match="nested"):
        check_document({"a": [[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}, table="t")


def test_field_count_limit() -> None:
    check_document({f"f{i}": i for i in range(MAX_FIELDS)}, table="t")
    with pytest.raises(LimitExceededError) as info:
        check_document({"inner": {f"f{i}": i for i in range(MAX_FIELDS + 1)}}, table="t")
    assert info.value.limit == "fields" and "1,024" in str(info.value)
    assert info.value.field == "inner"


def test_array_element_limit() -> None:
    check_document({"xs": [0] * MAX_ARRAY_ELEMENTS}, table="t")
    with pytest.raises(LimitExceededError) as info:
        check_document({"xs": [0] * (MAX_ARRAY_ELEMENTS + 1)}, table="t")
    assert info.value.limit == "array_elements" and "8,192" in str(info.value)


@pytest.mark.parametrize("doc", [{"$x": 1}, {"a": {"$ref": 1}}, {"a": [{"$b": 2}]}])
def test_dollar_field_names_are_refused_everywhere(doc: dict[str, Any]) -> None:
    with pytest.raises(InvalidValueError, match=r'starts with "\$"'):
        check_document(doc, table="t")


def test_underscore_names_are_refused_only_at_the_top_level() -> None:
    with pytest.raises(InvalidValueError, match="reserved for system fields") as info:
        check_document({"_secret": 1}, table="t")
    assert info.value.field == "_secret"
    check_document({"_id": "x", "_creation_time": 1.0, "meta": {"_private": 1}}, table="t")


def test_field_name_length_limit() -> None:
    with pytest.raises(LimitExceededError) as info:
        check_document({"a" * 1025: 1}, table="t")
    assert info.value.limit == "field_name_length"


def test_non_str_keys_are_refused() -> None:
    with pytest.raises(InvalidValueError, match="keys must be str"):
        check_document({"a": {1: "x"}}, table="t")
    with pytest.raises(InvalidValueError, match="keys must be str"):
        check_document({1: "x"}, table="t")


@pytest.mark.parametrize("name", ["tasks", "T", "a_1", "Task2"])
def test_valid_table_names(name: str) -> None:
    assert check_table_name(name) == name


@pytest.mark.parametrize("name", ["", "1tasks", "_tasks", "my-table", "a b", "tâche", "a.b"])
def test_invalid_table_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(InvalidValueError, match=r"\[A-Za-z\]\[A-Za-z0-9_\]\*"):
        check_table_name(name)


def test_table_name_length_limit_and_system_names() -> None:
    with pytest.raises(LimitExceededError) as info:
        check_table_name("t" * 65)
    assert info.value.limit == "table_name_length"
    assert check_table_name("_scheduled", system=True) == "_scheduled"
    with pytest.raises(InvalidValueError):
        check_table_name(3)  # type: ignore[arg-type]


def test_check_value_allows_deeper_nesting_than_documents() -> None:
    check_value(nested(40))
    with pytest.raises(LimitExceededError, match="the limit is 64"):
        check_value(nested(70), what="the return value")


def test_check_value_fast_paths_still_check() -> None:
    assert check_value(None) == 1 and check_value("abc") == 5
    with pytest.raises(InvalidValueError, match="unpaired surrogate"):
        check_value("\udc00")
    with pytest.raises(InvalidValueError, match="cannot be stored"):
        check_value(object(), what="the return value of f")


# -- JSON wire format ------------------------------------------------------------------------


def test_wire_format_tags() -> None:
    assert to_json(b"\x01") == {"$bytes": "AQ=="}
    assert to_json(2**60) == {"$integer": str(2**60)}
    assert to_json(2**53) == 2**53
    assert to_json(math.inf) == {"$float": "Infinity"}
    assert to_json(-math.inf) == {"$float": "-Infinity"}
    assert to_json(math.nan) == {"$float": "NaN"}
    assert to_json((1, 2)) == [1, 2]


@pytest.mark.parametrize(
    "bad",
    [{"$bytes": "!!"}, {"$integer": "1.5"}, {"$integer": str(2**64)}, {"$float": "inf"}, {"$x": 1}],
)
def test_malformed_wire_values_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidValueError, match="Malformed wire value"):
        from_json(bad)


def test_non_values_have_no_wire_form() -> None:
    with pytest.raises(InvalidValueError):
        to_json({1, 2})


def same(a: Any, b: Any) -> bool:
    """Equality that treats NaN as equal to NaN and tells ints from floats."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@given(values)
def test_wire_format_round_trips(value: Any) -> None:
    assert same(from_json(to_json(value)), value)


def test_unset_is_a_picklable_singleton() -> None:
    assert repr(UNSET) == "UNSET"
    assert type(UNSET)() is UNSET
    assert pickle.loads(pickle.dumps(UNSET)) is UNSET
