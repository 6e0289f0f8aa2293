"""Pure ranking: weighted RRF fusion, vector scores and thresholds, chunk_context windows."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.rag.ranking import (
    MAX_VECTOR_CANDIDATES,
    RRF_K,
    ChunkWindow,
    FusedHit,
    ScoredHit,
    candidate_count,
    check_chunk_context,
    check_importance,
    check_threshold,
    check_weight,
    chunk_windows,
    hybrid_rank,
    rank_vector_hits,
    reciprocal_rank_fusion,
)
from core import InvalidArgumentError


def keys(hits: list[FusedHit[str]]) -> list[str]:
    return [hit.key for hit in hits]


# --- hybrid fusion: the acceptance sentences ----------------------------------------------------


def test_rrf_constant_is_documented() -> None:
    assert RRF_K == 10
    # Ranks count from 1: a chunk first in both of two equally weighted rankings scores 1.0.
    (top,) = hybrid_rank(["a"], ["a"])
    assert top.score == 1.0
    assert top.ranks == (1, 1)


@pytest.mark.parametrize("tiered", [True, False])
def test_a_chunk_missing_from_one_ranking_never_gains_from_it(tiered: bool) -> None:
    # Convex's indexOf bug gave "x", absent from the text ranking, a bonus above "a"'s.
    fused = hybrid_rank(["x", "a"], ["a"], tiered=tiered)
    assert keys(fused) == ["a", "x"]
    (x,) = (hit for hit in fused if hit.key == "x")
    assert x.ranks == (1, None)
    alone = hybrid_rank(["x"], ["other"], tiered=tiered)
    assert x.score == pytest.approx(alone[0].score)  # the same as if the text list were empty


@pytest.mark.parametrize("tiered", [True, False])
@pytest.mark.parametrize("rank", [1, 2, 5, 20, 100])
def test_ranks_below_a_chunk_equally_placed_in_both(tiered: bool, rank: int) -> None:
    pad_v = [f"v{i}" for i in range(rank - 1)]
    pad_t = [f"t{i}" for i in range(rank - 1)]
    # "solo" at `rank` in one ranking only; "both" at `rank` in the other and just after
    # "solo" in the first: "both" still comes first, from either side.
    fused = keys(hybrid_rank([*pad_v, "solo", "both"], [*pad_t, "both"], tiered=tiered))
    assert fused.index("both") < fused.index("solo")
    fused = keys(hybrid_rank([*pad_v, "both"], [*pad_t, "solo", "both"], tiered=tiered))
    assert fused.index("both") < fused.index("solo")


def test_first_in_bm25_and_absent_from_vector_is_not_above_chunks_in_both() -> None:
    vector = [f"v{i}" for i in range(40)]
    text = ["bm25-top", *[f"v{i}" for i in range(39, -1, -1)]]  # the vector chunks, reversed
    fused = keys(hybrid_rank(vector, text))
    assert fused[-1] == "bm25-top"
    assert len(fused) == 41


def test_weights_change_the_order_as_documented() -> None:
    vector = ["v", "x", "t"]  # "v" is the vector favourite, "t" the text favourite
    text = ["t", "x", "v"]
    assert keys(hybrid_rank(vector, text, text_weight=2.0))[0] == "t"
    assert keys(hybrid_rank(vector, text, vector_weight=2.0))[0] == "v"
    # Equal weights: "v" and "t" tie (1/11 + 1/13 each, above "x"'s 2/12) and the vector's
    # favourite comes first.
    equal = hybrid_rank(vector, text)
    assert keys(equal) == ["v", "t", "x"]
    assert equal[0].score == equal[1].score


def test_a_zero_weight_ranking_is_ignored() -> None:
    fused = hybrid_rank(["a", "b", "c"], ["c", "d"], text_weight=0.0)
    assert keys(fused) == ["a", "b", "c", "d"]
    assert fused[-1].score == 0.0  # found only by the ranking of weight 0
    assert fused[-1].ranks == (None, 2)


def test_results_are_deduplicated_by_chunk() -> None:
    fused = hybrid_rank(["a", "b", "a", "c"], ["b", "b", "d"])
    assert keys(fused) == ["b", "a", "d", "c"]
    assert [hit.ranks for hit in fused] == [(2, 1), (1, None), (None, 2), (3, None)]


def test_tiered_scores_say_how_many_rankings_found_the_chunk() -> None:
    fused = hybrid_rank([f"v{i}" for i in range(50)], [*(f"v{i}" for i in range(49, 9, -1)), "t"])
    both = [hit for hit in fused if None not in hit.ranks]
    one = [hit for hit in fused if None in hit.ranks]
    assert len(both) == 40
    assert all(0.5 < hit.score <= 1.0 for hit in both)
    assert all(0.0 < hit.score <= 0.5 for hit in one)
    scores = [hit.score for hit in fused]
    assert scores == sorted(scores, reverse=True)


def test_plain_mode_is_weighted_rrf() -> None:
    vector, text = ["a", "b", "c"], ["c", "d", "a"]
    fused = hybrid_rank(vector, text, vector_weight=0.5, text_weight=2.0, k=60, tiered=False)

    def rrf(key: str) -> float:
        total = 0.0
        if key in vector:
            total += 0.5 / (60 + vector.index(key) + 1)
        if key in text:
            total += 2.0 / (60 + text.index(key) + 1)
        return total

    assert keys(fused) == sorted("abcd", key=lambda key: -rrf(key))
    best = 0.5 / 61 + 2.0 / 61
    assert [hit.score for hit in fused] == pytest.approx([rrf(hit.key) / best for hit in fused])


def test_fusing_empty_rankings_is_empty() -> None:
    assert hybrid_rank([], []) == []
    assert keys(hybrid_rank(["a"], [])) == ["a"]
    assert reciprocal_rank_fusion([], []) == []


def test_more_than_two_rankings() -> None:
    fused = reciprocal_rank_fusion([["a", "b"], ["b", "c"], ["b", "a"]], [1.0, 1.0, 1.0])
    assert keys(fused) == ["b", "a", "c"]
    assert fused[0].ranks == (2, 1, 1)


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"vector_weight": -1.0}, "vector_weight"),
        ({"text_weight": math.nan}, "text_weight"),
        ({"text_weight": math.inf}, "text_weight"),
        ({"vector_weight": True}, "vector_weight"),
        ({"text_weight": "1"}, "text_weight"),
        ({"vector_weight": 0.0, "text_weight": 0}, "vector_weight"),
    ],
)
def test_bad_weights_are_refused_by_name(options: dict[str, object], argument: str) -> None:
    with pytest.raises(InvalidArgumentError, match=f'"{argument}"') as caught:
        hybrid_rank(["a"], ["b"], **options)  # type: ignore[arg-type]
    assert caught.value.argument == argument


def test_bad_fusion_arguments() -> None:
    with pytest.raises(InvalidArgumentError, match="2 fusion weights for 1 rankings"):
        reciprocal_rank_fusion([["a"]], [1.0, 1.0])
    with pytest.raises(InvalidArgumentError, match="Every fusion weight is 0"):
        reciprocal_rank_fusion([["a"], ["b"]], [0.0, 0.0])
    with pytest.raises(InvalidArgumentError, match="k must be positive"):
        hybrid_rank(["a"], ["b"], k=0)


# --- vector scores ------------------------------------------------------------------------------


def test_vector_scores_are_cosine_times_importance() -> None:
    hits = [("a", 0.9), ("b", 0.8), ("c", 0.7)]
    ranked = rank_vector_hits(hits, importance={"a": 0.5, "b": 1.0})
    assert ranked == [
        ScoredHit(key="b", score=0.8),
        ScoredHit(key="c", score=0.7),  # no importance given: 1.0
        ScoredHit(key="a", score=0.45),
    ]


def test_identical_vectors_rank_by_importance() -> None:
    ranked = rank_vector_hits(
        [("low", 0.6), ("mid", 0.6), ("high", 0.6)],
        importance={"low": 0.2, "mid": 0.5, "high": 0.8},
    )
    assert [hit.key for hit in ranked] == ["high", "mid", "low"]


def test_vector_score_threshold_is_inclusive_and_applies_to_the_weighted_score() -> None:
    hits = [("a", 0.8), ("b", 0.5), ("c", 0.9), ("d", 0.79)]
    ranked = rank_vector_hits(hits, threshold=0.8)
    assert [hit.key for hit in ranked] == ["c", "a"]
    assert all(hit.score >= 0.8 for hit in ranked)
    weighted = rank_vector_hits(hits, importance={"c": 0.5}, threshold=0.8)
    assert [hit.key for hit in weighted] == ["a"]  # c scores 0.45 after its importance
    assert rank_vector_hits(hits, threshold=None) == rank_vector_hits(hits)


def test_repeated_vector_hits_keep_their_best_score() -> None:
    ranked = rank_vector_hits([("a", 0.3), ("b", 0.5), ("a", 0.7)])
    assert ranked == [ScoredHit(key="a", score=0.7), ScoredHit(key="b", score=0.5)]


def test_threshold_before_fusion_keeps_chunks_out_of_hybrid() -> None:
    vector = [hit.key for hit in rank_vector_hits([("a", 0.9), ("b", 0.2)], threshold=0.5)]
    assert keys(hybrid_rank(vector, ["b", "c"])) == ["a", "b", "c"]
    assert hybrid_rank(vector, ["b", "c"])[1].ranks == (None, 1)


# --- argument checks ----------------------------------------------------------------------------


def test_argument_checks() -> None:
    assert check_weight("text_weight", 2) == 2.0
    assert check_importance(0) == 0.0
    assert check_importance(1) == 1.0
    assert check_threshold(None) is None
    assert check_threshold(-1) == -1.0
    assert check_chunk_context((1, 2)) == (1, 2)
    assert check_chunk_context([0, 3]) == (0, 3)


@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, "0.5", None, False])
def test_bad_importance(value: object) -> None:
    with pytest.raises(InvalidArgumentError, match='"importance"') as caught:
        check_importance(value)
    assert caught.value.argument == "importance"


@pytest.mark.parametrize("value", [math.nan, math.inf, "0.5", True])
def test_bad_threshold(value: object) -> None:
    with pytest.raises(InvalidArgumentError, match='"vector_score_threshold"'):
        check_threshold(value)


@pytest.mark.parametrize("value", [(1,), (1, 2, 3), (-1, 0), (0, 1.5), (True, 0), "ab", 3, None])
def test_bad_chunk_context(value: object) -> None:
    with pytest.raises(InvalidArgumentError, match='"chunk_context" must be a pair'):
        check_chunk_context(value)


def test_candidate_count() -> None:
    assert candidate_count(1) == 50
    assert candidate_count(10) == 50
    assert candidate_count(100) == 100
    assert candidate_count(1000) == MAX_VECTOR_CANDIDATES


# --- chunk windows (Convex's getRangesOfChunks cases) ------------------------------------------


def window(entry: str, order: int, start: int, end: int) -> ChunkWindow[str]:
    return ChunkWindow(entry_id=entry, order=order, start_order=start, end_order=end)


def test_window_around_one_hit() -> None:
    (found,) = chunk_windows([("e", 3)], {"e": 7}, before=2, after=2)
    assert found == window("e", 3, 1, 5)
    assert list(found.orders) == [1, 2, 3, 4, 5]


def test_windows_are_clamped_to_the_entry() -> None:
    assert chunk_windows([("e", 2)], {"e": 3}, before=5, after=5) == [window("e", 2, 0, 2)]


def test_zero_context_is_exactly_the_hit() -> None:
    assert chunk_windows([("e", 4), ("e", 5)], {"e": 9}) == [
        window("e", 4, 4, 4),
        window("e", 5, 5, 5),
    ]


def test_between_two_hits_the_later_hit_takes_the_chunks_first() -> None:
    assert chunk_windows([("e", 2), ("e", 6)], {"e": 10}, before=3, after=3) == [
        window("e", 2, 0, 2),
        window("e", 6, 3, 9),
    ]
    assert [
        w.start_order
        for w in chunk_windows([("e", 2), ("e", 7), ("e", 12)], {"e": 20}, before=4, after=4)
    ] == [0, 3, 8]


def test_windows_follow_hit_order_not_chunk_order() -> None:
    assert chunk_windows([("e", 6), ("e", 2)], {"e": 10}, before=3, after=3) == [
        window("e", 6, 3, 9),
        window("e", 2, 0, 2),
    ]


def test_after_context_when_no_before() -> None:
    assert chunk_windows([("e", 1), ("e", 4)], {"e": 10}, before=0, after=5) == [
        window("e", 1, 1, 3),
        window("e", 4, 4, 9),
    ]


def test_entries_do_not_limit_each_other_and_repeats_are_dropped() -> None:
    hits = [("a", 2), ("b", 3), ("a", 2), ("b", 4)]
    assert chunk_windows(hits, {"a": 5, "b": 8}, before=1, after=1) == [
        window("a", 2, 1, 3),
        window("b", 3, 2, 3),
        window("b", 4, 4, 5),
    ]


@pytest.mark.parametrize(
    ("hit", "counts"), [(("e", 5), {"e": 5}), (("e", -1), {"e": 5}), (("x", 0), {})]
)
def test_a_hit_outside_its_entry_is_an_error(hit: tuple[str, int], counts: dict[str, int]) -> None:
    with pytest.raises(InvalidArgumentError, match="Hit at chunk order"):
        chunk_windows([hit], counts)


def test_negative_context_is_an_error() -> None:
    with pytest.raises(InvalidArgumentError, match="chunk_context"):
        chunk_windows([("e", 0)], {"e": 1}, before=-1)


# --- properties ---------------------------------------------------------------------------------

rankings = st.lists(st.integers(0, 30), max_size=25)
weights = st.floats(0.01, 100.0)


@settings(max_examples=300, deadline=None)
@given(vector=rankings, text=rankings, vw=weights, tw=weights, tiered=st.booleans())
def test_fusion_is_the_deduplicated_union(
    vector: list[int], text: list[int], vw: float, tw: float, tiered: bool
) -> None:
    fused = hybrid_rank(vector, text, vector_weight=vw, text_weight=tw, tiered=tiered)
    found = [hit.key for hit in fused]
    assert len(found) == len(set(found))
    assert set(found) == set(vector) | set(text)
    assert [hit.score for hit in fused] == sorted((hit.score for hit in fused), reverse=True)
    assert all(0.0 < hit.score <= 1.0 for hit in fused)
    for hit in fused:
        assert hit.ranks == (
            list(dict.fromkeys(vector)).index(hit.key) + 1 if hit.key in vector else None,
            list(dict.fromkeys(text)).index(hit.key) + 1 if hit.key in text else None,
        )


@settings(max_examples=300, deadline=None)
@given(vector=rankings, text=rankings, vw=weights, tw=weights)
def test_tiered_fusion_puts_chunks_in_both_first(
    vector: list[int], text: list[int], vw: float, tw: float
) -> None:
    fused = hybrid_rank(vector, text, vector_weight=vw, text_weight=tw)
    in_both = [None not in hit.ranks for hit in fused]
    assert in_both == sorted(in_both, reverse=True)


def _better(rank_a: int | None, rank_b: int | None) -> bool:
    """Rank a strictly better than rank b (absent is worse than any rank)."""
    return rank_a is not None and (rank_b is None or rank_a < rank_b)


@settings(max_examples=300, deadline=None)
@given(
    vector=rankings,
    text=rankings,
    vw=weights,
    tw=weights,
    factor=st.floats(1.0, 50.0),
    tiered=st.booleans(),
    raise_text=st.booleans(),
)
def test_fusion_is_monotonic_in_the_weights(
    vector: list[int],
    text: list[int],
    vw: float,
    tw: float,
    factor: float,
    tiered: bool,
    raise_text: bool,
) -> None:
    before = hybrid_rank(vector, text, vector_weight=vw, text_weight=tw, tiered=tiered)
    if raise_text:
        after = hybrid_rank(vector, text, vector_weight=vw, text_weight=tw * factor, tiered=tiered)
    else:
        after = hybrid_rank(vector, text, vector_weight=vw * factor, text_weight=tw, tiered=tiered)
    side = 1 if raise_text else 0
    place_before = {hit.key: i for i, hit in enumerate(before)}
    place_after = {hit.key: i for i, hit in enumerate(after)}
    ranks = {hit.key: hit.ranks for hit in before}
    for a in ranks:
        for b in ranks:
            favoured = _better(ranks[a][side], ranks[b][side])
            not_worse_elsewhere = not _better(ranks[b][1 - side], ranks[a][1 - side])
            if favoured and place_before[a] < place_before[b]:
                # What the raised ranking prefers and already led stays ahead.
                assert place_after[a] < place_after[b]
            if favoured and not_worse_elsewhere:
                assert place_after[a] < place_after[b]


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    counts=st.dictionaries(st.sampled_from("abc"), st.integers(1, 30), min_size=1),
    before=st.integers(0, 6),
    after=st.integers(0, 6),
)
def test_chunk_windows_never_overlap_and_stay_in_range(
    data: st.DataObject, counts: dict[str, int], before: int, after: int
) -> None:
    hit = st.sampled_from(sorted(counts)).flatmap(
        lambda entry: st.tuples(st.just(entry), st.integers(0, counts[entry] - 1))
    )
    hits = data.draw(st.lists(hit, max_size=20))
    windows = chunk_windows(hits, counts, before=before, after=after)
    assert [(w.entry_id, w.order) for w in windows] == list(dict.fromkeys(hits))
    seen: set[tuple[str, int]] = set()
    for w in windows:
        assert 0 <= w.start_order <= w.order <= w.end_order < counts[w.entry_id]
        assert w.order - w.start_order <= before
        assert w.end_order - w.order <= after
        chunks = {(w.entry_id, order) for order in w.orders}
        assert not chunks & seen, "a chunk is in two results"
        seen |= chunks
    # Between consecutive hits of an entry, the later hit's "before" context is as full as
    # the gap allows: nothing is left out that it could have taken.
    for w in windows:
        assert w.start_order == max(0, w.order - before) or (w.entry_id, w.start_order - 1) in {
            (v.entry_id, v.order) for v in windows
        }
