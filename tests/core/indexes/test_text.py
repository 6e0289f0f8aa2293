from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import pytest
from rank_bm25 import BM25Okapi

from core import (
    UNSET,
    App,
    InvalidArgumentError,
    MutationCtx,
    QueryCtx,
    Schema,
    SQLiteStorage,
    Table,
)
from core.database.readsets import WriteSet
from core.indexes.text import MAX_RESULTS, SearchQuery, query_terms, select_terms, tokenize
from core.subscriptions import subscribe, subscription_hub
from core.testing import TestApp

schema = Schema(
    docs=Table({"text": str, "color": str, "size": int})
    .search_index("search", search_field="text", filter_fields=["color", "size"])
    .index("by_color", ["color"]),
)
app = App(schema)


@app.mutation
def add(ctx: MutationCtx, text: str, color: str = "red", size: int = 1) -> str:
    return ctx.db.insert("docs", {"text": text, "color": color, "size": size})


@app.mutation
def add_many(ctx: MutationCtx, texts: list[str], colors: list[str]) -> list[str]:
    return [
        ctx.db.insert("docs", {"text": t, "color": c, "size": i % 3})
        for i, (t, c) in enumerate(zip(texts, colors, strict=True))
    ]


@app.mutation
def set_text(ctx: MutationCtx, id: str, text: str) -> None:
    ctx.db.patch(id, {"text": text})


@app.mutation
def remove(ctx: MutationCtx, id: str) -> None:
    ctx.db.delete(id)


@app.query
def find(ctx: QueryCtx, text: str, color: str | None = None, n: int = 2000) -> list[str]:
    def build(q: SearchQuery) -> SearchQuery:
        q = q.search("text", text)
        return q if color is None else q.eq("color", color)

    return [d["_id"] for d in ctx.db.query("docs").with_search_index("search", build).take(n)]


@app.mutation
def insert_then_find(ctx: MutationCtx, text: str) -> list[str]:
    new = ctx.db.insert("docs", {"text": text, "color": "red", "size": 1})
    found = ctx.db.query("docs").with_search_index("search", lambda q: q.search("text", text))
    return [new, *(d["_id"] for d in found.collect())]


@app.mutation
def change_then_find(ctx: MutationCtx, id: str) -> list[list[str]]:
    ctx.db.patch(id, {"text": "zebra"})
    out = []
    for word in ("unicorn", "zebra"):

        def build(q: SearchQuery, w: str = word) -> SearchQuery:
            return q.search("text", w)

        out.append([d["_id"] for d in ctx.db.query("docs").with_search_index("search", build)])
    return out


# -- helpers ------------------------------------------------------------------------------------


def ranked(
    t: TestApp, text: str, filters: Sequence[tuple[str, Any]] = (), txn: Any = None
) -> list[tuple[str, float]]:
    """(id, score) of a search, best first, straight from the index (scores are internal)."""
    db = t.runtime.db
    own = txn is None
    txn = db.transaction() if own else txn
    try:
        info = db.space("").table("docs")
        q = SearchQuery("search", "text", ("color", "size")).search("text", text)
        for field, value in filters:
            q.eq(field, value)
        result = txn.search(info, info.indexes["search"], q)
        return list(zip(result.ids, result.scores, strict=True))
    finally:
        if own:
            txn.close()


def oracle(docs: dict[str, str], text: str) -> dict[str, float]:
    """BM25Okapi scores of the documents containing a query term."""
    ids = list(docs)
    bm = BM25Okapi([tokenize(docs[i]) for i in ids])
    terms = query_terms(text)
    scores = bm.get_scores(terms)
    return {
        i: float(s)
        for i, s in zip(ids, scores, strict=True)
        if any(term in set(tokenize(docs[i])) for term in terms)
    }


def assert_matches_oracle(got: list[tuple[str, float]], want: dict[str, float]) -> None:
    assert {i for i, _ in got} == set(want)
    for doc_id, score in got:
        assert score == pytest.approx(want[doc_id], rel=1e-6)
    scores = [s for _, s in got]
    assert scores == sorted(scores, reverse=True)


# Words of one length: none is a prefix of another, so the last term matches only itself.
WORDS = [f"w{i:03d}z" for i in range(120)]


