"""Owns the postings cache: index key ranges decoded into arrays, kept snapshot-consistent.

A search reads whole key ranges of one index (a term's postings, the document lengths). Reading
them from storage on every query costs what the range costs, which for common terms is far
more than scoring them. This cache keeps each recently read range ("group") decoded in memory
at one commit timestamp (its *version*) and serves any snapshot from it:

* A commit listener logs, per cached group, every key a commit wrote (old and new keys, from the
  commit's write set) with the commit's timestamp, in timestamp order.
* A reader at snapshot ``ts`` takes the group's arrays at ``version`` and replaces the postings
  of every key logged between ``version`` and ``ts`` (in either direction) by what its own
  snapshot holds for that key (a point read). The result is exactly the range at ``ts``.
* A reader newer than the version installs its result as the new version.

Invariants:

* ``feed.seen`` is a timestamp through which every commit has been passed to the cache; a reader
  whose snapshot is newer (another process committed and this one has not caught up yet)
  reads storage directly and caches nothing.
* An entry's ``log`` holds every key of its group written by a commit with a timestamp above
  ``floor`` (and up to ``feed.seen``); readers older than ``floor`` read storage directly.
* A fresh entry is installed only if no commit between the reader's snapshot and ``feed.seen``
  wrote its group (checked against the recent-commit window), so its log starts complete.
* Arrays are never changed in place: a reader keeps using the ones it took.

Nothing here is recorded in read sets; the caller records the key ranges it searched.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from core.indexes.feed import CommitFeed

Row = tuple[bytes, bytes, str]
"""A raw index entry: (key, value, document id)."""

MAX_CACHED_POSTINGS = 8_000_000
"""Postings kept in memory per index, all groups together (least recently used go first)."""
RECENT_COMMITS = 4096
"""How many recent commits' written groups are remembered to validate fresh entries."""
_BATCH = 65_536
_MANY = 4096


class Ordinals:
    """Dense integer numbers for document ids (and each document's creation time).

    Postings refer to documents by ordinal so scores can be summed with ``np.bincount``.
    Ordinals are never reused; the cache starts a new table when too many are dead.
    """

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._of: dict[str, int] = {}
        self.created = np.zeros(1024, dtype=np.float64)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, ids: Sequence[str]) -> np.ndarray:
        """The ordinals of the ``ids`` already numbered (unknown ones are left out), ascending."""
        of = self._of
        found = [n for n in (of.get(i) for i in ids) if n is not None]
        return np.unique(np.array(found, dtype=np.int64))

    def intern(self, ids: Sequence[str], created: np.ndarray | Sequence[float]) -> np.ndarray:
        """The ordinals of ``ids`` (new ones are numbered in order); ``created`` their times."""
        of = self._of
        out = np.fromiter((of.get(i, -1) for i in ids), dtype=np.int64, count=len(ids))
        missing = np.flatnonzero(out < 0)
        if missing.size:
            with self._lock:
                for pos in missing.tolist():
                    doc = ids[pos]
                    n = of.get(doc)
                    if n is None:
                        n = of[doc] = len(self.ids)
                        self.ids.append(doc)
                        if n >= len(self.created):
                            grown = np.zeros(max(2 * len(self.created), n + 1), dtype=np.float64)
                            grown[: len(self.created)] = self.created
                            self.created = grown
                        self.created[n] = created[pos]
                    out[pos] = n
        return out


