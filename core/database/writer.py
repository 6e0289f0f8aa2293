"""Owns ``DatabaseWriter``: ``ctx.db`` in mutations (insert, patch, replace, delete)."""

from __future__ import annotations

from typing import Any

from core.database.reader import DatabaseReader
from core.ids import Id


class DatabaseWriter(DatabaseReader):
    """Read and write access to one table space inside a mutation's transaction.

    Writes are validated when made and buffered; they reach storage only if the mutation
    commits.
    """

    __slots__ = ()

    def insert(self, table: str, value: dict[str, Any]) -> Id:
        """Insert a document; return its new id."""
        return self._txn.insert(self._space, table, value)

    def patch(self, id: str, fields: dict[str, Any]) -> None:
        """Shallow-merge fields into a document (``None`` stores null, ``UNSET`` removes)."""
        self._txn.patch(self._space, id, fields)

    def replace(self, id: str, value: dict[str, Any]) -> None:
        """Replace a document's fields, keeping ``_id`` and ``_creation_time``."""
        self._txn.replace(self._space, id, value)

    def delete(self, id: str) -> None:
        """Delete a document."""
        self._txn.delete(self._space, id)

    @property
    def system(self) -> DatabaseReader:
        """Read-only access to system tables."""
        return super().system
