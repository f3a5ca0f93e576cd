"""Merging per-shard candidates into one answer, identical to one monolithic index.

A shard returns, for each query, its best `kc = k·refine` candidates by the approximate
(PQ) score together with their exact scores. The router keeps the global top `kc` by the
approximate score (exactly the candidate list one index over all vectors would have
produced) and only then picks the top `k` by exact score. Re-ranking each shard's own
candidates would be *better* than that but not *the same*; congruence with an in-process
FAISS index is what makes the distributed answer testable.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np


@dataclass
class Candidates:
    """[nq, c] ids (-1 = none), approximate scores and exact scores (higher is better)."""

    ids: np.ndarray
    approx: np.ndarray
    exact: np.ndarray

    @classmethod
    def empty(cls, nq: int) -> Candidates:
        return cls(
            np.empty((nq, 0), np.int64),
            np.empty((nq, 0), np.float32),
            np.empty((nq, 0), np.float32),
        )


def concat(parts: list[Candidates]) -> Candidates:
    """Side by side: every shard's candidates for the same queries."""
    if not parts:
        raise ValueError("nothing to merge")
    return Candidates(
        np.concatenate([p.ids for p in parts], axis=1),
        np.concatenate([p.approx for p in parts], axis=1),
        np.concatenate([p.exact for p in parts], axis=1),
    )


def _top(scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Column positions of the k best per row: score descending, then id ascending."""
    missing = ids < 0
    key_score = np.where(missing, -np.inf, scores)
    order = np.lexsort((ids, -key_score), axis=1)
    return order[:, :k]


def merge(parts: list[Candidates], k: int, kc: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ids and exact scores from the global top-`kc` approximate candidates."""
    both = concat(parts)
    rows = np.arange(both.ids.shape[0])[:, None]
    keep = _top(both.approx, both.ids, kc)
    ids, exact = both.ids[rows, keep], both.exact[rows, keep]
    best = _top(exact, ids, k)
    out_ids, out_scores = ids[rows, best], exact[rows, best]
    out_scores = np.where(out_ids < 0, -np.inf, out_scores).astype(np.float32)
    return out_ids, out_scores


def can_rank(ids: np.ndarray, exact: np.ndarray, k: int) -> np.ndarray:
    """Which of a shard's candidates can end up in the merged top k (a bool [nq, c] mask).

    A shard's candidates come best approximate score first, by the same (score, id) order
    the router cuts by, so whatever the other shards send, the router keeps a *prefix* of
    this shard's list. A candidate that `k` earlier candidates beat by exact score (ties:
    lower id) loses to those same `k` in every prefix that holds it, so it can never be
    returned. Only the others need a path: on average k·(1 + ln refine) of k·refine (~33 of
    100 at refine 10), which is most of the cost of the paths a shard sends.

    Only the filled part of a row counts (a large k·refine over a small shard is mostly empty
    slots). Short rows (the usual k·refine ≈ 100) are compared all pairs at once; long ones
    (k·refine goes up to the candidate limit, 20,000) keep a running top k instead, since all
    pairs would cost width² (400 M comparisons: seconds, a denial of service).
    """
    nq, width = ids.shape
    keep = np.zeros((nq, width), dtype=bool)
    if width == 0 or k <= 0:
        return keep
    for q in range(nq):
        valid = np.flatnonzero(ids[q] >= 0)
        used = int(valid[-1]) + 1 if len(valid) else 0  # empty slots trail: skip them
        if used > _PAIRWISE_MAX:
            keep[q, :used] = _can_rank_streaming(
                ids[q, :used].tolist(), exact[q, :used].tolist(), k
            )
        elif used:
            keep[q, :used] = _can_rank_pairwise(ids[q, :used], exact[q, :used], k)
    return keep


def _can_rank_pairwise(ids: np.ndarray, exact: np.ndarray, k: int) -> np.ndarray:
    """`can_rank` of one row comparing all pairs at once (fast for short rows)."""
    width = len(ids)
    earlier = np.tri(width, width, -1, dtype=bool).T  # earlier[j, r]: j comes before r
    valid = ids >= 0
    e, i = exact[:, None], ids[:, None]
    beats = (e > e.T) | ((e == e.T) & (i < i.T))  # beats[j, r]: j ranks above r
    beaten_by = (beats & earlier & valid[:, None]).sum(axis=0)
    result: np.ndarray = valid & (beaten_by < k)
    return result


_PAIRWISE_MAX = 256


def _can_rank_streaming(ids: list[int], exact: list[float], k: int) -> list[bool]:
    """`can_rank` of one row in O(width · log k): a min-heap of the best k seen so far."""
    best: list[tuple[float, int]] = []  # (score, -id): larger is better; best[0] is k-th
    out = []
    for id_, score in zip(ids, exact, strict=True):
        key = (score, -id_)
        if id_ < 0:
            out.append(False)
        elif len(best) < k:
            heapq.heappush(best, key)
            out.append(True)
        elif key > best[0]:  # fewer than k earlier candidates beat it
            heapq.heapreplace(best, key)
            out.append(True)
        else:
            out.append(False)
    return out