def corpus(rng: random.Random, n: int) -> list[str]:
    weights = [1 / (i + 1) for i in range(len(WORDS))]
    return [" ".join(rng.choices(WORDS, weights, k=rng.randint(1, 25))) for _ in range(n)]


def load_corpus(t: TestApp, rng: random.Random, n: int) -> dict[str, str]:
    """Insert ``n`` generated documents; return their texts by id."""
    texts = corpus(rng, n)
    ids = t.mutation(add_many, {"texts": texts, "colors": ["red"] * n})
    return dict(zip(ids, texts, strict=True))


def random_write(t: TestApp, rng: random.Random, docs: dict[str, str], roll: float) -> None:
    """Insert (roll < 0.4), update (< 0.7) or delete a document; ``docs`` follows."""
    if roll < 0.4 or not docs:
        text = corpus(rng, 1)[0]
        docs[t.mutation(add, {"text": text})] = text
        return
    victim = rng.choice(list(docs))
    if roll < 0.7:
        docs[victim] = corpus(rng, 1)[0]
        t.mutation(set_text, {"id": victim, "text": docs[victim]})
    else:
        del docs[victim]
        t.mutation(remove, {"id": victim})


def rare_queries(docs: dict[str, str], rng: random.Random, count: int) -> Iterator[str]:
    """Queries of 1-3 terms, each in fewer than half of the documents."""
    df = {w: sum(w in set(tokenize(t)) for t in docs.values()) for w in WORDS}
    rare = [w for w in WORDS if 0 < df[w] < len(docs) / 2]
    for _ in range(count):
        yield " ".join(rng.sample(rare, rng.randint(1, 3)))


# -- tokenizer ----------------------------------------------------------------------------------


def test_tokenizer_lowercases_splits_and_cuts() -> None:
    assert tokenize("Hello, WORLD! it's 3-D_x") == ["hello", "world", "it", "s", "3", "d", "x"]
    assert tokenize("Ünïcode Straße") == ["ünïcode", "straße"]
    assert tokenize("a" * 40) == ["a" * 32]
    cut = tokenize("é" * 20)[0]  # 2 bytes each: cut at 32 bytes, on a character boundary
    assert cut == "é" * 16
    assert query_terms("b a b c " + " ".join(f"t{i}" for i in range(20)))[:3] == ["b", "a", "c"]
    assert len(query_terms(" ".join(f"t{i}" for i in range(100)))) == 64


def test_a_long_query_keeps_its_last_term_and_the_15_rarest_others() -> None:
    terms = [f"t{i}" for i in range(20)]
    kept = select_terms(terms, lambda t: 100 - int(t[1:]))  # later terms are rarer
    assert kept == terms[4:]
    assert select_terms(terms[:16], lambda t: 0) == terms[:16]
    with TestApp(app) as t:
        words = [f"word{chr(97 + i)}" for i in range(20)]
        # word_a is in every document, word_b in all but one, ...: word_a..word_d are commonest.
        texts = [" ".join(words[: 20 - i]) for i in range(20)]
        ids = t.mutation(add_many, {"texts": texts, "colors": ["red"] * 20})
        query = " ".join(words[:19])  # 19 distinct terms: words[0..2] are the commonest
        used = select_terms(query_terms(query), lambda w: sum(w in x.split() for x in texts))
        assert used == words[3:19]
        got = dict(ranked(t, query))
        want = reference(dict(zip(ids, texts, strict=True)), query)
        assert got.keys() == want.keys()
        for doc_id, score in got.items():
            assert score == pytest.approx(want[doc_id], rel=1e-9)


# -- BM25 against rank_bm25 --------------------------------------------------------------------


def test_scores_and_order_equal_bm25okapi(storage: Any) -> None:
    rng = random.Random(7)
    with TestApp(app, storage=storage) as t:
        docs = load_corpus(t, rng, 300)
        for text in rare_queries(docs, rng, 15):
            got = ranked(t, text)
            assert_matches_oracle(got, oracle(docs, text))
            # The public query returns the same documents in the same order.
            assert t.query(find, {"text": text}) == [i for i, _ in got]


