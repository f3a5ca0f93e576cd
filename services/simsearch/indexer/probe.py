"""The recall probe: measure recall@k of a freshly built index, and pick the default nprobe.

Why at build time: recall depends on the data (how clustered it is, how well the
template fits it), so a fixed nprobe is either wasteful or wrong. The probe holds out a
sample of indexed vectors as queries, finds their exact neighbours by brute force in the
index's scoring space (the stored features), and runs the shard's own pipeline
(`common.ann`: coarse lists → fast scan → exact re-rank of k·refine) at increasing
nprobe. The default is the smallest nprobe that reaches the target; the whole curve goes
into the manifest so an operator can trade recall for speed knowingly.

Each query's own id is removed from both lists: every query is in the index and would
otherwise count as one free hit out of k.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

from simsearch.common.ann import Template, candidates, to_fast_scan
from simsearch.common.errors import InvalidParameter
from simsearch.common.manifest import IndexParams, RecallProbe
from simsearch.indexer.settings import DEFAULT_RECALL_TARGET

PROBE_QUERIES = 1000
PROBE_K = 10
TARGET_RECALL = DEFAULT_RECALL_TARGET

log = logging.getLogger(__name__)


def nprobe_ladder(nlist: int) -> list[int]:
    """Powers of two and their 1.5× midpoints up to nlist: 1, 2, 3, 4, 6, 8, 12, 16, …"""
    steps: set[int] = set()
    p = 1
    while p <= nlist:
        steps.update({p, min(nlist, p + p // 2)})
        p *= 2
    steps.add(nlist)
    return sorted(s for s in steps if s >= 1)


def _smallest_reaching(ladder: list[int], measure: Callable[[int], float], target: float) -> int:
    """The smallest ladder step whose recall reaches `target` (the largest if none does).

    Recall grows with nprobe, and the cost of a step grows with it too, so the powers of
    two are tried first and only the midpoints below the first power that reaches the
    target are measured after it: the same answer as walking the whole ladder, at about
    three quarters of its cost.
    """
    powers = [p for p in ladder if p & (p - 1) == 0 or p == ladder[-1]]
    below = 0
    for p in powers:
        if measure(p) >= target:
            for mid in (m for m in ladder if below < m < p):
                if measure(mid) >= target:
                    return mid
            return p
        below = p
    return ladder[-1]


def exact_neighbours(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k row numbers by inner product (FAISS brute force, in blocks of rows)."""
    flat = faiss.IndexFlatIP(base.shape[1])
    for start in range(0, len(base), 100_000):
        flat.add(np.ascontiguousarray(base[start : start + 100_000], dtype=np.float32))
    _, rows = flat.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return rows


def approx_neighbours(
    template: Template,
    index: Any,
    features: np.ndarray,
    row_of_id: tuple[np.ndarray, np.ndarray],
    queries: np.ndarray,
    coarse: tuple[np.ndarray, np.ndarray],
    nprobe: int,
    k: int,
    kc: int,
) -> np.ndarray:
    """Top-k row numbers through the shard's pipeline at `nprobe` (coarse lists given),
    re-ranking the best `kc` approximate candidates exactly."""
    coarse_d, coarse_i = coarse
    _, ids = candidates(
        index,
        queries,
        kc,
        np.ascontiguousarray(coarse_i[:, :nprobe]),
        np.ascontiguousarray(coarse_d[:, :nprobe]),
    )
    sorted_ids, order = row_of_id
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    rows = np.where((ids >= 0) & (sorted_ids[pos] == ids), order[pos], -1)
    cand = np.asarray(features[np.maximum(rows, 0).ravel()], dtype=np.float32)
    scores = np.einsum("qcd,qd->qc", cand.reshape(len(queries), kc, -1), queries)
    scores[rows < 0] = -np.inf
    best = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, kc)]
    out: np.ndarray = np.take_along_axis(rows, best, axis=1)
    return out


def recall_without_self(found: np.ndarray, truth: np.ndarray, own: np.ndarray, k: int) -> float:
    """Mean |found ∩ truth| / k over queries, each query's own row removed from both."""
    hits = 0
    for f, t, me in zip(found, truth, own, strict=True):
        t_set = [r for r in t if r != me][:k]
        f_set = {r for r in f if r != me and r >= 0}
        hits += len(f_set.intersection(t_set))
    return hits / (k * len(found)) if len(found) else 1.0


def probe(
    template: Template,
    index: Any,
    ids: np.ndarray,
    features: np.ndarray,
    refine: int,
    queries: int = PROBE_QUERIES,
    k: int = PROBE_K,
    target: float = TARGET_RECALL,
    seed: int = 0,
) -> RecallProbe:
    """Measure recall@k along the nprobe ladder on one index holding every vector.

    `features` are the stored vectors of the scoring space (rows aligned with `ids`), in
    their stored dtype: the exact truth and the re-rank both use them, as a shard does.
    The default is the smallest nprobe of the ladder that reaches `target`
    (`_smallest_reaching`); if none does, the largest nprobe is the default and `recall`
    says how far it got. `curve` holds every nprobe measured.
    """
    started = time.perf_counter()
    n = len(ids)
    rng = np.random.default_rng(seed)
    own = np.sort(rng.choice(n, min(queries, n), replace=False))
    xq = np.ascontiguousarray(features[own], dtype=np.float32)
    truth = exact_neighbours(features, xq, min(n, k + 1))
    order = np.argsort(ids, kind="stable")
    row_of_id = (np.asarray(ids)[order], order)
    ladder = nprobe_ladder(template.nlist)
    coarse = template.coarse(xq, ladder[-1])
    curve: dict[int, float] = {}

    def measure(nprobe: int) -> float:
        found = approx_neighbours(
            template, index, features, row_of_id, xq, coarse, nprobe, k + 1, k * refine
        )
        curve[nprobe] = round(recall_without_self(found, truth, own, k), 4)
        return curve[nprobe]

    chosen = _smallest_reaching(ladder, measure, target)
    return RecallProbe(
        queries=len(own),
        k=k,
        nprobe=chosen,
        refine=refine,
        recall=curve[chosen],
        target=target,
        curve=curve,
        seconds=round(time.perf_counter() - started, 2),
    )


def probe_version(
    template: Template,
    probe_index: Any,
    ids: np.ndarray,
    y: np.ndarray,
    params: IndexParams,
    target: float,
) -> tuple[IndexParams, RecallProbe | None]:
    """The params with the probe's default nprobe, and the probe (None: no probe run).

    `probe_index` holds every vector of the version (flat 4-bit codes are converted to
    fast-scan blocks first, as a shard does); `y` are the stored features, rows as `ids`.
    """
    if probe_index is None:
        return params, None
    if template.fast_scan:
        probe_index = to_fast_scan(probe_index)  # what a shard searches
    found = _logged_probe(template, probe_index, ids, y, params.refine, target)
    return params.model_copy(update={"nprobe": found.nprobe}), found


def _logged_probe(
    template: Template,
    index: Any,
    ids: np.ndarray,
    y: np.ndarray,
    refine: int,
    target: float = TARGET_RECALL,
) -> RecallProbe:
    """The recall probe over the whole version (logged: it is the build's quality figure)."""
    if not 0 < target <= 1:
        raise InvalidParameter(f"recall target {target} must be in (0, 1]")
    found = probe(template, index, ids, y, refine, target=target)
    log.info(
        "recall probe: recall@%d %.4f at nprobe %d (%d queries, curve %s, %.1fs)",
        found.k,
        found.recall,
        found.nprobe,
        found.queries,
        found.curve,
        found.seconds,
    )
    return found
