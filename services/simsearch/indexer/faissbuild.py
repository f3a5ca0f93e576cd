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

from simsearch.common.ann import Template, is_fast_scan, unit_rows
from simsearch.common.errors import InvalidParameter
from simsearch.common.manifest import IndexParams

EXACT_BELOW = 50_000  # under this many vectors an exact scan is fast enough and perfect
MIN_POINTS_PER_CENTROID = 39  # FAISS k-means warns below this: centroids would be noise
PQ_TRAIN_POINTS = 256 * MIN_POINTS_PER_CENTROID  # 8-bit codebooks have 256 centroids
PCA_DIM = 256  # the scoring space of the fast-scan kind (see choose_params)
PCA_TRAIN_POINTS = 65_536  # a 1280² covariance is well estimated long before this
COARSE_TRAIN_PER_LIST = 40  # k-means sample per list: just over FAISS' 39 minimum


def choose_pq_m(dim: int, per_code: int = 10) -> int:
    """Sub-quantizers: ~`per_code` dimensions each, a divisor of `dim` (1280 → 128).

    8-bit kind, measured on photo-like 1280-d vectors (docs/benchmarks.md §5): with ~20
    dimensions per code byte (PQ64) recall@10 after the exact re-rank stops at ~0.93
    whatever nprobe; ~10 (PQ128) reaches 0.96. The fast-scan kind uses 2 dimensions per
    4-bit code (PQ128x4fs on 256 dimensions, 64 bytes per vector).
    """
    target = max(1, dim // per_code)
    divisors = [m for m in range(1, dim + 1) if dim % m == 0]
    return int(min(divisors, key=lambda m: (abs(m - target), m)))


def default_nlist(n: int) -> int:
    """~4·sqrt(n) lists, a power of two, with enough points per list to train."""
    nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
    return int(max(1, min(nlist, n // MIN_POINTS_PER_CENTROID)))


def choose_params(
    n: int,
    dim: int,
    nlist: int | None = None,
    pq_m: int | None = None,
    kind: str = "auto",
    pca_dim: int | None = None,
) -> IndexParams:
    """Parameters from the data size: exact for small sets, fast-scan IVF above.

    `kind`: "auto" (exact below `EXACT_BELOW` vectors unless `nlist`/`pq_m` is given,
    else "fastscan"), "exact", "fastscan" or "pq8" (the 8-bit kind of earlier versions,
    kept for comparison and for indexes that need no PCA). `pca_dim` overrides the
    fast-scan kind's scoring dimension (`PCA_DIM`; the model's own if it is not smaller).

    Exact is "IVF1,Flat": one inverted list of uncompressed vectors, i.e. a brute-force
    scan, but through the same IVF code path as the large indexes. The fast-scan kind is
    PCA to 256 dimensions (centred, not whitened; vectors are unit length again after it),
    `IVF<nlist>` on that space and `PQ256x4` codes (one dimension per 4-bit code, 128 B per
    vector, searched with FAISS' fast-scan kernels), re-ranked exactly (10·k) from float16
    features in the same space. Measured on photo-like vectors (docs/benchmarks.md §8):
    with two dimensions per code (PQ128x4, 64 B) recall@10 stops at ~0.85 whatever nprobe
    (0.93 with residual codes, which cost a look-up table per probed list); PQ256x4 reaches
    0.96-0.98, and the scan is still a fraction of a millisecond per query. 256-d centroids
    cost a fifth of 1280-d ones per query.
    """
    if n < 1 or dim < 1:
        raise InvalidParameter(f"cannot index n={n} vectors of dim={dim}")
    if kind not in ("auto", "exact", "fastscan", "pq8"):
        raise InvalidParameter(f"unknown index kind {kind!r} (auto, exact, fastscan, pq8)")
    forced = nlist is not None or pq_m is not None
    if kind == "exact" or (kind == "auto" and not forced and n < EXACT_BELOW):
        return IndexParams(
            factory="IVF1,Flat",
            nlist=1,
            nprobe=1,
            refine=1,
            train_size=min(n, 1000),
            reason=f"n={n} < {EXACT_BELOW}: exact scan (one list, flat codes)",
        )
    nlist = nlist or default_nlist(n)
    if kind == "pq8":
        return _pq8_params(n, dim, nlist, pq_m)
    return _fastscan_params(n, dim, nlist, pq_m, pca_dim or PCA_DIM)


def _fastscan_params(n: int, dim: int, nlist: int, pq_m: int | None, pca_dim: int) -> IndexParams:
    space = min(dim, pca_dim, n)
    m = pq_m or space  # one dimension per 4-bit code: see the docstring of choose_params
    if space % m:
        raise InvalidParameter(f"PQ m={m} must divide the scoring dimension {space}")
    scoring = f"PCA{space} scoring space" if space < dim else "the raw space (no PCA)"
    return IndexParams(
        factory=f"IVF{nlist},PQ{m}x4",  # stored flat, searched with fast-scan kernels
        nlist=nlist,
        pq_m=m,
        nbits=4,
        nprobe=max(1, nlist // 16),  # a first guess; the recall probe picks the default
        refine=10,
        train_size=min(n, max(nlist * COARSE_TRAIN_PER_LIST, PQ_TRAIN_POINTS)),
        pca_dim=space if space < dim else None,
        reason=(
            f"n={n}: {scoring}, IVF with ~4·sqrt(n) lists, PQ{m}x4 codes "
            "(fast-scan), re-rank 10·k from float16 features; nprobe from the recall probe"
        ),
    )


def _pq8_params(n: int, dim: int, nlist: int, pq_m: int | None) -> IndexParams:
    m = pq_m or choose_pq_m(dim)
    if dim % m:
        raise InvalidParameter(f"PQ m={m} must divide the dimension {dim}")
    return IndexParams(
        factory=f"IVF{nlist},PQ{m}",
        nlist=nlist,
        pq_m=m,
        nbits=8,
        nprobe=max(1, nlist // 4),  # photo-like data: recall@10 0.91 at nlist/8, 0.96 at /4
        refine=10,
        train_size=min(n, max(nlist * 64, PQ_TRAIN_POINTS * 2)),
        reason=f"n={n}: IVF with ~4·sqrt(n) lists, PQ{m}x8 codes, nprobe nlist/4, re-rank 10·k",
    )


def train_template(sample: np.ndarray, params: IndexParams) -> Template:
    """Train the PCA (if any), coarse quantizer and codebooks on a sample of unit vectors.

    The result holds no vectors. With a PCA it is an `IndexPreTransform(PCA, IVF)`: the
    IVF part is trained on the projected sample scaled back to unit length, which is what
    `Template.project` gives every vector and query later.
    """
    vectors = np.ascontiguousarray(sample, dtype=np.float32)
    if len(vectors) < (params.nlist or 1):
        raise InvalidParameter(f"{len(vectors)} training vectors for {params.nlist} lists")
    dim = vectors.shape[1]
    with_pca = params.pca_dim is not None and params.pca_dim < dim
    spec = f"PCA{params.pca_dim},{params.factory}" if with_pca else params.factory
    root: Any = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    ivf: Any = faiss.downcast_index(faiss.extract_index_ivf(root))
    if is_fast_scan(ivf):
        # one look-up table per query rather than one per (query, list): the fast-scan
        # kernels then cost the same whatever nprobe (docs/benchmarks.md §8)
        ivf.by_residual = False
    if with_pca:
        # trained step by step: the IVF part learns from the projected sample scaled back
        # to unit length, which is what `Template.project` gives every vector later
        pca: Any = faiss.downcast_VectorTransform(root.chain.at(0))
        pca.train(vectors[: min(len(vectors), PCA_TRAIN_POINTS)])
        vectors = np.ascontiguousarray(unit_rows(pca.apply(vectors)), dtype=np.float32)
    ivf.train(vectors)
    root.is_trained = True
    return Template.of(root)


def fill_partition(template: Template, ids: np.ndarray, vectors: np.ndarray) -> faiss.Index:
    """A copy of the template's IVF index with this partition's (projected) vectors added
    under their stable ids."""
    index: faiss.Index = template.empty()
    if len(ids):
        index.add_with_ids(
            np.ascontiguousarray(vectors, dtype=np.float32),
            np.ascontiguousarray(ids, dtype=np.int64),
        )
    return index


def write_partition(template: Template, index: faiss.Index, path: Path) -> None:
    """Write a partition index without its coarse quantizer (the shard shares one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    template.detached_write(index, str(path))
