"""Owns the index family: builds an index maintainer from each declared index."""

from __future__ import annotations

from core.indexes.base import Index
from core.indexes.btree import BTreeIndex, IndexRange, field_getter
from core.schema import AnyIndexSpec, IndexSpec, SearchIndexSpec

CREATION_TIME_INDEX = "by_creation_time"


def build_index(spec: AnyIndexSpec | None, *, id: int, table: int, name: str) -> Index:
    """The maintainer for a declared index (``None``: the built-in creation-time order)."""
    if spec is None:
        return BTreeIndex(id=id, table=table, name=name, fields=())
    if isinstance(spec, IndexSpec):
        return BTreeIndex(id=id, table=table, name=name, fields=spec.fields)
    if isinstance(spec, SearchIndexSpec):
        from core.indexes.text import TextIndex

        return TextIndex(id=id, table=table, name=name, spec=spec)
    from core.indexes.vector import VectorIndex

    return VectorIndex(id=id, table=table, name=name, spec=spec)


__all__ = [
    "CREATION_TIME_INDEX",
    "BTreeIndex",
    "Index",
    "IndexRange",
    "build_index",
    "field_getter",
]
