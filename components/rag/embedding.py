"""Owns calling the embedder: checked vectors, and concurrent callers sharing embedder calls.

``checked_vectors`` refuses what an embedder must never return (the wrong number of vectors,
a vector of the wrong length) before anything is stored.

``EmbedBatcher`` coalesces: while one embedder call runs, the texts of every other caller
queue up, and the next call takes them all (up to ``max_texts``), the way a group commit
shares one fsync. A lone caller sees exactly its own call; many concurrent ``add`` calls of
small documents get the embedder's batch throughput instead of one tiny batch each. A failed
call fails every caller whose texts were in it.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel

from components.models import Embedder
from components.rag.errors import EmbeddingSizeError


def embedder_binding(embedder: Embedder) -> str:
    """The binding name of ``embedder`` on a rag instance (one per model and size)."""
    return f"embedder:{embedder.model_id}:{embedder.dimensions}"


def checked_vectors(
    embedder: Embedder, texts: Sequence[str], vectors: Sequence[Sequence[float]]
) -> list[list[float]]:
    """``vectors`` as floats if there is one per text, each ``embedder.dimensions`` long.

    Raises:
        EmbeddingSizeError: when there is not.
    """
    model, dims = embedder.model_id, embedder.dimensions
    if len(vectors) != len(texts):
        raise EmbeddingSizeError(model, len(texts), len(vectors), "vectors")
    for vector in vectors:
        if len(vector) != dims:
            raise EmbeddingSizeError(model, dims, len(vector))
    return [[float(x) for x in vector] for vector in vectors]


@dataclass(slots=True, eq=False)
class _Request:
    texts: list[str]
    vectors: list[list[float]] | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass(slots=True)
class _Queue:
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    waiting: list[_Request] = field(default_factory=list)


class EmbedBatcher:
    """An embedder whose concurrent callers share calls (see the module docstring)."""

    def __init__(self, embedder: Embedder, *, max_texts: int = 256):
        self.embedder = embedder
        self.max_texts = max_texts
        # One queue per event loop: an anyio lock belongs to the loop that made it.
        self._queues: weakref.WeakKeyDictionary[object, _Queue] = weakref.WeakKeyDictionary()

    def _queue(self) -> _Queue:
        token = anyio.lowlevel.current_token()
        loop = getattr(token, "native_token", token)  # anyio >= 4.11 wraps it afresh per call
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _Queue()
        return queue

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Checked vectors for ``texts``, in order, possibly from a call shared with others.

        Raises:
            EmbeddingSizeError: the embedder returned the wrong number or length of vectors.
        """
        if not texts:
            return []
        queue = self._queue()
        request = _Request(list(texts))
        queue.waiting.append(request)
        while not request.done:
            async with queue.lock:
                if not request.done:
                    await self._run(queue, request)
        if request.error is not None:
            raise request.error
        return request.vectors or []

    async def _run(self, queue: _Queue, own: _Request) -> None:
        """Embed the oldest waiting requests, up to ``max_texts`` texts (at least one)."""
        batch: list[_Request] = []
        size = 0
        while queue.waiting and (not batch or size + len(queue.waiting[0].texts) <= self.max_texts):
            request = queue.waiting.pop(0)
            batch.append(request)
            size += len(request.texts)
        texts = [text for request in batch for text in request.texts]
        try:
            vectors = checked_vectors(self.embedder, texts, await self.embedder.embed(texts))
        except Exception as error:
            for request in batch:
                request.error, request.done = error, True
            return
        except BaseException:  # cancelled: the others' texts go back to the queue
            queue.waiting[:0] = [r for r in batch if r is not own]
            raise
        start = 0
        for request in batch:
            request.vectors = vectors[start : start + len(request.texts)]
            request.done = True
            start += len(request.texts)
