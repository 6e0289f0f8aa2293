r"""Owns full-text search indexes: the tokenizer, index entries, the search builder and BM25.

Tokens: the text is lowercased and split on every character that is not a letter or a digit;
a term longer than 32 bytes (UTF-8) is cut to 32. A query uses at most 16 distinct terms: of
a longer query (its first 64 distinct terms are considered), the last term and the 15 rarest
others. The last term also matches as a prefix (typeahead).

Entries. A document whose search field holds a string has, in its index:

* one *posting* per distinct term: key ``encode_value(term) + encode_value(_id)``, value
  ``(tf, document length, creation time, filter hashes...)`` in a fixed-width layout;
* one *length entry*: key ``b"\\x01" + encode_value(_id)``, value ``(length, creation time)``.

So a term's postings are one contiguous key range (a prefix's terms too), and the length
entries, which sort below every term (term keys start with the string tag ``0x30``), give the
corpus statistics. Each entry is written in the same commit as its document, so every search
sees exactly its transaction's snapshot plus the transaction's own writes.

Scoring is BM25 with k1 = 1.5 and b = 0.75 over the documents that have the search field as a
string (N of them, average length avgdl). For a term in ``df`` documents:

* ``2 * df < N``: idf = ln((N - df + 0.5) / (df + 0.5)), exactly ``rank_bm25.BM25Okapi``'s, so
  scores agree with it;
* ``2 * df >= N``: BM25Okapi's idf would be zero or negative there, and it substitutes
  ``epsilon * (mean idf of the whole vocabulary)``, which an incremental index cannot afford to
  recompute on every commit. We use Lucene's idf instead, ln(1 + (N - df + 0.5) / (df + 0.5)):
  always positive, between ln(1 + 0.5 / (N + 0.5)) and ln 2, and cheap.

A document scores the sum over query terms; for the last term it scores the best of the terms
it is a prefix of (the first 16 in key order, the term itself first). Repeated query terms
count once. At most 1,024 documents are returned, by descending score, ties newest first.

Filters are equalities on declared filter fields, ANDed. Each posting carries a 64-bit hash of
each filter value's key encoding, so filtering is a vectorized comparison; the documents are
checked against the exact values when they are loaded.

Read set. A search records the key range of each exact term and of the last term's prefix
(narrowed to the expansions used), so a commit that adds, changes or removes a document
containing one of those terms touches it. Corpus statistics (N, avgdl) are not recorded: they
would make every insert conflict with every search.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from core.encoding import MISSING, encode_value, prefix_end
from core.errors import InvalidArgumentError
from core.indexes.base import Index
from core.indexes.btree import field_getter
from core.indexes.postings import Ordinals, Postings, PostingsCache, Row
from core.schema import SearchIndexSpec
from core.values import UNSET

K1 = 1.5
B = 0.75
MAX_TERM_BYTES = 32
MAX_QUERY_TERMS = 16
MAX_CANDIDATE_TERMS = 64
MAX_FILTERS = 8
MAX_PREFIX_TERMS = 16
MAX_RESULTS = 1024

LENGTHS = b"\x01"
"""The group (key prefix) of the length entries."""
_TERM_TAG = b"\x30"
_WORD = re.compile(r"[^\W_]+")
_LENGTH = struct.Struct("<Id")
_HEAD = struct.Struct("<I")


def tokenize(text: str) -> list[str]:
    """The terms of ``text``: lowercased runs of letters and digits, each cut to 32 bytes."""
    out = _WORD.findall(text.lower())
    for i, term in enumerate(out):
        if len(term) > MAX_TERM_BYTES // 4 and len(term.encode("utf-8")) > MAX_TERM_BYTES:
            out[i] = term.encode("utf-8")[:MAX_TERM_BYTES].decode("utf-8", "ignore")
    return out


def query_terms(text: str) -> list[str]:
    """A query's distinct terms in order (the first 64; ``select_terms`` keeps 16)."""
    return list(dict.fromkeys(tokenize(text)))[:MAX_CANDIDATE_TERMS]


def select_terms(terms: list[str], df: Callable[[str], int]) -> list[str]:
    """The terms a search uses: at most 16, the last one and the 15 rarest others, in order.

    Dropping the most common terms of a long query loses the least: their idf is the lowest.
    """
    if len(terms) <= MAX_QUERY_TERMS:
        return terms
    rest = terms[:-1]
    rank = sorted(range(len(rest)), key=lambda i: (df(rest[i]), i))[: MAX_QUERY_TERMS - 1]
    return [rest[i] for i in sorted(rank)] + terms[-1:]


def term_key(term: str) -> bytes:
    """The key prefix of a term's postings (``encode_value(term)``; terms hold no NUL)."""
    return _TERM_TAG + term.encode("utf-8") + b"\x00\x00"


