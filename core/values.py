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
    if not isinstance(name, str):
        raise InvalidValueError(f"A table name must be a str, not {type(name).__name__}.")
    body = name[1:] if system and name.startswith("_") else name
    if not _TABLE_NAME.match(body):
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


def check_document(doc: Any, *, table: str, names_checked: bool = False) -> int:
    """Check a document (with or without its system fields) and return its size in bytes.

    ``names_checked``: the caller already ran ``check_top_level_names`` on these fields.

    Raises:
        InvalidValueError: a value of an unsupported type, or a bad field name.
        LimitExceededError: size, depth, field-count or array-length limits.
    """
    if type(doc) is not dict:
        raise InvalidValueError(
            f'A document for table "{table}" must be a dict, not {type(doc).__name__}.',
            table=table,
        )
    if not names_checked:
        check_top_level_names(doc, table=table)
    size = _Walk(f'table "{table}"', MAX_DEPTH, table).check(doc, "", 1)
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


def check_top_level_names(doc: dict[str, Any], *, table: str) -> None:
    """Refuse top-level field names that start with ``_`` (system fields aside) or ``$``."""
    for key in doc:
        if type(key) is str and not key.startswith(("_", "$")):
            continue
        if not isinstance(key, str):
            raise InvalidValueError(
                f'A document for table "{table}" has a key of type {type(key).__name__}; '
                "keys must be str.",
                table=table,
            )
        if key.startswith("$"):
            raise InvalidValueError(
                f'Field name "{key}" in table "{table}" starts with "$", which is reserved for '
                "the wire format.",
                table=table,
                field=key,
            )
        if key not in SYSTEM_FIELDS:
            raise InvalidValueError(
                f'Field "{key}" in table "{table}" starts with "_"; top-level names starting '
                'with "_" are reserved for system fields.',
                table=table,
                field=key,
            )


def check_value(value: Any, *, what: str = "value", depth_limit: int = 64) -> int:
    """Check an argument or return value (not a stored document); return its size in bytes."""
    t = type(value)
    if value is None or t is bool:  # the common results of mutations need no walk
        return 1
    if isinstance(value, str) and value.isascii():
        return len(value) + 2
    return _Walk(what, depth_limit, None).check(value, "", 1)


def str_size(v: str) -> int | None:
    """The UTF-8 size of a string, or ``None`` if it holds an unpaired surrogate."""
    if v.isascii():
        return len(v)
    try:
        return len(v.encode("utf-8"))
    except UnicodeEncodeError:
        return None


