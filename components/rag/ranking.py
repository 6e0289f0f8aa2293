"""Owns the pure ranking arithmetic of rag search: fusion, score thresholds and chunk windows.

Nothing here touches a context or the database; the search code feeds it ids and scores.

Vector ranking. A vector hit's score is ``cosine × importance`` (importance in [0, 1], an
entry's weight). ``rank_vector_hits`` applies it, orders by it, and keeps the hits whose score
is at least ``vector_score_threshold`` (inclusive). The threshold is applied before fusion, in
the vector and hybrid modes alike, so a chunk under it takes no part in the hybrid ranking.

Hybrid fusion. ``hybrid_rank`` fuses the vector and the text (BM25) rankings with weighted
reciprocal rank fusion: a chunk at 1-based rank ``r`` of a ranking with weight ``w`` gets
``w / (k + r)`` from it, and nothing from a ranking it is absent from (Convex's ``indexOf``
gave an absent chunk rank -1, a bigger bonus than the top hit's). Results are deduplicated by
chunk. By default the fusion is *tiered*: a chunk found by both rankings always ranks above a
chunk found by one, whatever the ranks; within a tier the weighted RRF sum orders them. So a
chunk ranked first by BM25 and absent from the vector ranking comes after every chunk present
in both, and below a chunk equally placed in both in either mode. A ranking with weight 0 is
ignored for the tier and the sum. Raising ``text_weight`` never moves a chunk that BM25 ranks
better down past one it ranks worse (and symmetrically for ``vector_weight``).

The reported score is monotone in the order and in (0, 1]: the RRF sum divided by its
maximum (a chunk first in every ranking), and in tiered mode ``(tier - 1 + that) / rankings``,
so a chunk found by both of two rankings scores above 0.5 and one found by one at most 0.5.
Ties keep the round-robin order of first appearance (rank 1 of vector, rank 1 of text, rank 2
of vector, ...).

Defaults, measured on Cranfield with ``bench/fusion.py`` (1,400 title + abstract documents, 225
queries; BM25 as our index ranks, all-MiniLM-L6-v2 exact cosine; nDCG@10 with gain
2^grade - 1, recall@100): BM25 0.324 / 0.689, dense 0.368 / 0.772, ours 0.396 / 0.773.

- ``RRF_K = 10``, ranks counted from 1, so the top hit of a ranking gets ``w / 11``. Smaller
  ``k`` trusts the head of each ranking more; on Cranfield k = 5 / 10 / 20 / 60 score nDCG@10
  0.399 / 0.396 / 0.393 / 0.390 (tiered; plain within 0.003). 10 is steady from 50
  candidates per side up (0.395-0.397), well above both single modes, and Convex's value; 5 is
  within noise of it and leans harder on single top ranks. (k = 60 is Cormack et al.'s
  constant for fusing many long runs; with two short candidate lists it is the weakest here.)
- Tiered, the strong reading of "ranks below a chunk present in both": it costs ~0.001 nDCG@10
  against plain weighted RRF at k = 10 (0.3960 / 0.3972), where plain RRF puts a one-ranking
  chunk above a both-rankings one in the first 10 for 45 of 225 queries. (At k = 60 plain RRF
  never does with 100 candidates, and the two orders agree.)
- ``candidate_count(limit) = min(256, max(limit, 50))`` hits from each index. For limit 10,
  10 / 40 / 50 / 100 / 256 per side score nDCG@10 0.388 / 0.392 / 0.395 / 0.396 / 0.397; for
  limit 100, 100 per side keeps recall@100 at 0.773 where 256 drops it to 0.757 (deep chunks
  found by both crowd out strong one-sided ones in tiered order).
- Equal weights are the documented defaults; ``vector_weight=2`` scores 0.395, ``text_weight=2``
  0.383 here (MiniLM beats BM25 on this collection).

Chunk windows. ``chunk_windows`` turns hits ``(entry, order)`` into the chunk ranges a search
returns for ``chunk_context=(before, after)``: up to ``before`` chunks before each hit and
``after`` after, clamped to the entry's ``[0, count)``, never overlapping another result of the
same entry. Between two hits of one entry the chunks go to the later hit's "before" context
first (its start is the earlier hit + 1 at the least) and the earlier hit's "after" context
stops where that begins, as Convex's ``getRangesOfChunks`` does. A repeated hit is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from core import InvalidArgumentError

KeyT = TypeVar("KeyT", bound=Hashable)
EntryT = TypeVar("EntryT", bound=Hashable)

RRF_K = 10
"""The reciprocal-rank-fusion constant ``k`` in ``w / (k + rank)``, ranks counted from 1."""

MIN_CANDIDATES = 50
"""A hybrid search takes at least this many hits from each index (see ``candidate_count``)."""

MAX_VECTOR_CANDIDATES = 256
"""The vector index returns at most this many hits (the search index, 1,024)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScoredHit(Generic[KeyT]):
    """One hit of a single ranking with its score."""

    key: KeyT
    """The chunk (or whatever the ranking ranks)."""
    score: float
    """For a vector hit, ``cosine × importance``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FusedHit(Generic[KeyT]):
    """One chunk of a fused ranking."""

    key: KeyT
    """The chunk."""
    score: float
    """In (0, 1], descending along the fused ranking (see the module docstring); 0.0 for a
    chunk found only by rankings of weight 0."""
    ranks: tuple[int | None, ...]
    """Its 1-based rank in each input ranking, ``None`` where absent."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkWindow(Generic[EntryT]):
    """The chunks one search result includes: ``start_order..end_order`` of an entry."""

    entry_id: EntryT
    """The entry the hit belongs to."""
    order: int
    """The order of the hit chunk."""
    start_order: int
    """The first chunk order included (``order - before`` at the most)."""
    end_order: int
    """The last chunk order included, inclusive (``order + after`` at the most)."""

    @property
    def orders(self) -> range:
        """The chunk orders included, in order."""
        return range(self.start_order, self.end_order + 1)


