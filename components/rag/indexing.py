"""Owns how rag stores what it indexes: vector sizes, importance, filter fields, content hashes.

Pure functions: nothing here touches a context or the database.

Vectors. An embedding of ``d`` dimensions is stored on its chunk in the field ``v<n>`` of the
smallest size ``n`` in ``VECTOR_SIZES`` with ``n > d`` (one vector index per field, so any
embedder up to 4,095 dimensions fits without a schema change). The stored vector is
``[normalize(e) * importance, 0, ..., 0, sqrt(1 - importance**2)]``: unit length, its last
slot holding the importance. A query vector is ``[normalize(q), 0, ...]`` with 0 in that
slot, so the index's cosine is exactly ``cosine(q, e) * importance`` and the vector index
ranks by the documented vector score (Convex's trick, with zero padding, which changes no
cosine).

Filters. A RAG declares up to four filter names; position ``i`` is name ``filter_names[i]``.
Each non-empty subset of the names (a bit mask ``m`` from 1 to 15) has its own field
``f<m>`` on chunks and vectors, holding ``[namespace_id, value_i, ...]`` for the names in the
subset, in position order (a missing value is ``None``). A filter dict (AND across its names)
is then one equality on one field, a list of dicts (OR) a disjunction of equalities, and the
namespace id inside the value keeps every filter inside its namespace. That is 15 filter
fields plus ``namespace_id``: the 16 a vector index may declare. The search index, whose
every posting carries a hash per filter field, declares only ``namespace_id`` and the four
one-name fields (``f1``, ``f2``, ``f4``, ``f8``): it ANDs equalities itself, so a dict is one
equality per name there.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from components.rag.errors import RAGConfigError, UnknownFilterError
from core import InvalidArgumentError

VECTOR_SIZES = (129, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4096)
"""The stored vector lengths: common embedding sizes plus the importance slot (the core's
vector index stops at 4,096, so the widest embedder is 4,095)."""

MAX_FILTER_NAMES = 4
FILTER_FIELDS = tuple(f"f{mask}" for mask in range(1, 2**MAX_FILTER_NAMES))
"""The composite filter fields, ``f1`` .. ``f15`` (see the module docstring)."""
TEXT_FILTER_FIELDS = tuple(f"f{1 << i}" for i in range(MAX_FILTER_NAMES))
"""The one-name filter fields the search index declares."""

Filters = list[dict[str, Any]]
"""A search's filters in normal form: a list of dicts, OR between them, AND inside one."""


def vector_size(dimensions: int) -> int:
    """The stored vector length for an embedder of ``dimensions`` dimensions.

    Raises:
        RAGConfigError: when ``dimensions`` is not from 1 to 4,095.
    """
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
        raise RAGConfigError(f"Embedder dimensions must be a positive int, not {dimensions!r}.")
    for size in VECTOR_SIZES:
        if size > dimensions:
            return size
    raise RAGConfigError(
        f"Embedder has {dimensions:,} dimensions; rag stores at most {VECTOR_SIZES[-1] - 1:,}."
    )


def vector_field(size: int) -> str:
    """The chunk field holding vectors of ``size`` numbers (its index is ``by_<field>``)."""
    return f"v{size}"


