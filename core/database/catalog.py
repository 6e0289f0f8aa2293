"""Owns the catalog: table numbers, index ids, table spaces, and schema changes at open.

Every table belongs to a table space (``""`` for the app, the mount path for a component
instance, ``"_system"`` for system tables); table numbers are unique across the database, so an
id names exactly one table of one space.

At open, new tables and indexes are created (indexes are backfilled from the stored documents),
removed indexes are dropped, and a table whose shape changed is checked document by document:
if one violates the new shape the database refuses to open, naming the table, how many
documents do not fit, the first one and its field, and the pending migrations of the table.

Defaults are part of the stored data: a document that fits the new shape only once its defaults
are filled in is rewritten with them (``Database.settle``, in batches of ``BACKFILL_BATCH``
documents, each its own storage transaction), index entries included, so reads and indexes
agree with the schema. The table's stored fingerprint changes only once every document fits, so
a crash in the middle leaves the table unsettled and the next open resumes; a document already
rewritten fits as it is and is not written again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from core.database.readsets import WriteSet
from core.encoding import dump_document, encode_suffix, encode_value, load_document
from core.errors import InvalidIdError, InvalidValueError, SchemaMismatchError, UserError
from core.ids import Id, decode_table_number
from core.indexes import CREATION_TIME_INDEX, Index, build_index
from core.indexes.btree import BTreeIndex
from core.indexes.creation import (
    is_creation_order,
    scan_index,
    stored_entries,
    stored_key,
    stored_keys,
)
from core.schema import PlainValidator, Schema, Table, index_spec_from_text
from core.storage.base import (
    CatalogIndex,
    CatalogTable,
    CommitBatchItem,
    DocumentWrite,
    Snapshot,
    WriteSession,
)
from core.values import check_table_name

SYSTEM_NAMESPACE = "_system"
BACKFILL_BATCH = 500
"""Documents checked (and rewritten with their defaults) per storage transaction."""

logger = logging.getLogger("capsule.database")

PendingFixes = Callable[[Snapshot], dict[tuple[str, str], list[str]]]
"""Reads, at a snapshot, the pending migrations of each ``(namespace, table)``."""


@dataclass(slots=True, kw_only=True)
class TableInfo:
    """A table as the running database knows it."""

    number: int
    namespace: str
    name: str
    decl: Table | None
    indexes: dict[str, Index] = field(default_factory=dict)
    _plan: _WritePlan | None = field(default=None, repr=False, compare=False)
    """The compiled write plan of ``indexes`` (rebuilt when the index map is replaced)."""
    _plain: PlainValidator | None | bool = field(default=False, repr=False, compare=False)
    """``plain``, once looked up (``False``: not yet)."""

    @property
    def creation_index(self) -> Index:
        """The built-in index that orders the table by creation time."""
        return self.indexes[CREATION_TIME_INDEX]

    def validate(self, body: dict[str, Any], context: Any) -> dict[str, Any]:
        """Validate a document body (no system fields) against the declared shape."""
        if self.decl is None:
            return body
        return self.decl.validate(self.name, body, context)

    @property
    def plain(self) -> PlainValidator | None:
        """The declared shape's one-pass validator (``Table.plain_validator``), if it has one."""
        plain = self._plain
        if plain is False:
            decl = self.decl
            plain = self._plain = None if decl is None else decl.plain_validator(self.name)
        return plain  # type: ignore[return-value]

    @property
    def plan(self) -> _WritePlan:
        """How this table's index entries are built (compiled once per index set)."""
        plan = self._plan
        if plan is None or plan.indexes is not self.indexes:
            plan = self._plan = _WritePlan(self.indexes)
        return plan

    def entries(self, doc: dict[str, Any]) -> list[tuple[int, bytes, bytes]]:
        """Every index entry of a document in this table, as (index id, key, value)."""
        return self.plan.entries(doc)


_KNOWN_MAX = 1024
"""Document versions whose entries a write plan remembers (``_WritePlan.remember``)."""
_KNOWN_BODY_MAX = 512
"""Bodies longer than this (bytes) are not remembered: at most about 1 MB per table."""