# ---------------------------------------------------------------------------------------------
# Argument checks (shared with the client, which reports them under the argument's name).
# ---------------------------------------------------------------------------------------------


def _number(argument: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgumentError(
            f'Argument "{argument}" must be a finite number, not {value!r}.', argument=argument
        )
    return float(value)


def check_weight(argument: str, value: Any) -> float:
    """``value`` as a fusion weight: a finite number, zero or more.

    Raises:
        InvalidArgumentError: naming ``argument``, when it is not one.
    """
    weight = _number(argument, value)
    if weight < 0:
        raise InvalidArgumentError(
            f'Argument "{argument}" must be zero or more, not {value!r}.', argument=argument
        )
    return weight


def check_importance(value: Any) -> float:
    """``value`` as an entry's importance: a finite number from 0 to 1.

    Raises:
        InvalidArgumentError: when it is not one.
    """
    importance = _number("importance", value)
    if not 0.0 <= importance <= 1.0:
        raise InvalidArgumentError(
            f'Argument "importance" must be between 0 and 1, not {value!r}.',
            argument="importance",
        )
    return importance


def check_threshold(value: Any) -> float | None:
    """``value`` as a ``vector_score_threshold``: ``None`` or a finite number.

    Raises:
        InvalidArgumentError: when it is neither.
    """
    return None if value is None else _number("vector_score_threshold", value)


def check_chunk_context(value: Any) -> tuple[int, int]:
    """``value`` as ``chunk_context``: a pair ``(before, after)`` of integers, zero or more.

    A list is accepted too (JSON has no tuples).

    Raises:
        InvalidArgumentError: when it is not one.
    """
    if (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value)
    ):
        return (value[0], value[1])
    raise InvalidArgumentError(
        'Argument "chunk_context" must be a pair (before, after) of integers, zero or more, '
        f"not {value!r}.",
        argument="chunk_context",
    )


