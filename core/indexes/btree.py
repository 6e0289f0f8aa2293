"""Owns database (b-tree) indexes: key extraction from documents and index ranges as key bounds.

An index key is the encoding of ``(field values..., _creation_time, _id)``, so entries of one
index are unique, ordered by the fields, then by creation time, then by id. A field a document
lacks encodes as ``MISSING``, which sorts below ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.encoding import MISSING, encode_value, prefix_end
from core.errors import InvalidArgumentError
from core.indexes.base import Index


def field_getter(path: str) -> Callable[[dict[str, Any]], Any]:
    """A function reading a (dotted) field path from a document, ``MISSING`` when absent."""
    parts = path.split(".")
    if len(parts) == 1:
        name = parts[0]
        return lambda doc: doc.get(name, MISSING)

    def get(doc: dict[str, Any]) -> Any:
        cur: Any = doc
        for part in parts:
            if not isinstance(cur, dict) or part not in cur:
                return MISSING
            cur = cur[part]
        return cur

    return get


class BTreeIndex(Index):
    """An ordered index over ``fields`` (empty for the built-in creation-time order)."""

    kind = "btree"

    def __init__(self, *, id: int, table: int, name: str, fields: tuple[str, ...]):
        super().__init__(id=id, table=table, name=name)
        self.fields = fields
        self.range_fields = (*fields, "_creation_time")
        self.getters = [field_getter(f) for f in fields]
        """One reader per field, in order (``MISSING`` when a document lacks it)."""

    def entries(self, doc: dict[str, Any]) -> list[tuple[bytes, bytes]]:
        """One entry: the encoded field values, creation time and id; no value."""
        parts = [encode_value(g(doc)) for g in self.getters]
        parts.append(encode_value(doc["_creation_time"]))
        parts.append(encode_value(doc["_id"]))
        return [(b"".join(parts), b"")]


class IndexRange:
    """The builder passed to ``with_index``: ``eq`` on a prefix, then one range on the next.

    ``q.eq("owner", x).gte("due", a).lt("due", b)``
    """

    __slots__ = ("_fields", "_index", "_eqs", "_lower", "_upper", "_range_field")

    def __init__(self, index: str, fields: tuple[str, ...]):
        self._index = index
        self._fields = fields
        self._eqs: list[Any] = []
        self._lower: tuple[bool, Any] | None = None
        self._upper: tuple[bool, Any] | None = None
        self._range_field: str | None = None

    def _next_field(self, field: str, op: str) -> None:
        pos = len(self._eqs)
        if self._range_field is not None and (op == "eq" or field != self._range_field):
            raise InvalidArgumentError(
                f'Index "{self._index}": after a range on "{self._range_field}" only the other '
                f'bound on that field may follow, not {op}("{field}").'
            )
        if self._range_field is None and (pos >= len(self._fields) or self._fields[pos] != field):
            expected = self._fields[pos] if pos < len(self._fields) else None
            raise InvalidArgumentError(
                f'Index "{self._index}" has fields {list(self._fields)}: {op}("{field}") must '
                f"name the next field in order"
                + (f' ("{expected}").' if expected else " (there is none).")
            )

    def eq(self, field: str, value: Any) -> IndexRange:
        """Match documents whose ``field`` equals ``value``."""
        eqs = self._eqs
        pos = len(eqs)
        # The common case inline (the next field, no range yet); anything else is refused by
        # ``_next_field``, which names the problem.
        if self._range_field is not None or pos >= len(self._fields) or self._fields[pos] != field:
            self._next_field(field, "eq")
        eqs.append(value)
        return self

    def _bound(self, field: str, op: str, value: Any, lower: bool, inclusive: bool) -> IndexRange:
        self._next_field(field, op)
        if (self._lower if lower else self._upper) is not None:
            raise InvalidArgumentError(f'Index "{self._index}": two {op} bounds on "{field}".')
        self._range_field = field
        if lower:
            self._lower = (inclusive, value)
        else:
            self._upper = (inclusive, value)
        return self

    def gt(self, field: str, value: Any) -> IndexRange:
        """Documents whose ``field`` is greater than ``value``."""
        return self._bound(field, "gt", value, True, False)

    def gte(self, field: str, value: Any) -> IndexRange:
        """Documents whose ``field`` is at least ``value``."""
        return self._bound(field, "gte", value, True, True)

    def lt(self, field: str, value: Any) -> IndexRange:
        """Documents whose ``field`` is less than ``value``."""
        return self._bound(field, "lt", value, False, False)

    def lte(self, field: str, value: Any) -> IndexRange:
        """Documents whose ``field`` is at most ``value``."""
        return self._bound(field, "lte", value, False, True)

    def bounds(self) -> tuple[bytes, bytes | None] | None:
        """The key interval ``[lo, hi)`` (``hi`` None: unbounded); ``None`` if empty."""
        prefix = b"".join([encode_value(v) for v in self._eqs])
        lo: bytes | None = prefix
        hi = prefix_end(prefix) if prefix else None
        if self._lower is None and self._upper is None:
            return prefix, hi  # equalities only: a point or prefix read
        if self._lower is not None:
            inclusive, value = self._lower
            key = prefix + encode_value(value)
            lo = key if inclusive else prefix_end(key)
        if self._upper is not None:
            inclusive, value = self._upper
            key = prefix + encode_value(value)
            hi = prefix_end(key) if inclusive else key
        if lo is None or (hi is not None and lo >= hi):
            return None
        return lo, hi