def test_scores_after_inserts_updates_deletes_equal_a_fresh_bm25okapi(storage: Any) -> None:
    rng = random.Random(11)
    with TestApp(app, storage=storage) as t:
        docs = load_corpus(t, rng, 200)
        queries = list(rare_queries(docs, rng, 6))
        for text in queries:  # warm the postings cache, so the writes below must update it
            ranked(t, text)
        for step in range(60):
            random_write(t, rng, docs, rng.random())
            if step % 10 == 9:
                for text in rare_queries(docs, rng, 4):
                    assert_matches_oracle(ranked(t, text), oracle(docs, text))


def test_terms_in_half_the_documents_or_more_use_lucene_idf() -> None:
    with TestApp(app) as t:
        texts = ["alpha beta", "alpha", "alpha gamma gamma", "delta"]
        ids = t.mutation(add_many, {"texts": texts, "colors": ["red"] * 4})
        n, avgdl = 4, sum(len(tokenize(x)) for x in texts) / 4
        got = dict(ranked(t, "alpha"))  # in 3 of 4 documents
        idf = math.log(1 + (n - 3 + 0.5) / (3 + 0.5))
        for doc_id, text in zip(ids[:3], texts[:3], strict=True):
            dl = len(tokenize(text))
            want = idf * (1 * 2.5 / (1 + 1.5 * (1 - 0.75 + 0.75 * dl / avgdl)))
            assert got[doc_id] == pytest.approx(want, rel=1e-12)
        assert set(got) == set(ids[:3]) and all(s > 0 for s in got.values())
        # Exactly half: Lucene's idf too (BM25Okapi's would be zero).
        half = dict(ranked(t, "gamma delta"))
        assert set(half) == {ids[2], ids[3]}
        assert all(s > 0 for s in half.values())


# -- query features -----------------------------------------------------------------------------


def test_last_term_matches_as_a_prefix_and_scores_its_best_expansion() -> None:
    with TestApp(app) as t:
        hello = t.mutation(add, {"text": "hello there"})
        help_ = t.mutation(add, {"text": "help me help"})
        other = t.mutation(add, {"text": "shell world"})
        assert {i for i, _ in ranked(t, "hel")} == {hello, help_}
        assert {i for i, _ in ranked(t, "world he")} == {hello, help_, other}
        # Only the last term is a prefix: "hel" first is an exact term (no document has it).
        assert [i for i, _ in ranked(t, "hel world")] == [other]
        # A document scores the best of the expansions it contains, not their sum.
        both = t.mutation(add, {"text": "hello help"})
        scores = dict(ranked(t, "hel"))
        alone = dict(ranked(t, "hello")) | dict(ranked(t, "help"))
        assert scores[both] == pytest.approx(max(dict(ranked(t, "hello"))[both], alone[both]))


def test_prefix_expands_to_at_most_16_terms_and_reads_only_those() -> None:
    with TestApp(app) as t:
        words = [f"pre{chr(97 + i)}" for i in range(20)]
        ids = t.mutation(add_many, {"texts": words, "colors": ["red"] * 20})
        got = {i for i, _ in ranked(t, "pre")}
        assert got == set(ids[:16])
        db = t.runtime.db
        txn = db.transaction()
        ranked(t, "pre", txn=txn)
        reads = txn.reads
        txn.close()
        info = db.space("").table("docs")
        index = info.indexes["search"]
        late = WriteSet()
        late.add("x", info.number, "docs", index_keys(index, "prez"))
        early = WriteSet()
        early.add("x", info.number, "docs", index_keys(index, "prea"))
        assert reads.touched_by(early) and not reads.touched_by(late)


def test_filters_are_anded(storage: Any) -> None:
    with TestApp(app, storage=storage) as t:
        a = t.mutation(add, {"text": "apple pie", "color": "red", "size": 1})
        b = t.mutation(add, {"text": "apple tart", "color": "red", "size": 2})
        c = t.mutation(add, {"text": "apple cake", "color": "green", "size": 1})
        assert {i for i, _ in ranked(t, "apple", [("color", "red")])} == {a, b}
        assert {i for i, _ in ranked(t, "apple", [("size", 1)])} == {a, c}
        assert [i for i, _ in ranked(t, "apple", [("color", "red"), ("size", 1)])] == [a]
        assert ranked(t, "apple", [("color", "green"), ("size", 2)]) == []
        # Numbers compare as numbers: 1.0 equals 1.
        assert {i for i, _ in ranked(t, "apple", [("size", 1.0)])} == {a, c}
        assert t.query(find, {"text": "apple", "color": "green"}) == [c]
        # Filters do not change scores: idf counts every document.
        unfiltered = dict(ranked(t, "apple pie"))
        assert dict(ranked(t, "apple pie", [("color", "red")]))[a] == unfiltered[a]


