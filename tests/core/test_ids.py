from __future__ import annotations

import base64
import time
from typing import Any, Literal

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import ids as ids_module
from core.encoding import encode_value
from core.errors import InvalidIdError
from core.ids import (
    ID_LENGTH,
    TIME_CHARS,
    Id,
    IdTable,
    carries_time,
    decode_table_number,
    new_id,
    time_bits,
    time_prefix,
)


@given(st.integers(0, 0xFFFF), st.floats(allow_nan=False, allow_infinity=False))
def test_ids_carry_their_table_number_and_creation_time(number: int, created: float) -> None:
    doc_id = new_id(number, created)
    assert isinstance(doc_id, Id) and isinstance(doc_id, str)
    assert len(doc_id) == ID_LENGTH and doc_id == doc_id.lower()
    assert decode_table_number(doc_id) == number == doc_id.table_number
    assert carries_time(doc_id, time_bits(created)) == (time_bits(created) >= 1 << 63)
    assert doc_id[:TIME_CHARS] == time_prefix(number, time_bits(created))


def test_ids_are_rfc4648_base32hex_and_sort_by_creation_time() -> None:
    doc_id = new_id(7, 1_700_000_000.25)
    raw = base64.b32hexdecode(doc_id.upper())
    assert len(raw) == 20 and int.from_bytes(raw[:2], "big") == 7
    assert raw[2:10] == encode_value(1_700_000_000.25)[1:9]  # the index key's time bytes
    assert len({new_id(7, 1.0) for _ in range(100)}) == 100  # 64 random bits apart
    now = time.time()
    made = [new_id(7, now + i * 1e-6) for i in range(1000)]
    assert made == sorted(made) and made[-1] < new_id(8, 0.0)


@given(
    st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=1e12), st.integers(0, 3)),
        min_size=2,
        max_size=20,
    )
)
def test_id_order_is_creation_time_order(docs: list[tuple[float, int]]) -> None:
    made = [(new_id(table, created), table, created) for created, table in docs]
    by_id = sorted(made)
    assert by_id == sorted(made, key=lambda m: (m[1], encode_value(m[2]), m[0]))


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
    doc_id = new_id(3, 1.0)
    damaged = ("b" if doc_id[5] != "b" else "c").join([doc_id[:5], doc_id[6:]])
    with pytest.raises(InvalidIdError, match="checksum"):
        decode_table_number(damaged)
    with pytest.raises(InvalidIdError):
        decode_table_number(doc_id.upper())


def test_remembered_table_numbers_never_let_a_damaged_id_through() -> None:
    doc_id = new_id(9, 1.0)
    assert decode_table_number(doc_id) == decode_table_number(str(doc_id)) == 9
    damaged = doc_id[:-1] + ("a" if doc_id[-1] != "a" else "b")
    with pytest.raises(InvalidIdError, match="checksum"):
        decode_table_number(damaged)
    for n in range(ids_module._NUMBERS_MAX + 10):
        decode_table_number(new_id(1, float(n)))
    assert len(ids_module._NUMBERS) <= ids_module._NUMBERS_MAX
    assert decode_table_number(doc_id) == 9


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
    user, task = new_id(1, 1.0), new_id(2, 1.0)
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
    assert Owner.model_validate({"owner": new_id(9, 1.0)}).owner.table_number == 9
    with pytest.raises(pydantic.ValidationError, match="is not a document id"):
        Owner.model_validate({"owner": "nope"})
    with pytest.raises(pydantic.ValidationError, match="expected an id string"):
        Owner.model_validate({"owner": 3})


def test_ids_serialize_as_plain_strings() -> None:
    user = new_id(1, 1.0)
    dumped = Owner(owner=user).model_dump()
    assert dumped == {"owner": user} and type(dumped["owner"]) is str
    assert Owner(owner=user).model_dump_json() == f'{{"owner":"{user}"}}'


@given(st.binary(min_size=20, max_size=20))
def test_the_encoding_is_base32hex_bit_for_bit(raw: bytes) -> None:
    from core.ids import _encode

    assert _encode(raw) == base64.b32hexencode(raw).decode("ascii").lower()


def test_an_id_is_its_bytes_and_their_checksum(monkeypatch: pytest.MonkeyPatch) -> None:
    import zlib

    import core.ids

    monkeypatch.setattr(core.ids, "_random64", lambda: 0x0123456789ABCDEF)
    doc_id = new_id(0x0102, 1_700_000_000.5)
    head = (
        b"\x01\x02"
        + time_bits(1_700_000_000.5).to_bytes(8, "big")
        + bytes.fromhex("0123456789abcdef")
    )
    checksum = (zlib.crc32(head) & 0xFFFF).to_bytes(2, "big")
    assert doc_id == base64.b32hexencode(head + checksum).decode("ascii").lower()
