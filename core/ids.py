"""Owns document ids: the ``Id`` type, ``Id["table"]`` annotations, and id encode/decode.

An id is 32 lowercase base32hex characters (``0-9a-v``) encoding 20 bytes: the table number
(2 bytes), the document's creation time (8 bytes), 8 random bytes and a 2-byte checksum.
The table number is assigned per database and table space (the app's tables and each mounted
component instance number their tables apart), so the database can tell from an id which
table it belongs to and refuse it anywhere else.

The creation time is the document's ``_creation_time`` itself, as the order-preserving bits
of the float that index keys use (``core.encoding``), so ids of one table sort exactly as
``(_creation_time, _id)`` does: the creation order. The database reads that order from the
documents table in id order and stores no creation-order index entry for such a document
(``carries_time``). Creation times are strictly increasing within a process, so its ids are
too; across processes ids interleave by creation time. Ids written before this layout carried
wall-clock milliseconds instead (their time bytes start below ``0x80``): they keep their
creation-order entries, as does any imported id that does not carry its creation time.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, Generic

from pydantic_core import core_schema
from typing_extensions import TypeVar

from core.errors import InvalidIdError

ID_LENGTH = 32
MAX_TABLE_NUMBER = 0xFFFF
TIME_CHARS = 16
"""The characters of an id that encode its table number and creation time (80 bits)."""


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
# costs several microseconds per call, a visible share of an insert, so encoding spreads the
# 5-bit groups into bytes with a few big-int masks and maps them with ``bytes.translate``
# (``time_prefix`` looks up 10-bit pairs), and decoding is ``int(..., 32)`` behind a strict
# pattern.
_ALPHABET = "0123456789abcdefghijklmnopqrstuv"
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_ID = re.compile(r"[0-9a-v]{32}\Z")


def _spread_steps() -> tuple[tuple[int, int, int], ...]:
    """Masks that move each 5-bit group of a 160-bit number into a byte of its own.

    Each step halves the groups of one width into groups at twice the spacing (80 bits at
    128, 40 at 64, 20 at 32, 10 at 16, 5 at 8): ``(n & low) | ((n & high) << shift)``.
    """
    steps = []
    width, lane = 80, 128
    while width > 5:
        half, spacing = width // 2, lane // 2
        low = high = 0
        for base in range(0, 256, lane):
            low |= ((1 << half) - 1) << base
            high |= ((1 << half) - 1) << (base + half)
        steps.append((low, high, spacing - half))
        width, lane = half, spacing
    return tuple(steps)


_SPREAD = _spread_steps()
_TO_ALPHABET = bytes(_ALPHABET.encode().ljust(256, b"?"))


def _encode_int(n: int) -> str:
    """The 32 characters of a 160-bit number: one table lookup per byte, in C."""
    n = (n & ((1 << 80) - 1)) | ((n >> 80) << 128)
    for low, high, shift in _SPREAD:
        n = (n & low) | ((n & high) << shift)
    return n.to_bytes(32, "big").translate(_TO_ALPHABET).decode("ascii")


def _encode(raw: bytes) -> str:
    return _encode_int(int.from_bytes(raw, "big"))


_pack_d = struct.Struct(">d").pack
_SIGN = 1 << 63
_MASK64 = (1 << 64) - 1
_TIME_SHIFTS = tuple(range(70, -1, -10))


def time_bits(seconds: float) -> int:
    """The 64 bits that order creation times: a float's bits, made to sort as unsigned ints.

    The same transform as ``core.encoding`` (index keys), so an id's time bytes equal the ones
    in its creation-order key. Positive times have the top bit set.
    """
    n = int.from_bytes(_pack_d(float(seconds) + 0.0), "big")
    return n ^ _MASK64 if n & _SIGN else n | _SIGN


def time_prefix(table_number: int, bits: int) -> str:
    """The first ``TIME_CHARS`` characters of every id of a table with these time bits."""
    n = (table_number << 64) | bits
    pairs = _PAIRS
    return "".join([pairs[(n >> s) & 1023] for s in _TIME_SHIFTS])


def new_id(table_number: int, creation_time: float) -> Id:
    """Make the id of a document created at ``creation_time``: the table, that time, 64 random bits.

    Ids of one table sort as their creation times do (ties broken by the random part), so the
    creation order is the id order, and new documents land next to each other in storage
    (appends, not page splits all over the table). The random part keeps ids unguessable.
    """
    n = (table_number << 128) | (time_bits(creation_time) << 64) | _random64()
    # The checksum covers the 18 bytes before it (the table number must fit its 2 bytes).
    n = (n << 16) | (zlib.crc32(n.to_bytes(18, "big")) & 0xFFFF)
    return Id(_encode_int(n))


_POOL_SIZE = 256
_pool: Iterator[int] = iter(())


def _random64() -> int:
    """64 random bits from the OS, drawn ``_POOL_SIZE`` at a time (one system call per pool).

    ``next`` on a list iterator is atomic under the GIL, so threads never share a draw; a
    forked child starts a pool of its own rather than repeat its parent's.
    """
    global _pool
    try:
        return next(_pool)
    except StopIteration:
        raw = os.urandom(8 * _POOL_SIZE)
        fresh = iter([int.from_bytes(raw[i : i + 8], "big") for i in range(0, len(raw), 8)])
        _pool = fresh
        return next(fresh)


def _forget_pool() -> None:
    global _pool
    _pool = iter(())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def carries_time(doc_id: str, bits: int) -> bool:
    """Whether an id carries the creation time with these time bits (it sorts by creation).

    Only positive creation times count (bits with the top bit set): ids of the previous layout
    (milliseconds, top bit clear) never do, and creation-order scans of the documents table
    start at the first positive time.
    """
    return bits & _SIGN != 0 and int(doc_id[:TIME_CHARS], 32) & _MASK64 == bits


_NUMBERS: dict[str, int] = {}
"""Table numbers of ids decoded lately: a patch resolves its id twice (the caller's table space,
then the table), and ids read back from storage come again. A number is a pure function of the
id's text, so sharing the memo between databases is safe; only valid ids enter it."""
_NUMBERS_MAX = 4096


def decode_table_number(value: str) -> int:
    """Return the table number of an id string, or raise ``InvalidIdError``."""
    if type(value) is str or type(value) is Id:
        number = _NUMBERS.get(value)
        if number is not None:
            return number
    if not isinstance(value, str) or _ID.match(value) is None:
        raise InvalidIdError(f"{_shown(value)} is not a document id.")
    raw = int(value, 32).to_bytes(20, "big")
    if _checksum(raw[:18]) != raw[18:]:
        raise InvalidIdError(f"{_shown(value)} is not a document id (bad checksum).")
    number = int.from_bytes(raw[:2], "big")
    if type(value) is str or type(value) is Id:
        if len(_NUMBERS) >= _NUMBERS_MAX:
            _NUMBERS.clear()  # bounded: ids seen once must not pile up
        _NUMBERS[value] = number
    return number


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."
