"""Owns deployment environment variables: the ``_environment`` system table and ``ctx.env``.

Variables set with ``capsule env set NAME VALUE`` live in the database, so every process on a
shared database sees the same ones, and a change is seen by the next ``ctx.env`` read with no
restart. ``ctx.env`` (actions only: queries, mutations and components cannot read it) looks
a name up in the table first, then in the process environment. Each read of ``ctx.env`` is
one small snapshot read; read what you need once per action.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.database.query import Query
from core.errors import InvalidArgumentError
from core.schema import Table
from core.services import Service
from core.system_tables import SYSTEM_NAMESPACE

if TYPE_CHECKING:
    from core.database.transaction import Transaction
    from core.execution import Executor
    from core.runtime import Runtime

ENVIRONMENT_TABLE = "_environment"
"""One document per deployment variable: name, value, whether it is a secret."""

ENVIRONMENT_TABLE_SHAPE = Table(
    {"name": str, "value": str, "secret": bool, "updated_at": float}
).index("by_name", ["name"])
"""The ``_environment`` table (declared by ``EnvironmentService``)."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_VALUE_BYTES = 64 * 1024
"""The longest value a variable may hold, in UTF-8 bytes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Variable:
    """One stored deployment variable."""

    name: str
    value: str
    secret: bool
    """Hidden by ``capsule env list`` unless ``--show-secrets``."""
    updated_at: float


def check_name(name: str) -> str:
    """Return ``name`` if it can name a variable.

    Raises:
        InvalidArgumentError: not ``[A-Za-z_][A-Za-z0-9_]*``.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgumentError(
            f"{name!r} is not a variable name; use letters, digits and _ (not first a digit)."
        )
    return name


def _rows(txn: Transaction, executor: Executor) -> Query:
    space = executor.db.catalog.space(SYSTEM_NAMESPACE)
    return Query(txn, space, space.table(ENVIRONMENT_TABLE))


def _find(txn: Transaction, executor: Executor, name: str) -> dict[str, Any] | None:
    return _rows(txn, executor).with_index("by_name", lambda q: q.eq("name", name)).first()


def _variable(doc: dict[str, Any]) -> Variable:
    return Variable(
        name=doc["name"], value=doc["value"], secret=doc["secret"], updated_at=doc["updated_at"]
    )


class DeploymentEnvironment:
    """Reads and writes the ``_environment`` table of one open runtime's database."""

    def __init__(self, executor: Executor):
        self.executor = executor

    def _read(self, body: Any) -> Any:
        txn = self.executor.db.transaction(now=self.executor.clock.time())
        try:
            return body(txn)
        finally:
            txn.close()

    def get(self, name: str) -> Variable | None:
        """The stored variable ``name`` (``None`` if it is not set in the database)."""
        doc = self._read(lambda txn: _find(txn, self.executor, name))
        return None if doc is None else _variable(doc)

    def list(self) -> list[Variable]:
        """Every stored variable, by name."""
        docs = self._read(lambda txn: _rows(txn, self.executor).collect())
        return sorted((_variable(d) for d in docs), key=lambda v: v.name)

    def set(self, name: str, value: str, *, secret: bool = False) -> None:
        """Store ``name = value`` (replacing any earlier value).

        Raises:
            InvalidArgumentError: a bad name, or a value over ``MAX_VALUE_BYTES``.
        """
        check_name(name)
        if len(value.encode()) > MAX_VALUE_BYTES:
            raise InvalidArgumentError(
                f'The value of "{name}" is {len(value.encode()):,} bytes; the limit is '
                f"{MAX_VALUE_BYTES:,}."
            )
        ex = self.executor
        space = ex.db.catalog.space(SYSTEM_NAMESPACE)

        def attempt(txn: Transaction) -> None:
            doc = {"name": name, "value": value, "secret": secret, "updated_at": txn.now}
            found = _find(txn, ex, name)
            if found is None:
                txn.insert(space, ENVIRONMENT_TABLE, doc)
            else:
                txn.replace(space, found["_id"], doc)

        ex.run_transaction(attempt, label=f"env set {name}")

    def unset(self, name: str) -> bool:
        """Remove ``name`` from the database; whether it was there."""
        ex = self.executor
        space = ex.db.catalog.space(SYSTEM_NAMESPACE)

        def attempt(txn: Transaction) -> bool:
            found = _find(txn, ex, name)
            if found is not None:
                txn.delete(space, found["_id"])
            return found is not None

        return bool(ex.run_transaction(attempt, label=f"env unset {name}"))


class EnvironmentView(Mapping[str, str]):
    """``ctx.env``: the database's deployment variables, then the process environment.

    Each lookup reads the database at a fresh snapshot, so a ``capsule env set`` from any
    process is seen at once.
    """

    def __init__(self, store: DeploymentEnvironment, fallback: Mapping[str, str]):
        self._store = store
        self._fallback = fallback

    def __getitem__(self, name: str) -> str:
        found = self._store.get(name) if _NAME.fullmatch(name) else None
        if found is not None:
            return found.value
        return self._fallback[name]

    def _merged(self) -> dict[str, str]:
        return {**self._fallback, **{v.name: v.value for v in self._store.list()}}

    def __iter__(self) -> Iterator[str]:
        return iter(self._merged())

    def __len__(self) -> int:
        return len(self._merged())

    def __repr__(self) -> str:
        return f"<EnvironmentView of {len(self._store.list())} stored variable(s)>"


class EnvironmentService(Service):
    """Keeps ``_environment``; ``ctx.env`` of the runtime's actions reads it first."""

    tables = {ENVIRONMENT_TABLE: ENVIRONMENT_TABLE_SHAPE}

    def __init__(self, runtime: Runtime):
        super().__init__(runtime)
        ex = runtime.executor
        self.store = DeploymentEnvironment(ex)
        """The stored variables (``capsule env``)."""
        self.view = EnvironmentView(self.store, ex.env)
        """``ctx.env``: the stored variables, then the process environment."""


__all__ = [
    "ENVIRONMENT_TABLE",
    "ENVIRONMENT_TABLE_SHAPE",
    "DeploymentEnvironment",
    "EnvironmentService",
    "EnvironmentView",
    "Variable",
    "check_name",
]