def candidate_count(limit: int) -> int:
    """How many hits to take from each index for a hybrid search returning ``limit``."""
    return min(MAX_VECTOR_CANDIDATES, max(limit, MIN_CANDIDATES))


# ---------------------------------------------------------------------------------------------
# Vector scores.
# ---------------------------------------------------------------------------------------------


def rank_vector_hits(
    hits: Iterable[tuple[KeyT, float]],
    *,
    importance: Mapping[KeyT, float] | None = None,
    threshold: float | None = None,
) -> list[ScoredHit[KeyT]]:
    """Vector hits ``(key, cosine)`` scored ``cosine × importance``, best first.

    Args:
        hits: the vector index's hits, in any order; a repeated key keeps its best score.
        importance: each key's importance; a key not in it has importance 1.0.
        threshold: when given, only hits scoring at least this (inclusive) are kept.
    """
    weights = importance or {}
    best: dict[KeyT, float] = {}
    for key, cosine in hits:
        score = cosine * weights.get(key, 1.0)
        if threshold is not None and score < threshold:
            continue
        if key not in best or score > best[key]:
            best[key] = score
    ranked = sorted(best.items(), key=lambda item: -item[1])  # stable: ties keep input order
    return [ScoredHit(key=key, score=score) for key, score in ranked]


# ---------------------------------------------------------------------------------------------
# Fusion.
# ---------------------------------------------------------------------------------------------


def _ranks(ranking: Sequence[KeyT]) -> dict[KeyT, int]:
    """Each distinct key's 1-based rank; a repeated key keeps its first (best) place."""
    ranks: dict[KeyT, int] = {}
    for key in ranking:
        if key not in ranks:
            ranks[key] = len(ranks) + 1
    return ranks


def _first_seen(rank_maps: Sequence[dict[KeyT, int]]) -> list[KeyT]:
    """The union of the rankings, round-robin: rank 1 of each, then rank 2 of each, ..."""
    lists = [list(ranks) for ranks in rank_maps]
    seen: dict[KeyT, None] = {}
    for position in range(max((len(keys) for keys in lists), default=0)):
        for keys in lists:
            if position < len(keys):
                seen.setdefault(keys[position], None)
    return list(seen)


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[KeyT]],
    weights: Sequence[float],
    *,
    k: float = RRF_K,
    tiered: bool = True,
) -> list[FusedHit[KeyT]]:
    """Fuse rankings (best first) with weighted RRF; the union of their keys, deduplicated.

    Args:
        rankings: each a sequence of keys, best first; a key repeated in one keeps its best rank.
        weights: one per ranking, zero or more, not all zero; a ranking of weight 0 does not
            count (its keys come last, with score 0, unless another ranking has them).
        k: the RRF constant, positive.
        tiered: order by the number of (weighted) rankings a key is in first, then by the RRF
            sum (the default); ``False`` orders by the sum alone.

    Raises:
        InvalidArgumentError: when the weights are negative, all zero, or not one per ranking.
    """
    if len(weights) != len(rankings):
        raise InvalidArgumentError(
            f"Got {len(weights)} fusion weights for {len(rankings)} rankings; pass one each.",
            argument="weights",
        )
    checked = [check_weight(f"weights[{i}]", w) for i, w in enumerate(weights)]
    if rankings and not any(checked):
        raise InvalidArgumentError(
            "Every fusion weight is 0; give at least one ranking a positive weight.",
            argument="weights",
        )
    if not k > 0:
        raise InvalidArgumentError(f"The RRF constant k must be positive, not {k!r}.")
    rank_maps = [_ranks(ranking) for ranking in rankings]
    active = [i for i, w in enumerate(checked) if w > 0]
    best_sum = sum(checked[i] / (k + 1) for i in active)
    hits: list[tuple[tuple[int, float], FusedHit[KeyT]]] = []
    for key in _first_seen(rank_maps):
        ranks = tuple(ranks.get(key) for ranks in rank_maps)
        found = [(i, rank) for i in active if (rank := ranks[i]) is not None]
        rrf = sum(checked[i] / (k + rank) for i, rank in found)
        tier = len(found) if tiered else min(len(found), 1)
        if not found:
            score = 0.0
        elif tiered:
            score = (tier - 1 + rrf / best_sum) / len(active)
        else:
            score = rrf / best_sum
        # Sorted on the exact (tier, sum), not on the derived score, which may round.
        hits.append(((tier, rrf), FusedHit(key=key, score=score, ranks=ranks)))
    hits.sort(key=lambda pair: (-pair[0][0], -pair[0][1]))  # stable: ties keep round-robin order
    return [hit for _, hit in hits]


