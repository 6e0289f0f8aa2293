"""Owns reading a database without its app: the catalog, documents and file blobs, one snapshot.

``capsule data`` and ``capsule export`` need no app: they read the catalog the database keeps
(table numbers and the built-in creation-time index of every table) and scan documents at one
snapshot, so an export is consistent even while the app keeps writing. Nothing is written: the
catalog is not reconciled with any schema.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from core.encoding import load_document
from core.errors import UserError
from core.files import CHUNKS_TABLE, FILES_TABLE
from core.indexes import CREATION_TIME_INDEX, IndexRange, creation
from core.storage import SQLiteStorage, open_storage
from core.storage.base import CatalogTable, Snapshot, Storage
from core.system_tables import SYSTEM_NAMESPACE

_BATCH = 512


class StoredDatabase:
    """A database opened read-only by URL: ``with StoredDatabase(url) as db``."""

    def __init__(self, url: str):
        self.url = url
        self.storage: Storage = open_storage(url)
        self.tables: list[CatalogTable] = []
        self._index: dict[tuple[int, str], int] = {}
        self._snap: Snapshot | None = None

    def __enter__(self) -> StoredDatabase:
        if isinstance(self.storage, SQLiteStorage) and not os.path.exists(self.storage.path):
            raise UserError(f'There is no database at "{self.storage.path}"; check --db.')
        self.storage.open()
        tables, indexes = self.storage.load_catalog()
        self.tables = sorted(tables, key=lambda t: (t.namespace, t.name))
        self._index = {(i.table, i.name): i.id for i in indexes}
        self._snap = self.storage.begin_read()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._snap is not None:
            self._snap.close()
            self._snap = None
        self.storage.close()

    @property
    def snapshot(self) -> Snapshot:
        """The one snapshot every read uses."""
        if self._snap is None:
            raise UserError("The database is not open.")
        return self._snap

    def user_tables(self) -> list[CatalogTable]:
        """The app's and components' tables (no system tables)."""
        return [t for t in self.tables if t.namespace != SYSTEM_NAMESPACE]

    def component_tables(self, namespace: str) -> list[CatalogTable]:
        """The tables of one mounted component instance (its mount path).

        Raises:
            UserError: no component is mounted there.
        """
        found = [t for t in self.user_tables() if t.namespace == namespace]
        if not found:
            mounted = sorted({t.namespace for t in self.user_tables() if t.namespace})
            known = ", ".join(f'"{m}"' for m in mounted) or "none"
            raise UserError(f'No component is mounted at "{namespace}"; components: {known}.')
        return found

    def table(self, name: str, namespace: str = "") -> CatalogTable:
        """A table by name and table space.

        Raises:
            UserError: there is no such table.
        """
        for t in self.tables:
            if t.name == name and t.namespace == namespace:
                return t
        where = f' in component "{namespace}"' if namespace else ""
        known = ", ".join(t.name for t in self.tables if t.namespace == namespace) or "none"
        raise UserError(f'No table "{name}"{where}; tables: {known}.')

    def documents(
        self, table: CatalogTable, *, reverse: bool = False, limit: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """The documents of a table in creation order (newest first when ``reverse``)."""
        yield from self._scan(table, CREATION_TIME_INDEX, b"", None, reverse, limit)

    def _scan(
        self,
        table: CatalogTable,
        index_name: str,
        lo: bytes,
        hi: bytes | None,
        reverse: bool,
        limit: int | None,
    ) -> Iterator[dict[str, Any]]:
        index = self._index.get((table.number, index_name))
        if index is None:
            return
        left = limit
        while left is None or left > 0:
            want = _BATCH if left is None else min(_BATCH, left)
            if index_name == CREATION_TIME_INDEX:
                rows = creation.scan(
                    self.snapshot, table.number, index, lo, hi, reverse=reverse, limit=want
                )
            else:
                rows = self.snapshot.scan(index, lo, hi, reverse=reverse, limit=want)
            for row in rows:
                yield load_document(row.doc.data)
            if left is not None:
                left -= len(rows)
            if len(rows) < want:
                return
            if reverse:
                hi = rows[-1].key
            else:
                lo = rows[-1].key + b"\x00"

    def count(self, table: CatalogTable) -> int:
        """How many documents a table holds."""
        return sum(1 for _ in self.documents(table))

    def files(self) -> Iterator[tuple[dict[str, Any], bytes]]:
        """Every stored file's metadata and content."""
        try:
            meta_table = self.table(FILES_TABLE, SYSTEM_NAMESPACE)
        except UserError:
            return
        for meta in self.documents(meta_table):
            yield meta, self.blob(meta)

    def blob(self, meta: dict[str, Any]) -> bytes:
        """The content of a file from its ``_storage`` metadata."""
        blob = meta["blob"]
        if not meta["in_db"]:
            folder = self.storage.files_dir()
            if folder is None:
                raise UserError(f'File "{meta["_id"]}" is on disk, but this storage has no folder.')
            with open(os.path.join(folder, blob[:2], blob), "rb") as f:
                return f.read()
        chunks = self.table(CHUNKS_TABLE, SYSTEM_NAMESPACE)
        bounds = IndexRange("by_blob", ("blob", "n")).eq("blob", blob).bounds()
        if bounds is None:  # pragma: no cover - an equality range is never empty
            return b""
        lo, hi = bounds
        return b"".join(doc["data"] for doc in self._scan(chunks, "by_blob", lo, hi, False, None))
