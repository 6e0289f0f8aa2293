"""Owns the rag component: its tables and the functions that add, swap, list and delete entries.

Tables (typed):

* ``namespaces``: one row per (name, embedder model, dimensions, filter names). A RAG with
  another embedder gets its own row, so vectors of different models never mix.
* ``entries``: one row per version of a document: ``pending`` while its chunks come in,
  ``ready`` when searchable, ``replaced`` once a newer version of its key took over.
* ``chunks``: an entry's text in order. ``searchable`` (the search index's field) holds the
  text and ``v<n>`` (a vector index's field, see ``components.rag.indexing``) the stored
  vector only while the entry is ready; ``staged`` holds an embedding waiting for the swap.
  So a chunk is one document for both indexes: a vector hit and a text hit are the same id.

The swap. Embedding happens in actions, outside any transaction; making a version searchable
is one mutation (``_promote``): the new chunks get their vectors and searchable text, the
key's previous ready version loses both (its rows stay, marked ``replaced``, until deleted),
statuses change and ``on_complete`` runs, all in one commit. So a search at any snapshot sees
all chunks of exactly one version of a key. A small entry is written and promoted by one
mutation (``add_entry`` with its chunks); a large one is staged in batches (``add_chunks``)
and promoted by ``finish_entry``. The swap of an entry of
``n`` chunks writes about ``2 n`` documents (``n`` patches, ``n`` for the old version), within a
transaction's 16,000 for ``n`` up to about 8,000 (a larger entry is refused by the core's
limit, nothing swapped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from components.rag.errors import EntryIncompleteError, EntryNotFoundError
from components.rag.indexing import (
    FILTER_FIELDS,
    TEXT_FILTER_FIELDS,
    VECTOR_SIZES,
    filter_fields,
    stored_vector,
    vector_field,
    vector_size,
)
from components.workflow import pool_component
from core import Component, Id, MutationCtx, QueryCtx, Schema, Table

_FILTERS: dict[str, Any] = dict.fromkeys(FILTER_FIELDS, Any)


_VECTORS: dict[str, Any] = {vector_field(size): list[float] | None for size in VECTOR_SIZES}


def _chunks_table() -> Table:
    table = (
        Table(
            {
                "entry_id": Id[Literal["entries"]],
                "namespace_id": Id[Literal["namespaces"]],
                "order": int,
                "text": str,
                "searchable": str | None,
                "staged": list[float] | None,
                **_VECTORS,
                **_FILTERS,
            }
        )
        .index("by_entry", ["entry_id", "order"])
        .search_index(
            "by_text",
            search_field="searchable",
            filter_fields=["namespace_id", *TEXT_FILTER_FIELDS],
        )
    )
    for size in VECTOR_SIZES:
        table = table.vector_index(
            f"by_{vector_field(size)}",
            vector_field=vector_field(size),
            dimensions=size,
            filter_fields=["namespace_id", *FILTER_FIELDS],
        )
    return table


component = Component(
    "rag",
    schema=Schema(
        namespaces=Table(
            {"name": str, "model_id": str, "dimensions": int, "filter_names": list[str]}
        ).index("by_name", ["name", "model_id", "dimensions"]),
        entries=Table(
            {
                "namespace_id": Id[Literal["namespaces"]],
                "key": str | None,
                "version": int,
                "title": str | None,
                "metadata": Any,
                "filter_values": dict[str, Any],
                "importance": float,
                "status": str,
                "content_hash": str,
                "chunk_count": int,
                "on_complete": str | None,
                "replaced_at": float | None,
                "error": str | None,
            }
        )
        .index("by_key", ["namespace_id", "key", "version"])
        .index("by_status", ["namespace_id", "status"]),
        chunks=_chunks_table(),
    ),
)
pool = component.use(pool_component, name="pool")

Doc = dict[str, Any]
MAX_SOLE_SCAN = 64
"""``lookup_namespace`` reads at most this many namespaces to tell whether one is alone."""
STATUSES = ("pending", "ready", "replaced")


# -- namespaces ---------------------------------------------------------------------------------


def _namespaces(ctx: QueryCtx, name: str) -> list[Doc]:
    found: list[Doc] = (
        ctx.db.query("namespaces").with_index("by_name", lambda q: q.eq("name", name)).collect()
    )
    return found


def _find_namespace(ctx: QueryCtx, namespace: Doc) -> Doc | None:
    for doc in _namespaces(ctx, namespace["name"]):
        if (
            doc["model_id"] == namespace["model_id"]
            and doc["dimensions"] == namespace["dimensions"]
            and doc["filter_names"] == namespace["filter_names"]
        ):
            return doc
    return None


def _namespace_for(ctx: MutationCtx, namespace: Doc) -> Doc:
    found = _find_namespace(ctx, namespace)
    if found is not None:
        return found
    fields = {k: namespace[k] for k in ("name", "model_id", "dimensions", "filter_names")}
    return {**fields, "_id": ctx.db.insert("namespaces", fields)}


@component.query
def lookup_namespace(ctx: QueryCtx, namespace: dict[str, Any]) -> dict[str, Any]:
    """``namespace_lookup`` as a query."""
    return namespace_lookup(ctx, namespace)


def namespace_lookup(ctx: QueryCtx, namespace: dict[str, Any]) -> dict[str, Any]:
    """This RAG's namespace id (or ``None``) and descriptions of the name's other versions.

    ``sole`` says whether it is the only namespace whose vectors share its vector index, and
    ``alone`` whether it is the only namespace at all: a search without filters then needs no
    namespace filter in the vector (``sole``) or search (``alone``) index, their fastest path.
    """
    found = _find_namespace(ctx, namespace)
    others = [
        f'"{d["model_id"]}" ({d["dimensions"]} dimensions, filter names {d["filter_names"]})'
        for d in _namespaces(ctx, namespace["name"])
        if found is None or d["_id"] != found["_id"]
    ]
    sole = alone = False
    if found is not None:
        size = vector_size(namespace["dimensions"])
        rows = ctx.db.query("namespaces").take(MAX_SOLE_SCAN + 1)
        sole = len(rows) <= MAX_SOLE_SCAN and not any(
            d["_id"] != found["_id"] and vector_size(d["dimensions"]) == size for d in rows
        )
        alone = len(rows) == 1
    return {
        "namespace_id": None if found is None else found["_id"],
        "others": others,
        "sole": sole,
        "alone": alone,
    }


# -- entries ------------------------------------------------------------------------------------


def public_entry(ctx: QueryCtx, entry: Doc, namespace: str | None = None) -> Doc:
    """An entry row as the client's ``Entry`` fields."""
    if namespace is None:
        ns = ctx.db.get(entry["namespace_id"])
        namespace = ns["name"] if ns is not None else ""
    return {
        "entry_id": entry["_id"],
        "namespace": namespace,
        "key": entry["key"],
        "title": entry["title"],
        "metadata": entry["metadata"],
        "filter_values": entry["filter_values"],
        "importance": entry["importance"],
        "status": entry["status"],
        "content_hash": entry["content_hash"],
    }