def filter_hash(value: Any) -> int:
    """The 64-bit hash of a filter value's key encoding (``MISSING`` for an absent field)."""
    return int.from_bytes(hashlib.blake2b(encode_value(value), digest_size=8).digest(), "little")


def idf(df: int, n: int) -> float:
    """The idf of a term in ``df`` of ``n`` documents (see the module docstring)."""
    if 2 * df < n:
        return math.log(n - df + 0.5) - math.log(df + 0.5)
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


def _group_of(key: bytes) -> bytes:
    if key[:1] == LENGTHS:
        return LENGTHS
    return key[: key.index(b"\x00\x00", 1) + 2]


def _range_end(group: bytes) -> bytes | None:
    return prefix_end(group)


class SearchQuery:
    """The builder passed to ``with_search_index``: one ``search``, then ``eq`` filters.

    ``q.search("text", "hello wor").eq("owner", owner)``
    """

    __slots__ = ("_index", "_search_field", "_filter_fields", "text", "filters")

    def __init__(self, index: str, search_field: str, filter_fields: tuple[str, ...]):
        self._index = index
        self._search_field = search_field
        self._filter_fields = filter_fields
        self.text: str | None = None
        self.filters: list[tuple[str, Any]] = []

    def search(self, field: str, text: str) -> SearchQuery:
        """Search ``field`` (the index's search field) for the terms of ``text``."""
        if field != self._search_field:
            raise InvalidArgumentError(
                f'Search index "{self._index}" searches field "{self._search_field}", '
                f'not "{field}".'
            )
        if self.text is not None:
            raise InvalidArgumentError(f'Search index "{self._index}": search() given twice.')
        if not isinstance(text, str):
            raise InvalidArgumentError(
                f'Search index "{self._index}": the search text must be a str, '
                f"not {type(text).__name__}."
            )
        self.text = text
        return self

    def eq(self, field: str, value: Any) -> SearchQuery:
        """Keep documents whose ``field`` equals ``value`` (``UNSET``: the field is absent)."""
        if field not in self._filter_fields:
            raise InvalidArgumentError(
                f'Search index "{self._index}" has filter fields {list(self._filter_fields)}; '
                f'"{field}" is not one of them.'
            )
        if len(self.filters) >= MAX_FILTERS:
            raise InvalidArgumentError(
                f'Search index "{self._index}": at most {MAX_FILTERS} eq() filters per search.'
            )
        self.filters.append((field, MISSING if value is UNSET else value))
        return self

    def checked(self) -> SearchQuery:
        """This query, once it is complete (``search`` was called)."""
        if self.text is None:
            raise InvalidArgumentError(
                f'Search index "{self._index}": the query needs '
                f'q.search("{self._search_field}", text).'
            )
        return self


class SearchResult:
    """Ranked documents of one search, and the key ranges it read.

    Ids are turned into strings as they are asked for: a ``.take(10)`` reads ten.
    """

    __slots__ = ("_ords", "_scores", "_names", "ranges")

    def __init__(
        self,
        *,
        ords: np.ndarray,
        scores: np.ndarray,
        names: list[str],
        ranges: list[tuple[bytes, bytes | None]],
    ):
        self._ords = ords
        self._scores = scores
        self._names = names
        self.ranges = ranges
        """Key intervals ``[lo, hi)`` of the index the search depends on (its read set)."""

    def __len__(self) -> int:
        return len(self._ords)

    def id(self, rank: int) -> str:
        """The id of the document at ``rank`` (0 is the best)."""
        return self._names[int(self._ords[rank])]

    @property
    def ids(self) -> list[str]:
        """Every document id, best first."""
        names = self._names
        return [names[i] for i in self._ords.tolist()]

    @property
    def scores(self) -> list[float]:
        """Their BM25 scores."""
        return list(self._scores.tolist())


_NONE = np.zeros(0, dtype=np.int64)


def _empty(ranges: list[tuple[bytes, bytes | None]]) -> SearchResult:
    return SearchResult(ords=_NONE, scores=np.zeros(0), names=[], ranges=ranges)


