"""Searching a shard's partitions: coarse quantisation once, then only the lists asked for.

All partitions of a version share the template's coarse quantizer (one copy in memory,
from `trained.faiss`). A query is assigned to its `nprobe` nearest lists once per shard;
the requested partitions' lists are stacked into one IVF index and scanned once
(`search_preassigned`). The best `k·refine` candidates are then re-scored exactly from the
memory-mapped `features.h5` of their partitions, found through one sorted id table of the
stack (a `searchsorted` per query batch, not a look-up per partition).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from simsearch.common.errors import InvalidParameter
from simsearch.common.features import FeatureFile, open_features
from simsearch.common.topk import Candidates

MMAP_FLAGS = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY


@dataclass
class Partition:
    """One loaded partition: its inverted lists (memory-mapped) and its exact vectors."""

    number: int
    index: faiss.Index
    features: FeatureFile


def load_quantizer(trained_path: Path) -> faiss.Index:
    """The shared coarse quantizer of a version's template."""
    template = faiss.read_index(str(trained_path))
    ivf = faiss.extract_index_ivf(template)
    quantizer: faiss.Index = ivf.quantizer
    ivf.own_fields = False  # keep the quantizer alive after the template is gone
    handle: Any = quantizer  # SWIG's `this` is not in faiss' stubs
    handle.this.own(True)
    _TEMPLATES[id(quantizer)] = (template, quantizer)  # the shell `_combined` copies
    return quantizer


def load_partition(
    number: int, index_path: Path, features_path: Path, quantizer: faiss.Index
) -> Partition:
    """Memory-map a partition's index and features and attach the shared quantizer."""
    index = faiss.read_index(str(index_path), MMAP_FLAGS)
    ivf = faiss.extract_index_ivf(index)
    ivf.quantizer = quantizer
    ivf.own_fields = False
    return Partition(number, index, open_features(features_path))


