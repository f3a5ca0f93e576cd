"""The exact (brute-force) search of a shard: the recall monitor's reference answer.

The router re-runs a small, rate-capped sample of real queries with `exact=True`; the
shard then scores *every* row of the partitions named (the rows a filter selects, with
one) against the queries and answers the true top k, which the router compares with
what the index answered. So that a scan of a whole shard never moves the foreground's
latency:

- it runs in a pool of its own (`SIMSEARCH_EXACT_WORKERS`, default 1), never on the
  event loop nor in the search pool, and each of its threads lowers its own CPU priority
  (`SIMSEARCH_EXACT_NICE`, default 10: Linux applies `setpriority` to one thread);
- it works a block of `SIMSEARCH_EXACT_BLOCK_ROWS` rows at a time (float16 or float32
  rows → float32, then one BLAS matrix product for the whole query batch), with a few
  numpy calls of GIL-held work per block; BLAS runs on the calling thread (the shard
  limits it to `SIMSEARCH_FAISS_THREADS`), so its work is as low-priority as the thread;
- the running best k per query is kept by (score desc, id asc), the order
  `common.topk` merges with; ties at a block's cut are settled by id, not by position.

The final k are scored again by `Stack.exact`'s formula (a per-row dot product) so the
scores are bit for bit those the normal search's re-rank reports for the same ids, and
the router can tell a tie from a miss by equality.

`SCAN_LOCK` is held for the whole of an exact scan. The scan reads the features through
mappings of its own, made for the scan and dropped after it, so that what it touches
never counts as the foreground's working set (`memory.py`); the memory sampler takes
the same lock, so it never reads `/proc/self/smaps` while such a mapping exists.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from simsearch.common.errors import InvalidFilter, PartitionsNotReady
from simsearch.common.features import FeatureFile
from simsearch.common.filters import Filter
from simsearch.common.metatable import filter_mask
from simsearch.common.telemetry import run_in_context
from simsearch.common.wire import ShardCandidates, encode_array
from simsearch.shard.execute import candidate_paths
from simsearch.shard.metrics import ShardMetrics
from simsearch.shard.query import ShardQuery

__all__ = ["SCAN_LOCK", "ExactPool", "Source", "TopK", "exact_top_k", "lower_priority"]

log = logging.getLogger(__name__)

SCAN_LOCK = threading.Lock()


def lower_priority(nice: int) -> None:
    """Set the calling thread's nice value to `nice` (never lower than it already is).

    The pool's initializer. Raising one's own nice needs no privilege, but a sandbox may
    still refuse it, and the scan is better slow than absent: one log line, no error.
    """
    try:
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except (OSError, AttributeError) as err:  # PermissionError; no setpriority off POSIX
        log.warning("exact scan thread keeps its CPU priority (nice %d refused: %s)", nice, err)


@dataclass(frozen=True)
class Source:
    """One partition to scan: its number, its features file, and the rows to score
    (None: all of them)."""

    number: int
    features: FeatureFile
    rows: np.ndarray | None = None


@dataclass
class TopK:
    """The best k per query so far: scores (-inf empty), ids (-1 empty), partition and row."""

    scores: np.ndarray
    ids: np.ndarray
    numbers: np.ndarray
    rows: np.ndarray

    @classmethod
    def empty(cls, nq: int, k: int) -> TopK:
        def full(value: int) -> np.ndarray:
            return np.full((nq, k), value, dtype=np.int64)

        return cls(np.full((nq, k), -np.inf, dtype=np.float32), full(-1), full(-1), full(-1))

    def offer(self, scores: np.ndarray, ids: np.ndarray, number: int, rows: np.ndarray) -> None:
        """Merge one block (nq×b scores of the rows `rows`, ids `ids`) into the best k."""
        k = self.ids.shape[1]
        cols = _block_best(scores, ids, k)
        both_scores = np.concatenate([self.scores, np.take_along_axis(scores, cols, 1)], 1)
        both_ids = np.concatenate([self.ids, ids[cols]], 1)
        both_numbers = np.concatenate([self.numbers, np.full(cols.shape, number, np.int64)], 1)
        both_rows = np.concatenate([self.rows, rows[cols]], 1)
        keep = _order(both_scores, both_ids)[:, :k]
        self.scores = np.take_along_axis(both_scores, keep, 1)
        self.ids = np.take_along_axis(both_ids, keep, 1)
        self.numbers = np.take_along_axis(both_numbers, keep, 1)
        self.rows = np.take_along_axis(both_rows, keep, 1)


def exact_top_k(xq: np.ndarray, sources: list[Source], k: int, block_rows: int) -> TopK:
    """The true top k of each query (`xq`, scoring space) over every row of `sources`.

    Each partition is read through a mapping made here and dropped on return (see the
    module docstring), block by block; the final k are re-scored row by row (`_rescore`).
    """
    best = TopK.empty(len(xq), k)
    mappings: dict[int, np.ndarray] = {}
    try:
        for source in sources:
            vectors = mappings[source.number] = _scan_mapping(source)
            _scan_source(best, xq, vectors, source, block_rows)
        _rescore(best, xq, mappings)
    finally:
        mappings.clear()  # with the locals, the scan's mappings are unmapped on return
    return best


def _scan_source(
    best: TopK, xq: np.ndarray, vectors: np.ndarray, source: Source, block_rows: int
) -> None:
    """Score the rows of one partition a block at a time into `best`."""
    ids = source.features.ids
    total = len(ids) if source.rows is None else len(source.rows)
    for start in range(0, total, block_rows):
        end = min(start + block_rows, total)
        if source.rows is None:
            rows = np.arange(start, end, dtype=np.int64)
            block = vectors[start:end]
        else:
            rows = source.rows[start:end]
            block = vectors[rows]  # a gather: a copy of the selected rows
        scores = xq @ np.asarray(block, dtype=np.float32).T  # one BLAS call per block
        best.offer(scores, ids[rows], source.number, rows)


def _scan_mapping(source: Source) -> np.ndarray:
    """A mapping of the partition's features of the scan's own (same file, same offset).

    Not the partition's long-lived one: pages the scan touches then belong to a mapping
    that is gone when the scan is, so the memory sampler never counts them as the
    foreground's working set. The file may have been dropped (a version retired) since
    the query took its snapshot: that partition is then not ready, a 409 the router
    retries or drops.
    """
    vectors = source.features.vectors
    if not isinstance(vectors, np.memmap) or vectors.filename is None:
        return vectors  # an empty partition: nothing is mapped
    try:
        path, offset = vectors.filename, vectors.offset
        return np.memmap(path, dtype=vectors.dtype, mode="r", offset=offset, shape=vectors.shape)
    except FileNotFoundError as err:
        raise PartitionsNotReady(
            f"partition {source.number} was dropped during the exact scan"
        ) from err


def _rescore(best: TopK, xq: np.ndarray, mappings: dict[int, np.ndarray]) -> None:
    """Score the final k with the re-rank's formula, then order them again by (score, id)."""
    scores = np.full(best.ids.shape, -np.inf, dtype=np.float32)
    for number, vectors in mappings.items():
        where = np.nonzero(best.numbers == number)
        if len(where[0]):
            rows = np.asarray(vectors[best.rows[where]], dtype=np.float32)
            scores[where] = np.einsum("ij,ij->i", xq[where[0]], rows)
    keep = _order(scores, best.ids)
    best.scores = np.take_along_axis(scores, keep, 1)
    for name in ("ids", "numbers", "rows"):
        setattr(best, name, np.take_along_axis(getattr(best, name), keep, 1))