class TextIndex(Index):
    """A full-text (BM25) index over one string field, with equality filter fields."""

    kind = "search"

    def __init__(self, *, id: int, table: int, name: str, spec: SearchIndexSpec):
        super().__init__(id=id, table=table, name=name)
        self.spec = spec
        self._text = field_getter(spec.search_field)
        self._filters = [field_getter(f) for f in spec.filter_fields]
        k = len(spec.filter_fields)
        fields: list[tuple[Any, ...]] = [("tf", "<u4"), ("dl", "<u4"), ("ct", "<f8")]
        if k:
            fields.append(("h", "<u8", (k,)))
        self._dtype = np.dtype(fields)
        self._length_dtype = np.dtype([("dl", "<u4"), ("ct", "<f8")])
        self._cache: PostingsCache | None = None
        self._cache_lock = threading.Lock()

    # -- entries ----------------------------------------------------------------------------

    def entries(self, doc: dict[str, Any]) -> list[tuple[bytes, bytes]]:
        """The length entry and one posting per distinct term (none without a string)."""
        text = self._text(doc)
        if not isinstance(text, str):
            return []
        terms = tokenize(text)
        length = len(terms)
        created = doc["_creation_time"]
        doc_key = encode_value(doc["_id"])
        tail = _LENGTH.pack(length, created) + b"".join(
            filter_hash(get(doc)).to_bytes(8, "little") for get in self._filters
        )
        out = [(LENGTHS + doc_key, _LENGTH.pack(length, created))]
        pack = _HEAD.pack
        for term, tf in Counter(terms).items():
            out.append((term_key(term) + doc_key, pack(tf) + tail))
        return out

    def matches(self, doc: dict[str, Any], filters: Sequence[tuple[str, Any]]) -> bool:
        """Whether a loaded document has exactly the filter values (hashes may collide)."""
        fields = self.spec.filter_fields
        for field, value in filters:
            if encode_value(self._filters[fields.index(field)](doc)) != encode_value(value):
                return False
        return True

    # -- the in-memory side -----------------------------------------------------------------

    def _cache_for(self, db: Any) -> PostingsCache:
        cache = self._cache
        if cache is None:
            with self._cache_lock:
                cache = self._cache
                if cache is None:
                    cache = self._cache = PostingsCache(
                        index_id=self.id,
                        decode=self._decode,
                        group_of=_group_of,
                        range_end=_range_end,
                    )
        cache.attach(db)
        return cache

    def close(self) -> None:
        """Drop the postings cache."""
        cache, self._cache = self._cache, None
        if cache is not None:
            cache.close()

    def _decode(self, group: bytes, rows: list[Row], ordinals: Ordinals) -> Postings:
        raw = b"".join([r[1] for r in rows])
        if group == LENGTHS:
            rec = np.frombuffer(raw, dtype=self._length_dtype)
            cols: tuple[np.ndarray, ...] = (rec["dl"].copy(),)
        else:
            rec = np.frombuffer(raw, dtype=self._dtype)
            k = len(self._filters)
            hashes = rec["h"].copy() if k else np.zeros((len(rec), 0), dtype=np.uint64)
            cols = (rec["tf"].copy(), rec["dl"].copy(), hashes)
        ords = ordinals.intern([r[2] for r in rows], rec["ct"])
        return Postings.build(ords, cols)

    # -- search -----------------------------------------------------------------------------

    def search(
        self,
        query: SearchQuery,
        *,
        db: Any,
        snapshot: Any,
        pending: Sequence[tuple[str, list[tuple[bytes, bytes]]]] = (),
        limit: int = MAX_RESULTS,
    ) -> SearchResult:
        """Rank documents for ``query`` as of ``snapshot`` overlaid with ``pending`` writes.

        Args:
            query: the completed search builder.
            db: the open database (its commits keep the postings cache current).
            snapshot: the storage snapshot the transaction reads.
            pending: the transaction's own writes to this table: ``(document id, entries of
                this index)`` for each written document (no entries for a delete).
            limit: the most documents to return.
        """
        terms = query_terms(query.checked().text or "")
        if not terms:
            return _empty([])
        cache = self._cache_for(db)
        ordinals = cache.ordinals
        read = _Reader(self, cache, ordinals, snapshot, pending)
        # Every candidate term is read: which ones a long query keeps depends on them all.
        ranges: list[tuple[bytes, bytes | None]] = [
            (term_key(t), prefix_end(term_key(t))) for t in terms[:-1]
        ]
        terms = select_terms(terms, lambda t: len(read(term_key(t))))
        groups: list[list[bytes]] = [[term_key(t)] for t in terms[:-1]]
        expansions, prefix_range = read.expand(terms[-1])
        groups.append(expansions)
        ranges.append(prefix_range)
        lengths = read(LENGTHS)
        n = len(lengths)
        if n == 0 or not expansions and len(groups) == 1:
            return _empty(ranges)
        avgdl = lengths.total(0) / n
        wanted = [
            (self.spec.filter_fields.index(f), np.uint64(filter_hash(v))) for f, v in query.filters
        ]
        ords_parts: list[np.ndarray] = []
        score_parts: list[np.ndarray] = []
        for group_list in groups:
            scored = [self._score(read(g), n, avgdl, wanted) for g in group_list]
            if len(scored) == 1:
                o, s = scored[0]
            elif scored:
                o, s = _best_per_doc(scored)
            else:
                continue
            ords_parts.append(o)
            score_parts.append(s)
        ords, scores = _top(ords_parts, score_parts, ordinals, limit)
        cache.reset_if_sparse(n)
        return SearchResult(ords=ords, scores=scores, names=ordinals.ids, ranges=ranges)

    @staticmethod
    def _score(
        p: Postings, n: int, avgdl: float, wanted: list[tuple[int, np.uint64]]
    ) -> tuple[np.ndarray, np.ndarray]:
        if not len(p):
            return p.ords, np.zeros(0)
        term_idf = idf(len(p), n)
        if wanted:
            hashes = p.cols[2]
            mask = hashes[:, wanted[0][0]] == wanted[0][1]
            for col, h in wanted[1:]:
                mask &= hashes[:, col] == h
            p = p.select(mask)
        tf, dl = p.cols[0], p.cols[1]
        # The same operations, in the same order, as rank_bm25.BM25Okapi.get_scores.
        scores = term_idf * (tf * (K1 + 1) / (tf + K1 * (1 - B + B * dl / avgdl)))
        return p.ords, scores


