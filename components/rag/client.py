"""Owns ``RAG``, the class app code uses to add, search, list and delete documents.

Methods take the caller's ``ctx`` first. ``add`` and ``search`` embed text, so they run from
actions and return awaitables; ``add_async``, ``get_entry``, ``list`` and the deletes also
work from queries and mutations (synchronously, inside the caller's transaction).

``add`` chunks (``chunker``), checks and hashes the chunks, returns at once if the key's ready
version has the same content, embeds in the action (outside any transaction), then writes:
an entry of up to ``commit_chunks`` chunks in one mutation that also swaps it in; a larger
one staged in batches of ``batch_size`` chunks (embedding the next batch while the previous
one is written), then swapped in by one mutation. If anything fails before the swap, the
staged version is deleted: nothing is stored.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from components.models import Embedder
from components.rag.chunking import DEFAULT_MAX_TOKENS, Chunker, TokenChunker, check_chunks
from components.rag.chunking import default_chunker as _default_chunker
from components.rag.embedding import EmbedBatcher, embedder_binding
from components.rag.errors import EmptyTextError, RAGConfigError
from components.rag.indexing import (
    check_filter_names,
    check_filter_values,
    check_filters,
    content_hash,
    vector_size,
)
from components.rag.ranking import (
    check_chunk_context,
    check_importance,
    check_threshold,
    check_weight,
)
from core import (
    ActionCtx,
    ComponentHandle,
    InvalidArgumentError,
    MutationCtx,
    Page,
    QueryCtx,
    UserError,
    call,
    function_handle,
)

Ctx = QueryCtx | MutationCtx | ActionCtx
MODES = ("hybrid", "vector", "text")
STATUSES = ("pending", "ready", "replaced")


@dataclass(frozen=True, slots=True, kw_only=True)
class AddResult:
    """What ``add`` / ``add_async`` did."""

    entry_id: str
    """The entry holding the content (the existing one when nothing changed)."""
    status: str
    """``"ready"``, ``"pending"`` (``add_async``: not embedded yet) or ``"replaced"`` (a newer
    version of the key won meanwhile)."""
    created: bool
    """False when the key's ready version already had this content: nothing was written."""
    replaced_entry_id: str | None
    """The version this one replaced, if any."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One version of a document in a namespace."""

    entry_id: str
    namespace: str
    key: str | None
    title: str | None
    metadata: Any
    filter_values: dict[str, Any]
    importance: float
    status: str
    """``"pending"``, ``"ready"`` or ``"replaced"``."""
    content_hash: str
    """Hash of the chunks, title, importance and filter values."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchResult:
    """One hit with its ``chunk_context`` window."""

    entry_id: str
    order: int
    """The order of the chunk that matched."""
    start_order: int
    """The order of ``content[0]``."""
    content: list[str]
    """The chunks ``start_order`` .. ``start_order + len(content) - 1``."""
    score: float
    """Vector: cosine × importance. Text: positional, 1.0 for the top. Hybrid: fused, in
    (0, 1], higher first."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchResponse:
    """What ``search`` found."""

    results: list[SearchResult]
    """Best first."""
    entries: list[Entry]
    """The distinct entries of the results, in result order."""
    text: str
    """The results rendered for a prompt (see ``render_text``)."""


def render_text(results: Sequence[SearchResult], entries: Sequence[Entry]) -> str:
    r"""Results as prompt text, entry by entry in ``entries`` order.

    Each entry is ``## title:`` and a blank line (when titled), then its windows by order,
    joined by a newline when contiguous and by ``\n...\n`` across a gap; entries are apart by
    ``\n\n---\n\n``.
    """
    parts = []
    for entry in entries:
        windows = sorted(
            (r for r in results if r.entry_id == entry.entry_id), key=lambda r: r.start_order
        )
        body = ""
        end = None
        for window in windows:
            if end is not None:
                body += "\n" if window.start_order == end else "\n...\n"
            body += "\n".join(window.content)
            end = window.start_order + len(window.content)
        parts.append(f"## {entry.title}:\n\n{body}" if entry.title else body)
    return "\n\n---\n\n".join(parts)


def _entry(doc: Mapping[str, Any]) -> Entry:
    return Entry(**{**doc, "entry_id": str(doc["entry_id"])})