class _Walk:
    """One check of a value: walks it once, returns its size and raises on the first problem.

    The size is the sum of the leaves' encoded sizes plus small overheads per container and
    field. Paths (``"a.b[3]"``) are built only for containers and errors, so checking the
    common flat document costs one loop over its fields.
    """

    __slots__ = ("where", "depth_limit", "table")

    def __init__(self, where: str, depth_limit: int, table: str | None):
        self.where = where
        self.depth_limit = depth_limit
        self.table = table

    def _at(self, path: str) -> str:
        return f'"{path}" in {self.where}' if path else self.where

    def invalid(self, message: str, path: str) -> InvalidValueError:
        return InvalidValueError(message, table=self.table, field=path or None)

    def limit(self, message: str, path: str, limit: str, maximum: int, actual: int) -> Exception:
        return LimitExceededError(
            message,
            limit=limit,
            maximum=maximum,
            actual=actual,
            table=self.table,
            field=path or None,
        )

    def check(self, v: Any, path: str, depth: int) -> int:
        t = type(v)
        if t is dict or (t is not str and isinstance(v, dict)):
            return self._dict(v, path, depth)
        if t is list or t is tuple or (t is not str and isinstance(v, (list, tuple))):
            return self._list(v, path, depth)
        return self._scalar(v, path)

    def _scalar(self, v: Any, path: str) -> int:
        t = type(v)
        if v is None or t is bool:
            return 1
        if t is float:
            return 9
        if isinstance(v, str):
            size = str_size(v)
            if size is None:
                raise self.invalid(
                    f"String at {self._at(path)} holds an unpaired surrogate; strings must be "
                    "valid Unicode.",
                    path,
                )
            return size + 2
        if isinstance(v, int) and not isinstance(v, bool):
            if not INT64_MIN <= v <= INT64_MAX:
                raise self.invalid(
                    f"Integer {v} at {self._at(path)} does not fit in 64 bits.", path
                )
            return 9
        if t is bytes:
            return len(v) + 2
        raise self.invalid(
            f"Value at {self._at(path)} has type {t.__name__}, which cannot be stored; "
            "use None, bool, int, float, str, bytes, list or dict.",
            path,
        )

    def _depth(self, path: str, depth: int) -> None:
        if depth > self.depth_limit:
            raise self.limit(
                f"Value at {self._at(path)} is nested {depth} levels deep; the limit is "
                f"{self.depth_limit}.",
                path,
                "nesting_depth",
                self.depth_limit,
                depth,
            )

    def _list(self, v: list[Any] | tuple[Any, ...], path: str, depth: int) -> int:
        self._depth(path, depth)
        if len(v) > MAX_ARRAY_ELEMENTS:
            raise self.limit(
                f"Array at {self._at(path)} has {len(v):,} elements; the limit is "
                f"{MAX_ARRAY_ELEMENTS:,}.",
                path,
                "array_elements",
                MAX_ARRAY_ELEMENTS,
                len(v),
            )
        size = 2
        for i, item in enumerate(v):
            t = type(item)
            if t is float or t is int and INT64_MIN <= item <= INT64_MAX:
                size += 9
            elif t is str and item.isascii():
                size += len(item) + 2
            else:
                size += self.check(item, f"{path}[{i}]", depth + 1)
        return size

    def _dict(self, v: dict[Any, Any], path: str, depth: int) -> int:
        self._depth(path, depth)
        if len(v) > MAX_FIELDS:
            raise self.limit(
                f"Object at {self._at(path)} has {len(v):,} fields; the limit is {MAX_FIELDS:,}.",
                path,
                "fields",
                MAX_FIELDS,
                len(v),
            )
        size = 2
        for key, item in v.items():
            if type(key) is not str or key.startswith("$") or len(key) > 64 or not key.isascii():
                size += self._key(key, path)
            else:
                size += len(key) + 1
            t = type(item)
            if t is str and item.isascii():
                size += len(item) + 2
            elif t is float or t is int and INT64_MIN <= item <= INT64_MAX:
                size += 9
            elif t is bool or item is None:
                size += 1
            else:
                size += self.check(item, f"{path}.{key}" if path else key, depth + 1)
        return size

    def _key(self, key: Any, path: str) -> int:
        """Check an unusual field name (the common case is inlined); return its size."""
        if not isinstance(key, str):
            raise self.invalid(
                f"Object at {self._at(path)} has a key of type {type(key).__name__}; keys "
                "must be str.",
                path,
            )
        sub = f"{path}.{key}" if path else key
        if key.startswith("$"):
            raise self.invalid(
                f'Field name "{sub}" in {self.where} starts with "$", which is reserved for '
                "the wire format.",
                sub,
            )
        if len(key) > MAX_FIELD_NAME_LENGTH:
            raise self.limit(
                f'Field name "{key[:40]}..." in {self.where} is {len(key):,} characters; the '
                f"limit is {MAX_FIELD_NAME_LENGTH:,}.",
                sub,
                "field_name_length",
                MAX_FIELD_NAME_LENGTH,
                len(key),
            )
        size = str_size(key)
        if size is None:
            raise self.invalid(
                f"Field name {key!r} at {self._at(path)} holds an unpaired surrogate.", sub
            )
        return size + 1


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
