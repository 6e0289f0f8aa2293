"""HashingEmbedder (deterministic, lexical) and LocalEmbedder (MiniLM from its package, offline)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from components.models import (
    Embedder,
    HashingEmbedder,
    LocalEmbedder,
    ModelConfigError,
    local_embeddings_available,
)
from components.models import local as local_module

NEEDS_EXTRA = pytest.mark.skipif(
    not local_embeddings_available(),
    reason="needs the local-embeddings extra: pip install torch==2.13.0 && "
    "pip install -e '.[local-embeddings]'",
)


def cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


async def test_hashing_embedder_is_deterministic_and_unit_norm() -> None:
    embedder = HashingEmbedder()
    assert isinstance(embedder, Embedder)
    assert (embedder.model_id, embedder.dimensions) == ("hashing-256", 256)
    texts = ["The cat sat on the mat.", "Quarterly revenue grew by 4%.", "", "!!!"]
    first = await embedder.embed(texts)
    second = await HashingEmbedder().embed(texts)
    assert first == second
    for vector in first:
        assert len(vector) == 256
        assert np.linalg.norm(vector) == pytest.approx(1.0)
    assert await embedder.embed([]) == []


def test_hashing_embedder_is_the_same_in_another_process() -> None:
    # Hashing with hash() would change with PYTHONHASHSEED; blake2b does not.
    code = (
        "from components.models import HashingEmbedder;"
        "print(HashingEmbedder(16).embed_one('stable across processes')[:4])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert outputs.pop().strip() == str(
        HashingEmbedder(16).embed_one("stable across processes")[:4]
    )


async def test_hashing_embedder_is_lexical() -> None:
    embedder = HashingEmbedder(dimensions=512)
    cat, cats, stocks = await embedder.embed(
        ["the cat sleeps on the sofa", "cats sleeping on a sofa", "stock markets fell sharply"]
    )
    assert cosine(cat, cats) > cosine(cat, stocks) + 0.2
    assert HashingEmbedder(dimensions=64).model_id == "hashing-64"


@pytest.mark.parametrize("bad", [0, 1, -3, 2.5, True])
def test_hashing_embedder_dimensions_are_checked(bad: object) -> None:
    with pytest.raises(ModelConfigError, match="at least 2"):
        HashingEmbedder(bad)  # type: ignore[arg-type]


def test_a_missing_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_module, "local_embeddings_available", lambda: False)
    with pytest.raises(ModelConfigError) as caught:
        LocalEmbedder()
    message = str(caught.value)
    assert '"local-embeddings" extra' in message
    assert "pip install torch==2.13.0" in message


@NEEDS_EXTRA
async def test_local_embedder_is_semantic_unit_norm_and_offline(
    network_attempts: list[str],
) -> None:
    embedder = LocalEmbedder()
    assert isinstance(embedder, Embedder)
    assert embedder.dimensions == 384
    texts = [
        "A man is playing a guitar on stage.",
        "Someone performs music with a guitar in front of an audience.",
        "The central bank raised interest rates again.",
    ]
    vectors = await embedder.embed(texts)
    assert len(vectors) == 3
    for vector in vectors:
        assert len(vector) == 384
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    paraphrase = cosine(vectors[0], vectors[1])
    unrelated = cosine(vectors[0], vectors[2])
    assert paraphrase > 0.5 > unrelated
    # The same text gives the same vector; a second embedder reuses the loaded model.
    again = await LocalEmbedder().embed([texts[0]])
    assert again[0] == pytest.approx(vectors[0], abs=1e-6)
    assert len(local_module._models) == 1
    assert await embedder.embed([]) == []
    assert network_attempts == []


@NEEDS_EXTRA
async def test_local_embedder_batches_concurrent_calls_safely() -> None:
    import anyio

    embedder = LocalEmbedder(batch_size=4)
    texts = [f"sentence number {i} about topic {i % 3}" for i in range(10)]
    expected = await embedder.embed(texts)
    results: dict[int, list[list[float]]] = {}

    async def run(i: int) -> None:
        results[i] = await embedder.embed(texts)

    async with anyio.create_task_group() as group:
        for i in range(3):
            group.start_soon(run, i)
    for result in results.values():
        assert np.allclose(result, expected, atol=1e-5)