class Postings:
    """One key range decoded: document ordinals (ascending) and parallel columns."""

    __slots__ = ("ords", "cols", "_sums")

    def __init__(self, ords: np.ndarray, cols: tuple[np.ndarray, ...]):
        self.ords = ords
        self.cols = cols
        self._sums: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self.ords)

    @classmethod
    def build(cls, ords: np.ndarray, cols: tuple[np.ndarray, ...]) -> Postings:
        """Postings from unsorted ordinals (sorted here)."""
        if len(ords) > 1 and np.any(ords[1:] < ords[:-1]):
            order = np.argsort(ords, kind="stable")
            return cls(ords[order], tuple(c[order] for c in cols))
        return cls(ords, cols)

    def total(self, col: int) -> float:
        """The sum of one column (memoized: postings never change)."""
        s = self._sums.get(col)
        if s is None:
            s = self._sums[col] = float(self.cols[col].sum(dtype=np.float64))
        return s

    def without(self, ords: np.ndarray) -> Postings:
        """These postings minus those of the given documents."""
        if not len(ords) or not len(self.ords):
            return self
        pos = np.searchsorted(self.ords, ords)
        inside = pos < len(self.ords)
        pos = pos[inside]
        pos = pos[self.ords[pos] == ords[inside]]
        if not len(pos):
            return self
        keep = np.ones(len(self.ords), dtype=bool)
        keep[pos] = False
        return Postings(self.ords[keep], tuple(c[keep] for c in self.cols))

    def plus(self, other: Postings) -> Postings:
        """These postings and ``other``'s (for documents not already here)."""
        if not len(other):
            return self
        if not len(self):
            return other
        return Postings.build(
            np.concatenate([self.ords, other.ords]),
            tuple(np.concatenate([a, b]) for a, b in zip(self.cols, other.cols, strict=True)),
        )

    def select(self, mask: np.ndarray) -> Postings:
        """The postings where ``mask`` is true."""
        return Postings(self.ords[mask], tuple(c[mask] for c in self.cols))


def entry_batches(
    snap: Any, index_id: int, lo: bytes, hi: bytes | None, size: int
) -> Iterator[list[Row]]:
    """Every raw entry of ``[lo, hi)`` at a snapshot, in key order, ``size`` at a time."""
    while True:
        batch = snap.scan_entries(index_id, lo, hi, limit=size)
        yield batch
        if len(batch) < size:
            return
        lo = batch[-1][0] + b"\x00"


Decoder = Callable[[bytes, list[Row], Ordinals], Postings]
"""Decodes the rows of one group into postings: ``decode(group, rows, ordinals)``."""


class _Entry:
    __slots__ = ("postings", "version", "floor", "log")

    def __init__(self, postings: Postings, version: int, floor: int, log: list[tuple[int, bytes]]):
        self.postings = postings
        self.version = version
        self.floor = floor
        self.log = log