def _versions(ctx: QueryCtx, namespace_id: str, key: str) -> list[Doc]:
    """Every version of ``key`` in the namespace, oldest first."""
    found: list[Doc] = (
        ctx.db.query("entries")
        .with_index("by_key", lambda q: q.eq("namespace_id", namespace_id).eq("key", key))
        .collect()
    )
    return found


def _result(entry: Doc, created: bool, replaced: Doc | None = None) -> Doc:
    return {
        "entry_id": entry["_id"],
        "status": entry["status"],
        "created": created,
        "replaced_entry_id": None if replaced is None else replaced["_id"],
    }


@component.query
def find_same(
    ctx: QueryCtx, namespace: dict[str, Any], key: str, content_hash: str
) -> dict[str, Any] | None:
    """The add result if ``key``'s ready version already has this content (nothing to do)."""
    ns = _find_namespace(ctx, namespace)
    if ns is None:
        return None
    for entry in _versions(ctx, ns["_id"], key):
        if entry["status"] == "ready" and entry["content_hash"] == content_hash:
            return _result(entry, False)
    return None


@component.mutation
def add_entry(
    ctx: MutationCtx,
    namespace: dict[str, Any],
    key: str | None,
    title: str | None,
    metadata: Any,
    filter_values: dict[str, Any],
    importance: float,
    content_hash: str,
    chunk_count: int,
    chunks: list[dict[str, Any]] | None = None,
    on_complete: str | None = None,
) -> dict[str, Any]:
    """Add a version of an entry, promoted at once when ``chunks`` (with vectors) are given.

    Without ``chunks`` it stays ``pending`` until ``add_chunks`` and ``finish_entry``.

    Same key and same content as the ready version: nothing is written (``created`` false).
    """
    entry, ns, created = new_version(
        ctx,
        namespace,
        key,
        {
            "title": title,
            "metadata": metadata,
            "filter_values": filter_values,
            "importance": importance,
            "content_hash": content_hash,
            "chunk_count": chunk_count,
            "on_complete": on_complete,
        },
    )
    if not created or chunks is None:
        return _result(entry, created)
    # A new version: nothing newer exists and it has no chunks yet, so they go in live.
    _insert_chunks(ctx, entry, ns, 0, chunks, live=True)
    return _promote(ctx, entry, ns, staged=False)


