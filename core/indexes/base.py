"""Owns the ``Index`` interface: how an index turns a document into its entries."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class Index(ABC):
    """An index of one table; the database keeps its entries consistent with every commit."""

    kind: str = ""

    def __init__(self, *, id: int, table: int, name: str):
        self.id = id
        self.table = table
        self.name = name

    @abstractmethod
    def entries(self, doc: dict[str, Any]) -> list[tuple[bytes, bytes]]:
        """The (key, value) entries for a document (with its system fields).

        Keys are unique within the index (they end with the document id).
        """

    def check(self, doc: dict[str, Any], *, table: str) -> None:  # noqa: B027
        """Refuse a document this index cannot hold (the default accepts all)."""

    def close(self) -> None:  # noqa: B027
        """Release in-memory state kept beside the entries (caches, search structures)."""
