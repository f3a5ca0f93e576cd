"""The recall monitor's pure parts: recall@k with ties, the sliding window and its drift
flag, the sampler (fraction, rate cap, bounded queue) and the grouping into batches."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from pydantic import TypeAdapter

from simsearch.common.filters import Filter
from simsearch.router.fanout import FanoutResult, Hit, SearchParams
from simsearch.router.recall_compare import SCORE_TOLERANCE, recall_at_k
from simsearch.router.recall_sampling import Sample, Sampler, TokenBucket, batches
from simsearch.router.recall_window import RecallWindows, WindowStats, drifted

# --- recall@k ----------------------------------------------------------------------------

EXACT_IDS = [10, 11, 12, 13]
EXACT_SCORES = [0.9, 0.8, 0.7, 0.6]


def test_the_exact_answer_has_recall_one() -> None:
    assert recall_at_k(EXACT_IDS, EXACT_SCORES, EXACT_IDS, EXACT_SCORES, 4) == 1.0


def test_each_missed_result_costs_one_kth() -> None:
    approx = [10, 11, 13, 99]  # 12 missed
    assert recall_at_k(approx, [0.9, 0.8, 0.6, 0.5], EXACT_IDS, EXACT_SCORES, 4) == 0.75
    approx = [10, 13, 98, 99]
    assert recall_at_k(approx, [0.9, 0.6, 0.5, 0.4], EXACT_IDS, EXACT_SCORES, 4) == 0.5


def test_a_different_id_tied_with_the_kth_score_counts_as_found() -> None:
    # brute force listed 13 at 0.6; the index returned 77, which scores the same
    approx = [10, 11, 12, 77]
    assert recall_at_k(approx, [0.9, 0.8, 0.7, 0.6], EXACT_IDS, EXACT_SCORES, 4) == 1.0
    # within the float tolerance of two code paths, still a tie
    near = 0.6 - SCORE_TOLERANCE / 2
    assert recall_at_k(approx, [0.9, 0.8, 0.7, near], EXACT_IDS, EXACT_SCORES, 4) == 1.0


def test_a_result_just_below_the_kth_score_is_a_miss() -> None:
    approx = [10, 11, 12, 77]
    below = 0.6 - 10 * SCORE_TOLERANCE
    assert recall_at_k(approx, [0.9, 0.8, 0.7, below], EXACT_IDS, EXACT_SCORES, 4) == 0.75


def test_a_duplicate_hit_counts_once() -> None:
    approx = [10, 10, 11, 12]
    assert recall_at_k(approx, [0.9, 0.9, 0.8, 0.7], EXACT_IDS, EXACT_SCORES, 4) == 0.75


def test_fewer_exact_hits_than_k_means_fewer_to_find() -> None:
    # a filter matched two rows: finding both is recall 1 at k = 10
    assert recall_at_k([10, 11], [0.9, 0.8], [10, 11], [0.9, 0.8], 10) == 1.0
    assert recall_at_k([10], [0.9], [10, 11], [0.9, 0.8], 10) == 0.5


def test_an_answer_longer_than_the_exact_one_is_judged_on_k_eff_hits() -> None:
    assert recall_at_k([99, 10, 11], [0.1, 0.9, 0.8], [10, 11], [0.9, 0.8], 10) == 0.5


def test_nothing_to_find_gives_no_figure() -> None:
    assert recall_at_k([], [], [], [], 10) is None


# --- the window --------------------------------------------------------------------------

V1, V2 = ("default", "v1"), ("default", "v2")


def test_the_window_is_the_mean_of_its_samples_per_version() -> None:
    windows = RecallWindows(window_s=10)
    windows.add(V1, 0.0, 1.0)
    windows.add(V1, 1.0, 0.5)
    windows.add(V2, 1.0, 0.25)
    stats = windows.stats(now=2.0)
    assert stats[V1] == WindowStats(0.75, 2) and stats[V2] == WindowStats(0.25, 1)


def test_stale_samples_expire_without_new_ones() -> None:
    windows = RecallWindows(window_s=10)
    windows.add(V1, 0.0, 0.2)
    windows.add(V1, 5.0, 1.0)
    assert windows.stats(now=9.0)[V1] == WindowStats(0.6, 2)
    assert windows.stats(now=12.0)[V1] == WindowStats(1.0, 1)  # the first one expired
    assert windows.stats(now=100.0)[V1] == WindowStats(None, 0)


def test_versions_nobody_serves_are_forgotten() -> None:
    windows = RecallWindows(window_s=10)
    windows.add(V1, 0.0, 1.0)
    windows.add(V2, 0.0, 1.0)
    windows.keep_only({V2})
    assert set(windows.stats(now=1.0)) == {V2}


@pytest.mark.parametrize(
    ("stats", "baseline", "expected"),
    [
        (WindowStats(0.80, 50), 0.95, True),  # 0.15 below: drift
        (WindowStats(0.91, 50), 0.95, False),  # within the margin
        (WindowStats(0.80, 29), 0.95, False),  # too few samples to say
        (WindowStats(0.80, 50), None, False),  # no baseline (exact plan, older build)
        (WindowStats(None, 0), 0.95, False),
    ],
)
def test_the_drift_flag(stats: WindowStats, baseline: float | None, expected: bool) -> None:
    assert drifted(stats, baseline, margin=0.05, min_samples=30) is expected


# --- the sampler -------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def answer(nq: int, partial: bool = False) -> tuple[FanoutResult, np.ndarray]:
    hits = [[Hit(q * 10 + j, 1.0 - j / 10, "") for j in range(3)] for q in range(nq)]
    answered = {0, 1} if partial else {0, 1, 2, 3}
    queries = np.arange(nq * 4, dtype=np.float32).reshape(nq, 4)
    return FanoutResult("v1", 4, hits, answered), queries


class Sampled:
    """A sampler with a counting callback, a fake clock and a scripted draw."""

    def __init__(
        self, fraction: float, rate: float = 1000.0, queue: int = 100, draws: float = 0.5
    ) -> None:
        self.counts: dict[str, int] = {}
        self.clock = Clock()
        bucket = TokenBucket(rate, max(1.0, rate), self.clock)
        self.sampler = Sampler(fraction, bucket, queue, self.count, lambda: draws, self.clock)

    def count(self, outcome: str, n: int) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + n

    def offer(self, nq: int, partial: bool = False, params: SearchParams | None = None) -> None:
        result, queries = answer(nq, partial)
        self.sampler.offer("default", result, queries, params or SearchParams(3))

    @property
    def queued(self) -> int:
        return self.sampler.queue.qsize()


def test_fraction_zero_never_samples_and_never_draws() -> None:
    def no_draw() -> float:
        raise AssertionError("drew a random number with sampling off")

    sampled = Sampled(0.0)
    sampled.sampler.draw = no_draw
    sampled.offer(50)
    assert sampled.queued == 0 and sampled.counts == {}


def test_fraction_one_samples_every_query_of_a_batch() -> None:
    sampled = Sampled(1.0, draws=0.999999)
    sampled.offer(5)
    assert sampled.queued == 5
    sample = sampled.sampler.queue.get_nowait()
    assert sample.ids == (0, 1, 2) and sample.scores == (1.0, 0.9, 0.8)
    assert sample.vector.tolist() == [0.0, 1.0, 2.0, 3.0] and sample.at == 100.0
    assert (sample.collection, sample.version, sample.k) == ("default", "v1", 3)


def test_a_draw_above_the_fraction_is_not_sampled() -> None:
    sampled = Sampled(0.01, draws=0.5)
    sampled.offer(20)
    assert sampled.queued == 0 and sampled.counts == {}
    real = Sampled(0.01)
    real.sampler.draw = np.random.default_rng(1).random  # about 1 in 100 of 2000 queries
    for _ in range(100):
        real.offer(20)
    assert 5 <= real.queued <= 40


def test_the_rate_cap_refuses_samples_over_it_until_tokens_come_back() -> None:
    sampled = Sampled(1.0, rate=2.0)
    sampled.offer(5)
    assert sampled.queued == 2 and sampled.counts == {"rate_limited": 3}
    sampled.clock.now += 0.5  # one token back
    sampled.offer(3)
    assert sampled.queued == 3 and sampled.counts == {"rate_limited": 5}


def test_a_full_queue_drops_and_counts() -> None:
    sampled = Sampled(1.0, queue=4)
    sampled.offer(6)
    assert sampled.queued == 4 and sampled.counts == {"queue_full": 2}


def test_partial_answers_are_not_sampled() -> None:
    sampled = Sampled(1.0)
    sampled.offer(3, partial=True)
    assert sampled.queued == 0 and sampled.counts == {"partial": 3}


def test_take_waiting_empties_the_queue_behind_the_first() -> None:
    sampled = Sampled(1.0)
    sampled.offer(4)

    async def take() -> list[Sample]:
        return sampled.sampler.take_waiting(await sampled.sampler.queue.get())

    assert len(asyncio.run(take())) == 4 and sampled.queued == 0


# --- batches -----------------------------------------------------------------------------


def sample(version: str = "v1", k: int = 10, dim: int = 4, flt: Filter | None = None) -> Sample:
    params = SearchParams(k, filter=flt)
    return Sample(
        "default", version, k, "model", flt, params.filter_key, np.zeros(dim, np.float32),
        (), (), 0.0,
    )  # fmt: skip


FILTER: TypeAdapter[Filter] = TypeAdapter(Filter)


def test_samples_are_grouped_by_what_one_request_can_carry() -> None:
    red = FILTER.validate_python({"field": "label", "eq": "red"})
    blue = FILTER.validate_python({"field": "label", "eq": "blue"})
    items = [
        sample(),
        sample(k=5),
        sample(),
        sample(version="v2"),
        sample(flt=red),
        sample(flt=FILTER.validate_python({"field": "label", "eq": "red"})),  # equal by JSON
        sample(flt=blue),
        sample(dim=8),  # "index" space rows of another dimension never share a request
    ]
    groups = batches(items, max_batch=16)
    assert [len(g) for g in groups] == [2, 1, 1, 2, 1, 1]
    assert groups[0] == [items[0], items[2]]  # first seen first, order kept


def test_a_large_group_is_cut_into_batches() -> None:
    items = [sample() for _ in range(37)]
    assert [len(g) for g in batches(items, max_batch=16)] == [16, 16, 5]