def new_version(
    ctx: MutationCtx, namespace: dict[str, Any], key: str | None, fields: Doc
) -> tuple[Doc, Doc, bool]:
    """Insert the next pending version of ``key`` with ``fields``: ``(entry, namespace, True)``.

    When a ready version has the same ``content_hash``, nothing is written: that version,
    with ``False``.
    """
    ns = _namespace_for(ctx, namespace)
    versions = [] if key is None else _versions(ctx, ns["_id"], key)
    for entry in versions:
        if entry["status"] == "ready" and entry["content_hash"] == fields["content_hash"]:
            return entry, ns, False
    row = {
        "namespace_id": ns["_id"],
        "key": key,
        "version": versions[-1]["version"] + 1 if versions else 0,
        **fields,
        "status": "pending",
        "replaced_at": None,
        "error": None,
    }
    return {**row, "_id": ctx.db.insert("entries", row)}, ns, True


def _insert_chunks(
    ctx: MutationCtx,
    entry: Doc,
    ns: Doc,
    start_order: int,
    chunks: Sequence[Doc],
    *,
    live: bool = False,
) -> None:
    """Insert chunks from ``start_order``: ``live`` (searchable, vector indexed) or staged."""
    if not live:  # a retried batch overwrites, never doubles
        for old in entry_chunks(ctx, entry["_id"], start_order, start_order + len(chunks)):
            ctx.db.delete(old["_id"])
    filters = filter_fields(ns["_id"], ns["filter_names"], entry["filter_values"])
    size = vector_size(ns["dimensions"])
    for offset, chunk in enumerate(chunks):
        doc = {
            "entry_id": entry["_id"],
            "namespace_id": ns["_id"],
            "order": start_order + offset,
            "text": chunk["text"],
            "searchable": None,
            "staged": chunk.get("vector"),
            **filters,
        }
        if live:
            doc["searchable"], doc["staged"] = chunk["text"], None
            doc[vector_field(size)] = stored_vector(chunk["vector"], entry["importance"], size)
        ctx.db.insert("chunks", doc)


def entry_chunks(ctx: QueryCtx, entry_id: str, start: int = 0, end: int | None = None) -> list[Doc]:
    """The chunks of an entry with ``start <= order < end``, in order."""
    if end is None:
        bounds: Any = lambda q: q.eq("entry_id", entry_id).gte("order", start)  # noqa: E731
    else:
        bounds = lambda q: q.eq("entry_id", entry_id).gte("order", start).lt("order", end)  # noqa: E731
    found: list[Doc] = ctx.db.query("chunks").with_index("by_entry", bounds).collect()
    return found


