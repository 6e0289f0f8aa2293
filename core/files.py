"""Owns file storage: ``ctx.files`` (store, get, signed URLs, uploads, delete), per table space.

Metadata lives in the ``_storage`` system table; blobs live on disk beside the database when
the storage has a folder for them (``Storage.files_dir()``, SQLite) and in the database
otherwise, as ``_storage_chunks`` documents. Each file belongs to the table space that stored
it (the app, or one mounted component instance): code of another space cannot read, sign or
delete it, even knowing its id.

Signed URLs are HMAC-SHA256 over what they allow (``get|<id>|<expiry>`` or
``upload|<namespace>|<nonce>|<expiry>``), with a secret from ``CAPSULE_FILE_URL_SECRET`` or,
when unset, a random one kept in ``_storage_keys`` so every process sharing the database
agrees. An upload URL's nonce is recorded in ``_storage_uploads`` in the same transaction that
records the file, so a second use is refused.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import hmac
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import anyio.to_thread

from core.config import FileSettings
from core.database.query import Query
from core.database.reader import DatabaseReader
from core.database.writer import DatabaseWriter
from core.errors import ForbiddenError, InvalidIdError, UserError
from core.ids import Id
from core.schema import Table
from core.services import Service

if TYPE_CHECKING:
    from core.database.engine import Database
    from core.database.transaction import Transaction
    from core.execution import Frame
    from core.runtime import Runtime

FILES_TABLE = "_storage"
CHUNKS_TABLE = "_storage_chunks"
UPLOADS_TABLE = "_storage_uploads"
KEYS_TABLE = "_storage_keys"
SYSTEM = "_system"

CHUNK_BYTES = 512 * 1024
"""Bytes of one ``_storage_chunks`` document (under the 1 MiB document limit)."""
CHUNKS_PER_TRANSACTION = 8
"""Chunks written or read per transaction (4 MiB, well under the 16 MiB limit)."""

request_base_url: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "capsule_request_base_url", default=None
)
"""The server's address as the current HTTP request reached it (set by ``core.server``)."""


