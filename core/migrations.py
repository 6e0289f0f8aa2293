"""Owns migrations: ``app.migration(name, table=...)``, running them, and their status.

A migration is a function ``(ctx, doc) -> patch | None`` over every document of one table: the
patch (a dict of changes, ``core.UNSET`` to drop a field) is merged into the document and
validated against the declared shape. The runner reads the table in creation order,
``batch_size`` documents per transaction; each transaction also advances the migration's
record in the ``_migrations`` system table (its cursor and counts), so the patches and the
cursor commit together: a crash resumes after the last committed batch, and no document is
migrated twice. Concurrent mutations of the table conflict with the batch that read the same
documents, which is retried, so nothing they write is lost.

Migrations run in name order, components' first (by mount path), then the app's; each runs once.
A table whose documents do not fit its declared shape refuses to open, naming its pending
migrations; ``capsule migrate`` opens it anyway (``Runtime.open(defer=True)``), runs them, then
settles the table (``Database.settle``) so the next open succeeds.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.auth import NO_AUTH
from core.context import MutationCtx
from core.database.catalog import Catalog, ShapeReport
from core.database.pagination import Page
from core.database.reader import DatabaseReader
from core.database.transaction import Transaction
from core.encoding import load_document
from core.errors import InvalidValueError, UserError
from core.execution import Frame, Target
from core.functions import FunctionKind, FunctionRef
from core.indexes.creation import scan_index
from core.storage.base import Snapshot
from core.system_tables import MIGRATIONS, SYSTEM_NAMESPACE
from core.values import check_table_name

if TYPE_CHECKING:
    from core.app import App
    from core.runtime import Runtime

logger = logging.getLogger("capsule.migrations")

RUNNING = "running"
"""A migration that has started (its cursor says how far it got)."""
DONE = "done"
"""A migration that has read the whole table; it never runs again."""
PENDING = "pending"
"""A declared migration with no record yet (reported by ``status``, never stored)."""

DEFAULT_BATCH = 100
MAX_BATCH = 4000
COUNT_BATCH = 1000
"""Documents read per transaction when counting what a migration has left."""


MigrationFn = Callable[[MutationCtx, dict[str, Any]], "dict[str, Any] | None"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Migration:
    """A declared migration of one table."""

    name: str
    table: str
    fn: MigrationFn
    batch_size: int = DEFAULT_BATCH


class MigrationDecorators:
    """``.migration(name, table=..., batch_size=...)`` for apps and components."""

    @property
    def migrations(self) -> dict[str, Migration]:
        """Declared migrations by name."""
        found: dict[str, Migration] | None = self.__dict__.get("_migrations")
        if found is None:
            found = self.__dict__["_migrations"] = {}
        return found

    def migration(
        self, name: str, *, table: str, batch_size: int = DEFAULT_BATCH
    ) -> Callable[[MigrationFn], MigrationFn]:
        """Declare a migration: ``fn(ctx, doc)`` returns a patch for ``doc``, or ``None``.

        Migrations run in name order (``capsule migrate``), each once, ``batch_size``
        documents per transaction.
        """
        if not isinstance(name, str) or not name or len(name) > 128 or "/" in name:
            raise UserError(f"A migration name is 1 to 128 characters without '/', not {name!r}.")
        if name in self.migrations:
            raise UserError(f'Migration "{name}" is declared twice.')
        check_table_name(table)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise UserError(f"batch_size must be an int, not {batch_size!r}.")
        if not 1 <= batch_size <= MAX_BATCH:
            raise UserError(f"batch_size={batch_size} is out of range: 1 to {MAX_BATCH}.")

        def register(fn: MigrationFn) -> MigrationFn:
            self.migrations[name] = Migration(name=name, table=table, fn=fn, batch_size=batch_size)
            return fn

        return register


@dataclass(frozen=True, slots=True, kw_only=True)
class Planned:
    """A migration of one table space, in the order migrations run."""

    namespace: str
    migration: Migration

    @property
    def label(self) -> str:
        """The name commands take: ``name`` for the app's, ``mount/name`` for a component's."""
        m = self.migration.name
        return f"{self.namespace}/{m}" if self.namespace else m


def planned(app: App) -> list[Planned]:
    """Every migration of the app and its mounted components, in the order they run."""
    out = [
        Planned(namespace=ns, migration=m)
        for ns, instance in sorted(app.components.instances.items())
        for _, m in sorted(instance.component.migrations.items())
    ]
    out += [Planned(namespace="", migration=m) for _, m in sorted(app.migrations.items())]
    return out


@dataclass(slots=True, kw_only=True)
class MigrationStatus:
    """Where one migration stands."""

    label: str
    table: str
    state: str
    processed: int = 0
    changed: int = 0
    remaining: int | None = None
    """Documents of the table not read yet (``None``: not counted)."""

    def describe(self) -> str:
        """One line for ``capsule migrate --status``."""
        text = f"{self.label} ({self.table}): {self.state}"
        if self.state != PENDING:
            text += f", {self.processed:,} read, {self.changed:,} changed"
        if self.remaining is not None and self.state != DONE:
            text += f", {self.remaining:,} to go"
        return text


def _records(catalog: Catalog, snap: Snapshot) -> dict[tuple[str, str], dict[str, Any]]:
    space = catalog.spaces.get(SYSTEM_NAMESPACE)
    info = space.tables.get(MIGRATIONS) if space is not None else None
    if info is None:
        return {}
    out = {}
    for row in scan_index(snap, info.creation_index, b"", None, reverse=False, limit=1_000_000):
        doc = load_document(row.doc.data)
        out[doc["namespace"], doc["name"]] = doc
    return out


def pending_fixes(
    catalog: Catalog, plan: list[Planned]
) -> Callable[[Snapshot], dict[tuple[str, str], list[str]]]:
    """For opening: the migrations not done yet of each ``(namespace, table)``."""

    def read(snap: Snapshot) -> dict[tuple[str, str], list[str]]:
        records = _records(catalog, snap)
        out: dict[tuple[str, str], list[str]] = {}
        for p in plan:
            rec = records.get((p.namespace, p.migration.name))
            if rec is None or rec["state"] != DONE:
                out.setdefault((p.namespace, p.migration.table), []).append(p.label)
        return out

    return read


class Migrator:
    """Runs and reports the migrations of an app on an open runtime."""

    def __init__(self, app: App, runtime: Runtime):
        self.app = app
        self.runtime = runtime
        self.plan = planned(app)

    # -- selection ------------------------------------------------------------------------------

    def select(self, names: Iterable[str] = ()) -> list[Planned]:
        """The migrations named (all when none are), in run order.

        Raises:
            UserError: a name matches no declared migration.
        """
        wanted = list(names)
        if not wanted:
            return list(self.plan)
        labels = {p.label for p in self.plan}
        unknown = [n for n in wanted if n not in labels]
        if unknown:
            known = ", ".join(sorted(labels)) or "none"
            raise UserError(f"No migration named {', '.join(unknown)}; declared: {known}.")
        return [p for p in self.plan if p.label in wanted]

    # -- records ---------------------------------------------------------------------------------

    def _record(self, txn: Transaction, p: Planned) -> dict[str, Any] | None:
        system = self.runtime.db.space(SYSTEM_NAMESPACE)
        reader = DatabaseReader(txn, system)
        found: dict[str, Any] | None = (
            reader.query(MIGRATIONS)
            .with_index(
                "by_name", lambda q: q.eq("namespace", p.namespace).eq("name", p.migration.name)
            )
            .unique()
        )
        return found

    def _ctx(self, txn: Transaction, p: Planned) -> MutationCtx:
        ref: FunctionRef[Any, Any] = FunctionRef(
            p.migration.fn,
            kind=FunctionKind.MUTATION,
            internal=True,
            name=f"migration {p.label}",
            owner=self.app,
        )
        frame = Frame(
            self.runtime.executor,
            Target(ref, p.namespace),
            auth=NO_AUTH,
            depth=0,
            kind="mutation",
            txn=txn,
            now=txn.now,
        )
        return MutationCtx(frame)

    def _patches(
        self, txn: Transaction, p: Planned, cursor: str | None
    ) -> tuple[Page, MutationCtx, list[tuple[dict[str, Any], dict[str, Any]]]]:
        """The next batch, and each of its documents the migration changes, with its patch."""
        ctx = self._ctx(txn, p)
        page = ctx.db.query(p.migration.table).paginate(cursor, p.migration.batch_size)
        out = []
        for doc in page.page:
            patch = p.migration.fn(ctx, doc)
            if patch is None or patch == {}:
                continue
            if not isinstance(patch, dict):
                raise UserError(
                    f'Migration "{p.label}" returned {type(patch).__name__} for document '
                    f'"{doc["_id"]}"; return a dict of changes or None.'
                )
            out.append((doc, patch))
        return page, ctx, out

    # -- running ----------------------------------------------------------------------------------

    def _batch(self, txn: Transaction, p: Planned) -> bool:
        """Migrate the next batch and advance the record, in one transaction; True when done."""
        system = self.runtime.db.space(SYSTEM_NAMESPACE)
        rec = self._record(txn, p)
        if rec is None:
            rec_id = txn.insert(
                system,
                MIGRATIONS,
                {
                    "namespace": p.namespace,
                    "name": p.migration.name,
                    "table": p.migration.table,
                    "state": RUNNING,
                    "cursor": None,
                    "processed": 0,
                    "changed": 0,
                    "started_time": txn.now,
                    "completed_time": None,
                },
            )
            rec = {"_id": rec_id, "cursor": None, "processed": 0, "changed": 0, "state": RUNNING}
        if rec["state"] == DONE:
            return True
        page, ctx, patches = self._patches(txn, p, rec["cursor"])
        for doc, patch in patches:
            try:
                ctx.db.patch(doc["_id"], patch)
            except InvalidValueError as exc:
                raise InvalidValueError(
                    f'Migration "{p.label}" on document "{doc["_id"]}": {exc}',
                    table=exc.table,
                    field=exc.field,
                ) from None
        txn.patch(
            system,
            rec["_id"],
            {
                "cursor": page.continue_cursor,
                "processed": rec["processed"] + len(page.page),
                "changed": rec["changed"] + len(patches),
                "state": DONE if page.is_done else RUNNING,
                "completed_time": txn.now if page.is_done else None,
            },
        )
        return page.is_done

    def run(self, names: Iterable[str] = ()) -> list[MigrationStatus]:
        """Run the named (default: every) pending migration to the end, in order; settle after.

        Raises:
            InvalidValueError: a patch makes a document that does not fit the schema (the
                batch is not applied; the migration resumes there once fixed).
        """
        chosen = self.select(names)
        for p in chosen:
            batches = 0
            step: Callable[[Transaction], bool] = functools.partial(self._batch, p=p)
            while True:
                done = self.runtime.executor.run_transaction(step, label=f"migration {p.label}")
                batches += 1
                if batches % 20 == 0:
                    logger.info("migration %s: %d batches", p.label, batches)
                if done:
                    break
            logger.info("migration %s: done", p.label)
        self.runtime.db.settle()
        return self.status(names)

    def dry_run(self, names: Iterable[str] = ()) -> list[MigrationStatus]:
        """What running would change: each pending migration over its remaining documents.

        Nothing is written: every batch runs in a transaction that is never committed.
        """
        out = []
        for p in self.select(names):
            txn = self.runtime.db.transaction(now=self.runtime.clock.time())
            try:
                rec = self._record(txn, p)
            finally:
                txn.close()
            if rec is not None and rec["state"] == DONE:
                out.append(self._status(p, rec, None))
                continue
            cursor = rec["cursor"] if rec is not None else None
            read = changed = 0
            while True:
                txn = self.runtime.db.transaction(now=self.runtime.clock.time())
                try:
                    page, _, patches = self._patches(txn, p, cursor)
                    changed += len(patches)
                finally:
                    txn.close()
                read += len(page.page)
                cursor = page.continue_cursor
                if page.is_done:
                    break
            out.append(
                MigrationStatus(
                    label=p.label,
                    table=p.migration.table,
                    state="would change",
                    processed=read,
                    changed=changed,
                )
            )
        return out

    # -- status -----------------------------------------------------------------------------------

    def _remaining(self, p: Planned, cursor: str | None) -> int:
        count = 0
        while True:
            txn = self.runtime.db.transaction(now=self.runtime.clock.time())
            try:
                ctx = self._ctx(txn, p)
                page = ctx.db.query(p.migration.table).paginate(cursor, COUNT_BATCH)
            finally:
                txn.close()
            count += len(page.page)
            cursor = page.continue_cursor
            if page.is_done:
                return count

    def _status(
        self, p: Planned, rec: dict[str, Any] | None, remaining: int | None
    ) -> MigrationStatus:
        if rec is None:
            return MigrationStatus(
                label=p.label, table=p.migration.table, state=PENDING, remaining=remaining
            )
        return MigrationStatus(
            label=p.label,
            table=p.migration.table,
            state=rec["state"],
            processed=rec["processed"],
            changed=rec["changed"],
            remaining=remaining,
        )

    def status(self, names: Iterable[str] = ()) -> list[MigrationStatus]:
        """Each migration's state and counts; pending ones with the documents left to read."""
        out = []
        for p in self.select(names):
            txn = self.runtime.db.transaction(now=self.runtime.clock.time())
            try:
                rec = self._record(txn, p)
            finally:
                txn.close()
            done = rec is not None and rec["state"] == DONE
            remaining = None if done else self._remaining(p, rec["cursor"] if rec else None)
            out.append(self._status(p, rec, remaining))
        return out

    def unsettled(self) -> list[ShapeReport]:
        """Tables whose stored documents do not all fit their declared shape yet.

        Each names the migrations of its table still pending now (some may have just run).
        """
        reports = list(self.runtime.db.catalog.unsettled.values())
        if reports:
            snap = self.runtime.db.begin_read()
            try:
                fixes = pending_fixes(self.runtime.db.catalog, self.plan)(snap)
            finally:
                self.runtime.db.end_read(snap)
            for r in reports:
                r.migrations = fixes.get((r.info.namespace, r.info.name), [])
        return reports


def migrate(
    app: App,
    names: Iterable[str] = (),
    *,
    dry_run: bool = False,
    storage: Any = None,
) -> tuple[list[MigrationStatus], list[ShapeReport]]:
    """Open ``app`` (tables that do not fit yet allowed), run its pending migrations, close.

    Returns each migration's status and the tables that still do not fit afterwards.
    """
    runtime = app.make_runtime(storage)
    runtime.open(defer=True, backfill=not dry_run)
    try:
        migrator = Migrator(app, runtime)
        if dry_run:
            return migrator.dry_run(names), migrator.unsettled()
        statuses = migrator.run(names)
        return statuses, migrator.unsettled()
    finally:
        runtime.close()


def migration_status(
    app: App, names: Iterable[str] = (), *, storage: Any = None
) -> tuple[list[MigrationStatus], list[ShapeReport]]:
    """Each migration's status and the tables not settled yet; changes no document."""
    runtime = app.make_runtime(storage)
    runtime.open(defer=True, backfill=False)
    try:
        migrator = Migrator(app, runtime)
        return migrator.status(names), migrator.unsettled()
    finally:
        runtime.close()