class _Reader:
    """The postings of one search: cached ranges at the snapshot, overlaid with own writes."""

    def __init__(
        self,
        index: TextIndex,
        cache: PostingsCache,
        ordinals: Ordinals,
        snapshot: Any,
        pending: Sequence[tuple[str, list[tuple[bytes, bytes]]]],
    ):
        self.index = index
        self.cache = cache
        self.ordinals = ordinals
        self.snapshot = snapshot
        self.seen: dict[bytes, Postings] = {}
        self.pending_ids = [doc_id for doc_id, _ in pending]
        self.pending_rows: list[Row] = [
            (key, value, doc_id) for doc_id, entries in pending for key, value in entries
        ]

    def __call__(self, group: bytes) -> Postings:
        found = self.seen.get(group)
        if found is None:
            found = self.seen[group] = self._read(group)
        return found

    def _read(self, group: bytes) -> Postings:
        postings = self.cache.read(self.snapshot, group)
        if not self.pending_ids:
            return postings
        hi = prefix_end(group)
        mine = [r for r in self.pending_rows if r[0] >= group and (hi is None or r[0] < hi)]
        gone = self.ordinals.lookup(self.pending_ids)
        return postings.without(gone).plus(self.index._decode(group, mine, self.ordinals))

    def expand(self, term: str) -> tuple[list[bytes], tuple[bytes, bytes | None]]:
        """The terms ``term`` is a prefix of (itself first), at most 16, and the range read."""
        prefix = _TERM_TAG + term.encode("utf-8")
        hi = prefix_end(prefix)
        found: list[bytes] = []
        lo = prefix
        index_id = self.index.id
        while len(found) <= MAX_PREFIX_TERMS:
            rows = self.snapshot.scan_entries(index_id, lo, hi, limit=1)
            if not rows:
                break
            group = _group_of(rows[0][0])
            found.append(group)
            lo = prefix_end(group) or hi or b""
        for key, _, _ in self.pending_rows:
            if key >= prefix and (hi is None or key < hi):
                found.append(_group_of(key))
        groups = sorted(set(found))
        if len(groups) > MAX_PREFIX_TERMS:
            groups = groups[:MAX_PREFIX_TERMS]
            # Later terms cannot change the result: the read set stops after the last used.
            hi = prefix_end(groups[-1])
        return groups, (prefix, hi)


def _best_per_doc(scored: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """For each document, its best score among several terms' (ords, scores)."""
    o = np.concatenate([x[0] for x in scored])
    s = np.concatenate([x[1] for x in scored])
    if not len(o):
        return o, s
    order = np.lexsort((-s, o))
    o, s = o[order], s[order]
    first = np.ones(len(o), dtype=bool)
    first[1:] = o[1:] != o[:-1]
    return o[first], s[first]


def _top(
    ords_parts: list[np.ndarray], score_parts: list[np.ndarray], ordinals: Ordinals, limit: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sum scores per document and keep the best ``limit``: by score, then newest first."""
    o = np.concatenate(ords_parts) if ords_parts else _NONE
    if not len(o):
        return _NONE, np.zeros(0)
    s = np.concatenate(score_parts)
    size = len(ordinals)
    if len(o) * 8 < size:
        cand, inverse = np.unique(o, return_inverse=True)
        scores = np.bincount(inverse, weights=s)
    else:
        acc = np.bincount(o, weights=s, minlength=size)
        cand = np.flatnonzero(acc)
        scores = acc[cand]
    if len(cand) > limit:
        threshold = np.partition(scores, len(scores) - limit)[len(scores) - limit]
        keep = scores >= threshold  # every tie at the cut, so the tie-break below decides
        cand, scores = cand[keep], scores[keep]
    created = ordinals.created[cand]
    order = np.lexsort((-created, -scores))[:limit]
    return cand[order], scores[order]
