"""Cranfield benchmark: retrieval quality of the BM25 search index beside rank_bm25.

Run ``python bench/cranfield.py`` (a few seconds). It reads the Cranfield 1400 collection from
``../shared/datasets/cranfield`` relative to the repository root (or the folder named by
``CAPSULE_CRANFIELD_DIR``), loads the abstracts into a table with a search index, runs the 225
queries through ``with_search_index(...).take(100)`` and prints nDCG@10 and recall@100 beside
``rank_bm25.BM25Okapi`` given the same tokens (our tokenizer; the query's distinct terms, of a
long query the 16 the index keeps), and, for reference, rank_bm25 given every query token. Target:
at least rank_bm25's score.

Collection pitfalls handled here (see the dataset's README): queries are numbered by position
in ``cranqrel`` (the ``.I`` numbers of ``cran.qry`` have gaps); relevance codes run from 1
(most relevant) to 4, with -1 for "no interest", so the gain is ``5 - code`` and -1 is
dropped; only ``.W`` is indexed (it repeats the title); and a second ``.W`` in a document is
appended, not overwritten.
"""

# ruff: noqa: T201
from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

import numpy as np  # noqa: E402
from rank_bm25 import BM25Okapi  # noqa: E402

from core import App, MutationCtx, QueryCtx, Schema, SQLiteStorage, Table  # noqa: E402
from core.indexes.text import query_terms, select_terms, tokenize  # noqa: E402


def dataset_dir() -> Path:
    """Where the collection is: ``CAPSULE_CRANFIELD_DIR``, else beside the repository."""
    given = os.environ.get("CAPSULE_CRANFIELD_DIR")
    path = Path(given) if given else ROOT.parent / "shared" / "datasets" / "cranfield"
    if not (path / "cran.all.1400").is_file():
        sys.exit(f"Cranfield collection not found in {path}; set CAPSULE_CRANFIELD_DIR.")
    return path


def sections(path: Path) -> list[dict[str, str]]:
    """The records of a Cranfield file: ``.I`` starts one, ``.X`` lines start its fields."""
    records: list[dict[str, str]] = []
    field = ""
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith(".I"):
            records.append({"I": line[2:].strip()})
            field = ""
        elif len(line) == 2 and line.startswith("."):
            field = line[1]
            # A repeated marker (two documents have a second .W) continues the field.
            records[-1].setdefault(field, "")
        elif field:
            records[-1][field] += " " + line
    return records


def judgements(path: Path) -> dict[int, dict[int, int]]:
    """Query position (1-based) -> document number -> gain (5 - code; code -1 dropped)."""
    qrels: dict[int, dict[int, int]] = {}
    for line in path.read_text(encoding="latin-1").split("\n"):
        parts = line.split()
        if len(parts) < 3:
            continue
        query, doc, code = int(parts[0]), int(parts[1]), int(parts[2])
        if 1 <= code <= 4:
            qrels.setdefault(query, {})[doc] = 5 - code
    return qrels


def ndcg_at(ranked: list[int], gains: dict[int, int], k: int) -> float:
    """nDCG@k with linear gains (as trec_eval)."""
    dcg = sum(gains.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(gains.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: list[int], gains: dict[int, int], k: int) -> float:
    """The share of the relevant documents found in the first ``k``."""
    return len(set(ranked[:k]) & set(gains)) / len(gains) if gains else 0.0


def okapi_ranking(bm: BM25Okapi, numbers: list[int], terms: list[str], k: int) -> list[int]:
    """rank_bm25's first ``k`` documents (with a positive score) for ``terms``."""
    scores = bm.get_scores(terms)
    order = np.argsort(-scores, kind="stable")[:k]
    return [numbers[i] for i in order if scores[i] > 0]


def main() -> None:
    """Load the abstracts, run every query here and in rank_bm25, print the scores."""
    folder = dataset_dir()
    docs = sections(folder / "cran.all.1400")
    queries = [" ".join(q.get("W", "").split()) for q in sections(folder / "cran.qry")]
    qrels = judgements(folder / "cranqrel")
    numbers = [int(d["I"]) for d in docs]
    texts = [" ".join(d.get("W", "").split()) for d in docs]

    schema = Schema(
        abstracts=Table({"num": int, "text": str}).search_index("s", search_field="text")
    )
    with tempfile.TemporaryDirectory(prefix="capsule-bench-cranfield-") as tmp:
        app = App(schema, storage=SQLiteStorage(Path(tmp) / "cran.db", synchronous="NORMAL"))

        @app.mutation
        def load(ctx: MutationCtx, rows: list[tuple[int, str]]) -> None:
            for num, text in rows:
                ctx.db.insert("abstracts", {"num": num, "text": text})

        @app.query
        def search(ctx: QueryCtx, q: str) -> list[int]:
            found = ctx.db.query("abstracts").with_search_index("s", lambda s: s.search("text", q))
            return [d["num"] for d in found.take(100)]

        with app.sync_client() as client:
            client.mutation(load, {"rows": list(zip(numbers, texts, strict=True))})
            start = time.perf_counter()
            ours = [client.query(search, {"q": q}) for q in queries]
            elapsed = time.perf_counter() - start

    tokens = [tokenize(t) for t in texts]
    bm = BM25Okapi(tokens)
    df = Counter(term for doc in tokens for term in set(doc))
    used = [select_terms(query_terms(q), df.__getitem__) for q in queries]
    same = [okapi_ranking(bm, numbers, terms, 100) for terms in used]
    full = [okapi_ranking(bm, numbers, tokenize(q), 100) for q in queries]

    judged = [i for i in range(len(queries)) if qrels.get(i + 1)]
    print(f"Cranfield: {len(docs)} documents, {len(queries)} queries ({len(judged)} judged)")
    long = sum(len(query_terms(q)) > len(u) for q, u in zip(queries, used, strict=True))
    print(f"  {long} queries have more than 16 distinct terms (the index keeps the 16 rarest)")
    print(f"  {'':44} {'nDCG@10':>8} {'R@100':>8}")
    for name, runs in (
        ("capsule search index", ours),
        ("rank_bm25 BM25Okapi, same tokens", same),
        ("rank_bm25 BM25Okapi, every query token", full),
    ):
        ndcg = np.mean([ndcg_at(runs[i], qrels[i + 1], 10) for i in judged])
        rec = np.mean([recall_at(runs[i], qrels[i + 1], 100) for i in judged])
        print(f"  {name:44} {ndcg:8.4f} {rec:8.4f}")
    ours_ndcg = np.mean([ndcg_at(ours[i], qrels[i + 1], 10) for i in judged])
    same_ndcg = np.mean([ndcg_at(same[i], qrels[i + 1], 10) for i in judged])
    print(
        f"  capsule / rank_bm25 (same tokens): nDCG@10 {ours_ndcg / same_ndcg:.3f}x "
        f"(target >= 1); {len(queries) / elapsed:.0f} queries/s"
    )


if __name__ == "__main__":
    main()
