"""The recall monitor's Prometheus metrics.

Two kinds. Events are plain instruments: `simsearch_recall_checks{outcome}` counts what
became of every drawn query (ok, or why it was dropped) and
`simsearch_recall_at_k_query{collection}` is the histogram of single samples. The window
figures are computed when they are scraped, by a collector that asks the monitor for its
report: `simsearch_recall_at_k`, `simsearch_recall_samples`, `simsearch_recall_baseline`
and `simsearch_recall_drift` per collection and version. A scrape therefore sees stale
samples expire without any timer, and a version nobody serves any more simply stops
being reported (its label sets disappear instead of freezing at their last value).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from simsearch.common.api import RecallStatus

__all__ = ["OUTCOMES", "RecallMetrics"]

log = logging.getLogger(__name__)

# every outcome of a drawn query, exposed from the start (at 0) so dashboards and alerts
# see the series before the first one happens
OUTCOMES = ("ok", "rate_limited", "queue_full", "failed", "partial", "not_exact")
_BUCKETS = (0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 1.0)
_LABELS = ["collection", "version"]
Report = Callable[[], list[RecallStatus]]


class RecallMetrics:
    """The counter and histogram, plus the window gauges once `bind` gives them a report."""

    checks: Counter
    per_query: Histogram

    def __init__(self, registry: CollectorRegistry) -> None:
        self.checks = Counter(
            "simsearch_recall_checks",
            "Queries drawn by the recall monitor, by outcome: ok (compared with the exact "
            "answer), rate_limited (over SIMSEARCH_RECALL_MAX_PER_S), queue_full, failed, "
            "partial (the answer or its exact re-run did not cover every partition), "
            "not_exact (a shard answered the exact request from its index).",
            ["outcome"],
            registry=registry,
        )
        for outcome in OUTCOMES:
            self.checks.labels(outcome)
        self.per_query = Histogram(
            "simsearch_recall_at_k_query",
            "recall@k of single sampled queries against their exact re-run (ties tolerated).",
            ["collection"],
            registry=registry,
            buckets=_BUCKETS,
        )
        self._report: Report | None = None
        registry.register(_WindowCollector(self))

    def bind(self, report: Report) -> None:
        """Where the window gauges come from (the monitor's `report`), read at each scrape."""
        self._report = report

    def rows(self) -> list[RecallStatus]:
        """The report's rows; none (and a logged bug) if it fails: a broken monitor must
        not take every other series of the scrape down with it."""
        if self._report is None:
            return []
        try:
            return self._report()
        except Exception:
            log.exception("the recall report failed; its gauges are left out of this scrape")
            return []


class _WindowCollector(Collector):
    """The window gauges, computed at scrape time from the monitor's report."""

    def __init__(self, metrics: RecallMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return list(_families())

    def collect(self) -> Iterator[Metric]:
        recall, samples, baseline, drift = _families()
        for row in self.metrics.rows():
            labels = [row.collection, row.version]
            samples.add_metric(labels, row.samples)
            drift.add_metric(labels, 1.0 if row.drift else 0.0)
            if row.recall is not None:
                recall.add_metric(labels, row.recall)
            if row.baseline is not None:
                baseline.add_metric(labels, row.baseline)
        yield from (recall, samples, baseline, drift)


def _families() -> tuple[GaugeMetricFamily, ...]:
    return (
        GaugeMetricFamily(
            "simsearch_recall_at_k",
            "Mean recall@k of the sampled queries over the window (SIMSEARCH_RECALL_WINDOW_S).",
            labels=_LABELS,
        ),
        GaugeMetricFamily(
            "simsearch_recall_samples", "Sampled queries in the recall window.", labels=_LABELS
        ),
        GaugeMetricFamily(
            "simsearch_recall_baseline",
            "recall@10 the indexer's build-time probe measured for the version.",
            labels=_LABELS,
        ),
        GaugeMetricFamily(
            "simsearch_recall_drift",
            "1 when live recall is below the baseline by more than SIMSEARCH_RECALL_MARGIN "
            "with at least SIMSEARCH_RECALL_MIN_SAMPLES samples, else 0.",
            labels=_LABELS,
        ),
    )
