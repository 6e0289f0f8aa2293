"""Owns read sets and write sets, and the test of whether a write set touches a read set.

The same records drive optimistic concurrency control (a mutation conflicts with a commit made
after its snapshot whose write set touches its read set) and subscriptions (a query re-runs
only when a commit's write set touches its read set).

Invariant: a read set over-approximates what a transaction observed. Every document read by id
is listed, and every index scan lists the key interval it actually consumed, so any write that
could change what the transaction saw (a changed, inserted or deleted document, old or new
version) writes a key inside one of those intervals or a listed id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack

_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack


class KeyRange:
    """A half-open key interval ``[lo, hi)`` of one index (``hi`` None: unbounded)."""

    __slots__ = ("index", "lo", "hi")

    def __init__(self, index: int, lo: bytes, hi: bytes | None):
        self.index = index
        self.lo = lo
        self.hi = hi

    def contains(self, key: bytes) -> bool:
        """Whether ``key`` lies in the interval."""
        return self.lo <= key and (self.hi is None or key < self.hi)

    def __repr__(self) -> str:
        return f"KeyRange({self.index}, {self.lo!r}, {self.hi!r})"


@dataclass(slots=True)
class ReadSet:
    """What a transaction (or a subscribed query) observed."""

    docs: set[str] = field(default_factory=set)
    ranges: dict[int, list[KeyRange]] = field(default_factory=dict)
    tables: dict[int, str] = field(default_factory=dict)
    """Index id (or table number, for point reads) to table name, to name conflicts."""

    def add_doc(self, doc_id: str) -> None:
        """Record a read of one document (present or not)."""
        self.docs.add(doc_id)

    def add_range(self, r: KeyRange) -> KeyRange:
        """Record an index interval; the caller may narrow or widen it while scanning."""
        self.ranges.setdefault(r.index, []).append(r)
        return r

    def touched_by(self, writes: WriteSet) -> bool:
        """Whether ``writes`` changes something this read set observed."""
        if self.docs and not self.docs.isdisjoint(writes.docs):
            return True
        ranges = self.ranges
        if not ranges:
            return False
        for index, keys in writes.keys.items():
            rs = ranges.get(index)
            if rs:
                for key in keys:
                    for r in rs:
                        if r.lo <= key and (r.hi is None or key < r.hi):
                            return True
        return False

    def tables_touched_by(self, writes: WriteSet) -> set[str]:
        """Names of the tables through which ``writes`` touches this read set."""
        names = {writes.doc_tables.get(d, "?") for d in self.docs & set(writes.docs)}
        for index, keys in writes.keys.items():
            for r in self.ranges.get(index, ()):
                if any(r.contains(k) for k in keys):
                    names.add(self.tables.get(index, "?"))
        return names


@dataclass(slots=True)
class WriteSet:
    """What one commit changed: document ids and, per index, every old and new key."""

    docs: list[str] = field(default_factory=list)
    keys: dict[int, list[bytes]] = field(default_factory=dict)
    doc_tables: dict[str, str] = field(default_factory=dict)
    tables: set[int] = field(default_factory=set)
    """Table numbers written (for cheap pre-filtering by subscribers)."""
    catalog_changed: bool = False
    """The commit changed the catalog's indexes: every process must reload them."""

    def add(
        self, doc_id: str, table: int, table_name: str, keys: Iterable[tuple[int, bytes]]
    ) -> None:
        """Record one written document and the index keys it touched."""
        self.docs.append(doc_id)
        self.doc_tables[doc_id] = table_name
        self.tables.add(table)
        for index, key in keys:
            self.keys.setdefault(index, []).append(key)

    def dump(self) -> bytes:
        """Serialize for the commit log."""
        parts: list[Any] = [self.docs, list(self.keys.items()), list(self.tables), self.doc_tables]
        if self.catalog_changed:
            parts.append(True)
        return _pack(parts)

    @classmethod
    def load(cls, data: bytes) -> WriteSet:
        """Read what ``dump`` wrote."""
        docs, keys, tables, doc_tables, *rest = msgpack.unpackb(
            data, raw=False, strict_map_key=False
        )
        return cls(
            docs=docs,
            keys=dict(keys),
            doc_tables=doc_tables,
            tables=set(tables),
            catalog_changed=bool(rest and rest[0]),
        )
