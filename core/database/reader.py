"""Owns ``DatabaseReader``: ``ctx.db`` in queries (get, query, system tables)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from core.database.query import Query
from core.errors import InvalidIdError, UserError
from core.ids import Id

if TYPE_CHECKING:
    from core.database.catalog import TableSpace
    from core.database.transaction import Transaction


class DatabaseReader:
    """Read access to one table space inside a transaction."""

    __slots__ = ("_txn", "_space", "_system")

    def __init__(self, txn: Transaction, space: TableSpace, system: TableSpace | None = None):
        self._txn = txn
        self._space = space
        self._system = system

    def get(self, id: str) -> dict[str, Any] | None:
        """The document with this id, or ``None`` if there is none."""
        return self._txn.get(self._space, id)

    def query(self, table: str) -> Query:
        """Start a query over ``table`` (creation-time order unless an index is chosen)."""
        return Query(self._txn, self._space, self._space.table(table))

    def normalize_id(self, table: str, id: str) -> Id | None:
        """``id`` as an ``Id`` of ``table``, or ``None`` if it is not one."""
        try:
            return self._space.resolve_id(id, table)
        except InvalidIdError:
            return None

    @property
    def system(self) -> DatabaseReader:
        """Read-only access to system tables (``_scheduled_functions``, ``_storage``)."""
        if self._system is None:
            raise UserError("System tables are not available here.")
        if self._space.namespace:
            return _ComponentSystemReader(self._txn, self._system, self._space.namespace)
        return DatabaseReader(self._txn, self._system)

    def _no_write(self, op: str) -> NoReturn:
        raise UserError(
            f"ctx.db.{op}() is not available here: queries are read-only. "
            "Write from a mutation instead."
        )

    def insert(self, table: str, value: dict[str, Any]) -> Id:
        """Not available in a query: raises ``UserError``."""
        self._no_write("insert")

    def patch(self, id: str, fields: dict[str, Any]) -> None:
        """Not available in a query: raises ``UserError``."""
        self._no_write("patch")

    def replace(self, id: str, value: dict[str, Any]) -> None:
        """Not available in a query: raises ``UserError``."""
        self._no_write("replace")

    def delete(self, id: str) -> None:
        """Not available in a query: raises ``UserError``."""
        self._no_write("delete")


class _ComponentSystemReader(DatabaseReader):
    """``ctx.db.system`` inside a component: only the system documents the instance owns.

    System documents that belong to a table space carry it in a ``namespace`` field (scheduled
    jobs, crons, files); a component sees those of its own instance and nothing else, so it
    cannot read the app's (or another instance's) jobs, files or service secrets.
    """

    __slots__ = ("_owner",)

    def __init__(self, txn: Transaction, space: TableSpace, owner: str):
        super().__init__(txn, space)
        self._owner = owner

    def get(self, id: str) -> dict[str, Any] | None:
        """The system document with this id, if this component instance owns it."""
        doc = super().get(id)
        if doc is None or doc.get("namespace") != self._owner:
            return None
        return doc

    def query(self, table: str) -> Query:
        """A query over a system table, limited to this instance's documents."""
        owner = self._owner
        return super().query(table).filter(lambda doc: doc.get("namespace") == owner)

    @property
    def system(self) -> DatabaseReader:
        """Already the system tables."""
        return self
