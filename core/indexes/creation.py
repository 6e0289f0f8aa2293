"""Owns the creation order: which of its entries are stored, and scans that read it by id.

Every table has the built-in creation-order index (``by_creation_time``), whose key for a
document is ``encode(_creation_time) + encode(_id)``. A document whose id carries its creation
time (every id made by ``new_id`` for a positive creation time) needs no stored entry: its
place in that order is its place in the documents table, which is keyed by id, and ids of one
table sort exactly as those keys do. Only the other documents keep a stored entry: those of a
database written before this layout (millisecond ids) and imported ones whose id does not
carry their creation time.

So a creation-order scan merges two sorted sources: the documents of the table in id order
(those whose id carries their time, with the key computed from the row) and the stored entries
of the index. The key space, the read sets and the cursors are the same as when every entry
was stored: transactions, conflicts and pagination see one index either way.

Invariant: a creation-order entry is stored exactly when ``stored_key(key)`` is true; every
write path (commits, backfills, settling defaults) drops the others before storage.
"""

from __future__ import annotations

import struct

from core.encoding import encode_value
from core.ids import TIME_CHARS, time_prefix
from core.indexes.base import Index
from core.indexes.btree import BTreeIndex
from core.storage.base import DocumentRow, IndexRow, Snapshot

_KEY_LENGTH = 46
"""A creation-order key: number tag, 8 time bytes, 2 residual bytes, string tag, id, end."""
_POSITIVE = 1 << 63
"""Time bits of ``+0.0``: ids that can carry their time start here within their table."""
_ALL_BITS = (1 << 64) - 1
_ZEROS = "0" * (32 - TIME_CHARS)
_ABOVE_IDS = "w"
"""Above every id (ids use ``0-9a-v``)."""
_pack_d = struct.Struct(">d").pack


def stored_key(key: bytes) -> bool:
    """Whether a creation-order entry with this key is stored (its id does not carry its time)."""
    if len(key) != _KEY_LENGTH or key[1] < 0x80 or key[9:12] != b"\x80\x00\x30":
        return True
    # Ids in keys are valid ids (checked when written), so the time characters parse.
    return int(key[12:28], 32) & _ALL_BITS != int.from_bytes(key[1:9], "big")


def stored_entries(
    entries: list[tuple[int, bytes, bytes]], creation_id: int | None
) -> list[tuple[int, bytes, bytes]]:
    """``entries`` without the creation-order entry that is not stored (index ``creation_id``)."""
    if creation_id is None:
        return entries
    return [e for e in entries if e[0] != creation_id or stored_key(e[1])]


def stored_keys(keys: list[tuple[int, bytes]], creation_id: int | None) -> list[tuple[int, bytes]]:
    """``keys`` (index id, key) without the creation-order key that is not stored."""
    if creation_id is None:
        return keys
    return [k for k in keys if k[0] != creation_id or stored_key(k[1])]


def _table_end(table: int) -> str:
    return time_prefix(table + 1, 0) + _ZEROS if table < 0xFFFF else _ABOVE_IDS


def id_bounds(table: int, lo: bytes, hi: bytes | None) -> tuple[str, str] | None:
    """The ids ``[lo, hi)`` of a table whose documents may have a key in ``[lo, hi)``.

    Conservative (a scan filters by key): documents whose ids carry their time have keys in
    the same order as their ids, and a key's time bytes are the id's. A bound that is a
    document's key (a scan or a page continuing after it) bounds the ids exactly, so a scan
    in batches reads no document twice. ``None``: no id can.
    """
    if lo[:1] > b"\x10":
        return None
    bits = _POSITIVE
    if lo[:1] == b"\x10":
        bits = max(bits, int.from_bytes(lo[1:9].ljust(8, b"\x00"), "big"))
    id_lo = time_prefix(table, bits) + _ZEROS
    exact = _key_id(table, lo)
    if exact is not None:  # ids from that document's (excluded if the key is below the bound)
        id_lo = max(id_lo, exact if lo[44:] <= b"\x00\x00" else exact + "0")
    if hi is None or hi[:1] > b"\x10":
        id_hi = _table_end(table)
    elif hi[:1] < b"\x10" or len(hi) == 1:
        return None
    else:
        top = int.from_bytes(hi[1:9].ljust(8, b"\xff"), "big")
        id_hi = _table_end(table) if top == _ALL_BITS else time_prefix(table, top + 1) + _ZEROS
        exact = _key_id(table, hi)
        if exact is not None:
            id_hi = min(id_hi, exact if hi[44:] <= b"\x00\x00" else exact + "0")
    if id_lo >= id_hi:
        return None
    return id_lo, id_hi


