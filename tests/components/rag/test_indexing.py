"""The pure storage arithmetic: vector sizes, importance, filter fields, content hashes."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.rag import RAGConfigError, UnknownFilterError
from components.rag.indexing import (
    FILTER_FIELDS,
    TEXT_FILTER_FIELDS,
    check_filter_names,
    check_filter_values,
    check_filters,
    content_hash,
    dot,
    filter_fields,
    filter_terms,
    query_vector,
    stored_vector,
    text_filter_terms,
    vector_field,
    vector_size,
)
from core import InvalidArgumentError


def test_vector_sizes_leave_room_for_the_importance_slot() -> None:
    assert [vector_size(d) for d in (1, 128, 129, 384, 1536, 3072, 4095)] == [
        129,
        129,
        257,
        385,
        1537,
        3073,
        4096,
    ]
    assert vector_field(385) == "v385"
    for bad in (0, 4096, True, 2.0):
        with pytest.raises(RAGConfigError):
            vector_size(bad)  # type: ignore[arg-type]


@given(
    st.lists(st.floats(-10, 10), min_size=2, max_size=8).filter(
        lambda v: math.fsum(x * x for x in v) > 1e-6
    ),
    st.lists(st.floats(-10, 10), min_size=2, max_size=8).filter(
        lambda v: math.fsum(x * x for x in v) > 1e-6
    ),
    st.floats(0, 1),
)
def test_score_is_cosine_times_importance(
    a: list[float], b: list[float], importance: float
) -> None:
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    if math.fsum(x * x for x in a) < 1e-6 or math.fsum(x * x for x in b) < 1e-6:
        return
    size = vector_size(n)
    stored = stored_vector(a, importance, size)
    assert len(stored) == size and dot(stored, stored) == pytest.approx(1.0)
    cosine = dot(a, b) / math.sqrt(dot(a, a) * dot(b, b))
    assert dot(query_vector(b, size), stored) == pytest.approx(cosine * importance, abs=1e-9)


def test_importance_orders_identical_embeddings() -> None:
    e = [0.3, 0.4, 0.5]
    q = query_vector(e, 129)
    scores = [dot(q, stored_vector(e, i, 129)) for i in (0.8, 0.5, 0.2, 0.0)]
    assert scores == pytest.approx([0.8, 0.5, 0.2, 0.0])


def test_filter_fields_and_terms() -> None:
    names = ["category", "lang"]
    fields = filter_fields("ns", names, {"category": "hr"})
    assert fields == {"f1": ["ns", "hr"], "f2": ["ns", None], "f3": ["ns", "hr", None]}
    assert filter_terms("ns", names, []) == [("namespace_id", "ns")]
    assert filter_terms("ns", names, [{"lang": "en", "category": "hr"}, {"lang": "fr"}]) == [
        ("f3", ["ns", "hr", "en"]),
        ("f2", ["ns", "fr"]),
    ]
    assert text_filter_terms("ns", names, {"lang": "en", "category": "hr"}) == [
        ("f2", ["ns", "en"]),
        ("f1", ["ns", "hr"]),
    ]
    assert text_filter_terms("ns", names, None) == [("namespace_id", "ns")]
    assert len(FILTER_FIELDS) == 15 and TEXT_FILTER_FIELDS == ("f1", "f2", "f4", "f8")


def test_checks() -> None:
    assert check_filter_names(None) == []
    for bad in (["a", "a"], ["a", ""], ["a", "b", "c", "d", "e"]):
        with pytest.raises(RAGConfigError):
            check_filter_names(bad)
    assert check_filter_values(None, ["a"]) == {}
    with pytest.raises(UnknownFilterError, match='"b"'):
        check_filter_values({"b": 1}, ["a"])
    with pytest.raises(InvalidArgumentError):
        check_filter_values(["a"], ["a"])
    assert check_filters({"a": 1}, ["a"]) == [{"a": 1}]
    assert check_filters({}, ["a"]) == []
    assert check_filters([{"a": 1}, {"a": 2}], ["a"]) == [{"a": 1}, {"a": 2}]
    wrong: object
    for wrong in ("a", [{}], [1]):
        with pytest.raises(InvalidArgumentError):
            check_filters(wrong, ["a"])
    with pytest.raises(UnknownFilterError):
        check_filters([{"a": 1}, {"z": 2}], ["a"])


def test_content_hash_covers_chunks_title_importance_and_filters() -> None:
    base = content_hash(["a", "b"], title="t", importance=1.0, filter_values={"x": 1})
    assert base == content_hash(["a", "b"], title="t", importance=1.0, filter_values={"x": 1})
    for changed in (
        content_hash(["a", "c"], title="t", importance=1.0, filter_values={"x": 1}),
        content_hash(["ab"], title="t", importance=1.0, filter_values={"x": 1}),
        content_hash(["a", "b"], title=None, importance=1.0, filter_values={"x": 1}),
        content_hash(["a", "b"], title="t", importance=0.5, filter_values={"x": 1}),
        content_hash(["a", "b"], title="t", importance=1.0, filter_values={"x": 2}),
    ):
        assert changed != base
