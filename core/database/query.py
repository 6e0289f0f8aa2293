"""Owns the query builder: index ranges, order, filters, and the ways to consume results."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

from core.database.pagination import Page, decode_cursor, encode_cursor
from core.errors import InvalidArgumentError, UserError
from core.indexes.btree import BTreeIndex, IndexRange
from core.indexes.text import SearchQuery, TextIndex

if TYPE_CHECKING:
    from core.database.catalog import TableInfo, TableSpace
    from core.database.transaction import Transaction

Document = dict[str, Any]
_SEARCH_ORDER = (
    "A search query returns documents in relevance order; .order() does not apply to it "
    "(sort the results in Python if you need another order)."
)


class Query:
    """A lazy query over one table; nothing is read until it is consumed."""

    __slots__ = ("_txn", "_space", "_info", "_index", "_bounds", "_order", "_filters", "_source")

    def __init__(self, txn: Transaction, space: TableSpace, info: TableInfo):
        self._txn = txn
        self._space = space
        self._info = info
        self._index = info.creation_index
        self._bounds: tuple[bytes, bytes | None] | None = (b"", None)
        self._order = "asc"
        self._filters: list[Callable[[Document], Any]] = []
        self._source: Callable[[], Iterator[tuple[bytes, Document]]] | None = None

    def with_index(
        self, name: str, range: Callable[[IndexRange], IndexRange] | None = None
    ) -> Query:
        """Read through an index, optionally limited to a range of it."""
        # The snapshot first: beginning it reloads the indexes if another process changed
        # them, so the lookup below never finds one whose entries are gone.
        self._txn.snapshot  # noqa: B018
        index = self._info.indexes.get(name)
        if not isinstance(index, BTreeIndex):
            known = sorted(n for n, i in self._info.indexes.items() if isinstance(i, BTreeIndex))
            raise InvalidArgumentError(
                f'Table "{self._info.name}" has no index "{name}"; its indexes are {known}.'
            )
        builder = IndexRange(name, index.range_fields)
        if range is not None:
            result = range(builder)
            if not isinstance(result, IndexRange):
                raise InvalidArgumentError(
                    f'The range function for index "{name}" must return its argument '
                    "(q.eq(...).gte(...)), not " + type(result).__name__ + "."
                )
        self._index = index
        self._bounds = builder.bounds()
        return self

    def with_search_index(self, name: str, search: Callable[[SearchQuery], SearchQuery]) -> Query:
        """Full-text search: documents in BM25 relevance order, at most 1,024.

        ``search`` builds the query: ``lambda q: q.search(field, "text").eq(filter, value)``.
        Results compose with ``.filter``, ``.take``, ``.first`` and ``.collect``.
        """
        self._txn.snapshot  # noqa: B018 - see with_index
        index = self._info.indexes.get(name)
        if not isinstance(index, TextIndex):
            known = sorted(n for n, i in self._info.indexes.items() if isinstance(i, TextIndex))
            raise InvalidArgumentError(
                f'Table "{self._info.name}" has no search index "{name}"; its search indexes '
                f"are {known}."
            )
        if self._order != "asc":
            raise InvalidArgumentError(_SEARCH_ORDER)
        builder = SearchQuery(name, index.spec.search_field, index.spec.filter_fields)
        result = search(builder)
        if not isinstance(result, SearchQuery):
            raise InvalidArgumentError(
                f'The search function for index "{name}" must return its argument '
                "(q.search(...).eq(...)), not " + type(result).__name__ + "."
            )
        query = result.checked()
        txn, space, info = self._txn, self._space, self._info

        def rows() -> Iterator[tuple[bytes, Document]]:
            found = txn.search(info, index, query)
            for rank in range(len(found)):
                doc = txn.get(space, found.id(rank))
                if doc is not None and index.matches(doc, query.filters):
                    yield rank.to_bytes(4, "big"), doc

        self._source = rows
        return self

    def order(self, order: str) -> Query:
        """``"asc"`` (the default) or ``"desc"`` along the index."""
        if order not in ("asc", "desc"):
            raise InvalidArgumentError(f'order must be "asc" or "desc", not {order!r}.')
        if self._source is not None:
            raise InvalidArgumentError(_SEARCH_ORDER)
        self._order = order
        return self

    def filter(self, predicate: Callable[[Document], Any]) -> Query:
        """Keep documents for which ``predicate(doc)`` is true (applied after the scan)."""
        if not callable(predicate):
            raise InvalidArgumentError("filter() takes a callable over the document.")
        self._filters.append(predicate)
        return self

    # -- consuming ------------------------------------------------------------------------

    def _rows(self, after: bytes | None = None) -> Generator[tuple[bytes, Document], None, None]:
        if self._source is not None:
            if after is not None:
                raise InvalidArgumentError("paginate() is not supported on this query.")
            rows = self._source()
        else:
            if self._bounds is None:
                return
            lo, hi = self._bounds
            reverse = self._order == "desc"
            if after is not None:
                if reverse:
                    hi = after if hi is None or after < hi else hi
                else:
                    lo = max(lo, after + b"\x00")
                if hi is not None and lo >= hi:
                    return
            rows = self._txn.scan(self._info, self._index, lo, hi, reverse=reverse)
        filters = self._filters
        for key, doc in rows:
            if all(f(doc) for f in filters):
                yield key, doc

    def __iter__(self) -> Iterator[Document]:
        for _, doc in self._rows():
            yield doc

    def collect(self) -> list[Document]:
        """Every matching document."""
        return [doc for _, doc in self._rows()]

    def take(self, n: int) -> list[Document]:
        """The first ``n`` matching documents."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise InvalidArgumentError(f"take() needs a non-negative int, not {n!r}.")
        out: list[Document] = []
        if n == 0:
            return out
        for _, doc in self._rows():
            out.append(doc)
            if len(out) >= n:
                break
        return out

    def _point(self, n: int) -> list[Document] | None:
        """The first ``n`` documents of a plain ascending index range (no filters, no search)."""
        if self._source is not None or self._filters or self._order != "asc":
            return None
        if self._bounds is None:
            return []
        lo, hi = self._bounds
        return self._txn.lookup(self._info, self._index, lo, hi, n)

    def first(self) -> Document | None:
        """The first matching document, or ``None``."""
        found = self._point(1)
        if found is not None:
            return found[0] if found else None
        for _, doc in self._rows():
            return doc
        return None

    def unique(self) -> Document | None:
        """The only matching document, or ``None``; more than one is an error."""
        found = self._point(2)
        if found is None:
            found = self.take(2)
        if len(found) > 1:
            raise UserError(
                f'unique() found more than one document in table "{self._info.name}" '
                f"({found[0]['_id']}, {found[1]['_id']})."
            )
        return found[0] if found else None

    def paginate(self, cursor: str | None, num_items: int) -> Page:
        """One page of at most ``num_items`` documents after ``cursor`` (``None``: start).

        Each page is read at its own snapshot; because a cursor is the last index key
        returned, paging never skips or repeats a document that stayed in the range.
        """
        if not isinstance(num_items, int) or isinstance(num_items, bool) or num_items < 1:
            raise InvalidArgumentError(f"num_items must be a positive int, not {num_items!r}.")
        after = None if cursor is None else decode_cursor(cursor, self._index.id)
        page: list[Document] = []
        last = after
        rows = self._rows(after)
        for key, doc in rows:
            page.append(doc)
            last = key
            if len(page) >= num_items:
                break
        else:
            return Page(
                page=page, continue_cursor=encode_cursor(last, self._index.id), is_done=True
            )
        rows.close()
        return Page(page=page, continue_cursor=encode_cursor(last, self._index.id), is_done=False)