class PostingsCache:
    """Decoded key ranges of one index, valid at any snapshot (see the module docstring).

    Args:
        index_id: the index whose entries are cached.
        decode: turns the rows of a group into postings.
        group_of: the group a key belongs to (its range is ``[group, range_end(group))``).
        range_end: the exclusive upper bound of a group's key range.
    """

    def __init__(
        self,
        *,
        index_id: int,
        decode: Decoder,
        group_of: Callable[[bytes], bytes],
        range_end: Callable[[bytes], bytes | None],
        budget: int = MAX_CACHED_POSTINGS,
    ):
        self.index_id = index_id
        self._decode = decode
        self._group_of = group_of
        self._range_end = range_end
        self.budget = budget
        self.ordinals = Ordinals()
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._recent: deque[tuple[int, set[bytes] | None]] = deque()
        self._recent_floor = 0
        self.feed = CommitFeed(index_id, on_keys=self._on_keys, on_gap=self._on_gap)
        self.hits = 0
        self.loads = 0

    # -- lifecycle ------------------------------------------------------------------------

    def attach(self, db: Any) -> None:
        """Start following ``db``'s commits (idempotent)."""
        if not self.feed.attached:
            self.feed.attach(db)
            with self._lock:
                self._recent_floor = max(self._recent_floor, self.feed.start)

    def close(self) -> None:
        """Stop following commits and drop everything cached."""
        self.feed.detach()
        with self._lock:
            self._clear(self.feed.seen)

    def _clear(self, ts: int) -> None:
        self._entries.clear()
        self._size = 0
        self._recent.clear()
        self._recent_floor = ts
        self.ordinals = Ordinals()

    def reset_if_sparse(self, live: int) -> None:
        """Start over with fresh ordinals when most of them belong to deleted documents."""
        if len(self.ordinals) > max(4 * live, 1 << 16):
            with self._lock:
                self._clear(self.feed.seen)

    # -- commits --------------------------------------------------------------------------

    def _on_gap(self, ts: int) -> None:
        # What the missed commits wrote is unknown: nothing cached can be trusted.
        with self._lock:
            self._clear(ts)

    def _on_keys(self, ts: int, keys: list[bytes]) -> None:
        with self._lock:
            groups: set[bytes] = set()
            entries = self._entries
            for key in keys:
                group = self._group_of(key)
                groups.add(group)
                entry = entries.get(group)
                if entry is not None:
                    entry.log.append((ts, key))
                    if len(entry.log) > max(256, len(entry.postings) // 4):
                        # Cheaper to reload than to replay; forget it.
                        del entries[group]
                        self._size -= len(entry.postings)
            # A bulk commit is remembered as touching everything (bounded memory).
            self._recent.append((ts, groups if len(groups) <= _MANY else None))
            if len(self._recent) > RECENT_COMMITS:
                self._recent_floor = self._recent.popleft()[0]

    # -- reads ----------------------------------------------------------------------------

    def read(self, snap: Any, group: bytes) -> Postings:
        """The postings of ``group`` as of ``snap`` (a storage snapshot)."""
        ts = snap.ts
        ordinals = self.ordinals
        with self._lock:
            entry = self._entries.get(group)
            if entry is not None and entry.floor <= ts <= self.feed.seen:
                self._entries.move_to_end(group)
                base, version = entry.postings, entry.version
                lo, hi = (ts, version) if ts < version else (version, ts)
                changed = {key for t, key in entry.log if lo < t <= hi}
            else:
                entry = None
        if entry is None:
            fresh = self._load(snap, group, ordinals)
            self._install(group, fresh, ts, None, ordinals)
            return fresh
        self.hits += 1
        if not changed:
            return base
        if len(changed) > max(64, len(base) // 8):
            fresh = self._load(snap, group, ordinals)
        else:
            rows: list[Row] = []
            for key in changed:
                rows.extend(snap.scan_entries(self.index_id, key, key + b"\x00", limit=1))
            docs = ordinals.lookup([_doc_of(key, len(group)) for key in changed])
            fresh = base.without(docs).plus(self._decode(group, rows, ordinals))
        if ts > version:
            self._install(group, fresh, ts, entry, ordinals)
        return fresh

    def _load(self, snap: Any, group: bytes, ordinals: Ordinals) -> Postings:
        self.loads += 1
        rows: list[Row] = []
        for batch in entry_batches(snap, self.index_id, group, self._range_end(group), _BATCH):
            rows.extend(batch)
        return self._decode(group, rows, ordinals)

    def _install(
        self, group: bytes, postings: Postings, ts: int, prev: _Entry | None, ordinals: Ordinals
    ) -> None:
        with self._lock:
            if ordinals is not self.ordinals or ts > self.feed.seen or not self.feed.attached:
                return
            current = self._entries.get(group)
            if prev is not None:
                if current is not prev:
                    return
                # Readers between the old version and ts still need the keys logged after
                # the old version; older readers read storage.
                log = [(t, k) for t, k in prev.log if t > prev.version]
                entry = _Entry(postings, ts, prev.version, log)
                self._size -= len(prev.postings)
            else:
                if current is not None or ts < self._recent_floor:
                    return
                for t, groups in reversed(self._recent):
                    if t <= ts:
                        break
                    if groups is None or group in groups:
                        return
                entry = _Entry(postings, ts, ts, [])
            self._entries[group] = entry
            self._entries.move_to_end(group)
            self._size += len(postings)
            while self._size > self.budget and len(self._entries) > 1:
                _, old = self._entries.popitem(last=False)
                self._size -= len(old.postings)


def _doc_of(key: bytes, start: int) -> str:
    """The document id at the end of a key (``encode_value`` of a str: tag, bytes, 00 00)."""
    return key[start + 1 : -2].decode("ascii")
