"""The query builder on every backend: index ranges, order, filters, and how results are read."""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import App, InvalidArgumentError, MutationCtx, QueryCtx, Schema, Table, UserError
from core.encoding import MISSING, compare_values
from core.storage.base import Storage
from core.testing import TestApp

app = App(
    Schema(
        docs=Table().index("by_a", ["a"]).index("by_a_b", ["a", "b"]).index("by_meta", ["m.k"]),
        people=Table({"name": str, "age": int, "city": str})
        .index("by_city_age", ["city", "age"])
        .index("by_name", ["name"]),
    )
)

A_VALUES: list[Any] = [
    MISSING,
    None,
    -1,
    0,
    0.5,
    1,
    2,
    "",
    "x",
    "y",
    False,
    True,
    b"z",
    [1],
    {"k": 1},
]


@app.mutation
def seed(ctx: MutationCtx, n: int) -> None:
    rng = random.Random(n)
    for i in range(n):
        doc: dict[str, Any] = {"b": rng.randrange(4), "i": i}
        a = rng.choice(A_VALUES)
        if a is not MISSING:
            doc["a"] = a
        if i % 3 == 0:
            doc["m"] = {"k": rng.randrange(3)}
        ctx.db.insert("docs", doc)


@app.mutation
def add_person(ctx: MutationCtx, name: str, age: int, city: str) -> str:
    return ctx.db.insert("people", {"name": name, "age": age, "city": city})


@app.query
def by_city(ctx: QueryCtx, city: str, min_age: int = 0) -> list[str]:
    return [
        d["name"]
        for d in ctx.db.query("people")
        .with_index("by_city_age", lambda q: q.eq("city", city).gte("age", min_age))
        .order("desc")
        .take(10)
    ]


@pytest.fixture
def t(storage: Storage) -> Iterator[TestApp]:
    with TestApp(app, storage=storage) as harness:
        yield harness


@pytest.fixture
def people(t: TestApp) -> TestApp:
    for name, age, city in [
        ("ann", 31, "paris"),
        ("bob", 25, "paris"),
        ("cid", 40, "rome"),
        ("dee", 25, "paris"),
        ("eve", 52, "oslo"),
    ]:
        t.mutation(add_person, {"name": name, "age": age, "city": city})
    return t


def names(t: TestApp, build: Any) -> list[str]:
    return [d["name"] for d in t.run(lambda ctx: build(ctx.db.query("people")).collect())]


def test_equality_prefix_then_one_range(people: TestApp) -> None:
    assert people.query(by_city, {"city": "paris"}) == ["ann", "dee", "bob"]
    assert people.query(by_city, {"city": "paris", "min_age": 30}) == ["ann"]
    assert people.query(by_city, {"city": "lima"}) == []
    assert names(
        people, lambda q: q.with_index("by_city_age", lambda r: r.eq("city", "paris").eq("age", 25))
    ) == ["bob", "dee"]  # ties on the fields keep creation order
    assert names(
        people,
        lambda q: q.with_index("by_city_age", lambda r: r.gt("city", "oslo").lt("city", "rome")),
    ) == ["bob", "dee", "ann"]
    assert names(
        people,
        lambda q: q.with_index("by_city_age", lambda r: r.gte("city", "oslo").lte("city", "paris")),
    ) == ["eve", "bob", "dee", "ann"]


def test_default_order_is_creation_time_and_desc_reverses_it(people: TestApp) -> None:
    assert names(people, lambda q: q) == ["ann", "bob", "cid", "dee", "eve"]
    assert names(people, lambda q: q.order("desc")) == ["eve", "dee", "cid", "bob", "ann"]
    assert names(people, lambda q: q.with_index("by_name").order("desc")) == [
        "eve",
        "dee",
        "cid",
        "bob",
        "ann",
    ]


def test_filters_apply_after_the_scan(people: TestApp) -> None:
    assert names(people, lambda q: q.filter(lambda d: d["age"] < 30)) == ["bob", "dee"]
    assert names(
        people, lambda q: q.filter(lambda d: d["age"] < 50).filter(lambda d: d["city"] != "rome")
    ) == ["ann", "bob", "dee"]
    first = people.run(lambda ctx: ctx.db.query("people").filter(lambda d: d["age"] > 35).first())
    assert first["name"] == "cid"


def test_take_first_unique_and_iteration(people: TestApp) -> None:
    def body(ctx: MutationCtx) -> dict[str, Any]:
        q = ctx.db.query("people").with_index("by_name")
        return {
            "take2": [d["name"] for d in q.take(2)],
            "take0": q.take(0),
            "first": q.first()["name"],
            "none": ctx.db.query("people")
            .with_index("by_name", lambda r: r.eq("name", "zed"))
            .first(),
            "unique": ctx.db.query("people")
            .with_index("by_name", lambda r: r.eq("name", "cid"))
            .unique()["name"],
            "unique_none": ctx.db.query("people")
            .with_index("by_name", lambda r: r.eq("name", "zed"))
            .unique(),
            "iterated": [d["name"] for d in ctx.db.query("people")],
        }

    got = people.run(body)
    assert got == {
        "take2": ["ann", "bob"],
        "take0": [],
        "first": "ann",
        "none": None,
        "unique": "cid",
        "unique_none": None,
        "iterated": ["ann", "bob", "cid", "dee", "eve"],
    }