def _block_best(scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's best min(k, b) by (score desc, id asc).

    `argpartition` picks arbitrarily among scores equal to the k-th; only the rows
    where such a tie straddles the cut (rare: duplicate vectors) are settled by id one
    by one, so the common case stays a few vectorised calls.
    """
    nq, b = scores.shape
    if b <= k:
        return np.broadcast_to(np.arange(b), (nq, b))
    cols = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    threshold = np.take_along_axis(scores, cols, 1).min(axis=1, keepdims=True)
    tied = np.flatnonzero((scores >= threshold).sum(axis=1) > k)
    for q in tied.tolist():
        near = np.flatnonzero(scores[q] >= threshold[q, 0])
        cols[q] = near[np.lexsort((ids[near], -scores[q, near]))][:k]
    return cols


def _order(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Column order by score descending, then id ascending; empty slots (-1) last."""
    key = np.where(ids < 0, -np.inf, scores)
    return np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids), -key), axis=1)


def sources_of(query: ShardQuery) -> list[Source]:
    """What to scan for a query: every requested partition, or the rows its filter selects."""
    sources = []
    for number in query.wanted:
        part = query.view.ready[number].partition
        rows = None if query.filter is None else _selected(query.filter, part.table, number)
        sources.append(Source(number, part.features, rows))
    return sources


def _selected(node: Filter, table: pa.Table | None, number: int) -> np.ndarray:
    """Row numbers of a partition that the filter selects (`metatable.filter_mask`)."""
    if table is None:  # the manifest has a schema, so every partition has a table
        raise InvalidFilter(f"partition {number} was loaded without its metadata table")
    return np.flatnonzero(filter_mask(node, table))


class ExactPool:
    """The low-priority threads exact scans run in, and what a scan answers."""

    def __init__(self, workers: int, nice: int, block_rows: int, metrics: ShardMetrics) -> None:
        self.block_rows = block_rows
        self.metrics = metrics
        self._pool = ThreadPoolExecutor(
            workers, "exact", initializer=lower_priority, initargs=(nice,)
        )

    async def search(self, query: ShardQuery) -> ShardCandidates:
        """Run `scan` for a prepared exact query in the pool; counted when it succeeds
        (a failure is counted by the caller, with the checks' failures)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, run_in_context(self.scan), query)

    def scan(self, query: ShardQuery) -> ShardCandidates:
        """The true top k of the query's partitions, as `ShardCandidates` (`exact_scan`)."""
        started = time.perf_counter()
        view, nq = query.view, len(query.queries)
        with SCAN_LOCK:
            if query.wanted and view.index is not None:
                xq = np.ascontiguousarray(query.queries, dtype=np.float32)
                if not query.projected:
                    xq = view.index.template.project(xq)
                best = exact_top_k(xq, sources_of(query), query.k, self.block_rows)
            else:
                best = TopK.empty(nq, 0)
        paths = candidate_paths(view, best.numbers, best.rows)
        seconds = time.perf_counter() - started
        self.metrics.exact_seconds.observe(seconds)
        self.metrics.exact_searches.labels("ok").inc()
        scores = encode_array(best.scores, "<f4")
        return ShardCandidates(
            version=view.version,
            nq=nq,
            width=best.ids.shape[1],
            ids_b64=encode_array(best.ids, "<i8"),
            approx_b64=scores,
            exact_b64=scores,
            paths=paths,
            took_ms=round(seconds * 1000, 3),
            exact_scan=True,
        )

    def close(self) -> None:
        """Stop taking scans; a scan in progress finishes in its thread."""
        self._pool.shutdown(wait=False, cancel_futures=True)
