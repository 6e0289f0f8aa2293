from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.encoding import (
    MISSING,
    compare_values,
    decode_key,
    dump_document,
    encode_key,
    encode_value,
    load_document,
    prefix_end,
)
from core.errors import InvalidValueError
from core.values import INT64_MAX, INT64_MIN

numbers = (
    st.integers(INT64_MIN, INT64_MAX)
    | st.floats(allow_nan=True)
    | st.sampled_from(
        [0, -0.0, 0.0, 2**53, 2**53 + 1, 2**63 - 1, -(2**63), 5e-324, math.inf, -math.inf]
    )
)
scalars = st.none() | st.booleans() | numbers | st.text() | st.binary() | st.just(MISSING)
values = st.recursive(
    scalars.filter(lambda v: v is not MISSING),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)
keyable = values | st.just(MISSING)


def sign(n: int) -> int:
    return (n > 0) - (n < 0)


@given(keyable, keyable)
def test_key_order_equals_value_order(a: Any, b: Any) -> None:
    ea, eb = encode_value(a), encode_value(b)
    assert sign((ea > eb) - (ea < eb)) == compare_values(a, b)


@given(st.lists(keyable, max_size=3), st.lists(keyable, max_size=3))
def test_tuple_keys_order_element_by_element(a: list[Any], b: list[Any]) -> None:
    expected = 0
    for x, y in zip(a, b, strict=False):
        expected = compare_values(x, y)
        if expected:
            break
    else:
        expected = sign(len(a) - len(b))
    ka, kb = encode_key(a), encode_key(b)
    assert sign((ka > kb) - (ka < kb)) == expected


@given(st.lists(keyable, min_size=1, max_size=4))
def test_a_tuple_prefix_is_a_byte_prefix_and_prefix_end_bounds_it(parts: list[Any]) -> None:
    full = encode_key(parts)
    for n in range(len(parts) + 1):
        prefix = encode_key(parts[:n])
        assert full.startswith(prefix)
        end = prefix_end(prefix)
        if end is not None:
            assert prefix <= full < end


def test_prefix_end_edge_cases() -> None:
    assert prefix_end(b"") is None
    assert prefix_end(b"\xff\xff") is None
    assert prefix_end(b"a\xff") == b"b"


@given(st.lists(values, max_size=4))
def test_keys_decode_back(parts: list[Any]) -> None:
    decoded = decode_key(encode_key(parts))
    # Numbers decode by value (3 and 3.0 share a key, as they compare equal), so compare there.
    assert [compare_values(x, y) for x, y in zip(decoded, parts, strict=True)] == [0] * len(parts)


def test_missing_sorts_below_none_and_the_documented_type_order() -> None:
    ordered = [
        MISSING,
        None,
        -math.inf,
        -1,
        0,
        0.5,
        1,
        math.inf,
        math.nan,
        False,
        True,
        "",
        "a",
        b"",
        b"\x00",
        [],
        [1],
        {},
        {"a": 1},
    ]
    keys = [encode_value(v) for v in ordered]
    assert keys == sorted(keys)
    for a, b in zip(ordered, ordered[1:], strict=False):
        assert compare_values(a, b) == -1, (a, b)


def test_ints_and_floats_compare_numerically() -> None:
    assert encode_value(2) == encode_value(2.0)
    assert encode_value(-0.0) == encode_value(0.0)
    assert encode_value(2**53) < encode_value(2**53 + 1)
    assert encode_value(float(2**53)) < encode_value(2**53 + 1)
    assert encode_value(2**63 - 1) > encode_value(2**63 - 2)


def test_small_ints_from_the_table_encode_as_every_other_int() -> None:
    from core.encoding import _number

    for n in range(-300, 1300):
        assert encode_value(n) == _number(n) == encode_value(float(n))
    assert encode_value(-129) < encode_value(-128) < encode_value(1023) < encode_value(1023.5)
    assert encode_value(True) != encode_value(1)  # bools keep their own type tag


def test_strings_with_nul_bytes_keep_their_order() -> None:
    assert encode_value("a") < encode_value("a\x00") < encode_value("a\x00b") < encode_value("ab")
    assert decode_key(encode_value("a\x00b")) == ("a\x00b",)


def test_unencodable_values_are_refused() -> None:
    with pytest.raises(InvalidValueError):
        encode_value({1, 2})


def test_corrupt_keys_are_reported() -> None:
    with pytest.raises(ValueError, match="Corrupt key"):
        decode_key(b"\x99")


@given(st.dictionaries(st.text(), values, max_size=5))
def test_documents_round_trip_through_the_storage_form(doc: dict[str, Any]) -> None:
    back = load_document(dump_document(doc))
    assert encode_value(back) == encode_value(doc)
    assert [type(v) for v in back.values()] == [type(v) for v in doc.values()]


@given(
    st.one_of(st.floats(), st.integers(-(2**63), 2**63 - 1)),
    st.one_of(st.text(), st.sampled_from(["0" * 32, "a\x00b"])),
)
def test_the_key_suffix_is_the_two_encodings(created: Any, doc_id: str) -> None:
    from core.encoding import encode_suffix

    assert encode_suffix(created, doc_id) == encode_value(created) + encode_value(doc_id)
