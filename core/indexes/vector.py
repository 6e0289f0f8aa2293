"""Owns vector indexes: their entries, the write-time checks, the filter builder and search.

A document whose vector field holds a vector has one entry: key ``encode_value(_id)``, value the
vector as little-endian float32 followed by the key encoding of each filter field's value. A
vector must have exactly the declared number of dimensions and only finite numbers; anything
else is refused when written (the write fails and the table is unchanged). A missing or
``None`` field is simply not indexed.

Search (``ctx.vector_search``, actions only) runs on the in-memory ``VectorStore`` built from
these entries; see ``core.indexes.vectorstore``. Scores are cosine similarities in [-1, 1],
best first (ties by id); ``limit`` is 1 to 256 (default 10). A filter is a disjunction of
equalities on filter fields, ``lambda q: q.or_(q.eq("category", "a"), q.eq("category", "b"))``
(each ``eq`` adds one alternative), at most 64 of them; a filtered search returns ``limit``
results whenever that many documents match.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio.to_thread
import numpy as np

from core.encoding import MISSING, encode_value
from core.errors import InvalidArgumentError, InvalidValueError
from core.indexes.base import Index
from core.indexes.btree import field_getter
from core.indexes.vectorstore import VectorStore
from core.schema import VectorIndexSpec
from core.values import UNSET

MAX_LIMIT = 256
MAX_FILTER_TERMS = 64


def _vector_problem(value: Any, dims: int) -> str | None:
    """Why ``value`` is not a vector of ``dims`` finite numbers, or ``None`` if it is one."""
    if not isinstance(value, list | tuple):
        return f"it is a {type(value).__name__}"
    if len(value) != dims:
        return f"it has {len(value)} numbers"
    kinds = set(map(type, value))
    if kinds <= {float, int}:
        arr = np.array(value, dtype=np.float64) if int in kinds else np.array(value)
        bad = np.flatnonzero(~np.isfinite(arr))
        return f"element {bad[0]} is {value[bad[0]]}" if len(bad) else None
    for i, x in enumerate(value):  # name the first element that is not a number
        if type(x) not in (float, int):
            return f"element {i} is a {type(x).__name__}"
    return None  # pragma: no cover - kinds had a non-number


class VectorFilter:
    """The builder passed as ``filter``: equalities on filter fields, ORed together."""

    __slots__ = ("_index", "_fields", "terms")

    def __init__(self, index: str, fields: tuple[str, ...]):
        self._index = index
        self._fields = fields
        self.terms: list[tuple[int, bytes]] = []

    def eq(self, field: str, value: Any) -> VectorFilter:
        """Match documents whose ``field`` equals ``value`` (one more alternative)."""
        if field not in self._fields:
            raise InvalidArgumentError(
                f'Vector index "{self._index}" has filter fields {list(self._fields)}; '
                f'"{field}" is not one of them.'
            )
        if len(self.terms) >= MAX_FILTER_TERMS:
            raise InvalidArgumentError(
                f'Vector index "{self._index}": at most {MAX_FILTER_TERMS} filter expressions.'
            )
        self.terms.append(
            (self._fields.index(field), encode_value(MISSING if value is UNSET else value))
        )
        return self

    def or_(self, *alternatives: VectorFilter) -> VectorFilter:
        """Any of ``alternatives`` (each built from this same ``q``)."""
        for alt in alternatives:
            if not isinstance(alt, VectorFilter):
                raise InvalidArgumentError(
                    f'Vector index "{self._index}": or_() takes q.eq(...) expressions.'
                )
        return self


class VectorIndex(Index):
    """A vector index (cosine similarity) over one ``list[float]`` field."""

    kind = "vector"

    def __init__(self, *, id: int, table: int, name: str, spec: VectorIndexSpec):
        super().__init__(id=id, table=table, name=name)
        self.spec = spec
        self._vector = field_getter(spec.vector_field)
        self._filters = [field_getter(f) for f in spec.filter_fields]
        self._store: VectorStore | None = None
        self._store_lock = threading.Lock()

    def entries(self, doc: dict[str, Any]) -> list[tuple[bytes, bytes]]:
        """One entry (vector and filter values) if the document holds a valid vector."""
        vec = self._vector(doc)
        if vec is None or vec is MISSING or _vector_problem(vec, self.spec.dimensions):
            return []
        value = np.asarray(vec, dtype="<f4").tobytes() + b"".join(
            encode_value(get(doc)) for get in self._filters
        )
        return [(encode_value(doc["_id"]), value)]

    def check(self, doc: dict[str, Any], *, table: str) -> None:
        """Refuse a vector of the wrong dimension, NaN, infinity or a non-number."""
        vec = self._vector(doc)
        if vec is None or vec is MISSING:
            return
        problem = _vector_problem(vec, self.spec.dimensions)
        if problem is not None:
            field = self.spec.vector_field
            raise InvalidValueError(
                f'Field "{field}" of table "{table}" must be a list of '
                f'{self.spec.dimensions} finite numbers (vector index "{self.name}"), but '
                f"{problem}.",
                table=table,
                field=field,
            )

    def store(self) -> VectorStore:
        """The in-memory store of this index (loaded at its first search)."""
        with self._store_lock:
            if self._store is None:
                self._store = VectorStore(
                    index_id=self.id,
                    dims=self.spec.dimensions,
                    filter_count=len(self.spec.filter_fields),
                )
            return self._store

    def close(self) -> None:
        """Stop the in-memory store (it is rebuilt from the entries when opened again)."""
        store, self._store = self._store, None
        if store is not None:
            store.close()

    def query_vector(self, vector: Any) -> np.ndarray:
        """``vector`` checked and normalized for search."""
        dims = self.spec.dimensions
        if (
            isinstance(vector, list)
            and len(vector) == dims
            and set(map(type, vector)) <= {float, int}
        ):
            q = np.array(vector, dtype=np.float64)
            if np.isfinite(q).all():
                norm = float(np.sqrt(q.dot(q)))
                return (q / norm if norm > 0 else q).astype(np.float32)
        problem = _vector_problem(vector, dims) or "it does not fit in 64-bit floats"
        raise InvalidArgumentError(
            f'vector_search on index "{self.name}" needs a vector of {dims} finite numbers, '
            f"but {problem}.",
            argument="vector",
        )

    def build_filter(
        self, filter: Callable[[VectorFilter], Any] | None
    ) -> list[tuple[int, bytes]] | None:
        """The filter's alternatives as (field position, encoded value), or ``None``."""
        if filter is None:
            return None
        if not callable(filter):
            raise InvalidArgumentError("filter must be a function: lambda q: q.eq(field, value).")
        builder = VectorFilter(self.name, self.spec.filter_fields)
        result = filter(builder)
        if result is not builder:
            raise InvalidArgumentError(
                f'The filter for vector index "{self.name}" must return q.eq(...) or q.or_(...).'
            )
        terms: list[tuple[int, bytes]] = builder.terms
        return terms


