"""RAG end to end on every backend: issue 13's acceptance items, one test (or more) each."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from components.models import HashingEmbedder
from components.rag import (
    RAG,
    ChunkTooLargeError,
    EmbedderMismatchError,
    EmbeddingSizeError,
    EmptyTextError,
    UnknownFilterError,
    component,
)
from core import ActionCtx, App, MutationCtx, QueryCtx, Schema, Table, UserError
from core.testing import TestApp


class TableEmbedder:
    """Vectors looked up by the first word of a text (unknown words: a fixed vector)."""

    def __init__(self, vectors: dict[str, list[float]], *, model_id: str = "table-4"):
        self.vectors = vectors
        self.dimensions = 4
        self.model_id = model_id

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return [self.vectors.get(t.split()[0].lower(), [0.0, 0.0, 0.0, 1.0]) for t in texts]


class BrokenEmbedder:
    """Claims 8 dimensions; returns 7 from the ``fail_on``-th call on (1-based)."""

    model_id = "broken-8"
    dimensions = 8

    def __init__(self, fail_on: int = 1):
        self.fail_on = fail_on
        self.calls = 0

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        size = 7 if self.calls >= self.fail_on else 8
        return [[1.0] * size for _ in texts]


TABLE = {
    "alpha": [1.0, 0.0, 0.0, 0.0],
    "beta": [0.0, 1.0, 0.0, 0.0],
    "both": [1.0, 1.0, 0.0, 0.0],
}

app = App(Schema(completions=Table({"entry": Any, "replaced": Any, "error": str | None})))
rags = {
    "docs": RAG(
        app.use(component, name="docs"),
        embedder=HashingEmbedder(64),
        filter_names=["category", "lang"],
    ),
    "table": RAG(app.use(component, name="table"), embedder=TableEmbedder(TABLE)),
    "small": RAG(
        app.use(component, name="small"),
        embedder=HashingEmbedder(32),
        batch_size=2,
        commit_chunks=2,
    ),
}
broken_handle = app.use(component, name="broken")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@app.mutation
def completed(
    ctx: MutationCtx, namespace: str, entry: Any, replaced_entry: Any, error: str | None
) -> None:
    ctx.db.insert("completions", {"entry": entry, "replaced": replaced_entry, "error": error})


@app.query
def completions(ctx: QueryCtx) -> list[dict[str, Any]]:
    return ctx.db.query("completions").collect()


@app.action
async def add_action(ctx: ActionCtx, kw: dict[str, Any]) -> Any:
    kw = dict(kw)
    rag = rags[kw.pop("rag", "docs")]
    notify = kw.pop("notify", False)
    kw.setdefault("namespace", "global")
    return _plain(await rag.add(ctx, on_complete=completed if notify else None, **kw))


@app.action
async def search_action(ctx: ActionCtx, kw: dict[str, Any]) -> Any:
    kw = dict(kw)
    rag = rags[kw.pop("rag", "docs")]
    kw.setdefault("namespace", "global")
    if "chunk_context" in kw:
        kw["chunk_context"] = tuple(kw["chunk_context"])
    return _plain(await rag.search(ctx, **kw))


class Calls:
    """``t.action(add_action, {"kw": {...}})`` as ``calls.add(...)``."""

    def __init__(self, t: TestApp):
        self.t = t

    def add(self, args: dict[str, Any]) -> Any:
        return self.t.action(add_action, {"kw": args})

    def search(self, args: dict[str, Any]) -> Any:
        return self.t.action(search_action, {"kw": args})


@app.action
async def add_broken(ctx: ActionCtx, fail_on: int, chunks: list[str]) -> Any:
    rag = RAG(broken_handle, embedder=BrokenEmbedder(fail_on), batch_size=1, commit_chunks=1)
    return _plain(await rag.add(ctx, namespace="global", key="k", chunks=chunks))


@app.query
def entries(ctx: QueryCtx, rag: str = "docs", status: str = "ready") -> list[Any]:
    page = rags[rag].list(ctx, namespace="global", status=status, num_items=100)
    return [_plain(e) for e in page.page]


@app.query
def get_entry(ctx: QueryCtx, entry_id: str, rag: str = "docs") -> Any:
    return _plain(rags[rag].get_entry(ctx, entry_id))


@app.mutation
def delete(ctx: MutationCtx, entry_id: str, rag: str = "docs") -> Any:
    return rags[rag].delete(ctx, entry_id)


@app.mutation
def delete_by_key(ctx: MutationCtx, key: str, rag: str = "docs") -> Any:
    return rags[rag].delete_by_key(ctx, namespace="global", key=key)


@app.mutation
def delete_namespace(ctx: MutationCtx, rag: str = "docs") -> Any:
    return rags[rag].delete_namespace(ctx, "global")


@pytest.fixture
def t(storage: Any) -> Iterator[TestApp]:
    with TestApp(app, storage=storage) as harness:
        yield harness


def hits(found: dict[str, Any]) -> list[tuple[str, int]]:
    return [(r["entry_id"], r["order"]) for r in found["results"]]


def texts(found: dict[str, Any]) -> list[str]:
    return [c for r in found["results"] for c in r["content"]]


def all_entries(t: TestApp, rag: str = "docs") -> list[Any]:
    return [
        e
        for s in ("pending", "ready", "replaced")
        for e in t.query(entries, {"rag": rag, "status": s})
    ]


# -- adding, dedupe, replacement ---------------------------------------------------------------


def test_add_and_search_in_every_mode(t: TestApp) -> None:
    added = Calls(t).add({"key": "cats", "text": "Cats purr when they are content."})
    assert added["status"] == "ready" and added["created"] and added["replaced_entry_id"] is None
    Calls(t).add({"key": "planes", "text": "Airplanes fly with fixed wings."})
    for mode in ("hybrid", "vector", "text"):
        found = Calls(t).search({"query": "cats purr", "mode": mode})
        assert found["results"][0]["entry_id"] == added["entry_id"], mode
        assert found["results"][0]["content"] == ["Cats purr when they are content."]
        assert found["entries"][0]["key"] == "cats"
        assert found["text"].startswith("Cats purr")


def test_same_key_and_content_creates_nothing_and_skips_on_complete(t: TestApp) -> None:
    first = Calls(t).add({"key": "k", "text": "Some stable text.", "notify": True})
    assert len(t.query(completions)) == 1
    again = Calls(t).add({"key": "k", "text": "Some stable text.", "notify": True})
    assert again == {**first, "created": False, "replaced_entry_id": None}
    assert len(all_entries(t)) == 1
    assert len(t.query(completions)) == 1


def test_changed_content_replaces_and_reports_the_old_version(t: TestApp) -> None:
    first = Calls(t).add({"key": "k", "text": "Version one text.", "notify": True})
    second = Calls(t).add({"key": "k", "text": "Version two text.", "notify": True})
    assert second["created"] and second["replaced_entry_id"] == first["entry_id"]
    assert [e["entry_id"] for e in t.query(entries, {})] == [second["entry_id"]]
    replaced = t.query(entries, {"status": "replaced"})
    assert [e["entry_id"] for e in replaced] == [first["entry_id"]]
    done = t.query(completions)
    assert done[1]["entry"]["entry_id"] == second["entry_id"]
    assert done[1]["replaced"]["entry_id"] == first["entry_id"]
    for mode in ("hybrid", "vector", "text"):
        found = Calls(t).search({"query": "version text", "mode": mode})
        assert texts(found) == ["Version two text."], mode
    # Importance and filter values are part of the content: they make a new version too.
    third = Calls(t).add({"key": "k", "text": "Version two text.", "importance": 0.5})
    assert third["created"] and third["replaced_entry_id"] == second["entry_id"]


def _version_chunks(version: int) -> list[str]:
    return [f"common words shared v{version} part{i}" for i in range(4)]


def test_concurrent_searches_see_exactly_one_whole_version(t: TestApp) -> None:
    Calls(t).add({"key": "doc", "chunks": _version_chunks(0)})
    stop = threading.Event()
    problems: list[str] = []
    seen: set[str] = set()

    def reader(mode: str) -> None:
        while not stop.is_set():
            found = Calls(t).search({"query": "common words shared", "mode": mode, "limit": 20})
            got = texts(found)
            versions = {c.split()[3] for c in got}
            entry_ids = {r["entry_id"] for r in found["results"]}
            if len(got) != 4 or len(versions) != 1 or len(entry_ids) != 1:
                problems.append(f"{mode}: {got}")
            seen.update(versions)

    threads = [threading.Thread(target=reader, args=(m,)) for m in ("vector", "hybrid", "text")]
    for thread in threads:
        thread.start()
    try:
        for version in range(1, 16):
            Calls(t).add({"key": "doc", "chunks": _version_chunks(version)})
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert problems == []
    assert len(seen) > 1
    final = Calls(t).search({"query": "common", "mode": "vector", "limit": 20})
    assert sorted(texts(final)) == _version_chunks(15)


def test_large_entries_are_staged_in_batches_and_swapped(t: TestApp) -> None:
    chunks = [f"batch chunk number {i} about gardens" for i in range(5)]
    first = Calls(t).add({"rag": "small", "key": "big", "chunks": chunks})
    assert first["status"] == "ready"
    found = Calls(t).search({"rag": "small", "query": "gardens", "limit": 10})
    assert sorted(texts(found)) == sorted(chunks)
    second = Calls(t).add({"rag": "small", "key": "big", "chunks": chunks[:3]})
    assert second["replaced_entry_id"] == first["entry_id"]
    found = Calls(t).search({"rag": "small", "query": "gardens", "limit": 10})
    assert sorted(texts(found)) == sorted(chunks[:3])


# -- hybrid fusion -----------------------------------------------------------------------------


def test_hybrid_keeps_chunks_found_by_both_above_text_only_ones(t: TestApp) -> None:
    # "beta" chunks: far from the query vector (score 0, cut by the threshold) but the best
    # BM25 match; "alpha" chunks: in both rankings.
    Calls(t).add(
        {"rag": "table", "key": "b", "text": "beta alpha alpha alpha needle needle needle"}
    )
    Calls(t).add({"rag": "table", "key": "a1", "text": "alpha needle"})
    Calls(t).add({"rag": "table", "key": "a2", "text": "alpha needle haystack words here"})
    text_only = Calls(t).search({"rag": "table", "query": "alpha needle", "mode": "text"})
    assert text_only["entries"][0]["key"] == "b"  # BM25 alone puts it first
    found = Calls(t).search(
        {"rag": "table", "query": "alpha needle", "vector_score_threshold": 0.5},
    )
    keys = [e["key"] for e in found["entries"]]
    assert keys[-1] == "b" and set(keys[:2]) == {"a1", "a2"}
    assert len(hits(found)) == len(set(hits(found))) == 3
    scores = [r["score"] for r in found["results"]]
    assert scores == sorted(scores, reverse=True) and scores[1] > 0.5 >= scores[2]


def test_hybrid_weights_change_the_order(t: TestApp) -> None:
    # Vector prefers "both" (query "alpha ..." is [1,0,0,0]; "alpha" chunk is exact),
    # BM25 prefers the chunk repeating the query words.
    Calls(t).add({"rag": "table", "key": "v", "text": "alpha"})
    Calls(t).add({"rag": "table", "key": "t", "text": "both gamma gamma gamma"})
    query = {"rag": "table", "query": "alpha gamma"}
    by_vector = Calls(t).search({**query, "vector_weight": 3.0, "text_weight": 1.0})
    by_text = Calls(t).search({**query, "vector_weight": 1.0, "text_weight": 3.0})
    assert [e["key"] for e in by_vector["entries"]] == ["v", "t"]
    assert [e["key"] for e in by_text["entries"]] == ["t", "v"]


# -- filters, importance, chunk_context, threshold ---------------------------------------------


@pytest.mark.parametrize("mode", ["hybrid", "vector", "text"])
def test_filters_in_every_mode(t: TestApp, mode: str) -> None:
    tags = {
        "hr-en": {"category": "hr", "lang": "en"},
        "hr-fr": {"category": "hr", "lang": "fr"},
        "eng-en": {"category": "eng", "lang": "en"},
        "none": {},
    }
    for key, values in tags.items():
        Calls(t).add({"key": key, "text": f"policy handbook {key}", "filter_values": values})

    def keys(filters: Any) -> set[str]:
        found = Calls(t).search({"query": "policy handbook", "mode": mode, "filters": filters})
        return {e["key"] for e in found["entries"]}

    assert keys(None) == set(tags)
    assert keys({"category": "hr"}) == {"hr-en", "hr-fr"}
    assert keys({"category": "hr", "lang": "en"}) == {"hr-en"}
    assert keys([{"category": "eng"}, {"lang": "fr"}]) == {"eng-en", "hr-fr"}
    assert keys({"category": "sales"}) == set()
    with pytest.raises(UnknownFilterError, match='"colour"'):
        keys({"colour": "red"})


def test_filters_stay_inside_their_namespace(t: TestApp) -> None:
    Calls(t).add({"key": "a", "text": "shared words", "filter_values": {"category": "x"}})
    Calls(t).add(
        {
            "key": "a",
            "text": "shared words",
            "namespace": "other",
            "filter_values": {"category": "x"},
        },
    )
    for mode in ("vector", "text", "hybrid"):
        found = Calls(t).search({"query": "shared", "mode": mode, "filters": {"category": "x"}})
        assert len(found["results"]) == 1 and found["entries"][0]["namespace"] == "global"


def test_importance_scales_vector_scores(t: TestApp) -> None:
    for key, importance in (("low", 0.2), ("high", 0.8), ("mid", 0.5)):
        Calls(t).add({"rag": "table", "key": key, "text": "alpha", "importance": importance})
    found = Calls(t).search({"rag": "table", "query": "alpha", "mode": "vector"})
    assert [e["key"] for e in found["entries"]] == ["high", "mid", "low"]
    assert [r["score"] for r in found["results"]] == pytest.approx([0.8, 0.5, 0.2])


def test_vector_score_threshold_is_inclusive(t: TestApp) -> None:
    Calls(t).add({"rag": "table", "key": "half", "text": "alpha", "importance": 0.5})
    Calls(t).add({"rag": "table", "key": "other", "text": "beta"})
    base = {"rag": "table", "query": "alpha", "mode": "vector"}
    assert [
        r["score"] for r in Calls(t).search({**base, "vector_score_threshold": 0.5})["results"]
    ] == [0.5]
    assert Calls(t).search({**base, "vector_score_threshold": 0.5000001})["results"] == []
    assert len(Calls(t).search({**base, "vector_score_threshold": None})["results"]) == 2


def test_chunk_context_adds_neighbours_without_overlaps(t: TestApp) -> None:
    chunks = [f"filler{i} words" for i in range(10)]
    chunks[2] = "target words here"
    chunks[6] = "target words there"
    Calls(t).add({"key": "long", "chunks": chunks, "title": "Long"})
    found = Calls(t).search({"query": "target", "mode": "text", "chunk_context": [3, 3]})
    windows = sorted((r["start_order"], r["order"], len(r["content"])) for r in found["results"])
    assert windows == [(0, 2, 3), (3, 6, 7)]
    assert sorted(c for r in found["results"] for c in r["content"]) == sorted(chunks)
    assert found["text"] == "## Long:\n\n" + "\n".join(chunks)
    tight = Calls(t).search({"query": "target", "mode": "text", "chunk_context": [0, 0]})
    assert sorted(len(r["content"]) for r in tight["results"]) == [1, 1]
    gap = Calls(t).search({"query": "target", "mode": "text", "chunk_context": [0, 1]})
    assert gap["text"] == "## Long:\n\n" + "\n".join(chunks[2:4]) + "\n...\n" + "\n".join(
        chunks[6:8]
    )


# -- deletion ----------------------------------------------------------------------------------


def _searchable(t: TestApp, query: str) -> set[str]:
    found: set[str] = set()
    for mode in ("vector", "text", "hybrid"):
        found |= {e["key"] for e in Calls(t).search({"query": query, "mode": mode})["entries"]}
    return found


def test_delete_leaves_nothing_in_either_index(t: TestApp) -> None:
    gone = Calls(t).add({"key": "gone", "text": "ephemeral words"})
    Calls(t).add({"key": "kept", "text": "ephemeral words too"})
    assert _searchable(t, "ephemeral words") == {"gone", "kept"}
    assert t.mutation(delete, {"entry_id": gone["entry_id"]}) is True
    assert t.mutation(delete, {"entry_id": gone["entry_id"]}) is False
    assert _searchable(t, "ephemeral words") == {"kept"}
    assert t.query(get_entry, {"entry_id": gone["entry_id"]}) is None


def test_delete_by_key_removes_every_version(t: TestApp) -> None:
    Calls(t).add({"key": "k", "text": "first words"})
    Calls(t).add({"key": "k", "text": "second words"})
    Calls(t).add({"key": "other", "text": "other words"})
    assert t.mutation(delete_by_key, {"key": "k"}) == 2
    assert [e["key"] for e in all_entries(t)] == ["other"]
    assert _searchable(t, "words") == {"other"}


def test_delete_namespace(t: TestApp) -> None:
    Calls(t).add({"key": "k", "text": "first words"})
    Calls(t).add({"key": "k", "text": "second words"})
    assert t.mutation(delete_namespace, {}) == 2
    assert all_entries(t) == []
    assert _searchable(t, "words") == set()


def test_entries_are_read_from_queries(t: TestApp) -> None:
    added = Calls(t).add(
        {
            "key": "k",
            "text": "readable",
            "title": "T",
            "metadata": {"source": "test"},
            "filter_values": {"lang": "en"},
        },
    )
    entry = t.query(get_entry, {"entry_id": added["entry_id"]})
    assert entry == {
        "entry_id": added["entry_id"],
        "namespace": "global",
        "key": "k",
        "title": "T",
        "metadata": {"source": "test"},
        "filter_values": {"lang": "en"},
        "importance": 1.0,
        "status": "ready",
        "content_hash": entry["content_hash"],
    }
    assert t.query(get_entry, {"entry_id": "not-an-id"}) is None


# -- refused input -----------------------------------------------------------------------------


def test_wrong_length_vectors_are_refused_with_nothing_stored(t: TestApp) -> None:
    with pytest.raises(EmbeddingSizeError, match='"broken-8" returned 7 dimensions'):
        t.action(add_broken, {"fail_on": 1, "chunks": ["one"]})
    # A large entry failing in a later batch: its staged version is removed again.
    with pytest.raises(EmbeddingSizeError):
        t.action(add_broken, {"fail_on": 3, "chunks": ["one", "two", "three", "four"]})
    broken = RAG(broken_handle, embedder=BrokenEmbedder())
    for status in ("pending", "ready", "replaced"):
        assert t.query(_broken_entries, {"status": status}) == [], status
    assert broken.filter_names == []


@app.query
def _broken_entries(ctx: QueryCtx, status: str) -> list[Any]:
    rag = RAG(broken_handle, embedder=BrokenEmbedder())
    return [_plain(e) for e in rag.list(ctx, namespace="global", status=status).page]


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ({"text": "   \n "}, EmptyTextError, '"text" is empty'),
        ({"chunks": ["fine", " "]}, EmptyTextError, r'"chunks\[1\]" is empty'),
        ({"chunks": ["word " * 600]}, ChunkTooLargeError, "the limit is 512"),
        ({"text": "x", "filter_values": {"colour": "red"}}, UnknownFilterError, '"colour"'),
    ],
)
def test_bad_input_is_refused_with_nothing_stored(
    t: TestApp, args: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Calls(t).add({"key": "bad", **args})
    assert all_entries(t) == []


def test_another_embedder_says_nothing_was_embedded_with_it(t: TestApp) -> None:
    Calls(t).add({"key": "k", "text": "words"})
    with pytest.raises(EmbedderMismatchError, match='"hashing-64"'):
        Calls(t).search(
            {"rag": "small", "query": "words"} | {"namespace": "global"}
        ) if False else t.action(_search_docs_namespace_with_small, {})
    assert Calls(t).search({"query": "words", "namespace": "unknown"})["results"] == []


@app.action
async def _search_docs_namespace_with_small(ctx: ActionCtx) -> Any:
    # The "docs" instance holds entries of hashing-64; a RAG on it with hashing-32 finds none.
    other = RAG(
        rags["docs"].handle, embedder=HashingEmbedder(32), filter_names=["category", "lang"]
    )
    return _plain(await other.search(ctx, namespace="global", query="words"))


@app.action
async def bad_calls(ctx: ActionCtx) -> list[str]:
    rag = rags["docs"]
    calls: list[Any] = [
        lambda: rag.add(ctx, namespace="", text="x"),
        lambda: rag.add(ctx, namespace="g", key=3, text="x"),  # type: ignore[arg-type]
        lambda: rag.add(ctx, namespace="g", title=3, text="x"),  # type: ignore[arg-type]
        lambda: rag.add(ctx, namespace="g", text="x", chunks=["x"]),
        lambda: rag.add(ctx, namespace="g"),
        lambda: rag.add(ctx, namespace="g", text="x", importance=1.5),
        lambda: rag.search(ctx, namespace="g", query="x", mode="fuzzy"),
        lambda: rag.search(ctx, namespace="g", query=3),  # type: ignore[arg-type]
        lambda: rag.search(ctx, namespace="g", query="x", limit=257),
        lambda: rag.search(ctx, namespace="g", query="x", text_weight=0, vector_weight=0),
        lambda: rag.search(ctx, namespace="g", query="x", chunk_context=(1,)),  # type: ignore[arg-type]
        lambda: rag.search(ctx, namespace="g", query="x", vector_score_threshold="high"),  # type: ignore[arg-type]
        lambda: rag.list(ctx, namespace="g", status="gone"),
    ]
    names = []
    for make in calls:
        try:
            await make()
        except Exception as error:
            names.append(type(error).__name__)
    return names


@app.mutation
def add_from_mutation(ctx: MutationCtx, which: str) -> str:
    try:
        if which == "add":
            rags["docs"].add(ctx, namespace="g", text="x")  # type: ignore[arg-type]
        else:
            rags["docs"].search(ctx, namespace="g", query="x")  # type: ignore[arg-type]
    except UserError as error:
        return str(error)
    return "no error"


def test_arguments_are_checked(t: TestApp) -> None:
    assert t.action(bad_calls, {}) == ["InvalidArgumentError"] * 13
    assert "runs from an action" in t.mutation(add_from_mutation, {"which": "add"})
    assert "runs from an action" in t.mutation(add_from_mutation, {"which": "search"})
    assert all_entries(t) == []


def test_errors_survive_pickling() -> None:
    import pickle

    from components.rag import EntryIncompleteError, EntryNotFoundError

    for error in (
        UnknownFilterError("x", ["a"]),
        EmbeddingSizeError("m", 3, 2),
        EmbedderMismatchError("ns", "m", 3, ['"other"']),
        EntryNotFoundError("e1"),
        EntryIncompleteError("e1", 1, 2),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)


def test_searches_stay_right_when_namespaces_change_under_them(t: TestApp) -> None:
    calls = Calls(t)
    calls.add({"key": "a", "text": "moving words here"})
    assert _searchable(t, "moving words") == {"a"}  # the client now holds a lookup hint
    # A second namespace on the same vector index: the hint's "alone"/"sole" are outdated.
    calls.add({"key": "b", "text": "moving words there", "namespace": "other"})
    assert _searchable(t, "moving words") == {"a"}
    # The namespace deleted and made again: the hint's namespace id is outdated.
    t.mutation(delete_namespace, {})
    calls.add({"key": "c", "text": "moving words anew"})
    assert _searchable(t, "moving words") == {"c"}


def test_misconfigured_rags_are_refused() -> None:
    from components.rag import RAGConfigError

    handle = rags["docs"].handle
    with pytest.raises(RAGConfigError, match="at most 4 filter names"):
        RAG(handle, embedder=HashingEmbedder(64), filter_names=["a", "b", "c", "d", "e"])
    with pytest.raises(RAGConfigError, match="batch_size"):
        RAG(handle, embedder=HashingEmbedder(64), batch_size=0)
    with pytest.raises(RAGConfigError, match="at most 4,095"):
        RAG(handle, embedder=HashingEmbedder(5000))