class _WritePlan:
    """A table's index maintenance, compiled: keys built in one pass over the indexes.

    Every b-tree key ends with the encoded creation time and id: they are encoded once per
    document, not once per index. ``fields`` names the top-level fields the indexes read, so a
    patch that changes none of them keeps the document's entries (``None``: some index may
    read any field).
    """

    __slots__ = ("indexes", "_btrees", "_others", "fields", "creation_id", "checks", "_known")

    def __init__(self, indexes: dict[str, Index]):
        self.indexes = indexes
        self._btrees: list[tuple[int, list[Callable[[dict[str, Any]], Any]]]] = []
        self._others: list[Index] = []
        self.creation_id: int | None = None
        """The creation order's index id: its entries are stored only for some documents
        (``core.indexes.creation``); ``entries`` still lists every document's, for read and
        write sets."""
        self.checks = [i for i in indexes.values() if type(i).check is not Index.check]
        """The indexes that refuse some documents (``Index.check``)."""
        fields: set[str] | None = set()
        for index in indexes.values():
            if is_creation_order(index):
                self.creation_id = index.id
            if type(index) is BTreeIndex:
                self._btrees.append((index.id, index.getters))
                if fields is not None:
                    fields.update(f.split(".", 1)[0] for f in index.fields)
            else:
                self._others.append(index)
                fields = None
        self.fields = None if fields is None else frozenset(fields)
        self._known: dict[str, tuple[bytes, list[tuple[int, bytes, bytes]]]] | None = (
            None if self._others else {}
        )
        """The entries of the versions this process last wrote, by document id, with the
        stored body they belong to: a read-modify-write of the same document (a counter, a
        rate limit) finds the entries of the version it read without computing them. Only
        for b-tree indexes (a vector index's entries are long)."""

    def stored_entries(
        self, doc_id: str, blob: bytes | None, doc: dict[str, Any]
    ) -> list[tuple[int, bytes, bytes]]:
        """``entries`` of a stored version: ``blob`` is its stored body (``None``: unknown)."""
        known = self._known
        if known is not None and blob is not None:
            found = known.get(doc_id)
            if found is not None and found[0] == blob:
                return found[1]
        return self.entries(doc)

    def remember(self, doc_id: str, blob: bytes, entries: list[tuple[int, bytes, bytes]]) -> None:
        """Keep the entries of a version about to be stored (see ``stored_entries``).

        Invariant: a remembered pair is only ever used for the exact body it was computed
        from, so a version that never commits (a conflict, a rollback) is merely unused.
        """
        known = self._known
        if known is not None and len(blob) <= _KNOWN_BODY_MAX:
            if len(known) >= _KNOWN_MAX:
                known.clear()
            known[doc_id] = (blob, entries)

    def entries(self, doc: dict[str, Any]) -> list[tuple[int, bytes, bytes]]:
        """Every entry of ``doc`` (with its system fields), as (index id, key, value)."""
        out: list[tuple[int, bytes, bytes]] = []
        if self._btrees:
            suffix = encode_suffix(doc["_creation_time"], doc["_id"])
            for index_id, getters in self._btrees:
                if not getters:
                    key = suffix
                elif len(getters) == 1:
                    key = encode_value(getters[0](doc)) + suffix
                else:
                    key = b"".join([encode_value(g(doc)) for g in getters]) + suffix
                out.append((index_id, key, b""))
        for index in self._others:
            index_id = index.id
            out.extend([(index_id, key, value) for key, value in index.entries(doc)])
        return out


@dataclass(slots=True, kw_only=True)
class ShapeReport:
    """How the stored documents of a table whose shape changed fit the declared shape."""

    info: TableInfo
    row: CatalogTable
    """The catalog row with the declared fingerprint, stored once every document fits."""
    total: int = 0
    to_fill: int = 0
    """Documents that fit once their defaults are stored (the backfill rewrites them)."""
    misfits: int = 0
    """Documents that do not fit at all (a migration, or an import, must change them)."""
    first: tuple[str, str, str] | None = None
    """The first misfit: (document id, field, what is wrong)."""
    migrations: list[str] = field(default_factory=list)
    """Pending migrations of the table, which may fix the misfits."""

    def error(self) -> SchemaMismatchError:
        """The refusal to open: how many documents do not fit, and what would fix them."""
        doc_id, where, detail = self.first or ("?", "?", "?")
        return SchemaMismatchError(
            table=self.info.name,
            document_id=doc_id,
            field=where,
            detail=detail,
            count=self.misfits,
            migrations=self.migrations,
        )

    def describe(self) -> str:
        """One line for logs and ``capsule migrate --status``."""
        where = f"{self.info.namespace}/" if self.info.namespace else ""
        parts = []
        if self.to_fill:
            parts.append(f"{self.to_fill:,} of {self.total:,} documents lack stored defaults")
        if self.misfits:
            fix = ", ".join(self.migrations) or "no pending migration"
            parts.append(f"{self.misfits:,} do not fit the schema ({fix})")
        return f"table {where}{self.info.name}: " + ("; ".join(parts) or "fits")