def _key_id(table: int, bound: bytes) -> str | None:
    """The id a bound names, if it is one that carries the bound's time in this table."""
    if len(bound) < 44 or bound[0] != 0x10 or bound[1] < 0x80 or bound[9:12] != b"\x80\x00\x30":
        return None
    doc_id = bound[12:44].decode("latin-1")
    if doc_id[:TIME_CHARS] != time_prefix(table, int.from_bytes(bound[1:9], "big")):
        return None
    return doc_id


def key_of(row: DocumentRow) -> bytes:
    """The creation-order key of a stored document."""
    return encode_value(row.creation_time) + encode_value(row.id)


def _carried_key(row: DocumentRow) -> bytes | None:
    """``key_of(row)`` if the row's id carries its creation time (else ``None``), quickly.

    Called for every row of a creation-order scan: the key is assembled from the id's own
    time bits instead of going through ``encode_value`` twice.
    """
    created = row.creation_time
    if created != created:  # NaN: the slow path canonicalizes it as keys do
        key = key_of(row)
        return None if stored_key(key) else key
    n = int.from_bytes(_pack_d(created + 0.0), "big")
    if n & _POSITIVE:
        return None  # a negative time: such ids keep a stored entry
    bits = n | _POSITIVE
    doc_id = row.id
    if int(doc_id[:TIME_CHARS], 32) & _ALL_BITS != bits:
        return None
    return (
        b"\x10" + bits.to_bytes(8, "big") + b"\x80\x00\x30" + doc_id.encode("ascii") + b"\x00\x00"
    )


def _by_id(
    snap: Snapshot, table: int, lo: bytes, hi: bytes | None, reverse: bool, limit: int
) -> list[IndexRow]:
    """Up to ``limit`` documents whose ids carry their time with keys in ``[lo, hi)``."""
    bounds = id_bounds(table, lo, hi)
    if bounds is None:
        return []
    id_lo, id_hi = bounds
    out: list[IndexRow] = []
    while True:
        want = limit - len(out)
        rows = snap.scan_documents(id_lo, id_hi, reverse=reverse, limit=want)
        for row in rows:
            key = _carried_key(row)
            if key is None or key < lo or (hi is not None and key >= hi):
                continue
            out.append(IndexRow(key=key, value=b"", doc=row))
        if len(out) >= limit or len(rows) < want:
            return out
        if reverse:
            id_hi = rows[-1].id
        else:
            id_lo = rows[-1].id + "0"  # just above it: every other id is 32 characters


def scan(
    snap: Snapshot,
    table: int,
    index_id: int,
    lo: bytes,
    hi: bytes | None,
    *,
    reverse: bool,
    limit: int,
) -> list[IndexRow]:
    """Up to ``limit`` rows of a table's creation order with ``lo <= key < hi``, in key order.

    What ``Snapshot.scan`` gives for an index whose entries are all stored.
    """
    by_id = _by_id(snap, table, lo, hi, reverse, limit)
    stored = snap.scan(index_id, lo, hi, reverse=reverse, limit=limit)
    if not stored:
        return by_id
    if not by_id:
        return stored
    merged = sorted({row.key: row for row in (*by_id, *stored)}.values(), key=_key, reverse=reverse)
    return merged[:limit]


def _key(row: IndexRow) -> bytes:
    return row.key


def is_creation_order(index: Index) -> bool:
    """Whether ``index`` is a table's built-in creation order (a b-tree over no fields)."""
    return type(index) is BTreeIndex and not index.fields


def scan_index(
    snap: Snapshot, index: Index, lo: bytes, hi: bytes | None, *, reverse: bool, limit: int
) -> list[IndexRow]:
    """``Snapshot.scan`` of any b-tree index, the creation order included."""
    if type(index) is BTreeIndex and not index.fields:
        return scan(snap, index.table, index.id, lo, hi, reverse=reverse, limit=limit)
    return snap.scan(index.id, lo, hi, reverse=reverse, limit=limit)