def _unit(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else [0.0] * len(vector)


def stored_vector(embedding: Sequence[float], importance: float, size: int) -> list[float]:
    """The unit vector stored for ``embedding`` at ``importance``, ``size`` numbers long."""
    head = [x * importance for x in _unit(embedding)]
    padding = size - len(head) - 1
    return [*head, *([0.0] * padding), math.sqrt(max(0.0, 1.0 - importance * importance))]


def query_vector(embedding: Sequence[float], size: int) -> list[float]:
    """The query vector for ``embedding`` (0 in the importance slot), ``size`` numbers long."""
    head = _unit(embedding)
    return [*head, *([0.0] * (size - len(head)))]


def dot(a: Sequence[float], b: Sequence[float]) -> float:
    """The dot product (both stored and query vectors are unit length: the cosine)."""
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


def check_filter_names(names: Sequence[str] | None) -> list[str]:
    """A RAG's ``filter_names``: distinct strings, at most four.

    Raises:
        RAGConfigError: when they are not.
    """
    found = list(names or [])
    if any(not isinstance(n, str) or not n for n in found) or len(set(found)) != len(found):
        raise RAGConfigError(f"filter_names must be distinct, non-empty strings, not {found!r}.")
    if len(found) > MAX_FILTER_NAMES:
        raise RAGConfigError(
            f"A RAG has at most {MAX_FILTER_NAMES} filter names; got {len(found)}: {found!r}."
        )
    return found


def check_filter_values(values: Any, names: Sequence[str]) -> dict[str, Any]:
    """An entry's ``filter_values``: a dict over some of ``names``.

    Raises:
        UnknownFilterError: for a name not in ``names``.
        InvalidArgumentError: when it is not a dict.
    """
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise InvalidArgumentError(
            f'Argument "filter_values" must be a dict of filter name to value, not {values!r}.',
            argument="filter_values",
        )
    for name in values:
        if name not in names:
            raise UnknownFilterError(str(name), names, argument="filter_values")
    return dict(values)


def check_filters(filters: Any, names: Sequence[str]) -> Filters:
    """A search's ``filters`` in normal form (``None``: no filter, an empty list).

    Raises:
        UnknownFilterError: for a name not in ``names``.
        InvalidArgumentError: when it is not a dict or a list of non-empty dicts.
    """
    if filters is None or (isinstance(filters, Mapping) and not filters):
        return []
    clauses = [filters] if isinstance(filters, Mapping) else filters
    if not isinstance(clauses, list | tuple) or not all(
        isinstance(c, Mapping) and c for c in clauses
    ):
        raise InvalidArgumentError(
            'Argument "filters" must be a dict of filter name to value (AND), or a list of '
            f"such dicts (OR), not {filters!r}.",
            argument="filters",
        )
    for clause in clauses:
        for name in clause:
            if name not in names:
                raise UnknownFilterError(str(name), names)
    return [dict(c) for c in clauses]


def _mask(positions: Sequence[int]) -> int:
    return sum(1 << p for p in positions)


def filter_fields(
    namespace_id: str, names: Sequence[str], values: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``f<mask>`` fields of a chunk with filter ``values`` (see the module docstring)."""
    fields: dict[str, Any] = {}
    for mask in range(1, 2 ** len(names)):
        subset = [i for i in range(len(names)) if mask >> i & 1]
        fields[f"f{mask}"] = [namespace_id, *(values.get(names[i]) for i in subset)]
    return fields


def filter_terms(
    namespace_id: str, names: Sequence[str], filters: Filters
) -> list[tuple[str, Any]]:
    """The equalities (field, value), ORed, that select ``filters`` in a namespace."""
    if not filters:
        return [("namespace_id", namespace_id)]
    terms: list[tuple[str, Any]] = []
    for clause in filters:
        positions = sorted(names.index(name) for name in clause)
        value = [namespace_id, *(clause[names[i]] for i in positions)]
        term = (f"f{_mask(positions)}", value)
        if term not in terms:
            terms.append(term)
    return terms


def text_filter_terms(
    namespace_id: str, names: Sequence[str], clause: Mapping[str, Any] | None
) -> list[tuple[str, Any]]:
    """The equalities, ANDed, that select one filter ``clause`` in the search index."""
    if not clause:
        return [("namespace_id", namespace_id)]
    return [(f"f{1 << names.index(name)}", [namespace_id, value]) for name, value in clause.items()]


def content_hash(
    chunks: Sequence[str], *, title: str | None, importance: float, filter_values: Mapping[str, Any]
) -> str:
    """The hash that decides whether re-adding a key changes it.

    It covers the chunks, title, importance and filter values (not the metadata).
    """
    body = json.dumps(
        {
            "chunks": list(chunks),
            "title": title,
            "importance": importance,
            "filter_values": dict(sorted(filter_values.items())),
        },
        sort_keys=True,
        ensure_ascii=False,
        default=repr,
    )
    return hashlib.sha256(body.encode()).hexdigest()