class RAG:
    """Documents chunked, embedded and searchable by vector, text (BM25) or both.

    Example::

        docs = RAG(app.use(rag_component, name="docs"), embedder=HashingEmbedder(),
                   filter_names=["category"])

        @app.action
        async def ask(ctx: ActionCtx, question: str) -> str:
            found = await docs.search(ctx, namespace="global", query=question, limit=5)
            return found.text

    Args:
        handle: what ``app.use(component)`` returned.
        embedder: embeds chunks and queries; the namespace is tied to its ``model_id`` and
            ``dimensions``.
        filter_names: up to four names entries may be filtered by.
        chunker: splits text into chunks (``default_chunker`` otherwise).
        batch_size: chunks embedded and staged per batch.
        commit_chunks: entries with at most this many chunks are written in one mutation.

    Raises:
        RAGConfigError: more than four or repeated filter names, an embedder with more than
            4,095 dimensions, or a batch size under 1.
    """

    def __init__(
        self,
        handle: ComponentHandle,
        *,
        embedder: Embedder,
        filter_names: Sequence[str] | None = None,
        chunker: Chunker | None = None,
        batch_size: int = 256,
        commit_chunks: int = 256,
    ):
        self.handle = handle
        self.embedder = embedder
        self.filter_names = check_filter_names(filter_names)
        self.chunker: Chunker = chunker or _default_chunker
        for name, value in (("batch_size", batch_size), ("commit_chunks", commit_chunks)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RAGConfigError(f"RAG {name} must be a positive int, not {value!r}.")
        self.batch_size = batch_size
        self.commit_chunks = commit_chunks
        self._batcher = EmbedBatcher(embedder, max_texts=batch_size)
        self._hints: dict[str, Any] = {}
        """The last namespace lookup per name: searches pass it on and skip the lookup (the
        component checks it and looks up again if it is out of date)."""
        vector_size(embedder.dimensions)  # refuses an embedder too wide to store
        # The instance's add_async jobs embed with this; one binding per model, so RAGs with
        # other embedders on the same instance (a migration) keep theirs apart.
        self.binding = embedder_binding(embedder)
        if self.binding not in handle.bindings:
            handle.bind(self.binding, embedder)

    @property
    def _namespace_fields(self) -> dict[str, Any]:
        return {
            "model_id": self.embedder.model_id,
            "dimensions": self.embedder.dimensions,
            "filter_names": self.filter_names,
        }

    def _namespace(self, name: Any) -> dict[str, Any]:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(
                f'Argument "namespace" must be a non-empty str, not {name!r}.',
                argument="namespace",
            )
        return {"name": name, **self._namespace_fields}

    # -- adding ---------------------------------------------------------------------------

    def _prepare(
        self,
        *,
        namespace: str,
        key: str | None,
        text: str | None,
        chunks: Sequence[str] | None,
        title: str | None,
        metadata: Any,
        filter_values: Mapping[str, Any] | None,
        importance: float,
        chunker: Chunker | None,
    ) -> dict[str, Any]:
        """Check every argument and chunk the text: the add, ready to embed and write."""
        ns = self._namespace(namespace)
        if key is not None and not isinstance(key, str):
            raise InvalidArgumentError(
                f'Argument "key" must be a str, not {key!r}.', argument="key"
            )
        if title is not None and not isinstance(title, str):
            raise InvalidArgumentError(
                f'Argument "title" must be a str, not {title!r}.', argument="title"
            )
        values = check_filter_values(filter_values, self.filter_names)
        weight = check_importance(importance)
        if (text is None) == (chunks is None):
            raise InvalidArgumentError('Pass exactly one of "text" and "chunks".', argument="text")
        split = chunker or self.chunker
        max_tokens = split.max_tokens if isinstance(split, TokenChunker) else DEFAULT_MAX_TOKENS
        if text is not None:
            if not isinstance(text, str) or not text.strip():
                raise EmptyTextError("text")
            pieces = check_chunks(split(text), max_tokens=max_tokens, argument="text")
        else:
            pieces = check_chunks(list(chunks or []), max_tokens=max_tokens)
        return {
            "namespace": ns,
            "key": key,
            "title": title,
            "metadata": metadata,
            "filter_values": values,
            "importance": weight,
            "content_hash": content_hash(
                pieces, title=title, importance=weight, filter_values=values
            ),
            "chunk_count": len(pieces),
            "chunks": pieces,
        }

    def add(
        self,
        ctx: ActionCtx,
        *,
        namespace: str,
        key: str | None = None,
        text: str | None = None,
        chunks: Sequence[str] | None = None,
        title: str | None = None,
        metadata: Any = None,
        filter_values: Mapping[str, Any] | None = None,
        importance: float = 1.0,
        on_complete: Any = None,
        chunker: Chunker | None = None,
    ) -> Awaitable[AddResult]:
        """Chunk, embed and store a document (from an action); see the module docstring.

        Same ``key`` and same content as its ready version: nothing is written, ``created`` is
        false and ``on_complete`` is not called. Changed content: the new version replaces
        the old one in one transaction.

        Raises:
            EmptyTextError: empty text or an empty chunk.
            ChunkTooLargeError: a chunk over the chunker's ``max_tokens``.
            UnknownFilterError: a filter name not in ``filter_names``.
            EmbeddingSizeError: the embedder returned vectors of the wrong length.
        """
        if not isinstance(ctx, ActionCtx):
            raise UserError(
                "RAG.add embeds text, so it runs from an action; from a mutation use add_async."
            )
        add = self._prepare(
            namespace=namespace,
            key=key,
            text=text,
            chunks=chunks,
            title=title,
            metadata=metadata,
            filter_values=filter_values,
            importance=importance,
            chunker=chunker,
        )
        callback = None if on_complete is None else function_handle(ctx, on_complete)
        return self._add(ctx, add, callback)

    def add_async(
        self,
        ctx: MutationCtx | ActionCtx,
        *,
        namespace: str,
        key: str | None = None,
        text: str | None = None,
        chunks: Sequence[str] | None = None,
        title: str | None = None,
        metadata: Any = None,
        filter_values: Mapping[str, Any] | None = None,
        importance: float = 1.0,
        on_complete: Any = None,
        chunker: Chunker | None = None,
    ) -> Any:
        """Like ``add``, but the embedding runs later, in the component's work pool.

        Works from a mutation (in its transaction) or an action. The entry is ``pending``
        (unsearchable; the key's previous version stays live) until its chunks are embedded,
        then swapped in atomically, as by ``add``; ``on_complete`` runs then, or with the
        error if embedding fails for good. Same key and content as the ready version: nothing
        is written, ``created`` is false.

        Raises:
            EmptyTextError: empty text or an empty chunk.
            ChunkTooLargeError: a chunk over the chunker's ``max_tokens``.
            UnknownFilterError: a filter name not in ``filter_names``.
        """
        add = self._prepare(
            namespace=namespace,
            key=key,
            text=text,
            chunks=chunks,
            title=title,
            metadata=metadata,
            filter_values=filter_values,
            importance=importance,
            chunker=chunker,
        )
        add.pop("chunk_count")
        add["on_complete"] = None if on_complete is None else function_handle(ctx, on_complete)
        add["embedder"] = self.binding
        return call(ctx, self.handle.add_async, add, then=_add_result)

    async def _add(self, ctx: ActionCtx, add: dict[str, Any], on_complete: str | None) -> AddResult:
        pieces: list[str] = add.pop("chunks")
        if add["key"] is not None:
            same = await ctx.run_query(
                self.handle.find_same,
                {
                    "namespace": add["namespace"],
                    "key": add["key"],
                    "content_hash": add["content_hash"],
                },
            )
            if same is not None:
                return _add_result(same)
        add["on_complete"] = on_complete
        if len(pieces) <= self.commit_chunks:
            vectors = await self.embed(pieces)
            add["chunks"] = [{"text": t, "vector": v} for t, v in zip(pieces, vectors, strict=True)]
            return _add_result(await ctx.run_mutation(self.handle.add_entry, add))
        started = await ctx.run_mutation(self.handle.add_entry, {**add, "chunks": None})
        if not started["created"]:
            return _add_result(started)
        entry_id = started["entry_id"]
        try:
            await self._stage(ctx, entry_id, pieces)
            return _add_result(
                await ctx.run_mutation(self.handle.finish_entry, {"entry_id": entry_id})
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await ctx.run_mutation(self.handle.delete_entry, {"entry_id": entry_id})
            raise

    async def _stage(self, ctx: ActionCtx, entry_id: str, pieces: list[str]) -> None:
        """Embed batch ``i + 1`` while batch ``i`` is written."""
        send, receive = anyio.create_memory_object_stream[tuple[int, list[dict[str, Any]]]](1)

        async def write() -> None:
            async with receive:
                async for start, chunks in receive:
                    args = {"entry_id": entry_id, "start_order": start, "chunks": chunks}
                    await ctx.run_mutation(self.handle.add_chunks, args)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(write)
                async with send:
                    for start in range(0, len(pieces), self.batch_size):
                        batch = pieces[start : start + self.batch_size]
                        vectors = await self.embed(batch)
                        chunks = [
                            {"text": t, "vector": v} for t, v in zip(batch, vectors, strict=True)
                        ]
                        await send.send((start, chunks))
        except BaseExceptionGroup as group:  # one failure: the caller sees it as it was
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """The embedder's vectors for ``texts``, checked, sharing calls with concurrent adds.

        Raises:
            EmbeddingSizeError: the embedder returned the wrong number or length of vectors.
        """
        return await self._batcher.embed(texts)

    # -- searching ------------------------------------------------------------------------

    def search(
        self,
        ctx: ActionCtx,
        *,
        namespace: str,
        query: str,
        limit: int = 10,
        mode: str = "hybrid",
        filters: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        chunk_context: tuple[int, int] = (0, 0),
        vector_score_threshold: float | None = None,
        text_weight: float = 1.0,
        vector_weight: float = 1.0,
    ) -> Awaitable[SearchResponse]:
        """Search a namespace (from an action); see DESIGN.md "rag" for the semantics.

        Raises:
            UnknownFilterError: a filter name not in ``filter_names``.
            EmbedderMismatchError: the namespace holds entries, but none embedded with this
                RAG's embedder.
        """
        if not isinstance(ctx, ActionCtx):
            raise UserError("RAG.search embeds the query, so it runs from an action.")
        if mode not in MODES:
            raise InvalidArgumentError(
                f'Argument "mode" must be one of {builtins.list(MODES)}, not {mode!r}.',
                argument="mode",
            )
        if not isinstance(query, str):
            raise InvalidArgumentError(
                f'Argument "query" must be a str, not {query!r}.', argument="query"
            )
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= 256:
            raise InvalidArgumentError(
                f'Argument "limit" must be an int from 0 to 256, not {limit!r}.', argument="limit"
            )
        args = {
            "namespace": self._namespace(namespace),
            "query": query,
            "vector": None,
            "mode": mode,
            "limit": limit,
            "filters": check_filters(filters, self.filter_names),
            "chunk_context": builtins.list(check_chunk_context(chunk_context)),
            "vector_score_threshold": check_threshold(vector_score_threshold),
            "text_weight": check_weight("text_weight", text_weight),
            "vector_weight": check_weight("vector_weight", vector_weight),
        }
        if mode == "hybrid" and not (args["text_weight"] or args["vector_weight"]):
            raise InvalidArgumentError(
                'Arguments "vector_weight" and "text_weight" are both 0; a hybrid search needs '
                "at least one positive weight.",
                argument="vector_weight",
            )
        return self._search(ctx, args)

    async def _search(self, ctx: ActionCtx, args: dict[str, Any]) -> SearchResponse:
        if args["mode"] != "text" and args["limit"] > 0:
            args["vector"] = (await self.embed([args["query"] or " "]))[0]
        name = args["namespace"]["name"]
        found = await ctx.run_action(self.handle.search, {**args, "hint": self._hints.get(name)})
        self._hints[name] = found["lookup"]
        results = [SearchResult(**{**r, "entry_id": str(r["entry_id"])}) for r in found["results"]]
        entries = [_entry(e) for e in found["entries"]]
        return SearchResponse(results=results, entries=entries, text=render_text(results, entries))

    # -- reading and deleting -------------------------------------------------------------

    def get_entry(self, ctx: Ctx, entry_id: str) -> Any:
        """The entry, or ``None`` (an awaitable from an action)."""
        return call(
            ctx,
            self.handle.get_entry,
            {"entry_id": entry_id},
            then=lambda doc: None if doc is None else _entry(doc),
        )

    def list(
        self,
        ctx: Ctx,
        *,
        namespace: str,
        status: str = "ready",
        cursor: str | None = None,
        num_items: int = 100,
    ) -> Any:
        """One ``Page`` of this RAG's entries in ``namespace`` with ``status``, oldest first."""
        if status not in STATUSES:
            raise InvalidArgumentError(
                f'Argument "status" must be one of {builtins.list(STATUSES)}, not {status!r}.',
                argument="status",
            )
        args = {
            "namespace": self._namespace(namespace),
            "status": status,
            "cursor": cursor,
            "num_items": num_items,
        }
        return call(
            ctx,
            self.handle.list_entries,
            args,
            then=lambda page: Page(
                page=[_entry(e) for e in page["page"]],  # type: ignore[misc]
                continue_cursor=page["continue_cursor"],
                is_done=page["is_done"],
            ),
        )

    def delete(self, ctx: MutationCtx | ActionCtx, entry_id: str) -> Any:
        """Delete an entry with its chunks from both indexes; ``False`` if there was none."""
        return call(ctx, self.handle.delete_entry, {"entry_id": entry_id})

    def delete_by_key(self, ctx: MutationCtx | ActionCtx, *, namespace: str, key: str) -> Any:
        """Delete every version of ``key``; how many entries went."""
        args = {"namespace": self._namespace(namespace), "key": key}
        return call(ctx, self.handle.delete_by_key, args)

    def delete_namespace(self, ctx: MutationCtx | ActionCtx, namespace: str) -> Any:
        """Delete a namespace (every embedder's version) with all its entries."""
        self._namespace(namespace)
        return call(ctx, self.handle.delete_namespace, {"name": namespace})


def _add_result(doc: Mapping[str, Any]) -> AddResult:
    replaced = doc["replaced_entry_id"]
    return AddResult(
        entry_id=str(doc["entry_id"]),
        status=doc["status"],
        created=doc["created"],
        replaced_entry_id=None if replaced is None else str(replaced),
    )
