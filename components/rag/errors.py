"""Owns the rag component's errors: refused text and chunks, and misconfigured options.

The tree (under ``core``'s)::

    InvalidArgumentError (400)
    ├── EmptyTextError          text to chunk or add is empty or only whitespace
    └── ChunkTooLargeError      a chunk is over the token limit
    UserError (500)
    └── RAGConfigError          a rag option is configured wrongly (e.g. chunker sizes)
"""

from __future__ import annotations

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


class RAGConfigError(UserError):
    """Raised when a rag option is configured wrongly (e.g. chunker sizes out of order)."""

    code = "rag_config"