@component.mutation
def add_chunks(
    ctx: MutationCtx, entry_id: str, start_order: int, chunks: list[dict[str, Any]]
) -> None:
    """Stage a batch of a pending entry's chunks (with their embeddings, when known)."""
    entry = _require_entry(ctx, entry_id)
    if entry["status"] != "pending":
        return
    ns = ctx.db.get(entry["namespace_id"])
    _insert_chunks(ctx, entry, ns or {}, start_order, chunks)


@component.mutation
def stage_vectors(
    ctx: MutationCtx, entry_id: str, start_order: int, vectors: list[list[float]]
) -> None:
    """Attach embeddings to a pending entry's chunks from ``start_order`` on."""
    entry = _require_entry(ctx, entry_id)
    if entry["status"] != "pending":
        return
    for chunk in entry_chunks(ctx, entry_id, start_order, start_order + len(vectors)):
        ctx.db.patch(chunk["_id"], {"staged": vectors[chunk["order"] - start_order]})


@component.query
def unembedded_chunks(ctx: QueryCtx, entry_id: str, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` chunks of a pending entry that have no embedding yet."""
    out: list[Doc] = []
    for chunk in ctx.db.query("chunks").with_index(
        "by_entry", lambda q: q.eq("entry_id", entry_id)
    ):
        if chunk["staged"] is None and chunk["searchable"] is None:
            out.append({"order": chunk["order"], "text": chunk["text"]})
            if len(out) >= limit:
                break
    return out


@component.mutation
def finish_entry(ctx: MutationCtx, entry_id: str) -> dict[str, Any]:
    """Promote a pending entry whose chunks are all staged (the atomic swap)."""
    entry = _require_entry(ctx, entry_id)
    if entry["status"] != "pending":
        return _result(entry, True)
    ns = ctx.db.get(entry["namespace_id"])
    return _promote(ctx, entry, ns or {})


def _require_entry(ctx: QueryCtx, entry_id: str) -> Doc:
    entry = _get_entry(ctx, entry_id)
    if entry is None:
        raise EntryNotFoundError(entry_id)
    return entry


def _get_entry(ctx: QueryCtx, entry_id: str) -> Doc | None:
    normalized = ctx.db.normalize_id("entries", entry_id)
    return None if normalized is None else ctx.db.get(normalized)


def _promote(ctx: MutationCtx, entry: Doc, ns: Doc, *, staged: bool = True) -> Doc:
    """Make ``entry`` the key's searchable version in this one transaction (see the module).

    ``staged``: its chunks wait with their embeddings in ``staged`` (else they are live).
    """
    previous: Doc | None = None
    newer_ready = False
    stale_pending: list[Doc] = []
    if entry["key"] is not None:
        for other in _versions(ctx, entry["namespace_id"], entry["key"]):
            if other["_id"] == entry["_id"]:
                continue
            if other["status"] == "ready":
                if other["version"] > entry["version"]:
                    newer_ready = True
                else:
                    previous = other
            elif other["status"] == "pending" and other["version"] < entry["version"]:
                stale_pending.append(other)
    if newer_ready:  # a later version won already: this one never goes live
        _set_status(ctx, entry, "replaced")
        _notify(ctx, entry, ns, None, None)
        return _result(entry, True)
    if staged:
        _go_live(ctx, entry, ns)
    if previous is not None:
        _retire(ctx, previous, ns)
    _set_status(ctx, entry, "ready")
    _notify(ctx, entry, ns, previous, None)
    for other in stale_pending:  # an older add still in progress lost the race
        _set_status(ctx, other, "replaced")
        _notify(ctx, other, ns, None, None)
    return _result(entry, True, previous)


def _go_live(ctx: MutationCtx, entry: Doc, ns: Doc) -> None:
    """Move a staged entry's embeddings into its vector field and its text into the index."""
    size = vector_size(ns["dimensions"])
    chunks = entry_chunks(ctx, entry["_id"])
    missing = sum(1 for c in chunks if c["staged"] is None)
    if len(chunks) != entry["chunk_count"] or missing:
        raise EntryIncompleteError(entry["_id"], len(chunks) - missing, entry["chunk_count"])
    for chunk in chunks:
        ctx.db.patch(
            chunk["_id"],
            {
                "searchable": chunk["text"],
                "staged": None,
                vector_field(size): stored_vector(chunk["staged"], entry["importance"], size),
            },
        )


def _set_status(ctx: MutationCtx, entry: Doc, status: str) -> None:
    patch: Doc = {"status": status}
    if status == "replaced":
        patch["replaced_at"] = ctx.now
    ctx.db.patch(entry["_id"], patch)
    entry.update(patch)


def _retire(ctx: MutationCtx, entry: Doc, ns: Doc) -> None:
    """Take a ready entry out of both indexes and mark it replaced (its chunks stay)."""
    field = vector_field(vector_size(ns["dimensions"]))
    for chunk in entry_chunks(ctx, entry["_id"]):
        ctx.db.patch(chunk["_id"], {"searchable": None, field: None})
    _set_status(ctx, entry, "replaced")


def _notify(ctx: MutationCtx, entry: Doc, ns: Doc, replaced: Doc | None, error: str | None) -> None:
    """Run the entry's ``on_complete`` in this transaction (once: it leaves ``pending`` once)."""
    if entry["on_complete"] is None:
        return
    args = {
        "namespace": ns.get("name", ""),
        "entry": public_entry(ctx, entry, ns.get("name", "")),
        "replaced_entry": None if replaced is None else public_entry(ctx, replaced, ns["name"]),
        "error": error,
    }
    ctx.run_mutation(entry["on_complete"], args)


# -- reading and deleting -------------------------------------------------------------------


@component.query
def get_entry(ctx: QueryCtx, entry_id: str) -> dict[str, Any] | None:
    """An entry's fields, or ``None``."""
    entry = _get_entry(ctx, entry_id)
    return None if entry is None else public_entry(ctx, entry)


@component.query
def list_entries(
    ctx: QueryCtx,
    namespace: dict[str, Any],
    status: str,
    cursor: str | None,
    num_items: int,
) -> dict[str, Any]:
    """One page of the namespace's entries with ``status``, oldest first."""
    ns = _find_namespace(ctx, namespace)
    if ns is None:
        return {"page": [], "continue_cursor": "", "is_done": True}
    page = (
        ctx.db.query("entries")
        .with_index("by_status", lambda q: q.eq("namespace_id", ns["_id"]).eq("status", status))
        .paginate(cursor, num_items)
    )
    return {
        "page": [public_entry(ctx, e, ns["name"]) for e in page.page],
        "continue_cursor": page.continue_cursor,
        "is_done": page.is_done,
    }


def _with_status(ctx: QueryCtx, namespace_id: str, status: str) -> list[Doc]:
    found: list[Doc] = (
        ctx.db.query("entries")
        .with_index("by_status", lambda q: q.eq("namespace_id", namespace_id).eq("status", status))
        .collect()
    )
    return found


def _delete(ctx: MutationCtx, entry: Doc) -> None:
    for chunk in entry_chunks(ctx, entry["_id"]):
        ctx.db.delete(chunk["_id"])
    ctx.db.delete(entry["_id"])


@component.mutation
def delete_entry(ctx: MutationCtx, entry_id: str) -> bool:
    """Delete an entry with its chunks and vectors; false if there was none."""
    entry = _get_entry(ctx, entry_id)
    if entry is None:
        return False
    _delete(ctx, entry)
    return True


@component.mutation
def delete_by_key(ctx: MutationCtx, namespace: dict[str, Any], key: str) -> int:
    """Delete every version of ``key`` in the namespace; how many entries went."""
    ns = _find_namespace(ctx, namespace)
    if ns is None:
        return 0
    versions = _versions(ctx, ns["_id"], key)
    for entry in versions:
        _delete(ctx, entry)
    return len(versions)


@component.mutation
def delete_namespace(ctx: MutationCtx, name: str) -> int:
    """Delete every version of a namespace with all its entries; how many entries went."""
    count = 0
    for ns in _namespaces(ctx, name):
        for status in STATUSES:
            for entry in _with_status(ctx, ns["_id"], status):
                _delete(ctx, entry)
                count += 1
        ctx.db.delete(ns["_id"])
    return count
