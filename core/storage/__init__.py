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
        return _postgres_class()(url)
    raise UserError(
        f"Database URL {url!r} is not supported; use sqlite:///path or postgresql://..."
    )


def _postgres_class() -> type[PostgresStorage]:
    """``PostgresStorage``, or a clear error when the ``postgres`` extra is not installed."""
    try:
        from core.storage.postgres import PostgresStorage
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] not in ("psycopg", "psycopg_pool", "psycopg_binary"):
            raise
        raise UserError(
            f'PostgreSQL needs the "{exc.name}" driver, which is not installed: '
            'pip install "capsule[postgres]".'
        ) from None
    return PostgresStorage


def __getattr__(name: str) -> Any:
    if name == "PostgresStorage":
        return _postgres_class()
    raise AttributeError(name)


__all__ = [
    "PostgresStorage",
    "SQLiteStorage",
    "Snapshot",
    "Storage",
    "WriteSession",
    "open_storage",
]
