"""`can_rank`: the candidates a shard may leave without a path never reach the merged top k."""

from __future__ import annotations

import numpy as np
import pytest

from simsearch.common.topk import Candidates, can_rank, merge


def _shard(rng: np.random.Generator, nq: int, width: int, ties: bool) -> Candidates:
    """A shard's answer: ids and scores in the router's (approx desc, id asc) order."""
    ids = rng.choice(10**6, size=(nq, width), replace=False).astype(np.int64)
    approx = rng.integers(0, 20, (nq, width)).astype(np.float32)  # quantised: many ties
    exact = approx + rng.normal(0, 3, (nq, width)).astype(np.float32)
    if ties:
        exact = np.round(exact)  # equal exact scores too: the id decides
    ids[:, -3:] = -1  # empty slots at the end, as FAISS leaves them
    approx[:, -3:] = -np.inf
    exact[:, -3:] = -np.inf
    order = np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids), -approx), axis=1)
    take = np.take_along_axis
    return Candidates(take(ids, order, 1), take(approx, order, 1), take(exact, order, 1))


@pytest.mark.parametrize("kc", [100, 400])  # all pairs / the streaming top k
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("shards", [1, 2, 5])
def test_every_merged_hit_is_a_candidate_that_can_rank(shards: int, ties: bool, kc: int) -> None:
    rng = np.random.default_rng(shards + 10 * ties + kc)
    k = 10
    parts = [_shard(rng, 8, kc, ties) for _ in range(shards)]
    ids, _ = merge(parts, k, kc)
    may = np.concatenate([np.where(can_rank(p.ids, p.exact, k), p.ids, -1) for p in parts], 1)
    for q in range(len(ids)):
        hits = set(ids[q][ids[q] >= 0].tolist())
        assert hits <= set(may[q].tolist())


def test_most_candidates_need_no_path() -> None:
    rng = np.random.default_rng(0)
    part = _shard(rng, 16, 100, ties=False)
    kept = can_rank(part.ids, part.exact, 10)
    assert kept[:, :10].all()  # the first k can always rank
    assert not kept[:, -3:].any()  # empty slots never
    assert kept.sum(axis=1).mean() < 50  # ~k·(1 + ln 10) ≈ 33 expected


def test_empty_answers() -> None:
    empty = Candidates.empty(3)
    assert can_rank(empty.ids, empty.exact, 10).shape == (3, 0)


@pytest.mark.parametrize("ties", [False, True])
def test_long_lists_take_the_streaming_path_with_the_same_answer(ties: bool) -> None:
    """Above 256 candidates a running top k replaces all pairs (width² would be a denial of
    service at the 20,000-candidate limit); the mask must be the same."""
    rng = np.random.default_rng(7)
    part = _shard(rng, 3, 300, ties)
    streaming = can_rank(part.ids, part.exact, 10)
    pairwise = np.stack(
        [can_rank(part.ids[q : q + 1, :256], part.exact[q : q + 1, :256], 10)[0] for q in range(3)]
    )
    assert (streaming[:, :256] == pairwise).all()  # a prefix's answer does not depend on the rest