class TableSpace:
    """The tables one namespace can see; resolves names and ids within it."""

    def __init__(self, catalog: Catalog, namespace: str, schema: Schema):
        self.catalog = catalog
        self.namespace = namespace
        self.schema = schema
        self.tables: dict[str, TableInfo] = {}
        self._context = {"resolve_id": self.resolve_id}

    def table(self, name: str) -> TableInfo:
        """The table called ``name`` here; undeclared names are created when not strict."""
        info = self.tables.get(name)
        if info is not None:
            return info
        system = self.namespace == SYSTEM_NAMESPACE
        check_table_name(name, system=system)
        if name.startswith("_") and not system:
            raise InvalidValueError(f'Table "{name}" is a system table; use ctx.db.system.')
        if self.schema.strict:
            raise InvalidValueError(
                f'Table "{name}" is not in the schema'
                + (f' of component "{self.namespace}"' if self.namespace else "")
                + "; declare it, or use Schema(..., strict=False).",
                table=name,
            )
        return self.catalog.ensure_table(self, name)

    def resolve_id(self, value: str, table: str | None = None) -> Id:
        """Return ``value`` as an ``Id`` if it belongs to this space (and to ``table``)."""
        number = decode_table_number(value)
        info = self.catalog.by_number.get(number)
        if info is None:
            info = self.catalog.refresh_number(number)
        if info is None or info.namespace != self.namespace:
            where = f'table "{table}"' if table else "any table"
            where += f' of component "{self.namespace}"' if self.namespace else " of the app"
            raise InvalidIdError(f'"{value}" is not an id of {where}.', table=table)
        if table is not None and info.name != table:
            raise InvalidIdError(
                f'"{value}" is an id of table "{info.name}", not of table "{table}".', table=table
            )
        return value if type(value) is Id else Id(value)

    def validation_context(self) -> dict[str, Any]:
        """The pydantic context that lets ``Id["t"]`` fields check their table."""
        return self._context


class _OpenPlan:
    """What opening a schema changes in the catalog: new rows, dropped indexes, backfills."""

    def __init__(self, tables: list[CatalogTable], indexes: list[CatalogIndex]):
        self.known = {(t.namespace, t.name): t for t in tables}
        self.known_idx: dict[int, dict[str, CatalogIndex]] = {}
        for i in indexes:
            self.known_idx.setdefault(i.table, {})[i.name] = i
        self.next_table = max((t.number for t in tables), default=0) + 1
        self.next_index = max((i.id for i in indexes), default=0) + 1
        self.put_tables: list[CatalogTable] = []
        self.put_indexes: list[CatalogIndex] = []
        self.drop: list[int] = []
        self.backfill: list[tuple[TableInfo, list[Index]]] = []
        self.check_shape: list[tuple[TableInfo, CatalogTable]] = []

    def table(self, namespace: str, name: str, decl: Table | None) -> TableInfo:
        """The table as the schema declares it; records what must change for it."""
        fingerprint = decl.fingerprint(name) if decl else "schemaless"
        row = self.known.get((namespace, name))
        if row is None:
            row = CatalogTable(
                number=self.next_table, namespace=namespace, name=name, fingerprint=fingerprint
            )
            self.next_table += 1
            self.put_tables.append(row)
        info = TableInfo(number=row.number, namespace=namespace, name=name, decl=decl)
        if row.fingerprint != fingerprint:  # an existing table whose shape changed
            new = CatalogTable(
                number=row.number, namespace=namespace, name=name, fingerprint=fingerprint
            )
            if decl is None:
                self.put_tables.append(new)
            else:
                # Stored only once every document fits (now, or after a backfill).
                self.check_shape.append((info, new))
        self._indexes(info, decl)
        return info

    def _indexes(self, info: TableInfo, decl: Table | None) -> None:
        existing = self.known_idx.pop(info.number, {})
        specs: dict[str, Any] = {CREATION_TIME_INDEX: None}
        if decl is not None:
            specs.update(decl.indexes)
        new_indexes: list[Index] = []
        for iname, spec in specs.items():
            text = "btree:" if spec is None else spec.describe()
            old = existing.pop(iname, None)
            if old is not None and old.spec == text:
                index_id = old.id
            else:
                if old is not None:
                    self.drop.append(old.id)
                index_id = self.next_index
                self.next_index += 1
                self.put_indexes.append(
                    CatalogIndex(id=index_id, table=info.number, name=iname, spec=text)
                )
            index = build_index(spec, id=index_id, table=info.number, name=iname)
            info.indexes[iname] = index
            if old is None or old.spec != text:
                new_indexes.append(index)
        self.drop.extend(i.id for i in existing.values())
        if new_indexes:
            self.backfill.append((info, new_indexes))


