"""FAISS side of a build: choose parameters, train ONE template, fill partitions from it.

Every partition's index is a copy of the same trained template (coarse quantizer + PQ
codebooks) with only that partition's vectors added. Scores are then comparable across
partitions, and searching any set of partitions with the same coarse assignment gives
exactly what one monolithic index with that template would give (the congruence tests).

Partition files are written without the coarse quantizer (a 1280-d, 4096-list quantizer
is 21 MB; 64 copies would be 1.3 GB): the shard reattaches the one from `trained.faiss`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from simsearch.common.errors import InvalidParameter
from simsearch.common.layout import IndexParams

EXACT_BELOW = 50_000  # under this many vectors an exact scan is fast enough and perfect
MIN_POINTS_PER_CENTROID = 39  # FAISS k-means warns below this: centroids would be noise
PQ_TRAIN_POINTS = 256 * MIN_POINTS_PER_CENTROID  # 8-bit codebooks have 256 centroids


def choose_pq_m(dim: int) -> int:
    """Sub-quantizers: ~10 dimensions each, a divisor of `dim` (1280 → 128, 2048 → 256).

    Measured on photo-like 1280-d vectors (docs/benchmarks.md §5, recall_curve.py): with
    ~20 dimensions per code byte (PQ64) recall@10 after the exact re-rank stops at ~0.93
    whatever nprobe; ~10 (PQ128) reaches 0.96. Codes stay small next to the exact
    vectors every shard maps anyway (128 vs 2,560 bytes per 1280-d vector).
    """
    target = max(1, dim // 10)
    divisors = [m for m in range(1, dim + 1) if dim % m == 0]
    return min(divisors, key=lambda m: (abs(m - target), m))


def choose_plan(n: int, dim: int, nlist: int | None = None, pq_m: int | None = None) -> IndexParams:
    """Parameters from the data size: exact for small sets, IVF-PQ + exact re-ranking above.

    Exact is "IVF1,Flat": one inverted list of uncompressed vectors, i.e. a brute-force
    scan, but through the same IVF code path as the large indexes.
    """
    if n < 1 or dim < 1:
        raise InvalidParameter(f"cannot index n={n} vectors of dim={dim}")
    if nlist is None and pq_m is None and n < EXACT_BELOW:
        return IndexParams(
            factory="IVF1,Flat",
            nlist=1,
            nprobe=1,
            refine=1,
            train_size=min(n, 1000),
            reason=f"n={n} < {EXACT_BELOW}: exact scan (one list, flat codes)",
        )
    if nlist is None:
        nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
        nlist = max(1, min(nlist, n // MIN_POINTS_PER_CENTROID))
    m = pq_m or choose_pq_m(dim)
    if dim % m:
        raise InvalidParameter(f"PQ m={m} must divide the dimension {dim}")
    train = min(n, max(nlist * 64, PQ_TRAIN_POINTS * 2))
    nprobe = max(1, nlist // 4)  # photo-like data: recall@10 0.91 at nlist/8, 0.96 at nlist/4
    return IndexParams(
        factory=f"IVF{nlist},PQ{m}",
        nlist=nlist,
        pq_m=m,
        nbits=8,
        nprobe=nprobe,
        refine=10,
        train_size=train,
        reason=f"n={n}: IVF with ~4·sqrt(n) lists, PQ{m}x8 codes, nprobe nlist/4, re-rank 10·k",
    )


def train_template(sample: np.ndarray, plan: IndexParams) -> faiss.Index:
    """Train the coarse quantizer and codebooks on a sample; the result holds no vectors."""
    vectors = np.ascontiguousarray(sample, dtype=np.float32)
    template = faiss.index_factory(vectors.shape[1], plan.factory, faiss.METRIC_INNER_PRODUCT)
    if len(vectors) < (plan.nlist or 1):
        raise InvalidParameter(f"{len(vectors)} training vectors for {plan.nlist} lists")
    template.train(vectors)
    return template


def fill_partition(template: faiss.Index, ids: np.ndarray, vectors: np.ndarray) -> faiss.Index:
    """A copy of the template with this partition's vectors added under their stable ids."""
    index = faiss.clone_index(template)
    if len(ids):
        index.add_with_ids(
            np.ascontiguousarray(vectors, dtype=np.float32),
            np.ascontiguousarray(ids, dtype=np.int64),
        )
    return index


def write_partition(index: faiss.Index, path: Path) -> None:
    """Write a partition index without its coarse quantizer (the shard shares one)."""
    ivf: Any = faiss.extract_index_ivf(index)  # SWIG `this` is not in faiss' stubs
    if ivf.own_fields:  # hand the big quantizer to Python so it is freed, not leaked
        ivf.quantizer.this.own(True)
    placeholder = faiss.IndexFlat(ivf.d, ivf.metric_type)
    ivf.quantizer = placeholder
    ivf.own_fields = False
    path.parent.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(path))
