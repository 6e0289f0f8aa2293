"""Owns document ids: the ``Id`` type, ``Id["table"]`` annotations, and id encode/decode.

An id is 32 lowercase base32hex characters (``0-9a-v``) encoding 20 bytes: the table number
(2 bytes), the creation time in milliseconds (6 bytes), 10 random bytes and a 2-byte checksum.
The table number is assigned per database and table space (the app's tables and each mounted
component instance number their tables apart), so the database can tell from an id which
table it belongs to and refuse it anywhere else. Ids sort as text in the order they were made
(to the millisecond).
"""

from __future__ import annotations

import os
import re
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Generic

from pydantic_core import core_schema
from typing_extensions import TypeVar

from core.errors import InvalidIdError

ID_LENGTH = 32
MAX_TABLE_NUMBER = 0xFFFF


TableT = TypeVar("TableT", default=Any)


class _IdBase(str):
    """What every id is at run time (see ``Id``)."""

    __slots__ = ()

    @property
    def table_number(self) -> int:
        """The table number encoded in this id."""
        return decode_table_number(self)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            _validate_any_id,
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )


if TYPE_CHECKING:

    class Id(_IdBase, Generic[TableT]):
        """A document id (for type checkers, generic in its table: ``Id[Literal["users"]]``)."""

else:

    class Id(_IdBase):
        """A document id: a ``str`` that knows which table it belongs to.

        ``Id["users"]`` is the annotation for a reference to a document of ``users`` (static
        type checkers spell it ``Id[Literal["users"]]``; both work at run time).
        """

        __slots__ = ()

        def __class_getitem__(cls, table: Any) -> Any:
            name = getattr(table, "__args__", (table,))[0]  # Id[Literal["users"]] works too
            return Annotated[Id, IdTable(str(name))]


IdResolver = Callable[[str, "str | None"], "Id"]
"""Given an id string and an expected table (or None), return the Id or raise InvalidIdError."""


class IdTable:
    """Annotation metadata: the id must belong to ``table`` (checked against the database)."""

    __slots__ = ("table",)

    def __init__(self, table: str):
        self.table = table

    def __repr__(self) -> str:
        return f"IdTable({self.table!r})"

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        table = self.table

        def validate(value: Any, info: core_schema.ValidationInfo) -> Id:
            return _validate_id(value, info, table)

        return core_schema.with_info_plain_validator_function(
            validate,
            serialization=core_schema.plain_serializer_function_ser_schema(str),
            metadata={"capsule_id_table": table},
        )


def _validate_any_id(value: Any, info: core_schema.ValidationInfo) -> Id:
    return _validate_id(value, info, None)


def _validate_id(value: Any, info: core_schema.ValidationInfo, table: str | None) -> Id:
    if not isinstance(value, str):
        raise ValueError(f"expected an id string, got {type(value).__name__}")
    ctx = info.context
    resolver = ctx.get("resolve_id") if isinstance(ctx, dict) else None
    try:
        if resolver is not None:
            return resolver(value, table)  # type: ignore[no-any-return]
        decode_table_number(value)
    except InvalidIdError as exc:
        raise ValueError(str(exc)) from None
    return value if type(value) is Id else Id(value)


def _checksum(raw: bytes) -> bytes:
    return (zlib.crc32(raw) & 0xFFFF).to_bytes(2, "big")


# Ids are RFC 4648 "base32hex" (lowercase, no padding: 20 bytes make exactly 32 characters):
# its alphabet is in ASCII order, so ids sort as text exactly as their bytes do, and ids made
# one after another sort one after another. The standard library's codec is pure Python and
# costs several microseconds per call, a visible share of an insert, so encoding goes through
# a table of every 10-bit pair and decoding is ``int(..., 32)`` behind a strict pattern.
_ALPHABET = "0123456789abcdefghijklmnopqrstuv"
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = tuple(range(150, -1, -10))
_ID = re.compile(r"[0-9a-v]{32}\Z")


def _encode(raw: bytes) -> str:
    n = int.from_bytes(raw, "big")
    pairs = _PAIRS
    return "".join([pairs[(n >> s) & 1023] for s in _SHIFTS])


def new_id(table_number: int) -> Id:
    """Make a fresh id for a table number: the table, the time in milliseconds, 80 random bits.

    The time comes first so that ids made close together share a prefix: new documents land
    next to each other in storage (appends, not page splits all over the table), which makes
    inserts about a third cheaper. The random part keeps ids unguessable and unique.
    """
    millis = time.time_ns() // 1_000_000
    raw = table_number.to_bytes(2, "big") + (millis & 0xFFFFFFFFFFFF).to_bytes(6, "big")
    raw += os.urandom(10)
    return Id(_encode(raw + _checksum(raw)))


def decode_table_number(value: str) -> int:
    """Return the table number of an id string, or raise ``InvalidIdError``."""
    if not isinstance(value, str) or _ID.match(value) is None:
        raise InvalidIdError(f"{_shown(value)} is not a document id.")
    raw = int(value, 32).to_bytes(20, "big")
    if _checksum(raw[:18]) != raw[18:]:
        raise InvalidIdError(f"{_shown(value)} is not a document id (bad checksum).")
    return int.from_bytes(raw[:2], "big")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."
