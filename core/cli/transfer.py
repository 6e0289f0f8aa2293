"""Owns ``capsule import`` and ``capsule export``: JSONL / CSV / JSON tables and snapshots.

An export (a folder or a ``.zip``) holds one ``<table>/documents.jsonl`` per app table (a
component's tables under ``_components/<mount path>/``), ``_tables.jsonl`` (each table's
number, which every id embeds) and, with ``--include-files``, ``_storage/documents.jsonl`` and
one ``_storage/<id>`` blob per file. Documents are in the JSON wire format, with ``_id`` and
``_creation_time``, all read at one snapshot.

Imports are all or nothing: every batch of documents is its own transaction, but all of them
commit in one storage transaction (``Database.run_exclusive_batches``), so a bad line leaves
the database as it was, and the error names the file and the line. Documents are validated
against the app's schema; ``_id`` and ``_creation_time`` are kept when present. ``--replace``
is the way out of a schema change the stored documents do not fit: the app opens anyway,
the incoming documents are validated against its (new) schema, and the import commits only if
every table fits it afterwards. Importing a
snapshot into an empty database gives every table the number it had, so every id (references
between documents included) stays valid.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import zipfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from core.app import App
from core.cli.formats import READERS, Record, jsonl_records
from core.cli.stored import StoredDatabase
from core.database.transaction import Transaction
from core.database.writer import DatabaseWriter
from core.errors import CapsuleError, InvalidValueError, UserError
from core.files import FILES_TABLE
from core.ids import new_id
from core.runtime import Runtime
from core.storage import open_storage
from core.storage.base import CatalogTable
from core.system_tables import SYSTEM_NAMESPACE
from core.values import to_json

BATCH_DOCUMENTS = 2000
BATCH_BYTES = 8 << 20
"""A batch stops at this many documents or bytes (the transaction limits are 16,000 / 16 MiB)."""
LOCK_TIMEOUT = 60.0
TABLES_FILE = "_tables.jsonl"
FILES_DIR = "_storage"


def progress(what: str) -> Progress:
    """A progress bar on a terminal's stderr; silent when stderr is piped."""
    console = Console(stderr=True)
    return Progress(
        TextColumn(what),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=True,
    )


# -- export ----------------------------------------------------------------------------------