def test_results_are_capped_at_1024() -> None:
    with TestApp(app) as t:
        n = MAX_RESULTS + 76
        t.mutation(add_many, {"texts": [f"common word{i}" for i in range(n)], "colors": ["r"] * n})
        assert len(t.query(find, {"text": "common"})) == MAX_RESULTS
        assert len(t.query(find, {"text": "word9"})) == 16  # 111 terms start with it; 16 used


def test_ties_rank_newest_first() -> None:
    with TestApp(app) as t:
        first = t.mutation(add, {"text": "same words"})
        second = t.mutation(add, {"text": "same words"})
        assert t.query(find, {"text": "same"}) == [second, first]


def test_search_composes_with_filter_take_and_first() -> None:
    with TestApp(app) as t:
        t.mutation(add_many, {"texts": ["x y", "x", "x x x", "y"], "colors": ["a", "b", "a", "b"]})

        @app.query
        def compose(ctx: QueryCtx) -> list[Any]:
            q = ctx.db.query("docs")
            best = q.with_search_index("search", lambda s: s.search("text", "x")).first()
            reds = (
                ctx.db.query("docs")
                .with_search_index("search", lambda s: s.search("text", "x"))
                .filter(lambda d: d["color"] == "a")
                .collect()
            )
            two = (
                ctx.db.query("docs")
                .with_search_index("search", lambda s: s.search("text", "x"))
                .take(2)
            )
            return [best["text"] if best else None, [d["text"] for d in reds], len(two)]

        assert t.query(compose) == ["x x x", ["x x x", "x y"], 2]


def test_empty_query_and_no_matches_return_nothing() -> None:
    with TestApp(app) as t:
        t.mutation(add, {"text": "something"})
        assert t.query(find, {"text": ""}) == []
        assert t.query(find, {"text": "!!! ..."}) == []
        assert t.query(find, {"text": "absent"}) == []


def test_search_inside_a_mutation_sees_its_uncommitted_insert(storage: Any) -> None:
    with TestApp(app, storage=storage) as t:
        t.mutation(add, {"text": "older unicorn"})
        new, *found = t.mutation(insert_then_find, {"text": "unicorn"})
        assert new in found and len(found) == 2
        gone, here = t.mutation(change_then_find, {"id": new})
        assert new not in gone and here == [new]


def test_a_searching_transaction_keeps_its_snapshot(storage: Any) -> None:
    with TestApp(app, storage=storage) as t:
        first = t.mutation(add, {"text": "kiwi one"})
        ranked(t, "kiwi")  # cached at this version
        txn = t.runtime.db.transaction()
        try:
            assert [i for i, _ in ranked(t, "kiwi", txn=txn)] == [first]
            second = t.mutation(add, {"text": "kiwi two"})
            t.mutation(remove, {"id": first})
            assert {i for i, _ in ranked(t, "kiwi")} == {second}  # newer: cache moves on
            assert [i for i, _ in ranked(t, "kiwi", txn=txn)] == [first]  # older: still first
        finally:
            txn.close()


def test_a_transaction_older_than_the_cached_version_reads_its_own_snapshot() -> None:
    with TestApp(app) as t:
        first = t.mutation(add, {"text": "plum one"})
        txn = t.runtime.db.transaction()
        try:
            ranked(t, "other", txn=txn)  # fixes the snapshot; "plum" is not cached yet
            second = t.mutation(add, {"text": "plum two"})
            assert {i for i, _ in ranked(t, "plum")} == {first, second}  # cached after txn
            assert [i for i, _ in ranked(t, "plum", txn=txn)] == [first]
        finally:
            txn.close()