def test_unique_refuses_more_than_one(people: TestApp) -> None:
    with pytest.raises(UserError, match="more than one") as info:
        people.run(
            lambda ctx: (
                ctx.db.query("people")
                .with_index("by_city_age", lambda r: r.eq("city", "paris"))
                .unique()
            )
        )
    assert '"people"' in str(info.value)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda q: q.with_index("nope"), 'no index "nope"'),
        (lambda q: q.with_index("by_city_age", lambda r: r.eq("age", 3)), "next field"),
        (lambda q: q.with_index("by_city_age", lambda r: r.gt("city", "a").eq("age", 3)), "range"),
        (lambda q: q.with_index("by_city_age", lambda r: r.gt("city", "a").gt("city", "b")), "two"),
        (lambda q: q.with_index("by_name", lambda r: r.eq("name", "a").eq("x", 1)), "next field"),
        (lambda q: q.with_index("by_name", lambda r: None), "must return"),
        (lambda q: q.order("up"), "order"),
        (lambda q: q.filter(3), "callable"),
        (lambda q: q.take(-1), "non-negative"),
        (lambda q: q.paginate(None, 0), "positive"),
        (lambda q: q.paginate(3, 1), "cursor"),
        (lambda q: q.paginate("***", 1), "not a cursor"),
    ],
)
def test_misuse_is_refused_with_a_clear_error(t: TestApp, build: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        t.run(lambda ctx: build(ctx.db.query("people")) and None)


def test_an_empty_range_reads_nothing(people: TestApp) -> None:
    assert (
        names(
            people, lambda q: q.with_index("by_name", lambda r: r.gt("name", "z").lt("name", "a"))
        )
        == []
    )
    assert (
        names(
            people, lambda q: q.with_index("by_name", lambda r: r.gte("name", "b").lt("name", "b"))
        )
        == []
    )


def test_dotted_index_fields_and_missing_fields(t: TestApp) -> None:
    t.mutation(seed, {"n": 30})

    def body(ctx: MutationCtx) -> dict[str, Any]:
        with_meta = ctx.db.query("docs").with_index("by_meta", lambda r: r.gte("m.k", 0)).collect()
        missing = ctx.db.query("docs").with_index("by_meta", lambda r: r.lt("m.k", None)).collect()
        return {"with": [d["m"]["k"] for d in with_meta], "missing": len(missing)}

    got = t.run(body)
    assert got["with"] == sorted(got["with"]) and len(got["with"]) == 10
    assert got["missing"] == 20


# -- against a model -------------------------------------------------------------------------


def key_of(doc: dict[str, Any], fields: list[str]) -> list[Any]:
    return [doc.get(f, MISSING) for f in fields] + [doc["_creation_time"], doc["_id"]]


def cmp_keys(x: list[Any], y: list[Any]) -> int:
    for a, b in zip(x, y, strict=True):
        c = compare_values(a, b)
        if c:
            return c
    return 0


ranged = st.sampled_from(A_VALUES[1:])


@st.composite
def queries(draw: Any) -> dict[str, Any]:
    index = draw(st.sampled_from(["by_a", "by_a_b"]))
    eq_a = draw(st.none() | ranged) if index == "by_a_b" else None
    field = "b" if eq_a is not None else "a"
    values = st.integers(-1, 4) if field == "b" else ranged
    return {
        "index": index,
        "eq_a": eq_a,
        "field": field,
        "lower": draw(st.none() | st.tuples(st.sampled_from(["gt", "gte"]), values)),
        "upper": draw(st.none() | st.tuples(st.sampled_from(["lt", "lte"]), values)),
        "order": draw(st.sampled_from(["asc", "desc"])),
        "take": draw(st.none() | st.integers(1, 8)),
    }


def matches(doc: dict[str, Any], q: dict[str, Any]) -> bool:
    if q["eq_a"] is not None and compare_values(doc.get("a", MISSING), q["eq_a"]) != 0:
        return False
    value = doc.get(q["field"], MISSING)
    ops = {"gt": 1, "gte": 0, "lt": -1, "lte": 0}
    if q["lower"] is not None:
        c = compare_values(value, q["lower"][1])
        if c < ops[q["lower"][0]] or (q["lower"][0] == "gt" and c == 0):
            return False
    if q["upper"] is not None:
        c = compare_values(value, q["upper"][1])
        if c > ops[q["upper"][0]] or (q["upper"][0] == "lt" and c == 0):
            return False
    return True


@pytest.fixture
def seeded(t: TestApp) -> tuple[TestApp, list[dict[str, Any]]]:
    t.mutation(seed, {"n": 80})
    return t, t.run(lambda ctx: ctx.db.query("docs").collect())


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(q=queries())
def test_index_ranges_match_a_model(
    seeded: tuple[TestApp, list[dict[str, Any]]], q: dict[str, Any]
) -> None:
    t, docs = seeded
    fields = ["a"] if q["index"] == "by_a" else ["a", "b"]

    def build(r: Any) -> Any:
        if q["eq_a"] is not None:
            r = r.eq("a", q["eq_a"])
        if q["lower"] is not None:
            r = getattr(r, q["lower"][0])(q["field"], q["lower"][1])
        if q["upper"] is not None:
            r = getattr(r, q["upper"][0])(q["field"], q["upper"][1])
        return r

    def run(ctx: QueryCtx) -> list[int]:
        query = ctx.db.query("docs").with_index(q["index"], build).order(q["order"])
        found = query.collect() if q["take"] is None else query.take(q["take"])
        return [d["i"] for d in found]

    expected = sorted(
        (d for d in docs if matches(d, q)),
        key=functools.cmp_to_key(lambda x, y: cmp_keys(key_of(x, fields), key_of(y, fields))),  # type: ignore[arg-type]
        reverse=q["order"] == "desc",
    )
    if q["take"] is not None:
        expected = expected[: q["take"]]
    assert t.run(run) == [d["i"] for d in expected]
