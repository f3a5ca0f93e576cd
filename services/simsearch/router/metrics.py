"""The router's own Prometheus metrics (the HTTP ones come from `common.telemetry`).

Query-level numbers an operator alerts on: how many queries, how long they take end to
end (embedding and fan-out included), how many answers were partial, which shard fails
how, and how many requests the rate limits refused. Registered in the app's registry,
never the global one, so several apps in one test process do not collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from simsearch.router.recall_metrics import RecallMetrics

__all__ = ["RouterMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)


class RouterMetrics:
    """Counters and histograms for queries, partial answers, shard errors and coverage.

    Two groups, each built by its own method: what happens to queries (counts, latency,
    partial answers, hedges, retries, rate limits), and the state of what they go to
    (shard errors, shards up and down, the embedder, coverage); plus the recall
    monitor's, which have a module of their own.
    """

    queries: Counter
    latency: Histogram
    fanout_latency: Histogram
    partial: Counter
    hedges: Counter
    retries: Counter
    rate_limited: Counter
    shard_errors: Counter
    shards_up: Gauge
    shards_down: Gauge
    embedder_up: Gauge
    coverage: Gauge
    recall: RecallMetrics  # the live recall monitor's (`recall_metrics.py`)

    def __init__(self, registry: CollectorRegistry) -> None:
        self._add_query_metrics(registry)
        self._add_cluster_metrics(registry)
        self.recall = RecallMetrics(registry)

    def _add_query_metrics(self, registry: CollectorRegistry) -> None:
        """Per query: how many, how long, how complete, and what it took to answer."""
        self.queries = Counter(
            "simsearch_router_queries",
            "Search queries by kind (vector, image, similar) and outcome.",
            ["kind", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "simsearch_router_query_duration_seconds",
            "End-to-end query latency by kind (embedding included for image queries).",
            ["kind"],
            registry=registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.fanout_latency = Histogram(
            "simsearch_router_fanout_duration_seconds",
            "Time from the first shard request to the merged answer.",
            registry=registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.partial = Counter(
            "simsearch_router_partial_answers",
            "Answers that did not cover every partition (served, or refused in strict mode).",
            registry=registry,
        )
        self.hedges = Counter(
            "simsearch_router_hedges",
            "Shard calls that were hedged: other holders asked because the shard was slow.",
            registry=registry,
        )
        self.retries = Counter(
            "simsearch_router_partition_retries",
            "Partitions re-planned onto another holder after their shard failed.",
            registry=registry,
        )
        self.rate_limited = Counter(
            "simsearch_router_rate_limited",
            "Requests refused with 429, by route class (vector_search, image_search, images, "
            "admin) and what was over its limit (address, key).",
            ["route_class", "limited_by"],
            registry=registry,
        )

    def _add_cluster_metrics(self, registry: CollectorRegistry) -> None:
        """What queries go to: failing shard calls, shards up and down, embedder, coverage."""
        self.shard_errors = Counter(
            "simsearch_router_shard_errors",
            "Failed shard calls by shard URL and kind (unreachable, timeout, status, payload).",
            ["shard", "kind"],
            registry=registry,
        )
        self.shards_up = Gauge(
            "simsearch_router_shards_up", "Shards whose last /info succeeded.", registry=registry
        )
        self.shards_down = Gauge(
            "simsearch_router_shards_down", "Listed shards that do not answer.", registry=registry
        )
        self.embedder_up = Gauge(
            "simsearch_router_embedder_up",
            "1 when the embedder's last readiness poll or image search succeeded.",
            registry=registry,
        )
        self.coverage = Gauge(
            "simsearch_router_coverage",
            "Covered partitions / P of the version queries run on.",
            registry=registry,
        )
