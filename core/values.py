"""Owns the JSON-like value model: what may be stored, every size limit, and the JSON wire format.

Values are ``None``, ``bool``, ``int`` (64-bit), ``float``, ``str``, ``bytes``, ``list`` and
``dict`` with ``str`` keys. Anything else is refused where it enters, with an error that names
the offending path and the limit.
"""

from __future__ import annotations

import base64
import math
import re
from typing import Any

from core.errors import InvalidValueError, LimitExceededError

Value = Any
"""A JSON-like value (see the module docstring). ``Any`` lives here and nowhere else."""

MAX_DOCUMENT_BYTES = 1 << 20
MAX_DEPTH = 16
MAX_FIELDS = 1024
MAX_ARRAY_ELEMENTS = 8192
MAX_FIELD_NAME_LENGTH = 1024
MAX_TABLE_NAME_LENGTH = 64
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
SYSTEM_FIELDS = ("_id", "_creation_time")

_TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")


def check_table_name(name: str, *, system: bool = False) -> str:
    """Return ``name`` if it is a valid table name, else raise ``InvalidValueError``."""
    body = name[1:] if system and name.startswith("_") else name
    if not isinstance(name, str) or not _TABLE_NAME.match(body):
        raise InvalidValueError(
            f"Table name {name!r} is not valid: it must match [A-Za-z][A-Za-z0-9_]*."
        )
    if len(name) > MAX_TABLE_NAME_LENGTH:
        raise LimitExceededError(
            f'Table name "{name}" is {len(name)} characters; the limit is {MAX_TABLE_NAME_LENGTH}.',
            limit="table_name_length",
            maximum=MAX_TABLE_NAME_LENGTH,
            actual=len(name),
        )
    return name


def check_document(doc: Any, *, table: str) -> int:
    """Check a document body (without system fields) and return its size in bytes.

    Raises:
        InvalidValueError: a value of an unsupported type, or a bad field name.
        LimitExceededError: size, depth, field-count or array-length limits.
    """
    if not isinstance(doc, dict):
        raise InvalidValueError(
            f'A document for table "{table}" must be a dict, not {type(doc).__name__}.',
            table=table,
        )
    for key in doc:
        if isinstance(key, str) and key.startswith("_") and key not in SYSTEM_FIELDS:
            raise InvalidValueError(
                f'Field "{key}" in table "{table}" starts with "_"; top-level names starting '
                'with "_" are reserved for system fields.',
                table=table,
                field=key,
            )
    size = _check(doc, table, "", 1, True)
    if size > MAX_DOCUMENT_BYTES:
        raise LimitExceededError(
            f'Document in table "{table}" is {size:,} bytes; the limit is 1 MiB '
            f"({MAX_DOCUMENT_BYTES:,} bytes).",
            limit="document_size",
            maximum=MAX_DOCUMENT_BYTES,
            actual=size,
            table=table,
        )
    return size


def check_value(value: Any, *, what: str = "value", depth_limit: int = 64) -> int:
    """Check an argument or return value (not a stored document); return its size in bytes."""
    return _check(value, what, "", 1, False, depth_limit)


def _where(table: str, path: str) -> str:
    return f'"{path}" in {table}' if path else table


