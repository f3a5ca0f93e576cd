"""The drift signal: how far live queries fall from their nearest coarse centroid.

A template is trained on the vectors indexed at the time. When the queries (or the
images added since) stop looking like those, their nearest centroid is farther away
than the indexed vectors' is, the lists they probe fit them badly, and recall drops
before anybody measures it. Every unfiltered approximate search in the model's space
already computes the coarse assignment; `Template.centroid_distance` turns its first
column into one Euclidean distance per query, and a `DriftWindow` of the version keeps
their sum and count over the last `SIMSEARCH_DRIFT_WINDOW_S`. The baseline is the
manifest's `centroid_fit.indexed` (the same figure over a sample of the version's own
vectors, by the same code), so `drift_ratio = live / indexed` is about 1.0 while the
queries look like the data and well above it when a `--retrain` is due.

The window is a ring of `BUCKETS` time buckets of (sum, count): an observation belongs
to the bucket of its time, a bucket older than the window is reset when its turn comes
again, and a read sums the buckets still inside, so the window spans between
(BUCKETS−1)/BUCKETS of `window_s` and all of it, never more. On the hot path an
observation is a clock read and an append under a short lock (~1 µs); the distances are
computed a few hundred queries at a time (see `DriftWindow`).

Only queries in the "model" space count: a query sent in the index's space is a stored
item's own vector (`/search/similar`), data rather than a query. Filtered, exact and
one-list (exact plan) searches are not observed.

The gauges (`simsearch_drift_ratio`, `simsearch_centroid_distance`) are computed when
`/metrics` is read, from the versions held then (`DriftGauges`): a dropped version's
series vanish with it, nothing stale is left to remove.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

if TYPE_CHECKING:  # versions → searcher → drift: the view is only a type here
    from simsearch.shard.versions import VersionView

__all__ = [
    "BUCKETS",
    "FLUSH_BATCHES",
    "FLUSH_QUERIES",
    "Drift",
    "DriftGauges",
    "DriftWindow",
    "version_drift",
]

BUCKETS = 10
FLUSH_QUERIES = 256  # queued queries that trigger a flush (bounds the queue's memory)
FLUSH_BATCHES = 64  # queued batches that trigger one

Clock = Callable[[], float]
Measure = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Drift:
    """One version's drift figures, as `/info` and the gauges report them."""

    live: float | None  # mean over the window; None without a query in it
    indexed: float | None  # manifest `centroid_fit.indexed`; None without the baseline
    queries: int  # queries in the window

    @property
    def ratio(self) -> float | None:
        """live / indexed (None when either is missing or the baseline is 0)."""
        if self.live is None or not self.indexed:
            return None
        return self.live / self.indexed


