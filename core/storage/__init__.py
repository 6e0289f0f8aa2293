"""Owns the storage family: the ``Storage`` interface, its backends, and URL selection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.errors import UserError
from core.storage.base import Snapshot, Storage, WriteSession
from core.storage.sqlite import SQLiteStorage

if TYPE_CHECKING:
    from core.storage.postgres import PostgresStorage


def open_storage(url: str) -> Storage:
    """Build the backend a URL names: ``sqlite:///path`` or ``postgresql://...``."""
    if url.startswith("sqlite:"):
        return SQLiteStorage.from_url(url)
    if url.startswith(("postgresql:", "postgres:")):
        from core.storage.postgres import PostgresStorage

        return PostgresStorage(url)
    raise UserError(
        f"Database URL {url!r} is not supported; use sqlite:///path or postgresql://..."
    )


def __getattr__(name: str) -> Any:
    if name == "PostgresStorage":
        from core.storage.postgres import PostgresStorage

        return PostgresStorage
    raise AttributeError(name)


__all__ = [
    "PostgresStorage",
    "SQLiteStorage",
    "Snapshot",
    "Storage",
    "WriteSession",
    "open_storage",
]
