from __future__ import annotations

from typing import Any, Literal

import pydantic
import pytest

from core.errors import InvalidValueError, UserError
from core.ids import Id
from core.schema import IndexSpec, Schema, SearchIndexSpec, Table, VectorIndexSpec


class Task(pydantic.BaseModel):
    text: str
    done: bool = False
    tags: list[str] = []


class Early(pydantic.BaseModel):
    """Refers to a model defined after it (a forward reference)."""

    meta: Later | None = None


class Later(pydantic.BaseModel):
    kind: str


def test_declarations_record_each_kind_of_index() -> None:
    table = (
        Table(Task)
        .index("by_done", ["done"])
        .search_index("search_text", search_field="text", filter_fields=["done"])
        .vector_index("by_vec", vector_field="vec", dimensions=3, filter_fields=["done"])
    )
    assert table.indexes["by_done"] == IndexSpec(name="by_done", fields=("done",))
    assert isinstance(table.indexes["search_text"], SearchIndexSpec)
    assert isinstance(table.indexes["by_vec"], VectorIndexSpec)
    assert table.indexes["by_vec"].describe() == "vector:vec|3|done"
    assert table.indexes["search_text"].describe() == "search:text|done"
    assert table.indexes["by_done"].describe() == "btree:done"


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda t: t.index("by_id", ["a"]), "reserved"),
        (lambda t: t.index("by_creation_time", ["a"]), "reserved"),
        (lambda t: t.index("1bad", ["a"]), "not valid"),
        (lambda t: t.index("empty", []), "at least one field"),
        (lambda t: t.index("twice", ["a", "a"]), "twice"),
        (lambda t: t.index("sys", ["_id"]), "not a valid field path"),
        (lambda t: t.index("many", [f"f{i}" for i in range(16)]), "limit is 15"),
        (lambda t: t.index("a", ["x"]).index("a", ["y"]), "declared twice"),
        (lambda t: t.vector_index("v", vector_field="v", dimensions=1), "dimensions"),
        (
            lambda t: t.search_index(
                "s", search_field="s", filter_fields=[f"f{i}" for i in range(17)]
            ),
            "16 filter fields",
        ),
    ],
)
def test_bad_index_declarations_are_user_errors(declare: Any, message: str) -> None:
    with pytest.raises(UserError, match=message):
        declare(Table({"a": int}))


def test_at_most_32_indexes_per_table() -> None:
    table = Table({"a": int})
    for i in range(32):
        table.index(f"i{i}", ["a"])
    with pytest.raises(UserError, match="at most 32"):
        table.index("one_more", ["a"])


def test_validation_is_strict_and_stores_defaults() -> None:
    table = Table(Task)
    assert table.validate("tasks", {"text": "a"}) == {"text": "a", "done": False, "tags": []}
    with pytest.raises(InvalidValueError) as info:
        table.validate("tasks", {"text": 5})
    assert info.value.field == "text" and info.value.table == "tasks"
    assert 'field "text"' in str(info.value)
    with pytest.raises(InvalidValueError, match='field "done"'):
        table.validate("tasks", {"text": "a", "done": "true"})  # no coercion
    with pytest.raises(InvalidValueError, match='field "extra"'):
        table.validate("tasks", {"text": "a", "extra": 1})
    with pytest.raises(InvalidValueError, match='field "tags.1"'):
        table.validate("tasks", {"text": "a", "tags": ["x", 2]})


def test_mapping_shapes_make_none_admitting_fields_optional() -> None:
    table = Table({"name": str, "note": str | None, "n": int})
    assert table.validate("t", {"name": "a", "n": 1}) == {"name": "a", "note": None, "n": 1}
    with pytest.raises(InvalidValueError, match='field "n"'):
        table.validate("t", {"name": "a"})
    with pytest.raises(InvalidValueError, match='field "n"'):
        table.validate("t", {"name": "a", "n": 1.0})


def test_schemaless_tables_accept_any_body() -> None:
    body = {"anything": [1, "x"]}
    assert Table().validate("t", body) is body
    assert Table().model("t") is None
    assert Table().fingerprint("t") == Table().fingerprint("other")


@pytest.mark.parametrize("shape", [{"_secret": int}, {"$x": int}, 42])
def test_bad_shapes_are_user_errors(shape: Any) -> None:
    with pytest.raises(UserError):
        Table(shape).model("t")


def test_unsupported_field_types_are_user_errors() -> None:
    class Opaque:
        pass

    with pytest.raises(UserError, match="unsupported field type"):
        Table({"x": Opaque}).model("t")


def test_fingerprint_changes_with_the_shape_including_nested_models() -> None:
    class Meta(pydantic.BaseModel):
        kind: str

    class Meta2(pydantic.BaseModel):
        kind: int

    class Doc(pydantic.BaseModel):
        meta: Meta

    class Doc2(pydantic.BaseModel):
        meta: Meta2

    Doc2.__name__ = Doc.__name__
    Meta2.__name__ = Meta.__name__
    assert Table(Doc).fingerprint("d") != Table(Doc2).fingerprint("d")
    assert Table({"a": int}).fingerprint("t") == Table({"a": int}).fingerprint("t")
    assert Table({"a": int}).fingerprint("t") != Table({"a": str}).fingerprint("t")
    assert Table({"a": int | None}).fingerprint("t") != Table({"a": int}).fingerprint("t")


def test_id_fields_validate_through_the_context() -> None:
    seen = []

    def resolve(value: str, table: str | None) -> Id:
        seen.append((value, table))
        return Id(value)

    table = Table({"owner": Id[Literal["users"]], "refs": list[Id[Literal["docs"]]]})
    from core.ids import new_id

    a, b = new_id(1, 1.0), new_id(2, 1.0)
    table.validate("t", {"owner": a, "refs": [b]}, {"resolve_id": resolve})
    assert seen == [(a, "users"), (b, "docs")]


def test_schema_checks_names_and_entries() -> None:
    schema = Schema(tasks=Table(Task))
    assert schema.strict and list(schema.tables) == ["tasks"]
    assert not Schema(strict=False).strict
    with pytest.raises(InvalidValueError):
        Schema(**{"bad-name": Table()})  # type: ignore[arg-type]
    with pytest.raises(UserError, match="must be a Table"):
        Schema(tasks={"text": str})  # type: ignore[arg-type]


def test_model_shapes_may_refer_to_models_defined_after_them() -> None:
    table = Table(Early)
    assert table.validate("t", {"meta": {"kind": "k"}}) == {"meta": {"kind": "k"}}
    with pytest.raises(InvalidValueError, match='field "meta.kind"'):
        table.validate("t", {"meta": {"kind": 1}})


def test_stored_index_definitions_read_back_to_their_declarations() -> None:
    from core.schema import index_spec_from_text

    table = (
        Table({"a": str, "b": int, "v": list[float]})
        .index("by_ab", ["a", "b"])
        .search_index("s", search_field="a", filter_fields=["b"])
        .search_index("bare", search_field="a")
        .vector_index("vec", vector_field="v", dimensions=3, filter_fields=["a", "b"])
    )
    for name, spec in table.indexes.items():
        assert index_spec_from_text(name, spec.describe()) == spec
    assert index_spec_from_text("by_creation_time", "btree:") is None
    for text in ["hash:a", "vector:v|x|", "search:a", "btree:a|b"]:
        with pytest.raises(UserError, match="cannot read"):
            index_spec_from_text("i", text)
