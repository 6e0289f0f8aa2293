"""Retrieval-augmented generation: namespaces, entries, chunking, embedding, hybrid search.

``RAG(app.use(component, name="docs"), embedder=..., filter_names=[...])`` is what app code
uses. The pure parts live apart: ``TokenChunker`` / ``default_chunker`` (any ``Chunker``
callable can replace it) in ``components.rag.chunking``, and the fusion arithmetic in
``components.rag.ranking``.
"""

from __future__ import annotations

from components.rag import ingest as _ingest  # noqa: F401  (registers add_async's functions)
from components.rag import search as _search  # noqa: F401  (registers the search functions)
from components.rag.chunking import Chunker, TokenChunker, default_chunker
from components.rag.client import RAG, AddResult, Entry, SearchResponse, SearchResult, render_text
from components.rag.component import component
from components.rag.errors import (
    ChunkTooLargeError,
    EmbedderMismatchError,
    EmbeddingSizeError,
    EmptyTextError,
    EntryIncompleteError,
    EntryNotFoundError,
    RAGConfigError,
    UnknownFilterError,
)

__all__ = [
    "AddResult",
    "ChunkTooLargeError",
    "Chunker",
    "EmbedderMismatchError",
    "EmbeddingSizeError",
    "EmptyTextError",
    "Entry",
    "EntryIncompleteError",
    "EntryNotFoundError",
    "RAG",
    "RAGConfigError",
    "SearchResponse",
    "SearchResult",
    "TokenChunker",
    "UnknownFilterError",
    "component",
    "default_chunker",
    "render_text",
]
