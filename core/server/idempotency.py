"""Owns ``Idempotency-Key`` on mutation requests: the first result, kept, answers every retry.

The record is written by the mutation's own transaction (``before_commit``), so it exists
exactly when the mutation committed. Two concurrent requests with one key both read the key's
index range; whichever commits second conflicts, and its retry finds the record and answers
with the first result instead of running again. Keys are scoped to the caller's identity, and
a key reused for a different request (path or arguments) is refused. Records older than
``KEEP_SECONDS`` are pruned by the server in the background.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from core.auth import UserIdentity
from core.database.reader import DatabaseReader
from core.database.writer import DatabaseWriter
from core.errors import InvalidArgumentError, LimitExceededError
from core.execution import Abandoned
from core.system_tables import IDEMPOTENCY_KEYS
from core.values import MAX_DOCUMENT_BYTES, from_json, to_json

if TYPE_CHECKING:
    from core.database.transaction import Transaction
    from core.runtime import Runtime

TABLE = IDEMPOTENCY_KEYS
SYSTEM = "_system"
KEEP_SECONDS = 24 * 3600.0
"""How long a key's result is kept (retries come within minutes; a day leaves room)."""
MAX_KEY_LENGTH = 255
_MAX_KEPT_RESULT = MAX_DOCUMENT_BYTES - 4096


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        # surrogatepass: a path may hold unpaired surrogates (refused later, with a 400).
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


class _Replay(Abandoned):
    """Internal: the key was used by a mutation that committed first (abort this attempt)."""

    def __init__(self, record: dict[str, Any]):
        super().__init__("committed first under this Idempotency-Key; replying with its result")
        self.record = record


def _replay(record: dict[str, Any], request: str) -> Any:
    if record["request"] != request:
        raise InvalidArgumentError(
            "This Idempotency-Key was already used for a different request (another function "
            "or other arguments); use a new key for a new request."
        )
    if record["result"] is None:
        raise LimitExceededError(
            "The mutation already ran under this Idempotency-Key, but its result "
            f"({record['size']:,} bytes as JSON) was over the {_MAX_KEPT_RESULT:,} bytes kept "
            "for replies.",
            limit="idempotent_result_bytes",
            maximum=_MAX_KEPT_RESULT,
            actual=record["size"],
        )
    return from_json(json.loads(record["result"]))


def run_mutation(
    runtime: Runtime, path: str, args: Any, identity: UserIdentity | None, key: str
) -> Any:
    """Run a mutation under an idempotency key: once, however often it is asked.

    Raises:
        InvalidArgumentError: the key is malformed, or was used for another request.
    """
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidArgumentError(
            f"The Idempotency-Key header must hold 1 to {MAX_KEY_LENGTH} characters."
        )
    who = identity.token_identifier if identity is not None else ""
    scoped = _digest(who, key)
    request = _digest(path, json.dumps(to_json(args), sort_keys=True))
    db = runtime.db

    def find(reader: DatabaseReader) -> dict[str, Any] | None:
        q = reader.query(TABLE).with_index("by_key", lambda q: q.eq("key", scoped))
        return q.first()

    txn = db.transaction(now=runtime.clock.time())
    try:
        found = find(DatabaseReader(txn, db.space(SYSTEM)))
    finally:
        txn.close()
    if found is not None:
        return _replay(found, request)

    def record(txn: Transaction, result: Any) -> None:
        writer = DatabaseWriter(txn, db.space(SYSTEM))
        existing = find(writer)
        if existing is not None:
            raise _Replay(existing)
        text = json.dumps(to_json(result), separators=(",", ":"))
        size = len(text.encode())
        writer.insert(
            TABLE,
            {
                "key": scoped,
                "request": request,
                "result": text if size <= _MAX_KEPT_RESULT else None,
                "size": size,
                "created": txn.now,
            },
        )

    try:
        return runtime.executor.mutation(path, args, identity, before_commit=record)
    except _Replay as replay:
        return _replay(replay.record, request)


def prune(runtime: Runtime, *, batch: int = 256) -> int:
    """Delete kept results older than ``KEEP_SECONDS``; return how many went."""
    db = runtime.db
    cutoff = runtime.clock.time() - KEEP_SECONDS

    def attempt(txn: Transaction) -> int:
        writer = DatabaseWriter(txn, db.space(SYSTEM))
        old = (
            writer.query(TABLE)
            .with_index("by_created", lambda q: q.lt("created", cutoff))
            .take(batch)
        )
        for doc in old:
            writer.delete(doc["_id"])
        return len(old)

    total = 0
    while (n := runtime.executor.run_transaction(attempt, label="idempotency:prune")) > 0:
        total += n
        if n < batch:
            break
    return total
