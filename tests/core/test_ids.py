from __future__ import annotations

import base64
import time
from typing import Any, Literal

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import InvalidIdError
from core.ids import ID_LENGTH, Id, IdTable, decode_table_number, new_id


@given(st.integers(0, 0xFFFF))
def test_ids_carry_their_table_number(number: int) -> None:
    doc_id = new_id(number)
    assert isinstance(doc_id, Id) and isinstance(doc_id, str)
    assert len(doc_id) == ID_LENGTH and doc_id == doc_id.lower()
    assert decode_table_number(doc_id) == number == doc_id.table_number


def test_ids_are_rfc4648_base32hex_and_sort_by_creation() -> None:
    doc_id = new_id(7)
    raw = base64.b32hexdecode(doc_id.upper())
    assert len(raw) == 20 and int.from_bytes(raw[:2], "big") == 7
    assert len({new_id(7) for _ in range(100)}) == 100
    before = new_id(7)
    later = new_id(7)
    while millis(later) == millis(before):  # the id's clock moves in milliseconds
        later = new_id(7)
    assert before < later < new_id(8)
    assert abs(millis(later) - time.time() * 1000) < 60_000


def millis(doc_id: str) -> int:
    return int.from_bytes(base64.b32hexdecode(doc_id.upper())[2:8], "big")


@pytest.mark.parametrize(
    "bad",
    ["", "x" * 31, "x" * 33, "w" * 32, "A" * 32, "é" * 32, "_" * 32, " " * 32, "+" + "a" * 31, 42],
)
def test_non_ids_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidIdError, match="is not a document id"):
        decode_table_number(bad)


def test_a_damaged_id_fails_its_checksum() -> None:
    with pytest.raises(InvalidIdError, match="checksum"):
        decode_table_number("1" * 32)
    doc_id = new_id(3)
    damaged = ("b" if doc_id[5] != "b" else "c").join([doc_id[:5], doc_id[6:]])
    with pytest.raises(InvalidIdError, match="checksum"):
        decode_table_number(damaged)
    with pytest.raises(InvalidIdError):
        decode_table_number(doc_id.upper())


def test_id_annotation_accepts_a_literal_too() -> None:
    for annotation in (Id["users"], Id[Literal["users"]]):
        assert IdTable("users").table in repr(annotation)


class Owner(pydantic.BaseModel):
    owner: Id[Literal["users"]]


class Nested(pydantic.BaseModel):
    owners: list[Owner]
    by_name: dict[str, Id[Literal["users"]]]


def resolver(tables: dict[str, str]) -> Any:
    """A resolve_id that knows which table each id belongs to."""

    def resolve(value: str, table: str | None) -> Id:
        decode_table_number(value)
        if table is not None and tables.get(value) != table:
            raise InvalidIdError(f'"{value}" is not an id of table "{table}".')
        return Id(value)

    return resolve


def test_id_fields_check_the_table_through_the_context_even_when_nested() -> None:
    user, task = new_id(1), new_id(2)
    ctx = {"resolve_id": resolver({user: "users", task: "tasks"})}
    ok = Nested.model_validate(
        {"owners": [{"owner": user}], "by_name": {"a": user}}, context=ctx, strict=True
    )
    assert isinstance(ok.owners[0].owner, Id)
    with pytest.raises(pydantic.ValidationError, match='not an id of table "users"') as info:
        Nested.model_validate({"owners": [{"owner": task}], "by_name": {}}, context=ctx)
    assert info.value.errors()[0]["loc"] == ("owners", 0, "owner")
    with pytest.raises(pydantic.ValidationError, match='not an id of table "users"'):
        Nested.model_validate({"owners": [], "by_name": {"a": task}}, context=ctx)


def test_id_fields_without_a_context_check_the_format_only() -> None:
    assert Owner.model_validate({"owner": new_id(9)}).owner.table_number == 9
    with pytest.raises(pydantic.ValidationError, match="is not a document id"):
        Owner.model_validate({"owner": "nope"})
    with pytest.raises(pydantic.ValidationError, match="expected an id string"):
        Owner.model_validate({"owner": 3})


def test_ids_serialize_as_plain_strings() -> None:
    user = new_id(1)
    dumped = Owner(owner=user).model_dump()
    assert dumped == {"owner": user} and type(dumped["owner"]) is str
    assert Owner(owner=user).model_dump_json() == f'{{"owner":"{user}"}}'
