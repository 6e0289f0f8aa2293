"""Owns the integrity check: whether stored documents, index entries and catalog agree.

``check_storage(storage)`` reads one snapshot of a database, without its app, and compares
what is stored with what the catalog says must be there: every index (b-tree, text and vector
alike, since all keep their entries beside the documents) must hold exactly the entries its
maintainer computes from the documents of its table, no more and no fewer (the creation order
stores entries only for documents whose id does not carry their creation time: the others are
read from the documents table in id order, see ``core.indexes.creation``); every document must
decode, carry its own id and creation time, and belong to a table of the catalog; no entry may
point at a document that is gone or belong to an index the catalog no longer has.

Nothing is written. ``capsule check`` prints the report and exits non-zero on any problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from core.encoding import load_document
from core.ids import decode_table_number
from core.indexes import Index, build_index
from core.indexes.creation import is_creation_order, stored_key
from core.schema import index_spec_from_text
from core.storage.base import CatalogIndex, CatalogTable, Snapshot, Storage
from core.storage.sqlite import SQLiteStorage

MAX_LISTED = 50
"""Problems listed in a report at most; the count covers all of them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Inconsistency:
    """One disagreement between stored things that must agree."""

    kind: str
    """``missing_entry``, ``stray_entry``, ``wrong_entry``, ``bad_document``,
    ``orphan_document``, ``orphan_body``, ``bad_index`` or ``unknown_index``."""
    table: str
    index: str = ""
    doc_id: str = ""
    detail: str = ""

    def __str__(self) -> str:
        where = self.table + (f".{self.index}" if self.index else "")
        doc = f" document {self.doc_id}" if self.doc_id else ""
        return f"{self.kind}: {where}{doc}: {self.detail}"


@dataclass(slots=True, kw_only=True)
class IntegrityReport:
    """What ``check_storage`` looked at and every inconsistency it found."""

    ts: int = 0
    """The commit timestamp of the snapshot checked."""
    tables: int = 0
    documents: int = 0
    indexes: int = 0
    entries: int = 0
    problems: list[Inconsistency] = field(default_factory=list)
    problem_count: int = 0
    """All problems found (``problems`` lists the first ``MAX_LISTED``)."""

    @property
    def ok(self) -> bool:
        """Whether nothing disagreed."""
        return self.problem_count == 0

    def add(self, problem: Inconsistency) -> None:
        """Record a problem (listed while fewer than ``MAX_LISTED`` are)."""
        self.problem_count += 1
        if len(self.problems) < MAX_LISTED:
            self.problems.append(problem)

    def summary(self) -> str:
        """One line: what was checked and how many problems."""
        verdict = "ok" if self.ok else f"{self.problem_count} problem(s)"
        return (
            f"{verdict}: {self.tables} tables, {self.documents} documents, {self.indexes} "
            f"indexes, {self.entries} index entries at ts {self.ts}"
        )


def check_closed_storage(storage: Storage) -> IntegrityReport:
    """Open ``storage`` (not open yet), check it at one snapshot, and close it again."""
    storage.open()
    try:
        return check_storage(storage)
    finally:
        storage.close()


def check_storage(storage: Storage) -> IntegrityReport:
    """Check an opened storage at one snapshot; never writes."""
    tables, indexes = storage.load_catalog()
    snap = storage.begin_read()
    try:
        checker = _Checker(snap, tables, indexes)
        checker.out_of_line_bodies = isinstance(storage, SQLiteStorage)
        return checker.run()
    finally:
        snap.close()


def _rows(snap: Snapshot, sql: str) -> Iterator[tuple[Any, ...]]:
    """Rows of a raw statement inside the snapshot's own read transaction.

    Both backends keep a DB-API connection on their snapshots and share table names, so the
    check reads exactly what the snapshot sees (and nothing the storage interface hides, such
    as documents no index points at).
    """
    conn = snap._conn  # type: ignore[attr-defined]
    yield from conn.execute(sql)


def _label(table: CatalogTable | None, number: int) -> str:
    if table is None:
        return f"#{number}"
    return f"{table.namespace}/{table.name}" if table.namespace else table.name


