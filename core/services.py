"""Owns the ``Service`` interface: how scheduler, crons and file storage attach to a runtime.

A service is a class. An ``App`` lists the classes its runtimes run (``app.add_service(cls)``;
``FileService``, ``Scheduler`` and ``CronService`` are there by default), and every runtime
opened for the app makes one instance of each, in order, once its database is open. Code that
needs one asks the runtime for it by class: ``runtime.service(Scheduler)``.

A service declares the system tables it keeps (``tables``); ``system_schema`` assembles the
``_system`` table space from the core's own tables and those of the app's services, and that
is the only place it is assembled. Its lifecycle is ``open()`` (the database is open: sync
declarations, attach listeners), ``run()`` (the background loop, while a client or server runs
the runtime's services) and ``close()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, ClassVar, TypeVar

from core.errors import UserError
from core.schema import Schema, Table
from core.system_tables import core_tables

if TYPE_CHECKING:
    from core.runtime import Runtime

ServiceT = TypeVar("ServiceT", bound="Service")


class Service:
    """Part of a runtime beyond functions and the database (scheduler, crons, file storage).

    Subclasses set ``tables`` and override what they need of ``open``, ``run`` and ``close``.
    A service without system tables may also be created on first use (``runtime.service``
    makes it then), such as the subscription hub.
    """

    tables: ClassVar[Mapping[str, Table]] = {}
    """The system tables (``_system`` table space) this service keeps, by name."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def open(self) -> None:
        """Called once the runtime's database is open (the default does nothing)."""

    async def run(self) -> None:
        """The background loop, run while the runtime's services run (the default has none)."""

    def close(self) -> None:
        """Called when the runtime closes, before storage closes (the default does nothing)."""


def system_schema(services: Iterable[type[Service]]) -> Schema:
    """The ``_system`` table space: the core's tables plus those the services declare.

    Raises:
        UserError: two services declare the same table name differently.
    """
    tables: dict[str, Table] = dict(core_tables())
    owners: dict[str, str] = dict.fromkeys(tables, "the core")
    for cls in services:
        for name, table in cls.tables.items():
            if not name.startswith("_"):
                raise UserError(
                    f'Service {cls.__name__} declares system table "{name}"; system table '
                    "names start with '_'."
                )
            if name in tables and tables[name] is not table:
                raise UserError(
                    f'System table "{name}" is declared by {owners[name]} and by service '
                    f"{cls.__name__}; give one of them another name."
                )
            tables[name] = table
            owners[name] = f"service {cls.__name__}"
    schema = Schema(strict=True)
    # Schema(**tables) refuses names starting with "_", which only system tables may use.
    schema.tables = tables
    return schema
