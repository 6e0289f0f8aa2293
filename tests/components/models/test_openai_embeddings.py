"""OpenAIEmbedder: the real ``openai`` client against the test server; batching and limits."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

pytest.importorskip("openai", reason="needs the openai extra: pip install -e '.[openai]'")

import openai

from components.models import (
    Backoff,
    EmbeddingError,
    ModelConfigError,
    OpenAIEmbedder,
)
from components.models.openai_embeddings import plan_batches
from components.models.testing import ErrorReply, OpenAITestServer

FAST = Backoff(initial_delay=0.0, jitter=0.0)


@pytest.fixture
async def client(server: OpenAITestServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with server.client() as client:
        yield client


async def test_embeddings_come_back_in_order(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    embedder = OpenAIEmbedder(client=client, backoff=FAST)
    assert (embedder.model_id, embedder.dimensions) == ("text-embedding-3-small", 1536)
    texts = ["alpha", "beta", "gamma"]
    vectors = await embedder.embed(texts)
    assert len(vectors) == 3 and all(len(v) == 1536 for v in vectors)
    assert vectors[0] == (await embedder.embed(["alpha"]))[0]
    assert vectors[0] != vectors[1]
    body = server.embedding_requests[0].body
    assert body["input"] == texts and body["encoding_format"] == "float"
    assert "dimensions" not in body
    assert await embedder.embed([]) == []
    assert len(server.embedding_requests) == 2


async def test_embeddings_are_batched_by_count(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    embedder = OpenAIEmbedder(dimensions=8, client=client, backoff=FAST)
    texts = [f"text number {i}" for i in range(5000)]
    vectors = await embedder.embed(texts)
    sizes = [len(r.body["input"]) for r in server.embedding_requests]
    assert sizes == [2048, 2048, 904]
    assert [t for r in server.embedding_requests for t in r.body["input"]] == texts
    assert all(r.body["dimensions"] == 8 for r in server.embedding_requests)
    assert len(vectors) == 5000 and all(len(v) == 8 for v in vectors)
    assert vectors[4999] == (await embedder.embed(["text number 4999"]))[0]


async def test_embeddings_are_batched_by_tokens(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    embedder = OpenAIEmbedder(client=client, backoff=FAST, max_batch_tokens=9)
    texts = ["one two three four", "five six seven eight", "nine ten", "eleven"]  # 4,4,2,2
    await embedder.embed(texts)
    assert [r.body["input"] for r in server.embedding_requests] == [
        texts[:2],
        texts[2:],
    ]


def test_plan_batches() -> None:
    assert plan_batches([], max_inputs=2, max_tokens=10) == []
    assert plan_batches([1, 1, 1], max_inputs=2, max_tokens=10) == [range(2), range(2, 3)]
    assert plan_batches([6, 5, 4, 1], max_inputs=9, max_tokens=10) == [
        range(1),
        range(1, 4),
    ]
    assert plan_batches([20, 1], max_inputs=9, max_tokens=10) == [range(1), range(1, 2)]


async def test_embeddings_429_then_success(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    server.script_embeddings(ErrorReply(status=429, retry_after=0), ErrorReply(status=502))
    embedder = OpenAIEmbedder(client=client, backoff=FAST)
    vectors = await embedder.embed(["hello"])
    assert len(vectors) == 1 and len(server.embedding_requests) == 3


async def test_embeddings_bad_input_is_refused_before_any_request(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    embedder = OpenAIEmbedder(client=client, backoff=FAST, max_input_tokens=5)
    with pytest.raises(EmbeddingError, match="Text 1 to embed is empty") as caught:
        await embedder.embed(["fine", ""])
    assert caught.value.index == 1
    with pytest.raises(EmbeddingError, match=r"Text 0 is 8 tokens.*at most 5"):
        await embedder.embed(["one two three four five six seven eight"])
    assert server.embedding_requests == []


async def test_embeddings_of_the_wrong_length_are_an_error(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    server.script_embeddings([[0.1, 0.2]], [[0.1, 0.2, 0.3]])
    embedder = OpenAIEmbedder("my-local-model", dimensions=3, client=client, backoff=FAST)
    with pytest.raises(EmbeddingError, match="2 dimensions for text 0; expected 3"):
        await embedder.embed(["x"])
    assert await embedder.embed(["x"]) == [[0.1, 0.2, 0.3]]
    # A model this class does not know: its length is declared, not sent.
    assert "dimensions" not in server.embedding_requests[0].body


def test_embedder_dimensions() -> None:
    assert OpenAIEmbedder("text-embedding-3-large").dimensions == 3072
    assert OpenAIEmbedder("text-embedding-ada-002").dimensions == 1536
    assert OpenAIEmbedder("text-embedding-3-large", dimensions=256).dimensions == 256
    with pytest.raises(ModelConfigError, match='"mystery".*pass dimensions='):
        OpenAIEmbedder("mystery")
    with pytest.raises(ModelConfigError, match="at most 1536"):
        OpenAIEmbedder(dimensions=4096)
    with pytest.raises(ModelConfigError, match="always makes 1536"):
        OpenAIEmbedder("text-embedding-ada-002", dimensions=512)


async def test_the_raw_client_reads_base64_embeddings(
    server: OpenAITestServer, client: openai.AsyncOpenAI
) -> None:
    # The openai client asks for base64 unless told otherwise: the server speaks both.
    raw = await client.embeddings.create(model="text-embedding-3-small", input=["hello"])
    ours = await OpenAIEmbedder(client=client).embed(["hello"])
    assert server.embedding_requests[0].body["encoding_format"] == "base64"
    assert raw.data[0].embedding == pytest.approx(ours[0], abs=1e-6)
