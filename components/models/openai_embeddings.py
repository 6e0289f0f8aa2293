"""Owns ``OpenAIEmbedder``: OpenAI embeddings (or any OpenAI-compatible server), batched.

Texts are checked and counted locally (``tokens``), cut into batches within OpenAI's limits
(2,048 inputs, 300,000 tokens per request; 8,191 tokens per input), sent one batch after
another with retries, and the vectors come back in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from components.models.errors import EmbeddingError, ModelConfigError
from components.models.openai import OpenAIClients
from components.models.retries import Backoff, with_retries
from components.models.tokens import count_tokens

if TYPE_CHECKING:
    from openai import AsyncOpenAI

KNOWN_EMBEDDING_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
"""Native vector lengths of OpenAI's embedding models."""

MAX_BATCH_INPUTS = 2048
"""OpenAI's limit on inputs per embeddings request."""
MAX_BATCH_TOKENS = 300_000
"""OpenAI's limit on the tokens of all inputs of one embeddings request."""
MAX_INPUT_TOKENS = 8191
"""OpenAI's limit on the tokens of one input."""


def plan_batches(token_counts: Sequence[int], *, max_inputs: int, max_tokens: int) -> list[range]:
    """Consecutive index ranges, each within ``max_inputs`` inputs and ``max_tokens`` tokens."""
    batches: list[range] = []
    start = tokens = 0
    for index, count in enumerate(token_counts):
        if index > start and (index - start >= max_inputs or tokens + count > max_tokens):
            batches.append(range(start, index))
            start, tokens = index, 0
        tokens += count
    if start < len(token_counts):
        batches.append(range(start, len(token_counts)))
    return batches


class OpenAIEmbedder:
    """An ``Embedder`` on OpenAI embeddings (or any OpenAI-compatible server).

    Texts are sent in batches of at most ``max_batch_inputs`` inputs and
    ``max_batch_tokens`` tokens (counted locally), one batch after another, each retried per
    ``backoff``; vectors come back in input order.

    Args:
        model: the embedding model.
        dimensions: shorter vectors from a ``text-embedding-3`` model (sent to the API), or
            the vector length of a model this class does not know (checked, not sent).
        client: an ``openai.AsyncOpenAI`` to use (default: one from the environment).
        backoff: how 429s, 5xx and connection failures are retried.

    Raises:
        ModelConfigError: the dimensions are unknown, or impossible for the model.
    """

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        dimensions: int | None = None,
        client: AsyncOpenAI | None = None,
        backoff: Backoff | None = None,
        max_batch_inputs: int = MAX_BATCH_INPUTS,
        max_batch_tokens: int = MAX_BATCH_TOKENS,
        max_input_tokens: int = MAX_INPUT_TOKENS,
    ):
        native = KNOWN_EMBEDDING_DIMENSIONS.get(model)
        if dimensions is None and native is None:
            raise ModelConfigError(
                f'The vector length of embedding model "{model}" is not known; pass '
                "dimensions=<its length>.",
                model=model,
            )
        if dimensions is not None and (dimensions < 1 or (native and dimensions > native)):
            raise ModelConfigError(
                f'Embedding model "{model}" cannot make vectors of {dimensions} dimensions'
                + (f" (at most {native})." if native else "."),
                model=model,
            )
        if model == "text-embedding-ada-002" and dimensions not in (None, native):
            raise ModelConfigError(
                f'Embedding model "{model}" always makes {native}-dimensional vectors.',
                model=model,
            )
        self.model_id = model
        self.dimensions = dimensions or native or 0
        self._send_dimensions = dimensions is not None and model.startswith("text-embedding-3")
        self.backoff = backoff or Backoff()
        self.max_batch_inputs = max_batch_inputs
        self.max_batch_tokens = max_batch_tokens
        self.max_input_tokens = max_input_tokens
        self._clients = OpenAIClients(client, model=model)

    def _token_counts(self, texts: Sequence[str]) -> list[int]:
        counts = []
        for index, text in enumerate(texts):
            if not isinstance(text, str) or not text:
                raise EmbeddingError(
                    f"Text {index} to embed is {'empty' if text == '' else repr(text)}; "
                    "every text must be a non-empty string.",
                    model=self.model_id,
                    index=index,
                )
            count = count_tokens(text, self.model_id)
            if count > self.max_input_tokens:
                raise EmbeddingError(
                    f'Text {index} is {count:,} tokens; model "{self.model_id}" takes at most '
                    f"{self.max_input_tokens:,} per text. Split it first (split_by_tokens).",
                    model=self.model_id,
                    index=index,
                )
            counts.append(count)
        return counts

    async def _embed_batch(self, texts: list[str], offset: int) -> list[list[float]]:
        client = self._clients.get()
        extra: dict[str, Any] = {"dimensions": self.dimensions} if self._send_dimensions else {}
        response: Any = await with_retries(
            lambda: client.embeddings.create(
                model=self.model_id, input=texts, encoding_format="float", **extra
            ),
            model=self.model_id,
            backoff=self.backoff,
        )
        data = sorted(response.data, key=lambda item: item.index)
        if [item.index for item in data] != list(range(len(texts))):
            raise EmbeddingError(
                f'Model "{self.model_id}" returned {len(data)} vectors for {len(texts)} texts.',
                model=self.model_id,
            )
        vectors = [list(item.embedding) for item in data]
        for position, vector in enumerate(vectors):
            if len(vector) != self.dimensions:
                raise EmbeddingError(
                    f'Model "{self.model_id}" returned a vector of {len(vector)} dimensions '
                    f"for text {offset + position}; expected {self.dimensions}.",
                    model=self.model_id,
                    index=offset + position,
                )
        return vectors

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order.

        Raises:
            EmbeddingError: a text is empty or too long (nothing is sent), or the provider's
                vectors do not match.
            ModelAPIError: the provider refused (the status is named), retries included.
            ModelRateLimitError: still rate-limited after the retries.
            ModelConnectionError: the provider could not be reached.
        """
        counts = self._token_counts(texts)
        vectors: list[list[float]] = []
        for batch in plan_batches(
            counts, max_inputs=self.max_batch_inputs, max_tokens=self.max_batch_tokens
        ):
            vectors.extend(
                await self._embed_batch(list(texts[batch.start : batch.stop]), batch.start)
            )
        return vectors

    async def aclose(self) -> None:
        """Close the client this embedder made for the current event loop (not a given one)."""
        await self._clients.aclose()