class DriftWindow:
    """Sum and count of query-to-centroid distances over the last `window_s` seconds.

    `observe` only queues the batch (its time bucket and the arrays the search already
    made); the distances are computed for many batches at once (`measure`, i.e.
    `Template.centroid_distance`, over their concatenation) when `FLUSH_QUERIES` queries
    or `FLUSH_BATCHES` batches are queued, and before every read. One call of it costs
    13–30 µs whatever the batch (numpy's per-call overhead; measured on a loaded 2-core
    VM), too much for every search of a sub-millisecond path; queued, a one-query batch
    cost 2.6 µs all told there, the flush included. The queue holds references to the
    search's own arrays (no copy) and at most ~`FLUSH_QUERIES` queries of them.
    """

    def __init__(self, window_s: float, measure: Measure, clock: Clock = time.monotonic) -> None:
        self.window_s = window_s
        self._width = window_s / BUCKETS
        self._measure = measure
        self._clock = clock
        self._lock = threading.Lock()
        self._tick = [-1] * BUCKETS  # which bucket number each slot holds now
        self._sum = [0.0] * BUCKETS
        self._count = [0] * BUCKETS
        self._pending: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_queries = 0

    def observe(self, xq: np.ndarray, coarse_d: np.ndarray, coarse_i: np.ndarray) -> None:
        """Queue one batch: its projected queries and what `Template.coarse` returned."""
        tick = int(self._clock() // self._width)
        with self._lock:
            self._pending.append((tick, xq, coarse_d, coarse_i))
            self._pending_queries += len(xq)
            full = self._pending_queries >= FLUSH_QUERIES or len(self._pending) >= FLUSH_BATCHES
        if full:
            self.flush()

    def flush(self) -> None:
        """Measure the queued batches and add each to the bucket of its time."""
        with self._lock:
            pending, self._pending, self._pending_queries = self._pending, [], 0
        if not pending:
            return
        distances = self._measure(
            np.concatenate([xq for _, xq, _, _ in pending]),
            np.concatenate([d[:, :1] for _, _, d, _ in pending]),
            np.concatenate([i[:, :1] for _, _, _, i in pending]),
        )
        sizes = [len(xq) for _, xq, _, _ in pending]
        starts = np.cumsum([0, *sizes[:-1]])
        sums = np.add.reduceat(distances.astype(np.float64), starts).tolist()
        with self._lock:
            for (tick, _, _, _), total, count in zip(pending, sums, sizes, strict=True):
                self._add(tick, total, count)

    def _add(self, tick: int, total: float, count: int) -> None:
        """Add to bucket `tick` (lock held); a slot that moved on since drops it: that
        batch is older than the window."""
        slot = tick % BUCKETS
        if self._tick[slot] > tick:
            return
        if self._tick[slot] < tick:  # a bucket from an earlier turn of the ring
            self._tick[slot], self._sum[slot], self._count[slot] = tick, 0.0, 0
        self._sum[slot] += total
        self._count[slot] += count

    def read(self) -> tuple[float | None, int]:
        """The mean distance over the window (None when empty) and the queries in it."""
        self.flush()
        tick = int(self._clock() // self._width)
        with self._lock:
            inside = [s for s in range(BUCKETS) if 0 <= tick - self._tick[s] < BUCKETS]
            total = sum(self._sum[s] for s in inside)
            count = sum(self._count[s] for s in inside)
        return (total / count if count else None), count


def version_drift(view: VersionView) -> Drift:
    """The drift figures of one held version: its live window against its manifest."""
    fit = view.manifest.centroid_fit
    window = view.index.drift if view.index is not None else None
    live, queries = window.read() if window is not None else (None, 0)
    return Drift(live, fit.indexed if fit is not None else None, queries)


Held = Callable[[], Iterable[tuple[str, "VersionView"]]]


class DriftGauges:
    """A Prometheus collector: the drift gauges of every version held when scraped.

    Registered once with the shard's metrics; the service points it at its holdings
    (`watch`). Before that, or with nothing held, the families are exposed without
    samples. Values that are not measured (no queries, no baseline) have no sample.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._held: Held = lambda: ()
        registry.register(self)

    def watch(self, held: Held) -> None:
        """Report the versions `held()` yields, as (collection, view), from now on."""
        self._held = held

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        ratio, distance = self._families()
        for collection, view in self._held():
            drift = version_drift(view)
            labels = [collection, view.version]
            if drift.ratio is not None:
                ratio.add_metric(labels, drift.ratio)
            for source, value in (("live", drift.live), ("indexed", drift.indexed)):
                if value is not None:
                    distance.add_metric([*labels, source], value)
        yield ratio
        yield distance

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        ratio = GaugeMetricFamily(
            "simsearch_drift_ratio",
            "Live queries' mean distance to their nearest coarse centroid over the window, "
            "divided by the indexed vectors' (manifest centroid_fit.indexed); about 1 while "
            "queries look like the data.",
            labels=["collection", "version"],
        )
        distance = GaugeMetricFamily(
            "simsearch_centroid_distance",
            "Mean Euclidean distance to the nearest coarse centroid in the scoring space: of "
            "live queries over the window (source=live), of the indexed vectors at build time "
            "(source=indexed).",
            labels=["collection", "version", "source"],
        )
        return ratio, distance