def hybrid_rank(
    vector: Sequence[KeyT],
    text: Sequence[KeyT],
    *,
    vector_weight: float = 1.0,
    text_weight: float = 1.0,
    k: float = RRF_K,
    tiered: bool = True,
) -> list[FusedHit[KeyT]]:
    """Fuse the vector and the text ranking (keys best first); ``ranks`` is (vector, text).

    See the module docstring for the order; cut the result to the search's ``limit``.

    Raises:
        InvalidArgumentError: naming ``vector_weight`` / ``text_weight`` when one is negative or
            not a number, or when both are 0.
    """
    weights = (
        check_weight("vector_weight", vector_weight),
        check_weight("text_weight", text_weight),
    )
    if not any(weights):
        raise InvalidArgumentError(
            'Arguments "vector_weight" and "text_weight" are both 0; a hybrid search needs at '
            "least one positive weight.",
            argument="vector_weight",
        )
    return reciprocal_rank_fusion([vector, text], weights, k=k, tiered=tiered)


# ---------------------------------------------------------------------------------------------
# Chunk windows.
# ---------------------------------------------------------------------------------------------


def chunk_windows(
    hits: Sequence[tuple[EntryT, int]],
    chunk_counts: Mapping[EntryT, int],
    *,
    before: int = 0,
    after: int = 0,
) -> list[ChunkWindow[EntryT]]:
    """The chunk range of each distinct hit ``(entry, order)``, in hit order.

    Args:
        hits: the results, best first; a repeated ``(entry, order)`` is dropped.
        chunk_counts: how many chunks each hit's entry has (orders ``0..count-1``).
        before: chunks to add before each hit, at most.
        after: chunks to add after each hit, at most.

    Raises:
        InvalidArgumentError: when a hit's order is outside its entry's chunks, or ``before`` /
            ``after`` is negative.
    """
    before, after = check_chunk_context((before, after))
    distinct = list(dict.fromkeys(hits))
    by_entry: dict[EntryT, list[int]] = {}
    for entry, order in distinct:
        count = chunk_counts.get(entry, 0)
        if not 0 <= order < count:
            raise InvalidArgumentError(
                f"Hit at chunk order {order} of entry {entry!r}, which has {count} chunks.",
                argument="hits",
            )
        by_entry.setdefault(entry, []).append(order)
    neighbours: dict[tuple[EntryT, int], tuple[int | None, int | None]] = {}
    for entry, orders in by_entry.items():
        orders.sort()
        for i, order in enumerate(orders):
            previous = orders[i - 1] if i > 0 else None
            following = orders[i + 1] if i + 1 < len(orders) else None
            neighbours[(entry, order)] = (previous, following)
    windows: list[ChunkWindow[EntryT]] = []
    for entry, order in distinct:
        previous, following = neighbours[(entry, order)]
        start = max(0, order - before)
        if previous is not None:
            start = max(start, previous + 1)
        end = min(chunk_counts[entry] - 1, order + after)
        if following is not None:
            # The following hit's "before" context wins the chunks between the two hits.
            end = min(end, max(following - before, order + 1) - 1)
        windows.append(ChunkWindow(entry_id=entry, order=order, start_order=start, end_order=end))
    return windows
