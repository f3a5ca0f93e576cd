"""The shard's work, independent of HTTP: the façade the app calls.

It wires the pieces, each in its own module, and adds nothing to the search path but
one dict look-up of the request's collection:
- `collections.py`: the collections polled, each with its own holdings and cache;
- `poller.py`: the background poll of the topology and each collection's `CURRENT`,
  loading, and the reload that wakes it;
- `readiness.py`: readiness, `/info` and the reload answer;
- `query.py`: a `ShardSearchRequest` checked into a `ShardQuery` (`prepare`);
- `execute.py`: a `ShardQuery` run against FAISS (`execute`);
- `exact.py`: an `exact` request's brute-force scan, in its own low-priority pool;
- `items.py`: `GET /items/{id}`.

Searches of more than `inline_max_queries` queries run in a small thread pool: FAISS
releases the GIL, so concurrent requests scan in parallel while the event loop keeps
accepting connections. Smaller ones run on the loop (see `ShardSettings`).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import faiss
from threadpoolctl import threadpool_limits

from simsearch.common.errors import SimsearchError
from simsearch.common.telemetry import run_in_context
from simsearch.common.wire import (
    ShardCandidates,
    ShardInfo,
    ShardItem,
    ShardReload,
    ShardSearchRequest,
)
from simsearch.shard.collections import Collections
from simsearch.shard.exact import ExactPool
from simsearch.shard.execute import execute
from simsearch.shard.items import find_item
from simsearch.shard.metrics import ShardMetrics
from simsearch.shard.poller import Poller
from simsearch.shard.query import prepare
from simsearch.shard.readiness import (
    FAISS_AVX2,
    FAISS_OPTIONS,
    readiness,
    reload_answer,
    shard_info,
)
from simsearch.shard.settings import ShardSettings
from simsearch.shard.topology import Topology
from simsearch.shard.versions import Holdings, VersionView

__all__ = ["ShardService"]

log = logging.getLogger(__name__)


class ShardService:
    """Owns the collections, the poller and the search pool of one shard process."""

    def __init__(
        self,
        settings: ShardSettings,
        collections: Collections,
        topology: Topology,
        metrics: ShardMetrics,
    ) -> None:
        self.settings = settings
        self.collections = collections
        self.topology = topology
        self.metrics = metrics
        self.poller = Poller(collections, topology, metrics, settings.poll_s)
        self._pool = ThreadPoolExecutor(settings.search_workers, "search")
        self.exact = ExactPool(
            settings.exact_workers, settings.exact_nice, settings.exact_block_rows, metrics
        )
        metrics.drift.watch(self._held_versions)
        # numpy's BLAS (the query projection) and FAISS' OpenMP alike: their workers spin
        # between calls, and on a shard's few cores that steals more than it gives
        threadpool_limits(limits=settings.faiss_threads)
        faiss.omp_set_num_threads(settings.faiss_threads)

    @property
    def holdings(self) -> Holdings:
        """The holdings of the shard's `SIMSEARCH_INDEX` collection."""
        return self.collections.default().holdings

    # ---- lifecycle

    def start(self) -> None:
        """Start polling (and so loading) in the background; returns at once."""
        if FAISS_AVX2:
            log.info("FAISS kernels: %s", FAISS_OPTIONS)
        else:  # fast-scan and PQ scans fall back to generic code, an order slower
            log.warning("FAISS was built without AVX2 (%s): searches will be slow", FAISS_OPTIONS)
        self.poller.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop polling (a load in progress stops between partitions) and the search pool."""
        self.poller.stop(timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.exact.close()

    # ---- reload, readiness and info

    async def reload(self, timeout_s: float) -> tuple[bool, ShardReload]:
        """Have the poller poll now and wait up to `timeout_s` for it (see `Poller.poll_now`):
        whether it finished in time, and the state after it."""
        finished = await self.poller.poll_now(timeout_s)
        return finished, reload_answer(self.poller)

    def readiness(self) -> tuple[bool, str]:
        """Ready, and why (see `readiness.readiness`)."""
        return readiness(self.collections.all(), self.poller.error())

    def info(self) -> ShardInfo:
        """What the router plans from: versions and the partitions ready in each."""
        return shard_info(self.poller, self.settings)

    # ---- search and items

    async def search(self, request: ShardSearchRequest) -> ShardCandidates:
        """Check the request against its collection's holdings (404 for one not polled),
        then search the requested partitions (inline or in the pool); an `exact` one
        goes to the exact pool instead."""
        if request.exact:
            return await self._exact_search(request)
        try:
            holdings = self.collections.get(request.collection).holdings
            query = prepare(request, holdings, self.settings)
            if len(query.queries) <= self.settings.inline_max_queries:
                result = execute(query, self.metrics)  # see ShardSettings.inline_max_queries
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(
                    self._pool, run_in_context(execute), query, self.metrics
                )
        except SimsearchError as err:
            self.metrics.searches.labels(err.code).inc()
            raise
        self.metrics.searches.labels("ok").inc()
        self.metrics.queries.inc(len(query.queries))
        return result

    async def _exact_search(self, request: ShardSearchRequest) -> ShardCandidates:
        """The brute-force scan `exact` asks for (`exact.py`): the same checks, its own
        pool and metrics, none of the normal search's."""
        try:
            holdings = self.collections.get(request.collection).holdings
            return await self.exact.search(prepare(request, holdings, self.settings))
        except SimsearchError as err:
            self.metrics.exact_searches.labels(err.code).inc()
            raise

    def _held_versions(self) -> list[tuple[str, VersionView]]:
        """(collection, view) of every version held: what the drift gauges report."""
        return [(c.name, view) for c in self.collections.all() for view in c.holdings.views()]

    def item(
        self, id_: int, version: str | None = None, collection: str | None = None
    ) -> ShardItem:
        """Path and exact vector of an indexed image held here: of `collection` (default:
        `SIMSEARCH_INDEX`; 404 for one not polled), newest version by default."""
        holdings = self.collections.get(collection or self.settings.index).holdings
        return find_item(holdings, self.settings, id_, version)