class Searcher:
    """The partitions of one index version that this shard holds."""

    def __init__(self, quantizer: faiss.Index, partitions: dict[int, Partition], total: int):
        self.quantizer = quantizer
        self.partitions = partitions
        self.total = total  # P: an id lives in partition id mod P

    def search(
        self, queries: np.ndarray, k: int, wanted: Sequence[int], nprobe: int, refine: int
    ) -> Candidates:
        """Top `k·refine` candidates over `wanted` partitions, with approx and exact scores."""
        missing = [p for p in wanted if p not in self.partitions]
        if missing:
            raise InvalidParameter(f"partitions {missing[:8]} are not loaded on this shard")
        nq = len(queries)
        kc = k * max(1, refine)
        if not wanted:
            return Candidates.empty(nq)
        xq = np.ascontiguousarray(queries, dtype=np.float32)
        nprobe = min(nprobe, self.quantizer.ntotal)
        coarse_d, coarse_i = self.quantizer.search(xq, nprobe)
        coarse_i = np.ascontiguousarray(coarse_i, dtype=np.int64)
        coarse_d = np.ascontiguousarray(coarse_d, dtype=np.float32)
        stack = self._stack(wanted)
        # one scan over the stacked lists is already the sorted top-kc: no heap to merge
        dist, ids = _scan(stack.index, xq, kc, coarse_i, coarse_d)
        return Candidates(ids, dist, stack.exact(xq, ids))

    def locate(self, ids: np.ndarray, wanted: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Partition number and row of each id among `wanted` (-1, -1 where absent)."""
        return self._stack(wanted).locate(ids)

    def _stack(self, wanted: Sequence[int]) -> _Stack:
        return _combined([self.partitions[p] for p in sorted(set(wanted))], self.quantizer)


_TEMPLATES: dict[int, tuple[faiss.Index, faiss.Index]] = {}  # id(quantizer) → its template
_COMBINED: OrderedDict[tuple[int, ...], _Stack] = OrderedDict()
_COMBINED_LOCK = threading.Lock()
_COMBINED_MAX = 8


@dataclass
class _Stack:
    """Several partitions as one: a stacked IVF index and one sorted id table over them.

    `slot`/`row` say where each id of `sorted_ids` lives (which partition of `numbers`,
    which row of its features), so the exact re-rank and the path look-up of a whole
    query batch are one `searchsorted` and one gather per partition touched.
    """

    index: Any  # the IVF index whose lists are the stack
    keep: tuple[Any, ...]  # what the stack points at, kept alive with it
    numbers: np.ndarray  # partition number of each slot
    vectors: list[np.ndarray]  # memory-mapped features of each slot
    sorted_ids: np.ndarray
    slot: np.ndarray
    row: np.ndarray

    @classmethod
    def build(cls, index: Any, keep: tuple[Any, ...], parts: list[Partition]) -> _Stack:
        ids = [part.features.ids for part in parts]
        all_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        order = np.argsort(all_ids, kind="stable")
        counts = [len(i) for i in ids]
        slot = np.repeat(np.arange(len(parts), dtype=np.int32), counts)
        row = np.concatenate(
            [np.arange(c, dtype=np.int64) for c in counts] or [np.zeros(0, np.int64)]
        )
        return cls(
            index,
            keep,
            np.array([part.number for part in parts], dtype=np.int64),
            [np.asarray(part.features.vectors) for part in parts],  # plain views: fast gathers
            all_ids[order],
            slot[order],
            row[order],
        )

    def _find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat positions of the ids present here, and their positions in `sorted_ids`."""
        flat = ids.ravel()
        if not len(self.sorted_ids):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        pos = np.minimum(np.searchsorted(self.sorted_ids, flat), len(self.sorted_ids) - 1)
        found = np.flatnonzero((flat >= 0) & (self.sorted_ids[pos] == flat))
        return found, pos[found]

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Partition number and row of each id (-1 where the id is not in the stack)."""
        numbers = np.full(ids.size, -1, dtype=np.int64)
        rows = np.full(ids.size, -1, dtype=np.int64)
        found, pos = self._find(ids)
        numbers[found] = self.numbers[self.slot[pos]]
        rows[found] = self.row[pos]
        return numbers.reshape(ids.shape), rows.reshape(ids.shape)

    def exact(self, xq: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Exact inner product of each candidate with its query (-inf for empty slots)."""
        scores = np.full(ids.shape, -np.inf, dtype=np.float32)
        found, pos = self._find(ids)
        if not found.size:
            return scores
        slots, rows = self.slot[pos], self.row[pos]
        cand = np.empty((found.size, xq.shape[1]), dtype=np.float32)
        for s in np.unique(slots):
            mask = slots == s
            cand[mask] = self.vectors[s][rows[mask]]
        query_of = found // ids.shape[1]
        scores.ravel()[found] = np.einsum("ij,ij->i", xq[query_of], cand)
        return scores


def _combined(parts: list[Partition], quantizer: faiss.Index) -> _Stack:
    """One IVF index over several partitions' inverted lists (FAISS HStackInvertedLists).

    Scanning partitions one by one recomputes the PQ look-up tables of every probed list
    once per partition (64 partitions: 64× the work of one index). Stacking the lists of
    the partitions asked for makes one scan with the tables computed once per query. The
    stack only points at the memory-mapped lists; nothing is copied. Kept in a small LRU
    keyed by the partitions' identity (a steady-state shard asks the same set every time).
    """
    key = tuple(id(part.index) for part in parts)
    with _COMBINED_LOCK:
        if key in _COMBINED:
            _COMBINED.move_to_end(key)
            return _COMBINED[key]
    swig: Any = faiss  # InvertedListsPtrVector is not in faiss' stubs
    lists = swig.InvertedListsPtrVector()
    for part in parts:
        lists.push_back(faiss.extract_index_ivf(part.index).invlists)
    stacked = faiss.HStackInvertedLists(lists.size(), lists.data())
    # a copy of the (empty) trained template has the same codebooks and parameters; its
    # copied quantizer is released and replaced by the shared one, its lists by the stack
    combo: Any = faiss.clone_index(_TEMPLATES[id(quantizer)][0])  # a plain IVF index
    if combo.own_fields:
        combo.quantizer.this.own(True)
    combo.quantizer = quantizer
    combo.own_fields = False
    combo.replace_invlists(stacked, False)
    combo.ntotal = sum(faiss.extract_index_ivf(part.index).ntotal for part in parts)
    stack = _Stack.build(combo, (stacked, lists, tuple(parts)), parts)
    with _COMBINED_LOCK:
        _COMBINED[key] = stack
        while len(_COMBINED) > _COMBINED_MAX:
            _COMBINED.popitem(last=False)
    return stack


def _scan(
    ivf: faiss.IndexIVF, xq: np.ndarray, k: int, coarse_i: np.ndarray, coarse_d: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`search_preassigned` with nprobe passed per call (the width of `coarse_i`).

    Partitions are shared by concurrent searches, so nprobe must not be index state: one
    request setting it while another scans would make FAISS read `coarse_i` with the wrong
    width (out of bounds). FAISS's Python wrapper refuses per-call parameters for this
    method, so the C++ entry point is called directly.
    """
    n, nprobe = coarse_i.shape
    params = faiss.SearchParametersIVF()
    params.nprobe = nprobe
    dist = np.empty((n, k), dtype=np.float32)
    ids = np.empty((n, k), dtype=np.int64)
    handle: Any = ivf  # SWIG's raw entry point is not in faiss' stubs
    handle.search_preassigned_c(
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
