"""Running a prepared `ShardQuery`: the FAISS scan, the exact scores, the stored paths.

`execute` is what a search request costs once it has been checked (`query.py`); it runs
on the event loop for small batches and in the search pool otherwise (see
`ShardService.search`), so it touches nothing but the query's own version snapshot. A
query with a filter takes `Searcher.search_filtered` (`filtered.py`), one without it the
unfiltered search unchanged (which also feeds the version's drift window, `drift.py`). An
exact query never comes here: it goes to the exact pool (`exact.py`).
"""

from __future__ import annotations

import time

import numpy as np

from simsearch.common.topk import Candidates, can_rank
from simsearch.common.wire import ShardCandidates, encode_array
from simsearch.shard.metrics import ShardMetrics
from simsearch.shard.query import ShardQuery
from simsearch.shard.searcher import Searcher
from simsearch.shard.versions import VersionView


def execute(query: ShardQuery, metrics: ShardMetrics) -> ShardCandidates:
    """Search the query's partitions: top k·refine candidates per query with their paths."""
    started = time.perf_counter()
    view = query.view
    if query.wanted and view.index is not None:
        partitions = {p: view.ready[p].partition for p in query.wanted}
        searcher = Searcher(view.index, partitions, view.manifest.partitions)
        if query.filter is None:
            found = searcher.search(
                query.queries,
                query.k,
                query.wanted,
                query.nprobe,
                query.refine,
                query.projected,
                query.drift,
            )
        else:
            found = _filtered(searcher, query, metrics)
        ids, approx, exact = found.ids, found.approx, found.exact
        wanted_ids = np.where(can_rank(ids, exact, query.k), ids, -1)  # see can_rank
        paths = candidate_paths(view, *searcher.locate(wanted_ids, query.wanted))
    else:
        ids = np.empty((len(query.queries), 0), np.int64)
        approx = exact = np.empty((len(query.queries), 0), np.float32)
        paths = [[] for _ in query.queries]
    seconds = time.perf_counter() - started
    metrics.search_seconds.observe(seconds)
    return ShardCandidates(
        version=view.version,
        nq=len(query.queries),
        width=ids.shape[1],
        ids_b64=encode_array(ids, "<i8"),
        approx_b64=encode_array(approx, "<f4"),
        exact_b64=encode_array(exact, "<f4"),
        paths=paths,
        took_ms=round(seconds * 1000, 3),
    )


def _filtered(searcher: Searcher, query: ShardQuery, metrics: ShardMetrics) -> Candidates:
    """The filtered search (see `filtered.py`), counted by the path it took."""
    assert query.filter is not None
    found, path = searcher.search_filtered(
        query.queries,
        query.k,
        query.wanted,
        query.nprobe,
        query.refine,
        query.filter,
        query.filter_exact_max,
        query.projected,
    )
    metrics.filtered_searches.labels(path).inc()
    return found


def candidate_paths(view: VersionView, numbers: np.ndarray, rows: np.ndarray) -> list[list[str]]:
    """The stored path of every located candidate ("" for empty slots), from memory."""
    out = np.full(numbers.shape, "", dtype=object)
    for number in np.unique(numbers[numbers >= 0]):
        mask = numbers == number
        out[mask] = view.ready[int(number)].paths.take(rows[mask])
    paths: list[list[str]] = out.tolist()
    return paths
