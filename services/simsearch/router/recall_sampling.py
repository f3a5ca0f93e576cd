"""Which real queries the recall monitor re-runs, and how they wait for it.

On the query path (`RouterService._search`, after the merge) every query of an answer
costs one random draw and a compare when it is not sampled; fraction 0 skips even that.
A drawn query is dropped, and counted, when its answer was partial (no reference for
recall: part of the data did not answer), when the token bucket is empty (the rate cap,
so a traffic spike never turns into a spike of exact scans on the shards), or when the
bounded queue is full (the background re-run is behind). Otherwise its vector and the
hits it got (ids and their exact scores, which the merged answer already has) are queued.

`batches` groups what the monitor takes from the queue: queries that share collection,
version, k, vector space, dimension and filter go to the shards in one exact request.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from simsearch.common.filters import Filter
from simsearch.common.wire import VectorSpace
from simsearch.router.fanout import FanoutResult, SearchParams

__all__ = ["BatchKey", "Sample", "Sampler", "TokenBucket", "batches"]

Clock = Callable[[], float]
Count = Callable[[str, int], None]  # (outcome, how many)
BatchKey = tuple[str, str, int, str, int, str | None]


@dataclass(frozen=True)
class Sample:
    """One sampled query: what it asked, what it got, and when."""

    collection: str
    version: str
    k: int
    space: VectorSpace
    filter: Filter | None
    filter_key: str | None  # the filter as JSON (how equal filters are recognised)
    vector: np.ndarray  # the query as the shards got it (float32, one row)
    ids: tuple[int, ...]  # the approximate answer, best first
    scores: tuple[float, ...]  # their exact scores
    at: float  # monotonic seconds when the answer was merged

    @property
    def key(self) -> BatchKey:
        """What samples must share to be re-run in one shard request."""
        return (
            self.collection,
            self.version,
            self.k,
            self.space,
            len(self.vector),
            self.filter_key,
        )


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; `take` spends one if there is one."""

    def __init__(self, rate: float, burst: float, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._tokens = burst
        self._at = clock()

    def take(self) -> bool:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class Sampler:
    """Draws queries with probability `fraction`, under the cap, into a bounded queue."""

    def __init__(
        self,
        fraction: float,
        bucket: TokenBucket,
        queue_size: int,
        count: Count,
        draw: Callable[[], float] = random.random,
        clock: Clock = time.monotonic,
    ) -> None:
        self.fraction = fraction
        self.bucket = bucket
        self.queue: asyncio.Queue[Sample] = asyncio.Queue(queue_size)
        self.count = count
        self.draw = draw
        self.clock = clock

    def offer(
        self, collection: str, result: FanoutResult, queries: np.ndarray, params: SearchParams
    ) -> None:
        """Maybe queue some of the queries of one merged answer (see the module)."""
        fraction = self.fraction
        if fraction <= 0:
            return
        draw = self.draw
        for q in range(len(result.hits)):
            if draw() < fraction:
                self._take(collection, result, queries[q], params, q)

    def _take(
        self,
        collection: str,
        result: FanoutResult,
        vector: np.ndarray,
        params: SearchParams,
        q: int,
    ) -> None:
        """Queue query `q` of `result`, or count why not."""
        if result.partial:
            self.count("partial", 1)
            return
        if not self.bucket.take():
            self.count("rate_limited", 1)
            return
        hits = result.hits[q]
        sample = Sample(
            collection=collection,
            version=result.version,
            k=params.k,
            space=params.space,
            filter=params.filter,
            filter_key=params.filter_key,
            vector=np.array(vector, dtype=np.float32),  # a copy: the batch may be large
            ids=tuple(h.id for h in hits),
            scores=tuple(h.score for h in hits),
            at=self.clock(),
        )
        try:
            self.queue.put_nowait(sample)
        except asyncio.QueueFull:
            self.count("queue_full", 1)

    def take_waiting(self, first: Sample) -> list[Sample]:
        """`first` and everything queued behind it now (no waiting)."""
        taken = [first]
        while not self.queue.empty():
            taken.append(self.queue.get_nowait())
        return taken


def batches(samples: Iterable[Sample], max_batch: int) -> list[list[Sample]]:
    """Samples grouped by `Sample.key` (first seen first, order kept within a group), each
    group cut into requests of at most `max_batch` queries."""
    groups: dict[BatchKey, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(sample.key, []).append(sample)
    size = max(1, max_batch)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]
