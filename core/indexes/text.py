"""Owns full-text search indexes (interim: declared and accepted; search lands with its issue)."""

from __future__ import annotations

from typing import Any

from core.indexes.base import Index
from core.schema import SearchIndexSpec


class TextIndex(Index):
    """A full-text index over one string field."""

    kind = "search"

    def __init__(self, *, id: int, table: int, name: str, spec: SearchIndexSpec):
        super().__init__(id=id, table=table, name=name)
        self.spec = spec

    def entries(self, doc: dict[str, Any]) -> list[tuple[bytes, bytes]]:
        return []