def _check(
    v: Any, table: str, path: str, depth: int, in_doc: bool, depth_limit: int = MAX_DEPTH
) -> int:
    """Walk a value; return its encoded size (the sum of its leaves plus small overheads)."""
    t = type(v)
    if v is None or t is bool:
        return 1
    if t is str or (t is not bool and isinstance(v, str)):
        return len(v.encode("utf-8", "surrogatepass")) + 2
    if t is int or (t is not bool and isinstance(v, int) and not isinstance(v, bool)):
        if not INT64_MIN <= v <= INT64_MAX:
            raise InvalidValueError(
                f"Integer {v} at {_where(table, path)} does not fit in 64 bits.",
                field=path or None,
            )
        return 9
    if t is float:
        return 9
    if t is bytes:
        return len(v) + 2
    if depth > depth_limit:
        raise LimitExceededError(
            f"Value at {_where(table, path)} is nested {depth} levels deep; "
            f"the limit is {depth_limit}.",
            limit="nesting_depth",
            maximum=depth_limit,
            actual=depth,
            field=path or None,
        )
    if t is list or t is tuple:
        if len(v) > MAX_ARRAY_ELEMENTS:
            raise LimitExceededError(
                f"Array at {_where(table, path)} has {len(v):,} elements; the limit is "
                f"{MAX_ARRAY_ELEMENTS:,}.",
                limit="array_elements",
                maximum=MAX_ARRAY_ELEMENTS,
                actual=len(v),
                field=path or None,
            )
        size = 2
        for i, item in enumerate(v):
            size += _check(item, table, f"{path}[{i}]", depth + 1, in_doc, depth_limit)
        return size
    if t is dict:
        if len(v) > MAX_FIELDS:
            raise LimitExceededError(
                f"Object at {_where(table, path)} has {len(v):,} fields; the limit is "
                f"{MAX_FIELDS:,}.",
                limit="fields",
                maximum=MAX_FIELDS,
                actual=len(v),
                field=path or None,
            )
        size = 2
        for key, item in v.items():
            if type(key) is not str and not isinstance(key, str):
                raise InvalidValueError(
                    f"Object at {_where(table, path)} has a key of type "
                    f"{type(key).__name__}; keys must be str.",
                    field=path or None,
                )
            sub = f"{path}.{key}" if path else key
            if key.startswith("$"):
                raise InvalidValueError(
                    f'Field name "{sub}" in {table} starts with "$", which is reserved for '
                    "the wire format.",
                    field=sub,
                )
            if len(key) > MAX_FIELD_NAME_LENGTH:
                raise LimitExceededError(
                    f'Field name "{key[:40]}..." in {table} is {len(key)} characters; the '
                    f"limit is {MAX_FIELD_NAME_LENGTH}.",
                    limit="field_name_length",
                    maximum=MAX_FIELD_NAME_LENGTH,
                    actual=len(key),
                    field=sub,
                )
            size += len(key) + 1 + _check(item, table, sub, depth + 1, in_doc, depth_limit)
        return size
    raise InvalidValueError(
        f"Value at {_where(table, path)} has type {type(v).__name__}, which cannot be stored; "
        "use None, bool, int, float, str, bytes, list or dict.",
        field=path or None,
    )


# --- JSON wire format -------------------------------------------------------------------------

_SAFE_INT = 1 << 53


def to_json(v: Any) -> Any:
    """Convert a value to its JSON wire form (``$bytes``, ``$integer``, ``$float``)."""
    t = type(v)
    if v is None or t is bool or t is str:
        return v
    if isinstance(v, str):
        return str(v)
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v if -_SAFE_INT <= v <= _SAFE_INT else {"$integer": str(v)}
    if t is float:
        if math.isnan(v):
            return {"$float": "NaN"}
        if math.isinf(v):
            return {"$float": "Infinity" if v > 0 else "-Infinity"}
        return v
    if t is bytes:
        return {"$bytes": base64.b64encode(v).decode("ascii")}
    if t is list or t is tuple:
        return [to_json(x) for x in v]
    if t is dict:
        return {k: to_json(x) for k, x in v.items()}
    raise InvalidValueError(f"Value of type {type(v).__name__} has no JSON wire form.")


_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def from_json(v: Any) -> Any:
    """Convert a JSON wire value back to a value; refuse malformed ``$`` objects."""
    if isinstance(v, list):
        return [from_json(x) for x in v]
    if isinstance(v, dict):
        if len(v) == 1:
            ((key, inner),) = v.items()
            if key.startswith("$"):
                return _from_tagged(key, inner)
        return {k: from_json(x) for k, x in v.items()}
    return v


def _from_tagged(key: str, inner: Any) -> Any:
    try:
        if key == "$bytes" and isinstance(inner, str):
            return base64.b64decode(inner, validate=True)
        if key == "$integer" and isinstance(inner, str):
            n = int(inner)
            if INT64_MIN <= n <= INT64_MAX:
                return n
        if key == "$float" and inner in _FLOATS:
            return _FLOATS[inner]
    except ValueError:
        pass
    raise InvalidValueError(f"Malformed wire value {{{key!r}: {inner!r}}}.", field=key)


class _Unset:
    """The type of ``UNSET``."""

    __slots__ = ()
    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __reduce__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
"""In ``db.patch(id, {"field": UNSET})``: remove the field (``None`` stores null)."""
