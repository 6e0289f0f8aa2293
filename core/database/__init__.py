"""Owns the database layer: transactions over storage, ``ctx.db``, queries and pages."""

from __future__ import annotations

from core.database.catalog import TableInfo, TableSpace
from core.database.engine import Conflict, Database
from core.database.pagination import Page
from core.database.query import Query
from core.database.reader import DatabaseReader
from core.database.transaction import Transaction
from core.database.writer import DatabaseWriter

__all__ = [
    "Conflict",
    "Database",
    "DatabaseReader",
    "DatabaseWriter",
    "Page",
    "Query",
    "TableInfo",
    "TableSpace",
    "Transaction",
]
