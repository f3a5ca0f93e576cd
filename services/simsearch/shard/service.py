"""The shard's work, independent of HTTP: poll the store, hold partitions, answer queries.

A background thread (`ShardService._run`) polls every `poll_s`: it reads `CURRENT` and the
topology and hands them to `Holdings.reconcile`, which downloads, verifies and loads in
that same thread — loading is I/O and hashing, and a thread keeps it off the event loop
without making search wait. Any failure of a poll (store unreachable, corrupt manifest)
is logged and reported by `/health/ready` and the shard simply tries again next tick.

`POST /admin/reload` (`ShardService.reload`) wakes the poller for a poll *now* — after
`simsearch index rollback` or a publish, an operator need not wait `poll_s` — and waits
for a poll that started after the request, so its answer reflects the new `CURRENT`. The
poller stays the only thread that reads the store and loads: a reload never loads in the
request, so two loads can never race.

Searches run in a small thread pool: FAISS releases the GIL, so concurrent requests scan
in parallel while the event loop keeps accepting connections.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

import simsearch
from simsearch.common.errors import (
    InvalidParameter,
    InvalidVector,
    NotFound,
    NotServed,
    PartitionsNotReady,
    SimsearchError,
    VersionNotLoaded,
)
from simsearch.common.ids import MAX_ID
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import Manifest
from simsearch.common.telemetry import run_in_context
from simsearch.common.topk import can_rank
from simsearch.common.wire import (
    ShardCandidates,
    ShardInfo,
    ShardItem,
    ShardReload,
    ShardSearchRequest,
    ShardVersionInfo,
    decode_array,
    encode_array,
)
from simsearch.shard.metrics import ShardMetrics
from simsearch.shard.searcher import Searcher
from simsearch.shard.settings import ShardSettings
from simsearch.shard.topology import Topology
from simsearch.shard.versions import Holdings, VersionView

__all__ = ["NotServed", "PartitionsNotReady", "ShardService", "VersionNotLoaded"]

log = logging.getLogger(__name__)

_RELOAD_TICK_S = 0.05  # how often a waiting reload looks at the poll counter
FAISS_OPTIONS = str(faiss.get_compile_options()).strip()
FAISS_AVX2 = "AVX2" in FAISS_OPTIONS.split() or "AVX512" in FAISS_OPTIONS.split()


@dataclass(frozen=True)
class SearchPlan:
    """A validated search request, bound to the version snapshot it runs against."""

    view: VersionView
    queries: np.ndarray
    wanted: list[int]
    k: int
    nprobe: int
    refine: int
    projected: bool = False  # queries are already in the version's scoring space


class ShardService:
    """Owns the holdings, the poller thread and the search pool of one shard process."""

    def __init__(
        self,
        settings: ShardSettings,
        layout: IndexLayout,
        topology: Topology,
        holdings: Holdings,
        metrics: ShardMetrics,
    ) -> None:
        self.settings = settings
        self.layout = layout
        self.topology = topology
        self.holdings = holdings
        self.metrics = metrics
        self.replicas_seen = 0  # until the first poll reads the topology
        self.last_error: str | None = None
        self._manifests: dict[str, Manifest] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by stop() and reload(): end the wait now
        self._count_lock = threading.Lock()
        self._polls_started = 0
        self._polls_done = 0
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(settings.search_workers, "search")
        # numpy's BLAS (the query projection) and FAISS' OpenMP alike: their workers spin
        # between calls, and on a shard's few cores that steals more than it gives
        threadpool_limits(limits=settings.faiss_threads)
        faiss.omp_set_num_threads(settings.faiss_threads)

    # ---- lifecycle

    def start(self) -> None:
        """Start polling (and so loading) in the background; returns at once."""
        if FAISS_AVX2:
            log.info("FAISS kernels: %s", FAISS_OPTIONS)
        else:  # fast-scan and PQ scans fall back to generic code, an order slower
            log.warning("FAISS was built without AVX2 (%s): searches will be slow", FAISS_OPTIONS)
        self._thread = threading.Thread(target=self._run, name="shard-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop polling (a load in progress stops between partitions) and the search pool."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            # a wake that arrived during the poll ends this wait at once: one more poll,
            # which is what a reload sent mid-poll needs (it must see CURRENT afresh)
            self._wake.wait(self.settings.poll_s)
            self._wake.clear()

    def poll_once(self) -> None:
        """One tick: read topology and CURRENT, reconcile; failures are kept, not raised.

        Polls are counted (started, finished) so that `reload` can wait for one that
        started after its request, whichever thread runs it.
        """
        with self._count_lock:
            self._polls_started += 1
        try:
            self._poll()
        finally:
            with self._count_lock:
                self._polls_done += 1

    @property
    def live(self) -> str | None:
        """What CURRENT named at the last poll that could read it (kept by the holdings, so a
        store outage keeps reporting the last known live version rather than none)."""
        return self.holdings.live

    def _poll(self) -> None:
        """The tick's work."""
        try:
            self.replicas_seen = self.topology.replicas()
            manifest = self._live_manifest()
            if manifest is None:
                self._note_error(
                    f"index {self.layout.name!r} has no published version in "
                    f"{self.layout.store.uri} yet"
                )
                return
            self.holdings.reconcile(manifest, self.replicas_seen, self._stop.is_set)
            self.last_error = self.holdings.store_error  # None unless a load waits on S3
        except SimsearchError as err:
            self._note_error(err.reason)
        except Exception as err:  # a bug, but the shard keeps serving what it has
            log.exception("poll failed")
            self._note_error(f"{type(err).__name__}: {err}")
        finally:
            self._update_gauges()

    def _note_error(self, reason: str) -> None:
        if reason != self.last_error:  # once per distinct problem, not every tick
            log.warning("poll: %s", reason)
        self.last_error = reason

    def _live_manifest(self) -> Manifest | None:
        """The manifest CURRENT points at (read once per version, then remembered)."""
        version = self.layout.current()
        if version is None:
            return None
        manifest = self._manifests.get(version)
        if manifest is None:
            manifest = self.layout.load_manifest(version)
            held = {view.version for view in self.holdings.views()}
            self._manifests = {v: m for v, m in self._manifests.items() if v in held}
            self._manifests[version] = manifest
        return manifest

    def _update_gauges(self) -> None:
        for state, count in self.holdings.counts().items():
            self.metrics.partitions.labels(state).set(count)
        self.metrics.versions.set(len(self.holdings.views()))
        self.metrics.replicas.set(self.replicas_seen)

    # ---- reload

    async def reload(self, timeout_s: float) -> tuple[bool, ShardReload]:
        """Have the poller poll now; wait up to `timeout_s` for that poll to finish.

        Returns whether it finished in time (False: still loading — the poll goes on in the
        background) and the state after it. The poll awaited is one that *starts* after
        this call, never one already running, which may have read the old `CURRENT`.
        Waiting is a poll of a counter with `asyncio.sleep`, so a long load ties up neither
        the event loop nor a thread per waiting request.
        """
        with self._count_lock:
            target = self._polls_started + 1
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._polls_done < target:
            left = deadline - loop.time()
            if left <= 0 or self._stop.is_set():
                return False, self.reload_state()
            await asyncio.sleep(min(_RELOAD_TICK_S, left))
        return True, self.reload_state()

    def reload_state(self) -> ShardReload:
        """The live version, the versions held and readiness: what a reload answers."""
        return ShardReload(
            current=self.live,
            versions=[view.version for view in self.holdings.views()],
            ready=self.readiness()[0],
            error=self.last_error,
        )

    # ---- readiness and info

    def readiness(self) -> tuple[bool, str]:
        """Ready once a version has been through a full load pass and serves something.

        A partition that failed does not hold readiness back: the router plans from
        `/info`, so the healthy partitions stay useful while the failed one is retried.
        """
        views = self.holdings.views()
        serving = [v for v in views if v.settled and (v.ready or not v.assigned)]
        if serving:
            view = serving[-1]
            failed = f", {len(view.failed)} failed" if view.failed else ""
            return True, (
                f"serving {view.version}: {len(view.ready)}/{len(view.assigned)} partitions "
                f"ready{failed}"
            )
        if self.last_error:
            return False, self.last_error
        if views:
            view = views[-1]
            return False, (
                f"loading {view.version}: {len(view.ready)}/{len(view.assigned)} partitions ready"
            )
        return False, "waiting for the first poll of the index"

    def info(self) -> ShardInfo:
        """What the router plans from: versions and the partitions ready in each."""
        return ShardInfo(
            ordinal=self.settings.ordinal,
            replicas=self.replicas_seen,
            index=self.layout.name,
            ready=self.readiness()[0],
            versions=[self._version_info(view) for view in self.holdings.views()],
            rss_bytes=rss_bytes(),
            version=simsearch.__version__,
            faiss_options=FAISS_OPTIONS,
            faiss_avx2=FAISS_AVX2,
            error=self.last_error,
        )

    def _version_info(self, view: VersionView) -> ShardVersionInfo:
        manifest = view.manifest
        return ShardVersionInfo(
            version=view.version,
            partitions=manifest.partitions,
            ready=sorted(view.ready),
            loading=sorted(view.loading),
            failed=view.failed,
            dim=manifest.model.dim,
            nprobe=self.settings.nprobe or manifest.params.nprobe,
            refine=self.settings.refine or manifest.params.refine,
            vectors=sum(served.info.count for served in view.ready.values()),
            model=manifest.model.name,
            live=view.version == self.live,
            recall_probe=manifest.probe.recall if manifest.probe else None,
            probe_queries=manifest.probe.queries if manifest.probe else None,
            scoring_dim=manifest.params.pca_dim,
        )

    # ---- search

    async def search(self, request: ShardSearchRequest) -> ShardCandidates:
        """Validate, then search the requested partitions in the pool."""
        try:
            plan = self.plan(request)
            if len(plan.queries) <= self.settings.inline_max_queries:
                result = self.execute(plan)  # see ShardSettings.inline_max_queries
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._pool, run_in_context(self.execute), plan)
        except SimsearchError as err:
            self.metrics.searches.labels(err.code).inc()
            raise
        self.metrics.searches.labels("ok").inc()
        self.metrics.queries.inc(len(plan.queries))
        return result

    def plan(self, request: ShardSearchRequest) -> SearchPlan:
        """Every check a request must pass before FAISS sees it; 4xx reasons name the field."""
        view = self._view(request.version)
        wanted = sorted(set(request.partitions))
        self._check_partitions(view, wanted)
        dim = view.manifest.model.dim
        if request.space == "index" and view.index is not None:
            dim = view.index.template.dim
        if request.dim != dim:
            raise InvalidVector(
                f"query dim is {request.dim}; version {view.version} has {dim} "
                f"({request.space} space)"
            )
        limit = self.settings.max_batch_queries
        if request.nq > limit:
            raise InvalidParameter(f"nq={request.nq} queries; at most {limit} per request")
        if request.k > self.settings.max_k:
            raise InvalidParameter(f"k={request.k} is over the limit of {self.settings.max_k}")
        queries = decode_array(request.vectors_b64, "<f4", (request.nq, dim))
        if not np.isfinite(queries).all():
            raise InvalidVector("query vectors contain NaN or infinity")
        params = view.manifest.params
        nprobe = request.nprobe or self.settings.nprobe or params.nprobe
        refine = request.refine or self.settings.refine or params.refine
        if request.k * refine > self.settings.max_candidates:
            raise InvalidParameter(
                f"k·refine = {request.k}·{refine} candidates per query is over the limit of "
                f"{self.settings.max_candidates}"
            )
        return SearchPlan(
            view,
            queries.astype(np.float32),
            wanted,
            request.k,
            nprobe,
            refine,
            request.space == "index",
        )

    def _view(self, version: str) -> VersionView:
        view = self.holdings.view(version)
        if view is None:
            held = [v.version for v in self.holdings.views()] or "none"
            raise VersionNotLoaded(
                f"version {version} is not loaded on shard {self.settings.ordinal} (loaded: {held})"
            )
        return view

    def _check_partitions(self, view: VersionView, wanted: list[int]) -> None:
        total = view.manifest.partitions
        bad = [p for p in wanted if not 0 <= p < total]
        if bad:
            raise InvalidParameter(f"partitions {bad[:8]} do not exist: {view.version} has {total}")
        missing = [p for p in wanted if p not in view.ready]
        if missing:
            why = {p: "failed" if p in view.failed else "loading" for p in missing}
            why.update({p: "not held" for p in missing if p not in view.assigned})
            raise PartitionsNotReady(
                f"partitions {missing} of {view.version} are not ready on shard "
                f"{self.settings.ordinal}: "
                + ", ".join(f"{p} {state}" for p, state in sorted(why.items())[:16])
            )

    def execute(self, plan: SearchPlan) -> ShardCandidates:
        """Run a validated plan (in a pool thread): FAISS scan, exact scores, paths."""
        started = time.perf_counter()
        view = plan.view
        if plan.wanted and view.index is not None:
            partitions = {p: view.ready[p].partition for p in plan.wanted}
            searcher = Searcher(view.index, partitions, view.manifest.partitions)
            found = searcher.search(
                plan.queries, plan.k, plan.wanted, plan.nprobe, plan.refine, plan.projected
            )
            ids, approx, exact = found.ids, found.approx, found.exact
            wanted_ids = np.where(can_rank(ids, exact, plan.k), ids, -1)  # see can_rank
            paths = candidate_paths(view, *searcher.locate(wanted_ids, plan.wanted))
        else:
            ids = np.empty((len(plan.queries), 0), np.int64)
            approx = exact = np.empty((len(plan.queries), 0), np.float32)
            paths = [[] for _ in plan.queries]
        seconds = time.perf_counter() - started
        self.metrics.search_seconds.observe(seconds)
        return ShardCandidates(
            version=view.version,
            nq=len(plan.queries),
            width=ids.shape[1],
            ids_b64=encode_array(ids, "<i8"),
            approx_b64=encode_array(approx, "<f4"),
            exact_b64=encode_array(exact, "<f4"),
            paths=paths,
            took_ms=round(seconds * 1000, 3),
        )

    # ---- items

    def item(self, id_: int, version: str | None = None) -> ShardItem:
        """Path and exact vector of an indexed image held here (newest version by default)."""
        if not 0 <= id_ <= MAX_ID:
            raise InvalidParameter(f"id {id_} is outside the id range 0..{MAX_ID}")
        views = [self._view(version)] if version else self.holdings.views()[::-1]
        for view in views:
            number = id_ % view.manifest.partitions
            served = view.ready.get(number)
            if served is None:
                continue
            features = served.partition.features
            try:
                row = int(features.rows_of(np.array([id_], dtype=np.int64))[0])
            except InvalidParameter:
                raise NotFound(f"no image with id {id_} in {view.version}") from None
            vector = np.asarray(features.vectors[row], np.float32)
            projected = view.index is not None and view.index.template.pretransform is not None
            return ShardItem(
                id=id_,
                version=view.version,
                partition=number,
                path=str(served.paths[row]),
                vector_b64=encode_array(vector, "<f4"),
                space="index" if projected else "model",
                dim=len(vector),
            )
        where = f"version {version}" if version else "any loaded version"
        raise PartitionsNotReady(
            f"id {id_}'s partition is not ready on shard {self.settings.ordinal} in {where}"
        )


def candidate_paths(view: VersionView, numbers: np.ndarray, rows: np.ndarray) -> list[list[str]]:
    """The stored path of every located candidate ("" for empty slots), from memory."""
    out = np.full(numbers.shape, "", dtype=object)
    for number in np.unique(numbers[numbers >= 0]):
        mask = numbers == number
        out[mask] = view.ready[int(number)].paths.take(rows[mask])
    paths: list[list[str]] = out.tolist()
    return paths


def rss_bytes() -> int:
    """Resident memory of this process (mapped index pages the kernel keeps count too)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # peak, in KiB
