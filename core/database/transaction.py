"""Owns ``Transaction``: a snapshot, a read set, buffered writes, savepoints and limits.

Reads go to one storage snapshot (taken lazily, at the first read) overlaid with the
transaction's own buffered writes, so a mutation sees what it wrote. Writes are buffered as the
new state of each document; nothing reaches storage until the commit step applies them.

Invariant: ``writes`` maps each written document id to its newest state in this transaction,
and ``_undo`` lists, in order, the state each write replaced, so rolling back to a savepoint
restores exactly the writes made before it. Reads are never rolled back: what a rolled-back
nested call read still counts for conflict detection.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from core.database.readsets import KeyRange, ReadSet, WriteSet
from core.encoding import dump_document, load_document
from core.errors import InvalidValueError, LimitExceededError, UserError
from core.ids import Id, new_id
from core.indexes.creation import scan_index, stored_entries, stored_keys
from core.storage.base import DocumentWrite, Snapshot
from core.values import (
    MAX_DOCUMENT_BYTES,
    SYSTEM_FIELDS,
    UNSET,
    check_document,
    check_top_level_names,
)

if TYPE_CHECKING:
    from core.database.catalog import TableInfo, TableSpace
    from core.database.engine import Database
    from core.indexes.base import Index
    from core.indexes.text import SearchQuery, SearchResult, TextIndex

MAX_SCANNED = 32_000
MAX_WRITTEN = 16_000
MAX_BYTES = 16 << 20
_ABOVE_ALL_KEYS = b"\xff"


class PendingWrite:
    """The newest state of one document written by a transaction."""

    __slots__ = ("id", "table", "doc", "blob", "base_entries", "entries", "size")

    def __init__(
        self,
        *,
        id: str,
        table: TableInfo,
        doc: dict[str, Any] | None,
        blob: bytes | None,
        base_entries: list[tuple[int, bytes, bytes]],
        entries: list[tuple[int, bytes, bytes]],
        size: int,
    ):
        self.id = id
        self.table = table
        self.doc = doc
        self.blob = blob
        self.base_entries = base_entries
        self.entries = entries
        self.size = size


def _load(data: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = load_document(data)
    doc["_id"] = Id(doc["_id"])
    return doc


class Transaction:
    """One attempt of a query or mutation against the database."""

    def __init__(self, db: Database, *, snapshot: Snapshot | None = None, now: float = 0.0):
        self.db = db
        self.now = now
        self.catalog_gen = db.catalog.generation
        """The catalog generation this transaction computes index entries under."""
        self.reads = ReadSet()
        self.writes: dict[str, PendingWrite] = {}
        self._undo: list[tuple[str, PendingWrite | None, int, int]] = []
        self._snapshot = snapshot
        self._owns_snapshot = snapshot is None
        self._ts: int | None = None if snapshot is None else snapshot.ts
        self._closed = False
        self.scanned = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self._seen: dict[str, bytes] = {}
        """Stored bodies this transaction read (by id or scan), so reading a document again
        (a ``get``, or the re-read of a ``patch``) needs no storage round trip."""
        self.after_commit: list[Any] = []
        """Callbacks run once the transaction commits (e.g. waking the scheduler)."""

    # -- snapshot -------------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        """The storage snapshot, begun at the first read."""
        snap = self._snapshot
        if snap is None:
            if self._closed:
                # A snapshot begun now would never be released (and would pin SQLite's WAL).
                raise UserError(
                    "This transaction has ended: ctx.db (and queries made with it) can only be "
                    "used while its function runs."
                )
            snap = self._snapshot = self.db.begin_read()
            self._ts = snap.ts
            if not self.writes:
                # Nothing staged yet: the indexes as of this snapshot (it may have reloaded
                # them) are the ones every write of this transaction will maintain.
                self.catalog_gen = self.db.catalog.generation
        return snap

    @property
    def open_snapshot(self) -> Snapshot | None:
        """The snapshot, if one was begun and is still open (owned by this transaction)."""
        return self._snapshot if self._owns_snapshot else None

    @property
    def snapshot_ts(self) -> int | None:
        """The snapshot's commit timestamp (kept after ``close``); ``None`` if nothing was read."""
        return self._ts

    def close(self) -> None:
        """Release the snapshot (idempotent); the transaction cannot read afterwards."""
        self._closed = True
        snap, self._snapshot = self._snapshot, None
        if snap is not None and self._owns_snapshot:
            self.db.end_read(snap)

    # -- limits ---------------------------------------------------------------------------

    def _count_read(self, nbytes: int) -> None:
        self.scanned += 1
        self.bytes_read += nbytes
        if self.scanned > MAX_SCANNED:
            raise LimitExceededError(
                f"This transaction scanned more than {MAX_SCANNED:,} documents; the limit is "
                f"{MAX_SCANNED:,}. Use an index range or paginate.",
                limit="documents_scanned",
                maximum=MAX_SCANNED,
                actual=self.scanned,
            )
        if self.bytes_read > MAX_BYTES:
            raise LimitExceededError(
                f"This transaction read {self.bytes_read:,} bytes; the limit is 16 MiB "
                f"({MAX_BYTES:,} bytes).",
                limit="bytes_read",
                maximum=MAX_BYTES,
                actual=self.bytes_read,
            )

    def _count_write(self, nbytes: int) -> None:
        if len(self.writes) >= MAX_WRITTEN:
            raise LimitExceededError(
                f"This transaction writes more than {MAX_WRITTEN:,} documents; the limit is "
                f"{MAX_WRITTEN:,}.",
                limit="documents_written",
                maximum=MAX_WRITTEN,
                actual=len(self.writes) + 1,
            )
        if self.bytes_written + nbytes > MAX_BYTES:
            raise LimitExceededError(
                f"This transaction writes {self.bytes_written + nbytes:,} bytes; the limit is "
                f"16 MiB ({MAX_BYTES:,} bytes).",
                limit="bytes_written",
                maximum=MAX_BYTES,
                actual=self.bytes_written + nbytes,
            )

    # -- reads ----------------------------------------------------------------------------

    def get(
        self, space: TableSpace, doc_id: str, table: str | None = None
    ) -> dict[str, Any] | None:
        """The document with this id as this transaction sees it, or ``None``."""
        return self._get(space.resolve_id(doc_id, table))

    def _get(self, doc_id: Id) -> dict[str, Any] | None:
        """``get`` of an id already resolved in the caller's table space."""
        self.reads.add_doc(doc_id)
        pw = self.writes.get(doc_id)
        if pw is not None:
            return None if pw.blob is None else _load(pw.blob)
        data = None if self._closed else self._seen.get(doc_id)
        if data is None:
            row = self.snapshot.get(doc_id)
            if row is None:
                return None
            data = self._seen[doc_id] = row.data
        self._count_read(len(data))
        return _load(data)

    def scan(
        self, info: TableInfo, index: Index, lo: bytes, hi: bytes | None, *, reverse: bool
    ) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """Documents of an index range ``[lo, hi)`` in key order, with own writes overlaid.

        The read set grows as the caller consumes: it covers exactly the keys handed out (all
        of ``[lo, hi)`` once the scan is exhausted), so stopping early keeps conflicts narrow.
        """
        self.reads.tables[index.id] = info.name
        rng = self.reads.add_range(
            KeyRange(index.id, _ABOVE_ALL_KEYS, hi) if reverse else KeyRange(index.id, lo, lo)
        )
        mine: list[tuple[bytes, PendingWrite]] = []
        skip: set[str] = set()
        for pw in self.writes.values():
            if pw.table is info:
                skip.add(pw.id)
                if pw.blob is not None:
                    for idx, key, _ in pw.entries:
                        if idx == index.id and lo <= key and (hi is None or key < hi):
                            mine.append((key, pw))
        mine.sort(key=lambda kp: kp[0], reverse=reverse)
        pos = 0
        snap = self.snapshot
        cur_lo, cur_hi = lo, hi
        batch = 32
        while True:
            rows = scan_index(snap, index, cur_lo, cur_hi, reverse=reverse, limit=batch)
            for row in rows:
                key = row.key
                while pos < len(mine) and (
                    (mine[pos][0] > key) if reverse else (mine[pos][0] < key)
                ):
                    pkey, pw = mine[pos]
                    pos += 1
                    self._advance(rng, pkey, reverse)
                    yield pkey, _load(pw.blob)  # type: ignore[arg-type]
                data = row.doc.data
                self._count_read(len(data))
                if row.doc.id in skip:
                    continue
                self._seen[row.doc.id] = data
                self._advance(rng, key, reverse)
                yield key, _load(data)
            if len(rows) < batch:
                break
            if reverse:
                cur_hi = rows[-1].key
            else:
                cur_lo = rows[-1].key + b"\x00"
            batch = min(batch * 4, 1024)
        while pos < len(mine):
            pkey, pw = mine[pos]
            pos += 1
            self._advance(rng, pkey, reverse)
            yield pkey, _load(pw.blob)  # type: ignore[arg-type]
        # Exhausted: the whole interval was observed.
        rng.lo, rng.hi = lo, hi

    def lookup(
        self, info: TableInfo, index: Index, lo: bytes, hi: bytes | None, limit: int
    ) -> list[dict[str, Any]]:
        """The first ``limit`` documents of an index range: ``scan`` for point reads.

        A point read (every field of an index given, ``unique()`` / ``first()``) wants one or
        two rows: one storage statement, no generator, and the same read set a scan consumed
        as far would record. With own writes in the table, or in creation order, it is the
        scan itself.
        """
        own_writes = any(pw.table is info for pw in self.writes.values())
        # The creation order is mostly not stored as entries (the documents' ids carry it):
        # only ``scan`` merges the documents' key range with the stored entries.
        if own_writes or index.id == info.creation_index.id:
            out: list[dict[str, Any]] = []
            for _, doc in self.scan(info, index, lo, hi, reverse=False):
                out.append(doc)
                if len(out) >= limit:
                    break
            return out
        self.reads.tables[index.id] = info.name
        rows = self.snapshot.scan(index.id, lo, hi, reverse=False, limit=limit)
        if len(rows) < limit:
            # Exhausted: the whole interval was observed.
            self.reads.add_range(KeyRange(index.id, lo, hi))
        else:
            self.reads.add_range(KeyRange(index.id, lo, rows[-1].key + b"\x00"))
        docs = []
        for row in rows:
            data = row.doc.data
            self._count_read(len(data))
            self._seen[row.doc.id] = data
            docs.append(_load(data))
        return docs

    def search(self, info: TableInfo, index: TextIndex, query: SearchQuery) -> SearchResult:
        """Rank documents of a search index as this transaction sees them.

        The index reads its postings at the snapshot and overlays this transaction's own
        writes; the key ranges it consulted (its terms and prefix) join the read set.
        """
        pending = [
            (pw.id, [(k, v) for i, k, v in pw.entries if i == index.id])
            for pw in self.writes.values()
            if pw.table is info
        ]
        result = index.search(query, db=self.db, snapshot=self.snapshot, pending=pending)
        self.reads.tables[index.id] = info.name
        for lo, hi in result.ranges:
            self.reads.add_range(KeyRange(index.id, lo, hi))
        return result

    @staticmethod
    def _advance(rng: KeyRange, key: bytes, reverse: bool) -> None:
        if reverse:
            rng.lo = key
        else:
            rng.hi = key + b"\x00"

    # -- writes ---------------------------------------------------------------------------

    def _stage(
        self,
        info: TableInfo,
        doc_id: str,
        doc: dict[str, Any] | None,
        size: int,
        stored: dict[str, Any] | None,
        *,
        same_entries: bool = False,
    ) -> None:
        """Buffer the new state of a document; ``stored`` is its version at the snapshot.

        ``same_entries``: the change left every indexed field as it was, so the document's
        entries are the ones it has now (not computed again).
        """
        plan = info.plan
        prev = self.writes.get(doc_id)
        if prev is not None:
            base_entries = prev.base_entries
            current = prev.entries
        elif stored is None:
            base_entries = current = []
        else:
            base_entries = current = plan.stored_entries(doc_id, self._seen.get(doc_id), stored)
        self._count_write(size)
        self._undo.append((doc_id, prev, self.bytes_written, len(self.writes)))
        self.bytes_written += size
        blob = None
        if doc is None:
            entries: list[tuple[int, bytes, bytes]] = []
        else:
            if same_entries and (prev is not None or stored is not None):
                entries = current
            else:
                entries = plan.entries(doc)
            blob = dump_document(doc)
            if stored is not None:
                # A rewrite of a stored version: likely rewritten again (a counter, a limit).
                # Inserts are not remembered: kept alive, their entries cost the collector.
                plan.remember(doc_id, blob, entries)
        self.writes[doc_id] = PendingWrite(
            id=doc_id,
            table=info,
            doc=doc,
            blob=blob,
            base_entries=base_entries,
            entries=entries,
            size=size,
        )

    def _document(
        self, info: TableInfo, space: TableSpace, value: Any, doc_id: str, creation_time: float
    ) -> tuple[dict[str, Any], int]:
        """Check and validate a body; return the full document and its size."""
        if not isinstance(value, dict):
            raise InvalidValueError(
                f'A document for table "{info.name}" must be a dict, not {type(value).__name__}.',
                table=info.name,
            )
        for key in SYSTEM_FIELDS:
            if key in value:
                raise InvalidValueError(
                    f'Field "{key}" of table "{info.name}" is set by the database; leave it out.',
                    table=info.name,
                    field=key,
                )
        plain = info.plain
        if plain is not None and type(value) is dict and type(creation_time) is float:
            # One pass over the common shapes; ``None``: the full path decides (and words
            # the error).
            fast = plain(value, space.validation_context())
            if fast is not None and doc_id.isascii():
                body, size = fast
                # The object's braces, "_id" and "_creation_time" (names and values).
                size += 2 + 4 + len(doc_id) + 2 + 15 + 9
                if size <= MAX_DOCUMENT_BYTES:
                    doc = {"_id": doc_id, "_creation_time": creation_time, **body}
                    for index in info.plan.checks:
                        index.check(doc, table=info.name)
                    return doc, size
        # Names first, so a "$" or "_" field is refused as such rather than as an unknown field
        # of the shape; the full walk (types, limits, size) runs once, on what is stored.
        check_top_level_names(value, table=info.name)
        body = info.validate(value, space.validation_context())
        doc = {"_id": doc_id, "_creation_time": creation_time, **body}
        size = check_document(doc, table=info.name, names_checked=True)
        for index in info.indexes.values():
            index.check(doc, table=info.name)
        return doc, size

    def insert(self, space: TableSpace, table: str, value: Any) -> Id:
        """Buffer a new document; return its id."""
        info = space.table(table)
        creation_time = self.db.creation_time(self.now)
        doc_id = new_id(info.number, creation_time)
        doc, size = self._document(info, space, value, doc_id, creation_time)
        self._stage(info, doc_id, doc, size, None)
        return doc_id

    def insert_with_id(
        self, space: TableSpace, table: str, value: Any, *, doc_id: str, creation_time: float
    ) -> Id:
        """Buffer a document that keeps a given id and creation time (imports only).

        Privileged: app code never reaches it. The id must be one of ``table`` and not taken.
        """
        info = space.table(table)
        doc_id = space.resolve_id(doc_id, table)
        if self.get(space, doc_id) is not None:
            raise InvalidValueError(
                f'Document "{doc_id}" already exists in table "{table}".', table=table
            )
        if isinstance(creation_time, bool) or not isinstance(creation_time, int | float):
            raise InvalidValueError(
                f'"_creation_time" must be a number of seconds, not {creation_time!r}.',
                table=table,
                field="_creation_time",
            )
        doc, size = self._document(info, space, value, doc_id, float(creation_time))
        self._stage(info, doc_id, doc, size, None)
        return doc_id

    def _current(
        self, space: TableSpace, doc_id: str, op: str
    ) -> tuple[TableInfo, dict[str, Any], dict[str, Any] | None]:
        """The table, current version and stored version (None if new here) of a document."""
        doc_id = space.resolve_id(doc_id)
        info = self.db.catalog.table_of(doc_id)
        current = self._get(doc_id)
        if current is None:
            raise InvalidValueError(
                f'Cannot {op} document "{doc_id}" of table "{info.name}": it does not exist.',
                table=info.name,
            )
        return info, current, None if doc_id in self.writes else current

    def _rewrite(
        self,
        space: TableSpace,
        info: TableInfo,
        current: dict[str, Any],
        stored: dict[str, Any] | None,
        body: Any,
        *,
        same_entries: bool = False,
    ) -> None:
        doc, size = self._document(info, space, body, current["_id"], current["_creation_time"])
        self._stage(info, current["_id"], doc, size, stored, same_entries=same_entries)

    def patch(self, space: TableSpace, doc_id: str, fields: Any) -> None:
        """Shallow-merge ``fields`` into a document (``UNSET`` removes a field)."""
        if not isinstance(fields, dict):
            raise InvalidValueError(f"patch() takes a dict of fields, not {type(fields).__name__}.")
        info, current, stored = self._current(space, doc_id, "patch")
        for key in SYSTEM_FIELDS:
            if key in fields and fields[key] != current[key]:
                raise InvalidValueError(
                    f'Field "{key}" of table "{info.name}" cannot be changed.',
                    table=info.name,
                    field=key,
                )
        indexed = info.plan.fields
        same = indexed is not None and indexed.isdisjoint(fields)
        if self._patch_fields(space, info, current, stored, fields, same):
            return
        body = {k: v for k, v in current.items() if k not in SYSTEM_FIELDS}
        for key, value in fields.items():
            if key in SYSTEM_FIELDS:
                continue
            if value is UNSET:
                body.pop(key, None)
            else:
                body[key] = value
        self._rewrite(space, info, current, stored, body, same_entries=same)

    def _patch_fields(
        self,
        space: TableSpace,
        info: TableInfo,
        current: dict[str, Any],
        stored: dict[str, Any] | None,
        fields: dict[str, Any],
        same: bool,
    ) -> bool:
        """Stage a patch validating only the fields it changes; ``False`` if it cannot.

        Invariant: the other fields of ``current`` fit the table's shape (stored documents of
        a settled table fit it, and so does everything this transaction wrote), so checking
        the changed fields alone accepts and refuses exactly what validating the whole
        document would. Tables still being settled (documents that may not fit, or lack
        stored defaults), removals and undeclared names take the whole-document path.
        """
        decl = info.decl
        if decl is None or info.number in self.db.catalog.unsettled:
            return False
        changed = {k: v for k, v in fields.items() if k not in SYSTEM_FIELDS}
        if any(v is UNSET for v in changed.values()):
            return False
        check_top_level_names(changed, table=info.name)
        valid = decl.validate_fields(info.name, changed, space.validation_context())
        if valid is None:
            return False
        # Every declared field is in a validated document, so updating in place keeps the
        # field order (and the stored bytes) what a whole validation would produce.
        doc = {**current, **valid}
        size = check_document(doc, table=info.name, names_checked=True)
        if not same:
            for index in info.indexes.values():
                index.check(doc, table=info.name)
        self._stage(info, current["_id"], doc, size, stored, same_entries=same)
        return True

    def replace(self, space: TableSpace, doc_id: str, value: Any) -> None:
        """Replace a document's body, keeping its id and creation time."""
        info, current, stored = self._current(space, doc_id, "replace")
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if not (k in SYSTEM_FIELDS and v == current[k])}
        self._rewrite(space, info, current, stored, value)

    def delete(self, space: TableSpace, doc_id: str) -> None:
        """Delete a document."""
        info, current, stored = self._current(space, doc_id, "delete")
        self._stage(info, current["_id"], None, 0, stored)

    # -- savepoints -----------------------------------------------------------------------

    def savepoint(self) -> int:
        """A mark to roll back to; nested component calls take one each."""
        return len(self._undo)

    def rollback_to(self, mark: int) -> None:
        """Undo every write made after ``mark`` (reads stay recorded)."""
        while len(self._undo) > mark:
            doc_id, prev, bytes_written, _ = self._undo.pop()
            self.bytes_written = bytes_written
            if prev is None:
                self.writes.pop(doc_id, None)
            else:
                self.writes[doc_id] = prev

    # -- commit ---------------------------------------------------------------------------

    def commit_writes(self) -> tuple[list[DocumentWrite], WriteSet]:
        """The storage writes and the write set of everything buffered."""
        writes: list[DocumentWrite] = []
        ws = WriteSet()
        for pw in self.writes.values():
            # The creation-order entry stays in the write set (readers of that order conflict
            # with it) but is stored only for an id that does not carry its creation time.
            creation_id = pw.table.plan.creation_id
            if not pw.base_entries:  # an insert: nothing to remove, every entry is new
                removed: list[tuple[int, bytes]] = []
                touched: Any = [(i, k) for i, k, _ in pw.entries]
                added = stored_entries(pw.entries, creation_id)
            elif pw.entries is pw.base_entries:  # no indexed field changed
                removed, added = [], []
                # Readers of these keys saw the old version: the keys still count as written.
                touched = [(i, k) for i, k, _ in pw.entries]
            else:
                old = {(i, k): v for i, k, v in pw.base_entries}
                new = {(i, k): v for i, k, v in pw.entries}
                removed = stored_keys([ik for ik in old if ik not in new], creation_id)
                added = stored_entries(
                    [(i, k, v) for (i, k), v in new.items() if old.get((i, k)) != v], creation_id
                )
                touched = {*old, *new}
            writes.append(
                DocumentWrite(
                    id=pw.id,
                    table=pw.table.number,
                    creation_time=0.0 if pw.doc is None else pw.doc["_creation_time"],
                    data=pw.blob,
                    removed_entries=removed,
                    added_entries=added,
                )
            )
            ws.add(pw.id, pw.table.number, pw.table.name, touched)
        return writes, ws