class _Output:
    """A folder or a zip file being written."""

    def __init__(self, path: str):
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
            raise UserError(f'"{path}" already exists; export to a new folder or .zip file.')
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise UserError(
                f'Cannot export to "{path}": folder "{os.path.dirname(path)}" does not exist; '
                "create it first."
            )
        if path.endswith(".zip"):
            self._zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED)
        else:
            os.makedirs(path, exist_ok=True)

    def open(self, name: str) -> IO[bytes]:
        if self._zip is not None:
            return self._zip.open(name, "w", force_zip64=True)
        full = os.path.join(self.path, *name.split("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        return open(full, "wb")

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def table_folder(namespace: str, name: str) -> str:
    """Where a table's documents go in an export."""
    if namespace == SYSTEM_NAMESPACE:
        return name
    return f"_components/{namespace}/{name}" if namespace else name


def _line(doc: dict[str, Any]) -> bytes:
    return json.dumps(to_json(doc), ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def export(url: str, path: str, *, include_files: bool = False) -> int:
    """Write every app and component table (and files) at one snapshot; return documents."""
    out = _Output(path)
    written = 0
    try:
        with StoredDatabase(url) as db, progress("exporting") as bar:
            task = bar.add_task("export", total=None)
            tables = db.user_tables()
            for t in tables:
                with out.open(f"{table_folder(t.namespace, t.name)}/documents.jsonl") as f:
                    for doc in db.documents(t):
                        data = _line(doc)
                        f.write(data)
                        written += 1
                        bar.advance(task, len(data))
            if include_files:
                keep = ("_id", "_creation_time", "namespace", "content_type", "size", "sha256")
                index = []
                for meta, blob in db.files():
                    with out.open(f"{FILES_DIR}/{meta['_id']}") as f:
                        f.write(blob)
                    index.append(_line({k: meta[k] for k in keep}))
                    written += 1
                    bar.advance(task, len(blob))
                with out.open(f"{FILES_DIR}/documents.jsonl") as f:
                    f.writelines(index)
                with contextlib.suppress(UserError):
                    tables.append(db.table(FILES_TABLE, SYSTEM_NAMESPACE))
            with out.open(TABLES_FILE) as f:
                for t in tables:
                    row = {"namespace": t.namespace, "name": t.name, "number": t.number}
                    f.write(json.dumps(row).encode() + b"\n")
    finally:
        out.close()
    return written


# -- writing imported documents ------------------------------------------------------------------


def _insert(txn: Transaction, runtime: Runtime, namespace: str, table: str, rec: Record) -> None:
    space = runtime.db.space(namespace)
    doc = dict(rec.doc)
    doc_id = doc.pop("_id", None)
    created = doc.pop("_creation_time", None)
    try:
        if doc_id is None and created is None:
            txn.insert(space, table, doc)
            return
        if created is None:
            created = runtime.db.creation_time()
        if doc_id is None:
            if isinstance(created, int | float) and not isinstance(created, bool):
                doc_id = new_id(space.table(table).number, created)
            else:  # refused by insert_with_id, which names the field
                doc_id = new_id(space.table(table).number, 0.0)
        elif not isinstance(doc_id, str):
            raise InvalidValueError(f'"_id" must be an id string, not {doc_id!r}.')
        txn.insert_with_id(space, table, doc, doc_id=doc_id, creation_time=created)
    except CapsuleError as exc:
        raise InvalidValueError(f"{rec.where}: {exc}", table=table) from None


class Batches:
    """The transactions of one import, made lazily as ``run_exclusive_batches`` asks."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.count = 0
        self.undo: list[Callable[[], None]] = []
        """Run if the import fails (blobs written to disk for it)."""
        self.dropped: list[str] = []
        """On-disk blobs of replaced files, removed once the import has committed."""

    def clear(self, namespace: str, table: str) -> Iterator[Callable[[Transaction], None]]:
        """Delete every document of a table (``--replace``)."""
        left = [True]

        def body(txn: Transaction) -> None:
            writer = DatabaseWriter(txn, self.runtime.db.space(namespace))
            docs = writer.query(table).take(BATCH_DOCUMENTS)
            for doc in docs:
                writer.delete(doc["_id"])
            left[0] = len(docs) == BATCH_DOCUMENTS

        while left[0]:
            yield body

    def require_empty(self, namespace: str, table: str) -> Iterator[Callable[[Transaction], None]]:
        """Refuse to import into a table that has documents (neither --append nor --replace)."""

        def body(txn: Transaction) -> None:
            writer = DatabaseWriter(txn, self.runtime.db.space(namespace))
            if writer.query(table).first() is not None:
                raise UserError(
                    f'Table "{table}" is not empty; pass --append to add to it or --replace to '
                    "replace its documents."
                )

        yield body

    def insert(
        self, namespace: str, table: str, records: Iterable[Record]
    ) -> Iterator[Callable[[Transaction], None]]:
        """Insert ``records`` into a table, a batch per transaction."""
        it = iter(records)
        pending: list[Record] = []

        def body(txn: Transaction) -> None:
            for rec in _take(pending, it, txn):
                _insert(txn, self.runtime, namespace, table, rec)
                self.count += 1

        while True:
            nxt = next(it, None)
            if nxt is None:
                return
            pending.append(nxt)
            yield body

    def check_fit(self) -> Iterator[Callable[[Transaction], None]]:
        """Last: refuse the import while a table holds documents that do not fit its schema.

        Opened with ``--replace``, tables whose stored documents did not fit were let open;
        after the import's batches (which this body sees) every document must fit, or none of
        the import commits.
        """
        catalog = self.runtime.db.catalog

        def body(txn: Transaction) -> None:
            for report in list(catalog.unsettled.values()):
                found = catalog.survey(txn.snapshot, report.info, report.row)
                if found.misfits:
                    found.migrations = report.migrations
                    raise found.error()

        if catalog.unsettled:
            yield body

    def clear_files(self) -> Iterator[Callable[[Transaction], None]]:
        """Delete every stored file (``--replace`` of an export that has files)."""
        left = [True]
        batch = max(BATCH_DOCUMENTS // 10, 1)

        def body(txn: Transaction) -> None:
            n, blobs = self.runtime.files.discard_all(txn, batch)
            self.dropped.extend(blobs)
            left[0] = n == batch

        while left[0]:
            yield body

    def files(
        self, members: Iterable[tuple[Record, bytes]]
    ) -> Iterator[Callable[[Transaction], None]]:
        """Put exported files back (ids kept)."""
        files = self.runtime.files

        for rec, data in members:

            def body(txn: Transaction, rec: Record = rec, data: bytes = data) -> None:
                try:
                    self.undo.append(files.restore(txn, rec.doc, data))
                except CapsuleError as exc:
                    raise InvalidValueError(f"{rec.where}: {exc}") from None
                self.count += 1

            yield body


def _take(pending: list[Record], it: Iterator[Record], txn: Transaction) -> Iterator[Record]:
    """The records of one batch: the one already read, then more while the batch has room."""
    yield pending.pop()
    n = 1
    while n < BATCH_DOCUMENTS and txn.bytes_written < BATCH_BYTES:
        rec = next(it, None)
        if rec is None:
            return
        n += 1
        yield rec


# -- import ---------------------------------------------------------------------------------------


def _runtime(
    app: App, url: str, numbers: list[CatalogTable] | None, mode: str = "create"
) -> Runtime:
    """Open ``app`` on ``url``; an empty database first gets the snapshot's table numbers.

    With ``--replace`` the app opens even while stored documents do not fit its schema (they
    are about to be replaced); the import then refuses to commit unless every table fits.
    """
    storage = open_storage(url)
    if numbers:
        storage.open()
        tables, _ = storage.load_catalog()
        if not tables:
            schemas = app.schemas()
            wanted = [
                t
                for t in numbers
                if t.namespace in schemas
                and (
                    t.name in schemas[t.namespace].tables
                    or t.namespace == SYSTEM_NAMESPACE
                    or not schemas[t.namespace].strict
                )
            ]
            with storage.begin_write() as w:
                w.put_catalog(wanted, [], [])
    runtime = app.make_runtime(storage)
    runtime.open(defer=mode == "replace")
    return runtime


def _commit(
    runtime: Runtime, batches: Batches, bodies: Iterable[Callable[[Transaction], None]]
) -> int:
    try:
        runtime.db.run_exclusive_batches(
            _chain(bodies, batches.check_fit()), now=runtime.clock.time(), timeout=LOCK_TIMEOUT
        )
    except BaseException:
        for undo in batches.undo:
            undo()
        raise
    else:
        runtime.files.drop_blobs(batches.dropped)
        runtime.db.settle()  # every table fits now: store their new shapes
    finally:
        # Close the readers now, while their files are open, not whenever they are collected.
        close = getattr(bodies, "close", None)
        if close is not None:
            close()
    return batches.count


def import_table(
    app: App, url: str, table: str, path: str, *, mode: str = "create", namespace: str = ""
) -> int:
    """Import one file into one table, all or nothing; return how many documents went in."""
    ext = os.path.splitext(path)[1].lower()
    reader = READERS.get(ext)
    if reader is None:
        raise UserError(f'Cannot import "{path}": use a .jsonl, .csv or .json file.')
    runtime = _runtime(app, url, None, mode)
    try:
        runtime.db.space(namespace).table(table)  # refuses unknown tables up front
        batches = Batches(runtime)
        size = os.path.getsize(path)
        with open(path, "rb") as stream, progress(f"importing {table}") as bar:
            task = bar.add_task("import", total=size)
            records = reader(os.path.basename(path), stream, lambda n: bar.advance(task, n))
            with contextlib.closing(records):
                first = (
                    batches.clear(namespace, table)
                    if mode == "replace"
                    else (iter(()) if mode == "append" else batches.require_empty(namespace, table))
                )
                bodies = _chain(first, batches.insert(namespace, table, records))
                return _commit(runtime, batches, bodies)
    finally:
        runtime.close()


def _chain(
    *parts: Iterable[Callable[[Transaction], None]],
) -> Iterator[Callable[[Transaction], None]]:
    for part in parts:
        yield from part


class _Snapshot:
    """An export being read back: a folder or a zip file."""

    def __init__(self, path: str):
        self.path = path
        self._zip = zipfile.ZipFile(path) if zipfile.is_zipfile(path) else None
        if self._zip is None and not os.path.isdir(path):
            raise UserError(f'"{path}" is neither an export folder nor a .zip export.')

    def exists(self, name: str) -> bool:
        if self._zip is not None:
            return name in self._zip.NameToInfo
        return os.path.exists(os.path.join(self.path, *name.split("/")))

    def open(self, name: str) -> IO[bytes]:
        if self._zip is not None:
            return self._zip.open(name)
        return open(os.path.join(self.path, *name.split("/")), "rb")

    def size(self) -> int:
        if self._zip is not None:
            return sum(i.file_size for i in self._zip.infolist())
        return sum(
            os.path.getsize(os.path.join(root, f))
            for root, _, files in os.walk(self.path)
            for f in files
        )

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def import_snapshot(app: App, url: str, path: str, *, mode: str = "create") -> int:
    """Import an export (folder or zip) into ``app``'s database, ids kept; all or nothing."""
    snap = _Snapshot(path)
    try:
        if not snap.exists(TABLES_FILE):
            raise UserError(f'"{path}" has no {TABLES_FILE}; is it a capsule export?')
        with snap.open(TABLES_FILE) as f:
            numbers = [
                CatalogTable(
                    number=row["number"],
                    namespace=row["namespace"],
                    name=row["name"],
                    fingerprint="imported",
                )
                for row in map(json.loads, f.read().decode().splitlines())
                if row
            ]
        runtime = _runtime(app, url, numbers, mode)
        try:
            return _import_tables(runtime, snap, numbers, mode)
        finally:
            runtime.close()
    finally:
        snap.close()


def _import_tables(
    runtime: Runtime, snap: _Snapshot, numbers: list[CatalogTable], mode: str
) -> int:
    for t in numbers:
        try:
            info = runtime.db.space(t.namespace).table(t.name)
        except (UserError, InvalidValueError):
            raise UserError(
                f'The export has table "{t.name}"'
                + (f' of "{t.namespace}"' if t.namespace else "")
                + " which this app does not declare."
            ) from None
        if info.number != t.number:
            raise UserError(
                f'Table "{t.name}" is number {info.number} in this database but {t.number} in '
                "the export, so the exported ids cannot be kept; import into a new, empty "
                "database."
            )
    batches = Batches(runtime)
    total = snap.size()
    with progress("importing") as bar:
        task = bar.add_task("import", total=total)

        def counter(n: int) -> None:
            bar.advance(task, n)

        def bodies() -> Iterator[Callable[[Transaction], None]]:
            for t in numbers:
                if t.namespace == SYSTEM_NAMESPACE:
                    continue
                if mode == "replace":
                    yield from batches.clear(t.namespace, t.name)
                elif mode == "create":
                    yield from batches.require_empty(t.namespace, t.name)
                member = f"{table_folder(t.namespace, t.name)}/documents.jsonl"
                if snap.exists(member):
                    with snap.open(member) as stream:
                        records = jsonl_records(member, stream, counter)
                        yield from batches.insert(t.namespace, t.name, records)
            files = f"{FILES_DIR}/documents.jsonl"
            if snap.exists(files):
                if mode == "replace":
                    yield from batches.clear_files()
                with snap.open(files) as stream:
                    metas = jsonl_records(files, stream, counter)
                    yield from batches.files(
                        (rec, _read(snap, f"{FILES_DIR}/{rec.doc.get('_id')}", rec, counter))
                        for rec in metas
                    )

        return _commit(runtime, batches, bodies())


def _read(snap: _Snapshot, name: str, rec: Record, counter: Callable[[int], None]) -> bytes:
    if not snap.exists(name):
        raise InvalidValueError(f"{rec.where}: the export has no blob {name}.")
    with snap.open(name) as f:
        data = f.read()
    counter(len(data))
    return data


# -- commands ------------------------------------------------------------------------------------


def add_parsers(commands: Any) -> None:
    """Register ``import`` and ``export``."""
    p = commands.add_parser(
        "import",
        help="import a table (.jsonl, .csv, .json) or a whole export (folder or .zip)",
        description="Imports are all or nothing: a bad line (named in the error) leaves the "
        "database as it was. This holds for --append too, however large the file: it is "
        "written in batches that commit together.",
    )
    p.add_argument("file", help="FILE.jsonl|.csv|.json with --table, else an export")
    p.add_argument("--table", help="the table to import FILE into")
    p.add_argument("--component", default="", help="the mount path of the table's component")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--append", action="store_true", help="add to the documents already there")
    mode.add_argument("--replace", action="store_true", help="delete the documents there first")
    p.add_argument(
        "--app", help="module:app whose schema validates the documents (default: CAPSULE_APP)"
    )
    p.add_argument("--db", help="database URL (default: CAPSULE_DB_URL)")
    p.set_defaults(handler=run_import)

    p = commands.add_parser("export", help="export every table (and files) to a folder or .zip")
    p.add_argument("--path", required=True, help="a new folder, or a FILE.zip")
    p.add_argument("--include-files", action="store_true", help="also export stored files")
    p.add_argument("--db", help="database URL (default: CAPSULE_DB_URL)")
    p.set_defaults(handler=run_export)


def documents(n: int) -> str:
    """``"1 document"``, ``"2,000 documents"``."""
    return f"{n:,} document{'' if n == 1 else 's'}"


def _require_input(path: str) -> None:
    if not os.path.exists(path):
        raise UserError(
            f'Cannot import "{path}": no such file or folder (in {os.getcwd()}); check the path.'
        )


def run_import(args: argparse.Namespace) -> int:
    """``capsule import``."""
    from core.cli.loading import choose_database, load_app
    from core.config import setting

    url = choose_database(args.db)
    target = args.app or setting("CAPSULE_APP")
    if not target:
        raise UserError("Name the app whose schema the import follows: --app module:app.")
    _require_input(args.file)
    app = load_app(target)
    mode = "append" if args.append else "replace" if args.replace else "create"
    if args.table:
        n = import_table(app, url, args.table, args.file, mode=mode, namespace=args.component)
    else:
        n = import_snapshot(app, url, args.file, mode=mode)
    print(f"imported {documents(n)}", file=sys.stderr)
    return 0


def run_export(args: argparse.Namespace) -> int:
    """``capsule export``."""
    from core.cli.loading import choose_database

    n = export(choose_database(args.db), args.path, include_files=args.include_files)
    print(f"exported {documents(n)} to {args.path}", file=sys.stderr)
    return 0