class _Checker:
    def __init__(self, snap: Snapshot, tables: list[CatalogTable], indexes: list[CatalogIndex]):
        self.snap = snap
        self.out_of_line_bodies = False
        """Whether the storage keeps long bodies apart (SQLite's ``bodies``)."""
        self.tables = {t.number: t for t in tables}
        self.by_table: dict[int, list[CatalogIndex]] = {}
        for row in indexes:
            self.by_table.setdefault(row.table, []).append(row)
        self.index_ids = {row.id for row in indexes}
        self.report = IntegrityReport(ts=snap.ts, tables=len(tables), indexes=len(indexes))

    def run(self) -> IntegrityReport:
        for number in sorted(self.tables):
            self._check_table(number)
        self._check_orphans()
        return self.report

    def _body(self, rid: int) -> bytes | None:
        """A long body or value stored out of line (SQLite's ``bodies``), if it is there."""
        row = next(_rows(self.snap, f"SELECT data FROM bodies WHERE rid = {int(rid)}"), None)
        return None if row is None else bytes(row[0])

    def _maintainers(self, number: int, label: str) -> list[Index]:
        out = []
        for row in sorted(self.by_table.get(number, ()), key=lambda r: r.id):
            try:
                spec = index_spec_from_text(row.name, row.spec)
            except Exception as exc:  # a catalog row no maintainer can be built from
                self.report.add(
                    Inconsistency(kind="bad_index", table=label, index=row.name, detail=str(exc))
                )
                continue
            out.append(build_index(spec, id=row.id, table=number, name=row.name))
        return out

    def _documents(self, number: int, label: str) -> Iterator[dict[str, Any]]:
        sql = f"SELECT id, ct, data FROM documents WHERE tbl = {int(number)} ORDER BY id"
        for doc_id, ct, data in _rows(self.snap, sql):
            self.report.documents += 1
            problem = None
            if isinstance(data, int):  # SQLite: a long body, stored out of line
                body = self._body(data)
                if body is None:
                    self.report.add(
                        Inconsistency(
                            kind="bad_document",
                            table=label,
                            doc_id=doc_id,
                            detail=f"its body (bodies row {data}) is missing",
                        )
                    )
                    continue
                data = body
            try:
                doc = load_document(bytes(data))
            except Exception as exc:
                problem = f"does not decode ({type(exc).__name__}: {exc})"
            else:
                if doc.get("_id") != doc_id:
                    problem = f"holds _id {doc.get('_id')!r}"
                elif doc.get("_creation_time") != ct:
                    problem = f"holds _creation_time {doc.get('_creation_time')!r}, stored {ct!r}"
                elif _table_number(doc_id) != number:
                    problem = f"its id names table #{_table_number(doc_id)}"
            if problem is not None:
                self.report.add(
                    Inconsistency(kind="bad_document", table=label, doc_id=doc_id, detail=problem)
                )
                continue
            yield doc

    def _check_table(self, number: int) -> None:
        label = _label(self.tables.get(number), number)
        maintainers = self._maintainers(number, label)
        expected: dict[int, dict[bytes, tuple[bytes, str]]] = {ix.id: {} for ix in maintainers}
        for doc in self._documents(number, label):
            for ix in maintainers:
                creation = is_creation_order(ix)
                for key, value in ix.entries(doc):
                    # The creation order is stored only for ids that do not carry their time.
                    if not creation or stored_key(key):
                        expected[ix.id][key] = (value, doc["_id"])
        for ix in maintainers:
            self._compare(label, ix, expected[ix.id])
            ix.close()

    def _compare(self, label: str, ix: Index, want: dict[bytes, tuple[bytes, str]]) -> None:
        sql = f"SELECT key, value, doc FROM index_entries WHERE idx = {int(ix.id)}"
        for key, value, doc_id in _rows(self.snap, sql):
            if isinstance(value, int):  # SQLite: a long value, stored out of line
                value = self._body(value) or b"(missing out-of-line value)"
            key, value = bytes(key), bytes(value)
            self.report.entries += 1
            found = want.pop(key, None)
            if found is None:
                self.report.add(
                    Inconsistency(
                        kind="stray_entry",
                        table=label,
                        index=ix.name,
                        doc_id=doc_id,
                        detail=f"entry {key.hex()[:40]} matches no document's current value",
                    )
                )
            elif found != (value, doc_id):
                self.report.add(
                    Inconsistency(
                        kind="wrong_entry",
                        table=label,
                        index=ix.name,
                        doc_id=doc_id,
                        detail=f"entry {key.hex()[:40]} holds another value or document",
                    )
                )
        for key, (_, doc_id) in want.items():
            self.report.add(
                Inconsistency(
                    kind="missing_entry",
                    table=label,
                    index=ix.name,
                    doc_id=doc_id,
                    detail=f"no entry {key.hex()[:40]} for the document",
                )
            )

    def _check_orphans(self) -> None:
        known = ",".join(str(n) for n in sorted(self.tables)) or "-1"
        sql = f"SELECT id, tbl FROM documents WHERE tbl NOT IN ({known})"
        for doc_id, number in _rows(self.snap, sql):
            self.report.documents += 1
            self.report.add(
                Inconsistency(
                    kind="orphan_document",
                    table=f"#{number}",
                    doc_id=doc_id,
                    detail="its table is not in the catalog",
                )
            )
        if self.out_of_line_bodies:
            sql = (
                "SELECT count(*) FROM bodies WHERE rid NOT IN "
                "(SELECT data FROM documents WHERE typeof(data) = 'integer') AND rid NOT IN "
                "(SELECT value FROM index_entries WHERE typeof(value) = 'integer')"
            )
            for (count,) in _rows(self.snap, sql):
                if count:
                    self.report.add(
                        Inconsistency(
                            kind="orphan_body",
                            table="?",
                            detail=f"{count} out-of-line bodies no document or entry points at",
                        )
                    )
        ids = ",".join(str(n) for n in sorted(self.index_ids)) or "-1"
        sql = f"SELECT idx, count(*) FROM index_entries WHERE idx NOT IN ({ids}) GROUP BY idx"
        for index_id, count in _rows(self.snap, sql):
            self.report.entries += int(count)
            self.report.add(
                Inconsistency(
                    kind="unknown_index",
                    table="?",
                    index=f"#{index_id}",
                    detail=f"{count} entries of an index the catalog does not have",
                )
            )
        for number in sorted(set(self.by_table) - set(self.tables)):
            for row in self.by_table[number]:
                self.report.add(
                    Inconsistency(
                        kind="bad_index",
                        table=f"#{number}",
                        index=row.name,
                        detail="the index belongs to no table of the catalog",
                    )
                )


def _table_number(doc_id: str) -> int | None:
    try:
        return decode_table_number(doc_id)
    except Exception:
        return None


def format_report(report: IntegrityReport) -> Iterable[str]:
    """The report as lines: each listed problem, then the summary."""
    for problem in report.problems:
        yield str(problem)
    if report.problem_count > len(report.problems):
        yield f"... and {report.problem_count - len(report.problems)} more"
    yield report.summary()


__all__ = [
    "Inconsistency",
    "IntegrityReport",
    "check_closed_storage",
    "check_storage",
    "format_report",
]
