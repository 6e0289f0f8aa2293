"""Retrieval-augmented generation: namespaces, entries, chunking, embedding, hybrid search.

So far the pure parts: ``TokenChunker`` / ``default_chunker`` (any ``Chunker`` callable can
replace it) and the fusion arithmetic in ``components.rag.ranking``.
"""

from __future__ import annotations

from components.rag.chunking import Chunker, TokenChunker, default_chunker
from components.rag.errors import ChunkTooLargeError, EmptyTextError, RAGConfigError

__all__ = [
    "ChunkTooLargeError",
    "Chunker",
    "EmptyTextError",
    "RAGConfigError",
    "TokenChunker",
    "default_chunker",
]