def file_tables() -> dict[str, Table]:
    """The system tables file storage keeps (added to the ``_system`` table space)."""
    return {
        FILES_TABLE: Table(
            {
                "namespace": str,
                "content_type": str | None,
                "size": int,
                "sha256": str,
                "blob": str,
                "in_db": bool,
            }
        ).index("by_namespace", ["namespace"]),
        CHUNKS_TABLE: Table({"blob": str, "n": int, "data": bytes}).index("by_blob", ["blob", "n"]),
        UPLOADS_TABLE: Table({"nonce": str, "expires": float})
        .index("by_nonce", ["nonce"])
        .index("by_expires", ["expires"]),
        KEYS_TABLE: Table({"secret": bytes}),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class FileMetadata:
    """What is known about a stored file."""

    id: Id
    """The file's id (an id of the ``_storage`` system table)."""
    size: int
    """Length in bytes."""
    sha256: str
    """Hex SHA-256 digest of the content."""
    content_type: str | None
    """The MIME type given when it was stored, if any."""
    creation_time: float
    """When it was stored (seconds since the epoch)."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


class FileService(Service):
    """File storage of one runtime: blobs, metadata, and URL signing for every table space."""

    tables = file_tables()

    def __init__(self, runtime: Runtime, settings: FileSettings | None = None):
        super().__init__(runtime)
        self.db: Database = runtime.db
        self.executor = runtime.executor
        self.settings = settings or FileSettings.from_env()
        self._secret: bytes | None = (
            self.settings.url_secret.encode() if self.settings.url_secret else None
        )
        self._dir = self.db.storage.files_dir()

    def for_frame(self, frame: Frame) -> FileStorage:
        """``ctx.files`` of a function invocation (its table space's files only)."""
        return FileStorage(self, frame.namespace)

    # -- transactions over the system table space ----------------------------------------------

    def _write(self, label: str, body: Callable[[DatabaseWriter], Any]) -> Any:
        def attempt(txn: Transaction) -> Any:
            return body(DatabaseWriter(txn, self.db.space(SYSTEM)))

        return self.executor.run_transaction(attempt, label=f"files:{label}")

    def _read(self, body: Callable[[DatabaseReader], Any]) -> Any:
        txn = self.db.transaction(now=self.executor.clock.time())
        try:
            return body(DatabaseReader(txn, self.db.space(SYSTEM)))
        finally:
            txn.close()

    # -- blobs ----------------------------------------------------------------------------------

    def _blob_path(self, blob: str) -> str:
        if self._dir is None:  # pragma: no cover - only called for on-disk blobs
            raise UserError("This storage keeps no file folder.")
        return os.path.join(self._dir, blob[:2], blob)

    def _write_file(self, blob: str, data: bytes) -> None:
        path = self._blob_path(blob)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _put_blob(self, data: bytes) -> tuple[str, bool]:
        """Write a blob; return its name and whether it lives in the database."""
        blob = uuid.uuid4().hex
        if self._dir is not None:
            self._write_file(blob, data)
            return blob, False
        chunks = _chunks(data)
        for start in range(0, len(chunks), CHUNKS_PER_TRANSACTION):
            part = chunks[start : start + CHUNKS_PER_TRANSACTION]

            def put(db: DatabaseWriter, part: list[bytes] = part, start: int = start) -> None:
                for n, chunk in enumerate(part, start):
                    db.insert(CHUNKS_TABLE, {"blob": blob, "n": n, "data": chunk})

            self._write("put_chunks", put)
        return blob, True

    def _read_blob(self, blob: str, in_db: bool) -> bytes:
        if not in_db:
            with open(self._blob_path(blob), "rb") as f:
                return f.read()
        parts: list[bytes] = []
        while True:
            start = len(parts)

            def get(db: DatabaseReader, start: int = start) -> list[dict[str, Any]]:
                return _chunks_of(db, blob, start).take(CHUNKS_PER_TRANSACTION)

            docs = self._read(get)
            parts.extend(doc["data"] for doc in docs)
            if len(docs) < CHUNKS_PER_TRANSACTION:
                return b"".join(parts)

    def _drop_blob(self, blob: str, in_db: bool) -> None:
        if not in_db:
            try:
                os.unlink(self._blob_path(blob))
            except FileNotFoundError:
                pass
            return

        def drop(db: DatabaseWriter) -> int:
            docs = _chunks_of(db, blob).take(CHUNKS_PER_TRANSACTION * 4)
            for doc in docs:
                db.delete(doc["_id"])
            return len(docs)

        while self._write("drop_chunks", drop) == CHUNKS_PER_TRANSACTION * 4:
            pass

    # -- files ----------------------------------------------------------------------------------

    def store(
        self,
        namespace: str,
        data: bytes,
        content_type: str | None,
        record: Callable[[DatabaseWriter], None] | None = None,
    ) -> Id:
        """Keep ``data`` as a file of ``namespace``; ``record`` runs in the same transaction."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise UserError(f"ctx.files.store() takes bytes, not {type(data).__name__}.")
        data = bytes(data)
        blob, in_db = self._put_blob(data)
        meta = {
            "namespace": namespace,
            "content_type": content_type,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "blob": blob,
            "in_db": in_db,
        }

        def insert(db: DatabaseWriter) -> Id:
            if record is not None:
                record(db)
            return db.insert(FILES_TABLE, meta)

        try:
            file_id: Id = self._write("store", insert)
        except BaseException:
            self._drop_blob(blob, in_db)
            raise
        return file_id

    def _owned(self, db: DatabaseReader, namespace: str, file_id: str) -> dict[str, Any] | None:
        """The metadata of a file of ``namespace`` (``None`` if deleted)."""
        system = self.db.space(SYSTEM)
        file_id = system.resolve_id(file_id, FILES_TABLE)
        doc = db.get(file_id)
        if doc is not None and doc["namespace"] != namespace:
            where = f'component "{namespace}"' if namespace else "the app"
            raise InvalidIdError(f'"{file_id}" is not an id of a file of {where}.')
        return doc

    def metadata(self, namespace: str, file_id: str) -> FileMetadata | None:
        """Size, digest and content type of a file of ``namespace``, or ``None``."""
        doc = self._read(lambda db: self._owned(db, namespace, file_id))
        return None if doc is None else _metadata(doc)

    def read(self, namespace: str, file_id: str) -> bytes | None:
        """The content of a file of ``namespace``, or ``None`` if there is none."""
        doc = self._read(lambda db: self._owned(db, namespace, file_id))
        return None if doc is None else self._read_blob(doc["blob"], doc["in_db"])

    def read_any(self, file_id: str) -> tuple[bytes, str | None] | None:
        """Content and type of any file (for URLs the server already verified)."""
        system = self.db.space(SYSTEM)
        doc = self._read(lambda db: db.get(system.resolve_id(file_id, FILES_TABLE)))
        if doc is None:
            return None
        return self._read_blob(doc["blob"], doc["in_db"]), doc["content_type"]

    def delete(self, namespace: str, file_id: str) -> None:
        """Delete a file of ``namespace`` (no error if it is already gone)."""

        def remove(db: DatabaseWriter) -> dict[str, Any] | None:
            doc = self._owned(db, namespace, file_id)
            if doc is not None:
                db.delete(doc["_id"])
            return doc

        doc = self._write("delete", remove)
        if doc is not None:
            # The metadata is gone first, so a crash here leaves only an unreachable blob.
            self._drop_blob(doc["blob"], doc["in_db"])

    # -- signing ----------------------------------------------------------------------------------

    def secret(self) -> bytes:
        """The URL-signing key (configured, or kept in ``_storage_keys``)."""
        if self._secret is None:

            def ensure(db: DatabaseWriter) -> bytes:
                doc = db.query(KEYS_TABLE).first()
                if doc is not None:
                    return bytes(doc["secret"])
                secret = os.urandom(32)
                db.insert(KEYS_TABLE, {"secret": secret})
                return secret

            self._secret = self._write("secret", ensure)
        return self._secret

    def _sign(self, message: str) -> str:
        return _b64(hmac.new(self.secret(), message.encode(), hashlib.sha256).digest())

    def _check(self, message: str, sig: str, expires: str, what: str) -> None:
        try:
            deadline = int(expires)
        except ValueError:
            raise ForbiddenError(f"This {what} URL is malformed.") from None
        if not hmac.compare_digest(self._sign(message), sig):
            raise ForbiddenError(f"This {what} URL's signature is not valid.")
        if self.executor.clock.time() > deadline:
            raise ForbiddenError(f"This {what} URL has expired; ask for a new one.")

    def _base(self) -> str:
        return request_base_url.get() or self.settings.public_url or ""

    def url(self, namespace: str, file_id: str, expires_in: float | None = None) -> str | None:
        """A signed, expiring URL serving a file of ``namespace`` (``None`` if there is none)."""
        if self.metadata(namespace, file_id) is None:
            return None
        ttl = self.settings.url_seconds if expires_in is None else expires_in
        expires = str(int(self.executor.clock.time() + ttl))
        sig = self._sign(f"get|{file_id}|{expires}")
        return f"{self._base()}/api/storage/{file_id}?" + urlencode({"exp": expires, "sig": sig})

    def check_url(self, file_id: str, params: dict[str, str]) -> None:
        """Refuse a file URL that is forged or expired.

        Raises:
            ForbiddenError: naming what is wrong.
        """
        expires = params.get("exp", "")
        self._check(f"get|{file_id}|{expires}", params.get("sig", ""), expires, "file")

    def upload_url(self, namespace: str, expires_in: float | None = None) -> str:
        """A signed URL accepting one ``POST`` of a file for ``namespace``."""
        ttl = self.settings.upload_seconds if expires_in is None else expires_in
        expires = str(int(self.executor.clock.time() + ttl))
        nonce = uuid.uuid4().hex
        sig = self._sign(f"upload|{namespace}|{nonce}|{expires}")
        query = urlencode({"ns": namespace, "nonce": nonce, "exp": expires, "sig": sig})
        return f"{self._base()}/api/storage/upload?{query}"

    def check_upload(self, params: dict[str, str]) -> None:
        """Refuse an upload URL that is forged or expired (not yet whether it was used).

        Raises:
            ForbiddenError: naming what is wrong.
        """
        namespace, nonce, expires = (params.get(k, "") for k in ("ns", "nonce", "exp"))
        message = f"upload|{namespace}|{nonce}|{expires}"
        self._check(message, params.get("sig", ""), expires, "upload")

    def accept_upload(self, params: dict[str, str], data: bytes, content_type: str | None) -> Id:
        """Store an uploaded file if its URL is genuine, unexpired and not used before.

        Raises:
            ForbiddenError: a forged, expired or already used upload URL.
        """
        self.check_upload(params)
        namespace, nonce, expires = (params.get(k, "") for k in ("ns", "nonce", "exp"))
        now = self.executor.clock.time()

        def claim(db: DatabaseWriter) -> None:
            # Reading the nonce's index range makes a concurrent second use conflict, and its
            # retry then sees the first use.
            used = db.query(UPLOADS_TABLE).with_index("by_nonce", lambda q: q.eq("nonce", nonce))
            if used.first() is not None:
                raise ForbiddenError("This upload URL was already used; ask for a new one.")
            db.insert(UPLOADS_TABLE, {"nonce": nonce, "expires": float(expires)})
            stale = (
                db.query(UPLOADS_TABLE)
                .with_index("by_expires", lambda q: q.lt("expires", now))
                .take(16)
            )
            for doc in stale:
                db.delete(doc["_id"])

        return self.store(namespace, data, content_type, record=claim)

    def discard_all(self, txn: Transaction, limit: int) -> tuple[int, list[str]]:
        """Delete up to ``limit`` files inside ``txn`` (imports with ``--replace``).

        Returns how many went and the on-disk blobs to remove once ``txn`` has committed.
        """
        writer = DatabaseWriter(txn, self.db.space(SYSTEM))
        docs = writer.query(FILES_TABLE).take(limit)
        on_disk = []
        for doc in docs:
            writer.delete(doc["_id"])
            if not doc["in_db"]:
                on_disk.append(doc["blob"])
                continue
            for chunk in _chunks_of(writer, doc["blob"]).collect():
                writer.delete(chunk["_id"])
        return len(docs), on_disk

    def drop_blobs(self, blobs: list[str]) -> None:
        """Remove on-disk blobs no metadata refers to any more."""
        for blob in blobs:
            self._drop_blob(blob, False)

    def restore(self, txn: Transaction, meta: dict[str, Any], data: bytes) -> Callable[[], None]:
        """Put back an exported file, keeping its id, inside ``txn`` (imports only).

        ``meta`` holds ``_id``, ``_creation_time``, ``namespace`` and ``content_type``. Returns
        what undoes the blob if the import fails.
        """
        blob = uuid.uuid4().hex
        system = self.db.space(SYSTEM)
        in_db = self._dir is None
        if in_db:
            for n, chunk in enumerate(_chunks(data)):
                txn.insert(system, CHUNKS_TABLE, {"blob": blob, "n": n, "data": chunk})
        else:
            self._write_file(blob, data)
        body = {
            "namespace": meta.get("namespace", ""),
            "content_type": meta.get("content_type"),
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "blob": blob,
            "in_db": in_db,
        }
        txn.insert_with_id(
            system,
            FILES_TABLE,
            body,
            doc_id=meta.get("_id"),  # type: ignore[arg-type]  # checked by insert_with_id
            creation_time=meta.get("_creation_time"),  # type: ignore[arg-type]
        )
        return lambda: None if in_db else self._drop_blob(blob, False)


def _chunks_of(db: DatabaseReader, blob: str, start: int = 0) -> Query:
    """The ``_storage_chunks`` documents of a blob, from chunk number ``start`` on."""
    return db.query(CHUNKS_TABLE).with_index(
        "by_blob", lambda q: q.eq("blob", blob).gte("n", start)
    )


def _chunks(data: bytes) -> list[bytes]:
    """``data`` cut into ``_storage_chunks`` documents (one, empty, for an empty file)."""
    return [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]


def _metadata(doc: dict[str, Any]) -> FileMetadata:
    return FileMetadata(
        id=Id(doc["_id"]),
        size=doc["size"],
        sha256=doc["sha256"],
        content_type=doc["content_type"],
        creation_time=doc["_creation_time"],
    )


class FileStorage:
    """``ctx.files`` in an action: the files of the calling app or component instance."""

    __slots__ = ("_service", "_namespace")

    def __init__(self, service: FileService, namespace: str):
        self._service = service
        self._namespace = namespace

    async def store(self, data: bytes, content_type: str | None = None) -> Id:
        """Keep ``data``; return the new file's id."""
        return await anyio.to_thread.run_sync(
            self._service.store, self._namespace, data, content_type
        )

    async def get(self, id: str) -> bytes | None:
        """The file's content, or ``None`` if it was deleted."""
        return await anyio.to_thread.run_sync(self._service.read, self._namespace, id)

    async def get_metadata(self, id: str) -> FileMetadata | None:
        """The file's size, SHA-256 and content type, or ``None``."""
        return await anyio.to_thread.run_sync(self._service.metadata, self._namespace, id)

    async def get_url(self, id: str, *, expires_in: float | None = None) -> str | None:
        """A signed URL serving the file until it expires (``None`` if there is no file).

        Absolute when the call came over HTTP or ``CAPSULE_PUBLIC_URL`` is set; otherwise a
        path on the server (``/api/storage/...``).
        """
        return await anyio.to_thread.run_sync(self._service.url, self._namespace, id, expires_in)

    async def generate_upload_url(self, *, expires_in: float | None = None) -> str:
        """A signed URL accepting one ``POST`` of a file; it answers ``{"storageId": id}``."""
        return await anyio.to_thread.run_sync(self._service.upload_url, self._namespace, expires_in)

    async def delete(self, id: str) -> None:
        """Delete the file (no error if it is already gone)."""
        await anyio.to_thread.run_sync(self._service.delete, self._namespace, id)