class Catalog:
    """All table spaces of one database, with the persisted numbering."""

    def __init__(
        self, storage: Any, *, ensure: Callable[[TableSpace, str], TableInfo] | None = None
    ):
        self.storage = storage
        self.spaces: dict[str, TableSpace] = {}
        self.by_number: dict[int, TableInfo] = {}
        self.index_by_id: dict[int, tuple[TableInfo, Index]] = {}
        self._ensure = ensure
        """Creates a schemaless table on first use (the database's commit step provides it)."""
        self.version = 0
        """The stored catalog version these tables and indexes reflect."""
        self._reload_lock = threading.Lock()
        self.generation = 0
        """Bumped each time the maintained indexes change after open (``reload_indexes``):
        a transaction that started under an older generation computed its index entries for
        the old set, so it must not commit."""
        self.unsettled: dict[int, ShapeReport] = {}
        """Tables whose stored documents do not all fit the declared shape yet, by number."""

    def space(self, namespace: str) -> TableSpace:
        """The table space of a namespace."""
        try:
            return self.spaces[namespace]
        except KeyError:
            raise UserError(f'No table space "{namespace}" is open.') from None

    # -- open -------------------------------------------------------------------------------

    def open(
        self,
        w: WriteSession,
        schemas: dict[str, Schema],
        next_ts: Callable[[], int],
        *,
        pending: PendingFixes | None = None,
        defer: bool = False,
    ) -> None:
        """Create, check and backfill tables and indexes for ``schemas`` (one write session).

        Tables whose stored documents need defaults are left in ``unsettled`` for
        ``Database.settle``. ``pending`` names the migrations that may fix documents that do
        not fit; with ``defer`` such tables are left unsettled too instead of refused (to run
        migrations, or replace the documents by an import).

        Raises:
            SchemaMismatchError: stored documents do not fit a changed shape (not ``defer``).
        """
        tables, indexes = self.storage.load_catalog()
        plan = _OpenPlan(tables, indexes)
        for namespace, schema in schemas.items():
            space = TableSpace(self, namespace, schema)
            self.spaces[namespace] = space
            names = set(schema.tables)
            if not schema.strict:
                names |= {t.name for t in tables if t.namespace == namespace}
            for name in sorted(names):
                info = plan.table(namespace, name, schema.tables.get(name))
                space.tables[name] = info
                self.by_number[info.number] = info
        # Tables of spaces not opened now keep their data; they are simply not reachable.
        for t in tables:
            if t.number not in self.by_number:
                self.by_number.setdefault(
                    t.number,
                    TableInfo(number=t.number, namespace=t.namespace, name=t.name, decl=None),
                )
        self._reindex()
        # Drops first: a redefined index keeps its name under a new id, and (table, name) is
        # unique in the catalog.
        if plan.drop:
            w.put_catalog([], [], plan.drop)
        w.put_catalog(plan.put_tables, plan.put_indexes, [])
        snap = w.snapshot()
        self._check_shapes(w, snap, plan.check_shape, pending, defer)
        items = []
        for info, new in plan.backfill:
            writes = self._backfill(snap, info, new)
            if writes:
                items.append(CommitBatchItem(ts=next_ts(), writes=writes, log_record=_EMPTY_LOG))
        if plan.put_indexes or plan.drop:
            # Invariant: the catalog decides which indexes every writer maintains, not each
            # process's schema. Other processes (an older version of the app, during a
            # rolling deploy) read this record when they next commit and reload their
            # indexes; their transactions computed before it conflict and are retried.
            marker = WriteSet(catalog_changed=True).dump()
            items.append(CommitBatchItem(ts=next_ts(), writes=[], log_record=marker))
        if items:
            w.apply(items)
        self.version = w.snapshot().catalog_version

    def _check_shapes(
        self,
        w: WriteSession,
        snap: Snapshot,
        changed: list[tuple[TableInfo, CatalogTable]],
        pending: PendingFixes | None,
        defer: bool,
    ) -> None:
        """Survey each table whose shape changed; store the new shape of those that fit."""
        fixes: dict[tuple[str, str], list[str]] | None = None
        for info, row in changed:
            report = self.survey(snap, info, row)
            if report.misfits:
                if fixes is None:
                    fixes = pending(snap) if pending is not None else {}
                report.migrations = fixes.get((info.namespace, info.name), [])
                if not defer:
                    raise report.error()
            if report.misfits or report.to_fill:
                self.unsettled[info.number] = report
            else:
                w.put_catalog([row], [], [])

    def reload_indexes(self, version: int) -> None:
        """Maintain exactly the indexes the stored catalog has (another process changed it).

        ``version`` is the stored catalog version seen (by a snapshot or the commit step);
        nothing happens if the indexes already reflect it. Indexes this process's schema does
        not declare are built from their stored definitions; indexes the catalog no longer
        has stop being maintained (queries naming them fail). Each table's index map is
        replaced, not mutated, so a transaction staging a write meanwhile sees one
        consistent set (and conflicts at commit, as its generation is then old).
        """
        with self._reload_lock:
            if version > self.version:
                self._reload(version)

    def _reload(self, version: int) -> None:
        _, indexes = self.storage.load_catalog()
        rows: dict[int, list[CatalogIndex]] = {}
        for row in indexes:
            rows.setdefault(row.table, []).append(row)
        closed: list[Index] = []
        for info in self.by_number.values():
            if info.namespace not in self.spaces:
                continue  # a table space this process did not open: it never writes there
            current = {index.id: index for index in info.indexes.values()}
            fresh: dict[str, Index] = {}
            for row in sorted(rows.get(info.number, ()), key=lambda r: r.id):
                index = current.pop(row.id, None)
                if index is None:
                    spec = index_spec_from_text(row.name, row.spec)
                    index = build_index(spec, id=row.id, table=row.table, name=row.name)
                fresh[row.name] = index
            closed.extend(current.values())
            info.indexes = fresh
        self._reindex()
        self.version = version
        self.generation += 1
        for index in closed:
            index.close()

    def _reindex(self) -> None:
        self.index_by_id = {
            index.id: (info, index)
            for info in self.by_number.values()
            for index in info.indexes.values()
        }

    def _stored(self, snap: Snapshot, info: TableInfo) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every stored document of a table, read in creation order in batches.

        The creation-time index is only ever new together with its (empty) table, so it is
        complete for every table that has documents.
        """
        index = info.creation_index
        lo = b""
        while True:
            rows = scan_index(snap, index, lo, None, reverse=False, limit=512)
            for row in rows:
                yield row.doc.id, load_document(row.doc.data)
            if len(rows) < 512:
                return
            lo = rows[-1].key + b"\x00"

    def fit(self, info: TableInfo, doc: dict[str, Any]) -> dict[str, Any] | InvalidValueError:
        """The document as the declared shape stores it (defaults filled), or why it fails."""
        space = self.spaces[info.namespace]
        body = {k: v for k, v in doc.items() if not k.startswith("_")}
        try:
            valid = info.validate(body, space.validation_context())
        except InvalidValueError as exc:
            return exc
        if valid == body:
            return doc
        return {k: v for k, v in doc.items() if k.startswith("_")} | valid

    def survey(self, snap: Snapshot, info: TableInfo, row: CatalogTable) -> ShapeReport:
        """Check every stored document of a table against its declared shape."""
        report = ShapeReport(info=info, row=row)
        for doc_id, doc in self._stored(snap, info):
            report.total += 1
            fitted = self.fit(info, doc)
            if isinstance(fitted, InvalidValueError):
                report.misfits += 1
                if report.first is None:
                    detail = str(fitted).split(": ", 2)[-1].rstrip(".")
                    report.first = (doc_id, fitted.field or "?", detail)
            elif fitted is not doc:
                report.to_fill += 1
        return report

    def settle_step(
        self, snap: Snapshot, report: ShapeReport, after: bytes, limit: int
    ) -> tuple[list[DocumentWrite], WriteSet, int, int, bytes | None]:
        """Rewrite, with their defaults, the next ``limit`` documents after key ``after``.

        Returns the writes, their write set, how many documents were read and how many did
        not fit, and the key to continue after (``None``: the table is done).
        """
        info = report.info
        rows = scan_index(snap, info.creation_index, after, None, reverse=False, limit=limit)
        writes: list[DocumentWrite] = []
        ws = WriteSet()
        misfits = 0
        for row in rows:
            doc = load_document(row.doc.data)
            fitted = self.fit(info, doc)
            if isinstance(fitted, InvalidValueError):
                misfits += 1
                continue
            if fitted is doc:
                continue
            old = info.entries(doc)
            new = info.entries(fitted)
            creation_id = info.plan.creation_id
            writes.append(
                DocumentWrite(
                    id=row.doc.id,
                    table=info.number,
                    creation_time=row.doc.creation_time,
                    data=dump_document(fitted),
                    removed_entries=stored_keys([(i, k) for i, k, _ in old], creation_id),
                    added_entries=stored_entries(new, creation_id),
                )
            )
            ws.add(
                row.doc.id,
                info.number,
                info.name,
                [(i, k) for i, k, _ in old] + [(i, k) for i, k, _ in new],
            )
        nxt = rows[-1].key + b"\x00" if len(rows) == limit else None
        return writes, ws, len(rows), misfits, nxt

    def _backfill(
        self, snap: Snapshot, info: TableInfo, indexes: list[Index]
    ) -> list[DocumentWrite]:
        writes = []
        for doc_id, doc in self._stored(snap, info):
            added = [
                (ix.id, k, v)
                for ix in indexes
                for k, v in ix.entries(doc)
                if not is_creation_order(ix) or stored_key(k)
            ]
            writes.append(
                DocumentWrite(
                    id=doc_id,
                    table=info.number,
                    creation_time=doc["_creation_time"],
                    data=dump_document(doc),
                    added_entries=added,
                )
            )
        return writes

    # -- runtime changes ----------------------------------------------------------------------

    def ensure_table(self, space: TableSpace, name: str) -> TableInfo:
        """Create a schemaless table on first use (``Schema(strict=False)``)."""
        if self._ensure is None:
            raise UserError("The database is not open.")
        return self._ensure(space, name)

    def add_table(self, space: TableSpace, w: WriteSession, name: str) -> TableInfo:
        """Register a schemaless table inside a write session (called by the database)."""
        tables, indexes = self.storage.load_catalog()
        for t in tables:
            if t.namespace == space.namespace and t.name == name:
                row = t
                break
        else:
            row = CatalogTable(
                number=max((t.number for t in tables), default=0) + 1,
                namespace=space.namespace,
                name=name,
                fingerprint="schemaless",
            )
        idx = next((i for i in indexes if i.table == row.number), None)
        index_id = idx.id if idx else max((i.id for i in indexes), default=0) + 1
        w.put_catalog(
            [row],
            [CatalogIndex(id=index_id, table=row.number, name=CREATION_TIME_INDEX, spec="btree:")],
            [],
        )
        info = TableInfo(number=row.number, namespace=space.namespace, name=name, decl=None)
        info.indexes[CREATION_TIME_INDEX] = build_index(
            None, id=index_id, table=row.number, name=CREATION_TIME_INDEX
        )
        space.tables[name] = info
        self.by_number[info.number] = info
        self._reindex()
        return info

    def refresh_number(self, number: int) -> TableInfo | None:
        """Look up a table number another process may have created since we opened."""
        tables, indexes = self.storage.load_catalog()
        for t in tables:
            if t.number == number:
                space = self.spaces.get(t.namespace)
                if space is None:
                    info = TableInfo(number=t.number, namespace=t.namespace, name=t.name, decl=None)
                    self.by_number[number] = info
                    return info
                ix = next(
                    (i for i in indexes if i.table == number and i.name == CREATION_TIME_INDEX),
                    None,
                )
                info = TableInfo(number=number, namespace=t.namespace, name=t.name, decl=None)
                if ix is not None:
                    info.indexes[CREATION_TIME_INDEX] = build_index(
                        None, id=ix.id, table=number, name=CREATION_TIME_INDEX
                    )
                space.tables.setdefault(t.name, info)
                self.by_number[number] = space.tables[t.name]
                self._reindex()
                return self.by_number[number]
        return None

    def table_of(self, doc_id: str) -> TableInfo:
        """The table an id belongs to (any space)."""
        number = decode_table_number(doc_id)
        info = self.by_number.get(number) or self.refresh_number(number)
        if info is None:
            raise InvalidIdError(f'"{doc_id}" is not an id of any table.')
        return info


_EMPTY_LOG = b"\x94\x90\x90\x90\x80"  # msgpack of WriteSet() as dumped by readsets.WriteSet
