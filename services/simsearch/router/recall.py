"""The live recall monitor: a fraction of real queries re-run exactly, in the background.

The build-time probe (manifest `probe.recall`) measures recall once, on indexed vectors;
real queries may not look like them. So a configurable fraction of the queries the
router answers (`SIMSEARCH_RECALL_FRACTION`, capped at `SIMSEARCH_RECALL_MAX_PER_S`) is
queued with the hits it got (`recall_sampling.py`), and one background task re-runs
them through the normal fan-out with `exact=True`: each shard brute-forces the
memory-mapped features of the partitions it is asked for, in its low-priority pool. The
task sends one request at a time, so the monitor's load on the shards is bounded by the
cap whatever the traffic, and waits up to `SIMSEARCH_RECALL_LINGER_S` for a batch to fill
(a scan costs about the same for one query as for sixteen); it bypasses the coalescer
and has its own deadline (`SIMSEARCH_RECALL_TIMEOUT_S`).

Each answer is compared with its exact re-run (`recall_compare.py`, ties tolerated) and
goes into its version's sliding window (`recall_window.py`). A re-run whose answer is
partial, failed, or came from a shard that ignored `exact` (it predates the field) is
dropped and counted by outcome; nothing the monitor does can raise into a query or end
its own task. `report` is the one view of the result: `/stats` shows it and the gauges
are read from it at scrape time (`recall_metrics.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

import numpy as np

from simsearch.common.api import RecallStatus
from simsearch.router.fanout import FanOut, FanoutResult, SearchParams
from simsearch.router.recall_compare import recall_at_k
from simsearch.router.recall_metrics import RecallMetrics
from simsearch.router.recall_sampling import Sample, Sampler, TokenBucket, batches
from simsearch.router.recall_window import RecallWindows, VersionKey, drifted
from simsearch.router.registry import ShardState, views
from simsearch.router.routing import VersionChoice
from simsearch.router.settings import RouterSettings

__all__ = ["RecallMonitor", "outcome_of"]

log = logging.getLogger(__name__)

Lookup = Callable[[str, str], VersionChoice | None]  # (collection, version) -> who serves it
States = Callable[[], Iterable[ShardState]]


def outcome_of(result: FanoutResult) -> str:
    """ok when `result` is a complete exact answer, else why it is no reference."""
    if result.not_exact:
        return "not_exact"
    if result.partial:
        return "failed" if not result.answered else "partial"
    return "ok"


class RecallMonitor:
    """Samples queries (`offer`, on the query path), re-runs them (a task), reports."""

    def __init__(
        self,
        settings: RouterSettings,
        fanout: FanOut,
        lookup: Lookup,
        states: States,
        metrics: RecallMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.fanout = fanout
        self.lookup = lookup
        self.states = states
        self.metrics = metrics
        self.clock = clock
        rate = settings.recall_max_per_s
        bucket = TokenBucket(rate, max(1.0, rate), clock)
        self.sampler = Sampler(
            settings.recall_fraction, bucket, settings.recall_queue, self._count, clock=clock
        )
        self.offer = self.sampler.offer  # the hot path: one attribute, no extra call
        self.windows = RecallWindows(settings.recall_window_s)
        self._task: asyncio.Task[None] | None = None
        metrics.bind(self.report)

    # --- the background task ---------------------------------------------------------

    def start(self) -> None:
        """Start the re-run task (in the app's lifespan); nothing when sampling is off."""
        if self.settings.recall_fraction > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Cancel the task; samples still queued are forgotten (they were only samples)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        """Take what is queued, group it, re-run one batch at a time; forever."""
        while True:
            waiting = await self._gather()
            for batch in batches(waiting, self.settings.recall_batch):
                await self.check(batch)

    async def _gather(self) -> list[Sample]:
        """The next samples to re-run: the first to arrive, then those that arrive within
        `SIMSEARCH_RECALL_LINGER_S` until a batch is full, then everything waiting.

        An exact scan costs about the same for one query as for a batch (reading and
        converting the features dominates), so waiting for a batch divides the
        monitor's cost on the shards by the batch size.
        """
        queue = self.sampler.queue
        taken = [await queue.get()]
        deadline = time.monotonic() + self.settings.recall_linger_s
        while len(taken) < self.settings.recall_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                taken.append(await asyncio.wait_for(queue.get(), left))
            except TimeoutError:
                break
        return taken[:-1] + self.sampler.take_waiting(taken[-1])

    async def check(self, batch: list[Sample]) -> None:
        """Re-run one batch exactly and record every sample's recall; never raises."""
        try:
            outcome = await self._check(batch)
        except Exception:  # a bug here must cost samples, never the task
            log.exception("recall check of %d queries failed", len(batch))
            outcome = "failed"
        if outcome != "ok":
            self._count(outcome, len(batch))

    async def _check(self, batch: list[Sample]) -> str:
        """The exact re-run and the comparison; the batch's outcome."""
        first = batch[0]
        choice = self.lookup(first.collection, first.version)
        if choice is None:  # nobody serves that version any more
            return "failed"
        params = SearchParams(first.k, space=first.space, filter=first.filter, exact=True)
        queries = np.stack([sample.vector for sample in batch])
        result = await self.fanout.search(choice, queries, params, self.settings.recall_timeout_s)
        outcome = outcome_of(result)
        if outcome != "ok":
            log.info(
                "recall check dropped (%s)",
                outcome,
                extra={"queries": len(batch), "version": first.version},
            )
            return outcome
        for sample, exact in zip(batch, result.hits, strict=True):
            self._record(sample, [h.id for h in exact], [h.score for h in exact])
        return "ok"

    def _record(self, sample: Sample, exact_ids: list[int], exact_scores: list[float]) -> None:
        """One compared sample into its window and the histogram (counted ok)."""
        self._count("ok", 1)
        recall = recall_at_k(sample.ids, sample.scores, exact_ids, exact_scores, sample.k)
        if recall is None:  # nothing to find (a filter no row matches): no figure
            return
        self.windows.add((sample.collection, sample.version), sample.at, recall)
        self.metrics.per_query.labels(sample.collection).observe(recall)

    def _count(self, outcome: str, n: int) -> None:
        self.metrics.checks.labels(outcome).inc(n)

    # --- the report ----------------------------------------------------------------------

    def report(self) -> list[RecallStatus]:
        """One row per served (collection, version) that has a window or a baseline.

        The baseline is the build-time probe some shard reports for the version; the
        drift ratio the largest of the shards' (each sees only its own queries' share of
        the centroid distances, and the worst one is the one to act on). Windows of
        versions no up shard reports are forgotten here.
        """
        reports = _version_reports(self.states())
        self.windows.keep_only(reports)
        windows = self.windows.stats(self.clock())
        rows = []
        for key in sorted(set(windows) | {k for k, r in reports.items() if r[0] is not None}):
            baseline, ratio = reports[key]
            stats = windows.get(key)
            rows.append(
                RecallStatus(
                    collection=key[0],
                    version=key[1],
                    recall=stats.recall if stats else None,
                    samples=stats.samples if stats else 0,
                    window_s=self.settings.recall_window_s,
                    baseline=baseline,
                    drift=stats is not None
                    and drifted(
                        stats,
                        baseline,
                        self.settings.recall_margin,
                        self.settings.recall_min_samples,
                    ),
                    drift_ratio=ratio,
                )
            )
        return rows


def _version_reports(
    states: Iterable[ShardState],
) -> dict[VersionKey, tuple[float | None, float | None]]:
    """Every version an up shard reports: (build-time recall probe, largest drift ratio)."""
    found: dict[VersionKey, tuple[float | None, float | None]] = {}
    for view in views(states):
        for key, info in view.versions.items():
            probe, ratio = found.get(key, (None, None))
            if probe is None:
                probe = info.recall_probe
            if info.drift_ratio is not None:
                ratio = info.drift_ratio if ratio is None else max(ratio, info.drift_ratio)
            found[key] = (probe, ratio)
    return found
