"""The shard's Prometheus metrics: what an operator needs to see a shard load and serve.

Loading (bytes downloaded, cache reuse, seconds per partition, partitions by state) tells
whether a rebalance or a new version is progressing; searching (requests, queries,
latency) tells whether the shard keeps up; the exact scans and the drift gauges are the
shard's side of the recall monitor (`exact.py`, `drift.py`). All live in the app's own
registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from simsearch.shard.drift import DriftGauges


class ShardMetrics:
    """Counters, gauges and histograms of one shard process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.searches = Counter(
            "simsearch_shard_searches",
            "Search requests by outcome (ok, or the error code).",
            ["outcome"],
            registry=registry,
        )
        self.queries = Counter(
            "simsearch_shard_queries", "Query vectors searched.", registry=registry
        )
        self.filtered_searches = Counter(
            "simsearch_shard_filtered_searches",
            "Filtered search requests by path: exact (the few selected rows scored) or ivf "
            "(the IVF scan with an id selector).",
            ["path"],
            registry=registry,
        )
        self.search_seconds = Histogram(
            "simsearch_shard_search_seconds",
            "FAISS search + exact re-ranking time of one request.",
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.partitions = Gauge(
            "simsearch_shard_partitions",
            "Partitions by collection and state (ready, loading, failed), over all loaded "
            "versions.",
            ["collection", "state"],
            registry=registry,
        )
        self.versions = Gauge(
            "simsearch_shard_versions",
            "Index versions held in memory, by collection.",
            ["collection"],
            registry=registry,
        )
        self.replicas = Gauge(
            "simsearch_shard_replicas", "Shard count the topology reports.", registry=registry
        )
        self._add_loading(registry)
        self._add_recall(registry)

    def _add_loading(self, registry: CollectorRegistry) -> None:
        """The metrics of fetching and opening partitions (the poll thread's work)."""
        self.downloaded_bytes = Counter(
            "simsearch_shard_downloaded_bytes",
            "Bytes downloaded from the object store into the cache.",
            registry=registry,
        )
        self.cache_hits = Counter(
            "simsearch_shard_cache_hits",
            "Files found already verified in the local cache (no download).",
            registry=registry,
        )
        self.load_failures = Counter(
            "simsearch_shard_load_failures",
            "Partition load attempts that failed.",
            registry=registry,
        )
        self.load_seconds = Histogram(
            "simsearch_shard_partition_load_seconds",
            "Time to fetch, verify and open one partition.",
            registry=registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )

    def _add_recall(self, registry: CollectorRegistry) -> None:
        """The recall monitor's side here: exact scans (apart from the searches above,
        whose counts and latency they leave alone) and the drift gauges."""
        self.exact_searches = Counter(
            "simsearch_shard_exact_searches",
            "Exact (brute-force) search requests of the recall monitor, by outcome (ok, or "
            "the error code).",
            ["outcome"],
            registry=registry,
        )
        self.exact_seconds = Histogram(
            "simsearch_shard_exact_seconds",
            "Time of one exact-scan request (every row of its partitions scored).",
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.drift = DriftGauges(registry)
