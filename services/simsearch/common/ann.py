"""The approximate search pipeline shared by the indexer (recall probe) and the shard.

One trained template per index version (`trained.faiss`) holds everything a query needs
before the inverted lists: an optional PCA (a FAISS `IndexPreTransform` around the IVF
index), the coarse quantizer and the PQ codebooks. A query goes

    raw vector → [PCA → unit length] → coarse quantizer (nprobe lists)
               → `search_preassigned` over the lists → k·refine candidates
               → exact inner product from the stored features (the re-rank)

The indexer and the shard both run exactly this code, so the recall the indexer measures
at build time (`RecallProbe` in the manifest) is the recall of the shard's own path.

Scoring space. With a PCA the vectors are centred, projected and scaled to unit length
*before* they reach the index, and the stored features are those projected unit vectors
(float16 by default): `similarity_score` is the cosine in that space. Without one
(versions built by older plans) the space is the raw unit vectors, as before.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from simsearch.common.errors import InvalidParameter

__all__ = ["Template", "candidates", "is_fast_scan", "scan", "to_fast_scan", "unit_rows"]


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero: they have no direction)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: np.ndarray = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return out


def is_fast_scan(ivf: Any) -> bool:
    """Whether an IVF index has 4-bit PQ codes, searched with FAISS' fast-scan kernels.

    Such partitions are stored as plain `IndexIVFPQ` files (flat codes, memory-mappable)
    because FAISS's fast-scan block lists can be neither memory-mapped nor merged
    reliably (FAISS 1.15 corrupts memory when merging into a list whose size is not a
    multiple of 32); a shard copies the flat lists of the partitions it is asked for
    into one index and converts that once (`to_fast_scan`), which packs the same codes
    into blocks.
    """
    return isinstance(ivf, faiss.IndexIVFPQ) and int(ivf.pq.nbits) == 4


SHORT_LISTS = 64  # mean list length under which the heap kernel (implem 10) is faster


def to_fast_scan(ivf: Any) -> Any:
    """A fast-scan copy of a 4-bit `IndexIVFPQ` (same codes, quantizer shared, not owned).

    With short lists (under `SHORT_LISTS` vectors on average) the kernel is pinned to
    FAISS' implementation 10 (heap collector). Measured, one thread, same ids and scores
    as the automatic choice: 50k vectors in 1024 lists, nprobe 384: 0.53 instead of
    0.82 ms per single query; 500k in 4096 lists, nprobe 256: 0.89 vs 0.87 single and
    0.45 vs 0.39 per query in batches of 8, so long lists keep FAISS' own choice.
    """
    fast: Any = faiss.IndexIVFPQFastScan(ivf)
    if ivf.ntotal < SHORT_LISTS * ivf.nlist:
        fast.implem = 10
    return fast


@dataclass
class Template:
    """A version's trained, empty index: optional PCA, coarse quantizer and codebooks.

    `root` is what `trained.faiss` holds (an `IndexPreTransform` when there is a PCA) and
    owns the rest; `ivf` is the IVF index inside it, whose quantizer every partition of
    the version shares.
    """

    root: Any
    ivf: Any
    pretransform: Any | None
    shared_quantizer: Any  # a non-owning handle: `root` owns the quantizer
    _placeholder: Any  # an empty quantizer, what copies made by `shell` start with
    _lock: threading.Lock
    _linear: tuple[np.ndarray, np.ndarray] | None = None  # the PCA as numpy (Aᵀ, b)
    _centroid_sq: np.ndarray | None = None  # |c|² of every list centroid, made on first use

    @classmethod
    def of(cls, index: faiss.Index) -> Template:
        """Wrap a trained index read from `trained.faiss` (or just trained).

        Ownership stays inside FAISS: `root` owns the IVF index and its quantizer, and
        this object keeps `root` alive as long as the version is held. Partitions and
        stacks point at the quantizer without owning it. (Handing a FAISS sub-object's
        ownership to its Python wrapper with `this.own(True)` corrupts the heap in FAISS
        1.15's SWIG layer once the wrapper is freed; nothing here does that.)
        """
        wrapper: Any = index
        pretransform = wrapper if isinstance(index, faiss.IndexPreTransform) else None
        ivf: Any = faiss.downcast_index(faiss.extract_index_ivf(index))
        placeholder = faiss.IndexFlat(ivf.d, ivf.metric_type)
        return cls(
            wrapper,
            ivf,
            pretransform,
            ivf.quantizer,
            placeholder,
            threading.Lock(),
            _linear_map(pretransform),
        )

    @classmethod
    def read(cls, path: str) -> Template:
        return cls.of(faiss.read_index(path))

    @property
    def dim_in(self) -> int:
        """Dimension of the vectors the model makes (what queries arrive with)."""
        return int(self.root.d)

    @property
    def dim(self) -> int:
        """Dimension of the scoring space (the index's and the stored features')."""
        return int(self.ivf.d)

    @property
    def quantizer(self) -> faiss.Index:
        quantizer: faiss.Index = self.shared_quantizer
        return quantizer

    @property
    def nlist(self) -> int:
        return int(self.ivf.nlist)

    @property
    def fast_scan(self) -> bool:
        return is_fast_scan(self.ivf)

    def project(self, x: np.ndarray) -> np.ndarray:
        """Unit raw vectors → unit vectors of the scoring space (identity without a PCA)."""
        y = np.ascontiguousarray(x, dtype=np.float32)
        if self.pretransform is None:
            return y
        if self._linear is not None:  # numpy: FAISS' apply costs ~1 ms for one vector
            matrix, bias = self._linear
            return np.ascontiguousarray(unit_rows(y @ matrix + bias), dtype=np.float32)
        for i in range(self.pretransform.chain.size()):
            step = faiss.downcast_VectorTransform(self.pretransform.chain.at(i))
            y = step.apply(y)
        return np.ascontiguousarray(unit_rows(y), dtype=np.float32)

    def empty(self) -> Any:
        """A fresh empty copy of the IVF index (its own copy of the quantizer)."""
        with self._lock:  # never while `shell` has swapped the quantizer out
            return faiss.clone_index(self.ivf)

    def shell(self) -> Any:
        """An empty copy of the IVF index that uses the shared quantizer (not owning it).

        Cloning copies the quantizer (21 MB for 4096 1280-d lists), so the clone is made
        while the template points at an empty placeholder; `coarse` never reads
        `ivf.quantizer`, so searches running meanwhile are unaffected. The clone's copy
        of the empty placeholder (a few bytes) is left unowned.
        """
        with self._lock:
            self.ivf.quantizer = self._placeholder
            try:
                copy: Any = faiss.clone_index(self.ivf)
            finally:
                self.ivf.quantizer = self.shared_quantizer
        copy.quantizer = self.shared_quantizer
        copy.own_fields = False
        return copy

    def detached_write(self, index: Any, path: str) -> None:
        """Write an IVF index made from this template without its coarse quantizer.

        Partition files carry an empty placeholder instead (a 1280-d, 4096-list quantizer
        is 21 MB; 64 copies would be 1.3 GB): the shard reattaches the shared one.
        """
        ivf: Any = faiss.extract_index_ivf(index)
        with self._lock:
            own = ivf.quantizer
            ivf.quantizer = self._placeholder
            try:
                faiss.write_index(index, path)
            finally:
                ivf.quantizer = own

    def coarse(self, xq: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """The `nprobe` nearest lists of each (projected) query, computed once per query."""
        nprobe = max(1, min(nprobe, self.nlist))
        coarse_d, coarse_i = self.quantizer.search(xq, nprobe)
        return (
            np.ascontiguousarray(coarse_d, dtype=np.float32),
            np.ascontiguousarray(coarse_i, dtype=np.int64),
        )

    def centroid_distance(
        self, xq: np.ndarray, coarse_d: np.ndarray, coarse_i: np.ndarray
    ) -> np.ndarray:
        """Euclidean distance of each projected query to its nearest list centroid.

        The drift signal (`CentroidFit` in the manifest): vectors far from every centroid
        are what the template was not trained on, and their lists are the ones whose
        recall suffers. `coarse_d`/`coarse_i` are what `coarse` returned (column 0 is the
        nearest list). With an inner-product quantizer the distance is rebuilt as
        √(|x|² + |c|² − 2⟨x, c⟩), with the centroids' norms computed once per template,
        so the indexer and the shard report the same figure for the same vector.
        """
        nearest_d = coarse_d[:, 0].astype(np.float64)
        if self.quantizer.metric_type == faiss.METRIC_L2:
            squared = nearest_d
        else:
            norms = self._centroid_norms()
            x_sq = np.einsum("ij,ij->i", xq, xq).astype(np.float64)
            squared = x_sq + norms[np.maximum(coarse_i[:, 0], 0)] - 2 * nearest_d
        return np.sqrt(np.maximum(squared, 0.0)).astype(np.float32)

    def _centroid_norms(self) -> np.ndarray:
        """|c|² of every centroid (nlist floats), computed on first use."""
        found = self._centroid_sq
        if found is None:
            centroids = self.quantizer.reconstruct_n(0, self.nlist)
            found = np.einsum("ij,ij->i", centroids, centroids).astype(np.float64)
            self._centroid_sq = found  # racing threads compute the same array: harmless
        return found


def _linear_map(pretransform: Any | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(Aᵀ, b) of a chain that is one linear transform (a PCA): y = x·Aᵀ + b."""
    if pretransform is None or pretransform.chain.size() != 1:
        return None
    step = faiss.downcast_VectorTransform(pretransform.chain.at(0))
    if not isinstance(step, faiss.LinearTransform) or not step.is_trained:
        return None
    a = faiss.vector_to_array(step.A).reshape(step.d_out, step.d_in)
    b = faiss.vector_to_array(step.b) if step.have_bias else np.zeros(step.d_out, np.float32)
    return np.ascontiguousarray(a.T, dtype=np.float32), b.astype(np.float32)


def scan(
    ivf: Any,
    xq: np.ndarray,
    k: int,
    coarse_i: np.ndarray,
    coarse_d: np.ndarray,
    selector: faiss.IDSelector | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`search_preassigned` with nprobe (and an optional id filter) passed per call.

    Partitions are shared by concurrent searches, so nprobe must not be index state: one
    request setting it while another scans would make FAISS read `coarse_i` with the wrong
    width (out of bounds). FAISS's Python wrapper refuses per-call parameters for this
    method, so the C++ entry point is called directly.
    """
    n, nprobe = coarse_i.shape
    if xq.shape[1] != ivf.d:
        raise InvalidParameter(f"queries have dim {xq.shape[1]}; the index has {ivf.d}")
    params = faiss.SearchParametersIVF()
    params.nprobe = nprobe
    if selector is not None:
        params.sel = selector
    dist = np.empty((n, k), dtype=np.float32)
    ids = np.empty((n, k), dtype=np.int64)
    ivf.search_preassigned_c(
        n,
        faiss.swig_ptr(xq),
        k,
        faiss.swig_ptr(coarse_i),
        faiss.swig_ptr(coarse_d),
        faiss.swig_ptr(dist),
        faiss.swig_ptr(ids),
        False,
        params,
    )
    return dist, ids


TIE_MARGIN = 0.25  # extra candidates fetched so that ties at the cut-off can be resolved


def candidates(
    ivf: Any,
    xq: np.ndarray,
    kc: int,
    coarse_i: np.ndarray,
    coarse_d: np.ndarray,
    selector: faiss.IDSelector | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The top `kc` by approximate score, ties broken by id: the same set for any split.

    With `selector` only the ids it accepts are scanned (a filtered search, `shard.filtered`).

    Fast-scan scores are quantised, so equal scores are common, and FAISS breaks ties
    by list order, which differs between one index and the same vectors split into
    partitions. Fetching a margin beyond `kc` and cutting by (score, id) makes the
    candidate set a function of the vectors alone (the router merges shards by the same
    rule), which is what congruence with one in-process index needs.
    """
    extra = kc + max(8, int(kc * TIE_MARGIN))
    dist, ids = scan(ivf, xq, extra, coarse_i, coarse_d, selector)
    key = np.where(ids < 0, -np.inf, dist)
    order = np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids), -key), axis=1)[:, :kc]
    return (
        np.take_along_axis(dist, order, axis=1),
        np.take_along_axis(ids, order, axis=1),
    )