def test_commits_of_another_database_on_the_same_file_are_seen(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    with TestApp(app, storage=SQLiteStorage(path, synchronous="NORMAL")) as t:
        mine = t.mutation(add, {"text": "fig jam"})
        assert t.query(find, {"text": "fig"}) == [mine]  # cached here
        with TestApp(app, storage=SQLiteStorage(path, synchronous="NORMAL")) as other:
            theirs = other.mutation(add, {"text": "fig fig"})
            other.mutation(remove, {"id": mine})
        assert t.query(find, {"text": "fig"}) == [theirs]
        t.mutation(add, {"text": "unrelated"})  # catches up: the cache is then current again
        assert t.query(find, {"text": "fig"}) == [theirs]


def reference(docs: dict[str, str], text: str) -> dict[str, float]:
    """The module's documented scoring, written out plainly (prefix and common terms included)."""
    tokens = {i: tokenize(x) for i, x in docs.items()}
    terms = select_terms(query_terms(text), lambda w: sum(w in v for v in tokens.values()))
    n = len(docs)
    if not terms or not n:
        return {}
    avgdl = sum(len(v) for v in tokens.values()) / n
    vocab = sorted({w for v in tokens.values() for w in v})

    def score(term: str, doc: str) -> float:
        tf = tokens[doc].count(term)
        if not tf:
            return 0.0
        df = sum(term in v for v in tokens.values())
        idf = (
            math.log(n - df + 0.5) - math.log(df + 0.5)
            if 2 * df < n
            else math.log(1 + (n - df + 0.5) / (df + 0.5))
        )
        return idf * (tf * 2.5 / (tf + 1.5 * (1 - 0.75 + 0.75 * len(tokens[doc]) / avgdl)))

    expansions = [w for w in vocab if w.startswith(terms[-1])][:16]
    out = {}
    for doc in docs:
        total = sum(score(term, doc) for term in terms[:-1])
        total += max((score(w, doc) for w in expansions), default=0.0)
        if total > 0:
            out[doc] = total
    return out


def test_cached_searches_match_every_open_snapshot_under_random_writes() -> None:
    rng = random.Random(3)
    with TestApp(app) as t:
        db = t.runtime.db
        docs: dict[str, str] = {}
        open_txns: list[tuple[Any, dict[str, str]]] = []
        try:
            for step in range(160):
                op = rng.random()
                if op < 0.6:
                    random_write(t, rng, docs, op / 0.6)
                elif op < 0.75:
                    txn = db.transaction()
                    ranked(t, "w000z", txn=txn)  # takes the snapshot now
                    open_txns.append((txn, dict(docs)))
                elif open_txns:
                    txn, _ = open_txns.pop(rng.randrange(len(open_txns)))
                    txn.close()
                text = rng.choice([*rng.sample(WORDS[:40], 2), f"w0{rng.randint(0, 3)}", "w00"])
                views = [(None, docs), *rng.sample(open_txns, min(2, len(open_txns)))]
                for txn, seen in views:
                    got = dict(ranked(t, text, txn=txn))
                    want = reference(seen, text)
                    assert got.keys() == want.keys(), (step, text)
                    for doc_id, score in got.items():
                        assert score == pytest.approx(want[doc_id], rel=1e-9)
        finally:
            for txn, _ in open_txns:
                txn.close()


# -- read sets ----------------------------------------------------------------------------------


def index_keys(index: Any, text: str) -> list[tuple[int, bytes]]:
    doc = {"_id": "a" * 32, "_creation_time": 1.0, "text": text, "color": "red", "size": 1}
    return [(index.id, k) for k, _ in index.entries(doc)]


def test_read_set_is_touched_by_matching_inserts_only() -> None:
    with TestApp(app) as t:
        t.mutation(add, {"text": "seed doc"})
        db = t.runtime.db
        txn = db.transaction()
        ranked(t, "banana spl", [("color", "red")], txn=txn)
        reads = txn.reads
        txn.close()
        commits: list[WriteSet] = []
        db.add_listener(lambda ts, ws: commits.append(ws))
        t.mutation(add, {"text": "banana bread"})
        t.mutation(add, {"text": "a splendid day"})  # "spl" is a prefix of "splendid"
        t.mutation(add, {"text": "cherry pie"})
        t.mutation(add, {"text": "spoon"})
        touched = [reads.touched_by(ws) for ws in commits]
        assert touched == [True, True, False, False]


async def test_subscription_reruns_when_a_matching_document_is_inserted() -> None:
    with TestApp(app) as t:
        hub = subscription_hub(t.runtime)
        t.mutation(add, {"text": "first mango"})
        async with aclosing(subscribe(t.runtime, find, {"text": "mango"})) as updates:
            assert len(await anext(updates)) == 1
            runs = hub.query_runs
            await anyio.to_thread.run_sync(t.mutation, add, {"text": "lemon only"})
            assert hub.flush() and hub.stale == 0 and hub.query_runs == runs
            new = await anyio.to_thread.run_sync(t.mutation, add, {"text": "mango lassi"})
            with anyio.fail_after(10):
                assert new in await anext(updates)


# -- errors -------------------------------------------------------------------------------------


def test_builder_mistakes_are_refused() -> None:
    with TestApp(app) as t:

        @app.query
        def bad(ctx: QueryCtx, case: int) -> Any:
            q = ctx.db.query("docs")
            if case == 0:
                return q.with_search_index("nope", lambda s: s.search("text", "x")).collect()
            if case == 1:
                return q.with_search_index("search", lambda s: s.search("color", "x")).collect()
            if case == 2:
                return q.with_search_index("search", lambda s: s.eq("color", "x")).collect()
            if case == 3:
                return q.with_search_index(
                    "search", lambda s: s.search("text", "x").eq("text", "y")
                ).collect()
            if case == 4:

                def nine(s: SearchQuery) -> SearchQuery:
                    s = s.search("text", "x")
                    for _ in range(9):
                        s = s.eq("color", "x")
                    return s

                return q.with_search_index("search", nine).collect()
            if case == 5:
                return q.with_search_index("by_color", lambda s: s.search("text", "x")).collect()
            return q.with_search_index("search", lambda s: None).collect()  # type: ignore[arg-type,return-value]

        for case in range(7):
            with pytest.raises(InvalidArgumentError):
                t.query(bad, {"case": case})


def test_unset_filters_documents_missing_the_field() -> None:
    loose = App(Schema(items=Table().search_index("s", search_field="body", filter_fields=["tag"])))

    @loose.mutation
    def put(ctx: MutationCtx, body: str, tag: Any = None) -> str:
        return ctx.db.insert("items", {"body": body} if tag is None else {"body": body, "tag": tag})

    @loose.query
    def tagged(ctx: QueryCtx, unset: bool) -> list[str]:
        value = UNSET if unset else None
        found = ctx.db.query("items").with_search_index(
            "s", lambda q: q.search("body", "cat").eq("tag", value)
        )
        return [d["_id"] for d in found.collect()]

    with TestApp(loose) as t:
        bare = t.mutation(put, {"body": "cat"})
        t.mutation(put, {"body": "cat", "tag": "x"})
        assert t.query(tagged, {"unset": True}) == [bare]
        assert t.query(tagged, {"unset": False}) == []


def test_documents_without_a_string_field_are_not_indexed() -> None:
    loose = App(Schema(items=Table().search_index("s", search_field="body"), strict=False))

    @loose.mutation
    def put(ctx: MutationCtx, body: Any) -> None:
        ctx.db.insert("items", {"body": body} if body is not None else {})

    @loose.query
    def count(ctx: QueryCtx, text: str) -> int:
        return len(
            ctx.db.query("items").with_search_index("s", lambda q: q.search("body", text)).collect()
        )

    with TestApp(loose) as t:
        for body in ["one two", 12, ["one"], None, ""]:
            t.mutation(put, {"body": body})
        assert t.query(count, {"text": "one"}) == 1


def test_order_does_not_apply_to_a_search() -> None:
    def search_then_order(ctx: Any) -> Any:
        return ctx.db.query("docs").with_search_index("search", _apple).order("desc")

    def order_then_search(ctx: Any) -> Any:
        return ctx.db.query("docs").order("desc").with_search_index("search", _apple)

    with TestApp(app) as t:
        for fn in (search_then_order, order_then_search):
            with pytest.raises(InvalidArgumentError, match="relevance order"):
                t.run(fn)


def _apple(q: SearchQuery) -> SearchQuery:
    return q.search("text", "apple")
