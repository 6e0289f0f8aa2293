"""RAG with real embedders: OpenAI through the ``openai`` client against the test server
(batching, a 429 then success), and the local MiniLM model when its extra is installed."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from components.models import Backoff, LocalEmbedder, OpenAIEmbedder, local_embeddings_available
from components.models.testing import ErrorReply, OpenAITestServer
from components.rag import RAG, component
from core import ActionCtx, App
from core.testing import TestApp

pytest.importorskip("openai", reason="needs the openai extra: pip install -e '.[openai]'")

FAST = Backoff(initial_delay=0.0, jitter=0.0)

app = App()
openai_rag = RAG(
    app.use(component, name="openai_docs"),
    embedder=OpenAIEmbedder(dimensions=16, backoff=FAST, max_batch_inputs=2),
)


@app.action
async def add_chunks(ctx: ActionCtx, key: str, chunks: list[str]) -> Any:
    result = await openai_rag.add(ctx, namespace="global", key=key, chunks=chunks)
    return [result.status, result.created]


@app.action
async def search(ctx: ActionCtx, query: str, mode: str) -> list[str]:
    found = await openai_rag.search(ctx, namespace="global", query=query, mode=mode, limit=3)
    return [r.content[0] for r in found.results]


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAITestServer]:
    with OpenAITestServer() as running:
        yield running


@pytest.fixture
def t(storage: Any, server: OpenAITestServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestApp]:
    server.reset()
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with TestApp(app, storage=storage) as harness:
        yield harness
    server.reset()


def test_openai_embeddings_are_batched_end_to_end(t: TestApp, server: OpenAITestServer) -> None:
    chunks = [
        "red apples grow",
        "green pears ripen",
        "blue skies above",
        "grey rain falls",
        "hot sun",
    ]
    assert t.action(add_chunks, {"key": "fruit", "chunks": chunks}) == ["ready", True]
    requests = server.embedding_requests
    assert [r.body["input"] for r in requests] == [chunks[0:2], chunks[2:4], chunks[4:]]
    assert all(r.body["model"] == "text-embedding-3-small" for r in requests)
    assert all(r.body["dimensions"] == 16 for r in requests)
    assert t.action(search, {"query": "green pears ripen", "mode": "vector"})[0] == chunks[1]
    assert t.action(search, {"query": "rain", "mode": "hybrid"})[0] == chunks[3]
    assert server.embedding_requests[-1].body["input"] == ["rain"]


def test_openai_429_then_success(t: TestApp, server: OpenAITestServer) -> None:
    server.script_embeddings(ErrorReply(status=429, retry_after=0))
    assert t.action(add_chunks, {"key": "k", "chunks": ["retried text"]}) == ["ready", True]
    assert len(server.embedding_requests) == 2
    server.assert_consumed()
    assert t.action(search, {"query": "retried", "mode": "vector"}) == ["retried text"]


local_app = App()
local_handle = local_app.use(component, name="local_docs")


@local_app.action
async def local_roundtrip(ctx: ActionCtx) -> Any:
    embedder = LocalEmbedder()
    rag = RAG(local_handle, embedder=embedder)
    vectors = await embedder.embed(["a cat on a mat", "aircraft wing lift"])
    for key, text in (
        ("cats", "Kittens and cats like to sleep in the sun."),
        ("planes", "The lift of an aircraft wing depends on its angle of attack."),
        ("soup", "Tomato soup is made from ripe tomatoes and basil."),
    ):
        await rag.add(ctx, namespace="global", key=key, text=text)
    found = await rag.search(ctx, namespace="global", query="feline pets napping", mode="vector")
    return {
        "dims": [len(v) for v in vectors],
        "norms": [math.sqrt(sum(x * x for x in v)) for v in vectors],
        "top": found.entries[0].key,
    }


@pytest.mark.skipif(
    not local_embeddings_available(),
    reason="LocalEmbedder needs the local-embeddings extra (pip install -e '.[local-embeddings]')",
)
def test_local_embedder_unit_vectors_and_semantic_search() -> None:
    with TestApp(local_app) as t:
        got = t.action(local_roundtrip, {})
    assert got["dims"] == [384, 384]
    assert got["norms"] == pytest.approx([1.0, 1.0], abs=1e-5)
    assert got["top"] == "cats"  # no word in common with the query: it is semantic
