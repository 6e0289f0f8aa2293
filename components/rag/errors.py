"""Owns the rag component's errors: refused text, chunks, filters and embeddings.

The tree (under ``core``'s)::

    InvalidArgumentError (400)
    ├── EmptyTextError          text to chunk or add is empty or only whitespace
    ├── ChunkTooLargeError      a chunk is over the token limit
    ├── UnknownFilterError      a filter name the RAG was not configured with
    ├── EmbeddingSizeError      the embedder returned vectors of the wrong length or count
    ├── EmbedderMismatchError   a namespace holds nothing embedded with this RAG's embedder
    └── EntryNotFoundError      no entry has the id given
    UserError (500)
    ├── RAGConfigError          a rag option is configured wrongly (e.g. chunker sizes)
    └── EntryIncompleteError    an entry was promoted before all its chunks were embedded
"""

from __future__ import annotations

from collections.abc import Sequence

from core import InvalidArgumentError, UserError


class EmptyTextError(InvalidArgumentError):
    """Raised when the text to chunk or add is empty or only whitespace."""

    code = "empty_text"

    def __init__(self, argument: str = "text"):
        super().__init__(
            f'Argument "{argument}" is empty or only whitespace; there is nothing to chunk. '
            "Pass text with some content.",
            argument=argument,
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.argument,))


class ChunkTooLargeError(InvalidArgumentError):
    """Raised when a chunk is over the token limit (chunks are embedded whole)."""

    code = "chunk_too_large"

    def __init__(self, index: int, tokens: int, maximum: int, argument: str = "chunks"):
        self.index = index
        self.tokens = tokens
        self.maximum = maximum
        super().__init__(
            f'Chunk {index} of "{argument}" is {tokens:,} tokens; the limit is {maximum:,}. '
            "Split it, or pass text and let the chunker split it.",
            argument=argument,
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.index, self.tokens, self.maximum, self.argument))


class UnknownFilterError(InvalidArgumentError):
    """Raised when a filter name is not one of the RAG's ``filter_names``."""

    code = "unknown_filter"

    def __init__(self, name: str, known: Sequence[str], argument: str = "filters"):
        self.name = name
        self.known = list(known)
        super().__init__(
            f'Filter "{name}" in "{argument}" is not one of this RAG\'s filter names '
            f"{self.known}; declare it in RAG(..., filter_names=[...]).",
            argument=argument,
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.name, self.known, self.argument))


class EmbeddingSizeError(InvalidArgumentError):
    """Raised when the embedder returns the wrong number of vectors or a vector of wrong length."""

    code = "embedding_size"

    def __init__(self, model_id: str, expected: int, got: int, what: str = "dimensions"):
        self.model_id = model_id
        self.expected = expected
        self.got = got
        self.what = what
        super().__init__(
            f'Embedder "{model_id}" returned {got:,} {what} where {expected:,} were expected; '
            "nothing was stored. Check the embedder's dimensions.",
            argument="embedder",
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.model_id, self.expected, self.got, self.what))


class EmbedderMismatchError(InvalidArgumentError):
    """Raised when a search's namespace holds entries, but none embedded with this embedder."""

    code = "embedder_mismatch"

    def __init__(self, namespace: str, model_id: str, dimensions: int, found: Sequence[str]):
        self.namespace = namespace
        self.model_id = model_id
        self.dimensions = dimensions
        self.found = list(found)
        super().__init__(
            f'Namespace "{namespace}" has nothing embedded with model "{model_id}" '
            f"({dimensions} dimensions) and these filter names; it holds entries from "
            f"{', '.join(self.found)}. Search through a RAG with that embedder, or add the "
            "entries again with this one.",
            argument="namespace",
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.namespace, self.model_id, self.dimensions, self.found))


class RAGConfigError(UserError):
    """Raised when a rag option is configured wrongly (e.g. chunker sizes out of order)."""

    code = "rag_config"


class EntryNotFoundError(InvalidArgumentError):
    """Raised when no entry has the id given (to add chunks to, or to finish)."""

    code = "entry_not_found"

    def __init__(self, entry_id: str):
        self.entry_id = entry_id
        super().__init__(f'There is no rag entry "{entry_id}".', argument="entry_id")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.entry_id,))


class EntryIncompleteError(UserError):
    """Raised when an entry is promoted before all its chunks are embedded."""

    code = "entry_incomplete"

    def __init__(self, entry_id: str, embedded: int, expected: int):
        self.entry_id = entry_id
        self.embedded = embedded
        self.expected = expected
        super().__init__(
            f'Rag entry "{entry_id}" has {embedded:,} of its {expected:,} chunks embedded; '
            "stage them all before finishing it."
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.entry_id, self.embedded, self.expected))
