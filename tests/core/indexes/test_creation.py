"""The creation-order scan over an in-memory snapshot: it must equal a scan of every entry."""

from __future__ import annotations

import bisect

from hypothesis import given, settings
from hypothesis import strategies as st

from core.encoding import encode_value
from core.ids import new_id
from core.indexes import creation
from core.storage.base import DocumentRow, IndexRow, Snapshot

TABLE = 5
INDEX = 9


class MemorySnapshot(Snapshot):
    """Documents by id and stored entries, as storage keeps them."""

    def __init__(self, docs: list[DocumentRow], stored: list[tuple[bytes, DocumentRow]]):
        self.ts = 1
        self.docs = sorted(docs, key=lambda d: d.id)
        self.ids = [d.id for d in self.docs]
        self.stored = sorted(stored, key=lambda e: e[0])
        self.keys = [k for k, _ in self.stored]

    def get(self, doc_id: str) -> DocumentRow | None:
        return next((d for d in self.docs if d.id == doc_id), None)

    def scan(
        self, index_id: int, lo: bytes, hi: bytes | None, *, reverse: bool, limit: int
    ) -> list[IndexRow]:
        assert index_id == INDEX
        start = bisect.bisect_left(self.keys, lo)
        end = len(self.keys) if hi is None else bisect.bisect_left(self.keys, hi)
        rows = [IndexRow(key=k, value=b"", doc=d) for k, d in self.stored[start:end]]
        return (rows[::-1] if reverse else rows)[:limit]

    def scan_documents(self, lo: str, hi: str, *, reverse: bool, limit: int) -> list[DocumentRow]:
        rows = self.docs[bisect.bisect_left(self.ids, lo) : bisect.bisect_left(self.ids, hi)]
        return (rows[::-1] if reverse else rows)[:limit]

    def scan_entries(
        self, index_id: int, lo: bytes, hi: bytes | None, *, limit: int
    ) -> list[tuple[bytes, bytes, str]]:
        return [
            (r.key, r.value, r.doc.id)
            for r in self.scan(index_id, lo, hi, reverse=False, limit=limit)
        ]

    def close(self) -> None:
        pass


times = st.one_of(
    st.sampled_from([1.0, 2.0, 2.5, 1_700_000_000.0]),
    st.floats(min_value=-5.0, max_value=5.0),
)
docs_strategy = st.lists(
    st.tuples(times, st.sampled_from(["new", "old", "other time"])), min_size=0, max_size=25
)


def build(spec: list[tuple[float, str]]) -> tuple[MemorySnapshot, list[bytes]]:
    docs, stored = [], []
    for created, kind in spec:
        if kind == "new":
            doc_id = new_id(TABLE, created)
        elif kind == "old":  # the previous layout: milliseconds of another clock
            doc_id = new_id(TABLE, -1.0 - abs(created))
        else:  # an import whose id carries another time
            doc_id = new_id(TABLE, created + 0.25)
        row = DocumentRow(id=doc_id, table=TABLE, creation_time=created, data=b"")
        key = encode_value(created) + encode_value(doc_id)
        docs.append(row)
        if creation.stored_key(key):
            stored.append((key, row))
    for doc_id in (new_id(TABLE - 1, 2.0), new_id(TABLE + 1, 2.0)):  # neighbouring tables
        docs.append(DocumentRow(id=doc_id, table=0, creation_time=2.0, data=b""))
    keys = sorted(encode_value(d.creation_time) + encode_value(d.id) for d in docs[:-2])
    return MemorySnapshot(docs, stored), keys


def bounds_from(keys: list[bytes]) -> st.SearchStrategy[bytes]:
    around = [k + s for k in keys for s in (b"", b"\x00", b"\xff")] + [k[:-2] for k in keys]
    fixed = [b"", b"\x02", b"\x10", b"\x10\x80", b"\x10\xc0", b"\x11", encode_value(2.0)]
    return st.sampled_from(around + fixed) if around else st.sampled_from(fixed)


@settings(max_examples=300, deadline=None)
@given(docs_strategy, st.data())
def test_a_creation_scan_equals_a_scan_of_every_key(
    spec: list[tuple[float, str]], data: st.DataObject
) -> None:
    snap, keys = build(spec)
    lo = data.draw(bounds_from(keys))
    hi = data.draw(st.none() | bounds_from(keys))
    reverse = data.draw(st.booleans())
    limit = data.draw(st.integers(1, 30))
    want = [k for k in keys if lo <= k and (hi is None or k < hi)]
    want = (want[::-1] if reverse else want)[:limit]
    got = creation.scan(snap, TABLE, INDEX, lo, hi, reverse=reverse, limit=limit)
    assert [r.key for r in got] == want
    assert all(r.key == creation.key_of(r.doc) for r in got)
