"""EmbedBatcher: concurrent callers share embedder calls; bad vectors are refused."""

from __future__ import annotations

import anyio
import pytest

from components.rag.embedding import EmbedBatcher, checked_vectors
from components.rag.errors import EmbeddingSizeError


class GatedEmbedder:
    """Records each call's texts; the first call waits for ``gate`` so others queue up."""

    model_id = "gated-2"
    dimensions = 2

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.gate = anyio.Event()
        self.entered = anyio.Event()
        self.fail_on: str | None = None

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        if len(self.calls) == 1:
            self.entered.set()
            await self.gate.wait()
        if self.fail_on in texts:
            raise RuntimeError("embedder down")
        return [[float(len(t)), 1.0] for t in texts]


async def test_concurrent_callers_share_one_call() -> None:
    embedder = GatedEmbedder()
    batcher = EmbedBatcher(embedder, max_texts=4)
    results: dict[str, list[list[float]]] = {}

    async def caller(name: str, texts: list[str]) -> None:
        results[name] = await batcher.embed(texts)

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller, "first", ["a"])
        await embedder.entered.wait()
        for name, texts in (("b", ["bb", "bbb"]), ("c", ["cccc"]), ("d", ["dd", "d"])):
            tg.start_soon(caller, name, texts)
        await anyio.wait_all_tasks_blocked()
        embedder.gate.set()
    assert embedder.calls == [["a"], ["bb", "bbb", "cccc"], ["dd", "d"]]
    assert results == {
        "first": [[1.0, 1.0]],
        "b": [[2.0, 1.0], [3.0, 1.0]],
        "c": [[4.0, 1.0]],
        "d": [[2.0, 1.0], [1.0, 1.0]],
    }
    assert await batcher.embed([]) == []


async def test_a_failed_call_fails_its_callers_only() -> None:
    embedder = GatedEmbedder()
    embedder.fail_on = "bad"
    batcher = EmbedBatcher(embedder, max_texts=2)
    outcomes: dict[str, object] = {}

    async def caller(name: str, texts: list[str]) -> None:
        try:
            outcomes[name] = await batcher.embed(texts)
        except RuntimeError as error:
            outcomes[name] = str(error)

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller, "first", ["a"])
        await embedder.entered.wait()
        tg.start_soon(caller, "bad", ["bad", "x"])
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(caller, "good", ["ok"])
        await anyio.wait_all_tasks_blocked()
        embedder.gate.set()
    assert outcomes == {"first": [[1.0, 1.0]], "bad": "embedder down", "good": [[2.0, 1.0]]}


def test_checked_vectors() -> None:
    embedder = GatedEmbedder()
    assert checked_vectors(embedder, ["a"], [[1, 2]]) == [[1.0, 2.0]]
    with pytest.raises(EmbeddingSizeError, match="returned 2 vectors where 1 were expected"):
        checked_vectors(embedder, ["a"], [[1, 2], [3, 4]])
    with pytest.raises(EmbeddingSizeError, match="returned 3 dimensions where 2 were expected"):
        checked_vectors(embedder, ["a"], [[1, 2, 3]])