async def vector_search(
    db: Any,
    space: Any,
    table: str,
    index: str,
    vector: Any,
    limit: int = 10,
    filter: Callable[[VectorFilter], Any] | None = None,
) -> list[dict[str, Any]]:
    """``ctx.vector_search``: nearest documents of ``table`` by cosine similarity.

    Returns ``[{"_id": id, "_score": cosine}]``, best first. Sees every commit acknowledged
    before it was called.
    """
    from core.ids import Id

    info = space.table(table)
    found = info.indexes.get(index)
    if not isinstance(found, VectorIndex):
        known = sorted(n for n, i in info.indexes.items() if isinstance(i, VectorIndex))
        raise InvalidArgumentError(
            f'Table "{table}" has no vector index "{index}"; its vector indexes are {known}.'
        )
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgumentError(
            f"limit must be an int from 1 to {MAX_LIMIT}, not {limit!r}.", argument="limit"
        )
    q = found.query_vector(vector)
    disjuncts = found.build_filter(filter)
    store = found.store()
    if not db.storage.inline_reads:
        # Taking a snapshot may wait for a pooled connection (PostgreSQL): all of it runs in a
        # worker thread, so the event loop never blocks on the pool.
        hits = await anyio.to_thread.run_sync(_prepare_and_search, db, store, q, limit, disjuncts)
    else:
        snap = db.storage.begin_read()
        try:
            if store.current_for(snap.ts):
                if snap.ts > store.version:
                    store.prepare(db, snap)
            else:  # a load or a catch-up with other processes: off the event loop
                await anyio.to_thread.run_sync(store.prepare, db, snap)
        finally:
            snap.close()
        hits = store.search(q, limit, disjuncts)
    return [{"_id": Id(doc_id), "_score": score} for doc_id, score in hits]


def _prepare_and_search(
    db: Any, store: Any, q: Any, limit: int, disjuncts: Any
) -> list[tuple[str, float]]:
    """Bring the store up to a new snapshot, then search it (blocking)."""
    snap = db.storage.begin_read()
    try:
        if snap.ts > store.version or not store.current_for(snap.ts):
            store.prepare(db, snap)
    finally:
        snap.close()
    hits: list[tuple[str, float]] = store.search(q, limit, disjuncts)
    return hits
