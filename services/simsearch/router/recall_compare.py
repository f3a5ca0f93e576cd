"""Recall@k of one approximate answer against the exact answer to the same query.

The tie rule follows faiss.contrib.evaluation `check_ref_knn_with_draws`: results that
score the same as the exact k-th are interchangeable, so which of them an index returns
says nothing about its recall. An approximate hit therefore counts when it is one of the
exact top k, or when its (exact) score reaches the exact k-th score: a hit tied with the
boundary is as good as the one brute force happened to list.

Both scores are exact cosines of the same stored features, but computed by two float32
code paths (the shard's re-rank and its brute-force scan), so "reaches" allows
`SCORE_TOLERANCE`. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["SCORE_TOLERANCE", "recall_at_k"]

# two float32 dot products of the same unit vectors differ by ~1e-6 (summation order);
# 1e-5 keeps a tie a tie without letting a genuinely lower result in
SCORE_TOLERANCE = 1e-5


def recall_at_k(
    approx_ids: Sequence[int],
    approx_scores: Sequence[float],
    exact_ids: Sequence[int],
    exact_scores: Sequence[float],
    k: int,
    tolerance: float = SCORE_TOLERANCE,
) -> float | None:
    """The share of the exact top k the approximate answer found, ties tolerated.

    `k_eff = min(k, len(exact_ids))`: with fewer rows (or filtered matches) than k there
    are only that many to find. Only the first k_eff approximate hits are judged, each id
    once (a duplicate cannot count twice). `exact_scores` is best first. None when there
    is nothing to find (k_eff = 0): such a query says nothing about recall.
    """
    k_eff = min(k, len(exact_ids))
    if k_eff <= 0:
        return None
    truth = set(exact_ids[:k_eff])
    boundary = exact_scores[k_eff - 1] - tolerance
    seen: set[int] = set()
    found = 0
    for hit, score in zip(approx_ids[:k_eff], approx_scores[:k_eff], strict=True):
        if hit in seen:
            continue
        seen.add(hit)
        if hit in truth or score >= boundary:
            found += 1
    return min(found, k_eff) / k_eff
